//! The arbiter's output: what each vCPU's hardware slots hold, and every breakpoint's state.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::{Dr7, HostBpId, PendingReason, Policy, Slot, VcpuId};

/// Who owns one physical slot on one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhysSlot {
    /// Nobody: the slot is disabled in the physical DR7.
    #[default]
    Free,
    /// A host breakpoint.
    Host(HostBpId),
    /// The guest's virtual slot (its DRn), which may differ from the physical slot number.
    Guest(Slot),
    /// A host breakpoint and a guest virtual slot that ask for the same address, kind and
    /// length: one physical slot serves both, and each hit goes to both owners.
    Shared {
        /// The host breakpoint.
        host: HostBpId,
        /// The guest's virtual slot.
        guest: Slot,
    },
}

impl PhysSlot {
    /// The host breakpoint this slot serves, alone or shared.
    pub fn host(self) -> Option<HostBpId> {
        match self {
            PhysSlot::Host(id) | PhysSlot::Shared { host: id, .. } => Some(id),
            _ => None,
        }
    }

    /// The guest virtual slot this slot serves, alone or shared.
    pub fn guest(self) -> Option<Slot> {
        match self {
            PhysSlot::Guest(virt) | PhysSlot::Shared { guest: virt, .. } => Some(virt),
            _ => None,
        }
    }

    /// Each owner on its own: a shared slot is two owners.
    pub fn owners(self) -> impl Iterator<Item = PhysSlot> {
        let host = self.host().map(PhysSlot::Host);
        let guest = self.guest().map(PhysSlot::Guest);
        host.into_iter().chain(guest)
    }
}

impl fmt::Display for PhysSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhysSlot::Free => f.write_str("free"),
            PhysSlot::Host(id) => write!(f, "host {id}"),
            PhysSlot::Guest(virt) => write!(f, "guest {virt}"),
            PhysSlot::Shared { host, guest } => write!(f, "host {host} + guest {guest}"),
        }
    }
}

/// The physical debug registers for one vCPU, ready for `KVM_SET_GUEST_DEBUG`
/// (`debugreg[0..4] = dr`, `debugreg[7] = dr7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct VcpuPlan {
    /// The vCPU this plan is for.
    pub vcpu: VcpuId,
    /// Owner of each physical slot.
    pub slots: [PhysSlot; 4],
    /// Physical DR0-DR3 (0 in free slots).
    pub dr: [u64; 4],
    /// The merged physical DR7: Ln plus RW/LEN for every owned slot, bit 10 set, GD clear.
    pub dr7: Dr7,
    /// For each guest virtual slot, the physical slot it is armed in.
    pub virt_to_phys: [Option<Slot>; 4],
}

impl VcpuPlan {
    /// A plan that arms nothing.
    pub const fn empty(vcpu: VcpuId) -> VcpuPlan {
        VcpuPlan {
            vcpu,
            slots: [PhysSlot::Free; 4],
            dr: [0; 4],
            dr7: Dr7::INIT,
            virt_to_phys: [None; 4],
        }
    }

    /// Whether nothing is armed: the VMM runs this vCPU with guest debug off, so it pays
    /// nothing (the 2009 review's lazy switching).
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| *s == PhysSlot::Free)
    }

    /// Whether any slot holds a host breakpoint. When none does, every armed slot is the guest's
    /// own and equals what the guest wrote (modulo the slot number), so a VMM may also leave
    /// guest debug off and let KVM load the guest's registers directly.
    pub fn has_host_slots(&self) -> bool {
        self.slots.iter().any(|s| s.host().is_some())
    }

    /// The physical slot holding guest virtual slot `virt`, if armed.
    pub fn phys_of_guest(&self, virt: Slot) -> Option<Slot> {
        self.virt_to_phys[virt.index()]
    }

    /// The physical slot holding host breakpoint `id`, alone or shared, if armed on this vCPU.
    pub fn phys_of_host(&self, id: HostBpId) -> Option<Slot> {
        Slot::ALL
            .into_iter()
            .find(|s| self.slots[s.index()].host() == Some(id))
    }

    /// The physical slot serving `owner` (a host breakpoint or a guest virtual slot; a shared
    /// owner names the slot holding both).
    pub fn phys_of(&self, owner: PhysSlot) -> Option<Slot> {
        match owner {
            PhysSlot::Free => None,
            PhysSlot::Host(id) => self.phys_of_host(id),
            PhysSlot::Guest(virt) => self.phys_of_guest(virt),
            shared @ PhysSlot::Shared { .. } => Slot::ALL
                .into_iter()
                .find(|s| self.slots[s.index()] == shared),
        }
    }

    /// The owner of physical slot `phys`.
    pub fn owner_of(&self, phys: Slot) -> PhysSlot {
        self.slots[phys.index()]
    }
}

