//! Arming what the command line asked for: exec breakpoints in hardware slots, and each
//! watchpoint on the engine routing picks for it.

use drvisor::debug::{DebugController, HostRequest, OnHit};
use drvisor::watch::{route, Engine, PageWatchEngine, PageWatchRequest, RouteInput, WatchRange};
use drvisor_debug::{BreakSpec, HostBpId, Scope, WatchAccess};
use drvisor_watch::Access;

use crate::requests::{Place, Request, What};

/// What was armed.
pub struct Armed {
    /// Its id.
    pub id: HostBpId,
    /// Its engine.
    pub engine: Engine,
}

/// Arms `req` with `on_hit`; the error is a one-line message for the user.
pub fn arm(
    req: &Request,
    on_hit: OnHit,
    ctl: &DebugController,
    pages: &PageWatchEngine,
) -> Result<Armed, String> {
    let label = req.label.clone();
    let fail = |e: &dyn std::fmt::Display| format!("{label}: {e}");
    match &req.what {
        What::Break(spec) => {
            let id = ctl
                .add(HostRequest {
                    spec: *spec,
                    scope: req.scope,
                    label: label.clone(),
                    on_hit,
                })
                .map_err(|e| fail(&e))?;
            Ok(Armed {
                id,
                engine: Engine::Hw,
            })
        }
        What::Watch {
            place,
            access,
            len,
            engine,
        } => {
            let hw_spec = hw_spec(*place, *access, *len);
            let input = RouteInput {
                choice: *engine,
                hw_unavailable: (!ctl.caps().data_watchpoints).then(|| {
                    "this host does not deliver hardware data watchpoints (probe row \"host write watchpoint (8 bytes), guest CPL0\": no)".to_owned()
                }),
                fits_one_slot: hw_spec.is_some(),
                slot_free: hw_spec.is_some_and(|s| ctl.would_arm(s, req.scope)),
            };
            match route(&input).map_err(|e| fail(&e))? {
                Engine::Hw => {
                    let spec = hw_spec.ok_or_else(|| fail(&"no hardware slot can hold it"))?;
                    let id = ctl
                        .add(HostRequest {
                            spec,
                            scope: req.scope,
                            label: label.clone(),
                            on_hit,
                        })
                        .map_err(|e| fail(&e))?;
                    Ok(Armed {
                        id,
                        engine: Engine::Hw,
                    })
                }
                Engine::Page => {
                    if let Scope::Vcpu(v) = req.scope {
                        return Err(fail(&format!(
                            "--vcpu {}: page watches cover every vCPU (memslots belong to the whole VM); drop --vcpu, or use --engine hw where this host delivers it",
                            v.0
                        )));
                    }
                    let range = match *place {
                        Place::Virtual(gva) => WatchRange::Virtual { gva, len: *len },
                        Place::Physical(gpa) => WatchRange::Physical { gpa, len: *len },
                    };
                    let id = pages
                        .add(PageWatchRequest {
                            range,
                            access: *access,
                            label: label.clone(),
                            on_hit,
                        })
                        .map_err(|e| fail(&e))?;
                    Ok(Armed {
                        id,
                        engine: Engine::Page,
                    })
                }
            }
        }
    }
}

/// The hardware-slot form of a watch, if one slot can hold it: a guest-virtual address, 1, 2,
/// 4 or 8 aligned bytes, writes or reads-and-writes (x86 cannot watch reads alone).
fn hw_spec(place: Place, access: Access, len: u64) -> Option<BreakSpec> {
    let Place::Virtual(addr) = place else {
        return None;
    };
    let access = match access {
        Access::Write => WatchAccess::Write,
        Access::ReadWrite => WatchAccess::ReadWrite,
        Access::Read => return None,
    };
    let len = u8::try_from(len).ok()?;
    BreakSpec::watch(addr, access, len).ok()
}
