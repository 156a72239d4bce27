//! Reporting a guest instruction KVM could not run (`KVM_EXIT_INTERNAL_ERROR`).

use super::{Vcpu, VcpuShared};
use crate::guest_paging::bits::EFER_LMA;
use crate::outcome::Outcome;

/// `KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES` (Documentation/virt/kvm/api.rst,
/// KVM_EXIT_INTERNAL_ERROR): the exit carries the bytes KVM failed to emulate.
const EMULATION_FLAG_INSN_BYTES: u64 = 1;
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

impl Vcpu {
    /// Whether this exit's MMIO `read` of a trapped page (`gpa`, length), repeated with no
    /// progress, shows a descriptor-table load KVM cannot complete: then the run ends with the
    /// watch named, instead of spinning for ever ([`super::stuck`]).
    pub(super) fn stuck_on(
        &mut self,
        read: Option<(u64, usize)>,
        shared: &VcpuShared,
    ) -> Option<Outcome> {
        let rip = if read.is_some() { self.rip() } else { 0 };
        let key = read.map(|(gpa, len)| (rip, gpa, len));
        if !self.repeated_reads.observe(key) {
            return None;
        }
        let (gpa, _) = read?;
        let (pc, bitness) = self.code_at(rip);
        let bytes = crate::debug::code_bytes(&self.fd, &shared.mem, pc);
        let Some(insn) = super::stuck::descriptor_load(&bytes, bitness, rip) else {
            // Not a descriptor load: stuck only if the page is one the CPU itself reads (a page
            // walk KVM keeps retrying); a guest polling a watched variable goes on.
            return self.cpu_structure_watched(shared, Some(gpa & !0xfff), false);
        };
        let what = format!("the operand of `{insn}` at {gpa:#x}");
        self.watched_page(shared, rip, gpa & !0xfff, what, false, false)
    }

    /// The outcome naming the page watch that traps `page` (which holds `what`).
    fn watched_page(
        &self,
        shared: &VcpuShared,
        rip: u64,
        page: u64,
        what: String,
        triple_fault: bool,
        written: bool,
    ) -> Option<Outcome> {
        let watch = shared
            .watch
            .states()
            .into_iter()
            .find(|w| w.pages.iter().any(|(p, _)| *p == page))?;
        Some(Outcome::CpuStructureWatched {
            vcpu: self.index,
            rip,
            page,
            what,
            watch: (watch.id, watch.label),
            triple_fault,
            written,
        })
    }

    /// A read or access page watch that hides a page the CPU itself reads (page tables, GDT,
    /// IDT, as the system registers locate them now), if any, as the outcome that says so.
    /// `only` narrows the search to one page.
    fn cpu_structure_watched(
        &mut self,
        shared: &VcpuShared,
        only: Option<u64>,
        triple_fault: bool,
    ) -> Option<Outcome> {
        let rip = self.rip();
        let sregs = self.fd.get_sregs().ok()?;
        // SVM resets the vCPU at a shutdown before the exit (CS base 0xffff0000, RIP 0xfff0):
        // then the structures are where the previous exit saw them.
        let reset = sregs.cs.base == 0xffff_0000 && rip == 0xfff0;
        let regs = match self.last_structures {
            Some(last) if reset => last,
            _ => crate::guest_paging::SystemRegisters::from(&sregs),
        };
        let (page, what) = crate::guest_paging::cpu_structures::pages(&shared.mem, &regs)
            .into_iter()
            .filter(|(page, _)| only.is_none() || only == Some(*page))
            .find(|(page, _)| shared.watch.is_hole(*page))?;
        self.watched_page(shared, rip, page, what.to_string(), triple_fault, false)
    }

