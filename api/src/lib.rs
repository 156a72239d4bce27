//! drvisor's wire types: what the CLI prints as JSON lines (`--events`), the exit codes it
//! ends with ([`exit_code`]) and what the REST control plane speaks. Plain serde data, no
//! behaviour; the VMM converts to and from its own types at the edge.
//!
//! The control plane itself lives here too, apart from the VMM, each part behind a feature
//! (none is on by default, so the wire types alone need only serde, serde_json and utoipa):
//! `server::serve` (`server`) runs the HTTP server over a [`control::Control`],
//! `client::Client` (`client`) talks to it, and `ctl` (`ctl`) is the `drvisor ctl` command
//! built on the client.
#![deny(missing_docs)]

/// The most bytes of the stack one hit event may carry (`--capture`, a request's `capture`).
pub const MAX_CAPTURE: u16 = 4096;

#[cfg(feature = "client")]
pub mod client;
pub mod control;
#[cfg(feature = "ctl")]
pub mod ctl;
#[cfg(feature = "ctl")]
pub mod ctl_brief;
pub mod exit_code;
pub mod rest;
pub mod ring;
#[cfg(feature = "server")]
pub mod server;
pub mod unix_socket;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The `event` field of every JSON event line and stream record: which record it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventName {
    /// A breakpoint or watch hit ([`HitEvent`]).
    Hit,
    /// A breakpoint or watch added, armed or removed ([`rest::PlanEvent`]).
    Plan,
    /// The VM paused, resumed or stopped ([`rest::StateEvent`]).
    State,
    /// Events a reader missed ([`rest::LostEvent`]).
    Lost,
    /// The page engine's trap counts at the end of a run ([`PageTrapsEvent`]).
    PageTraps,
    /// A guest debug-register slot drvisor placed late ([`GuestDrLateEvent`]).
    GuestDrLate,
}

/// What a breakpoint watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakKind {
    /// Instruction fetch.
    Exec,
    /// Data writes.
    Write,
    /// Data reads (page engine only: x86 debug registers cannot watch reads alone).
    Read,
    /// Data reads or writes.
    ReadWrite,
}

/// What happens when a host breakpoint is hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HitAction {
    /// Report and go on.
    #[default]
    Continue,
    /// Report and pause every vCPU until resumed.
    Pause,
    /// Report and end the run.
    Stop,
}

/// The general registers at a hit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(missing_docs)]
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// One host breakpoint hit, as printed by `drvisor run` (one JSON line per hit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitEvent {
    /// Always [`EventName::Hit`].
    pub event: EventName,
    /// The breakpoint's id.
    pub id: u32,
    /// How the user named it (symbol or address).
    pub label: String,
    /// The vCPU that hit it.
    pub vcpu: u32,
    /// RIP at the hit: the instruction for exec (a fault), the next one for data (a trap).
    pub rip: u64,
    /// The breakpoint's address.
    pub addr: u64,
    /// What fired.
    pub kind: BreakKind,
    /// The engine that carried it: `hw` (a debug-register slot) or `page` (page protection).
    pub engine: rest::Engine,
    /// The physical debug-register slot that reported it (hw engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    /// The access that hit it (page engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessEvent>,
    /// What the action decided.
    pub action: HitAction,
    /// The hit number of this breakpoint, from 1.
    pub count: u64,
    /// The registers at the hit.
    pub regs: Registers,
    /// The stack from RSP up, where the breakpoint asked for it (`--capture`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<MemorySnippet>,
    /// The words of `stack` that point into code, named (a guess each, as the kernel's own
    /// `show_stack` marks them), where the symbols are known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbolized: Vec<StackWord>,
    /// The real call chain at the hit, innermost first (`setup_arch+0x0/0x...`, then each
    /// caller's return address), walked with the kernel's ORC unwind table where the hit
    /// captures (`--capture`) and the kernel has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backtrace: Vec<String>,
    /// Why `backtrace` ends where it does (`end of stack`, `user mode`, or what stopped the
    /// walk), or why a kernel-mode hit has none (`no backtrace: ...`, e.g. a kernel built
    /// without an ORC table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace_end: Option<String>,
    /// The current task's `comm` at a kernel-mode hit of a Linux guest whose BTF gave its
    /// layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Its `pid` (the thread's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Its `tgid` (the process's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgid: Option<i32>,
}

/// Guest memory at a hit: `bytes` (hex, two digits a byte, in address order) read from the
/// guest-virtual address `addr`, through the guest's page tables. Shorter than asked where a
/// page does not translate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySnippet {
    /// Its first guest-virtual address (RSP, for the stack).
    pub addr: u64,
    /// The bytes, in hex.
    pub bytes: String,
}

