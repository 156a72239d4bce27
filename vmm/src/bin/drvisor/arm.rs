//! Arming what the command line asked for: exec breakpoints in hardware slots, and each
//! watchpoint on the engine routing picks for it.

use drvisor::debug::{DebugController, HostRequest, OnHit};
use drvisor::watch::{arm_watch, ArmError, Engine, PageWatchEngine, WatchRequest};
use drvisor_debug::HostBpId;

use crate::requests::{Request, What};

/// Arms `req` with `on_hit`; the error is a one-line message for the user.
pub fn arm(
    req: &Request,
    on_hit: OnHit,
    ctl: &DebugController,
    pages: &PageWatchEngine,
) -> Result<(HostBpId, Engine), String> {
    let label = req.label.clone();
    let armed = match &req.what {
        What::Break(spec) => ctl
            .add(HostRequest {
                spec: *spec,
                scope: req.scope,
                label: label.clone(),
                on_hit,
            })
            .map(|id| (id, Engine::Hw))
            .map_err(|e| e.to_string()),
        What::Watch {
            place,
            access,
            len,
            engine,
        } => arm_watch(
            WatchRequest {
                place: *place,
                access: *access,
                len: *len,
                engine: *engine,
                scope: req.scope,
                label: label.clone(),
                on_hit,
            },
            ctl,
            pages,
        )
        .map_err(|e| flag_context(&e)),
    };
    armed.map_err(|e| format!("{}: {e}", drvisor::quote::cut(&label)))
}

/// The library's reason, with the flags the user can change.
fn flag_context(e: &ArmError) -> String {
    match e {
        ArmError::Route(_) | ArmError::NoSlotShape => format!("--engine hw: {e}"),
        ArmError::PageWatchOnOneVcpu { vcpu } => format!(
            "--vcpu {vcpu}: {e}; drop --vcpu, or use --engine hw where this host delivers it"
        ),
        ArmError::Hw(_) | ArmError::Page(_) => e.to_string(),
    }
}
