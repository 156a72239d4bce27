//! Pure model of page-protection watchpoints: data watches without the four-slot limit of the
//! debug registers, on plain KVM.
//!
//! Guest RAM reaches KVM as memslots. The VMM splits them around every guest-physical page
//! holding watched bytes (DESIGN.md, "Beyond four slots"):
//! - a page with only **write** watches goes into a `KVM_MEM_READONLY` memslot: reads run at
//!   full speed, a write exits as `KVM_EXIT_MMIO`, and the VMM performs the write itself and
//!   matches it;
//! - a page with any **read** or **read/write** watch gets no memslot at all: every access
//!   exits as `KVM_EXIT_MMIO` and the VMM serves it from its own mapping of RAM.
//!
//! This crate decides the layout and what an exit means; it holds no file descriptors and
//! performs no I/O. The pieces, one per module:
//! - [`Access`], [`Watch`], [`RamRegion`]: validated inputs;
//! - [`plan_layout`] and [`Layout::replan`]: the memslots and trapped pages, with slot numbers
//!   that stay put for every memslot that did not change;
//! - [`diff()`] and [`SlotOp`]: the `KVM_SET_USER_MEMORY_REGION` calls between two layouts;
//! - [`Layout::match_access`]: which watches one trapped access hits.
//!
//! The VMM owns the effects: it installs the ops with the vCPUs paused, performs or serves the
//! trapped access, and counts hits and false traps.
//!
//! ```
//! use drvisor_watch::*;
//!
//! let ram = [RamRegion::new(0, 1 << 30)?];
//! // No watches: one writable memslot per region, numbered from 0.
//! let bare = plan_layout(&ram, &[], 509)?;
//! assert_eq!(bare.slots().len(), 1);
//!
//! // Watch writes to 8 bytes at 0x10_0040: RAM splits into RW, RO (one page), RW.
//! let counter = Watch::new(WatchId(1), 0x10_0040, 8, Access::Write)?;
//! let armed = bare.replan(&[counter], 509)?;
//! let shape: Vec<_> = armed.slots().iter().map(|s| (s.gpa, s.size, s.readonly)).collect();
//! assert_eq!(
//!     shape,
//!     [(0, 0x10_0000, false), (0x10_0000, 0x1000, true), (0x10_1000, (1 << 30) - 0x10_1000, false)]
//! );
//! assert_eq!(armed.is_trapped(0x10_0000), Some(PageMode::ReadOnly));
//!
//! // What KVM must do, with the vCPUs paused: delete first, then create.
//! let ops = diff(&bare, &armed);
//! assert_eq!(ops[0], SlotOp::Delete { slot: 0 });
//! assert_eq!(ops.len(), 4);
//!
//! // A 4-byte guest write exits at 0x10_0044: it hits the watch.
//! let hit = armed.match_access(0x10_0044, 4, true);
//! assert_eq!(hit.hits, [WatchId(1)]);
//! // A write elsewhere on the page exits too, and hits nothing.
//! assert!(armed.match_access(0x10_0800, 4, true).false_trap);
//!
//! // Removing the watch restores the first layout, numbers included.
//! let disarmed = armed.replan(&[], 509)?;
//! assert_eq!(disarmed, bare);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod carve;
mod diff;
mod layout;
mod matching;
mod memslot;
mod numbering;
mod page;
mod planner;
mod ram;
mod trap;
mod watch;

pub use access::{Access, AccessParseError};
pub use diff::{diff, SlotOp};
pub use layout::Layout;
pub use matching::AccessMatch;
pub use memslot::Memslot;
pub use page::{page_of, PAGE_SIZE};
pub use planner::{plan_layout, LayoutError};
pub use ram::{RamError, RamRegion};
pub use trap::{PageMode, Trap};
pub use watch::{Watch, WatchError, WatchId};
