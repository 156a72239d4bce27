//! Named CPU models: the CPUID of a CPU QEMU's `-cpu` names, cut out of what this host's KVM
//! offers, so that a test written for `-cpu qemu64` sees the CPU it was written for.
//!
//! A model only takes away: a feature it has that the host lacks stays absent, as under QEMU
//! with KVM, which cannot give a guest more than the host. The model's identity (family,
//! model, stepping, brand string, the highest leaves) replaces the host's; the vendor stays the
//! host's, as QEMU keeps it under KVM (`sysenter` and `syscall` in compatibility mode differ by
//! vendor, and KVM runs them natively). Features the user requires with `--cpu-features` stay,
//! with what they need.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use super::cpuid::Reg;
use super::feature_edits::FeatureEdits;
use super::feature_table::{self, NamedFeature};

/// The CPU the guest is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuModel {
    /// The host's CPU, as KVM offers it (QEMU's `-cpu host`).
    #[default]
    Host,
    /// QEMU's `qemu64` under KVM: a 2003-era x86-64 with SSE3 and CMPXCHG16B, plus the x2APIC
    /// and the hypervisor bit KVM adds by default (target/i386/cpu.c, `qemu64` and
    /// `kvm_default_props`).
    Qemu64,
}

/// `qemu64`'s identity and its features outside the named-feature table.
mod qemu64 {
    /// CPUID.0:EAX, the highest basic leaf (`.level`).
    pub const LEVEL: u32 = 0xd;
    /// CPUID.80000000h:EAX, the highest extended leaf (`.xlevel`).
    pub const XLEVEL: u32 = 0x8000_000a;
    /// Family 15, model 107 (extended model 6, model 0xb), stepping 1.
    pub const SIGNATURE: u32 = 0x0006_0fb1;
    /// Leaf 1 EDX: QEMU's PPRO_FEATURES (FPU, DE, PSE, TSC, MSR, PAE, MCE, CX8, APIC, SEP, PGE,
    /// CMOV, PAT, MMX, FXSR, SSE, SSE2) with MTRR, MCA, PSE36 and CLFLUSH.
    pub const LEAF1_EDX: u32 = 1
        | 1 << 2
        | 1 << 3
        | 1 << 4
        | 1 << 5
        | 1 << 6
        | 1 << 7
        | 1 << 8
        | 1 << 9
        | 1 << 11
        | 1 << 12
        | 1 << 13
        | 1 << 14
        | 1 << 15
        | 1 << 16
        | 1 << 17
        | 1 << 19
        | 1 << 23
        | 1 << 24
        | 1 << 25
        | 1 << 26;
    /// Leaf 0x80000001 EDX: SYSCALL, NX, LM; on an AMD host also leaf 1's EDX bits AMD
    /// repeats there (QEMU's CPUID_EXT2_AMD_ALIASES).
    pub const EXT_EDX: u32 = 1 << 11 | 1 << 20 | 1 << 29;
    pub const AMD_ALIASES: u32 = 0x0183_f3ff;
    /// The named features it has: SSE3 (`pni`), CX16, PSE36, CLFLUSH, LAHF/SAHF in long mode,
    /// and under KVM the x2APIC and the hypervisor bit (SVM and MONITOR are off under KVM).
    pub const NAMED: &[&str] = &[
        "pni",
        "cx16",
        "x2apic",
        "hypervisor",
        "pse36",
        "clflush",
        "lahf-lm",
    ];
    /// CPUID.80000002h-80000004h.
    pub const BRAND: &[u8] = b"QEMU Virtual CPU version 2.5+";
}

impl CpuModel {
    /// The model's name, as `--cpu-model` takes it.
    pub fn name(self) -> &'static str {
        match self {
            CpuModel::Host => "host",
            CpuModel::Qemu64 => "qemu64",
        }
    }

    /// The named features (`--cpu-features` names) the model has, where the host has them;
    /// `None` for the host's CPU, which has whatever the host has.
    pub fn features(self) -> Option<&'static [&'static str]> {
        match self {
            CpuModel::Host => None,
            CpuModel::Qemu64 => Some(qemu64::NAMED),
        }
    }

    /// The named features the model takes away: every one it lacks, except those `keep`
    /// requires and what they need.
    pub fn hides(self, keep: &FeatureEdits) -> Vec<&'static NamedFeature> {
        let Some(has) = self.features() else {
            return Vec::new();
        };
        let kept = keep.required_with_needs();
        feature_table::FEATURES
            .iter()
            .filter(|f| !has.contains(&f.name) && !kept.contains(&f.name))
            .collect()
    }

    /// `base` (the CPUID drvisor would otherwise give) cut down to the model; the features
    /// `keep` requires, and those they need, stay where `base` has them.
    pub fn shape(self, base: &CpuId, keep: &FeatureEdits) -> CpuId {
        match self {
            CpuModel::Host => base.clone(),
            CpuModel::Qemu64 => shape_qemu64(base, self.hides(keep)),
        }
    }
}

