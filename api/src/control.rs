//! The one seam between the REST server and the VMM: what the server may ask of a running VM.
//! The VMM implements it on its library entry points (`DebugController`, the page-watch
//! engine, run control); tests implement it with a stub. Every method may block (a change
//! returns only after every vCPU runs the new plan), so the server calls them off its async
//! threads. None touches a vCPU's file descriptor.

use crate::rest::{
    ApiError, Breakpoint, DebugRegs, HostCapabilities, MemoryQuery, MemoryRead, NewBreakpoint,
    NewWatchpoint, VcpuInfo, VcpuRegisters, VmInfo, WantedState,
};
use crate::ring::EventRing;

/// A running VM as the control plane sees it.
pub trait Control: Send + Sync + 'static {
    /// `GET /vm`.
    fn vm(&self) -> VmInfo;
    /// `PUT /vm/state`: pause or resume every vCPU. Returns once every vCPU is out of the
    /// guest (pause) or allowed back in (resume). 409 once stopped.
    fn set_state(&self, want: WantedState) -> Result<VmInfo, ApiError>;
    /// `POST /vm/stop`: ends the run. 409 if it already ended.
    fn stop(&self) -> Result<VmInfo, ApiError>;
    /// `GET /host/capabilities`.
    fn capabilities(&self) -> HostCapabilities;
    /// `POST /breakpoints`.
    fn add_breakpoint(&self, req: NewBreakpoint) -> Result<Breakpoint, ApiError>;
    /// `POST /watchpoints`.
    fn add_watchpoint(&self, req: NewWatchpoint) -> Result<Breakpoint, ApiError>;
    /// `GET /breakpoints`: every breakpoint and watch, whoever asked for it.
    fn breakpoints(&self) -> Vec<Breakpoint>;
    /// `GET /breakpoints/{id}`.
    fn breakpoint(&self, id: u32) -> Result<Breakpoint, ApiError>;
    /// `DELETE /breakpoints/{id}`: returns once no vCPU can report it any more.
    fn remove_breakpoint(&self, id: u32) -> Result<(), ApiError>;
    /// `GET /vcpus`.
    fn vcpus(&self) -> Vec<VcpuInfo>;
    /// `GET /vcpus/{n}/debugregs`.
    fn debugregs(&self, vcpu: u32) -> Result<DebugRegs, ApiError>;
    /// `GET /vcpus/{n}/registers`: 409 unless paused.
    fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, ApiError>;
    /// `GET /memory`.
    fn memory(&self, query: &MemoryQuery) -> Result<MemoryRead, ApiError>;
    /// The event ring `GET /events` streams from.
    fn events(&self) -> &EventRing;
}
