//! Telling gdb, while the guest runs, that one of its breakpoints lost its slot.
//!
//! gdb believes an inserted breakpoint stops it. A breakpoint that was armed when gdb inserted
//! it can lose its slot later (the guest's own under `guest-first`, or a re-plan); it is then
//! pending, and would silently not fire. The plan listener here sees every plan change and
//! notes each of gdb's breakpoints that goes from armed to pending or back; the event loop
//! sends the notes to gdb as console output (`O` packets) while the guest runs, which gdb
//! prints at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use drvisor_debug::{HostBpId, Plan};

use crate::control::Session;

/// The watch, shared by the stub's target and the plan listener.
#[derive(Clone, Default)]
pub struct Evictions(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    /// gdb's breakpoints by id: what gdb calls it, and whether it is pending now.
    watched: BTreeMap<u32, (String, bool)>,
    /// Notes not yet sent to gdb.
    notes: Vec<String>,
}

impl Evictions {
    /// A watch fed by every plan change of `session` from now on. One per stub: the listener
    /// lives as long as the session.
    pub fn install(session: &Session) -> Self {
        let evictions = Evictions::default();
        let state = evictions.clone();
        session.on_plan_change(Arc::new(move |plan: &Plan| state.seen(plan)));
        evictions
    }

    /// Watches breakpoint `id`, armed now, which gdb calls `what`.
    pub fn watch(&self, id: u32, what: String) {
        self.lock().watched.insert(id, (what, false));
    }

    /// Forgets every breakpoint and note: a new gdb.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    /// The notes gathered since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().notes)
    }

    fn seen(&self, plan: &Plan) {
        let mut state = self.lock();
        let State { watched, notes } = &mut *state;
        // Removed ones (gdb's own removal, or the refusal of one that could not be armed)
        // are no longer in the plan.
        watched.retain(|id, _| plan.host_state(HostBpId(*id)).is_some());
        for (id, (what, pending)) in watched.iter_mut() {
            let now = plan
                .host_state(HostBpId(*id))
                .is_some_and(|s| !s.pending.is_empty());
            if now != *pending {
                *pending = now;
                notes.push(note(*id, what, now));
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn note(id: u32, what: &str, pending: bool) -> String {
    if pending {
        format!(
            "drvisor: your {what} (breakpoint #{id}) lost its debug-register slot and does not \
             fire until it gets one back (`monitor plan` shows who holds the slots)\n"
        )
    } else {
        format!("drvisor: your {what} (breakpoint #{id}) has its slot again and fires\n")
    }
}

/// `text` as an `O` packet: console output gdb prints while the target runs.
pub fn console_packet(text: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(1 + 2 * text.len());
    data.push(b'O');
    for b in text.bytes() {
        data.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    super::buffered_conn::reply(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_packet_is_hex_framed() {
        assert_eq!(console_packet("hi\n"), b"$O68690a#bd".to_vec());
    }

    #[test]
    fn a_note_names_the_breakpoint_and_says_what_changed() {
        assert!(note(3, "hbreak at 0x1000", true).contains("#3) lost its debug-register slot"));
        assert!(note(3, "hbreak at 0x1000", false).contains("has its slot again"));
    }
}
