//! gdb's view of the VM: threads are vCPUs, breakpoints and watchpoints are session requests
//! owned by `gdb`, and a hit of one stops every vCPU and is reported to gdb.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use drvisor_api::rest::Owner;
use drvisor_api::{HitAction, Registers};
use drvisor_debug::{BreakSpec, Scope};
use drvisor_watch::Access;
use gdbstub::common::{Signal, Tid};
use gdbstub::outputln;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};

use super::arch::{fpu_from_gdb, fpu_to_gdb, SystemRegs, X86_64_System, SYSTEM_NAMES};
use super::evictions::Evictions;
use super::monitor_break::{self, MonitorError};
use super::points::{Inserted, Points};
use crate::control::{Request, Session, What};
use crate::debug::HitContext;
use crate::watch::{EngineChoice, Place};

/// What gdb asked for: a `Z0`-`Z4` packet's type, address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// `Z0`: served by a hardware slot (`int3` cannot work on every host).
    Soft(u64),
    /// `Z1`.
    Hard(u64),
    /// `Z2`-`Z4`.
    Watch(u64, u64, Kind),
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Soft(addr) => write!(f, "break at {addr:#x}"),
            Point::Hard(addr) => write!(f, "hbreak at {addr:#x}"),
            Point::Watch(addr, len, kind) => {
                let name = match kind {
                    Kind::Write => "watch",
                    Kind::Read => "rwatch",
                    Kind::Access => "awatch",
                };
                write!(f, "{name} of {len} bytes at {addr:#x}")
            }
        }
    }
}

/// A watch's access kind, orderable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Writes.
    Write,
    /// Reads.
    Read,
    /// Either.
    Access,
}

/// Why a vCPU stopped for gdb: a gdb breakpoint's hit (sent from the vCPU that hit it), or the
/// end of a single-step (`point` is `None`).
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// The vCPU.
    pub vcpu: usize,
    /// What it hit.
    pub point: Option<Point>,
}

/// RFLAGS.RF, the resume flag.
const RFLAGS_RF: u64 = 1 << 16;

/// How long a single-step may take before gdb is told it failed.
const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The stub's target.
pub struct GdbTarget {
    pub(super) session: Arc<Session>,
    pub(super) stops: Receiver<Stop>,
    sender: Sender<Stop>,
    /// Stops that arrived together (several vCPUs hit at once): reported one per resume.
    pub(super) queued: VecDeque<Stop>,
    points: Points,
    /// The vCPU gdb asked to single-step at the next resume.
    step: Option<usize>,
    /// gdb's breakpoints that lose their slot later, told to gdb while the guest runs.
    pub(super) evictions: Evictions,
    /// Breakpoints made by `monitor break`: not gdb's own points, removed when gdb goes.
    monitor_breaks: Vec<u32>,
}

/// The thread id of vCPU `index` (gdb's thread ids start at 1).
pub fn tid(index: usize) -> Tid {
    Tid::new(index + 1).unwrap_or(Tid::MIN)
}

fn index(tid: Tid) -> usize {
    tid.get() - 1
}

impl GdbTarget {
    /// A target on `session`, telling gdb of its breakpoints' evictions through `evictions`.
    pub fn new(session: Arc<Session>, evictions: Evictions) -> Self {
        evictions.clear();
        let (sender, stops) = channel();
        GdbTarget {
            session,
            stops,
            sender,
            queued: VecDeque::new(),
            points: Points::default(),
            step: None,
            evictions,
            monitor_breaks: Vec::new(),
        }
    }

    /// Removes every breakpoint this gdb set: a gdb that went away must not leave the guest to
    /// pause at its breakpoints with nobody to resume it.
    pub fn forget_all(&mut self) {
        for id in self
            .points
            .take_all()
            .into_iter()
            .chain(self.monitor_breaks.drain(..))
        {
            let _ = self.session.remove(id);
        }
    }

    /// Removes the breakpoints gdb retired and did not insert again: the VM continues without
    /// them.
    fn drop_retired(&mut self) {
        for id in self.points.take_retired() {
            let _ = self.session.remove(id);
        }
    }

    fn add(&mut self, point: Point) -> TargetResult<bool, Self> {
        if let Some(id) = self.points.revive(point) {
            // Evicted while retired (another owner took its slot): armed anew below, or
            // refused, never answered as inserted.
            match self.not_live(id) {
                None => return Ok(true),
                Some(state) => {
                    tracing::info!("gdb: {point:?} was {state} while gdb had it out");
                    self.points.forget(point);
                    let _ = self.session.remove(id);
                }
            }
        }
        if self.arm(point) {
            return Ok(true);
        }
        // Retired points still hold their slots; gdb has none of them inserted, so they give
        // way to one it inserts.
        if self.points.has_retired() {
            self.drop_retired();
            return Ok(self.arm(point));
        }
        Ok(false)
    }

