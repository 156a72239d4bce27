//! The arbiter: host breakpoints and guest-enabled slots into four physical slots per vCPU.
//!
//! Placement follows the 2009 hw-breakpoint review: kernel (host) breakpoints occupy the slots
//! from DR3 downwards, in registration (id) order, and user (guest) breakpoints take them
//! first-fit from DR0 upwards, so the two owners only meet when the slots run out. The guest's
//! virtual slot n may therefore live in physical slot m, and the plan records that map. The
//! [`Policy`] only decides who is placed first when both do not fit.
//!
//! A host breakpoint and a guest slot that ask for the same address, kind and length share one
//! physical slot ([`PhysSlot::Shared`]): the hardware fires once per access either way, and
//! each hit goes to both owners, so sharing saves a slot without changing what either sees.

use std::collections::BTreeMap;

use crate::{
    Dr7, DrKind, DrLen, GuestDrFile, GuestSlotState, HostBpId, HostBreakpoint, HostState,
    PendingReason, PhysSlot, Plan, Policy, Scope, Slot, VcpuId, VcpuPlan,
};

/// Why [`check_registration`] refuses a new host breakpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArbiterError {
    /// The id is already in use.
    #[error(
        "host breakpoint id {id} is already registered: ids must be unique; remove the existing \
         breakpoint first or register under a new id"
    )]
    DuplicateId {
        /// The id.
        id: HostBpId,
    },
    /// The breakpoint is scoped to a vCPU the VM does not have.
    #[error(
        "host breakpoint {id} is scoped to {vcpu} but the VM has {vcpus} vCPUs; scope it to an \
         existing vCPU or to the whole VM"
    )]
    NoSuchVcpu {
        /// The new breakpoint.
        id: HostBpId,
        /// The vCPU it names.
        vcpu: VcpuId,
        /// How many vCPUs the VM has.
        vcpus: usize,
    },
    /// Under [`Policy::Deny`], the breakpoint cannot fit on a vCPU without a guest slot.
    #[error(
        "policy deny refuses host breakpoint {id}: on {vcpu} the guest has {guest_slots} debug \
         register(s) enabled and {host_slots} host breakpoint(s) already cover that vCPU, so {id} \
         would not fit into the 4 hardware slots without taking one of the guest's; remove a \
         host breakpoint, scope this one to another vCPU, or switch to policy host-first or \
         guest-first"
    )]
    WouldStarveGuest {
        /// The new breakpoint.
        id: HostBpId,
        /// The first vCPU (lowest number) where it would not fit.
        vcpu: VcpuId,
        /// The slots the guest has enabled there (I/O breakpoints excluded: they take no slot).
        guest_slots: usize,
        /// The host breakpoints that already cover that vCPU.
        host_slots: usize,
    },
}

/// The guest's enabled virtual slots that need a hardware slot. I/O breakpoints are left out:
/// they are reported pending and never placed (see [`PendingReason::IoBreakpoint`]).
fn placeable(guest: &GuestDrFile) -> impl Iterator<Item = Slot> + '_ {
    guest
        .claimed_slots()
        .filter(|virt| guest.dr7.rw(*virt) != DrKind::Io)
}

/// The host breakpoints sorted by id, the first occurrence of a duplicated id winning (the
/// registry guarantees unique ids; [`check_registration`] refuses duplicates).
fn by_id(hosts: &[HostBreakpoint]) -> Vec<&HostBreakpoint> {
    let mut sorted: Vec<&HostBreakpoint> = hosts.iter().collect();
    // Stable: among equal ids the caller's first entry stays first and survives the dedup.
    sorted.sort_by_key(|h| h.id);
    sorted.dedup_by_key(|h| h.id);
    sorted
}

fn vcpus_of(guests: &[GuestDrFile]) -> impl Iterator<Item = (VcpuId, &GuestDrFile)> {
    (0u32..).map(VcpuId).zip(guests)
}

fn exists(vcpu: VcpuId, guests: &[GuestDrFile]) -> bool {
    vcpu.index().is_some_and(|i| i < guests.len())
}

