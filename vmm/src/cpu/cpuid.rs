//! CPUID as each vCPU sees it: what KVM supports, less the features the guest cannot use here,
//! with this vCPU's APIC ID filled in.
//!
//! The test guest (and Linux) find their CPU index from CPUID leaf 1 EBX[31:24] and the x2APIC
//! leaves 0xB/0x1F EDX, so each vCPU must see its own index there.
//!
//! `KVM_GET_SUPPORTED_CPUID` lists what the host CPU and KVM can virtualize, not what KVM's
//! instruction emulator can run: where CPL0 guest code is emulated (the `kvm_pvm` hosts of the
//! platform notes), a kernel told that CX16 exists dies on its first `lock cmpxchg16b`. The host
//! probe runs each instruction in a tiny VM; [`hide_features`] takes the features that failed out
//! of the list, with everything that depends on them, so the guest never tries them.

use std::collections::BTreeSet;

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use serde::{Deserialize, Serialize};

/// A CPU feature the host probe tests by running one of its instructions at CPL0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuFeature {
    /// `cmpxchg16b` (leaf 1 ECX bit 13). Linux uses it from early boot (per-CPU slab lists).
    Cx16,
    /// `popcnt` (leaf 1 ECX bit 23).
    Popcnt,
    /// `movbe` (leaf 1 ECX bit 22).
    Movbe,
    /// `xsave`/`xrstor`/`xgetbv` and CR4.OSXSAVE (leaf 1 ECX bit 26); without it nothing that
    /// keeps state in XSAVE components (AVX, AVX-512, AMX, PKU) is usable.
    Xsave,
    /// VEX-encoded 256-bit instructions (leaf 1 ECX bit 28), and everything built on VEX.
    Avx,
    /// 256-bit integer VEX instructions (leaf 7 EBX bit 5); AVX-512 is kept only where they run.
    Avx2,
    /// VEX-encoded general-register bit instructions, `andn`, `bextr`, `blsi`... (leaf 7 EBX
    /// bit 3). They use no XSAVE state, so nothing else goes with them.
    Bmi1,
    /// More of them, `bzhi`, `pdep`, `pext`, `mulx`, `rorx`... (leaf 7 EBX bit 8).
    Bmi2,
}

/// A general register of a CPUID entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One CPUID bit: leaf, subleaf, register, bit number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bit(
    pub(super) u32,
    pub(super) u32,
    pub(super) Reg,
    pub(super) u8,
);

impl CpuFeature {
    /// Every feature the probe tests, in the order it prints them.
    pub const ALL: [CpuFeature; 8] = [
        CpuFeature::Cx16,
        CpuFeature::Popcnt,
        CpuFeature::Movbe,
        CpuFeature::Xsave,
        CpuFeature::Avx,
        CpuFeature::Avx2,
        CpuFeature::Bmi1,
        CpuFeature::Bmi2,
    ];

    /// The name Intel's SDM gives the CPUID flag.
    pub fn name(self) -> &'static str {
        match self {
            CpuFeature::Cx16 => "CX16",
            CpuFeature::Popcnt => "POPCNT",
            CpuFeature::Movbe => "MOVBE",
            CpuFeature::Xsave => "XSAVE",
            CpuFeature::Avx => "AVX",
            CpuFeature::Avx2 => "AVX2",
            CpuFeature::Bmi1 => "BMI1",
            CpuFeature::Bmi2 => "BMI2",
        }
    }

    /// The bit that advertises the feature (SDM Vol. 2A, CPUID, tables 3-10 and 3-8).
    pub(super) fn bit(self) -> Bit {
        match self {
            CpuFeature::Cx16 => Bit(1, 0, Reg::Ecx, 13),
            CpuFeature::Popcnt => Bit(1, 0, Reg::Ecx, 23),
            CpuFeature::Movbe => Bit(1, 0, Reg::Ecx, 22),
            CpuFeature::Xsave => Bit(1, 0, Reg::Ecx, 26),
            CpuFeature::Avx => Bit(1, 0, Reg::Ecx, 28),
            CpuFeature::Avx2 => Bit(7, 0, Reg::Ebx, 5),
            CpuFeature::Bmi1 => Bit(7, 0, Reg::Ebx, 3),
            CpuFeature::Bmi2 => Bit(7, 0, Reg::Ebx, 8),
        }
    }

    /// The feature hiding this one takes along: AVX needs XSAVE to enable its state (XCR0),
    /// AVX2 is AVX's VEX encoding widened to integers.
    fn also_hides(self) -> Option<CpuFeature> {
        match self {
            CpuFeature::Xsave => Some(CpuFeature::Avx),
            CpuFeature::Avx => Some(CpuFeature::Avx2),
            _ => None,
        }
    }

    /// Whether `cpuid` advertises the feature.
    pub fn offered_by(self, cpuid: &CpuId) -> bool {
        self.bit().set_in(cpuid)
    }
}

