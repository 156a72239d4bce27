//! What a hit does besides its action: it leaves the vCPU once, as an event on the bus. (A
//! `pause` is told by the vCPU gate itself when it really pauses: see `Session::new`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use drvisor_api::{HitAction, HitEvent};
use vm_memory::GuestMemoryMmap;

use super::hit_machine::HitMachine;
use crate::condition::eval::identity;
use crate::condition::Condition;
use crate::debug::{HitContext, OnHit};
use crate::events::{Event, EventBus};
use crate::kernel::orc_unwind::Start;
use crate::kernel::{LazyOrc, TaskLayout};
use crate::stack_words::CodeIndex;

/// What names a captured stack: the kernel's code symbols, and its ORC table (for a real
/// backtrace besides the named words, or why there is none) where the kernel image was read.
#[derive(Clone)]
pub struct StackNames {
    /// The code symbols by address.
    pub code: Arc<CodeIndex>,
    /// The kernel's ORC table, decoded at the first backtrace.
    pub orc: Option<Arc<LazyOrc>>,
}

/// The hit callback of a breakpoint with `action`: publish the hit, answer the action. The
/// vCPU pauses after it returns, unless a client resumed in between (see
/// [`crate::vcpu::VcpuGate::resume_mark`]).
///
/// With `capture` > 0, each hit event carries that many bytes of the stack from RSP, read from
/// `mem` on the vCPU's thread (where the exit brought the system registers), its words that
/// point into code named (with `names`), and at a kernel-mode hit the backtrace that the
/// kernel's ORC table gives, or why it gives none (where `names` has the table).
///
/// With a `condition`, a hit at which it does not hold (or cannot be evaluated) publishes
/// nothing and answers `continue`: the vCPU just goes on.
pub fn reporter(
    bus: Arc<EventBus<Event>>,
    action: HitAction,
    capture: u16,
    mem: GuestMemoryMmap,
    condition: Option<Arc<Condition>>,
    task: Option<TaskLayout>,
    names: Option<StackNames>,
) -> OnHit {
    let warned = AtomicBool::new(false);
    Arc::new(move |hit: &HitContext| {
        let machine = HitMachine { hit, mem: &mem };
        if let Some(condition) = &condition {
            if !condition.test(&machine, task.as_ref(), &hit.label) {
                return HitAction::Continue;
            }
        }
        let mut event = hit_event(hit, action);
        // Who made it, on a Linux guest whose BTF gave the layout (kernel-mode hits only).
        if let Some(Ok((comm, pid, tgid))) = task.as_ref().map(|t| identity(&machine, t)) {
            event.comm = Some(comm);
            event.pid = Some(pid);
            event.tgid = Some(tgid);
        }
        if capture > 0 {
            if let Some(paging) = hit.paging {
                let bytes = super::snippet::stack_bytes(&mem, &paging, hit.regs.rsp, capture);
                if let Some(names) = &names {
                    event.symbolized = names.code.scan(hit.regs.rsp, &bytes);
                    if let Some(orc) = &names.orc {
                        let start = Start {
                            rip: hit.regs.rip,
                            rsp: hit.regs.rsp,
                            rbp: hit.regs.rbp,
                        };
                        if let Some((frames, end)) =
                            super::backtrace::at_hit(orc, &names.code, &mem, &paging, start)
                        {
                            event.backtrace = frames;
                            event.backtrace_end = Some(end);
                        }
                    }
                }
                event.stack = Some(super::snippet::as_snippet(hit.regs.rsp, &bytes));
            }
            if event.stack.is_none() && !warned.swap(true, Ordering::Relaxed) {
                // Never silent: the stack cannot be located without the system registers.
                tracing::warn!(
                    "{}: hit events carry no stack: this KVM does not sync the system registers (KVM_CAP_SYNC_REGS) with the exit",
                    crate::quote::cut(&hit.label)
                );
            }
        }
        bus.publish(Event::Hit(event));
        action
    })
}

/// A hit as its event.
pub fn hit_event(hit: &HitContext, action: HitAction) -> HitEvent {
    HitEvent {
        event: drvisor_api::EventName::Hit,
        id: hit.id.0,
        label: hit.label.to_string(),
        vcpu: hit.vcpu as u32,
        rip: hit.rip,
        addr: hit.addr,
        kind: hit.kind,
        engine: hit.engine.into(),
        slot: hit.slot,
        access: hit.access.clone(),
        action,
        count: hit.count,
        regs: hit.regs.clone(),
        stack: None,
        symbolized: Vec::new(),
        backtrace: Vec::new(),
        backtrace_end: None,
        comm: None,
        pid: None,
        tgid: None,
    }
}
