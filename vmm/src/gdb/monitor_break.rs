//! `monitor break LOCATION [if CONDITION]` and `monitor unbreak ID`: breakpoints whose
//! condition drvisor evaluates in the VMM at each hit, so gdb hears only of the hits where it
//! holds (gdb's own `break X if C` stops the VM and asks gdb at every hit).

/// A parsed `monitor` command of this family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `break LOCATION [if CONDITION]`.
    Break {
        /// A symbol or an address.
        location: String,
        /// The condition's text.
        condition: Option<String>,
    },
    /// `unbreak ID`.
    Unbreak(u32),
}

/// How the commands are written.
pub const USAGE: &str = "monitor break LOCATION [if CONDITION] | monitor unbreak ID";

/// `cmd` (the text after `monitor`) if it is one of these commands: `None` if it is another
/// command, `Some(Err)` with what is wrong if it is one of these, badly written.
pub fn parse(cmd: &str) -> Option<Result<Command, String>> {
    let cmd = cmd.trim();
    let (word, rest) = cmd
        .split_once(char::is_whitespace)
        .map_or((cmd, ""), |(w, r)| (w, r.trim()));
    match word {
        "break" => Some(parse_break(rest)),
        "unbreak" => Some(
            rest.parse()
                .map(Command::Unbreak)
                .map_err(|_| format!("`unbreak` takes a breakpoint id: {USAGE}")),
        ),
        _ => None,
    }
}

fn parse_break(rest: &str) -> Result<Command, String> {
    let (location, tail) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(l, t)| (l, t.trim()));
    if location.is_empty() {
        return Err(format!("`break` needs a location: {USAGE}"));
    }
    let condition = match tail {
        "" => None,
        t => match t.strip_prefix("if") {
            Some(c) if c.starts_with(char::is_whitespace) && !c.trim().is_empty() => {
                Some(c.trim().to_owned())
            }
            Some(_) if t == "if" => return Err(format!("`if` needs a condition: {USAGE}")),
            _ => return Err(format!("after the location comes `if CONDITION`: {USAGE}")),
        },
    };
    Ok(Command::Break {
        location: location.to_owned(),
        condition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn break_with_and_without_a_condition() {
        assert_eq!(
            parse("break drv_target_arg if rdi == 3 && hits > 1"),
            Some(Ok(Command::Break {
                location: "drv_target_arg".into(),
                condition: Some("rdi == 3 && hits > 1".into()),
            }))
        );
        assert_eq!(
            parse("  break 0x1000  "),
            Some(Ok(Command::Break {
                location: "0x1000".into(),
                condition: None,
            }))
        );
        assert_eq!(parse("unbreak 7"), Some(Ok(Command::Unbreak(7))));
        assert_eq!(parse("plan"), None);
    }

    #[test]
    fn mistakes_say_how_to_write_it() {
        for bad in [
            "break",
            "break x if",
            "break x when rdi",
            "break x iff 1",
            "unbreak x",
        ] {
            let e = parse(bad).unwrap().unwrap_err();
            assert!(e.contains(USAGE), "{bad}: {e}");
        }
    }
}
