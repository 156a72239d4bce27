//! Watchpoints beyond four slots: the page-protection engine on KVM, engine routing, and
//! guest-virtual translation. The memslot layout itself is planned by the pure
//! `drvisor-watch` crate.

mod arm;
mod engine;
mod memslots;
mod migrate;
mod paging;
mod plan_text;
pub mod route;
pub mod translate;

pub use arm::{arm_watch, arm_watch_as, ArmError, Place, WatchRequest};
pub use engine::RetryBy;
pub use engine::{
    Error, InFlight, MappingChange, MappingListener, MmioAccess, PageWatchEngine, PageWatchRequest,
    PageWatchState, PendingPageHit, WatchRange,
};
pub use migrate::Migrations;
pub use plan_text::describe_page_watches;
pub use route::{route, Engine, EngineChoice, RouteError, RouteInput, UnknownEngine};
pub use translate::Translator;