impl Bit {
    /// Whether `cpuid` has this bit set (a leaf it lacks has none).
    pub(super) fn set_in(self, cpuid: &CpuId) -> bool {
        let Bit(leaf, index, reg, bit) = self;
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == leaf && e.index == index)
            .is_some_and(|e| reg_of_copy(e, reg) & (1 << bit) != 0)
    }
}

/// What goes with XSAVE besides AVX: OSXSAVE (KVM mirrors CR4 into it), PKU (its PKRU register
/// is XSAVE state), the AMX tiles (XSAVE components 17 and 18).
const XSAVE_FAMILY: &[Bit] = &[
    Bit(1, 0, Reg::Ecx, 27),
    Bit(7, 0, Reg::Ecx, 3),
    Bit(7, 0, Reg::Ecx, 4),
    Bit(7, 0, Reg::Edx, 22),
    Bit(7, 0, Reg::Edx, 24),
    Bit(7, 0, Reg::Edx, 25),
];

/// VEX-encoded extensions that need AVX (its YMM state and its VEX decoder): FMA, F16C, VAES,
/// VPCLMULQDQ, AVX-VNNI, AVX-IFMA, AVX-VNNI-INT8, AVX-NE-CONVERT, AVX-VNNI-INT16, AMD's XOP and
/// FMA4.
const AVX_FAMILY: &[Bit] = &[
    Bit(1, 0, Reg::Ecx, 12),
    Bit(1, 0, Reg::Ecx, 29),
    Bit(7, 0, Reg::Ecx, 9),
    Bit(7, 0, Reg::Ecx, 10),
    Bit(7, 1, Reg::Eax, 4),
    Bit(7, 1, Reg::Eax, 23),
    Bit(7, 1, Reg::Edx, 4),
    Bit(7, 1, Reg::Edx, 5),
    Bit(7, 1, Reg::Edx, 10),
    Bit(0x8000_0001, 0, Reg::Ecx, 11),
    Bit(0x8000_0001, 0, Reg::Ecx, 16),
];

/// AVX-512 (EVEX), hidden with AVX2: F, DQ, IFMA, PF, ER, CD, BW, VL; VBMI, VBMI2, VNNI,
/// BITALG, VPOPCNTDQ; 4VNNIW, 4FMAPS, VP2INTERSECT, FP16; BF16.
const AVX512_FAMILY: &[Bit] = &[
    Bit(7, 0, Reg::Ebx, 16),
    Bit(7, 0, Reg::Ebx, 17),
    Bit(7, 0, Reg::Ebx, 21),
    Bit(7, 0, Reg::Ebx, 26),
    Bit(7, 0, Reg::Ebx, 27),
    Bit(7, 0, Reg::Ebx, 28),
    Bit(7, 0, Reg::Ebx, 30),
    Bit(7, 0, Reg::Ebx, 31),
    Bit(7, 0, Reg::Ecx, 1),
    Bit(7, 0, Reg::Ecx, 6),
    Bit(7, 0, Reg::Ecx, 11),
    Bit(7, 0, Reg::Ecx, 12),
    Bit(7, 0, Reg::Ecx, 14),
    Bit(7, 0, Reg::Edx, 2),
    Bit(7, 0, Reg::Edx, 3),
    Bit(7, 0, Reg::Edx, 8),
    Bit(7, 0, Reg::Edx, 23),
    Bit(7, 1, Reg::Eax, 5),
];

/// XSAVE state components (SDM Vol. 1, 13.1): AVX's upper YMM halves, AVX-512's opmask,
/// ZMM_Hi256 and Hi16_ZMM.
const XCR0_YMM: u32 = 1 << 2;
const XCR0_AVX512: u32 = (1 << 5) | (1 << 6) | (1 << 7);
/// The legacy region and the XSAVE header: the smallest XSAVE area (SDM Vol. 1, 13.4).
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;