fn shape_qemu64(base: &CpuId, hidden: Vec<&'static NamedFeature>) -> CpuId {
    // The named features go through the same hiding as `--cpu-features`, which keeps XSAVE's
    // leaf 0xD consistent; what the table does not name is masked here.
    let named_hidden = FeatureEdits::hiding(hidden)
        .apply(base, base)
        .map(|applied| applied.cpuid)
        .unwrap_or_else(|_| base.clone());
    let amd = is_amd(base);
    let entries: Vec<kvm_cpuid_entry2> = named_hidden
        .as_slice()
        .iter()
        .filter(|e| in_range(e.function))
        .map(|&e| qemu64_entry(e, amd))
        .collect();
    CpuId::from_entries(&entries).unwrap_or_else(|_| base.clone())
}

/// Whether a leaf exists on `qemu64`: basic leaves up to its level, the hypervisor's, and
/// extended ones up to its xlevel.
fn in_range(function: u32) -> bool {
    matches!(
        function,
        0..=qemu64::LEVEL | 0x4000_0000..=0x4fff_ffff | 0x8000_0000..=qemu64::XLEVEL
    )
}

fn is_amd(cpuid: &CpuId) -> bool {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Auth"))
}

/// One of the host's entries as `qemu64` shows it. Bits of named features are left as the
/// hiding above made them; the others are the model's.
fn qemu64_entry(mut e: kvm_cpuid_entry2, amd: bool) -> kvm_cpuid_entry2 {
    let named = |reg: Reg| named_bits(e.function, e.index, reg);
    match e.function {
        // QEMU's levels whatever the host's: a leaf KVM is not given reads as zeros.
        0 => e.eax = qemu64::LEVEL,
        1 => {
            e.eax = qemu64::SIGNATURE;
            e.ecx &= named(Reg::Ecx);
            e.edx &= qemu64::LEAF1_EDX | named(Reg::Edx);
        }
        // Thermal and power (ARAT...), the PMU: none on qemu64.
        6 | 0xa => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
        7 => {
            if e.index > 0 {
                e.eax &= named(Reg::Eax);
            }
            e.ebx &= named(Reg::Ebx);
            e.ecx &= named(Reg::Ecx);
            e.edx &= named(Reg::Edx);
        }
        0x8000_0000 => e.eax = qemu64::XLEVEL,
        0x8000_0001 => {
            let aliases = if amd {
                qemu64::AMD_ALIASES & qemu64::LEAF1_EDX
            } else {
                0
            };
            e.ecx &= named(Reg::Ecx);
            e.edx &= qemu64::EXT_EDX | aliases | named(Reg::Edx);
        }
        0x8000_0002..=0x8000_0004 => {
            let at = (e.function - 0x8000_0002) as usize * 16;
            let word = |i: usize| brand_word(at + 4 * i);
            (e.eax, e.ebx, e.ecx, e.edx) = (word(0), word(1), word(2), word(3));
        }
        // Invariant TSC and the like; SVM (off under KVM).
        0x8000_0007 | 0x8000_000a => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
        // Address sizes stay; the feature bits in EBX (IBPB, WBNOINVD...) go.
        0x8000_0008 => e.ebx = 0,
        _ => {}
    }
    e
}

/// The bits of `reg` in leaf `function`, subleaf `index`, that name a feature of the table.
fn named_bits(function: u32, index: u32, reg: Reg) -> u32 {
    feature_table::FEATURES
        .iter()
        .filter(|f| f.bit.0 == function && f.bit.1 == index && f.bit.2 == reg)
        .fold(0, |mask, f| mask | 1 << f.bit.3)
}

