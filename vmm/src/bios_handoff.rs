//! What a PC BIOS leaves behind for the kernel it starts, given to multiboot kernels, which
//! under QEMU's `-kernel` start after SeaBIOS has run and may rely on it (kvm-unit-tests'
//! `realmode` waits in `hlt` for the BIOS's timer tick):
//! - an interrupt vector table whose handlers return, the timer's and the other hardware IRQs'
//!   after acknowledging the PIC, in a few bytes of the BIOS area ([`BIOS_STUBS`]);
//! - both 8259 PICs initialised at vectors 0x08 and 0x70, with only the timer and the cascade
//!   unmasked;
//! - the 8254's channel 0 in mode 2 with the full count: the BIOS tick, 18.2 times a second.
//!
//! Linux, kvm-unit-tests' 64-bit tests and drvisor's own guest (PVH, which gets none of this)
//! program or mask the PICs before they enable interrupts, as they must on any PC.

use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::BIOS_STUBS;

/// The handlers, at [`BIOS_STUBS`]: `iret`; then for a master IRQ `push ax; mov al, 0x20;
/// out 0x20, al; pop ax; iret`; then for a slave IRQ the same with `out 0xa0, al` first.
const STUBS: [u8; 17] = [
    0xcf, // iret
    0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf, // master EOI
    0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf, // slave EOI, then master
];
const IRET: u16 = 0;
const MASTER_EOI: u16 = 1;
const SLAVE_EOI: u16 = 8;

/// The PICs' vector bases, as every PC BIOS sets them.
pub const MASTER_BASE: u8 = 0x08;
/// See [`MASTER_BASE`].
pub const SLAVE_BASE: u8 = 0x70;
/// The master's mask: all but IRQ 0 (the timer) and IRQ 2 (the cascade).
const MASTER_MASK: u8 = !0b101;

/// The real-mode vector table: 256 `offset:segment` pairs at physical 0.
pub fn vector_table() -> [u8; 1024] {
    let segment = (BIOS_STUBS >> 4) as u16 & 0xf000;
    let base = (BIOS_STUBS - (u64::from(segment) << 4)) as u16;
    let mut table = [0u8; 1024];
    for vector in 0..256u16 {
        let stub = match vector as u8 {
            v if (MASTER_BASE..MASTER_BASE + 8).contains(&v) => MASTER_EOI,
            v if (SLAVE_BASE..SLAVE_BASE + 8).contains(&v) => SLAVE_EOI,
            _ => IRET,
        };
        let at = usize::from(vector) * 4;
        table[at..at + 2].copy_from_slice(&(base + stub).to_le_bytes());
        table[at + 2..at + 4].copy_from_slice(&segment.to_le_bytes());
    }
    table
}

/// Writes the vector table and its handlers.
pub fn write_memory(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&STUBS, GuestAddress(BIOS_STUBS))?;
    mem.write_slice(&vector_table(), GuestAddress(0))
}

/// Sets the PICs and the PIT as the BIOS leaves them. The in-kernel irqchip and PIT must exist.
pub fn program_timers(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    for (chip, base, mask) in [
        (KVM_IRQCHIP_PIC_MASTER, MASTER_BASE, MASTER_MASK),
        (KVM_IRQCHIP_PIC_SLAVE, SLAVE_BASE, 0xff),
    ] {
        let mut state = kvm_irqchip {
            chip_id: chip,
            ..Default::default()
        };
        vm.get_irqchip(&mut state)?;
        // SAFETY: `chip_id` names a PIC, so KVM filled the union's `pic` member, and every bit
        // pattern is a valid `kvm_pic_state` (plain bytes).
        let pic = unsafe { &mut state.chip.pic };
        pic.irq_base = base;
        pic.imr = mask;
        pic.init_state = 0;
        pic.init4 = 1;
        vm.set_irqchip(&state)?;
    }
    let mut pit = vm.get_pit2()?;
    let channel = &mut pit.channels[0];
    // Mode 2 (rate generator), binary, low byte then high byte, count 0 meaning 65536.
    channel.mode = 2;
    channel.bcd = 0;
    channel.rw_mode = 3;
    channel.read_state = 3;
    channel.write_state = 3;
    channel.gate = 1;
    channel.count = 0;
    vm.set_pit2(&pit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_point_at_their_stubs() {
        let table = vector_table();
        let target = |v: usize| {
            let off = u16::from_le_bytes([table[v * 4], table[v * 4 + 1]]);
            let seg = u16::from_le_bytes([table[v * 4 + 2], table[v * 4 + 3]]);
            (u64::from(seg) << 4) + u64::from(off)
        };
        assert_eq!(target(0), BIOS_STUBS);
        assert_eq!(target(3), BIOS_STUBS);
        assert_eq!(target(8), BIOS_STUBS + 1, "IRQ 0");
        assert_eq!(target(0x0f), BIOS_STUBS + 1, "IRQ 7");
        assert_eq!(target(0x70), BIOS_STUBS + 8, "IRQ 8");
        assert_eq!(target(0x77), BIOS_STUBS + 8, "IRQ 15");
        assert_eq!(target(0xff), BIOS_STUBS);
        // Each handler ends in iret, and the EOIs go to the right PICs.
        assert_eq!(STUBS[IRET as usize], 0xcf);
        assert_eq!(
            &STUBS[MASTER_EOI as usize..SLAVE_EOI as usize][3..5],
            &[0xe6, 0x20]
        );
        assert_eq!(
            &STUBS[SLAVE_EOI as usize..][3..7],
            &[0xe6, 0xa0, 0xe6, 0x20]
        );
        assert_eq!(*STUBS.last().unwrap(), 0xcf);
    }
}