/// Where `--cpuid` takes the guest's CPUID from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuidMode {
    /// `KVM_GET_SUPPORTED_CPUID` less what the host probe found the guest cannot run.
    #[default]
    Filtered,
    /// `KVM_GET_SUPPORTED_CPUID` as it is.
    Host,
}

fn reg_of(entry: &mut kvm_cpuid_entry2, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut entry.eax,
        Reg::Ebx => &mut entry.ebx,
        Reg::Ecx => &mut entry.ecx,
        Reg::Edx => &mut entry.edx,
    }
}

// `reg_of` on a shared entry, through a copy: entries are plain data.
fn reg_of_copy(entry: &kvm_cpuid_entry2, reg: Reg) -> u32 {
    let mut e = *entry;
    *reg_of(&mut e, reg)
}

pub(super) fn clear(cpuid: &mut CpuId, bits: &[Bit]) {
    for entry in cpuid.as_mut_slice() {
        for &Bit(leaf, index, reg, bit) in bits {
            if entry.function == leaf && entry.index == index {
                *reg_of(entry, reg) &= !(1u32 << bit);
            }
        }
    }
}

/// `hidden` with what each one takes along (XSAVE takes AVX, AVX takes AVX2).
fn with_dependents(hidden: &[CpuFeature]) -> BTreeSet<CpuFeature> {
    let mut all = BTreeSet::new();
    for &f in hidden {
        let mut next = Some(f);
        while let Some(f) = next {
            all.insert(f);
            next = f.also_hides();
        }
    }
    all
}

