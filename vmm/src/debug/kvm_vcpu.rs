//! The narrow seam between the debug machinery and KVM: the few vCPU operations it needs.
//! [`KvmDebugVcpu`] implements them on a real vCPU; tests implement them on a fake to drive
//! the same dispatch code with synthetic exits.

use std::cell::Cell;
use std::ptr::NonNull;

use kvm_bindings::{
    kvm_debugregs, kvm_guest_debug, kvm_regs, kvm_run, kvm_sregs, kvm_vcpu_events,
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_SYNC_X86_REGS,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

thread_local! {
    static IOCTLS: Cell<u64> = const { Cell::new(0) };
}

/// How many ioctls the debug seam has made on the calling thread (benchmarks: ioctls per hit).
/// `KVM_RUN` is not among them.
pub fn seam_ioctls() -> u64 {
    IOCTLS.with(Cell::get)
}

fn count_ioctl() {
    IOCTLS.with(|c| c.set(c.get() + 1));
}

/// A KVM failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {source}")]
pub struct KvmError {
    /// The ioctl.
    pub op: &'static str,
    /// KVM's errno.
    pub source: kvm_ioctls::Error,
}

/// Result of a seam operation.
pub type Result<T> = std::result::Result<T, KvmError>;

/// What `KVM_SET_GUEST_DEBUG` gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// Breakpoint slots are armed (`KVM_GUESTDBG_USE_HW_BP`).
    pub hw_bp: bool,
    /// Single-step (`KVM_GUESTDBG_SINGLESTEP`).
    pub single_step: bool,
    /// Keep interrupts from being delivered during the single-step (`KVM_GUESTDBG_BLOCKIRQ`):
    /// a step that lands in an interrupt handler would end a step-over before the stepped
    /// instruction ran.
    pub block_irq: bool,
    /// DR0-DR3.
    pub dr: [u64; 4],
    /// DR7.
    pub dr7: u64,
}

impl GuestDebug {
    /// Guest debugging entirely off: the vCPU runs as if drvisor were not there.
    pub const OFF: GuestDebug = GuestDebug {
        hw_bp: false,
        single_step: false,
        block_irq: false,
        dr: [0; 4],
        dr7: 0,
    };

    /// Whether anything is on.
    pub fn is_on(&self) -> bool {
        self.hw_bp || self.single_step
    }
}

/// The vCPU operations the debug machinery needs.
pub trait DebugVcpu {
    /// `KVM_GET_REGS`.
    fn regs(&self) -> Result<kvm_regs>;
    /// `KVM_SET_REGS`.
    fn set_regs(&self, regs: &kvm_regs) -> Result<()>;
    /// `KVM_GET_DEBUGREGS`: the guest's own view.
    fn debugregs(&self) -> Result<kvm_debugregs>;
    /// `KVM_SET_DEBUGREGS`.
    fn set_debugregs(&self, regs: &kvm_debugregs) -> Result<()>;
    /// `KVM_SET_GUEST_DEBUG`.
    fn set_guest_debug(&self, dbg: &GuestDebug) -> Result<()>;
    /// Makes the guest take exception `vector` (with `error_code` where the vector has one) on
    /// its next entry. `false` if KVM already holds an event for that entry: nothing was done,
    /// try again at the next one (overwriting the event would drop it).
    fn inject_exception(&self, vector: u8, error_code: Option<u32>) -> Result<bool>;
    /// [`DebugVcpu::inject_exception`] of a #DB (vector 1), with the guest's DR6 already set.
    fn inject_db(&self) -> Result<bool> {
        self.inject_exception(1, None)
    }
    /// The guest's CR4 (`KVM_GET_SREGS`).
    fn cr4(&self) -> Result<u64>;
    /// Up to 15 bytes at guest-virtual `rip` (fewer if it does not translate).
    fn fetch(&self, rip: u64) -> Vec<u8>;
    /// The system registers as of the last exit, if they came with it (`KVM_SYNC_X86_SREGS`).
    /// `None` costs the caller its fast path, never an ioctl.
    fn sregs(&self) -> Option<kvm_sregs> {
        None
    }
    /// The pending and injected events and the interrupt shadow as of the last exit, if they
    /// came with it (`KVM_SYNC_X86_EVENTS`).
    fn events(&self) -> Option<kvm_vcpu_events> {
        None
    }
    /// Guest RAM, for reading and writing what an emulated instruction touches.
    fn memory(&self) -> Option<&GuestMemoryMmap> {
        None
    }
    /// Whether a store to guest-physical `gpa` may go straight to RAM: no page watch traps
    /// that page (its writes must exit to the page engine).
    fn plain_ram(&self, _gpa: u64) -> bool {
        false
    }
}

