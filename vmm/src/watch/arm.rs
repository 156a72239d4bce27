//! Arming a data watchpoint on the engine routing picks for it.

use drvisor_debug::{BreakSpec, HostBpId, Scope, WatchAccess};
use drvisor_watch::Access;

use super::{
    route, Engine, EngineChoice, PageWatchEngine, PageWatchRequest, RouteError, RouteInput,
    WatchRange,
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

/// Why a watch was not armed. The messages name no command-line flag: a client adds its own
/// words for the engine and the scope it was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// The engine asked for cannot carry the watch.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A page watch limited to one vCPU.
    #[error("page watches cover every vCPU (memslots belong to the whole VM), so one cannot be limited to vCPU {vcpu}")]
    PageWatchOnOneVcpu {
        /// The vCPU asked for.
        vcpu: u32,
    },
    /// No hardware slot can hold the range.
    #[error("no hardware slot can hold this range")]
    NoSlotShape,
    /// The debug controller refused the hardware breakpoint.
    #[error(transparent)]
    Hw(#[from] crate::debug::Error),
    /// The page engine refused the watch.
    #[error(transparent)]
    Page(#[from] super::Error),
}

/// Arms `req` and says on which engine.
pub fn arm_watch(
    req: WatchRequest,
    ctl: &DebugController,
    pages: &PageWatchEngine,
) -> Result<(HostBpId, Engine), ArmError> {
    arm_watch_as(ctl.allocate_id(), req, ctl, pages)
}

/// [`arm_watch`] under `id`, reserved beforehand with [`DebugController::allocate_id`].
pub fn arm_watch_as(
    id: HostBpId,
    req: WatchRequest,
    ctl: &DebugController,
    pages: &PageWatchEngine,
) -> Result<(HostBpId, Engine), ArmError> {
    let hw = hw_spec(req.place, req.access, req.len);
    let input = RouteInput {
        choice: req.engine,
        hw_unavailable: (!ctl.caps().data_watchpoints).then(|| {
            "this host does not deliver hardware data watchpoints (probe row \"host write watchpoint (8 bytes), guest CPL0\": no)".to_owned()
        }),
        fits_one_slot: hw.is_some(),
        slot_free: hw.is_some_and(|s| ctl.would_arm(s, req.scope)),
    };
    let engine = route(&input)?;
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
            let id = ctl.add_as(
                id,
                HostRequest {
                    spec,
                    scope: req.scope,
                    label: req.label,
                    on_hit: req.on_hit,
                },
            )?;
            // Chosen by `auto`: it may move to pages when evicted (a VM-wide watch only, as
            // page protection is VM-wide).
            if req.engine == EngineChoice::Auto && req.scope == Scope::Vm {
                pages.track_migration(id, page_request);
            }
            id
        }
        (Engine::Hw, None) => return Err(ArmError::NoSlotShape),
        (Engine::Page, _) => {
            if let Scope::Vcpu(v) = req.scope {
                return Err(ArmError::PageWatchOnOneVcpu { vcpu: v.0 });
            }
            pages.add_as(id, page_request)?
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
