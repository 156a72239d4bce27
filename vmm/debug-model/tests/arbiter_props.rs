//! Property tests of the arbiter and of DR6 attribution against a count-based reference model.
//!
//! The reference model knows nothing about `Placer`: it only counts. On one vCPU with H host
//! breakpoints in scope and G guest-enabled (non-I/O) virtual slots:
//! - host-first: min(H, 4) hosts armed, min(G, 4 - armed hosts) guest slots armed;
//! - guest-first and deny: all G guest slots armed, min(H, 4 - G) hosts armed;
//! - the k-th host by id sits in DR(3-k), the j-th guest slot by virtual number in DRj.

use std::collections::{BTreeMap, BTreeSet};

use drvisor_debug::{
    attribute, check_registration, physical_dr6_for, plan, ArbiterError, AttributionContext,
    BreakKind, BreakSpec, Dr6, Dr7, DrKind, GuestDrFile, GuestSlotState, Hit, HostBpId,
    HostBreakpoint, PendingReason, PhysSlot, Plan, Policy, Scope, Slot, VcpuId,
};
use proptest::prelude::*;

const MAX_VCPUS: u32 = 4;

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::HostFirst),
        Just(Policy::GuestFirst),
        Just(Policy::Deny)
    ]
}

/// A valid spec: any kind, any legal length, a canonical address aligned to it.
fn spec() -> impl Strategy<Value = BreakSpec> {
    let kind = prop_oneof![
        Just(BreakKind::Exec),
        Just(BreakKind::Write),
        Just(BreakKind::ReadWrite)
    ];
    (kind, 0usize..4, any::<u64>()).prop_map(|(kind, len_index, raw)| {
        let len: u8 = if kind == BreakKind::Exec {
            1
        } else {
            [1, 2, 4, 8][len_index]
        };
        let canonical = ((raw << 16) as i64 >> 16) as u64;
        let addr = canonical & !(u64::from(len) - 1);
        BreakSpec::new(addr, kind, len).expect("strategy builds valid specs")
    })
}

/// Scopes over vCPUs 0..=MAX_VCPUS: one past the largest VM, so missing vCPUs are covered too.
fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        2 => Just(Scope::Vm),
        1 => (0..=MAX_VCPUS).prop_map(|v| Scope::Vcpu(VcpuId(v))),
    ]
}

/// 0..8 host breakpoints with unique ids, in random input order.
fn hosts() -> impl Strategy<Value = Vec<HostBreakpoint>> {
    prop::collection::btree_set(0u32..64, 0..8)
        .prop_flat_map(|ids| {
            let n = ids.len();
            (
                Just(ids),
                prop::collection::vec((spec(), scope()), n),
                any::<bool>(),
            )
        })
        .prop_map(|(ids, rest, reverse)| {
            let mut hosts: Vec<HostBreakpoint> = ids
                .into_iter()
                .zip(rest)
                .map(|(id, (spec, scope))| HostBreakpoint {
                    id: HostBpId(id),
                    spec,
                    scope,
                })
                .collect();
            if reverse {
                hosts.reverse();
            }
            hosts
        })
}

/// Any guest DR file. The enable byte is biased towards few claims (any DR7 value claims three
/// slots on average); the rest of DR7, RW=10 (I/O) and reserved bits included, is arbitrary.
fn guest() -> impl Strategy<Value = GuestDrFile> {
    let enables = prop_oneof![
        Just(0u64),
        (0u64..4).prop_map(|s| 1 << (2 * s)),
        (0u64..4).prop_map(|s| 2 << (2 * s)),
        (0u64..256),
    ];
    (any::<[u64; 4]>(), any::<u64>(), enables, any::<u64>())
        .prop_map(|(dr, dr6, en, rest)| GuestDrFile::new(dr, dr6, (rest & !0xff) | en))
}

fn guests() -> impl Strategy<Value = Vec<GuestDrFile>> {
    prop::collection::vec(guest(), 1..=MAX_VCPUS as usize)
}

/// What the reference model expects on one vCPU.
struct Expect {
    slots: [PhysSlot; 4],
    host_pending: BTreeMap<HostBpId, PendingReason>,
    guest: [GuestSlotState; 4],
}

