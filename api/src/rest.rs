//! The REST control plane's wire types: request and response bodies, and the errors. The
//! OpenAPI document is generated from these (`utoipa`), so they are its single source.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{HitAction, Registers};

/// Where the VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// vCPUs run guest code.
    Running,
    /// Every vCPU is held out of the guest (all-stop) until resumed.
    Paused,
    /// The run has ended; `exit` says how.
    Stopped,
}

/// What `PUT /vm/state` may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WantedState {
    /// Resume every vCPU.
    Running,
    /// Pause every vCPU (all-stop).
    Paused,
}

/// `PUT /vm/state` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateRequest {
    /// `running` or `paused`.
    pub state: WantedState,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmExit {
    /// The process exit code the run ends with (as `drvisor run` exits).
    pub status: u8,
    /// In words: the guest's status, a triple fault with its RIP, a stop request, ...
    pub reason: String,
}

/// `GET /vm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    /// Running, paused or stopped.
    pub state: VmState,
    /// Set once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<VmExit>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// The kernel: its path, or `embedded test guest`.
    pub kernel: String,
    /// The slot policy: `host-first`, `guest-first` or `deny`.
    pub policy: String,
    /// Milliseconds since the VM was built.
    pub uptime_ms: u64,
}

/// One row of the host probe's table (`GET /host/capabilities`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapabilityRow {
    /// The mechanism, kebab-case (`host-exec-breakpoint`, `single-step`, ...).
    pub mechanism: String,
    /// Guest privilege level of the experiment.
    pub cpl: u8,
    /// Whether this host delivers it.
    pub works: bool,
    /// What the experiment observed.
    pub observed: String,
}

/// `GET /host/capabilities`: what the probe measured on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostCapabilities {
    /// One row per mechanism and privilege level.
    pub rows: Vec<CapabilityRow>,
}

/// `POST /breakpoints`: an exec breakpoint, as `--break` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBreakpoint {
    /// A symbol, or an address (`0x` hex or decimal), as on the command line.
    pub location: String,
    /// Only this vCPU; absent for the whole VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    /// What a hit does (default `continue`).
    #[serde(default)]
    pub action: HitAction,
    /// Bytes of the stack from RSP that each hit event carries (`stack`), 1 to 4096
    /// (`MAX_CAPTURE`); absent for none (0 is refused, as `--capture 0` is). Where the
    /// kernel's symbols are known the events also name the words that point into code
    /// (`symbolized`), and at a kernel-mode hit carry the call chain from the kernel's ORC
    /// table (`backtrace`) and why it ends there, or why there is none (`backtrace_end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<u16>,
    /// A condition (docs/conditions.md), evaluated in the VMM at each hit: only hits at which
    /// it holds are reported and act. Absent: every hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// Which accesses a watch reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum WatchAccess {
    /// Writes.
    #[default]
    #[serde(rename = "w")]
    Write,
    /// Reads (page engine only).
    #[serde(rename = "r")]
    Read,
    /// Reads and writes.
    #[serde(rename = "rw")]
    ReadWrite,
}

/// Which engine carries a watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EngineChoice {
    /// A debug-register slot where this host delivers it and the watch fits one, else pages.
    #[default]
    Auto,
    /// A debug-register slot.
    Hw,
    /// Page protection.
    Page,
}

/// `POST /watchpoints`: a data watch, as `--watch` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWatchpoint {
    /// A symbol or an address (`0x` hex or decimal); `phys:` in front for a guest-physical one.
    pub location: String,
    /// `w` (default), `r` or `rw`.
    #[serde(default)]
    pub access: WatchAccess,
    /// Bytes; absent for the symbol's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// Only this vCPU; absent for the whole VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    /// What a hit does (default `continue`).
    #[serde(default)]
    pub action: HitAction,
    /// `auto` (default), `hw` or `page`.
    #[serde(default)]
    pub engine: EngineChoice,
    /// Bytes of the stack from RSP that each hit event carries (`stack`), 1 to 4096
    /// (`MAX_CAPTURE`); absent for none (0 is refused, as `--capture 0` is). Where the
    /// kernel's symbols are known the events also name the words that point into code
    /// (`symbolized`), and at a kernel-mode hit carry the call chain from the kernel's ORC
    /// table (`backtrace`) and why it ends there, or why there is none (`backtrace_end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<u16>,
    /// A condition (docs/conditions.md), evaluated in the VMM at each hit: only hits at which
    /// it holds are reported and act. Absent: every hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// Which client asked for a breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// `drvisor run --break/--watch`.
    Cli,
    /// The REST control plane.
    Api,
    /// The gdb stub.
    Gdb,
    /// The CI harness.
    Ci,
}