/// Four bytes of the brand string, from byte `at`, zero-padded to 48.
fn brand_word(at: usize) -> u32 {
    let byte = |i: usize| qemu64::BRAND.get(at + i).copied().unwrap_or(0);
    u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_entries::entry;

    /// An Intel host with every bit set, leaves the model lacks (0x14, 0x1f, 0x80000021), XSAVE
    /// with AVX-512 state, and KVM's hypervisor leaves.
    fn host() -> CpuId {
        CpuId::from_entries(&[
            entry(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            entry(1, 0, [0x000a_0671, 0x0102_0800, 0xffff_ffff, 0xffff_ffff]),
            entry(6, 0, [0x4, 0, 0, 0]),
            entry(7, 0, [1, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]),
            entry(7, 1, [0xffff_ffff, 0, 0, 0xffff_ffff]),
            entry(0xa, 0, [0x0704_8302, 0, 0, 0x603]),
            entry(0xd, 0, [0xe7, 0xa80, 0xa80, 0]),
            entry(0xd, 1, [0xf, 0xa88, 0, 0]),
            entry(0xd, 2, [0x100, 0x240, 0, 0]),
            entry(0x14, 0, [1, 0xf, 7, 0]),
            entry(0x1f, 0, [1, 1, 0x100, 0]),
            entry(0x4000_0001, 0, [0x0100_7efb, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0021, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0xffff_ffff, 0xffff_ffff]),
            entry(0x8000_0002, 0, [1, 2, 3, 4]),
            entry(0x8000_0007, 0, [0, 0, 0, 0x100]),
            entry(0x8000_0008, 0, [0x3027, 0x0100_d000, 0, 0]),
            entry(0x8000_0021, 0, [0x45, 0, 0, 0]),
        ])
        .expect("a small CpuId")
    }

    fn get(cpuid: &CpuId, function: u32, index: u32) -> Option<kvm_cpuid_entry2> {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .copied()
    }

    fn has(cpuid: &CpuId, name: &str) -> bool {
        feature_table::lookup(name).expect(name).offered_by(cpuid)
    }

    fn qemu64(keep: &str) -> CpuId {
        let edits = if keep.is_empty() {
            FeatureEdits::default()
        } else {
            FeatureEdits::parse(keep).expect("a valid list")
        };
        CpuModel::Qemu64.shape(&host(), &edits)
    }

    #[test]
    fn host_is_the_base_unchanged() {
        let base = host();
        let out = CpuModel::Host.shape(&base, &FeatureEdits::default());
        assert_eq!(out.as_slice(), base.as_slice());
    }

    #[test]
    fn qemu64_has_its_features_and_no_others() {
        let out = qemu64("");
        for name in qemu64::NAMED {
            assert!(has(&out, name), "{name}");
        }
        for name in [
            "avx",
            "xsave",
            "sse4.2",
            "popcnt",
            "tsc-deadline",
            "smep",
            "pcid",
            "svm",
        ] {
            assert!(!has(&out, name), "{name}");
        }
        let leaf1 = get(&out, 1, 0).expect("leaf 1");
        assert_eq!(leaf1.edx & !(1 << 28), qemu64::LEAF1_EDX);
        assert_eq!(leaf1.ecx, 1 | 1 << 13 | 1 << 21 | 1 << 31);
        assert_eq!(
            leaf1.ebx, 0x0102_0800,
            "the APIC ID and counts stay the host's"
        );
        let ext = get(&out, 0x8000_0001, 0).expect("leaf 0x80000001");
        assert_eq!(
            (ext.ecx, ext.edx),
            (1, qemu64::EXT_EDX),
            "no AMD aliases on Intel"
        );
        let leaf7 = get(&out, 7, 0).expect("leaf 7");
        assert_eq!((leaf7.ebx, leaf7.ecx, leaf7.edx), (0, 0, 0));
        assert_eq!(get(&out, 7, 1).map(|e| (e.eax, e.edx)), Some((0, 0)));
        assert_eq!(
            get(&out, 0xd, 0).map(|e| e.eax),
            Some(0),
            "no XSAVE, no state"
        );
        assert_eq!(get(&out, 6, 0).map(|e| e.eax), Some(0), "no ARAT");
        assert_eq!(get(&out, 0xa, 0).map(|e| e.eax), Some(0), "no PMU");
    }

    #[test]
    fn qemu64_is_qemu64_by_its_identity_and_leaves() {
        let out = qemu64("");
        assert_eq!(
            get(&out, 0, 0).map(|e| (e.eax, e.ebx)),
            Some((0xd, 0x756e_6547))
        );
        assert_eq!(get(&out, 1, 0).map(|e| e.eax), Some(0x0006_0fb1));
        assert_eq!(get(&out, 0x8000_0000, 0).map(|e| e.eax), Some(0x8000_000a));
        for gone in [0x14, 0x1f, 0x8000_0021] {
            assert!(get(&out, gone, 0).is_none(), "{gone:#x}");
        }
        assert!(get(&out, 0x4000_0001, 0).is_some(), "KVM's leaves stay");
        let brand: Vec<u8> = (0x8000_0002..=0x8000_0002)
            .filter_map(|f| get(&out, f, 0))
            .flat_map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .flat_map(u32::to_le_bytes)
            .collect();
        assert_eq!(&brand, b"QEMU Virtual CPU");
        assert_eq!(get(&out, 0x8000_0007, 0).map(|e| e.edx), Some(0));
        assert_eq!(
            get(&out, 0x8000_0008, 0).map(|e| (e.eax, e.ebx)),
            Some((0x3027, 0))
        );
    }

    #[test]
    fn required_features_stay_with_what_they_need() {
        let out = qemu64("+avx2,+pcid");
        for name in ["avx2", "avx", "xsave", "pcid", "x2apic"] {
            assert!(has(&out, name), "{name}");
        }
        assert!(!has(&out, "avx512f"));
        let xcr0 = get(&out, 0xd, 0).map(|e| e.eax).unwrap_or(0);
        assert_eq!(xcr0 & 0x7, 0x7, "x87, SSE and YMM state stay with AVX");
        assert_eq!(xcr0 & 0xe0, 0, "AVX-512 state goes with it");
    }

    #[test]
    fn on_amd_the_aliases_follow_leaf_1() {
        let mut amd = host();
        for e in amd.as_mut_slice().iter_mut().filter(|e| e.function == 0) {
            e.ebx = u32::from_le_bytes(*b"Auth");
        }
        let out = CpuModel::Qemu64.shape(&amd, &FeatureEdits::default());
        let ext = get(&out, 0x8000_0001, 0).expect("leaf 0x80000001");
        assert_eq!(
            ext.edx,
            qemu64::EXT_EDX | (qemu64::AMD_ALIASES & qemu64::LEAF1_EDX)
        );
    }
}