/// Computes the physical plan for every vCPU. `guests[i]` is vCPU i's file.
///
/// Pure: it reads its inputs only, so the guest's DR file is never modified by planning. Every
/// host breakpoint gets a [`HostState`] entry for every vCPU its scope covers (armed or pending,
/// never missing); one scoped to a vCPU that does not exist is pending there with
/// [`PendingReason::NoSuchVcpu`]. Host breakpoints sharing an id are planned once, as the
/// first of them.
pub fn plan(policy: Policy, hosts: &[HostBreakpoint], guests: &[GuestDrFile]) -> Plan {
    let hosts = by_id(hosts);
    let mut host_states = BTreeMap::new();
    for h in &hosts {
        let mut state = HostState::default();
        if let Scope::Vcpu(vcpu) = h.scope {
            if !exists(vcpu, guests) {
                let reason = PendingReason::NoSuchVcpu {
                    vcpus: guests.len(),
                };
                state.pending.insert(vcpu, reason);
            }
        }
        host_states.insert(h.id, state);
    }
    let mut vcpus = Vec::with_capacity(guests.len());
    let mut guest_states = Vec::with_capacity(guests.len());
    for (vcpu, guest) in vcpus_of(guests) {
        let mut placer = Placer::new(vcpu, guest);
        let here: Vec<&HostBreakpoint> = hosts
            .iter()
            .copied()
            .filter(|h| h.scope.covers(vcpu))
            .collect();
        if policy.guest_placed_first() {
            placer.place_guest(&here);
            placer.place_hosts(policy, &here, &mut host_states);
        } else {
            placer.place_hosts(policy, &here, &mut host_states);
            placer.place_guest(&here);
        }
        let (vcpu_plan, guest_state) = placer.finish(&here);
        vcpus.push(vcpu_plan);
        guest_states.push(guest_state);
    }
    Plan {
        policy,
        vcpus,
        host_states,
        guest_states,
    }
}

/// One vCPU's placement in progress.
struct Placer<'a> {
    vcpu: VcpuId,
    guest: &'a GuestDrFile,
    slots: [PhysSlot; 4],
    guest_state: [GuestSlotState; 4],
}

impl<'a> Placer<'a> {
    fn new(vcpu: VcpuId, guest: &'a GuestDrFile) -> Self {
        Placer {
            vcpu,
            guest,
            slots: [PhysSlot::Free; 4],
            guest_state: [GuestSlotState::Unused; 4],
        }
    }

    fn free(&self, phys: Slot) -> bool {
        self.slots[phys.index()] == PhysSlot::Free
    }

    /// Host breakpoints in ascending id order, each into the highest free slot.
    fn place_hosts(
        &mut self,
        policy: Policy,
        here: &[&HostBreakpoint],
        states: &mut BTreeMap<HostBpId, HostState>,
    ) {
        for (rank, h) in here.iter().enumerate() {
            let state = states.entry(h.id).or_default();
            if let Some((phys, virt)) = self.guest_slot_like(h) {
                self.slots[phys.index()] = PhysSlot::Shared {
                    host: h.id,
                    guest: virt,
                };
                state.armed.insert(self.vcpu, phys);
                continue;
            }
            match Slot::ALL.into_iter().rev().find(|s| self.free(*s)) {
                Some(phys) => {
                    self.slots[phys.index()] = PhysSlot::Host(h.id);
                    state.armed.insert(self.vcpu, phys);
                }
                None => {
                    // Ranks 0-3 would have fitted had the guest not been placed first.
                    let reason = if rank < Slot::ALL.len() {
                        PendingReason::EvictedByGuest { policy }
                    } else {
                        PendingReason::NoFreeSlot { hosts: here.len() }
                    };
                    state.pending.insert(self.vcpu, reason);
                }
            }
        }
    }

    /// The guest's DR fields for virtual slot `virt`: address, RW, LEN.
    fn guest_fields(&self, virt: Slot) -> (u64, DrKind, DrLen) {
        let dr7 = self.guest.dr7;
        (self.guest.dr[virt.index()], dr7.rw(virt), dr7.len(virt))
    }

    /// A physical slot already holding a guest virtual slot that asks for exactly what `h`
    /// asks for.
    fn guest_slot_like(&self, h: &HostBreakpoint) -> Option<(Slot, Slot)> {
        let (rw, len) = h.spec.to_dr7_fields();
        Slot::ALL
            .into_iter()
            .find_map(|phys| match self.slots[phys.index()] {
                PhysSlot::Guest(virt) => {
                    (self.guest_fields(virt) == (h.spec.addr(), rw, len)).then_some((phys, virt))
                }
                _ => None,
            })
    }

    /// A physical slot already holding a host breakpoint (alone) that asks for exactly what
    /// guest virtual slot `virt` asks for.
    fn host_slot_like(&self, virt: Slot, here: &[&HostBreakpoint]) -> Option<(Slot, HostBpId)> {
        let want = self.guest_fields(virt);
        Slot::ALL
            .into_iter()
            .find_map(|phys| match self.slots[phys.index()] {
                PhysSlot::Host(id) => {
                    let h = here.iter().find(|h| h.id == id)?;
                    let (rw, len) = h.spec.to_dr7_fields();
                    ((h.spec.addr(), rw, len) == want).then_some((phys, id))
                }
                _ => None,
            })
    }