/// The general registers as of the last exit: from `kvm_run` when KVM copies them there
/// (`KVM_SYNC_X86_REGS`, no ioctl), else `KVM_GET_REGS`.
pub fn exit_regs(fd: &VcpuFd, synced: bool) -> std::result::Result<kvm_regs, kvm_ioctls::Error> {
    if synced {
        Ok(fd.sync_regs().regs)
    } else {
        fd.get_regs()
    }
}

/// Guest-physical pages whose accesses must exit to the VMM (the page engine's), which an
/// emulated store must therefore not write straight to RAM.
pub trait TrappedPages {
    /// Whether the page holding `gpa` is trapped.
    fn traps(&self, gpa: u64) -> bool;
}

/// A real vCPU and the guest memory it runs in.
pub struct KvmDebugVcpu<'a> {
    /// The vCPU.
    fd: &'a VcpuFd,
    /// Its `kvm_run`, for writing registers back through the sync-regs dirty bits.
    run: NonNull<kvm_run>,
    /// Guest RAM.
    mem: &'a GuestMemoryMmap,
    /// The vCPU has `KVM_SYNC_X86_REGS`, `_SREGS` and `_EVENTS` set: their state as of the last
    /// exit is in `kvm_run`, and reading or writing the registers costs no ioctl.
    synced: bool,
    /// The page engine, whose trapped pages an emulated store must not bypass.
    watch: Option<&'a dyn TrappedPages>,
}

impl<'a> KvmDebugVcpu<'a> {
    /// The seam on `fd`. With `synced`, the vCPU must have all three x86 sync-regs fields valid
    /// (`KVM_CAP_SYNC_REGS` reports 7).
    pub fn new(
        fd: &'a mut VcpuFd,
        mem: &'a GuestMemoryMmap,
        synced: bool,
        watch: Option<&'a dyn TrappedPages>,
    ) -> Self {
        let run = NonNull::from(fd.get_kvm_run());
        KvmDebugVcpu {
            fd,
            run,
            mem,
            synced,
            watch,
        }
    }
}

fn err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError { op, source }
}

