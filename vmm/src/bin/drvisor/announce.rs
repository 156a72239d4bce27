//! What drvisor tells the person at the terminal about the breakpoints it armed, and how the
//! run ended, in words. Every message goes through the console (see
//! [`drvisor::console_lines`]), so none splits a guest line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use drvisor::console_lines::ConsoleLines;
use drvisor::debug::{HitContext, OnHit};
use drvisor::outcome::Names;
use drvisor::symbols::SymbolTable;
use drvisor::Outcome;
use drvisor_api::{BreakpointState, HitAction};

/// Shows `drvisor: TEXT` on its own line(s).
pub fn say(text: impl AsRef<str>) {
    let text = text.as_ref();
    let mut line = format!("drvisor: {text}");
    if !line.ends_with('\n') {
        line.push('\n');
    }
    ConsoleLines::stdio().message(&line);
}

/// Writes every message still held for a guest line: the run is over.
pub fn flush() {
    ConsoleLines::stdio().flush();
}

/// The word for a hardware breakpoint's state in the info log, and a warning for one that
/// does not fire everywhere it was asked to (pending or partly armed), with the reasons.
pub fn hw_state(state: Option<&BreakpointState>) -> (&str, Option<String>) {
    let Some(s) = state else {
        return ("armed", None);
    };
    let word = s.state.as_str();
    if s.pending.is_empty() {
        return (word, None);
    }
    let reasons: Vec<String> = s
        .pending
        .iter()
        .map(|(vcpu, why)| format!("vcpu{vcpu}: {why}"))
        .collect();
    let warning = format!(
        "warning: host breakpoint #{} {} is {}, it will not fire where it waits ({}); it is placed when a slot frees up",
        s.id,
        s.label,
        word,
        reasons.join("; ")
    );
    (word, Some(warning))
}

/// The `paused:` lines of `pause` hits, said only when the pause really happens: a resume
/// that overtakes a pause hit (an answer to its event) leaves nothing to say.
#[derive(Clone, Default)]
pub struct PauseNotices {
    /// The words for each pause a hit asked for, by the reason the pause will carry.
    held: Arc<Mutex<BTreeMap<String, String>>>,
}

impl PauseNotices {
    /// Wraps a hit callback so that a `pause` it asks for is announced once it is taken.
    pub fn wrap(&self, on_hit: OnHit) -> OnHit {
        let held = self.held.clone();
        Arc::new(move |hit: &HitContext| {
            let action = on_hit(hit);
            if action == HitAction::Pause {
                let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                held.insert(hit.pause_reason(), pause_message(hit, std::process::id()));
            }
            action
        })
    }

    /// The line for a pause that was taken with `reason`, if a hit asked for it.
    pub fn taken(&self, reason: &str) -> Option<String> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(reason)
    }
}

fn pause_message(hit: &HitContext, pid: u32) -> String {
    format!(
        "paused: host breakpoint #{} {} hit #{} on vCPU {} at rip={:#x}; every vCPU waits; `kill -USR1 {pid}` resumes",
        hit.id.0, hit.label, hit.count, hit.vcpu, hit.rip
    )
}

/// The outcome in words, with the labels of the breakpoints armed and the guest's symbols.
pub fn outcome(outcome: &Outcome, labels: &BTreeMap<u32, String>, symbols: &SymbolTable) -> String {
    let label = |id: u32| labels.get(&id).cloned();
    let symbol = |addr: u64| symbolize(symbols, addr);
    let text = outcome.describe(Names {
        label: &label,
        symbol: &symbol,
    });
    match outcome {
        Outcome::UnknownPort { .. } => format!("{text} (--strict-ports)"),
        _ => text,
    }
}

/// Farther than this past the nearest symbol, an address is in no function drvisor knows.
const MAX_SYMBOL_OFFSET: u64 = 1 << 20;

/// `function+0xoffset` for a guest address, from the nearest symbol at or below it.
fn symbolize(symbols: &SymbolTable, addr: u64) -> Option<String> {
    symbols
        .describe(addr)
        .filter(|(_, off)| *off < MAX_SYMBOL_OFFSET)
        .map(|(name, off)| format!("{}+{off:#x}", demangle(&name)))
}

/// A mangled Rust name as its path `a::b::c` (without the hash); any other name (the C symbols
/// of a kernel) as it is.
fn demangle(name: &str) -> String {
    match format!("{:#}", rustc_demangle::demangle(name)) {
        path if path.is_empty() => name.to_owned(),
        path => path,
    }
}

