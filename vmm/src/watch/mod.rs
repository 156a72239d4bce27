//! Watchpoints beyond four slots: the page-protection engine on KVM, engine routing, and
//! guest-virtual translation. The memslot layout itself is planned by the pure
//! `drvisor-watch` crate.

mod arm;
pub mod cpu_structures;
mod engine;
mod memslots;
mod migrate;
mod paging;
mod remap;
pub mod route;
pub mod translate;
pub mod waiting;

pub use arm::{arm_watch, arm_watch_as, ArmError, Place, WatchRequest};
pub use engine::{
    Error, InFlight, MappingChange, MappingListener, MmioAccess, PageWatchEngine, PageWatchRequest,
    PageWatchState, PendingPageHit, WatchRange,
};
pub use migrate::Migrations;
pub use route::{route, Engine, EngineChoice, RouteError, RouteInput, UnknownEngine};
pub use translate::Translator;
pub use waiting::RetryBy;