impl DebugVcpu for KvmDebugVcpu<'_> {
    fn regs(&self) -> Result<kvm_regs> {
        if !self.synced {
            count_ioctl();
        }
        exit_regs(self.fd, self.synced).map_err(err("KVM_GET_REGS"))
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        if self.synced {
            // KVM loads `s.regs.regs` at the next KVM_RUN when its dirty bit is set, and clears
            // the bit (`sync_regs()` in arch/x86/kvm/x86.c): no KVM_SET_REGS needed.
            // SAFETY: `run` is this vCPU's kvm_run mapping, alive as long as `fd`, which this
            // seam borrows; only this thread touches it, and not during KVM_RUN. The x86
            // `kvm_sync_regs` is the `regs` member of the `s` union (KVM_CAP_SYNC_REGS).
            unsafe {
                let run = self.run.as_ptr();
                (*run).s.regs.regs = *regs;
                (*run).kvm_dirty_regs |= u64::from(KVM_SYNC_X86_REGS);
            }
            return Ok(());
        }
        count_ioctl();
        self.fd.set_regs(regs).map_err(err("KVM_SET_REGS"))
    }

    fn debugregs(&self) -> Result<kvm_debugregs> {
        count_ioctl();
        self.fd.get_debug_regs().map_err(err("KVM_GET_DEBUGREGS"))
    }

    fn set_debugregs(&self, regs: &kvm_debugregs) -> Result<()> {
        count_ioctl();
        self.fd
            .set_debug_regs(regs)
            .map_err(err("KVM_SET_DEBUGREGS"))
    }

    fn set_guest_debug(&self, dbg: &GuestDebug) -> Result<()> {
        count_ioctl();
        let mut control = 0;
        if dbg.is_on() {
            control |= KVM_GUESTDBG_ENABLE;
        }
        if dbg.hw_bp {
            control |= KVM_GUESTDBG_USE_HW_BP;
        }
        if dbg.single_step {
            control |= KVM_GUESTDBG_SINGLESTEP;
        }
        if dbg.single_step && dbg.block_irq {
            control |= kvm_bindings::KVM_GUESTDBG_BLOCKIRQ;
        }
        let mut arg = kvm_guest_debug {
            control,
            ..Default::default()
        };
        arg.arch.debugreg[..4].copy_from_slice(&dbg.dr);
        arg.arch.debugreg[7] = dbg.dr7;
        self.fd
            .set_guest_debug(&arg)
            .map_err(err("KVM_SET_GUEST_DEBUG"))
    }

    fn inject_exception(&self, vector: u8, error_code: Option<u32>) -> Result<bool> {
        count_ioctl();
        let mut events = self
            .fd
            .get_vcpu_events()
            .map_err(err("KVM_GET_VCPU_EVENTS"))?;
        if events.exception.injected != 0
            || events.exception.pending != 0
            || events.nmi.injected != 0
            || events.interrupt.injected != 0
        {
            return Ok(false);
        }
        // `injected` delivers it on the next entry, before the instruction at RIP, as a
        // fault-class exception is delivered on hardware (SDM 17.3.1.1 for #DB).
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = u8::from(error_code.is_some());
        events.exception.error_code = error_code.unwrap_or(0);
        events.flags = 0;
        count_ioctl();
        self.fd
            .set_vcpu_events(&events)
            .map_err(err("KVM_SET_VCPU_EVENTS"))?;
        Ok(true)
    }

    fn cr4(&self) -> Result<u64> {
        if let Some(sregs) = self.sregs() {
            return Ok(sregs.cr4);
        }
        count_ioctl();
        Ok(self.fd.get_sregs().map_err(err("KVM_GET_SREGS"))?.cr4)
    }

    fn fetch(&self, rip: u64) -> Vec<u8> {
        code_bytes(self.fd, self.mem, rip)
    }

    fn sregs(&self) -> Option<kvm_sregs> {
        self.synced.then(|| self.fd.sync_regs().sregs)
    }

    fn events(&self) -> Option<kvm_vcpu_events> {
        self.synced.then(|| self.fd.sync_regs().events)
    }

    fn memory(&self) -> Option<&GuestMemoryMmap> {
        Some(self.mem)
    }

    fn plain_ram(&self, gpa: u64) -> bool {
        !self.watch.is_some_and(|w| w.traps(gpa))
    }
}

/// Up to 15 bytes (the longest x86 instruction) of guest code at linear address `at`: as many
/// as translate, through the vCPU's page tables, to guest RAM.
pub(crate) fn code_bytes(fd: &VcpuFd, mem: &GuestMemoryMmap, at: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAX_INSN);
    for (va, len) in fetch_pieces(at) {
        count_ioctl();
        let Ok(t) = fd.translate_gva(va) else {
            break;
        };
        let mut chunk = vec![0u8; len];
        if t.valid == 0
            || mem
                .read_slice(&mut chunk, GuestAddress(t.physical_address))
                .is_err()
        {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// The pieces, one per guest page, of the longest instruction at guest-virtual `rip`: an
/// instruction may cross into the next page, which may map anywhere, so each piece is
/// translated on its own.
fn fetch_pieces(rip: u64) -> Vec<(u64, usize)> {
    let first = (PAGE - (rip & (PAGE - 1))).min(MAX_INSN as u64) as usize;
    let mut pieces = vec![(rip, first)];
    if first < MAX_INSN {
        pieces.push((rip.wrapping_add(first as u64), MAX_INSN - first));
    }
    pieces
}

/// The longest x86 instruction.
const MAX_INSN: usize = 15;
const PAGE: u64 = 4096;

#[cfg(test)]
mod tests {
    #[test]
    fn an_instruction_crossing_a_page_is_fetched_in_two_translations() {
        assert_eq!(super::fetch_pieces(0x1000), vec![(0x1000, 15)]);
        assert_eq!(super::fetch_pieces(0x1ff1), vec![(0x1ff1, 15)]);
        assert_eq!(super::fetch_pieces(0x1ffe), vec![(0x1ffe, 2), (0x2000, 13)]);
    }
}