fn claimed_non_io(guest: &GuestDrFile) -> Vec<Slot> {
    Slot::ALL
        .into_iter()
        .filter(|s| guest.dr7.enabled(*s) && guest.dr7.rw(*s) != DrKind::Io)
        .collect()
}

fn hosts_covering(hosts: &[HostBreakpoint], vcpu: VcpuId) -> Vec<HostBpId> {
    let ids: BTreeSet<HostBpId> = hosts
        .iter()
        .filter(|h| h.scope.covers(vcpu))
        .map(|h| h.id)
        .collect();
    ids.into_iter().collect()
}

fn reference(
    policy: Policy,
    hosts: &[HostBreakpoint],
    vcpu: VcpuId,
    guest: &GuestDrFile,
) -> Expect {
    let host_ids = hosts_covering(hosts, vcpu);
    let claimed = claimed_non_io(guest);
    let (h, g) = (host_ids.len(), claimed.len());
    let (armed_hosts, armed_guest) = match policy {
        Policy::HostFirst => {
            let ah = h.min(4);
            (ah, g.min(4 - ah))
        }
        Policy::GuestFirst | Policy::Deny => (h.min(4 - g), g),
    };
    let mut slots = [PhysSlot::Free; 4];
    let mut host_pending = BTreeMap::new();
    for (k, id) in host_ids.iter().enumerate() {
        if k < armed_hosts {
            slots[3 - k] = PhysSlot::Host(*id);
        } else {
            let reason = if policy == Policy::HostFirst || k >= 4 {
                PendingReason::NoFreeSlot { hosts: h }
            } else {
                PendingReason::EvictedByGuest { policy }
            };
            host_pending.insert(*id, reason);
        }
    }
    let mut guest_state = [GuestSlotState::Unused; 4];
    for virt in Slot::ALL.into_iter().filter(|s| guest.dr7.enabled(*s)) {
        guest_state[virt.index()] = GuestSlotState::Pending {
            reason: PendingReason::IoBreakpoint,
        };
    }
    for (j, virt) in claimed.iter().enumerate() {
        guest_state[virt.index()] = if j < armed_guest {
            slots[j] = PhysSlot::Guest(*virt);
            GuestSlotState::Armed { phys: Slot::ALL[j] }
        } else {
            GuestSlotState::Pending {
                reason: PendingReason::HeldByHost {
                    host_slots: armed_hosts,
                },
            }
        };
    }
    Expect {
        slots,
        host_pending,
        guest: guest_state,
    }
}

fn vcpu_ids(guests: &[GuestDrFile]) -> impl Iterator<Item = VcpuId> {
    (0..guests.len() as u32).map(VcpuId)
}