/// An exec breakpoint or a data watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BreakpointKind {
    /// Instruction fetch (`POST /breakpoints`).
    Exec,
    /// Data access (`POST /watchpoints`).
    Watch,
}

/// The engine that carries a breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// A debug-register slot.
    Hw,
    /// Page protection.
    Page,
}

/// Where a breakpoint is on one vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VcpuPlacement {
    /// The vCPU.
    pub vcpu: u32,
    /// `armed` or `pending`.
    pub state: String,
    /// The physical debug-register slot (hw engine, armed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    /// Why it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /breakpoints/{id}`: one breakpoint or watch and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Breakpoint {
    /// The id (`DELETE /breakpoints/{id}`).
    pub id: u32,
    /// Exec breakpoint or watch.
    pub kind: BreakpointKind,
    /// The location as it was given.
    pub location: String,
    /// The resolved address (guest-virtual, or guest-physical for `phys:`).
    pub addr: u64,
    /// Bytes covered (1 for exec).
    pub len: u64,
    /// For a watch: `w`, `r` or `rw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<WatchAccess>,
    /// Only this vCPU; absent for the whole VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    /// What a hit does.
    pub action: HitAction,
    /// The engine carrying it.
    pub engine: Engine,
    /// Who asked for it.
    pub owner: Owner,
    /// `armed`, `partly-armed` or `pending`, with what this host limits (for example
    /// `armed (fires in CPL0 code only on this host)`).
    pub state: String,
    /// Per vCPU (hw engine): slot or the reason it is pending.
    pub vcpus: Vec<VcpuPlacement>,
    /// Guest-physical pages it traps (page engine).
    pub pages: Vec<u64>,
    /// Hits so far: every time the guest reached it, whether its condition held or not.
    pub hits: u64,
    /// Its condition, as given: only hits at which it holds are reported and act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Hits at which its condition held (with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// Hits at which its condition could not be evaluated (memory not mapped, a division by
    /// zero): they count as false (with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_faults: Option<u64>,
}

/// `GET /vcpus`: one vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VcpuInfo {
    /// Its index (the APIC id).
    pub vcpu: u32,
}

/// DR0-DR3, DR6 and DR7.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(missing_docs)]
pub struct DrFile {
    pub dr0: u64,
    pub dr1: u64,
    pub dr2: u64,
    pub dr3: u64,
    pub dr6: u64,
    pub dr7: u64,
}

/// Who owns one physical slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlotOwner {
    /// The physical slot, 0-3.
    pub slot: u8,
    /// `free`, `host:ID`, `guest:DRn` or both when they share it (`host:ID+guest:DRn`).
    pub owner: String,
}

/// `GET /vcpus/{n}/debugregs`: the guest's own view, what is loaded, and the slot map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DebugRegs {
    /// The vCPU.
    pub vcpu: u32,
    /// DR0-DR7 as the guest wrote them (its virtual DR file).
    pub guest: DrFile,
    /// What drvisor loads into the hardware: the merged DR0-3 and DR7 (DR6 is the guest's).
    pub loaded: DrFile,
    /// Whether host debugging is on for this vCPU (`KVM_SET_GUEST_DEBUG`); off, the guest's
    /// own registers are loaded as they are.
    pub host_debug: bool,
    /// Each physical slot's owner.
    pub slots: Vec<SlotOwner>,
    /// Each of the guest's virtual slots, in words (`idle`, `in DR2`, `pending: ...`).
    pub guest_slots: Vec<String>,
}

