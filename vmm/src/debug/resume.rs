//! The decision, per hit, whether an exec breakpoint is resumed by emulating its instruction
//! ([`super::emulate`]) instead of stepping over it, and the emulation itself. Everything here
//! reads what arrives with the exit (`KVM_SYNC_X86_REGS`, `_SREGS`, `_EVENTS`) and guest
//! memory, and writes RIP back through the sync-regs dirty bits: no ioctl.
//!
//! It emulates only where the processor would have done exactly the same and nothing else:
//! - **64-bit supervisor code with paging** (EFER.LMA, CS.L, CPL 0): the decoder runs in 64-bit
//!   mode, and the page walk is the supervisor's.
//! - **RFLAGS.TF clear**: with TF the instruction would end in a single-step #DB for the
//!   guest; stepping it lets KVM deliver that. **RF clear**: with RF the guest is re-executing
//!   after its own #DB handler (the RF rule), which the step-over handles.
//! - **No interrupt shadow** (`events.interrupt.shadow`, STI or MOV SS): the shadow covers
//!   exactly the next instruction. Emulating that instruction leaves KVM's shadow state set, so
//!   it would cover the instruction after it too: after `sti; nop; cli` an interrupt pending
//!   at the `nop` would never be taken. Stepping lets the shadow end where it should.
//! - **No event being delivered** (an exception, NMI or interrupt already injected or pending
//!   in KVM): it must be delivered before the instruction runs.
//! - **No guest breakpoint that the instruction would trip**: an enabled guest exec breakpoint
//!   at the same address (on hosts that check the guest's DR7 apart from the host's, the host's
//!   exit comes first, and the guest's #DB must still happen), or a data breakpoint, the
//!   guest's or the host's, on the bytes a `push` stores.
//! - **Memory that is plain RAM, reached without changing the page tables** (A and D already
//!   set; see [`crate::guest_paging::page_walk`]), the instruction and the store each within one page, and
//!   no page watch on the store's page (its write must trap to the page engine).
//! - **`endbr64` with CET off** (CR4.CET): with indirect-branch tracking on, it also ends the
//!   tracker's wait, which the VMM cannot do.
//!
//! The decision per address is cached with the instruction's bytes, which are compared again at
//! every hit (a memory read, no ioctl): code that the guest patches (ftrace turning the NOP into
//! a call) is decoded afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use drvisor_debug::{Dr7, DrKind, GuestDrFile, Slot, VcpuPlan};
use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress};

use super::emulate::{self, Emulable};
use super::kvm_vcpu::{DebugVcpu, Result};
use crate::guest_paging::bits::{CR0_PG, EFER_LMA};
use crate::guest_paging::page_walk::{self, Access};

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_AC: u64 = 1 << 18;
const CR4_CET: u64 = 1 << 23;
/// The longest x86 instruction.
const MAX_INSN: usize = 15;

/// What one address decoded to, and the bytes it was decoded from.
struct Cached {
    bytes: [u8; MAX_INSN],
    /// How many of `bytes` decide: the instruction's length, or all that were read.
    len: usize,
    what: Option<Emulable>,
}

/// One vCPU's emulation decisions, cached per address.
#[derive(Default)]
pub struct Emulator {
    cache: HashMap<u64, Cached>,
}

