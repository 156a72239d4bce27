//! Pure model of the x86 debug registers, as drvisor virtualizes them.
//!
//! Two owners share each vCPU's four hardware breakpoint slots: the *host* (breakpoints the
//! operator registered with drvisor) and the *guest* (what the guest kernel wrote into its own
//! DR0-DR7). This crate decides, without touching KVM, how both sets fit into the hardware and
//! who owns a `#DB` when it arrives. The ownership model comes from the 2009 linux-kernel review
//! of the hw-breakpoint patches (LKML, "Re: [Patch 00/11] Hardware Breakpoint interfaces",
//! K. Prasad replying to Alan Stern, 27 March 2009): kernel (here: host) breakpoints fill the
//! slots from DR3 downwards, user (here: guest) breakpoints fill them first-fit from DR0 upwards,
//! and a write to DR0-DR3 always succeeds while only DR7 claims.
//!
//! The pieces, one per module:
//! - [`Slot`] and [`VcpuId`]: the four hardware slots and vCPU indices;
//! - [`Dr7`], [`Dr6`]: typed control and status registers (Intel SDM Vol. 3, 17.2.3-17.2.5);
//! - [`BreakSpec`]: a validated breakpoint or watchpoint request;
//! - [`GuestDrFile`]: the guest's virtual DR file and MOV DR emulation;
//! - [`HostBreakpoint`]: a host-owned breakpoint and its scope;
//! - [`Policy`]: who wins when both owners cannot fit;
//! - [`plan()`] and [`Plan`]: the arbiter and its per-vCPU output;
//! - [`attribute()`]: splitting a hardware DR6 between host, VMM and guest.
//!
//! Nothing here performs I/O or depends on KVM; the VMM applies a [`VcpuPlan`] with
//! `KVM_SET_GUEST_DEBUG` and feeds `KVM_EXIT_DEBUG`'s DR6 to [`attribute()`].
//!
//! ```
//! use drvisor_debug::*;
//!
//! // The operator watches writes to a kernel variable on every vCPU.
//! let jiffies = HostBreakpoint {
//!     id: HostBpId(1),
//!     spec: BreakSpec::watch(0xffff_ffff_8200_0040, WatchAccess::Write, 8)?,
//!     scope: Scope::Vm,
//! };
//! // The guest armed its own exec breakpoint in its DR2 (MOV DR2 then MOV DR7).
//! let mut guest = GuestDrFile::default();
//! guest.write(2, 0xffff_ffff_8100_1000)?;
//! guest.write(7, Dr7::INIT.with_local(Slot::DR2, true).bits())?;
//!
//! let plan = plan(Policy::HostFirst, &[jiffies], &[guest]);
//! let vcpu0 = &plan.vcpus[0];
//! assert_eq!(vcpu0.owner_of(Slot::DR3), PhysSlot::Host(HostBpId(1)));
//! assert_eq!(vcpu0.phys_of_guest(Slot::DR2), Some(Slot::DR0));
//!
//! // Both fire at once: physical B0 and B3.
//! let dr6 = Dr6::INIT.with_hit(Slot::DR0, true).with_hit(Slot::DR3, true);
//! let who = attribute(dr6, vcpu0, AttributionContext::default());
//! assert_eq!(who.host_hits[0].id, HostBpId(1));
//! // The guest is told about its own DR2, in its own numbering.
//! assert_eq!(who.guest_dr6, Some(Dr6::INIT.with_hit(Slot::DR2, true)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod arbiter;
mod attribution;
mod carriage;
mod dr6;
mod dr7;
mod guest_file;
mod host;
mod plan;
mod policy;
mod reason;
mod slot;
mod spec;

pub use arbiter::{check_registration, plan, ArbiterError};
pub use attribution::{
    attribute, physical_dr6_for, Attribution, AttributionContext, AttributionError, Hit, HostHit,
    VmmEvent,
};
pub use carriage::{guests_compete, plan_for, GuestCarriage};
pub use dr6::Dr6;
pub use dr7::{Dr7, Dr7Error, DrKind, DrLen};
pub use guest_file::{check_debug_extensions, GuestDrFile, GuestSpec, MovDrError, CR4_DE};
pub use host::{HostBpId, HostBreakpoint, Scope};
pub use plan::{GuestSlotState, HostState, HostSummary, PhysSlot, Plan, VcpuPlan};
pub use policy::{Policy, PolicyParseError};
pub use reason::PendingReason;
pub use slot::{Slot, SlotError, VcpuId};
pub use spec::{BreakKind, BreakSpec, SpecError, WatchAccess};