    /// A page watch of any kind on the stack below RSP, where the CPU pushes an exception
    /// frame (up to six quadwords in long mode) when it delivers one at the current privilege
    /// level: the CPU's own stores cannot go through the page engine, so delivery fails. As
    /// the outcome that says so. Not after an SVM shutdown reset, where RSP is gone.
    fn exception_stack_watched(&mut self, shared: &VcpuShared) -> Option<Outcome> {
        const FRAME: u64 = 6 * 8;
        let regs = self.fd.get_regs().ok()?;
        let sregs = self.fd.get_sregs().ok()?;
        if sregs.cs.base == 0xffff_0000 && regs.rip == 0xfff0 {
            return None;
        }
        let structures = crate::guest_paging::SystemRegisters::from(&sregs);
        let rsp = regs.rsp;
        // In long mode the CPU aligns RSP down to 16 bytes before it pushes the frame.
        let top = rsp & !0xf;
        [
            top.wrapping_sub(FRAME),
            top.wrapping_sub(1),
            rsp.wrapping_sub(1),
        ]
        .into_iter()
        .filter_map(|va| {
            crate::guest_paging::cpu_structures::physical(&shared.mem, &structures, va)
        })
        .map(|pa| pa & !0xfff)
        .find(|page| shared.watch.traps(*page))
        .and_then(|page| {
            let what =
                format!("the stack at rsp={rsp:#x}, where the CPU pushes an exception frame");
            self.watched_page(shared, regs.rip, page, what, true, true)
        })
    }

    /// Whether KVM reset this vCPU before reporting its shutdown (SVM does): it is at the
    /// reset vector, CS base 0xffff0000 and RIP 0xfff0.
    fn was_reset(&self, rip: u64) -> bool {
        rip == 0xfff0 && self.fd.get_sregs().is_ok_and(|s| s.cs.base == 0xffff_0000)
    }

    /// A triple fault: the guest's, unless a read or access page watch hid a page the CPU
    /// itself reads (page tables, GDT, IDT), which is the user's request.
    pub(super) fn triple_fault(&mut self, shared: &VcpuShared) -> Outcome {
        let rip = self.rip();
        if let Some(watched) = self.cpu_structure_watched(shared, None, true) {
            return watched;
        }
        if let Some(watched) = self.exception_stack_watched(shared) {
            return watched;
        }
        let trapped: Vec<String> = shared
            .watch
            .states()
            .into_iter()
            .filter(|w| w.pages.iter().any(|(p, _)| shared.watch.traps(*p)))
            .map(|w| format!("#{} {}", w.id, crate::quote::cut(&w.label)))
            .collect();
        if rip == 0xfff0 && !trapped.is_empty() {
            // SVM resets the vCPU at a shutdown, so where the tables and the stack were is gone.
            tracing::warn!(
                "KVM reset vCPU {} at the triple fault, so drvisor cannot tell which page the CPU \
                 failed to access; page watches are armed ({}): if a read or access watch covers \
                 the guest's page tables, GDT or IDT, watch it for writes (:w) instead; no page \
                 watch can cover the stack the CPU pushes exception frames on",
                self.index,
                trapped.join(", ")
            );
        }
        Outcome::TripleFault {
            vcpu: self.index,
            rip,
            was_reset: self.was_reset(rip),
            previous_exit: self.last_exit_rip,
        }
    }

    pub(super) fn internal_error(&mut self, shared: &VcpuShared) -> Outcome {
        // KVM could not complete an access of the CPU's own (a page walk, a descriptor load)
        // through a page a watch hid: the user's request, said as such.
        if let Some(watched) = self.cpu_structure_watched(shared, None, false) {
            return watched;
        }
        let mem = &shared.mem;
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so `internal` is the union member
        // KVM filled in.
        let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let data = &internal.data[..(internal.ndata as usize).min(internal.data.len())];
        let rip = self.rip();
        let mut insn: Vec<u8> = Vec::new();
        if internal.suberror == KVM_INTERNAL_ERROR_EMULATION
            && data.len() >= 3
            && data[0] & EMULATION_FLAG_INSN_BYTES != 0
        {
            // `struct kvm_run.emulation_failure`: flags, then one byte of length followed by
            // up to 15 instruction bytes.
            let packed: Vec<u8> = data[1..3].iter().flat_map(|w| w.to_le_bytes()).collect();
            let len = usize::from(packed[0]).min(15);
            insn = packed[1..=len].to_vec();
        }
        let (pc, _) = self.code_at(rip);
        if insn.is_empty() {
            insn = crate::debug::code_bytes(&self.fd, mem, pc);
        }
        // Instruction fetch from a page a read or access watch unmapped cannot work; the
        // refusal at arm time knows only the kernel image's code, so say it here too.
        let note = self
            .fd
            .translate_gva(pc)
            .ok()
            .filter(|t| t.valid != 0 && shared.watch.is_hole(t.physical_address))
            .map(|t| {
                format!(
                    "the guest executes from {:#x}, a page a read or access watch left without a memslot; remove that watch or make it a write watch",
                    t.physical_address & !0xfff
                )
            });
        Outcome::InternalError {
            vcpu: self.index,
            rip,
            suberror: internal.suberror,
            insn,
            note,
        }
    }

