//! Page-watch hits found by an MMIO exit: their callbacks, with the vCPU's registers.

use drvisor_api::{AccessEvent, BreakKind, HitAction};

use super::{Vcpu, VcpuShared};
use crate::debug::{registers, HitContext};
use crate::outcome::Outcome;
use crate::watch::{Engine, PendingPageHit};

impl Vcpu {
    /// Runs the callbacks of page-watch hits, with the registers at the access.
    pub(super) fn dispatch_page_hits(
        &mut self,
        hits: Vec<PendingPageHit>,
        shared: &VcpuShared,
    ) -> Option<Outcome> {
        let regs = match self.regs() {
            Ok(r) => r,
            Err(e) => return Some(self.vmm_error(format!("KVM_GET_REGS: {e}"))),
        };
        let mut outcome = None;
        let (first_gpa, end) = match hits.first() {
            Some(h) => (h.gpa, h.gpa + u64::from(h.len)),
            None => return None,
        };
        let previous = self.last_page_access.take();
        let ids: Vec<drvisor_debug::HostBpId> = hits.iter().map(|h| h.id).collect();
        self.last_page_access = Some((regs, end, ids));
        for hit in hits {
            let second_piece = previous
                .as_ref()
                .is_some_and(|(prev_regs, prev_end, prev_ids)| {
                    *prev_regs == regs && *prev_end == first_gpa && prev_ids.contains(&hit.id)
                });
            if second_piece {
                shared.watch.retract(hit.id);
                continue;
            }
            let context = HitContext {
                id: hit.id,
                label: hit.label.clone(),
                vcpu: self.index,
                rip: regs.rip,
                addr: hit.addr,
                kind: match hit.access {
                    drvisor_watch::Access::Write => BreakKind::Write,
                    drvisor_watch::Access::Read => BreakKind::Read,
                    drvisor_watch::Access::ReadWrite => BreakKind::ReadWrite,
                },
                engine: Engine::Page,
                slot: None,
                access: Some(AccessEvent {
                    phys_addr: hit.gpa,
                    len: hit.len,
                    write: hit.write,
                    old: hit.old,
                    value: hit.value,
                }),
                count: hit.count,
                regs: registers(&regs),
                paging: self.last_structures,
            };
            // The mark comes before the hit is published: a resume answering it is kept.
            let mark = shared.gate.resume_mark();
            match (hit.on_hit)(&context) {
                HitAction::Continue => {}
                HitAction::Pause => {
                    shared
                        .gate
                        .pause_unless_resumed_since(mark, &context.pause_reason());
                }
                HitAction::Stop => {
                    outcome.get_or_insert(Outcome::HostStop {
                        vcpu: self.index,
                        rip: regs.rip,
                        id: hit.id.0,
                    });
                }
            }
        }
        outcome
    }
}
