//! Turning `--break`/`--watch` with their `--vcpu`/`--action`/`--engine` into requests, in two
//! steps:
//! - [`parse`] checks everything the flags alone decide (syntax, numbers, ranges that wrap,
//!   parts or flags given twice), before any input file is read;
//! - [`resolve`] then looks the symbols up and builds the breakpoint specs.
//!
//! `--vcpu`, `--action`, `--engine`, `--capture` and `--if` bind to the nearest `--break` or `--watch` before them
//! on the command line, which clap reports through argument indices.

use std::sync::Arc;

use clap::ArgMatches;
use drvisor::condition::Condition;
pub use drvisor::control::location::{check_range, number, Target};
pub use drvisor::control::{Request, What};
use drvisor::quote::cut;
use drvisor::symbols::SymbolTable;
use drvisor::watch::{EngineChoice, Place};
use drvisor_api::rest::Owner;
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Scope, VcpuId};
use drvisor_watch::Access;

use crate::cli::{ActionArg, EngineArg};

/// The flags that build requests.
pub struct Flags<'a> {
    pub breaks: &'a [String],
    pub watches: &'a [String],
    pub vcpus: &'a [u32],
    pub actions: &'a [ActionArg],
    pub engines: &'a [EngineArg],
    pub captures: &'a [u16],
    pub conditions: &'a [String],
}

/// `[phys:]SYMBOL|ADDR[:w|r|rw][:LEN]`, parsed but not resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// `phys:` was given.
    pub physical: bool,
    /// Where.
    pub target: Target,
    /// Which accesses (`w` when not given).
    pub access: Access,
    /// How many bytes, when given (else the symbol's size).
    pub len: Option<u64>,
}

/// What one `--break` or `--watch` asks for, before symbols are looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `--break`.
    Break(Target),
    /// `--watch`.
    Watch(WatchSpec),
}

/// One `--break` or `--watch` with the flags bound to it, checked but not resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// As written on the command line.
    pub label: String,
    /// What.
    pub kind: Kind,
    /// `--vcpu`.
    pub vcpu: Option<u32>,
    /// `--action`.
    pub action: Option<HitAction>,
    /// `--engine` (watches only).
    pub engine: Option<EngineChoice>,
    /// `--capture`.
    pub capture: Option<u16>,
    /// `--if`, parsed.
    pub condition: Option<Arc<Condition>>,
}