/// `cpuid` without the features in `hidden` and everything that depends on them; leaf 0xD
/// (XSAVE) made to agree: no XSAVE zeroes it, no AVX/AVX-512 takes their state components out of
/// the supported XCR0 (KVM derives the XCR0 a guest may set from it) and out of the sizes.
pub fn hide_features(cpuid: &CpuId, hidden: &[CpuFeature]) -> CpuId {
    let mut out = cpuid.clone();
    let all = with_dependents(hidden);
    let own: Vec<Bit> = all.iter().map(|f| f.bit()).collect();
    clear(&mut out, &own);
    let mut drop_xcr0 = 0;
    if all.contains(&CpuFeature::Xsave) {
        clear(&mut out, XSAVE_FAMILY);
    }
    if all.contains(&CpuFeature::Avx) {
        clear(&mut out, AVX_FAMILY);
        drop_xcr0 |= XCR0_YMM;
    }
    if all.contains(&CpuFeature::Avx2) {
        clear(&mut out, AVX512_FAMILY);
        drop_xcr0 |= XCR0_AVX512;
    }
    if all.contains(&CpuFeature::Xsave) {
        for entry in out.as_mut_slice().iter_mut().filter(|e| e.function == 0xd) {
            (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
        }
    } else if drop_xcr0 != 0 {
        drop_xsave_components(&mut out, drop_xcr0);
    }
    out
}

/// Takes the XCR0 components in `mask` (all below bit 32) out of leaf 0xD: subleaf 0's
/// supported mask and maximum size, and the components' own subleaves.
pub(super) fn drop_xsave_components(cpuid: &mut CpuId, mask: u32) {
    let entries = cpuid.as_mut_slice();
    for entry in entries.iter_mut() {
        if entry.function == 0xd && (2..32).contains(&entry.index) && mask & (1 << entry.index) != 0
        {
            (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
        }
    }
    let Some(at) = entries
        .iter()
        .position(|e| e.function == 0xd && e.index == 0)
    else {
        return;
    };
    let xcr0 = entries[at].eax & !mask;
    // ECX: the size of an XSAVE area for every supported component, in the standard format
    // (each component at its subleaf's EBX offset, EAX bytes long).
    let size = entries
        .iter()
        .filter(|e| e.function == 0xd && (2..32).contains(&e.index))
        .filter(|e| xcr0 & (1 << e.index) != 0)
        .map(|e| e.ebx + e.eax)
        .fold(XSAVE_LEGACY_AND_HEADER, u32::max);
    let sub0 = &mut entries[at];
    sub0.eax = xcr0;
    sub0.ecx = size;
    // EBX is the size for the XCR0 in force; KVM recomputes it when the guest sets XCR0.
    sub0.ebx = sub0.ebx.min(size);
}

/// KVM's hypervisor leaves (Documentation/virt/kvm/x86/cpuid.rst): the signature leaf and the
/// paravirtual-feature leaf, and leaf 1 ECX bit 31 ("running under a hypervisor"). Linux looks
/// for the signature only when bit 31 is set. `KVM_GET_SUPPORTED_CPUID` returns all three on
/// every KVM we know (this one included); a KVM that does not gets the signature with no
/// features, since what KVM does not report it may not support.
pub fn with_hypervisor_leaves(cpuid: &CpuId) -> CpuId {
    const SIGNATURE: u32 = 0x4000_0000;
    const FEATURES: u32 = 0x4000_0001;
    let mut out = cpuid.clone();
    for entry in out.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
        entry.ecx |= 1 << 31;
    }
    let has = |out: &CpuId, leaf| out.as_slice().iter().any(|e| e.function == leaf);
    if !has(&out, FEATURES) {
        let _ = out.push(kvm_cpuid_entry2 {
            function: FEATURES,
            ..Default::default()
        });
    }
    if !has(&out, SIGNATURE) {
        let sig = *b"KVMKVMKVM\0\0\0";
        let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
        let _ = out.push(kvm_cpuid_entry2 {
            function: SIGNATURE,
            eax: FEATURES,
            ebx: word(0),
            ecx: word(4),
            edx: word(8),
            ..Default::default()
        });
    }
    out
}

/// Patches `supported` (from `KVM_GET_SUPPORTED_CPUID`, filtered) for vCPU `index` of `count`.
pub fn per_vcpu_cpuid(supported: &CpuId, index: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff)
                    | (u32::from(index) << 24)
                    | (u32::from(count.max(1)) << 16);
                // HTT: the logical-processor count in EBX[23:16] is valid.
                entry.edx |= 1 << 28;
            }
            0xb | 0x1f => entry.edx = u32::from(index),
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_entries::entry;

    /// A host with everything: leaf 1, 7.0, 7.1, 0xD with x87|SSE|YMM|AVX-512 components (sizes
    /// as on Skylake-SP), 0x80000001, and KVM's hypervisor leaves.
    fn everything() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0, [0x000a_0671, 0x0102_0800, 0xffff_ffff, 0xffff_ffff]),
            entry(7, 0, [1, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]),
            entry(7, 1, [0xffff_ffff, 0, 0, 0xffff_ffff]),
            entry(0xd, 0, [0xe7, 0xa80, 0xa80, 0]),
            entry(0xd, 1, [0xf, 0xa88, 0, 0]),
            entry(0xd, 2, [0x100, 0x240, 0, 0]),
            entry(0xd, 5, [0x40, 0x440, 0, 0]),
            entry(0xd, 6, [0x200, 0x480, 0, 0]),
            entry(0xd, 7, [0x400, 0x680, 0, 0]),
            entry(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(0x4000_0001, 0, [0x0100_7efb, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0xffff_ffff, 0xffff_ffff]),
        ])
        .expect("a small CpuId")
    }

    fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .expect("the leaf")
    }

    /// The bits that differ between `a` and `b`, per leaf/subleaf and register.
    fn cleared(a: &CpuId, b: &CpuId) -> Vec<(u32, u32, [u32; 4])> {
        a.as_slice()
            .iter()
            .map(|x| {
                let y = get(b, x.function, x.index);
                (
                    x.function,
                    x.index,
                    [x.eax ^ y.eax, x.ebx ^ y.ebx, x.ecx ^ y.ecx, x.edx ^ y.edx],
                )
            })
            .filter(|(_, _, d)| d.iter().any(|&v| v != 0))
            .collect()
    }

    #[test]
    fn hiding_nothing_changes_nothing() {
        let host = everything();
        assert!(cleared(&host, &hide_features(&host, &[])).is_empty());
    }

    #[test]
    fn cx16_popcnt_movbe_clear_exactly_their_bit() {
        let host = everything();
        for (f, bit) in [
            (CpuFeature::Cx16, 13),
            (CpuFeature::Popcnt, 23),
            (CpuFeature::Movbe, 22),
        ] {
            let out = hide_features(&host, &[f]);
            assert_eq!(
                cleared(&host, &out),
                vec![(1, 0, [0, 0, 1 << bit, 0])],
                "{f:?}"
            );
            assert!(f.offered_by(&host) && !f.offered_by(&out));
        }
    }

    #[test]
    fn bmi1_bmi2_clear_exactly_their_bit() {
        let host = everything();
        for (f, bit) in [(CpuFeature::Bmi1, 3), (CpuFeature::Bmi2, 8)] {
            let out = hide_features(&host, &[f]);
            assert_eq!(
                cleared(&host, &out),
                vec![(7, 0, [0, 1 << bit, 0, 0])],
                "{f:?}"
            );
            assert!(f.offered_by(&host) && !f.offered_by(&out));
        }
        let both = hide_features(&host, &[CpuFeature::Bmi1, CpuFeature::Bmi2]);
        assert_eq!(
            cleared(&host, &both),
            vec![(7, 0, [0, (1 << 3) | (1 << 8), 0, 0])]
        );
        assert_eq!(
            with_dependents(&[CpuFeature::Bmi1, CpuFeature::Bmi2]).len(),
            2
        );
    }

    #[test]
    fn hiding_avx_or_xsave_keeps_bmi1_and_bmi2() {
        let host = everything();
        for f in [CpuFeature::Xsave, CpuFeature::Avx, CpuFeature::Avx2] {
            let out = hide_features(&host, &[f]);
            assert!(CpuFeature::Bmi1.offered_by(&out), "BMI1 after hiding {f:?}");
            assert!(CpuFeature::Bmi2.offered_by(&out), "BMI2 after hiding {f:?}");
        }
    }

    #[test]
    fn hiding_is_idempotent_and_keeps_other_leaves() {
        let host = everything();
        let once = hide_features(&host, &[CpuFeature::Cx16, CpuFeature::Avx]);
        let twice = hide_features(&once, &[CpuFeature::Cx16, CpuFeature::Avx]);
        assert!(cleared(&once, &twice).is_empty());
        assert_eq!(once.as_slice().len(), host.as_slice().len());
        for leaf in [0x4000_0000, 0x4000_0001] {
            assert_eq!(get(&once, leaf, 0), get(&host, leaf, 0));
        }
    }

    #[test]
    fn hiding_xsave_hides_osxsave_avx_family_and_leaf_0xd() {
        let host = everything();
        let out = hide_features(&host, &[CpuFeature::Xsave]);
        let leaf1 = get(&out, 1, 0);
        for bit in [26, 27, 28, 12, 29] {
            assert_eq!(leaf1.ecx & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        // Untouched: CX16, POPCNT, MOVBE, SSE4.2 (20), AES (25), RDRAND (30).
        for bit in [13, 23, 22, 20, 25, 30] {
            assert_ne!(leaf1.ecx & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        let l7 = get(&out, 7, 0);
        assert_eq!(l7.ebx & (1 << 5), 0, "AVX2");
        assert_eq!(l7.ebx & 0xdc23_0000, 0, "AVX-512 in EBX");
        assert_ne!(l7.ebx & (1 << 3), 0, "BMI1 stays");
        assert_eq!(l7.ecx & (1 << 3), 0, "PKU");
        assert_eq!(l7.edx & (1 << 24), 0, "AMX-TILE");
        assert_eq!(
            get(&out, 7, 1).eax & ((1 << 4) | (1 << 5)),
            0,
            "AVX-VNNI, BF16"
        );
        for e in out.as_slice().iter().filter(|e| e.function == 0xd) {
            assert_eq!(
                (e.eax, e.ebx, e.ecx, e.edx),
                (0, 0, 0, 0),
                "0xD.{}",
                e.index
            );
        }
        for f in [CpuFeature::Xsave, CpuFeature::Avx, CpuFeature::Avx2] {
            assert!(!f.offered_by(&out), "{f:?}");
        }
        assert_eq!(get(&out, 0x8000_0001, 0).ecx & (1 << 11 | 1 << 16), 0);
    }

    #[test]
    fn hiding_avx_keeps_xsave_but_drops_ymm_and_avx512_state() {
        let host = everything();
        let out = hide_features(&host, &[CpuFeature::Avx]);
        let leaf1 = get(&out, 1, 0);
        assert_ne!(leaf1.ecx & (1 << 26), 0, "XSAVE stays");
        assert_ne!(leaf1.ecx & (1 << 27), 0, "OSXSAVE stays");
        assert_eq!(leaf1.ecx & (1 << 28), 0, "AVX");
        assert_eq!(leaf1.ecx & (1 << 12), 0, "FMA");
        assert!(!CpuFeature::Avx2.offered_by(&out));
        let d0 = get(&out, 0xd, 0);
        assert_eq!(d0.eax, 0x3, "x87 | SSE remain");
        assert_eq!(d0.ecx, 576, "legacy area and header only");
        assert!(d0.ebx <= d0.ecx);
        for i in [2, 5, 6, 7] {
            let e = get(&out, 0xd, i);
            assert_eq!((e.eax, e.ebx), (0, 0), "0xD.{i}");
        }
        assert_eq!(get(&out, 0xd, 1), get(&host, 0xd, 1));
        assert_ne!(get(&out, 7, 0).ecx & (1 << 3), 0, "PKU stays with XSAVE");
    }

    #[test]
    fn hiding_avx2_keeps_avx_and_its_ymm_state() {
        let host = everything();
        let out = hide_features(&host, &[CpuFeature::Avx2]);
        assert!(CpuFeature::Avx.offered_by(&out));
        assert!(!CpuFeature::Avx2.offered_by(&out));
        assert_eq!(get(&out, 7, 0).ebx & (1 << 16), 0, "AVX512F");
        let d0 = get(&out, 0xd, 0);
        assert_eq!(d0.eax, 0x7, "x87 | SSE | YMM");
        assert_eq!(d0.ecx, 0x240 + 0x100, "up to the end of the YMM component");
        assert_eq!(get(&out, 1, 0).ecx & (1 << 12), 1 << 12, "FMA stays");
    }

    #[test]
    fn dependents_close_transitively() {
        let all = with_dependents(&[CpuFeature::Xsave]);
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            vec![CpuFeature::Xsave, CpuFeature::Avx, CpuFeature::Avx2]
        );
        assert_eq!(with_dependents(&[CpuFeature::Cx16]).len(), 1);
    }

    #[test]
    fn missing_leaves_are_not_invented_by_hiding() {
        let host = CpuId::from_entries(&[entry(1, 0, [0, 0, 1 << 13, 0])]).expect("CpuId");
        let out = hide_features(&host, &[CpuFeature::Cx16, CpuFeature::Xsave]);
        assert_eq!(out.as_slice().len(), 1);
        assert_eq!(get(&out, 1, 0).ecx, 0);
    }

    #[test]
    fn hypervisor_leaves_pass_through_as_kvm_reports_them() {
        let host = everything();
        let out = per_vcpu_cpuid(
            &with_hypervisor_leaves(&hide_features(&host, &[CpuFeature::Cx16])),
            1,
            2,
        );
        let sig = get(&out, 0x4000_0000, 0);
        let mut text = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            text.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&text, b"KVMKVMKVM\0\0\0");
        assert_eq!(sig.eax, 0x4000_0001, "the highest hypervisor leaf");
        assert_eq!(get(&out, 0x4000_0001, 0).eax, 0x0100_7efb);
        assert_ne!(get(&out, 1, 0).ecx & (1 << 31), 0, "hypervisor present");
    }

    #[test]
    fn hypervisor_leaves_are_added_where_kvm_left_them_out() {
        let host = CpuId::from_entries(&[entry(1, 0, [0; 4])]).expect("CpuId");
        let out = with_hypervisor_leaves(&host);
        let sig = get(&out, 0x4000_0000, 0);
        assert_eq!(
            (sig.eax, sig.ebx, sig.ecx, sig.edx),
            (0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d)
        );
        assert_eq!(
            get(&out, 0x4000_0001, 0).eax,
            0,
            "no features KVM did not report"
        );
        assert_eq!(get(&out, 1, 0).ecx, 1 << 31);
        assert!(cleared(&out, &with_hypervisor_leaves(&out)).is_empty());
    }

    #[test]
    fn per_vcpu_sets_apic_id_and_count() {
        let out = per_vcpu_cpuid(&everything(), 3, 4);
        let l1 = get(&out, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
    }
}