/// `vcpu0: DR0=guest DR1 @0x1000, DR1=free, ...; DR7 0x... [...]`.
impl fmt::Display for VcpuPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.vcpu)?;
        for phys in Slot::ALL {
            let sep = if phys == Slot::DR0 { " " } else { ", " };
            match self.owner_of(phys) {
                PhysSlot::Free => write!(f, "{sep}{phys}=free")?,
                owner => write!(f, "{sep}{phys}={owner} @{:#x}", self.dr[phys.index()])?,
            }
        }
        write!(f, "; DR7 {}", self.dr7)
    }
}

/// The state of one guest virtual slot on one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum GuestSlotState {
    /// The guest's DR7 does not enable the slot.
    #[default]
    Unused,
    /// Armed by the guest's own DR7, which this host checks apart from the host's: it costs
    /// no physical slot ([`crate::GuestCarriage::Native`]).
    Native,
    /// Armed in a physical slot.
    Armed {
        /// The physical slot.
        phys: Slot,
    },
    /// Enabled by the guest but not in hardware.
    Pending {
        /// Why.
        reason: PendingReason,
    },
}

impl fmt::Display for GuestSlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestSlotState::Unused => f.write_str("unused"),
            GuestSlotState::Native => {
                f.write_str("armed by the guest's own DR7 (checked natively)")
            }
            GuestSlotState::Armed { phys } => write!(f, "armed in {phys}"),
            GuestSlotState::Pending { reason } => write!(f, "pending: {reason}"),
        }
    }
}

/// Where one host breakpoint is, on every vCPU its scope covers.
///
/// Truthful per vCPU: a VM-wide breakpoint may be armed on vCPU 0 and pending on vCPU 1. Every
/// covered vCPU appears in exactly one of the two maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// vCPUs where it is armed, and in which physical slot.
    pub armed: BTreeMap<VcpuId, Slot>,
    /// vCPUs where it is not armed, and why.
    pub pending: BTreeMap<VcpuId, PendingReason>,
}

/// A one-word summary of a [`HostState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostSummary {
    /// Armed on every vCPU it covers.
    Armed,
    /// Armed on some covered vCPUs, pending on others.
    PartlyArmed,
    /// Armed on none (also when it covers no vCPU at all).
    Pending,
}

impl fmt::Display for HostSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostSummary::Armed => "armed",
            HostSummary::PartlyArmed => "partly armed",
            HostSummary::Pending => "pending",
        })
    }
}

impl HostState {
    /// The summary.
    pub fn summary(&self) -> HostSummary {
        match (self.armed.is_empty(), self.pending.is_empty()) {
            (false, true) => HostSummary::Armed,
            (false, false) => HostSummary::PartlyArmed,
            (true, _) => HostSummary::Pending,
        }
    }
}

/// Serialized as `{"summary": ..., "armed": {vcpu: slot}, "pending": {vcpu: reason}}`.
impl Serialize for HostState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("HostState", 3)?;
        s.serialize_field("summary", &self.summary())?;
        s.serialize_field("armed", &self.armed)?;
        s.serialize_field("pending", &self.pending)?;
        s.end()
    }
}

/// `armed: vcpu0 DR3, vcpu1 DR3; pending: vcpu2 (reason)`.
impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        let mut sep = ": ";
        for (vcpu, phys) in &self.armed {
            write!(f, "{sep}{vcpu} {phys}")?;
            sep = ", ";
        }
        let mut sep = "; pending on ";
        for (vcpu, reason) in &self.pending {
            write!(f, "{sep}{vcpu} ({reason})")?;
            sep = ", ";
        }
        Ok(())
    }
}

/// The arbiter's whole answer for one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The policy the plan was made under.
    pub policy: Policy,
    /// One plan per vCPU, indexed by vCPU number.
    pub vcpus: Vec<VcpuPlan>,
    /// The state of every host breakpoint given to the arbiter.
    pub host_states: BTreeMap<HostBpId, HostState>,
    /// The state of every guest virtual slot, indexed by vCPU number then virtual slot.
    pub guest_states: Vec<[GuestSlotState; 4]>,
}

