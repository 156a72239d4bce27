//! Turning `--break`/`--watch` with their `--vcpu`/`--action`/`--engine` into requests.
//!
//! `--vcpu`, `--action` and `--engine` bind to the nearest `--break` or `--watch` before them
//! on the command line, which clap reports through argument indices.

use clap::ArgMatches;
use drvisor::symbols::SymbolTable;
use drvisor::watch::{EngineChoice, Place};
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Scope, VcpuId};
use drvisor_watch::Access;

/// What was asked for.
pub enum What {
    /// An exec breakpoint (always a hardware slot).
    Break(BreakSpec),
    /// A data watchpoint, routed to an engine later.
    Watch {
        /// Where.
        place: Place,
        /// Which accesses.
        access: Access,
        /// How many bytes.
        len: u64,
        /// Which engine the user wants.
        engine: EngineChoice,
    },
}

/// One breakpoint or watchpoint the user asked for.
pub struct Request {
    /// As written on the command line.
    pub label: String,
    /// What.
    pub what: What,
    /// Which vCPUs.
    pub scope: Scope,
    /// What a hit does.
    pub action: HitAction,
}

/// The flags that build requests.
pub struct Flags<'a> {
    pub breaks: &'a [String],
    pub watches: &'a [String],
    pub vcpus: &'a [u32],
    pub actions: &'a [String],
    pub engines: &'a [String],
}

/// Builds the requests from the parsed flags.
pub fn from_matches(
    matches: &ArgMatches,
    flags: Flags<'_>,
    symbols: &SymbolTable,
) -> Result<Vec<Request>, String> {
    let indices = |id: &str| -> Vec<usize> {
        matches
            .subcommand_matches("run")
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    // (position on the command line, request) for every --break and --watch.
    let mut placed: Vec<(usize, Request)> = Vec::new();
    for (at, text) in indices("breaks").into_iter().zip(flags.breaks) {
        let addr = location(text, symbols)?;
        let spec = BreakSpec::exec(addr).map_err(|e| format!("--break {text}: {e}"))?;
        placed.push((at, request(text, What::Break(spec))));
    }
    for (at, text) in indices("watches").into_iter().zip(flags.watches) {
        placed.push((at, request(text, watch(text, symbols)?)));
    }
    placed.sort_by_key(|(at, _)| *at);

    let positions: Vec<usize> = placed.iter().map(|(at, _)| *at).collect();
    let owner = |at: usize, flag: &str| -> Result<usize, String> {
        positions
            .iter()
            .rposition(|p| *p < at)
            .ok_or_else(|| format!("{flag} must follow the --break or --watch it applies to"))
    };
    for (at, vcpu) in indices("vcpus_of").into_iter().zip(flags.vcpus) {
        let i = owner(at, "--vcpu")?;
        placed[i].1.scope = Scope::Vcpu(VcpuId(*vcpu));
    }
    for (at, action) in indices("actions").into_iter().zip(flags.actions) {
        let i = owner(at, "--action")?;
        placed[i].1.action = match action.as_str() {
            "continue" => HitAction::Continue,
            "pause" => HitAction::Pause,
            "stop" => HitAction::Stop,
            other => {
                return Err(format!(
                    "--action {other}: unknown action; use continue, pause or stop"
                ))
            }
        };
    }
    for (at, engine) in indices("engines").into_iter().zip(flags.engines) {
        let i = owner(at, "--engine")?;
        let choice: EngineChoice = engine.parse().map_err(|e| format!("--engine: {e}"))?;
        match &mut placed[i].1.what {
            What::Watch { engine, .. } => *engine = choice,
            What::Break(_) => {
                return Err(
                    "--engine applies to --watch only: exec breakpoints always use a hardware slot"
                        .into(),
                )
            }
        }
    }
    Ok(placed.into_iter().map(|(_, r)| r).collect())
}

fn request(label: &str, what: What) -> Request {
    Request {
        label: label.to_owned(),
        what,
        scope: Scope::Vm,
        action: HitAction::Continue,
    }
}

/// A symbol or a number (`0x` hex or decimal).
fn location(text: &str, symbols: &SymbolTable) -> Result<u64, String> {
    let number = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => text.parse().ok(),
        None => None,
    };
    match number {
        Some(addr) => Ok(addr),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => Err(format!(
            "`{text}` is not a valid address; write 0x-prefixed hex or decimal"
        )),
        None => symbols.resolve(text).map_err(|e| e.to_string()),
    }
}

/// `[phys:]SYMBOL|ADDR[:w|r|rw][:LEN]`.
fn watch(text: &str, symbols: &SymbolTable) -> Result<What, String> {
    let (physical, rest) = match text.strip_prefix("phys:") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut parts = rest.split(':');
    let name = parts.next().unwrap_or_default();
    let addr = location(name, symbols).map_err(|e| format!("--watch {text}: {e}"))?;
    let mut access = Access::Write;
    let mut len: Option<u64> = None;
    for part in parts {
        match part {
            "w" => access = Access::Write,
            "rw" => access = Access::ReadWrite,
            "r" => access = Access::Read,
            n => {
                let parsed = n.parse().ok().filter(|&l: &u64| l > 0);
                len = Some(parsed.ok_or_else(|| {
                    format!("--watch {text}: `{n}` is neither an access (w, r, rw) nor a length (a positive number of bytes)")
                })?)
            }
        }
    }
    let len = match len.or_else(|| symbols.size(name)) {
        Some(len) => len,
        None => {
            return Err(format!(
                "--watch {text}: give a length (`{name}:w:8`); the size of `{name}` is not known"
            ))
        }
    };
    Ok(What::Watch {
        place: if physical {
            Place::Physical(addr)
        } else {
            Place::Virtual(addr)
        },
        access,
        len,
        engine: EngineChoice::Auto,
    })
}
