//! A breakpoint or watch request in the engine's terms, whichever client made it, and how it
//! is armed: exec breakpoints in hardware slots, watches on the engine routing picks.

use std::sync::Arc;

use drvisor_api::rest::Owner;
use drvisor_api::HitAction;
use drvisor_debug::{BreakSpec, HostBpId, Scope};
use drvisor_watch::Access;

use crate::condition::Condition;
use crate::debug::{DebugController, HostRequest, OnHit};
use crate::watch::{
    arm_watch_as, ArmError, Engine, EngineChoice, PageWatchEngine, Place, WatchRequest,
};

/// What was asked for.
#[derive(Clone, Debug)]
pub enum What {
    /// An exec breakpoint (always a hardware slot).
    Break(BreakSpec),
    /// A data watchpoint, routed to an engine when armed.
    Watch {
        /// Where.
        place: Place,
        /// Which accesses.
        access: Access,
        /// How many bytes.
        len: u64,
        /// Which engine the client wants.
        engine: EngineChoice,
    },
}

/// One breakpoint or watchpoint a client asked for, resolved.
#[derive(Clone, Debug)]
pub struct Request {
    /// How the client named it (a symbol or an address, as written).
    pub label: String,
    /// What.
    pub what: What,
    /// Which vCPUs.
    pub scope: Scope,
    /// What a hit does.
    pub action: HitAction,
    /// Bytes of the stack from RSP each hit event carries (0: none; at most
    /// [`super::snippet::MAX_CAPTURE`]).
    pub capture: u16,
    /// Which client asked.
    pub owner: Owner,
    /// Only hits at which this holds are reported and act (evaluated on the vCPU's thread,
    /// before any event or pause); `None`: every hit.
    pub condition: Option<Arc<Condition>>,
}

/// Why a request was not armed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The debug controller refused the exec breakpoint.
    #[error(transparent)]
    Break(#[from] crate::debug::Error),
    /// The watch could not be armed.
    #[error(transparent)]
    Watch(#[from] ArmError),
    /// The condition reads the current task, and this guest's task layout is not known.
    #[error("condition `{condition}`: comm, pid and tgid need a Linux guest whose image has BTF (to find task_struct's fields); this guest's has none, so only registers, memory, cpu and hits can be used")]
    NoTaskLayout {
        /// The condition.
        condition: String,
    },
}

/// Arms `req` under `id`, reserved beforehand with [`DebugController::allocate_id`], and says
/// on which engine. Only the session calls it: every client goes through its door.
pub(crate) fn arm(
    id: HostBpId,
    req: &Request,
    on_hit: OnHit,
    ctl: &DebugController,
    pages: &PageWatchEngine,
) -> Result<Engine, Error> {
    match &req.what {
        What::Break(spec) => {
            ctl.add_as(
                id,
                HostRequest {
                    spec: *spec,
                    scope: req.scope,
                    label: req.label.clone(),
                    on_hit,
                },
            )?;
            Ok(Engine::Hw)
        }
        What::Watch {
            place,
            access,
            len,
            engine,
        } => Ok(arm_watch_as(
            id,
            WatchRequest {
                place: *place,
                access: *access,
                len: *len,
                engine: *engine,
                scope: req.scope,
                label: req.label.clone(),
                on_hit,
            },
            ctl,
            pages,
        )?
        .1),
    }
}