/// Structural invariants that hold whatever the policy.
fn check_invariants(
    plan: &Plan,
    hosts: &[HostBreakpoint],
    guests: &[GuestDrFile],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(plan.vcpus.len(), guests.len());
    prop_assert_eq!(plan.guest_states.len(), guests.len());
    // Every host breakpoint has a state.
    let ids: BTreeSet<HostBpId> = hosts.iter().map(|h| h.id).collect();
    prop_assert_eq!(
        plan.host_states.keys().copied().collect::<BTreeSet<_>>(),
        ids
    );

    for (vcpu, guest) in vcpu_ids(guests).zip(guests) {
        let p = plan.vcpu(vcpu).expect("one plan per vCPU");
        prop_assert_eq!(p.vcpu, vcpu);
        // No owner twice in one vCPU's slots (one slot holds one owner by construction).
        let owners: Vec<PhysSlot> = p
            .slots
            .iter()
            .copied()
            .filter(|s| *s != PhysSlot::Free)
            .collect();
        let distinct: BTreeSet<String> = owners.iter().map(|o| format!("{o:?}")).collect();
        prop_assert_eq!(distinct.len(), owners.len());

        // The physical DR7 is loadable, enables exactly the owned slots, with L only.
        prop_assert_eq!(p.dr7.validate(), Ok(()));
        prop_assert!(p.dr7.bits() & Dr7::FIXED_ONE != 0);
        prop_assert!(!p.dr7.gd() && !p.dr7.le() && !p.dr7.ge() && !p.dr7.rtm());
        for phys in Slot::ALL {
            let owner = p.owner_of(phys);
            prop_assert_eq!(p.dr7.local(phys), owner != PhysSlot::Free);
            prop_assert!(!p.dr7.global(phys));
            match owner {
                PhysSlot::Free => {
                    prop_assert_eq!(p.dr[phys.index()], 0);
                    prop_assert_eq!(p.dr7.rw(phys), DrKind::Exec);
                }
                PhysSlot::Host(id) => {
                    let h = hosts
                        .iter()
                        .find(|h| h.id == id)
                        .expect("placed host exists");
                    prop_assert!(h.scope.covers(vcpu));
                    prop_assert_eq!(p.dr[phys.index()], h.spec.addr());
                    prop_assert_eq!((p.dr7.rw(phys), p.dr7.len(phys)), h.spec.to_dr7_fields());
                    prop_assert_eq!(plan.host_states[&id].armed.get(&vcpu), Some(&phys));
                }
                PhysSlot::Shared { host, guest: virt } => {
                    // Both owners ask for exactly what the slot holds.
                    let h = hosts
                        .iter()
                        .find(|h| h.id == host)
                        .expect("placed host exists");
                    let spec = guest
                        .guest_spec(virt)
                        .expect("placed guest slot is enabled");
                    prop_assert_eq!(p.dr[phys.index()], h.spec.addr());
                    prop_assert_eq!(spec.addr, h.spec.addr());
                    prop_assert_eq!((spec.rw, spec.len), h.spec.to_dr7_fields());
                    prop_assert_eq!(p.phys_of_guest(virt), Some(phys));
                }
                PhysSlot::Guest(virt) => {
                    // The guest's request is reproduced exactly in the physical slot.
                    let spec = guest
                        .guest_spec(virt)
                        .expect("placed guest slot is enabled");
                    prop_assert_eq!(spec.addr, p.dr[phys.index()]);
                    prop_assert_eq!(spec.rw, p.dr7.rw(phys));
                    prop_assert_eq!(spec.len, p.dr7.len(phys));
                    prop_assert_eq!(p.phys_of_guest(virt), Some(phys));
                    prop_assert_eq!(
                        plan.guest_states[vcpu.0 as usize][virt.index()],
                        GuestSlotState::Armed { phys }
                    );
                }
            }
        }
        // virt_to_phys agrees with the slots, both ways.
        for virt in Slot::ALL {
            if let Some(phys) = p.virt_to_phys[virt.index()] {
                prop_assert_eq!(p.owner_of(phys), PhysSlot::Guest(virt));
            }
        }
        // Every guest-enabled slot is armed or pending; every other one unused.
        for virt in Slot::ALL {
            let state = plan.guest_states[vcpu.0 as usize][virt.index()];
            prop_assert_eq!(
                state == GuestSlotState::Unused,
                !guest.dr7.enabled(virt),
                "{} {}",
                virt,
                state
            );
        }
        // Every host breakpoint in scope is armed xor pending here; out of scope, neither.
        for h in hosts {
            let state = &plan.host_states[&h.id];
            let armed = state.armed.contains_key(&vcpu);
            let pending = state.pending.contains_key(&vcpu);
            if h.scope.covers(vcpu) {
                prop_assert!(armed != pending, "{} on {}: {}", h.id, vcpu, state);
            } else {
                prop_assert!(!armed && !pending, "{} on {}: {}", h.id, vcpu, state);
            }
        }
    }
    // A breakpoint scoped to a missing vCPU is reported there, not dropped.
    for h in hosts {
        if let Scope::Vcpu(v) = h.scope {
            if v.0 as usize >= guests.len() {
                prop_assert_eq!(
                    plan.host_states[&h.id].pending.get(&v),
                    Some(&PendingReason::NoSuchVcpu {
                        vcpus: guests.len()
                    })
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn plan_matches_the_reference_model(
        policy in policy(),
        hosts in hosts(),
        guests in guests(),
    ) {
        let plan = plan(policy, &hosts, &guests);
        for (vcpu, guest) in vcpu_ids(&guests).zip(&guests) {
            let expect = reference(policy, &hosts, vcpu, guest);
            let p = plan.vcpu(vcpu).expect("one plan per vCPU");
            prop_assert_eq!(p.slots, expect.slots, "{} {}", policy, vcpu);
            prop_assert_eq!(plan.guest_states[vcpu.0 as usize], expect.guest);
            for (id, reason) in &expect.host_pending {
                prop_assert_eq!(plan.host_states[id].pending.get(&vcpu), Some(reason));
            }
            prop_assert_eq!(p.is_empty(), expect.slots == [PhysSlot::Free; 4]);
        }
    }

    #[test]
    fn plan_invariants(policy in policy(), hosts in hosts(), guests in guests()) {
        let (hosts_before, guests_before) = (hosts.clone(), guests.clone());
        let plan = plan(policy, &hosts, &guests);
        // Planning never modifies the guest's DR file (nor the host set).
        prop_assert_eq!(&guests, &guests_before);
        prop_assert_eq!(&hosts, &hosts_before);
        check_invariants(&plan, &hosts, &guests)?;
    }

    #[test]
    fn plan_is_deterministic_and_ignores_input_order(
        policy in policy(),
        hosts in hosts(),
        guests in guests(),
    ) {
        let first = plan(policy, &hosts, &guests);
        prop_assert_eq!(&first, &plan(policy, &hosts, &guests));
        let mut reversed = hosts.clone();
        reversed.reverse();
        prop_assert_eq!(&first, &plan(policy, &reversed, &guests));
    }

    /// For any subset of armed slots: build the physical DR6 with those Bn bits, attribute it,
    /// and get back exactly those host ids and exactly those guest virtual bits.
    #[test]
    fn attribution_round_trip_is_exact(
        policy in policy(),
        hosts in hosts(),
        guests in guests(),
        mask in 0u8..16,
    ) {
        let plan = plan(policy, &hosts, &guests);
        for p in &plan.vcpus {
            let mut hits = Vec::new();
            let mut want_hosts = BTreeSet::new();
            let mut want_guest = BTreeSet::new();
            for phys in Slot::ALL.into_iter().filter(|s| mask & (1 << s.number()) != 0) {
                match p.owner_of(phys) {
                    PhysSlot::Host(id) => {
                        hits.push(Hit::Host(id));
                        want_hosts.insert(id);
                    }
                    PhysSlot::Guest(virt) => {
                        hits.push(Hit::Guest(virt));
                        want_guest.insert(virt);
                    }
                    PhysSlot::Shared { host, guest } => {
                        hits.push(Hit::Host(host));
                        want_hosts.insert(host);
                        want_guest.insert(guest);
                    }
                    PhysSlot::Free => {}
                }
            }
            let dr6 = physical_dr6_for(&hits, p).expect("every hit is armed");
            let got = attribute(dr6, p, AttributionContext::default());
            let got_hosts: BTreeSet<HostBpId> = got.host_hits.iter().map(|h| h.id).collect();
            prop_assert_eq!(got.host_hits.len(), want_hosts.len());
            prop_assert_eq!(got_hosts, want_hosts);
            for hit in &got.host_hits {
                prop_assert_eq!(p.owner_of(hit.phys).host(), Some(hit.id));
            }
            prop_assert_eq!(got.guest_hits().collect::<BTreeSet<_>>(), want_guest.clone());
            prop_assert_eq!(got.guest_dr6.is_some(), !want_guest.is_empty());
            prop_assert!(got.vmm_events.is_empty());
        }
    }

    /// Any physical DR6 whatsoever: every Bn ends up somewhere, each exactly once.
    #[test]
    fn attribution_never_swallows_a_hit(
        policy in policy(),
        hosts in hosts(),
        guests in guests(),
        raw in any::<u32>(),
        ctx in any::<(bool, bool, bool)>(),
    ) {
        let plan = plan(policy, &hosts, &guests);
        let dr6 = Dr6::from_bits(u64::from(raw)).normalized();
        let ctx = AttributionContext { host_single_step: ctx.0, host_gd_trap: ctx.1, guest_gd: ctx.2 };
        for p in &plan.vcpus {
            let got = attribute(dr6, p, ctx);
            let guest_hits: BTreeSet<Slot> = got.guest_hits().collect();
            let mut host_count = 0;
            for phys in dr6.hit_slots() {
                match p.owner_of(phys) {
                    PhysSlot::Host(id) => {
                        host_count += 1;
                        prop_assert!(got.host_hits.iter().any(|h| h.id == id && h.phys == phys));
                    }
                    PhysSlot::Guest(virt) => prop_assert!(guest_hits.contains(&virt)),
                    PhysSlot::Shared { host, guest } => {
                        host_count += 1;
                        prop_assert!(got.host_hits.iter().any(|h| h.id == host && h.phys == phys));
                        prop_assert!(guest_hits.contains(&guest));
                    }
                    PhysSlot::Free => prop_assert!(guest_hits.contains(&phys)),
                }
            }
            prop_assert_eq!(got.host_hits.len(), host_count);
            // Non-slot bits: each lands with the VMM or the guest as the rules say.
            let guest = got.guest_dr6.unwrap_or(Dr6::INIT);
            prop_assert_eq!(guest.bs(), dr6.bs() && !ctx.host_single_step);
            prop_assert_eq!(guest.bd(), dr6.bd() && (!ctx.host_gd_trap || ctx.guest_gd));
            prop_assert_eq!((guest.bt(), guest.rtm(), guest.bld()), (dr6.bt(), dr6.rtm(), dr6.bld()));
            prop_assert_eq!(got.guest_dr6.is_some(), guest.has_events());
        }
    }

    /// Deny refuses exactly when the new breakpoint would take a guest slot somewhere; when it
    /// accepts, the new breakpoint is armed on every covered vCPU whose guest uses slots.
    #[test]
    fn deny_registration_matches_the_reference(
        hosts in hosts(),
        guests in guests(),
        new_spec in spec(),
        new_scope in scope(),
    ) {
        let new = HostBreakpoint { id: HostBpId(1000), spec: new_spec, scope: new_scope };
        let exists = match new.scope {
            Scope::Vm => true,
            Scope::Vcpu(v) => (v.0 as usize) < guests.len(),
        };
        let starved = vcpu_ids(&guests).zip(&guests).find(|(vcpu, guest)| {
            let g = claimed_non_io(guest).len();
            new.scope.covers(*vcpu) && g > 0 && hosts_covering(&hosts, *vcpu).len() + 1 + g > 4
        });
        for policy in Policy::ALL {
            let got = check_registration(policy, &hosts, &new, &guests);
            if !exists {
                let is_no_such_vcpu = matches!(got, Err(ArbiterError::NoSuchVcpu { .. }));
                prop_assert!(is_no_such_vcpu, "{:?}", got);
                continue;
            }
            match (policy, starved) {
                (Policy::Deny, Some((vcpu, _))) => {
                    let is_starve = matches!(got, Err(ArbiterError::WouldStarveGuest { vcpu: v, .. }) if v == vcpu);
                    prop_assert!(is_starve, "{:?}", got);
                }
                _ => prop_assert_eq!(&got, &Ok(())),
            }
        }
        if exists && starved.is_none() {
            let mut all = hosts.clone();
            all.push(new);
            let plan = plan(Policy::Deny, &all, &guests);
            for (vcpu, guest) in vcpu_ids(&guests).zip(&guests) {
                if new.scope.covers(vcpu) && !claimed_non_io(guest).is_empty() {
                    prop_assert!(plan.host_states[&new.id].armed.contains_key(&vcpu));
                }
            }
        }
        // A duplicate id is refused under every policy.
        if let Some(first) = hosts.first() {
            let dup = HostBreakpoint { id: first.id, ..new };
            for policy in Policy::ALL {
                prop_assert_eq!(
                    check_registration(policy, &hosts, &dup, &guests),
                    Err(ArbiterError::DuplicateId { id: first.id })
                );
            }
        }
    }
}
