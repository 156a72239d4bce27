//! The state KVM gives a vCPU when it creates it, its power-on reset (SDM Vol. 3A, "Processor
//! State After Reset"): real mode, CS 0xf000 with base 0xffff0000 and RIP 0xfff0, CR0
//! 0x60000010, EFER 0, RFLAGS 2, the x87/SSE state at its init values, the local APIC reset
//! (with drvisor's LINT wiring, as a BIOS leaves it) and no pending event. drvisor keeps a copy
//! from before it sets the boot state, and puts it back to reset the vCPU: a wake from S3
//! ([`crate::sleep`]). The debug registers are not here: they reset through the debug engine,
//! which merges them with the host's.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events};
use kvm_ioctls::VcpuFd;

use super::gdt;
use crate::boot::acpi::WakingVector;

/// A vCPU's power-on state.
#[derive(Clone)]
pub struct PowerOn {
    /// General registers.
    pub regs: kvm_regs,
    /// System registers (with the APIC base: the BSP flag on vCPU 0 only).
    pub sregs: kvm_sregs,
    /// x87 and SSE.
    pub fpu: kvm_fpu,
    /// The local APIC.
    pub lapic: kvm_lapic_state,
    /// Pending exceptions, interrupts and NMIs: none.
    pub events: kvm_vcpu_events,
}

impl PowerOn {
    /// `fd`'s state now: call it before anything but the LAPIC wiring changed it.
    pub fn capture(fd: &VcpuFd) -> Result<PowerOn, kvm_ioctls::Error> {
        Ok(PowerOn {
            regs: fd.get_regs()?,
            sregs: fd.get_sregs()?,
            fpu: fd.get_fpu()?,
            lapic: fd.get_lapic()?,
            events: fd.get_vcpu_events()?,
        })
    }
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;

/// A real-mode segment at `selector` (base selector << 4), keeping the reset attributes of
/// `reset` (a 64 KiB read/write or code segment, present, DPL 0).
fn real_mode(reset: kvm_segment, selector: u16) -> kvm_segment {
    kvm_segment {
        selector,
        base: u64::from(selector) << 4,
        ..reset
    }
}

/// The boot vCPU's registers to resume at `at`, from its power-on state.
pub fn resume_state(power_on: &PowerOn, at: WakingVector) -> (kvm_regs, kvm_sregs) {
    let mut regs = power_on.regs;
    let mut sregs = power_on.sregs;
    match at {
        WakingVector::RealMode { cs, ip } => {
            sregs.cs = real_mode(sregs.cs, cs);
            regs.rip = u64::from(ip);
        }
        WakingVector::Protected32(eip) => {
            // Flat 4 GiB segments, paging off (ACPI 6.5, 5.2.10, X_Firmware_Waking_Vector). The
            // descriptors are loaded straight into the segment registers: no GDT in guest
            // memory is needed (nor written: the guest's memory is as it left it).
            sregs.cs = gdt::segment(gdt::CODE32);
            let data = gdt::segment(gdt::DATA);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.cr0 = CR0_PE | CR0_ET;
            regs.rip = u64::from(eip);
        }
    }
    (regs, sregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KVM's reset state, as its `kvm_vcpu_reset` and `vmx_vcpu_reset` set it.
    fn kvm_reset() -> PowerOn {
        let seg = |selector: u16, base: u64, type_: u8| kvm_segment {
            base,
            limit: 0xffff,
            selector,
            type_,
            present: 1,
            s: 1,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cs: seg(0xf000, 0xffff_0000, 11),
            ds: seg(0, 0, 3),
            cr0: 0x6000_0010,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        (sregs.es, sregs.fs, sregs.gs, sregs.ss) = (sregs.ds, sregs.ds, sregs.ds, sregs.ds);
        PowerOn {
            regs: kvm_regs {
                rip: 0xfff0,
                rflags: 2,
                rdx: 0x600,
                ..Default::default()
            },
            sregs,
            fpu: Default::default(),
            lapic: Default::default(),
            events: Default::default(),
        }
    }

    #[test]
    fn a_real_mode_vector_is_cs_ip_with_the_rest_at_reset() {
        let p = kvm_reset();
        let (regs, sregs) = resume_state(&p, WakingVector::RealMode { cs: 0x100, ip: 0 });
        assert_eq!((sregs.cs.selector, sregs.cs.base), (0x100, 0x1000));
        assert_eq!((sregs.cs.limit, sregs.cs.type_), (0xffff, 11));
        assert_eq!(regs.rip, 0);
        assert_eq!(regs.rflags, 2);
        assert_eq!(regs.rdx, 0x600, "EDX keeps the reset signature");
        assert_eq!(sregs.cr0, 0x6000_0010);
        assert_eq!(sregs.efer, 0);
        assert_eq!(sregs.ds.base, 0);
        assert_eq!(sregs.apic_base, 0xfee0_0900);
        let (regs, sregs) = resume_state(
            &p,
            WakingVector::RealMode {
                cs: 0x9abc,
                ip: 0xd,
            },
        );
        assert_eq!((sregs.cs.base, regs.rip), (0x9_abc0, 0xd));
    }

    #[test]
    fn an_x_vector_starts_in_flat_protected_mode_without_paging() {
        let (regs, sregs) = resume_state(&kvm_reset(), WakingVector::Protected32(0x20_0000));
        assert_eq!(regs.rip, 0x20_0000);
        assert_eq!(sregs.cr0, CR0_PE | CR0_ET);
        assert_eq!(sregs.efer, 0);
        assert_eq!(
            (sregs.cs.base, sregs.cs.limit, sregs.cs.db),
            (0, 0xffff_ffff, 1)
        );
        assert_eq!((sregs.ss.base, sregs.ss.limit), (0, 0xffff_ffff));
        assert_eq!(sregs.cs.l, 0);
    }
}