impl Plan {
    /// The plan of one vCPU.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<&VcpuPlan> {
        self.vcpus.get(vcpu.index()?)
    }

    /// The state of one host breakpoint.
    pub fn host_state(&self, id: HostBpId) -> Option<&HostState> {
        self.host_states.get(&id)
    }

    /// The state of one guest virtual slot.
    pub fn guest_state(&self, vcpu: VcpuId, virt: Slot) -> Option<GuestSlotState> {
        Some(self.guest_states.get(vcpu.index()?)?[virt.index()])
    }
}

/// One line per vCPU, its guest slots, then one line per host breakpoint (`--show-plan`).
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy {}", self.policy)?;
        for (vcpu, guest) in self.vcpus.iter().zip(&self.guest_states) {
            writeln!(f, "{vcpu}")?;
            if guest.iter().any(|g| *g != GuestSlotState::Unused) {
                f.write_str("  guest:")?;
                for (virt, state) in Slot::ALL.into_iter().zip(guest) {
                    let sep = if virt == Slot::DR0 { " " } else { ", " };
                    write!(f, "{sep}{virt} {state}")?;
                }
                writeln!(f)?;
            }
        }
        for (id, state) in &self.host_states {
            writeln!(f, "host {id}: {state}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_plan_helpers() {
        let plan = VcpuPlan::empty(VcpuId(0));
        assert!(plan.is_empty() && !plan.has_host_slots());
        for slot in Slot::ALL {
            assert_eq!(plan.owner_of(slot), PhysSlot::Free);
            assert_eq!(plan.phys_of_guest(slot), None);
        }
        assert_eq!(plan.phys_of_host(HostBpId(1)), None);
        assert_eq!(
            plan.to_string(),
            "vcpu0: DR0=free, DR1=free, DR2=free, DR3=free; DR7 0x400 [off]"
        );
    }

    #[test]
    fn summary_table() {
        let armed = BTreeMap::from([(VcpuId(0), Slot::DR3)]);
        let pending = BTreeMap::from([(VcpuId(1), PendingReason::NoFreeSlot { hosts: 5 })]);
        let table = [
            (BTreeMap::new(), BTreeMap::new(), HostSummary::Pending),
            (armed.clone(), BTreeMap::new(), HostSummary::Armed),
            (armed.clone(), pending.clone(), HostSummary::PartlyArmed),
            (BTreeMap::new(), pending.clone(), HostSummary::Pending),
        ];
        for (armed, pending, summary) in table {
            assert_eq!(HostState { armed, pending }.summary(), summary);
        }
    }

    #[test]
    fn host_state_display() {
        let state = HostState {
            armed: BTreeMap::from([(VcpuId(0), Slot::DR3)]),
            pending: BTreeMap::from([(
                VcpuId(1),
                PendingReason::EvictedByGuest {
                    policy: Policy::GuestFirst,
                },
            )]),
        };
        assert_eq!(
            state.to_string(),
            "partly armed: vcpu0 DR3; pending on vcpu1 (evicted by the guest's own DR7 (guest-first))"
        );
    }

    #[test]
    fn state_display() {
        let table = [
            (GuestSlotState::Unused, "unused"),
            (GuestSlotState::Armed { phys: Slot::DR2 }, "armed in DR2"),
            (
                GuestSlotState::Pending {
                    reason: PendingReason::IoBreakpoint,
                },
                "pending: I/O breakpoints",
            ),
        ];
        for (state, text) in table {
            assert!(state.to_string().starts_with(text), "{state}");
        }
        assert_eq!(PhysSlot::Host(HostBpId(4)).to_string(), "host #4");
        assert_eq!(PhysSlot::Guest(Slot::DR1).to_string(), "guest DR1");
        let shared = PhysSlot::Shared {
            host: HostBpId(2),
            guest: Slot::DR0,
        };
        assert_eq!(shared.to_string(), "host #2 + guest DR0");
        assert_eq!(
            shared.owners().collect::<Vec<_>>(),
            [PhysSlot::Host(HostBpId(2)), PhysSlot::Guest(Slot::DR0)]
        );
    }
}