/// The one line saying which features `--cpu-features` hid only because they need one it was
/// told to hide; `None` when there are none.
pub fn also_hidden(names: &[&str]) -> Option<String> {
    (!names.is_empty()).then(|| {
        format!(
            "--cpu-features also hides {} from the guest (they need a feature it hides)",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(state: &str, pending: Vec<(u32, String)>) -> BreakpointState {
        BreakpointState {
            id: 5,
            label: "drv_watch_u8".into(),
            state: state.into(),
            armed: vec![],
            pending,
        }
    }

    #[test]
    fn a_pending_breakpoint_is_never_called_armed_and_gets_a_warning() {
        let s = state("pending", vec![(0, "no free hardware slot".into())]);
        let (word, warning) = hw_state(Some(&s));
        assert_eq!(word, "pending");
        let warning = warning.expect("a warning");
        assert!(
            warning.starts_with("warning: host breakpoint #5 drv_watch_u8 is pending")
                && warning.contains("vcpu0: no free hardware slot"),
            "{warning}"
        );
        let armed = state("armed", vec![]);
        assert_eq!(hw_state(Some(&armed)), ("armed", None));
    }

    fn hit(id: u32, vcpu: usize, count: u64) -> HitContext {
        HitContext {
            id: drvisor_debug::HostBpId(id),
            label: "drv_target_1".into(),
            vcpu,
            rip: 0x10_1000,
            addr: 0x10_1000,
            kind: drvisor_api::BreakKind::Exec,
            engine: drvisor::watch::Engine::Hw,
            slot: Some(3),
            access: None,
            count,
            regs: Default::default(),
            paging: None,
        }
    }

    #[test]
    fn a_pause_is_announced_only_once_it_is_taken() {
        let notices = PauseNotices::default();
        let on_hit = notices.wrap(drvisor::debug::always(HitAction::Pause));
        assert_eq!(on_hit(&hit(1, 0, 1)), HitAction::Pause);
        // Its pause not taken yet (a racing resume may cancel it): nothing for another reason.
        assert_eq!(notices.taken("hit #1 on vCPU 1"), None);
        assert_eq!(notices.taken("--paused"), None);
        let line = notices
            .taken("hit #1 on vCPU 0")
            .expect("a line once taken");
        assert!(
            line.starts_with(
                "paused: host breakpoint #1 drv_target_1 hit #1 on vCPU 0 at rip=0x101000"
            ),
            "{line}"
        );
        assert_eq!(notices.taken("hit #1 on vCPU 0"), None, "said once");
        // A hit that does not pause leaves nothing.
        let going = notices.wrap(drvisor::debug::always(HitAction::Continue));
        going(&hit(2, 0, 1));
        assert_eq!(notices.taken("hit #2 on vCPU 0"), None);
    }

    #[test]
    fn rust_names_are_demangled_and_others_kept() {
        assert_eq!(
            demangle("_ZN13drvisor_guest9scenarios6faults8emu_fail17h1da128d34ba1b8e8E"),
            "drvisor_guest::scenarios::faults::emu_fail"
        );
        assert_eq!(demangle("do_sys_open"), "do_sys_open");
        assert_eq!(demangle("_ZN99tooshortE"), "_ZN99tooshortE");
        assert_eq!(demangle("_ZNE"), "_ZNE");
    }

    #[test]
    fn symbols_name_the_function_an_address_is_in() {
        let t = SymbolTable::from_system_map("1000 T start\n2000 T emu_fail\n", "m").unwrap();
        assert_eq!(symbolize(&t, 0x2004).as_deref(), Some("emu_fail+0x4"));
        assert_eq!(symbolize(&t, 0x10), None);
        assert_eq!(symbolize(&t, 0x8000_0000_0000_0000), None);
        let o = Outcome::TripleFault {
            vcpu: 0,
            rip: 0x1001,
            was_reset: false,
            previous_exit: None,
        };
        assert_eq!(
            outcome(&o, &BTreeMap::new(), &t),
            "guest triple fault on vCPU 0 at rip=0x1001 (start+0x1)"
        );
    }

    #[test]
    fn also_hidden_is_one_line_or_nothing() {
        assert_eq!(also_hidden(&[]), None);
        assert_eq!(
            also_hidden(&["avx2", "fma"]).as_deref(),
            Some(
                "--cpu-features also hides avx2, fma from the guest (they need a feature it hides)"
            )
        );
    }
}
