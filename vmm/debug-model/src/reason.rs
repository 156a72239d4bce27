//! Why a breakpoint is pending instead of armed.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::Policy;

/// Why a host breakpoint or a guest slot is not in a hardware slot on some vCPU.
///
/// Typed so that tests and callers can match on it; serialized as its human message, which is
/// what the REST API and `--show-plan` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingReason {
    /// More host breakpoints cover this vCPU than there are slots; the ones with the highest ids
    /// wait.
    NoFreeSlot {
        /// How many host breakpoints cover the vCPU.
        hosts: usize,
    },
    /// The guest's own enabled slots took the room (guest-first or deny).
    EvictedByGuest {
        /// The policy in force.
        policy: Policy,
    },
    /// Host breakpoints hold the slots this guest slot would need (host-first).
    HeldByHost {
        /// How many slots host breakpoints hold on the vCPU.
        host_slots: usize,
    },
    /// The guest enabled an I/O breakpoint (DR7 RW=10), which drvisor does not virtualize.
    IoBreakpoint,
    /// The breakpoint is scoped to a vCPU the VM does not have.
    NoSuchVcpu {
        /// How many vCPUs the VM has.
        vcpus: usize,
    },
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::NoFreeSlot { hosts } => write!(
                f,
                "no free hardware slot: {hosts} host breakpoints compete for 4 debug registers on \
                 this vCPU and lower ids are placed first"
            ),
            PendingReason::EvictedByGuest { policy } => {
                write!(f, "evicted by the guest's own DR7 ({policy})")
            }
            PendingReason::HeldByHost { host_slots } => write!(
                f,
                "no free hardware slot: host breakpoints hold {host_slots} of the 4 debug \
                 registers (host-first)"
            ),
            PendingReason::IoBreakpoint => f.write_str(
                "I/O breakpoints (DR7 RW=10) are not virtualized: KVM emulates port I/O without \
                 checking them",
            ),
            PendingReason::NoSuchVcpu { vcpus } => {
                write!(f, "no such vCPU: the VM has {vcpus} vCPUs")
            }
        }
    }
}

impl Serialize for PendingReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let table = [
            (
                PendingReason::NoFreeSlot { hosts: 5 },
                "no free hardware slot: 5 host",
            ),
            (
                PendingReason::EvictedByGuest {
                    policy: Policy::GuestFirst,
                },
                "evicted by the guest's own DR7 (guest-first)",
            ),
            (
                PendingReason::EvictedByGuest {
                    policy: Policy::Deny,
                },
                "evicted by the guest's own DR7 (deny)",
            ),
            (
                PendingReason::HeldByHost { host_slots: 3 },
                "hold 3 of the 4",
            ),
            (PendingReason::IoBreakpoint, "RW=10"),
            (PendingReason::NoSuchVcpu { vcpus: 2 }, "the VM has 2 vCPUs"),
        ];
        for (reason, text) in table {
            assert!(reason.to_string().contains(text), "{reason}");
        }
    }
}
