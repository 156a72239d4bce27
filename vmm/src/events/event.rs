//! What travels on the bus: the records every client of the engine reads.

use drvisor_api::rest::{PlanEvent, StateEvent};
pub use drvisor_api::GuestDrLateEvent as GuestDrLate;
use drvisor_api::HitEvent;
pub use drvisor_api::PageTrapsEvent as PageTraps;
use serde::Serialize;

/// One event on the bus. Serialized, each is one JSON object with an `event` field naming it.
// Nearly every event is a hit, and each is moved once into the bus's `Arc`: boxing the hit
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// A host breakpoint or watch hit (`"event":"hit"`).
    Hit(HitEvent),
    /// A breakpoint or watch added or removed, by any client (`"event":"plan"`).
    Plan(PlanEvent),
    /// The VM paused or resumed (`"event":"state"`), in the order the vCPU gate changed.
    State(StateEvent),
    /// The page engine's trap counts at the end of a run (`"event":"page-traps"`).
    PageTraps(PageTraps),
    /// A guest debug-register slot found armed late (`"event":"guest-dr-late"`).
    GuestDrLate(GuestDrLate),
}