impl Emulator {
    /// Emulates the instruction at `regs.rip` if that is exact (see the module doc), commits the
    /// registers through the sync-regs dirty bits and returns `true`. `false`: nothing changed,
    /// step over it. `guest` must be the guest's DR file as of this exit.
    pub fn try_emulate(
        &mut self,
        vcpu: &impl DebugVcpu,
        regs: &mut kvm_regs,
        guest: &GuestDrFile,
        plan: &VcpuPlan,
    ) -> Result<bool> {
        if regs.rflags & (RFLAGS_TF | RFLAGS_RF) != 0 {
            return Ok(false);
        }
        let (Some(sregs), Some(events), Some(mem)) = (vcpu.sregs(), vcpu.events(), vcpu.memory())
        else {
            return Ok(false);
        };
        let long_supervisor = sregs.efer & EFER_LMA != 0
            && sregs.cr0 & CR0_PG != 0
            && sregs.cs.l == 1
            // CPL: KVM takes it from SS.DPL (VMX) or its own copy (SVM, kept equal to it).
            && sregs.cs.dpl == 0
            && sregs.ss.dpl == 0;
        let quiet = events.interrupt.shadow == 0
            && events.interrupt.injected == 0
            && events.exception.injected == 0
            && events.exception.pending == 0
            && events.nmi.injected == 0;
        if !long_supervisor || !quiet {
            return Ok(false);
        }
        let rip = regs.rip;
        let Some(code) = page_walk::translate(mem, sregs.cr3, sregs.cr4, rip, Access::Fetch) else {
            return Ok(false);
        };
        let mut bytes = [0u8; MAX_INSN];
        let on_page = MAX_INSN.min(0x1000 - (rip & 0xfff) as usize);
        if mem
            .read_slice(&mut bytes[..on_page], GuestAddress(code))
            .is_err()
        {
            return Ok(false);
        }
        let Some(insn) = self.decision(rip, &bytes[..on_page]) else {
            return Ok(false);
        };
        if matches!(insn, Emulable::Skip { endbr: true, .. }) && sregs.cr4 & CR4_CET != 0 {
            return Ok(false);
        }
        if guest_exec_at(guest.dr7, &guest.dr, rip) {
            return Ok(false);
        }
        let mut after = *regs;
        if let Some(store) = insn.apply(&mut after) {
            let (start, end) = (store.gva, store.gva.wrapping_add(8));
            if start & 0xfff > 0xff8
                || data_watch_overlaps(guest.dr7, &guest.dr, start, end)
                || data_watch_overlaps(plan.dr7, &plan.dr, start, end)
            {
                return Ok(false);
            }
            let ac = regs.rflags & RFLAGS_AC != 0;
            let Some(gpa) =
                page_walk::translate(mem, sregs.cr3, sregs.cr4, start, Access::Write { ac })
            else {
                return Ok(false);
            };
            if !vcpu.plain_ram(gpa) || mem.write_obj(store.value, GuestAddress(gpa)).is_err() {
                return Ok(false);
            }
        }
        vcpu.set_regs(&after)?;
        *regs = after;
        Ok(true)
    }

    /// The cached decision for `rip`, decoded again if the bytes there changed.
    fn decision(&mut self, rip: u64, bytes: &[u8]) -> Option<Emulable> {
        if let Some(c) = self.cache.get(&rip) {
            if bytes.get(..c.len) == Some(&c.bytes[..c.len]) {
                return c.what;
            }
        }
        let what = emulate::decode(bytes, rip);
        let len = what.map_or(bytes.len(), |e| usize::from(e.len()));
        let mut cached = Cached {
            bytes: [0; MAX_INSN],
            len,
            what,
        };
        cached.bytes[..len].copy_from_slice(&bytes[..len]);
        self.cache.insert(rip, cached);
        what
    }
}

/// Whether an enabled exec breakpoint of this DR file is at `rip`.
pub(super) fn guest_exec_at(dr7: Dr7, dr: &[u64; 4], rip: u64) -> bool {
    Slot::ALL
        .into_iter()
        .any(|s| dr7.enabled(s) && dr7.rw(s) == DrKind::Exec && dr[s.index()] == rip)
}

/// Whether an enabled data breakpoint of this DR file covers a byte of `start..end`.
fn data_watch_overlaps(dr7: Dr7, dr: &[u64; 4], start: u64, end: u64) -> bool {
    Slot::ALL.into_iter().any(|s| {
        if !dr7.enabled(s) || dr7.rw(s) == DrKind::Exec {
            return false;
        }
        let len = u64::from(dr7.len(s).bytes());
        // The processor matches the address with its low bits masked to the length.
        let base = dr[s.index()] & !(len - 1);
        base < end && start < base + len
    })
}

/// How exec breakpoints were resumed past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeCounts {
    /// With RF, set through the sync-regs dirty bits.
    pub rf: u64,
    /// By emulating the instruction.
    pub emulated: u64,
    /// By a step-over.
    pub stepped: u64,
}

/// [`ResumeCounts`] summed over vCPUs.
#[derive(Default)]
pub struct ResumeTally {
    rf: AtomicU64,
    emulated: AtomicU64,
    stepped: AtomicU64,
}

impl ResumeTally {
    /// Adds one vCPU's counts.
    pub fn add(&self, c: ResumeCounts) {
        self.rf.fetch_add(c.rf, Ordering::Relaxed);
        self.emulated.fetch_add(c.emulated, Ordering::Relaxed);
        self.stepped.fetch_add(c.stepped, Ordering::Relaxed);
    }

    /// The sums.
    pub fn get(&self) -> ResumeCounts {
        ResumeCounts {
            rf: self.rf.load(Ordering::Relaxed),
            emulated: self.emulated.load(Ordering::Relaxed),
            stepped: self.stepped.load(Ordering::Relaxed),
        }
    }
}