    /// Arms `point` as a new breakpoint; `true` if it is armed on every vCPU.
    fn arm(&mut self, point: Point) -> bool {
        let label = match point {
            Point::Soft(a) | Point::Hard(a) => format!("gdb:{a:#x}"),
            Point::Watch(a, len, _) => format!("gdb:{a:#x}:{len}"),
        };
        let what = match point {
            Point::Soft(addr) | Point::Hard(addr) => match BreakSpec::exec(addr) {
                Ok(spec) => What::Break(spec),
                Err(_) => return false,
            },
            Point::Watch(addr, len, kind) => What::Watch {
                place: Place::Virtual(addr),
                access: match kind {
                    Kind::Write => Access::Write,
                    Kind::Read => Access::Read,
                    Kind::Access => Access::ReadWrite,
                },
                len,
                engine: EngineChoice::Auto,
            },
        };
        let req = Request {
            label,
            what,
            scope: Scope::Vm,
            action: HitAction::Pause,
            capture: 0,
            owner: Owner::Gdb,
            condition: None,
        };
        let report = self.session.on_hit(&req);
        let sender = self.sender.clone();
        let inserted = Inserted::new();
        let live = inserted.clone();
        let on_hit = Arc::new(move |hit: &HitContext| {
            // Retired by gdb during a single-step (see `points`): not gdb's hit.
            if !live.get() {
                return HitAction::Continue;
            }
            let action = report(hit);
            let _ = sender.send(Stop {
                vcpu: hit.vcpu,
                point: Some(point),
            });
            action
        });
        match self.session.arm_with(req, on_hit) {
            Ok((id, _)) => match self.not_live(id.0) {
                // Nothing accepted that cannot fire: gdb believes what it inserted stops it,
                // so a breakpoint left pending (every slot taken) or a watch waiting for its
                // page to be mapped is taken back, and gdb says it could not insert it.
                Some(state) => {
                    let _ = self.session.remove(id.0);
                    tracing::warn!("gdb: cannot insert {point:?}: it would be {state}");
                    false
                }
                None => {
                    self.points.insert(point, id.0, inserted);
                    self.evictions.watch(id.0, point.to_string());
                    true
                }
            },
            Err(e) => {
                // gdb prints only that the breakpoint could not be inserted; say why here.
                tracing::warn!("gdb: cannot insert {point:?}: {e}");
                false
            }
        }
    }

    /// The state of breakpoint `id` unless it is armed on every vCPU it is meant for.
    fn not_live(&self, id: u32) -> Option<String> {
        let bp = self.session.breakpoint(id)?;
        let armed = bp.state.starts_with("armed") && bp.vcpus.iter().all(|p| p.state == "armed");
        (!armed).then_some(bp.state)
    }

    fn remove(&mut self, point: Point) -> TargetResult<bool, Self> {
        Ok(self.points.retire(point))
    }
}

impl Target for GdbTarget {
    type Arch = X86_64_System;
    type Error = super::Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl GdbTarget {
    /// Every register gdb sees of parked vCPU `index`, and its x87/SSE state as KVM has it.
    fn system_registers(
        &self,
        index: usize,
    ) -> Option<(SystemRegs, Option<kvm_bindings::kvm_fpu>)> {
        let (r, system) = self.session.parked_system(index)?;
        let mut regs = SystemRegs::default();
        let g = &r.regs;
        regs.core.regs = [
            g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rbp, g.rsp, g.r8, g.r9, g.r10, g.r11,
            g.r12, g.r13, g.r14, g.r15,
        ];
        regs.core.rip = g.rip;
        // RF is the VMM's business at a stop (it resumes past the breakpoint with it), not the
        // guest's state: gdb sees RFLAGS as the guest's code left them, as QEMU shows them.
        regs.core.eflags = (g.rflags & !RFLAGS_RF) as u32;
        let s = &mut regs.core.segments;
        s.cs = u32::from(r.cs.selector);
        s.ss = u32::from(r.ss.selector);
        s.ds = u32::from(r.ds.selector);
        s.es = u32::from(r.es.selector);
        s.fs = u32::from(r.fs.selector);
        s.gs = u32::from(r.gs.selector);
        if let Some(fpu) = &system.fpu {
            fpu_to_gdb(fpu, &mut regs.core);
        }
        regs.fs_base = r.fs.base;
        regs.gs_base = r.gs.base;
        regs.k_gs_base = system.kernel_gs_base;
        regs.cr0 = r.cr0;
        regs.cr2 = r.cr2;
        regs.cr3 = r.cr3;
        regs.cr4 = r.cr4;
        regs.cr8 = system.cr8;
        regs.efer = r.efer;
        Some((regs, system.fpu))
    }
}

/// The system registers and segment bases `written` changes from `now`: gdb may not write
/// them (read-only, see docs/gdb.md).
fn changed_system_registers(now: &SystemRegs, written: &SystemRegs) -> Vec<&'static str> {
    SYSTEM_NAMES
        .iter()
        .zip(now.system().into_iter().zip(written.system()))
        .filter(|(_, (now, written))| now.is_some() && now != written)
        .map(|(name, _)| *name)
        .collect()
}

