//! What a hit does besides its action: it leaves the vCPU once, as an event on the bus. (A
//! `pause` is told by the vCPU gate itself when it really pauses: see `Session::new`.)

use std::sync::Arc;

use drvisor_api::{HitAction, HitEvent};

use crate::debug::{HitContext, OnHit};
use crate::events::{Event, EventBus};

/// The hit callback of a breakpoint with `action`: publish the hit, answer the action. The
/// vCPU pauses after it returns, unless a client resumed in between (see
/// [`crate::vcpu::VcpuGate::resume_mark`]).
pub fn reporter(bus: Arc<EventBus<Event>>, action: HitAction) -> OnHit {
    Arc::new(move |hit: &HitContext| {
        bus.publish(Event::Hit(hit_event(hit, action)));
        action
    })
}

/// A hit as its event.
pub fn hit_event(hit: &HitContext, action: HitAction) -> HitEvent {
    HitEvent {
        event: drvisor_api::EventName::Hit,
        id: hit.id.0,
        label: hit.label.clone(),
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
    }
}
