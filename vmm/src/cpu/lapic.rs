//! The local APIC's LINT0 and LINT1 pins, wired as a PC's are: LINT0 takes the 8259 PIC's
//! output as ExtINT, LINT1 takes NMI (the MP specification's virtual-wire mode, which the BIOS
//! leaves behind on real hardware). Linux's early boot relies on it: until it programs the I/O
//! APIC, the PIT's timer interrupt reaches the BSP through LINT0 (`check_timer()` in
//! arch/x86/kernel/apic/io_apic.c). KVM's reset leaves every LVT entry masked except the
//! BSP's LINT0; only the delivery mode is set here, so the mask bits stay as KVM left them
//! (the guest unmasks LINT1 when it wants NMIs), as Firecracker and Cloud Hypervisor do.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;

/// Offset of the LVT LINT0 register in the APIC register page (SDM Vol. 3A, Table 11-1).
const LVT_LINT0: usize = 0x350;
/// Offset of the LVT LINT1 register.
const LVT_LINT1: usize = 0x360;
/// Bits 10:8 of an LVT entry: the delivery mode (SDM Vol. 3A, 11.5.1).
const DELIVERY_MODE_MASK: u32 = 0x700;
/// Delivery mode 100b: NMI.
const DELIVERY_MODE_NMI: u32 = 0x400;
/// Delivery mode 111b: ExtINT, the vector comes from the external controller (the 8259).
const DELIVERY_MODE_EXTINT: u32 = 0x700;

/// Reads the 32-bit register at `offset` of the APIC register page.
fn read(regs: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&regs[offset..offset + 4]);
    u32::from_le_bytes(b)
}

/// Writes the 32-bit register at `offset` of the APIC register page.
fn write(regs: &mut [u8], offset: usize, value: u32) {
    regs[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// Sets the delivery mode of the LVT entry at `offset`, keeping its other bits.
fn set_delivery_mode(regs: &mut [u8], offset: usize, mode: u32) {
    let value = read(regs, offset);
    write(regs, offset, (value & !DELIVERY_MODE_MASK) | mode);
}

/// Wires LINT0 as ExtINT and LINT1 as NMI in the APIC register page `regs` (1 KiB, as
/// `kvm_lapic_state` holds it).
pub fn wire_lints(regs: &mut [u8]) {
    set_delivery_mode(regs, LVT_LINT0, DELIVERY_MODE_EXTINT);
    set_delivery_mode(regs, LVT_LINT1, DELIVERY_MODE_NMI);
}

/// Wires `vcpu`'s LINT0 and LINT1 (see [`wire_lints`]). Needs the in-kernel irqchip.
pub fn setup(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut state: kvm_lapic_state = vcpu.get_lapic()?;
    // `regs` is `[c_char; 1024]`; reinterpreting it as bytes changes no value.
    let mut regs: Vec<u8> = state.regs.iter().map(|&b| b as u8).collect();
    wire_lints(&mut regs);
    for (dst, src) in state.regs.iter_mut().zip(regs) {
        *dst = src as _;
    }
    vcpu.set_lapic(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        vec![0u8; std::mem::size_of::<kvm_lapic_state>()]
    }

    #[test]
    fn the_register_page_is_the_kvm_one() {
        assert_eq!(page().len(), 1024);
    }

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi() {
        let mut regs = page();
        wire_lints(&mut regs);
        assert_eq!(&regs[0x350..0x354], &[0x00, 0x07, 0, 0]);
        assert_eq!(&regs[0x360..0x364], &[0x00, 0x04, 0, 0]);
    }

    #[test]
    fn only_the_delivery_mode_bits_change() {
        let mut regs = page();
        // Vector 0x30, masked, level-triggered; fixed delivery. Neighbours hold a pattern.
        write(&mut regs, 0x340, 0xdead_beef);
        write(&mut regs, LVT_LINT0, 0x0001_8030);
        write(&mut regs, LVT_LINT1, 0x0001_8530);
        write(&mut regs, 0x370, 0xfeed_f00d);
        wire_lints(&mut regs);
        assert_eq!(read(&regs, LVT_LINT0), 0x0001_8730);
        assert_eq!(read(&regs, LVT_LINT1), 0x0001_8430);
        assert_eq!(read(&regs, 0x340), 0xdead_beef);
        assert_eq!(read(&regs, 0x370), 0xfeed_f00d);
    }

    #[test]
    fn wiring_twice_changes_nothing() {
        let mut once = page();
        wire_lints(&mut once);
        let mut twice = once.clone();
        wire_lints(&mut twice);
        assert_eq!(once, twice);
    }
}