impl MultiThreadBase for GdbTarget {
    fn read_registers(&mut self, regs: &mut SystemRegs, tid: Tid) -> TargetResult<(), Self> {
        *regs = self
            .system_registers(index(tid))
            .ok_or(TargetError::NonFatal)?
            .0;
        Ok(())
    }

    fn write_registers(&mut self, regs: &SystemRegs, tid: Tid) -> TargetResult<(), Self> {
        let vcpu = index(tid);
        let (now, fpu) = self.system_registers(vcpu).ok_or(TargetError::NonFatal)?;
        // Nothing is written if any of it cannot be.
        let refused = changed_system_registers(&now, regs);
        if !refused.is_empty() {
            tracing::warn!(
                "gdb: {} read-only: drvisor does not write segment bases or system registers",
                refused.join(", ")
            );
            return Err(TargetError::Errno(libc::EPERM as u8));
        }
        // gdb writes back the RFLAGS it read, without RF: the vCPU keeps its own RF, unless
        // gdb moved it elsewhere (`jump`, `set $pc`), where a breakpoint must fire at once.
        let rf = self
            .session
            .parked_registers(vcpu)
            .filter(|now| now.regs.rip == regs.core.rip)
            .map_or(0, |now| now.regs.rflags & RFLAGS_RF);
        let core = &regs.core;
        let r = &core.regs;
        let written = Registers {
            rax: r[0],
            rbx: r[1],
            rcx: r[2],
            rdx: r[3],
            rsi: r[4],
            rdi: r[5],
            rbp: r[6],
            rsp: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
            rip: core.rip,
            rflags: (u64::from(core.eflags) & !RFLAGS_RF) | rf,
        };
        if !self.session.write_registers(vcpu, written) {
            return Err(TargetError::NonFatal);
        }
        // The x87/SSE state only if gdb changed it: KVM_SET_FPU is one more ioctl at resume.
        if let Some(fpu) = fpu {
            let was = &now.core;
            let changed = (&was.st, &was.fpu, &was.xmm, was.mxcsr)
                != (&core.st, &core.fpu, &core.xmm, core.mxcsr);
            if changed {
                let new = fpu_from_gdb(core, &fpu);
                if !self.session.write_fpu(vcpu, new) {
                    return Err(TargetError::NonFatal);
                }
            }
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        // Through the selected thread's (vCPU's) page tables.
        self.session
            .read_virtual(index(tid), start, data)
            .map(|_| data.len())
            .map_err(|_| TargetError::Errno(14))
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        self.session
            .write_virtual(index(tid), start, data)
            .map_err(|_| TargetError::Errno(14))
    }

    fn list_active_threads(&mut self, register: &mut dyn FnMut(Tid)) -> Result<(), super::Error> {
        for i in 0..self.session.vcpu_count() {
            register(tid(i));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for GdbTarget {
    fn resume(&mut self) -> Result<(), super::Error> {
        self.queued.extend(self.stops.try_iter());
        // At a continue, what gdb did not insert again is removed, and a hit that came with
        // the reported stop, of a breakpoint gdb has since deleted, is no stop of gdb's any
        // more. (During a step a retired point is only stepped over: its queued hits stay.)
        if self.step.is_none() {
            self.drop_retired();
            let points = &self.points;
            self.queued
                .retain(|s| s.point.is_none_or(|p| points.is_inserted(p)));
        }
        match self.step.take() {
            // All-stop: the other vCPUs stay paused while this one runs its instruction, and
            // the step's stop is the next one gdb hears: it stepped this vCPU alone (over a
            // breakpoint, say), so a stop of another one now would be one gdb cannot place.
            // Hits of other vCPUs that came with an earlier stop wait for the next resume.
            // A step that did not finish (a `hlt` with interrupts held off) was withdrawn: gdb
            // is told the vCPU stopped where it is, as after any step.
            Some(vcpu) => {
                if !self.session.step(vcpu, STEP_TIMEOUT)? {
                    tracing::warn!("gdb: vCPU {vcpu} did not finish its single-step in time");
                }
                self.queued.push_front(Stop { vcpu, point: None });
            }
            // Hits that arrived with the one reported stop are reported before anything runs.
            None if !self.queued.is_empty() => {}
            None => {
                self.session.resume("gdb");
            }
        }
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), super::Error> {
        self.step = None;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), super::Error> {
        match signal {
            None => Ok(()),
            Some(s) => Err(super::Error::SignalOnContinue(s)),
        }
    }
}

impl MultiThreadSchedulerLocking for GdbTarget {
    /// Only the stepped vCPU runs during a step anyway (all-stop).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), super::Error> {
        Ok(())
    }
}

impl MultiThreadSingleStep for GdbTarget {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), super::Error> {
        if let Some(s) = signal {
            return Err(super::Error::SignalOnStep(s));
        }
        self.step = Some(index(tid));
        Ok(())
    }
}

impl Breakpoints for GdbTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for GdbTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add(Point::Soft(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove(Point::Soft(addr))
    }
}

impl HwBreakpoint for GdbTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add(Point::Hard(addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove(Point::Hard(addr))
    }
}

fn kind(k: WatchKind) -> Kind {
    match k {
        WatchKind::Write => Kind::Write,
        WatchKind::Read => Kind::Read,
        WatchKind::ReadWrite => Kind::Access,
    }
}

impl HwWatchpoint for GdbTarget {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, k: WatchKind) -> TargetResult<bool, Self> {
        self.add(Point::Watch(addr, len, kind(k)))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        k: WatchKind,
    ) -> TargetResult<bool, Self> {
        self.remove(Point::Watch(addr, len, kind(k)))
    }
}

impl MonitorCmd for GdbTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), super::Error> {
        match std::str::from_utf8(cmd).unwrap_or_default().trim() {
            "plan" => outputln!(out, "{}", self.session.plan_text()),
            "probe" => outputln!(out, "{}", self.session.probe_text()),
            "policy" => outputln!(out, "policy {}", self.session.policy_name()),
            other => match monitor_break::parse(other) {
                Some(Ok(command)) => match self.monitor_break(command) {
                    Ok(said) => outputln!(out, "{said}"),
                    Err(e) => outputln!(out, "{e}"),
                },
                Some(Err(e)) => outputln!(out, "{e}"),
                None => outputln!(
                    out,
                    "unknown monitor command `{other}`; drvisor knows: plan, probe, policy, break, unbreak"
                ),
            },
        }
        Ok(())
    }
}