    /// The linear address of the instruction at `rip` in the vCPU's code segment now, and that
    /// segment's code size in bits (64-bit code where the segments cannot be read).
    fn code_at(&self, rip: u64) -> (u64, u32) {
        self.fd.get_sregs().map_or((rip, 64), |sregs| {
            (linear_rip(&sregs, rip), code_bitness(&sregs))
        })
    }
}

/// How the instruction at CS:RIP decodes: 64-bit code (EFER.LMA and CS.L), else 32-bit where
/// CS.D is set, else 16-bit (real mode, 16-bit protected mode).
fn code_bitness(sregs: &kvm_bindings::kvm_sregs) -> u32 {
    if sregs.efer & EFER_LMA != 0 && sregs.cs.l == 1 {
        64
    } else if sregs.cs.db == 1 {
        32
    } else {
        16
    }
}

/// The linear address of the instruction at `rip`: RIP itself in 64-bit code (EFER.LMA and
/// CS.L), where CS's base does not count; CS's base plus RIP, in 32 bits, elsewhere (real mode,
/// where the base is the selector times 16; 16- and 32-bit protected mode; compatibility mode).
fn linear_rip(sregs: &kvm_bindings::kvm_sregs, rip: u64) -> u64 {
    if code_bitness(sregs) == 64 {
        rip
    } else {
        sregs.cs.base.wrapping_add(rip) & 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::{code_bitness, linear_rip, EFER_LMA};

    fn sregs(efer: u64, base: u64, l: u8) -> kvm_bindings::kvm_sregs {
        kvm_bindings::kvm_sregs {
            efer,
            cs: kvm_bindings::kvm_segment {
                base,
                l,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn real_mode_code_is_at_cs_base_plus_ip() {
        // 0300:0010, as at an S3 waking vector entered at 0300:0000.
        assert_eq!(linear_rip(&sregs(0, 0x3000, 0), 0x10), 0x3010);
    }

    #[test]
    fn long_mode_code_is_at_rip_whatever_the_base() {
        let rip = 0xffff_ffff_8100_0000;
        assert_eq!(linear_rip(&sregs(EFER_LMA, 0x1234, 1), rip), rip);
    }

    #[test]
    fn compatibility_mode_and_a_stray_l_bit_count_the_base() {
        assert_eq!(linear_rip(&sregs(EFER_LMA, 0x1000, 0), 0x20), 0x1020);
        assert_eq!(linear_rip(&sregs(0, 0x1000, 1), 0x20), 0x1020);
    }

    #[test]
    fn code_decodes_in_the_code_segment_s_size() {
        assert_eq!(code_bitness(&sregs(EFER_LMA, 0, 1)), 64);
        assert_eq!(code_bitness(&sregs(0, 0x3000, 0)), 16);
        let mut flat32 = sregs(0, 0, 0);
        flat32.cs.db = 1;
        assert_eq!(code_bitness(&flat32), 32);
        // Compatibility mode: a 32-bit segment under long mode.
        flat32.efer = EFER_LMA;
        assert_eq!(code_bitness(&flat32), 32);
    }

    #[test]
    fn protected_mode_addresses_wrap_at_4_gib() {
        assert_eq!(linear_rip(&sregs(0, 0xffff_f000, 0), 0x2000), 0x1000);
    }
}