/// Parses the flags' values and binds `--vcpu`/`--action`/`--engine` to their owners.
pub fn parse(matches: &ArgMatches, flags: Flags<'_>) -> Result<Vec<Parsed>, String> {
    let indices = |id: &str| -> Vec<usize> {
        matches
            .subcommand_matches("run")
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    bind(
        indices("breaks").into_iter().zip(flags.breaks),
        indices("watches").into_iter().zip(flags.watches),
        Bound {
            vcpus: indices("vcpus_of").into_iter().zip(flags.vcpus).collect(),
            actions: indices("actions")
                .into_iter()
                .zip(flags.actions.iter().map(|&a| a.into()))
                .collect(),
            engines: indices("engines")
                .into_iter()
                .zip(flags.engines.iter().map(|&e| e.into()))
                .collect(),
            captures: indices("captures")
                .into_iter()
                .zip(flags.captures.iter().copied())
                .collect(),
            conditions: indices("conditions")
                .into_iter()
                .zip(flags.conditions)
                .collect(),
        },
    )
}

/// The flags that bind to the `--break` or `--watch` before them, with their positions.
pub struct Bound<'a> {
    pub vcpus: Vec<(usize, &'a u32)>,
    pub actions: Vec<(usize, HitAction)>,
    pub engines: Vec<(usize, EngineChoice)>,
    pub captures: Vec<(usize, u16)>,
    pub conditions: Vec<(usize, &'a String)>,
}

/// [`parse`] on positions and values: pure, so it is tested without clap.
pub fn bind<'a>(
    breaks: impl IntoIterator<Item = (usize, &'a String)>,
    watches: impl IntoIterator<Item = (usize, &'a String)>,
    bound: Bound<'_>,
) -> Result<Vec<Parsed>, String> {
    // (position on the command line, request) for every --break and --watch.
    let mut placed: Vec<(usize, Parsed)> = Vec::new();
    for (at, text) in breaks {
        let target = location(text).map_err(|e| format!("--break {}: {e}", cut(text)))?;
        placed.push((at, parsed(text, Kind::Break(target))));
    }
    for (at, text) in watches {
        placed.push((at, parsed(text, Kind::Watch(watch(text)?))));
    }
    placed.sort_by_key(|(at, _)| *at);

    let positions: Vec<usize> = placed.iter().map(|(at, _)| *at).collect();
    let owner = |at: usize, flag: &str| -> Result<usize, String> {
        positions
            .iter()
            .rposition(|p| *p < at)
            .ok_or_else(|| format!("{flag} must follow the --break or --watch it applies to"))
    };
    let twice = |flag: &str, label: &str| {
        format!(
            "{flag} given twice for {}; give it once after each --break or --watch",
            cut(label)
        )
    };
    for (at, vcpu) in bound.vcpus {
        let p = &mut placed[owner(at, "--vcpu")?].1;
        if p.vcpu.replace(*vcpu).is_some() {
            return Err(twice("--vcpu", &p.label));
        }
    }
    for (at, action) in bound.actions {
        let p = &mut placed[owner(at, "--action")?].1;
        if p.action.replace(action).is_some() {
            return Err(twice("--action", &p.label));
        }
    }
    for (at, choice) in bound.engines {
        let p = &mut placed[owner(at, "--engine")?].1;
        if matches!(p.kind, Kind::Break(_)) {
            return Err(
                "--engine applies to --watch only: exec breakpoints always use a hardware slot"
                    .into(),
            );
        }
        if p.engine.replace(choice).is_some() {
            return Err(twice("--engine", &p.label));
        }
    }
    for (at, bytes) in bound.captures {
        let p = &mut placed[owner(at, "--capture")?].1;
        if p.capture.replace(bytes).is_some() {
            return Err(twice("--capture", &p.label));
        }
    }
    for (at, text) in bound.conditions {
        let p = &mut placed[owner(at, "--if")?].1;
        let condition =
            Condition::parse(text).map_err(|e| format!("--if {}: {e}", shell_quoted(text)))?;
        if p.condition.replace(Arc::new(condition)).is_some() {
            return Err(twice("--if", &p.label));
        }
    }
    Ok(placed.into_iter().map(|(_, p)| p).collect())
}

fn parsed(label: &str, kind: Kind) -> Parsed {
    Parsed {
        label: label.to_owned(),
        kind,
        vcpu: None,
        action: None,
        engine: None,
        capture: None,
        condition: None,
    }
}

/// `text` in single quotes, as a shell would take it back (cut if long).
fn shell_quoted(text: &str) -> String {
    format!("'{}'", cut(text).replace('\'', "'\\''"))
}

/// A symbol or a number (`0x` hex or decimal).
pub fn location(text: &str) -> Result<Target, String> {
    drvisor::control::location::parse(text).map_err(|e| e.to_string())
}

/// `[phys:]SYMBOL|ADDR[:w|r|rw][:LEN]`: each part at most once, the length `0x` hex or
/// decimal and positive, and a numeric range that does not wrap past 2^64.
pub fn watch(text: &str) -> Result<WatchSpec, String> {
    let bad = |why: String| format!("--watch {}: {why}", cut(text));
    let (physical, rest) = match text.strip_prefix("phys:") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut parts = rest.split(':');
    let name = parts.next().unwrap_or_default();
    let target = location(name).map_err(bad)?;
    let mut access: Option<Access> = None;
    let mut len: Option<u64> = None;
    for part in parts {
        let this = match part {
            "w" => Some(Access::Write),
            "rw" => Some(Access::ReadWrite),
            "r" => Some(Access::Read),
            _ => None,
        };
        match this {
            Some(a) if access.is_some() => {
                return Err(bad(format!(
                    "the access is given twice (`{}` after `{}`); give one of w, r, rw",
                    access_name(a),
                    access_name(access.unwrap_or(a))
                )))
            }
            Some(a) => access = Some(a),
            None => {
                let n = number(part).filter(|&l| l > 0).ok_or_else(|| {
                    bad(format!(
                        "`{}` is neither an access (w, r, rw) nor a length (a positive number of bytes, 0x hex or decimal)",
                        cut(part)
                    ))
                })?;
                if len.replace(n).is_some() {
                    return Err(bad("the length is given twice; give it once".into()));
                }
            }
        }
    }
    if let (Target::Number(addr), Some(len)) = (&target, len) {
        check_range(*addr, len).map_err(|e| bad(e.to_string()))?;
    }
    Ok(WatchSpec {
        physical,
        target,
        access: access.unwrap_or(Access::Write),
        len,
    })
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Write => "w",
        Access::Read => "r",
        Access::ReadWrite => "rw",
    }
}

/// Looks up symbols and builds the requests.
pub fn resolve(parsed: Vec<Parsed>, symbols: &SymbolTable) -> Result<Vec<Request>, String> {
    parsed
        .into_iter()
        .map(|p| resolve_one(p, symbols))
        .collect()
}

fn resolve_one(p: Parsed, symbols: &SymbolTable) -> Result<Request, String> {
    let label = cut(&p.label).into_owned();
    // An execution breakpoint needs code: a variable there is refused.
    let lookup = |t: &Target, code: bool| match t {
        Target::Number(n) => Ok(*n),
        Target::Symbol(name) => if code {
            symbols.resolve_code(name)
        } else {
            symbols.resolve(name)
        }
        .map_err(|e| match e {
            drvisor::symbols::Error::NoSymbols(_)
            | drvisor::symbols::Error::NoOwnSymbols { .. } => {
                format!("{e} (--symbols System.map)")
            }
            drvisor::symbols::Error::NotCode { ref name, .. } => {
                format!("{e}: --watch {}", cut(name))
            }
            e => e.to_string(),
        }),
    };
    let address = |t: &Target| lookup(t, false);
    let what = match &p.kind {
        Kind::Break(target) => {
            let addr = lookup(target, true).map_err(|e| format!("--break {label}: {e}"))?;
            What::Break(BreakSpec::exec(addr).map_err(|e| format!("--break {label}: {e}"))?)
        }
        Kind::Watch(w) => {
            let addr = address(&w.target).map_err(|e| format!("--watch {label}: {e}"))?;
            let size = match &w.target {
                Target::Symbol(name) => symbols.size(name),
                Target::Number(_) => None,
            };
            let len = match w.len.or(size) {
                Some(len) => len,
                None => {
                    let name = match &w.target {
                        Target::Symbol(name) => cut(name).into_owned(),
                        Target::Number(n) => format!("{n:#x}"),
                    };
                    return Err(format!(
                        "--watch {label}: give a length (`{name}:w:8`); the size of `{name}` is not known"
                    ));
                }
            };
            check_range(addr, len).map_err(|e| format!("--watch {label}: {e}"))?;
            What::Watch {
                place: if w.physical {
                    Place::Physical(addr)
                } else {
                    Place::Virtual(addr)
                },
                access: w.access,
                len,
                engine: p.engine.unwrap_or(EngineChoice::Auto),
            }
        }
    };
    Ok(Request {
        label: p.label,
        what,
        scope: p.vcpu.map_or(Scope::Vm, |v| Scope::Vcpu(VcpuId(v))),
        action: p.action.unwrap_or(HitAction::Continue),
        capture: p.capture.unwrap_or(0),
        owner: Owner::Cli,
        condition: p.condition,
    })
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