impl GdbTarget {
    /// Runs a `monitor break`/`unbreak`: what to tell the user, done or refused.
    fn monitor_break(&mut self, command: monitor_break::Command) -> Result<String, MonitorError> {
        let (location, condition) = match command {
            monitor_break::Command::Unbreak(id) => {
                if !self.monitor_breaks.contains(&id) {
                    return Err(MonitorError::NotMonitorBreak(id));
                }
                self.monitor_breaks.retain(|&b| b != id);
                return match self.session.remove(id) {
                    Ok(_) => Ok(format!("removed breakpoint #{id}")),
                    Err(source) => Err(MonitorError::Remove { id, source }),
                };
            }
            monitor_break::Command::Break {
                location,
                condition,
            } => (location, condition),
        };
        let addr = self.session.resolve_location(&location)?;
        let spec = BreakSpec::exec(addr).map_err(|source| MonitorError::Spec {
            location: location.clone(),
            source,
        })?;
        let condition = condition
            .map(|c| {
                crate::condition::Condition::parse(&c)
                    .map(Arc::new)
                    .map_err(|source| MonitorError::Condition {
                        text: c.clone(),
                        source,
                    })
            })
            .transpose()?;
        let req = Request {
            label: location.clone(),
            what: What::Break(spec),
            scope: Scope::Vm,
            action: HitAction::Pause,
            capture: 0,
            owner: Owner::Gdb,
            condition,
        };
        // The session's reporter evaluates the condition: it answers `continue` (and reports
        // nothing) where it does not hold, `pause` where it does; only then is gdb told.
        let report = self.session.on_hit(&req);
        let sender = self.sender.clone();
        let on_hit = Arc::new(move |hit: &HitContext| {
            let action = report(hit);
            if action != HitAction::Continue {
                let _ = sender.send(Stop {
                    vcpu: hit.vcpu,
                    point: None,
                });
            }
            action
        });
        let (id, _) = self
            .session
            .arm_with(req, on_hit)
            .map_err(|source| MonitorError::Arm {
                location: location.clone(),
                source,
            })?;
        if let Some(state) = self.not_live(id.0) {
            let _ = self.session.remove(id.0);
            return Err(MonitorError::NotLive { location, state });
        }
        self.monitor_breaks.push(id.0);
        Ok(format!(
            "breakpoint #{} at {addr:#x} ({location}){}; gdb stops there with SIGTRAP",
            id.0,
            self.session
                .breakpoint(id.0)
                .and_then(|b| b.condition)
                .map_or_else(String::new, |c| format!(" if {c}"))
        ))
    }
}