    /// Guest-enabled virtual slots in ascending order, each sharing the slot of a host
    /// breakpoint that asks for the same, or else into the lowest free slot.
    fn place_guest(&mut self, here: &[&HostBreakpoint]) {
        for virt in self.guest.claimed_slots() {
            let state = if self.guest.dr7.rw(virt) == DrKind::Io {
                GuestSlotState::Pending {
                    reason: PendingReason::IoBreakpoint,
                }
            } else if let Some((phys, host)) = self.host_slot_like(virt, here) {
                self.slots[phys.index()] = PhysSlot::Shared { host, guest: virt };
                GuestSlotState::Armed { phys }
            } else if let Some(phys) = Slot::ALL.into_iter().find(|s| self.free(*s)) {
                self.slots[phys.index()] = PhysSlot::Guest(virt);
                GuestSlotState::Armed { phys }
            } else {
                let host_slots = self.slots.iter().filter(|s| s.host().is_some()).count();
                GuestSlotState::Pending {
                    reason: PendingReason::HeldByHost { host_slots },
                }
            };
            self.guest_state[virt.index()] = state;
        }
    }

    /// The physical registers: each owned slot gets Ln and its owner's RW/LEN (SDM 17.2.4);
    /// bit 10 stays set and GD clear (trapping MOV DR is the VMM's decision, not the plan's).
    fn finish(self, here: &[&HostBreakpoint]) -> (VcpuPlan, [GuestSlotState; 4]) {
        let mut plan = VcpuPlan::empty(self.vcpu);
        plan.slots = self.slots;
        for phys in Slot::ALL {
            let (addr, rw, len) = match self.slots[phys.index()] {
                PhysSlot::Free => continue,
                PhysSlot::Host(id) => match here.iter().find(|h| h.id == id) {
                    Some(h) => {
                        let (rw, len) = h.spec.to_dr7_fields();
                        (h.spec.addr(), rw, len)
                    }
                    // Unreachable: only breakpoints from `here` were placed.
                    None => continue,
                },
                // A shared slot's two owners ask for the same fields: the guest's serve both.
                PhysSlot::Guest(virt) | PhysSlot::Shared { guest: virt, .. } => {
                    plan.virt_to_phys[virt.index()] = Some(phys);
                    self.guest_fields(virt)
                }
            };
            plan.dr[phys.index()] = addr;
            plan.dr7 = plan
                .dr7
                .with_local(phys, true)
                .with_rw(phys, rw)
                .with_len(phys, len);
        }
        debug_assert!(plan.dr7.bits() & Dr7::GD == 0);
        (plan, self.guest_state)
    }
}

