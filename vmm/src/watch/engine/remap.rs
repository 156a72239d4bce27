//! Armed guest-virtual watches whose bytes the guest maps elsewhere later.
//!
//! A guest-virtual watch is translated when it arms. A guest that then points those addresses
//! at other pages (a kernel replacing its early mappings, a test re-mapping a buffer) would
//! leave the watch on pages that the address no longer reaches. So drvisor walks the guest's
//! page tables again, in the VMM, from guest RAM: no ioctl, and no vCPU taken out of the guest
//! for the look.
//! - at every debug and page exit, with the registers that arrive with the exit, and
//! - from the timer thread (every [`super::waiting::TIMER_EVERY`]), with those of the last such
//!   exit;
//!
//! and a watch whose bytes now map to other RAM moves there (the vCPUs leave the guest only
//! for the move), and the listener hears of it.
//!
//! What is left alone, and why:
//! - A walk that finds any of the bytes unmapped moves nothing. Under another address space's
//!   CR3 (a user address while another process runs, a kernel address under a KPTI user CR3)
//!   that is expected.
//! - A lower-half (user) address is followed only under the CR3 it was first seen mapped
//!   under, for the same reason.
//! - 32-bit and PAE paging are not walked.
//! - A move that cannot be made (the new bytes are not RAM, or a read watch would hide code)
//!   leaves the watch where it was for good, with that reason in its state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use drvisor_debug::HostBpId;
use vm_memory::GuestMemory;

use super::{MappingChange, PageWatchEngine, State};
use crate::guest_paging::cpu_structures;
use crate::guest_paging::SystemRegisters;
use crate::watch::translate::physical_runs;

/// Guest-physical pieces of a watch's bytes.
type Ranges = Vec<(u64, u64)>;

/// No CR3 seen yet.
const UNSET: u64 = u64::MAX;
/// CR3's page-table base (bits 12-51), without the PCID or the flags.
const CR3_BASE: u64 = 0x000f_ffff_ffff_f000;
use crate::guest_paging::bits::CR0_PG;

/// What following one guest-virtual watch needs.
pub(super) struct Followed {
    gva: u64,
    len: u64,
    /// For a lower-half address: the CR3 base it was first seen mapped under.
    home_cr3: AtomicU64,
    /// Why it is no longer followed.
    unfollowed: OnceLock<String>,
}

impl Followed {
    /// A watch on `[gva, gva + len)`.
    pub(super) fn new(gva: u64, len: u64) -> Followed {
        Followed {
            gva,
            len,
            home_cr3: AtomicU64::new(UNSET),
            unfollowed: OnceLock::new(),
        }
    }

    /// Why it is no longer followed, if so.
    pub(super) fn unfollowed(&self) -> Option<String> {
        self.unfollowed.get().cloned()
    }

    /// Where its bytes map now under `regs`, if that is somewhere other than `armed` and the
    /// move is one to make (see the module notes).
    fn moved_to(
        &self,
        mem: &impl GuestMemory,
        regs: &SystemRegisters,
        armed: &[(u64, u64)],
    ) -> Option<Ranges> {
        if self.unfollowed.get().is_some() {
            return None;
        }
        let now = physical_runs(self.gva, self.len, |va| {
            cpu_structures::physical(mem, regs, va).ok_or(())
        })
        .ok()?;
        let paging = regs.cr0 & CR0_PG != 0;
        if self.gva >> 63 == 0 && paging {
            let cr3 = regs.cr3 & CR3_BASE;
            match self.home_cr3.load(Ordering::Relaxed) {
                UNSET => {
                    if now == armed {
                        self.home_cr3.store(cr3, Ordering::Relaxed);
                    }
                    return None;
                }
                home if home != cr3 => return None,
                _ => {}
            }
        }
        (now != armed).then_some(now)
    }
}

/// The engine's state for following.
#[derive(Default)]
pub(super) struct Remaps {
    /// Whether any armed watch is guest-virtual.
    any: AtomicBool,
    /// The registers of the last debug or page exit, for the timer.
    last: Mutex<Option<SystemRegisters>>,
    /// Held by the one thread following; others skip (it does their work).
    following: Mutex<()>,
}

impl Remaps {
    /// Notes whether `state` has a guest-virtual watch.
    pub(super) fn count(&self, state: &State) {
        let any = state.watches.values().any(|w| w.virt.is_some());
        self.any.store(any, Ordering::SeqCst);
    }
}

impl PageWatchEngine {
    /// A vCPU's debug or page exit with its system registers: follows the guest-virtual watches
    /// the guest maps elsewhere now. One load when there is none.
    pub fn follow_remaps_at_exit(&self, regs: &SystemRegisters) {
        if !self.remaps.any.load(Ordering::Relaxed) {
            return;
        }
        *self.remaps.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(*regs);
        self.follow_remaps(regs);
    }

