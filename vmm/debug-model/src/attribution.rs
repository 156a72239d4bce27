//! Splitting one hardware DR6 between the host, the VMM itself and the guest.
//!
//! A `#DB` exit carries the physical DR6. Several Bn bits may be set together with BS or BD
//! (SDM 17.2.3; the 2009 review: "it's possible to have both the Single-Step bit and a
//! Debug-Trap bit set at the same time"), so every bit is looked at and none stops the others.
//! Each bit goes to exactly one owner, and a bit nobody owns goes back to the guest: it is
//! never swallowed.

use std::fmt;

use serde::Serialize;

use crate::{Dr6, DrKind, HostBpId, PhysSlot, Slot, VcpuPlan};

/// What the VMM was doing when the `#DB` exit came, for the bits that are not slot hits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct AttributionContext {
    /// The VMM itself is single-stepping this vCPU (`KVM_GUESTDBG_SINGLESTEP`): a step-over of an
    /// exec breakpoint, or a debugger's step.
    pub host_single_step: bool,
    /// The VMM set GD in the physical DR7 to trap the guest's MOV DR (SDM 17.2.4).
    pub host_gd_trap: bool,
    /// The guest's own DR7.GD, as its DR file holds it.
    pub guest_gd: bool,
}

/// A host breakpoint that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HostHit {
    /// Which breakpoint.
    pub id: HostBpId,
    /// The physical slot that reported it.
    pub phys: Slot,
    /// The slot's RW field: [`DrKind::Exec`] is a fault (the instruction has not run, resuming
    /// needs RF or a step-over), the data kinds are traps (SDM 17.3.1).
    pub kind: DrKind,
}

/// A debug event that belongs to the VMM itself rather than to a breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmmEvent {
    /// BS while the VMM was single-stepping.
    SingleStep,
    /// BD while the VMM traps MOV DR through the physical DR7.GD: the guest tried to access a
    /// debug register and the VMM must emulate or re-sync it.
    DrAccess,
}

/// Who gets what from one DR6.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// Host breakpoints that fired, in ascending physical slot order.
    pub host_hits: Vec<HostHit>,
    /// Events for the VMM itself, BS before BD.
    pub vmm_events: Vec<VmmEvent>,
    /// `Some`: inject #DB into the guest with this DR6, in the guest's own slot numbering
    /// (built from [`Dr6::INIT`]; [`Dr6::exception_payload`] gives KVM's payload form).
    /// `None`: nothing for the guest.
    pub guest_dr6: Option<Dr6>,
}

impl Attribution {
    /// Whether the DR6 reported nothing at all.
    pub fn is_empty(&self) -> bool {
        self.host_hits.is_empty() && self.vmm_events.is_empty() && self.guest_dr6.is_none()
    }

    /// The guest virtual slots reported to the guest.
    pub fn guest_hits(&self) -> impl Iterator<Item = Slot> {
        self.guest_dr6.unwrap_or(Dr6::INIT).hit_slots()
    }
}