/// A segment register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(missing_docs)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
}

/// `GET /vcpus/{n}/registers` (paused VM only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(missing_docs)]
pub struct VcpuRegisters {
    pub vcpu: u32,
    pub regs: Registers,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
}

/// `GET /memory` query: exactly one of `gpa` and `gva`, and `len`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryQuery {
    /// A guest-physical address (`0x` hex or decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpa: Option<String>,
    /// A guest-virtual address or a symbol, translated through the guest's page tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gva: Option<String>,
    /// With `gva`: the vCPU whose page tables translate it (its CR3 at its last exit), by
    /// default vCPU 0. A user-space address is only meaningful on the vCPU that runs its process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    /// Bytes, 1 to [`MEMORY_READ_MAX`].
    pub len: u64,
}

/// The most bytes one `GET /memory` returns.
pub const MEMORY_READ_MAX: u64 = 4096;

/// `GET /memory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemoryRead {
    /// The guest-physical address of the first byte.
    pub gpa: u64,
    /// The guest-virtual address asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gva: Option<u64>,
    /// The bytes, as lowercase hex.
    pub hex: String,
}

/// What a request's failure is, which fixes its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: malformed JSON, unknown fields, a bad query.
    BadRequest,
    /// 401: a missing or wrong token.
    Unauthorized,
    /// 404: no such breakpoint, vCPU or path.
    NotFound,
    /// 408: the request head or body did not arrive in time.
    Timeout,
    /// 409: the VM is not in a state that allows it.
    Conflict,
    /// 413: the body is over the limit.
    TooLarge,
    /// 422: it parses but cannot be served (alignment, length, unknown symbol, a mechanism
    /// this host lacks, no free slot under `deny`).
    Unprocessable,
    /// 500: a KVM call failed.
    Internal,
    /// 503: the listener already serves as many connections as it may.
    Busy,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::Timeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::Internal => 500,
            ErrorKind::Busy => 503,
        }
    }
}

/// Every error's body: a stable machine code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, kebab-case: `bad-json`, `unknown-symbol`, `not-found`, `vm-not-paused`, ...
    pub code: String,
    /// What was wrong and how to fix it.
    pub message: String,
}

/// A failed request: its kind (the status) and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Which status.
    pub kind: ErrorKind,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.body.message, self.body.code)
    }
}

impl std::error::Error for ApiError {}

/// What changed in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanChange {
    /// A breakpoint or watch was armed (or left pending).
    Added,
    /// One that was pending took effect (a guest-virtual watch the guest now maps).
    Armed,
    /// The guest maps a guest-virtual watch's bytes to other pages now, and the watch moved
    /// there (its `pages` say where).
    Remapped,
    /// The guest maps a guest-virtual watch's bytes to other pages now, where the watch cannot
    /// follow (they are not RAM, or a read watch would hide code): it stays, and its `state`
    /// says why.
    LeftBehind,
    /// One was removed: no vCPU reports it any more.
    Removed,
}

/// The `plan` event: `{"event":"plan","change":"added","breakpoint":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanEvent {
    /// Always `"plan"`.
    pub event: crate::EventName,
    /// Added or removed.
    pub change: PlanChange,
    /// The breakpoint as it was after an add, or before a removal.
    pub breakpoint: Breakpoint,
}

/// The `state` event: `{"event":"state","state":"paused","reason":"..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateEvent {
    /// Always `"state"`.
    pub event: crate::EventName,
    /// The new state.
    pub state: VmState,
    /// Why: `api`, `hit #ID on vCPU N`, `signal`, or the run's end in words.
    pub reason: String,
    /// Set when stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<VmExit>,
}

/// The `lost` event: `{"event":"lost","count":N}`, events this reader missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LostEvent {
    /// Always `"lost"`.
    pub event: crate::EventName,
    /// How many.
    pub count: u64,
}
