//! Evict and migrate: a host watch in a hardware slot that the guest's own DR7 evicts (under
//! `guest-first`) moves to the page engine, and moves back when the slot frees. While it is
//! evicted, a page-protection shadow catches its accesses; the shadow reports under the
//! watch's own id, so the user sees one watch whose engine changed.
//!
//! No hit is lost or doubled across a move: the shadow is armed before the slot is given up
//! (the plan that evicts it runs the migration before the evicting vCPU re-enters the guest),
//! and while both exist every access exits to the page engine before the store executes, so
//! the hardware slot never sees it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use drvisor_debug::{HostBpId, Plan};

use super::{PageWatchEngine, PageWatchRequest};
use crate::debug::{DebugController, HitContext};

/// A hardware watch that may move.
struct Movable {
    /// How to arm its page shadow.
    request: PageWatchRequest,
    /// The shadow, while evicted.
    shadow: Option<HostBpId>,
}

/// The watches that may move, by their hardware id.
#[derive(Default)]
pub struct Migrations {
    movable: Mutex<BTreeMap<HostBpId, Movable>>,
}

impl Migrations {
    /// Lets hardware watch `id` move to the page engine as `request` when evicted. `counts`
    /// keeps the watch's hit count, so a move does not restart it.
    pub fn track(&self, id: HostBpId, mut request: PageWatchRequest, counts: Arc<DebugController>) {
        let on_hit = request.on_hit.clone();
        let target = counts.hit_target(id);
        // The shadow's hits are the watch's hits: same id, same callback, same count.
        request.on_hit = Arc::new(move |hit: &HitContext| {
            let mut hit = hit.clone();
            hit.id = id;
            if let Some(target) = &target {
                hit.count = target.count_hit();
            }
            on_hit(&hit)
        });
        request.label = format!("{} (migrated from its hardware slot)", request.label);
        self.movable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Movable {
                    request,
                    shadow: None,
                },
            );
    }

    /// The page shadow of hardware watch `id`, while it is evicted.
    pub fn shadow_of(&self, id: HostBpId) -> Option<HostBpId> {
        self.movable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .and_then(|m| m.shadow)
    }

    /// Brings every movable watch in line with `plan`.
    pub fn follow(&self, plan: &Plan, pages: &PageWatchEngine) {
        let mut movable = self.movable.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        for (id, m) in movable.iter_mut() {
            let evicted = match plan.host_state(*id) {
                None => {
                    gone.push(*id);
                    false
                }
                Some(state) => !state.pending.is_empty(),
            };
            match (evicted, m.shadow) {
                (true, None) => match pages.add(m.request.clone()) {
                    Ok(shadow) => {
                        tracing::info!(
                            "watch {} evicted from its slot: moved to the page engine as #{}",
                            id.0,
                            shadow.0
                        );
                        m.shadow = Some(shadow);
                    }
                    Err(e) => tracing::warn!(
                        "watch {} evicted and cannot move to the page engine: {e}",
                        id.0
                    ),
                },
                (false, Some(shadow)) => {
                    if let Err(e) = pages.remove(shadow) {
                        tracing::warn!("removing the page shadow of watch {}: {e}", id.0);
                    }
                    tracing::info!("watch {} back in a hardware slot", id.0);
                    m.shadow = None;
                }
                _ => {}
            }
        }
        for id in gone {
            if let Some(Movable {
                shadow: Some(s), ..
            }) = movable.remove(&id)
            {
                let _ = pages.remove(s);
            }
        }
    }
}
