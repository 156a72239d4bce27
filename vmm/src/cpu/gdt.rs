//! The boot GDT drvisor writes at [`crate::layout::BOOT_GDT`], and the KVM segment
//! descriptors that match it (SDM Vol. 3, 3.4.5 "Segment Descriptors").

use kvm_bindings::kvm_segment;

/// Selector of the flat 32-bit code segment (PVH entry).
pub const CODE32: u16 = 0x08;
/// Selector of the 64-bit code segment (Linux 64-bit entry).
pub const CODE64: u16 = 0x10;
/// Selector of the flat data segment.
pub const DATA: u16 = 0x18;
/// Selector of the TSS (KVM wants a usable TR on VMX).
pub const TSS: u16 = 0x20;

/// The table, indexed by selector / 8.
pub const TABLE: [u64; 5] = [
    0,
    descriptor(0xc09b, 0, 0xfffff), // code, 32-bit, 4 GiB
    descriptor(0xa09b, 0, 0xfffff), // code, 64-bit (L=1)
    descriptor(0xc093, 0, 0xfffff), // data, read/write, 4 GiB
    descriptor(0x808b, 0, 0xfffff), // 32-bit busy TSS
];

/// Packs flags, base and limit into a descriptor.
const fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The KVM view of the descriptor at `selector`.
pub fn segment(selector: u16) -> kvm_segment {
    let d = TABLE[(selector / 8) as usize];
    let granular = (d >> 55) & 1 == 1;
    let raw_limit = ((d >> 32) & 0x000f_0000) | (d & 0xffff);
    kvm_segment {
        base: ((d >> 16) & 0x00ff_ffff) | ((d >> 32) & 0xff00_0000),
        limit: if granular {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        } as u32,
        selector,
        type_: ((d >> 40) & 0xf) as u8,
        present: ((d >> 47) & 1) as u8,
        dpl: ((d >> 45) & 3) as u8,
        db: ((d >> 54) & 1) as u8,
        s: ((d >> 44) & 1) as u8,
        l: ((d >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((d >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_is_long_mode_ring0() {
        let s = segment(CODE64);
        assert_eq!((s.l, s.db, s.dpl, s.type_, s.present), (1, 0, 0, 0xb, 1));
        assert_eq!(s.limit, 0xffff_ffff);
    }

    #[test]
    fn code32_and_data_are_flat_4g() {
        for sel in [CODE32, DATA] {
            let s = segment(sel);
            assert_eq!((s.base, s.limit, s.db, s.g), (0, 0xffff_ffff, 1, 1));
        }
        assert_eq!(segment(TSS).s, 0);
    }
}