/// A word of a captured stack that points into code: where it is, its value, and the function
/// it points into as the kernel's `show_stack` names it, marked `?` as a guess
/// (`? do_sys_openat2+0x5b/0x90`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackWord {
    /// Its guest-virtual address on the stack.
    pub addr: u64,
    /// The word.
    pub value: u64,
    /// `? function+offset/size`.
    pub symbol: String,
}

/// `{"event":"page-traps","traps":T,"false_traps":F}`: the page engine's counts at the end of
/// a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageTrapsEvent {
    /// Always [`EventName::PageTraps`].
    pub event: EventName,
    /// Every trapped access.
    pub traps: u64,
    /// Trapped accesses that touched no watched byte.
    pub false_traps: u64,
}

impl PageTrapsEvent {
    /// The counts as a record.
    pub fn new(traps: u64, false_traps: u64) -> Self {
        PageTrapsEvent {
            event: EventName::PageTraps,
            traps,
            false_traps,
        }
    }
}

/// `{"event":"guest-dr-late","vcpu":V,"slot":S,"addr":A,"kind":K,"len":L,"unseen_us":U}`: on a
/// host that carries the guest's own breakpoints in physical slots and cannot trap its MOV DR
/// (SVM), drvisor found at an exit of vCPU `vcpu` that the guest had armed (or moved) its debug
/// slot `slot` since it last looked, `unseen_us` microseconds before. The slot was not in
/// hardware in between: a hit the guest would have taken there was lost. drvisor has placed it
/// now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDrLateEvent {
    /// Always [`EventName::GuestDrLate`].
    pub event: EventName,
    /// The vCPU.
    pub vcpu: u32,
    /// The guest's own slot number (its DR0-3), not the physical one.
    pub slot: u8,
    /// The address the guest put in it.
    pub addr: u64,
    /// What it watches.
    pub kind: BreakKind,
    /// Its length in bytes (1 for exec).
    pub len: u8,
    /// How long drvisor had not looked at this vCPU's debug registers: the most time the slot
    /// can have been armed unplaced.
    pub unseen_us: u64,
}

/// The guest access behind a page-engine hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    /// Guest-physical address of the access.
    pub phys_addr: u64,
    /// Its length in bytes (1-8).
    pub len: u8,
    /// A write (true) or a read.
    pub write: bool,
    /// For a write, the accessed bytes before it (little-endian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<u64>,
    /// The bytes written, or read (little-endian).
    pub value: u64,
}

/// Where one host breakpoint lives right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakpointState {
    /// The id.
    pub id: u32,
    /// How the user named it.
    pub label: String,
    /// `armed`, `partly-armed` or `pending`.
    pub state: String,
    /// Hardware slot per vCPU where armed (`[vcpu, slot]`).
    pub armed: Vec<(u32, u8)>,
    /// Why, per vCPU where not armed (`[vcpu, reason]`).
    pub pending: Vec<(u32, String)>,
}

/// One vCPU's debug state: its physical slots and the guest's virtual slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuDebugState {
    /// The vCPU.
    pub vcpu: u32,
    /// Owner of each physical slot: `free`, `host:ID` or `guest:DRn`.
    pub physical: [String; 4],
    /// State of each of the guest's virtual slots, in words.
    pub guest: [String; 4],
    /// The merged DR7 drvisor installs.
    pub dr7: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_event_round_trips_as_one_json_line() {
        let e = HitEvent {
            event: EventName::Hit,
            id: 1,
            label: "drv_target_0".into(),
            vcpu: 0,
            rip: 0x1030e0,
            addr: 0x1030e0,
            kind: BreakKind::Exec,
            engine: rest::Engine::Hw,
            slot: Some(3),
            access: None,
            action: HitAction::Continue,
            count: 3,
            regs: Registers::default(),
            stack: None,
            symbolized: Vec::new(),
            backtrace: Vec::new(),
            backtrace_end: None,
            comm: None,
            pid: None,
            tgid: None,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"kind\":\"exec\""));
        assert!(line.contains("\"event\":\"hit\"") && line.contains("\"engine\":\"hw\""));
        let late = GuestDrLateEvent {
            event: EventName::GuestDrLate,
            vcpu: 1,
            slot: 0,
            addr: 0x1000,
            kind: BreakKind::Write,
            len: 1,
            unseen_us: 900,
        };
        assert_eq!(
            serde_json::to_string(&late).unwrap(),
            r#"{"event":"guest-dr-late","vcpu":1,"slot":0,"addr":4096,"kind":"write","len":1,"unseen_us":900}"#
        );
        let traps = serde_json::to_string(&PageTrapsEvent::new(3, 1)).unwrap();
        assert_eq!(traps, r#"{"event":"page-traps","traps":3,"false_traps":1}"#);
        assert_eq!(serde_json::from_str::<HitEvent>(&line).unwrap(), e);
    }
}
