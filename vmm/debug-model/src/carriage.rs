//! How the guest's own breakpoints reach the hardware, which depends on the host (the probe
//! decides), and the plan that follows from it.
//!
//! On VMX/SVM, KVM loads only the host's DR0-3/DR7 while host debugging is on: the guest's
//! slots fire only if drvisor places them in physical slots, so both owners compete for four
//! slots and the [`Policy`] arbitrates. On a host whose emulator checks the guest's DR7
//! separately from the host's (this project's development machines), the guest's slots fire
//! by themselves: they cost no physical slot, nothing can displace them, and placing them
//! physically as well would report each hit twice.

use serde::Serialize;

use crate::{arbiter, GuestDrFile, GuestSlotState, HostBreakpoint, Plan, Policy};

/// How the guest's breakpoints are carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestCarriage {
    /// Guest slots take physical slots (VMX/SVM).
    #[default]
    Physical,
    /// The host checks the guest's own DR7 separately; guest slots need no physical slot.
    Native,
}

/// Plans every vCPU for a host with this `carriage`.
///
/// With [`GuestCarriage::Physical`] this is [`arbiter::plan`]. With [`GuestCarriage::Native`]
/// the host breakpoints are planned as if no guest claimed a slot, and every slot the guest
/// enables is [`GuestSlotState::Native`] (I/O slots stay pending, as the arbiter reports them).
pub fn plan_for(
    carriage: GuestCarriage,
    policy: Policy,
    hosts: &[HostBreakpoint],
    guests: &[GuestDrFile],
) -> Plan {
    match carriage {
        GuestCarriage::Physical => arbiter::plan(policy, hosts, guests),
        GuestCarriage::Native => {
            let idle = vec![GuestDrFile::default(); guests.len()];
            let mut plan = arbiter::plan(policy, hosts, &idle);
            let guest_view = arbiter::plan(policy, &[], guests);
            for (states, seen) in plan.guest_states.iter_mut().zip(&guest_view.guest_states) {
                for (state, seen) in states.iter_mut().zip(seen) {
                    *state = match seen {
                        GuestSlotState::Armed { .. } => GuestSlotState::Native,
                        other => *other,
                    };
                }
            }
            plan
        }
    }
}

/// Whether registering a host breakpoint could starve the guest under this carriage: only
/// when guest slots compete for physical slots.
pub fn guests_compete(carriage: GuestCarriage) -> bool {
    carriage == GuestCarriage::Physical
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BreakSpec, Dr6, Dr7, DrKind, DrLen, HostBpId, PhysSlot, Scope, Slot};

    fn guest_all_four() -> GuestDrFile {
        let mut dr7 = Dr7::INIT;
        for s in Slot::ALL {
            dr7 = dr7
                .with_local(s, true)
                .with_rw(s, DrKind::Exec)
                .with_len(s, DrLen::One);
        }
        GuestDrFile {
            dr: [0x1000, 0x2000, 0x3000, 0x4000],
            dr6: Dr6::INIT,
            dr7,
        }
    }

    fn host(id: u32, addr: u64) -> HostBreakpoint {
        HostBreakpoint {
            id: HostBpId(id),
            spec: BreakSpec::exec(addr).unwrap(),
            scope: Scope::Vm,
        }
    }

    #[test]
    fn native_guest_slots_cost_nothing_under_every_policy() {
        let hosts = [host(1, 0x5000), host(2, 0x6000)];
        for policy in Policy::ALL {
            let plan = plan_for(GuestCarriage::Native, policy, &hosts, &[guest_all_four()]);
            assert_eq!(
                plan.vcpus[0].slots[3],
                PhysSlot::Host(HostBpId(1)),
                "{policy}"
            );
            assert_eq!(
                plan.vcpus[0].slots[2],
                PhysSlot::Host(HostBpId(2)),
                "{policy}"
            );
            assert!(plan.guest_states[0]
                .iter()
                .all(|s| *s == GuestSlotState::Native));
            assert!(plan.vcpus[0].virt_to_phys.iter().all(Option::is_none));
        }
    }

    #[test]
    fn physical_carriage_is_the_arbiter() {
        let hosts = [host(1, 0x5000), host(2, 0x6000)];
        let guests = [guest_all_four()];
        for policy in Policy::ALL {
            assert_eq!(
                plan_for(GuestCarriage::Physical, policy, &hosts, &guests),
                arbiter::plan(policy, &hosts, &guests)
            );
        }
    }

    #[test]
    fn an_idle_guest_stays_unused() {
        let plan = plan_for(
            GuestCarriage::Native,
            Policy::HostFirst,
            &[],
            &[GuestDrFile::default()],
        );
        assert!(plan.guest_states[0]
            .iter()
            .all(|s| *s == GuestSlotState::Unused));
    }
}