    /// The timer's look, with the registers of the last debug or page exit.
    pub(super) fn follow_remaps_from_timer(&self) {
        if !self.remaps.any.load(Ordering::Relaxed) {
            return;
        }
        let last = *self.remaps.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(regs) = last {
            self.follow_remaps(&regs);
        }
    }

    fn follow_remaps(&self, regs: &SystemRegisters) {
        let Ok(_one) = self.remaps.following.try_lock() else {
            return;
        };
        let moves: Vec<(HostBpId, Ranges, Ranges)> = {
            let state = self.read();
            state
                .watches
                .iter()
                .filter_map(|(id, w)| {
                    let to = w.virt.as_ref()?.moved_to(&self.mem, regs, &w.ranges)?;
                    Some((*id, w.ranges.clone(), to))
                })
                .collect()
        };
        for (id, from, to) in moves {
            match self.move_watch(id, to.clone()) {
                // Already there, or removed since the look.
                Ok(false) | Err(super::Error::NoSuchWatch(_)) => {}
                Ok(true) => {
                    tracing::info!(
                        "page watch #{} follows the guest, which maps its bytes at {to:#x?} now (was {from:#x?})",
                        id.0
                    );
                    self.tell(id, MappingChange::Remapped);
                }
                Err(e) => {
                    let why = format!(
                        "the guest maps its bytes at {to:#x?} now, where it cannot follow: {e}"
                    );
                    tracing::warn!("page watch #{} stays at {from:#x?}: {why}", id.0);
                    if let Some(virt) = self.read().watches.get(&id).and_then(|w| w.virt.as_ref()) {
                        let _ = virt.unfollowed.set(why);
                    }
                    self.tell(id, MappingChange::LeftBehind);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use crate::guest_paging::bits::EFER_LMA;
    const P: u64 = 0x3;

    /// PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000, whose entry 5 maps
    /// `0x5000` and entry 6 maps `0x6000` to `page5` and `page6`. PML4 entry 511 aliases
    /// entry 0, so `0xffff_ff80_0000_5000` maps the same.
    fn ram(page5: u64, page6: u64) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).unwrap();
        w(0x1000, 0x2000 | P);
        w(0x1000 + 511 * 8, 0x2000 | P);
        w(0x2000, 0x3000 | P);
        w(0x3000, 0x4000 | P);
        w(0x4000 + 5 * 8, page5 | P);
        w(0x4000 + 6 * 8, page6 | P);
        mem
    }

    fn regs(cr3: u64) -> SystemRegisters {
        SystemRegisters {
            cr0: CR0_PG | 1,
            cr3,
            efer: EFER_LMA,
            ..Default::default()
        }
    }

    const HIGH: u64 = 0xffff_ff80_0000_5ff8;

    #[test]
    fn a_kernel_address_moves_where_the_guest_maps_it_now() {
        let watch = Followed::new(HIGH, 16);
        let armed = [(0x9ff8, 16)];
        assert_eq!(
            watch.moved_to(&ram(0x9000, 0xa000), &regs(0x1000), &armed),
            None
        );
        assert_eq!(
            watch.moved_to(&ram(0x9000, 0xc000), &regs(0x1000), &armed),
            Some(vec![(0x9ff8, 8), (0xc000, 8)]),
            "the second page moved"
        );
    }

    #[test]
    fn unmapped_bytes_move_nothing() {
        let watch = Followed::new(HIGH, 16);
        let mem = ram(0xb000, 0);
        mem.write_obj(0u64, GuestAddress(0x4000 + 6 * 8)).unwrap();
        assert_eq!(watch.moved_to(&mem, &regs(0x1000), &[(0x9ff8, 16)]), None);
    }

    #[test]
    fn a_user_address_moves_only_under_the_cr3_it_was_seen_under() {
        let watch = Followed::new(0x5010, 8);
        let armed = [(0x9010, 8)];
        let moved = ram(0xb000, 0);
        // Not seen under any CR3 yet: nothing moves, even where it maps elsewhere.
        assert_eq!(watch.moved_to(&moved, &regs(0x1000), &armed), None);
        // Seen where it was armed, under 0x1000 (with a PCID: the base is what counts).
        assert_eq!(
            watch.moved_to(&ram(0x9000, 0), &regs(0x1000 | 7), &armed),
            None
        );
        // A second address space at 0x0 (same tables here, another process in a real guest).
        let mem = ram(0xb000, 0);
        mem.write_obj(0x2000u64 | P, GuestAddress(0)).unwrap();
        assert_eq!(watch.moved_to(&mem, &regs(0), &armed), None);
        assert_eq!(
            watch.moved_to(&moved, &regs(0x1000), &armed),
            Some(vec![(0xb010, 8)])
        );
    }

    #[test]
    fn nothing_moves_once_it_cannot_follow() {
        let watch = Followed::new(HIGH, 8);
        watch.unfollowed.set("no".into()).unwrap();
        assert_eq!(
            watch.moved_to(&ram(0xb000, 0), &regs(0x1000), &[(0x9ff8, 8)]),
            None
        );
    }
}