/// Checks whether host breakpoint `new` may be registered next to `hosts`, given the guests'
/// current DR files.
///
/// Under every policy: refuses an id already in `hosts` and a scope naming a vCPU that does not
/// exist. Under [`Policy::Deny`] only: refuses `new` when, on some vCPU it covers where the
/// guest has slots enabled, the host breakpoints already covering it plus `new` plus the
/// guest's enabled slots need more than four physical slots (a host breakpoint identical to a
/// guest slot shares it and needs none), i.e. when `new` could only be armed there by taking a
/// guest slot. On vCPUs where the guest enables nothing, a surplus host breakpoint starves no
/// one and is merely pending. Under the other policies a surplus is resolved by placement and
/// reported in the [`Plan`], so this returns `Ok`.
pub fn check_registration(
    policy: Policy,
    hosts: &[HostBreakpoint],
    new: &HostBreakpoint,
    guests: &[GuestDrFile],
) -> Result<(), ArbiterError> {
    if hosts.iter().any(|h| h.id == new.id) {
        return Err(ArbiterError::DuplicateId { id: new.id });
    }
    if let Scope::Vcpu(vcpu) = new.scope {
        if !exists(vcpu, guests) {
            return Err(ArbiterError::NoSuchVcpu {
                id: new.id,
                vcpu,
                vcpus: guests.len(),
            });
        }
    }
    if policy != Policy::Deny {
        return Ok(());
    }
    let mut with_new = hosts.to_vec();
    with_new.push(*new);
    let with_new = by_id(&with_new);
    for (vcpu, guest) in vcpus_of(guests) {
        if !new.scope.covers(vcpu) {
            continue;
        }
        let guest_slots = placeable(guest).count();
        if guest_slots == 0 {
            continue;
        }
        // Place the host breakpoints first, `new` among them: if a guest slot is then left
        // without one, `new` could only be armed by taking it. Sharing is counted: a host
        // breakpoint identical to a guest slot takes nothing from it.
        let here: Vec<&HostBreakpoint> = with_new
            .iter()
            .copied()
            .filter(|h| h.scope.covers(vcpu))
            .collect();
        let mut placer = Placer::new(vcpu, guest);
        placer.place_hosts(Policy::HostFirst, &here, &mut BTreeMap::new());
        placer.place_guest(&here);
        let starved = placer.guest_state.iter().any(|s| {
            matches!(
                s,
                GuestSlotState::Pending {
                    reason: PendingReason::HeldByHost { .. }
                }
            )
        });
        if starved {
            return Err(ArbiterError::WouldStarveGuest {
                id: new.id,
                vcpu,
                guest_slots,
                host_slots: here.len() - 1,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BreakSpec, DrLen, HostSummary, WatchAccess};

    use GuestSlotState::{Armed, Pending, Unused};
    use PhysSlot::{Free, Guest, Host};
    use Slot as S;

    const V0: VcpuId = VcpuId(0);
    const V1: VcpuId = VcpuId(1);

    fn host(id: u32, scope: Scope) -> HostBreakpoint {
        let addr = 0xffff_ffff_8100_0000 + u64::from(id) * 0x10;
        HostBreakpoint {
            id: HostBpId(id),
            spec: BreakSpec::exec(addr).expect("valid"),
            scope,
        }
    }

    fn vm_hosts(ids: &[u32]) -> Vec<HostBreakpoint> {
        ids.iter().map(|id| host(*id, Scope::Vm)).collect()
    }

    /// A guest enabling `virt` slots (L bit), each a 4-byte write watch at 0x1000 * (n + 1).
    fn guest(virt: &[Slot]) -> GuestDrFile {
        let mut file = GuestDrFile::default();
        for v in virt {
            file.dr[v.index()] = 0x1000 * (v.index() as u64 + 1);
            file.dr7 = file
                .dr7
                .with_local(*v, true)
                .with_rw(*v, DrKind::Write)
                .with_len(*v, DrLen::Four);
        }
        file
    }

    fn h(id: u32) -> PhysSlot {
        Host(HostBpId(id))
    }

    #[test]
    fn nothing_to_arm_is_empty() {
        for policy in Policy::ALL {
            let plan = plan(policy, &[], &[GuestDrFile::default(); 2]);
            assert_eq!(plan.vcpus.len(), 2);
            for (vcpu, p) in plan.vcpus.iter().enumerate() {
                assert!(p.is_empty());
                assert_eq!(*p, VcpuPlan::empty(VcpuId(vcpu as u32)));
                assert_eq!(p.dr7, Dr7::INIT);
            }
            assert_eq!(plan.guest_states, vec![[Unused; 4]; 2]);
            assert!(plan.host_states.is_empty());
        }
    }

    #[test]
    fn guest_writing_only_dr0_to_dr3_claims_nothing() {
        let file = GuestDrFile::new([0x1000, 0x2000, 0x3000, 0x4000], 0xffff_0ff0, 0x400);
        for policy in Policy::ALL {
            let plan = plan(policy, &vm_hosts(&[1, 2, 3, 4]), &[file]);
            assert_eq!(plan.vcpus[0].slots, [h(4), h(3), h(2), h(1)]);
            assert_eq!(plan.guest_states[0], [Unused; 4]);
        }
    }

    #[test]
    fn host_only_fills_from_the_top_for_every_count() {
        let table: [(&[u32], [PhysSlot; 4]); 5] = [
            (&[], [Free, Free, Free, Free]),
            (&[1], [Free, Free, Free, h(1)]),
            (&[1, 2], [Free, Free, h(2), h(1)]),
            (&[1, 2, 3], [Free, h(3), h(2), h(1)]),
            (&[1, 2, 3, 4], [h(4), h(3), h(2), h(1)]),
        ];
        for policy in Policy::ALL {
            for (ids, slots) in table {
                let plan = plan(policy, &vm_hosts(ids), &[GuestDrFile::default()]);
                let p = &plan.vcpus[0];
                assert_eq!(p.slots, slots, "{policy} {ids:?}");
                for (phys, owner) in S::ALL.into_iter().zip(slots) {
                    let enabled = owner != Free;
                    assert_eq!(p.dr7.local(phys), enabled);
                    assert!(!p.dr7.global(phys));
                    if let Host(id) = owner {
                        let bp = host(id.0, Scope::Vm);
                        assert_eq!(p.dr[phys.index()], bp.spec.addr());
                        assert_eq!((p.dr7.rw(phys), p.dr7.len(phys)), bp.spec.to_dr7_fields());
                        assert_eq!(p.phys_of_host(id), Some(phys));
                        let state = &plan.host_states[&id];
                        assert_eq!(state.armed, BTreeMap::from([(V0, phys)]));
                        assert_eq!(state.summary(), HostSummary::Armed);
                    } else {
                        assert_eq!(p.dr[phys.index()], 0);
                    }
                }
                assert!(p.dr7.bits() & Dr7::FIXED_ONE != 0 && !p.dr7.gd());
                assert_eq!(p.dr7.validate(), Ok(()));
            }
        }
    }

    #[test]
    fn ids_not_input_order_decide_placement() {
        let plan = plan(
            Policy::HostFirst,
            &vm_hosts(&[7, 2, 5]),
            &[GuestDrFile::default()],
        );
        assert_eq!(plan.vcpus[0].slots, [Free, h(7), h(5), h(2)]);
    }

    #[test]
    fn guest_only_first_fit_from_the_bottom_for_every_slot() {
        for policy in Policy::ALL {
            // Every single slot lands in DR0.
            for virt in S::ALL {
                let file = guest(&[virt]);
                let plan = plan(policy, &[], &[file]);
                let p = &plan.vcpus[0];
                assert_eq!(p.slots, [Guest(virt), Free, Free, Free]);
                assert_eq!(p.phys_of_guest(virt), Some(S::DR0));
                assert_eq!(p.dr[0], file.dr[virt.index()]);
                assert_eq!(
                    (p.dr7.rw(S::DR0), p.dr7.len(S::DR0)),
                    (DrKind::Write, DrLen::Four)
                );
                let mut states = [Unused; 4];
                states[virt.index()] = Armed { phys: S::DR0 };
                assert_eq!(plan.guest_states[0], states);
            }
            // All four keep their order.
            let plan = plan(policy, &[], &[guest(&S::ALL)]);
            let p = &plan.vcpus[0];
            assert_eq!(
                p.slots,
                [Guest(S::DR0), Guest(S::DR1), Guest(S::DR2), Guest(S::DR3)]
            );
            assert_eq!(p.virt_to_phys, S::ALL.map(Some));
        }
    }

    #[test]
    fn guest_keeps_its_rw_len_and_l_or_g_becomes_l() {
        let mut file = GuestDrFile::default();
        file.dr[2] = 0x7000;
        file.dr7 = Dr7::INIT
            .with_global(S::DR2, true)
            .with_rw(S::DR2, DrKind::ReadWrite)
            .with_len(S::DR2, DrLen::Eight);
        let plan = plan(Policy::HostFirst, &vm_hosts(&[1]), &[file]);
        let p = &plan.vcpus[0];
        assert_eq!(p.slots, [Guest(S::DR2), Free, Free, h(1)]);
        assert!(p.dr7.local(S::DR0) && !p.dr7.global(S::DR0));
        assert_eq!(
            (p.dr[0], p.dr7.rw(S::DR0), p.dr7.len(S::DR0)),
            (0x7000, DrKind::ReadWrite, DrLen::Eight)
        );
        assert_eq!(p.virt_to_phys, [None, None, Some(S::DR0), None]);
    }

    /// A guest enabling exec breakpoints in `virt` slots on the addresses of host breakpoints
    /// `ids` (see [`host`]): slot i on host `ids[i]`'s address.
    fn guest_on_hosts(virt: &[Slot], ids: &[u32]) -> GuestDrFile {
        let mut file = GuestDrFile::default();
        for (v, id) in virt.iter().zip(ids) {
            file.dr[v.index()] = host(*id, Scope::Vm).spec.addr();
            file.dr7 = file
                .dr7
                .with_local(*v, true)
                .with_rw(*v, DrKind::Exec)
                .with_len(*v, DrLen::One);
        }
        file
    }

    #[test]
    fn identical_host_and_guest_breakpoints_share_a_slot_under_every_policy() {
        let shared = |id: u32, virt: Slot| PhysSlot::Shared {
            host: HostBpId(id),
            guest: virt,
        };
        for policy in Policy::ALL {
            // The guest's four slots on hosts 1-4's addresses, and host 1 and 3: four slots
            // suffice, and nobody is pending.
            let file = guest_on_hosts(&S::ALL, &[1, 2, 3, 4]);
            let plan = plan(policy, &vm_hosts(&[1, 3]), &[file]);
            let p = &plan.vcpus[0];
            let want = if policy.guest_placed_first() {
                [
                    shared(1, S::DR0),
                    Guest(S::DR1),
                    shared(3, S::DR2),
                    Guest(S::DR3),
                ]
            } else {
                [
                    Guest(S::DR1),
                    Guest(S::DR3),
                    shared(3, S::DR2),
                    shared(1, S::DR0),
                ]
            };
            assert_eq!(p.slots, want, "{policy}");
            assert!(plan.guest_states[0]
                .iter()
                .all(|s| matches!(s, Armed { .. })));
            assert!(plan
                .host_states
                .values()
                .all(|s| s.summary() == HostSummary::Armed));
            for (id, virt) in [(1, S::DR0), (3, S::DR2)] {
                let phys = p.phys_of_host(HostBpId(id)).expect("armed");
                assert_eq!(p.phys_of_guest(virt), Some(phys));
                assert_eq!(p.phys_of(shared(id, virt)), Some(phys));
            }
            // Only the exact same request shares: another length is a slot of its own.
            let mut other_len = file;
            other_len.dr7 = other_len.dr7.with_len(S::DR0, DrLen::Two);
            let apart = super::plan(policy, &vm_hosts(&[1]), &[other_len]);
            assert!(!apart.vcpus[0]
                .slots
                .iter()
                .any(|s| matches!(s, PhysSlot::Shared { .. })));
            // Deny lets a host breakpoint in that shares instead of starving the guest.
            let sharing = host(2, Scope::Vm);
            assert_eq!(
                check_registration(Policy::Deny, &vm_hosts(&[1]), &sharing, &[file]),
                Ok(())
            );
            let starving = host(9, Scope::Vm);
            assert!(check_registration(Policy::Deny, &vm_hosts(&[1]), &starving, &[file]).is_err());
        }
    }

    #[test]
    fn both_fitting_is_the_same_under_every_policy() {
        // (host ids, guest virtual slots, expected physical slots)
        let table: [(&[u32], &[Slot], [PhysSlot; 4]); 5] = [
            (&[1], &[S::DR0], [Guest(S::DR0), Free, Free, h(1)]),
            (&[1], &[S::DR3], [Guest(S::DR3), Free, Free, h(1)]),
            (
                &[1, 2],
                &[S::DR1, S::DR3],
                [Guest(S::DR1), Guest(S::DR3), h(2), h(1)],
            ),
            (&[1, 2, 3], &[S::DR2], [Guest(S::DR2), h(3), h(2), h(1)]),
            (
                &[1],
                &[S::DR0, S::DR1, S::DR3],
                [Guest(S::DR0), Guest(S::DR1), Guest(S::DR3), h(1)],
            ),
        ];
        for policy in Policy::ALL {
            for (ids, virt, slots) in table {
                let plan = plan(policy, &vm_hosts(ids), &[guest(virt)]);
                assert_eq!(plan.vcpus[0].slots, slots, "{policy} {ids:?} {virt:?}");
                assert!(plan
                    .host_states
                    .values()
                    .all(|s| s.summary() == HostSummary::Armed));
                assert!(plan.guest_states[0]
                    .iter()
                    .all(|s| !matches!(s, Pending { .. })));
            }
        }
    }

    #[test]
    fn conflict_under_host_first() {
        let plan = plan(
            Policy::HostFirst,
            &vm_hosts(&[1, 2, 3]),
            &[guest(&[S::DR1, S::DR2])],
        );
        assert_eq!(plan.vcpus[0].slots, [Guest(S::DR1), h(3), h(2), h(1)]);
        assert_eq!(
            plan.guest_states[0],
            [
                Unused,
                Armed { phys: S::DR0 },
                Pending {
                    reason: PendingReason::HeldByHost { host_slots: 3 }
                },
                Unused,
            ]
        );
        assert!(plan
            .host_states
            .values()
            .all(|s| s.summary() == HostSummary::Armed));
    }

    #[test]
    fn conflict_under_guest_first_and_deny() {
        for policy in [Policy::GuestFirst, Policy::Deny] {
            let plan = plan(policy, &vm_hosts(&[1, 2, 3]), &[guest(&[S::DR1, S::DR2])]);
            assert_eq!(
                plan.vcpus[0].slots,
                [Guest(S::DR1), Guest(S::DR2), h(2), h(1)]
            );
            assert_eq!(
                plan.guest_states[0],
                [
                    Unused,
                    Armed { phys: S::DR0 },
                    Armed { phys: S::DR1 },
                    Unused
                ]
            );
            let evicted = &plan.host_states[&HostBpId(3)];
            assert_eq!(evicted.summary(), HostSummary::Pending);
            assert_eq!(
                evicted.pending,
                BTreeMap::from([(V0, PendingReason::EvictedByGuest { policy })])
            );
            assert!(evicted
                .to_string()
                .contains("evicted by the guest's own DR7"));
        }
    }

    #[test]
    fn guest_taking_all_four_evicts_every_host_under_guest_first() {
        let plan = plan(Policy::GuestFirst, &vm_hosts(&[1, 2]), &[guest(&S::ALL)]);
        assert!(!plan.vcpus[0].has_host_slots());
        for id in [1, 2] {
            assert_eq!(
                plan.host_states[&HostBpId(id)].summary(),
                HostSummary::Pending
            );
        }
    }

    #[test]
    fn five_or_more_hosts_leave_the_excess_pending() {
        for policy in Policy::ALL {
            let plan = plan(
                policy,
                &vm_hosts(&[1, 2, 3, 4, 5, 6]),
                &[GuestDrFile::default()],
            );
            assert_eq!(plan.vcpus[0].slots, [h(4), h(3), h(2), h(1)]);
            for id in [5, 6] {
                assert_eq!(
                    plan.host_states[&HostBpId(id)].pending,
                    BTreeMap::from([(V0, PendingReason::NoFreeSlot { hosts: 6 })])
                );
            }
            // With a guest slot, host-first evicts the guest; the others evict host #4 for it.
            let plan = super::plan(policy, &vm_hosts(&[1, 2, 3, 4, 5]), &[guest(&[S::DR0])]);
            let state4 = &plan.host_states[&HostBpId(4)];
            if policy == Policy::HostFirst {
                assert_eq!(state4.summary(), HostSummary::Armed);
                assert!(matches!(plan.guest_states[0][0], Pending { .. }));
            } else {
                assert_eq!(
                    state4.pending[&V0],
                    PendingReason::EvictedByGuest { policy }
                );
                assert_eq!(plan.guest_states[0][0], Armed { phys: S::DR0 });
            }
            assert_eq!(
                plan.host_states[&HostBpId(5)].pending[&V0],
                PendingReason::NoFreeSlot { hosts: 5 }
            );
        }
    }

    #[test]
    fn per_vcpu_scope_and_partly_armed() {
        let hosts = [
            host(1, Scope::Vm),
            host(2, Scope::Vcpu(V1)),
            host(3, Scope::Vm),
        ];
        // vCPU 1's guest uses three slots, vCPU 0's none.
        let guests = [GuestDrFile::default(), guest(&[S::DR0, S::DR1, S::DR2])];
        let plan = plan(Policy::GuestFirst, &hosts, &guests);
        assert_eq!(plan.vcpus[0].slots, [Free, Free, h(3), h(1)]);
        assert_eq!(
            plan.vcpus[1].slots,
            [Guest(S::DR0), Guest(S::DR1), Guest(S::DR2), h(1)]
        );
        let s1 = &plan.host_states[&HostBpId(1)];
        assert_eq!(s1.armed, BTreeMap::from([(V0, S::DR3), (V1, S::DR3)]));
        let s2 = &plan.host_states[&HostBpId(2)];
        assert!(s2.armed.is_empty(), "vCPU 0 is outside #2's scope");
        assert_eq!(s2.pending.keys().copied().collect::<Vec<_>>(), [V1]);
        let s3 = &plan.host_states[&HostBpId(3)];
        assert_eq!(s3.summary(), HostSummary::PartlyArmed);
        assert_eq!(s3.armed, BTreeMap::from([(V0, S::DR2)]));
        assert_eq!(s3.pending.keys().copied().collect::<Vec<_>>(), [V1]);
    }

    #[test]
    fn scope_to_a_missing_vcpu_is_pending_not_dropped() {
        let plan = plan(
            Policy::HostFirst,
            &[host(1, Scope::Vcpu(VcpuId(4)))],
            &[GuestDrFile::default()],
        );
        let state = &plan.host_states[&HostBpId(1)];
        assert_eq!(
            state.pending,
            BTreeMap::from([(VcpuId(4), PendingReason::NoSuchVcpu { vcpus: 1 })])
        );
        assert!(plan.vcpus[0].is_empty());
    }

    #[test]
    fn duplicate_ids_are_planned_once_as_the_first() {
        let first = host(1, Scope::Vm);
        let second = HostBreakpoint {
            spec: BreakSpec::watch(0x2000, WatchAccess::Write, 8).expect("valid"),
            ..first
        };
        let plan = plan(
            Policy::HostFirst,
            &[first, second],
            &[GuestDrFile::default()],
        );
        assert_eq!(plan.vcpus[0].slots, [Free, Free, Free, h(1)]);
        assert_eq!(plan.vcpus[0].dr[3], first.spec.addr());
    }

    #[test]
    fn guest_io_slot_is_pending_and_takes_no_slot() {
        let mut file = guest(&[S::DR2]);
        file.dr7 = file
            .dr7
            .with_local(S::DR0, true)
            .with_rw(S::DR0, DrKind::Io);
        for policy in Policy::ALL {
            let plan = plan(policy, &vm_hosts(&[1, 2, 3]), &[file]);
            assert_eq!(plan.vcpus[0].slots, [Guest(S::DR2), h(3), h(2), h(1)]);
            assert_eq!(
                plan.guest_states[0][0],
                Pending {
                    reason: PendingReason::IoBreakpoint
                }
            );
            assert_eq!(plan.vcpus[0].dr7.validate(), Ok(()));
        }
    }

    #[test]
    fn planning_leaves_inputs_untouched() {
        let hosts = vm_hosts(&[1, 2, 3]);
        let guests = [guest(&S::ALL), guest(&[S::DR1])];
        let (hosts_before, guests_before) = (hosts.clone(), guests);
        for policy in Policy::ALL {
            let _ = plan(policy, &hosts, &guests);
        }
        assert_eq!((hosts, guests), (hosts_before, guests_before));
    }

    #[test]
    fn registration_checks_under_every_policy() {
        let guests = [guest(&[S::DR0, S::DR1]), GuestDrFile::default()];
        let hosts = vm_hosts(&[1]);
        for policy in Policy::ALL {
            assert_eq!(
                check_registration(policy, &hosts, &host(1, Scope::Vm), &guests),
                Err(ArbiterError::DuplicateId { id: HostBpId(1) })
            );
            assert_eq!(
                check_registration(policy, &hosts, &host(2, Scope::Vcpu(VcpuId(2))), &guests),
                Err(ArbiterError::NoSuchVcpu {
                    id: HostBpId(2),
                    vcpu: VcpuId(2),
                    vcpus: 2
                })
            );
            // 1 host + new + 2 guest slots = 4: fits.
            assert_eq!(
                check_registration(policy, &hosts, &host(2, Scope::Vm), &guests),
                Ok(())
            );
        }
    }

    #[test]
    fn deny_refuses_what_would_starve_the_guest() {
        let guests = [guest(&[S::DR0, S::DR1]), GuestDrFile::default()];
        let hosts = vm_hosts(&[1, 2]);
        let new = host(3, Scope::Vm);
        let err = check_registration(Policy::Deny, &hosts, &new, &guests);
        assert_eq!(
            err,
            Err(ArbiterError::WouldStarveGuest {
                id: HostBpId(3),
                vcpu: V0,
                guest_slots: 2,
                host_slots: 2,
            })
        );
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("policy deny") && msg.contains("switch to policy"),
            "{msg}"
        );
        for policy in [Policy::HostFirst, Policy::GuestFirst] {
            assert_eq!(check_registration(policy, &hosts, &new, &guests), Ok(()));
        }
        // Scoped to the vCPU whose guest enables nothing: no one starves.
        assert_eq!(
            check_registration(Policy::Deny, &hosts, &host(3, Scope::Vcpu(V1)), &guests),
            Ok(())
        );
        // A fifth host on an idle guest is pending, not refused.
        let idle = [GuestDrFile::default()];
        assert_eq!(
            check_registration(Policy::Deny, &vm_hosts(&[1, 2, 3, 4]), &new_id(5), &idle),
            Ok(())
        );
        // I/O slots take no hardware slot, so they do not count.
        let io = GuestDrFile {
            dr7: Dr7::from_bits(0x400 | 0xff | 0xaaaa_0000),
            ..GuestDrFile::default()
        };
        assert_eq!(
            check_registration(Policy::Deny, &vm_hosts(&[1, 2, 3]), &new_id(4), &[io]),
            Ok(())
        );
    }

    fn new_id(id: u32) -> HostBreakpoint {
        host(id, Scope::Vm)
    }

    #[test]
    fn plan_display_shows_every_owner() {
        let plan = plan(
            Policy::HostFirst,
            &vm_hosts(&[1, 2, 3]),
            &[guest(&[S::DR1, S::DR2])],
        );
        let text = plan.to_string();
        for needle in [
            "policy host-first",
            "vcpu0: DR0=guest DR1 @0x2000, DR1=host #3 @0xffffffff81000030",
            "guest: DR0 unused, DR1 armed in DR0, DR2 pending: no free hardware slot",
            "host #1: armed: vcpu0 DR3",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }
}