/// `host #1 exec@DR3, vmm single-step, guest 0x... [B1]`, or `nothing`.
impl fmt::Display for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for hit in &self.host_hits {
            parts.push(format!("host {} {}@{}", hit.id, hit.kind, hit.phys));
        }
        for event in &self.vmm_events {
            parts.push(match event {
                VmmEvent::SingleStep => "vmm single-step".to_owned(),
                VmmEvent::DrAccess => "vmm dr-access".to_owned(),
            });
        }
        if let Some(dr6) = self.guest_dr6 {
            parts.push(format!("guest {dr6}"));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Attributes a physical DR6 read at a `#DB` exit of the vCPU running `plan`.
///
/// Rules, applied to every bit independently:
///
/// | physical bit | goes to |
/// |---|---|
/// | Bm, slot m holds host breakpoint h | `host_hits` (h, m, its RW) |
/// | Bm, slot m holds guest virtual slot n | guest Bn (the guest's numbering) |
/// | Bm, slot m shared by host breakpoint h and guest virtual slot n | both: `host_hits` (h) and guest Bn |
/// | Bm, slot m free | guest Bm unchanged: the CPU may set Bm for a disabled slot (SDM 17.2.3), and the guest would have seen it without a VMM |
/// | BS, `host_single_step` | [`VmmEvent::SingleStep`] only: the guest did not ask for the step |
/// | BS, not `host_single_step` | guest BS (its own RFLAGS.TF) |
/// | BD, `host_gd_trap`, `guest_gd` | [`VmmEvent::DrAccess`] **and** guest BD |
/// | BD, `host_gd_trap`, not `guest_gd` | [`VmmEvent::DrAccess`] only |
/// | BD, not `host_gd_trap` | guest BD, whatever `guest_gd` says: the VMM did not set GD, so the bit is not its own, and an unowned bit is never swallowed |
/// | BT | guest BT (task switches are the guest's) |
/// | RTM, BLD (active low) | guest, same polarity (RTM debugging and bus-lock detection are the guest's features) |
///
/// The BD rule keeps the guest's own GD semantics (SDM 17.2.4): a guest that set GD expects
/// #DB with BD *instead of* its MOV DR, so the VMM both learns of the access and must not
/// perform it ([`crate::GuestDrFile::write`] refuses it with
/// [`crate::MovDrError::GeneralDetect`]); a guest that did not set GD must not see a BD it never
/// asked for. When both the VMM and the guest single-step, BS goes to the VMM.
pub fn attribute(dr6: Dr6, plan: &VcpuPlan, ctx: AttributionContext) -> Attribution {
    let mut host_hits = Vec::new();
    let mut vmm_events = Vec::new();
    let mut guest = Dr6::INIT;
    for phys in dr6.hit_slots() {
        match plan.owner_of(phys) {
            PhysSlot::Host(id) => host_hits.push(HostHit {
                id,
                phys,
                kind: plan.dr7.rw(phys),
            }),
            PhysSlot::Guest(virt) => guest = guest.with_hit(virt, true),
            PhysSlot::Shared { host, guest: virt } => {
                host_hits.push(HostHit {
                    id: host,
                    phys,
                    kind: plan.dr7.rw(phys),
                });
                guest = guest.with_hit(virt, true);
            }
            PhysSlot::Free => guest = guest.with_hit(phys, true),
        }
    }
    if dr6.bs() {
        if ctx.host_single_step {
            vmm_events.push(VmmEvent::SingleStep);
        } else {
            guest = guest.with_bs(true);
        }
    }
    if dr6.bd() {
        if ctx.host_gd_trap {
            vmm_events.push(VmmEvent::DrAccess);
        }
        if !ctx.host_gd_trap || ctx.guest_gd {
            guest = guest.with_bd(true);
        }
    }
    guest = guest
        .with_bt(dr6.bt())
        .with_rtm(dr6.rtm())
        .with_bld(dr6.bld());
    Attribution {
        host_hits,
        vmm_events,
        guest_dr6: guest.has_events().then_some(guest),
    }
}

/// One breakpoint firing, named by its owner: the input of [`physical_dr6_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hit {
    /// A host breakpoint.
    Host(HostBpId),
    /// A guest virtual slot.
    Guest(Slot),
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hit::Host(id) => write!(f, "host breakpoint {id}"),
            Hit::Guest(virt) => write!(f, "guest {virt}"),
        }
    }
}

/// Why [`physical_dr6_for`] cannot build a DR6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributionError {
    /// The hit names something the plan does not arm on this vCPU.
    #[error("{0} is not armed in this vCPU's plan, so no hardware slot can report it; re-plan or pick an armed one")]
    NotArmed(Hit),
}

