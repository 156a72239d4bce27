//! Turning `--break`/`--watch` with their `--vcpu`/`--action` into breakpoint requests.
//!
//! `--vcpu` and `--action` bind to the nearest `--break` or `--watch` before them on the
//! command line, which clap reports through argument indices.

use clap::ArgMatches;
use drvisor::symbols::SymbolTable;
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, Scope, VcpuId, WatchAccess};

/// One breakpoint the user asked for.
pub struct Request {
    /// As written on the command line.
    pub label: String,
    /// Resolved and validated.
    pub spec: BreakSpec,
    /// Which vCPUs.
    pub scope: Scope,
    /// What a hit does.
    pub action: HitAction,
}

/// Builds the requests from the parsed flags.
pub fn from_matches(
    matches: &ArgMatches,
    breaks: &[String],
    watches: &[String],
    vcpus: &[u32],
    actions: &[String],
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
    for (at, text) in indices("breaks").into_iter().zip(breaks) {
        let addr = location(text, symbols)?;
        let spec = BreakSpec::exec(addr).map_err(|e| format!("--break {text}: {e}"))?;
        placed.push((at, request(text, spec)));
    }
    for (at, text) in indices("watches").into_iter().zip(watches) {
        placed.push((at, request(text, watch_spec(text, symbols)?)));
    }
    placed.sort_by_key(|(at, _)| *at);

    let positions: Vec<usize> = placed.iter().map(|(at, _)| *at).collect();
    let owner = |at: usize, flag: &str| -> Result<usize, String> {
        positions
            .iter()
            .rposition(|p| *p < at)
            .ok_or_else(|| format!("{flag} must follow the --break or --watch it applies to"))
    };
    for (at, vcpu) in indices("vcpus_of").into_iter().zip(vcpus) {
        let i = owner(at, "--vcpu")?;
        placed[i].1.scope = Scope::Vcpu(VcpuId(*vcpu));
    }
    for (at, action) in indices("actions").into_iter().zip(actions) {
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
    Ok(placed.into_iter().map(|(_, r)| r).collect())
}

fn request(label: &str, spec: BreakSpec) -> Request {
    Request {
        label: label.to_owned(),
        spec,
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

/// `SYMBOL|ADDR[:w|rw|r][:LEN]`.
fn watch_spec(text: &str, symbols: &SymbolTable) -> Result<BreakSpec, String> {
    let mut parts = text.split(':');
    let place = parts.next().unwrap_or_default();
    let addr = location(place, symbols).map_err(|e| format!("--watch {text}: {e}"))?;
    let mut access = WatchAccess::Write;
    let mut len: Option<u8> = None;
    for part in parts {
        match part {
            "w" => access = WatchAccess::Write,
            "rw" => access = WatchAccess::ReadWrite,
            "r" => access = WatchAccess::Read,
            n => {
                len = Some(n.parse().map_err(|_| {
                    format!(
                    "--watch {text}: `{n}` is neither an access (w, rw) nor a length (1, 2, 4, 8)"
                )
                })?)
            }
        }
    }
    let len = match len {
        Some(len) => len,
        None => match symbols.size(place) {
            Some(n @ (1 | 2 | 4 | 8)) => n as u8,
            _ => {
                return Err(format!(
                    "--watch {text}: give a length (`{place}:w:8`); the size of `{place}` is not known or not 1, 2, 4 or 8"
                ))
            }
        },
    };
    BreakSpec::watch(addr, access, len).map_err(|e| format!("--watch {text}: {e}"))
}
