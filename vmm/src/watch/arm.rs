//! Arming a data watchpoint on the engine routing picks for it.

use drvisor_debug::{BreakSpec, HostBpId, Scope, WatchAccess};
use drvisor_watch::Access;

use super::{
    route, Engine, EngineChoice, PageWatchEngine, PageWatchRequest, RouteInput, WatchRange,
};
use crate::debug::{DebugController, HostRequest, OnHit};

/// Where a watch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A guest-virtual (linear) address.
    Virtual(u64),
    /// A guest-physical address.
    Physical(u64),
}

/// A data watchpoint to arm.
#[derive(Clone)]
pub struct WatchRequest {
    /// Where.
    pub place: Place,
    /// Which accesses.
    pub access: Access,
    /// How many bytes.
    pub len: u64,
    /// Which engine the user wants.
    pub engine: EngineChoice,
    /// Which vCPUs (hardware slots only: page watches cover the whole VM).
    pub scope: Scope,
    /// How the user named it.
    pub label: String,
    /// What a hit does.
    pub on_hit: OnHit,
}

/// Arms `req` and says on which engine; the error is one line for the user.
pub fn arm_watch(
    req: WatchRequest,
    ctl: &DebugController,
    pages: &PageWatchEngine,
) -> Result<(HostBpId, Engine), String> {
    let hw = hw_spec(req.place, req.access, req.len);
    let input = RouteInput {
        choice: req.engine,
        hw_unavailable: (!ctl.caps().data_watchpoints).then(|| {
            "this host does not deliver hardware data watchpoints (probe row \"host write watchpoint (8 bytes), guest CPL0\": no)".to_owned()
        }),
        fits_one_slot: hw.is_some(),
        slot_free: hw.is_some_and(|s| ctl.would_arm(s, req.scope)),
    };
    let engine = route(&input).map_err(|e| e.to_string())?;
    let page_request = PageWatchRequest {
        range: match req.place {
            Place::Virtual(gva) => WatchRange::Virtual { gva, len: req.len },
            Place::Physical(gpa) => WatchRange::Physical { gpa, len: req.len },
        },
        access: req.access,
        label: req.label.clone(),
        on_hit: req.on_hit.clone(),
    };
    let id = match (engine, hw) {
        (Engine::Hw, Some(spec)) => {
            let id = ctl
                .add(HostRequest {
                    spec,
                    scope: req.scope,
                    label: req.label,
                    on_hit: req.on_hit,
                })
                .map_err(|e| e.to_string())?;
            // Chosen by `auto`: it may move to pages when evicted (a VM-wide watch only, as
            // page protection is VM-wide).
            if req.engine == EngineChoice::Auto && req.scope == Scope::Vm {
                pages.track_migration(id, page_request);
            }
            id
        }
        (Engine::Hw, None) => return Err("no hardware slot can hold this range".into()),
        (Engine::Page, _) => {
            if let Scope::Vcpu(v) = req.scope {
                return Err(format!(
                    "--vcpu {}: page watches cover every vCPU (memslots belong to the whole VM); drop --vcpu, or use --engine hw where this host delivers it",
                    v.0
                ));
            }
            pages.add(page_request).map_err(|e| e.to_string())?
        }
    };
    Ok((id, engine))
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
    BreakSpec::watch(addr, access, u8::try_from(len).ok()?).ok()
}