/// The physical DR6 the CPU would report if exactly `hits` fired on the vCPU running `plan`:
/// [`Dr6::INIT`] with the Bn bit of each hit's physical slot. The inverse of [`attribute`]'s
/// slot rules, used by the round-trip tests and to fabricate `KVM_EXIT_DEBUG` exits on hosts
/// that cannot deliver a real one.
pub fn physical_dr6_for(hits: &[Hit], plan: &VcpuPlan) -> Result<Dr6, AttributionError> {
    hits.iter().try_fold(Dr6::INIT, |dr6, hit| {
        let phys = match *hit {
            Hit::Host(id) => plan.phys_of_host(id),
            Hit::Guest(virt) => plan.phys_of_guest(virt),
        };
        match phys {
            Some(phys) => Ok(dr6.with_hit(phys, true)),
            None => Err(AttributionError::NotArmed(*hit)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan, BreakSpec, Dr7, DrLen, GuestDrFile, HostBreakpoint, Policy, Scope};

    use Slot as S;

    /// DR0 = guest virtual DR3 (write/4), DR1 free, DR2 = host #2 (write/8), DR3 = host #1
    /// (exec).
    fn fixture() -> VcpuPlan {
        let hosts = [
            HostBreakpoint {
                id: HostBpId(1),
                spec: BreakSpec::exec(0xffff_ffff_8100_0000).expect("valid"),
                scope: Scope::Vm,
            },
            HostBreakpoint {
                id: HostBpId(2),
                spec: BreakSpec::new(0x8000, crate::BreakKind::Write, 8).expect("valid"),
                scope: Scope::Vm,
            },
        ];
        let mut guest = GuestDrFile::default();
        guest.dr[3] = 0x1000;
        guest.dr7 = Dr7::INIT
            .with_local(S::DR3, true)
            .with_rw(S::DR3, DrKind::Write)
            .with_len(S::DR3, DrLen::Four);
        let plan = plan(Policy::HostFirst, &hosts, &[guest]);
        let p = plan.vcpus[0];
        assert_eq!(
            p.slots,
            [
                PhysSlot::Guest(S::DR3),
                PhysSlot::Free,
                PhysSlot::Host(HostBpId(2)),
                PhysSlot::Host(HostBpId(1)),
            ]
        );
        p
    }

    fn hit(id: u32, phys: Slot, kind: DrKind) -> HostHit {
        HostHit {
            id: HostBpId(id),
            phys,
            kind,
        }
    }

    fn guest_dr6(f: impl FnOnce(Dr6) -> Dr6) -> Option<Dr6> {
        Some(f(Dr6::INIT))
    }

    #[test]
    fn every_single_bn() {
        let plan = fixture();
        let table = [
            // guest-owned: renumbered to the guest's virtual slot
            (S::DR0, vec![], guest_dr6(|d| d.with_hit(S::DR3, true))),
            // free: passed back unchanged
            (S::DR1, vec![], guest_dr6(|d| d.with_hit(S::DR1, true))),
            // host-owned: host hit, nothing for the guest
            (S::DR2, vec![hit(2, S::DR2, DrKind::Write)], None),
            (S::DR3, vec![hit(1, S::DR3, DrKind::Exec)], None),
        ];
        for (phys, host_hits, guest) in table {
            let got = attribute(
                Dr6::INIT.with_hit(phys, true),
                &plan,
                AttributionContext::default(),
            );
            assert_eq!(
                got,
                Attribution {
                    host_hits,
                    vmm_events: vec![],
                    guest_dr6: guest
                },
                "{phys}"
            );
        }
    }

    #[test]
    fn every_bit_of_an_empty_plan_goes_back_to_the_guest() {
        let plan = VcpuPlan::empty(crate::VcpuId(0));
        for phys in S::ALL {
            let dr6 = Dr6::INIT.with_hit(phys, true);
            let got = attribute(dr6, &plan, AttributionContext::default());
            assert_eq!(got.guest_dr6, Some(dr6));
            assert!(got.host_hits.is_empty());
        }
    }

    #[test]
    fn all_bn_at_once_are_all_handled() {
        let plan = fixture();
        let dr6 = Dr6::from_bits(0xffff_0fff).with_bs(true);
        let ctx = AttributionContext {
            host_single_step: true,
            ..Default::default()
        };
        let got = attribute(dr6, &plan, ctx);
        assert_eq!(
            got.host_hits,
            [hit(2, S::DR2, DrKind::Write), hit(1, S::DR3, DrKind::Exec)]
        );
        assert_eq!(got.vmm_events, [VmmEvent::SingleStep]);
        assert_eq!(got.guest_hits().collect::<Vec<_>>(), [S::DR1, S::DR3]);
        assert_eq!(
            got.guest_dr6,
            guest_dr6(|d| d.with_hit(S::DR1, true).with_hit(S::DR3, true))
        );
    }

    #[test]
    fn host_and_guest_hit_together() {
        let plan = fixture();
        let dr6 = Dr6::INIT.with_hit(S::DR0, true).with_hit(S::DR3, true);
        let got = attribute(dr6, &plan, AttributionContext::default());
        assert_eq!(got.host_hits, [hit(1, S::DR3, DrKind::Exec)]);
        assert_eq!(got.guest_dr6, guest_dr6(|d| d.with_hit(S::DR3, true)));
    }

    #[test]
    fn bs_with_and_without_host_stepping() {
        let plan = fixture();
        let dr6 = Dr6::INIT.with_bs(true);
        let table = [
            (true, vec![VmmEvent::SingleStep], None),
            (false, vec![], guest_dr6(|d| d.with_bs(true))),
        ];
        for (host_single_step, vmm_events, guest) in table {
            let ctx = AttributionContext {
                host_single_step,
                ..Default::default()
            };
            let got = attribute(dr6, &plan, ctx);
            assert_eq!(
                got,
                Attribution {
                    host_hits: vec![],
                    vmm_events,
                    guest_dr6: guest
                }
            );
        }
    }

    #[test]
    fn bd_for_every_gd_combination() {
        let plan = fixture();
        let dr6 = Dr6::INIT.with_bd(true);
        let bd = guest_dr6(|d| d.with_bd(true));
        // (host_gd_trap, guest_gd, vmm events, guest DR6)
        let table = [
            (false, false, vec![], bd),
            (false, true, vec![], bd),
            (true, false, vec![VmmEvent::DrAccess], None),
            (true, true, vec![VmmEvent::DrAccess], bd),
        ];
        for (host_gd_trap, guest_gd, vmm_events, guest) in table {
            let ctx = AttributionContext {
                host_gd_trap,
                guest_gd,
                ..Default::default()
            };
            let got = attribute(dr6, &plan, ctx);
            assert_eq!(
                got,
                Attribution {
                    host_hits: vec![],
                    vmm_events,
                    guest_dr6: guest
                },
                "host_gd_trap={host_gd_trap} guest_gd={guest_gd}"
            );
        }
    }

    #[test]
    fn bt_rtm_and_bld_go_to_the_guest() {
        let plan = fixture();
        let table: [fn(Dr6) -> Dr6; 3] = [
            |d| d.with_bt(true),
            |d| d.with_rtm(true),
            |d| d.with_bld(true),
        ];
        for set in table {
            let ctx = AttributionContext {
                host_single_step: true,
                host_gd_trap: true,
                guest_gd: false,
            };
            let got = attribute(set(Dr6::INIT), &plan, ctx);
            assert_eq!(got.guest_dr6, Some(set(Dr6::INIT)));
            assert!(got.host_hits.is_empty() && got.vmm_events.is_empty());
        }
    }

    #[test]
    fn nothing_reported_is_empty() {
        let got = attribute(Dr6::INIT, &fixture(), AttributionContext::default());
        assert!(got.is_empty());
        assert_eq!(got.to_string(), "nothing");
    }

    #[test]
    fn display() {
        let dr6 = Dr6::INIT
            .with_hit(S::DR0, true)
            .with_hit(S::DR3, true)
            .with_bs(true);
        let ctx = AttributionContext {
            host_single_step: true,
            ..Default::default()
        };
        assert_eq!(
            attribute(dr6, &fixture(), ctx).to_string(),
            "host #1 exec@DR3, vmm single-step, guest 0xffff0ff8 [B3]"
        );
    }

    #[test]
    fn physical_dr6_for_inverts_the_slot_rules() {
        let plan = fixture();
        let table: [(&[Hit], Result<Dr6, AttributionError>); 5] = [
            (&[], Ok(Dr6::INIT)),
            (
                &[Hit::Host(HostBpId(1))],
                Ok(Dr6::INIT.with_hit(S::DR3, true)),
            ),
            (&[Hit::Guest(S::DR3)], Ok(Dr6::INIT.with_hit(S::DR0, true))),
            (
                &[Hit::Host(HostBpId(2)), Hit::Guest(S::DR3)],
                Ok(Dr6::INIT.with_hit(S::DR2, true).with_hit(S::DR0, true)),
            ),
            (
                &[Hit::Guest(S::DR0)],
                Err(AttributionError::NotArmed(Hit::Guest(S::DR0))),
            ),
        ];
        for (hits, expect) in table {
            assert_eq!(physical_dr6_for(hits, &plan), expect, "{hits:?}");
        }
        assert_eq!(
            physical_dr6_for(&[Hit::Host(HostBpId(9))], &plan),
            Err(AttributionError::NotArmed(Hit::Host(HostBpId(9))))
        );
    }
}
