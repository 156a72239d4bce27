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

/// How a `break` or `unbreak` command is badly written; each message ends with [`USAGE`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `unbreak` without a number.
    #[error("`unbreak` takes a breakpoint id: {USAGE}")]
    UnbreakNeedsId,
    /// `break` alone.
    #[error("`break` needs a location: {USAGE}")]
    BreakNeedsLocation,
    /// `break X if`.
    #[error("`if` needs a condition: {USAGE}")]
    IfNeedsCondition,
    /// Something other than `if CONDITION` after the location.
    #[error("after the location comes `if CONDITION`: {USAGE}")]
    ExpectedIf,
}

/// Why a well-written `break` or `unbreak` was refused.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// `unbreak` of an id that no `monitor break` made.
    #[error("no `monitor break` breakpoint has id {0} (gdb's own are removed with `delete`)")]
    NotMonitorBreak(u32),
    /// The session could not remove it.
    #[error("breakpoint #{id}: {source}")]
    Remove {
        /// The breakpoint.
        id: u32,
        /// The session's reason.
        #[source]
        source: crate::control::Error,
    },
    /// The location has no address.
    #[error(transparent)]
    Location(#[from] crate::control::location::ResolveError),
    /// No execution breakpoint can be set at the address.
    #[error("{location}: {source}")]
    Spec {
        /// The location as written.
        location: String,
        /// Why the breakpoint is invalid.
        #[source]
        source: drvisor_debug::SpecError,
    },
    /// The condition does not parse.
    #[error("condition `{text}`: {source}")]
    Condition {
        /// The condition as written.
        text: String,
        /// Where and why it does not parse.
        #[source]
        source: crate::condition::Error,
    },
    /// The session refused to arm it.
    #[error("{location}: {source}")]
    Arm {
        /// The location as written.
        location: String,
        /// The session's reason.
        #[source]
        source: crate::control::Error,
    },
    /// It was armed but could not fire (every slot taken, say), so it was taken back.
    #[error("{location}: not armed, it would be {state}")]
    NotLive {
        /// The location as written.
        location: String,
        /// The state it would be in.
        state: String,
    },
}

/// `cmd` (the text after `monitor`) if it is one of these commands: `None` if it is another
/// command, `Some(Err)` with what is wrong if it is one of these, badly written.
pub fn parse(cmd: &str) -> Option<Result<Command, UsageError>> {
    let cmd = cmd.trim();
    let (word, rest) = cmd
        .split_once(char::is_whitespace)
        .map_or((cmd, ""), |(w, r)| (w, r.trim()));
    match word {
        "break" => Some(parse_break(rest)),
        "unbreak" => Some(
            rest.parse()
                .map(Command::Unbreak)
                .map_err(|_| UsageError::UnbreakNeedsId),
        ),
        _ => None,
    }
}

fn parse_break(rest: &str) -> Result<Command, UsageError> {
    let (location, tail) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(l, t)| (l, t.trim()));
    if location.is_empty() {
        return Err(UsageError::BreakNeedsLocation);
    }
    let condition = match tail {
        "" => None,
        t => match t.strip_prefix("if") {
            Some(c) if c.starts_with(char::is_whitespace) && !c.trim().is_empty() => {
                Some(c.trim().to_owned())
            }
            Some(_) if t == "if" => return Err(UsageError::IfNeedsCondition),
            _ => return Err(UsageError::ExpectedIf),
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
        for (bad, why) in [
            ("break", UsageError::BreakNeedsLocation),
            ("break x if", UsageError::IfNeedsCondition),
            ("break x when rdi", UsageError::ExpectedIf),
            ("break x iff 1", UsageError::ExpectedIf),
            ("unbreak x", UsageError::UnbreakNeedsId),
        ] {
            let e = parse(bad).unwrap().unwrap_err();
            assert_eq!(e, why, "{bad}");
            assert!(e.to_string().contains(USAGE), "{bad}: {e}");
        }
    }
}
