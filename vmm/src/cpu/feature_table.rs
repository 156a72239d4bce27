//! CPU features by name, as QEMU's `-cpu` names them (`x2apic`, `avx512f`, `tsc-deadline`...):
//! where each one's CPUID bit is, and which features need which, so that hiding one hides
//! everything built on it.
//!
//! Bit positions are Intel's SDM Vol. 2A, CPUID (leaf 1: tables 3-10 and 3-11; leaf 7: table
//! 3-8; leaf 0xD subleaf 1), and AMD's APM Vol. 3, appendix E, for leaf 0x8000_0001. The
//! dependencies are those Linux enforces (`arch/x86/kernel/cpu/cpuid-deps.c`) among the features
//! listed here, and the ones drvisor's own `--cpuid filtered` applies (AVX-512 goes with AVX2).
//! Features every x86-64 kernel needs (`lm`, `fpu`, `sse2`, `apic`...) are not listed: a guest
//! without them does not boot.

use super::cpuid::{Bit, Reg};

/// One named CPU feature.
#[derive(Debug, PartialEq, Eq)]
pub struct NamedFeature {
    /// QEMU's name for it.
    pub name: &'static str,
    /// The CPUID bit that advertises it.
    pub(super) bit: Bit,
    /// The features it needs: hiding any of them hides it too.
    pub requires: &'static [&'static str],
    /// The XSAVE state components (XCR0 bits) only it uses, which leave leaf 0xD with it.
    pub(super) xcr0: u32,
}

impl NamedFeature {
    /// Whether `cpuid` advertises the feature.
    pub fn offered_by(&self, cpuid: &kvm_bindings::CpuId) -> bool {
        self.bit.set_in(cpuid)
    }
}

const fn f(
    name: &'static str,
    leaf: u32,
    subleaf: u32,
    reg: Reg,
    bit: u8,
    requires: &'static [&'static str],
) -> NamedFeature {
    NamedFeature {
        name,
        bit: Bit(leaf, subleaf, reg, bit),
        requires,
        xcr0: 0,
    }
}

const fn with_state(feature: NamedFeature, xcr0: u32) -> NamedFeature {
    NamedFeature { xcr0, ..feature }
}

use Reg::{Eax, Ebx, Ecx, Edx};

const EXT: u32 = 0x8000_0001;
/// XSAVE components: opmask, ZMM_Hi256, Hi16_ZMM (AVX-512); PKRU; XTILECFG, XTILEDATA (AMX).
const XCR0_AVX512: u32 = (1 << 5) | (1 << 6) | (1 << 7);
const XCR0_PKRU: u32 = 1 << 9;
const XCR0_AMX: u32 = (1 << 17) | (1 << 18);

/// Every named feature, by leaf.
pub const FEATURES: &[NamedFeature] = &[
    // Leaf 1 ECX.
    f("pni", 1, 0, Ecx, 0, &[]),
    f("pclmulqdq", 1, 0, Ecx, 1, &[]),
    f("monitor", 1, 0, Ecx, 3, &[]),
    f("vmx", 1, 0, Ecx, 5, &[]),
    f("ssse3", 1, 0, Ecx, 9, &[]),
    f("fma", 1, 0, Ecx, 12, &["avx"]),
    f("cx16", 1, 0, Ecx, 13, &[]),
    f("pdcm", 1, 0, Ecx, 15, &[]),
    f("pcid", 1, 0, Ecx, 17, &[]),
    f("sse4.1", 1, 0, Ecx, 19, &[]),
    f("sse4.2", 1, 0, Ecx, 20, &[]),
    f("x2apic", 1, 0, Ecx, 21, &[]),
    f("movbe", 1, 0, Ecx, 22, &[]),
    f("popcnt", 1, 0, Ecx, 23, &[]),
    f("tsc-deadline", 1, 0, Ecx, 24, &[]),
    f("aes", 1, 0, Ecx, 25, &[]),
    f("xsave", 1, 0, Ecx, 26, &[]),
    f("osxsave", 1, 0, Ecx, 27, &["xsave"]),
    f("avx", 1, 0, Ecx, 28, &["xsave"]),
    f("f16c", 1, 0, Ecx, 29, &["avx"]),
    f("rdrand", 1, 0, Ecx, 30, &[]),
    f("hypervisor", 1, 0, Ecx, 31, &[]),
    // Leaf 1 EDX.
    f("pse36", 1, 0, Edx, 17, &[]),
    f("clflush", 1, 0, Edx, 19, &[]),
    // Leaf 7 subleaf 0 EBX.
    f("fsgsbase", 7, 0, Ebx, 0, &[]),
    f("tsc-adjust", 7, 0, Ebx, 1, &[]),
    f("bmi1", 7, 0, Ebx, 3, &[]),
    f("hle", 7, 0, Ebx, 4, &[]),
    f("avx2", 7, 0, Ebx, 5, &["avx"]),
    f("smep", 7, 0, Ebx, 7, &[]),
    f("bmi2", 7, 0, Ebx, 8, &[]),
    f("erms", 7, 0, Ebx, 9, &[]),
    f("invpcid", 7, 0, Ebx, 10, &[]),
    f("rtm", 7, 0, Ebx, 11, &[]),
    with_state(f("avx512f", 7, 0, Ebx, 16, &["avx2"]), XCR0_AVX512),
    f("avx512dq", 7, 0, Ebx, 17, &["avx512f"]),
    f("rdseed", 7, 0, Ebx, 18, &[]),
    f("adx", 7, 0, Ebx, 19, &[]),
    f("smap", 7, 0, Ebx, 20, &[]),
    f("avx512ifma", 7, 0, Ebx, 21, &["avx512f"]),
    f("clflushopt", 7, 0, Ebx, 23, &[]),
    f("clwb", 7, 0, Ebx, 24, &[]),
    f("avx512pf", 7, 0, Ebx, 26, &["avx512f"]),
    f("avx512er", 7, 0, Ebx, 27, &["avx512f"]),
    f("avx512cd", 7, 0, Ebx, 28, &["avx512f"]),
    f("sha-ni", 7, 0, Ebx, 29, &[]),
    f("avx512bw", 7, 0, Ebx, 30, &["avx512f"]),
    f("avx512vl", 7, 0, Ebx, 31, &["avx512f"]),
    // Leaf 7 subleaf 0 ECX.
    f("avx512vbmi", 7, 0, Ecx, 1, &["avx512f"]),
    f("umip", 7, 0, Ecx, 2, &[]),
    with_state(f("pku", 7, 0, Ecx, 3, &["xsave"]), XCR0_PKRU),
    f("ospke", 7, 0, Ecx, 4, &["pku"]),
    f("waitpkg", 7, 0, Ecx, 5, &[]),
    f("avx512vbmi2", 7, 0, Ecx, 6, &["avx512vl"]),
    f("gfni", 7, 0, Ecx, 8, &[]),
    f("vaes", 7, 0, Ecx, 9, &["avx"]),
    f("vpclmulqdq", 7, 0, Ecx, 10, &["avx"]),
    f("avx512vnni", 7, 0, Ecx, 11, &["avx512vl"]),
    f("avx512bitalg", 7, 0, Ecx, 12, &["avx512vl"]),
    f("avx512-vpopcntdq", 7, 0, Ecx, 14, &["avx512f"]),
    f("la57", 7, 0, Ecx, 16, &[]),
    f("rdpid", 7, 0, Ecx, 22, &[]),
    f("cldemote", 7, 0, Ecx, 25, &[]),
    f("movdiri", 7, 0, Ecx, 27, &[]),
    f("movdir64b", 7, 0, Ecx, 28, &[]),
    // Leaf 7 subleaf 0 EDX.
    f("avx512-4vnniw", 7, 0, Edx, 2, &["avx512f"]),
    f("avx512-4fmaps", 7, 0, Edx, 3, &["avx512f"]),
    f("fsrm", 7, 0, Edx, 4, &[]),
    f("avx512-vp2intersect", 7, 0, Edx, 8, &["avx512vl"]),
    f("md-clear", 7, 0, Edx, 10, &[]),
    f("serialize", 7, 0, Edx, 14, &[]),
    f("tsx-ldtrk", 7, 0, Edx, 16, &[]),
    f("amx-bf16", 7, 0, Edx, 22, &["amx-tile"]),
    f("avx512-fp16", 7, 0, Edx, 23, &["avx512bw"]),
    with_state(f("amx-tile", 7, 0, Edx, 24, &["xsave"]), XCR0_AMX),
    f("amx-int8", 7, 0, Edx, 25, &["amx-tile"]),
    f("spec-ctrl", 7, 0, Edx, 26, &[]),
    f("stibp", 7, 0, Edx, 27, &[]),
    f("arch-capabilities", 7, 0, Edx, 29, &[]),
    f("ssbd", 7, 0, Edx, 31, &[]),
    // Leaf 7 subleaf 1 EAX.
    f("avx-vnni", 7, 1, Eax, 4, &["avx"]),
    f("avx512-bf16", 7, 1, Eax, 5, &["avx512vl"]),
    // Leaf 0xD subleaf 1 EAX.
    f("xsaveopt", 0xd, 1, Eax, 0, &["xsave"]),
    f("xsavec", 0xd, 1, Eax, 1, &["xsave"]),
    f("xgetbv1", 0xd, 1, Eax, 2, &["xsave"]),
    f("xsaves", 0xd, 1, Eax, 3, &["xsave"]),
    // Leaf 0x8000_0001 ECX (AMD's APM; Intel has LAHF-LM and ABM/LZCNT too).
    f("lahf-lm", EXT, 0, Ecx, 0, &[]),
    f("svm", EXT, 0, Ecx, 2, &[]),
    f("abm", EXT, 0, Ecx, 5, &[]),
    f("sse4a", EXT, 0, Ecx, 6, &[]),
    f("3dnowprefetch", EXT, 0, Ecx, 8, &[]),
    f("xop", EXT, 0, Ecx, 11, &["avx"]),
    f("fma4", EXT, 0, Ecx, 16, &["avx"]),
    f("tbm", EXT, 0, Ecx, 21, &[]),
    f("topoext", EXT, 0, Ecx, 22, &[]),
    // Leaf 0x8000_0001 EDX.
    f("mmxext", EXT, 0, Edx, 22, &[]),
    f("pdpe1gb", EXT, 0, Edx, 26, &[]),
    f("rdtscp", EXT, 0, Edx, 27, &[]),
];

/// Other spellings QEMU or the kernel's /proc/cpuinfo use, and the table's name for each.
const ALIASES: &[(&str, &str)] = &[
    ("sse3", "pni"),
    ("sse4-1", "sse4.1"),
    ("sse4-2", "sse4.2"),
    ("sse41", "sse4.1"),
    ("sse42", "sse4.2"),
    ("lzcnt", "abm"),
    ("sha", "sha-ni"),
    ("tsc-deadline-timer", "tsc-deadline"),
    ("gbpages", "pdpe1gb"),
    ("prefetchw", "3dnowprefetch"),
    ("avx512-vbmi", "avx512vbmi"),
    ("avx512-vbmi2", "avx512vbmi2"),
    ("avx512-vnni", "avx512vnni"),
    ("avx512-bitalg", "avx512bitalg"),
    ("avx512vpopcntdq", "avx512-vpopcntdq"),
    ("avx512fp16", "avx512-fp16"),
    ("avx512bf16", "avx512-bf16"),
];

/// `name` as the table spells names: lower case, `_` as `-` (QEMU takes both).
fn normalized(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// The feature `name` (any case, `_` or `-`, or an alias) names.
pub fn lookup(name: &str) -> Option<&'static NamedFeature> {
    let name = normalized(name);
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name.as_str(), |(_, canonical)| canonical);
    FEATURES.iter().find(|f| f.name == name)
}

/// The names closest to `name`, for an error about an unknown one: those within two edits, or
/// that begin with it (`avx512` lists the AVX-512 family), closest first, at most eight.
pub fn close_matches(name: &str) -> Vec<&'static str> {
    let name = normalized(name);
    let mut scored: Vec<(usize, &'static str)> = FEATURES
        .iter()
        .map(|f| f.name)
        .chain(ALIASES.iter().map(|(alias, _)| *alias))
        .filter_map(|candidate| {
            let distance = strsim::levenshtein(&name, candidate);
            let prefix = name.len() >= 3 && candidate.starts_with(&name);
            (distance <= 2 || prefix).then_some((distance, candidate))
        })
        .collect();
    scored.sort();
    let mut names: Vec<&'static str> = Vec::new();
    for (_, candidate) in scored {
        if !names.contains(&candidate) {
            names.push(candidate);
        }
    }
    names.truncate(8);
    names
}

/// `hidden` and every feature that needs one of them, directly or through another, in the
/// table's order.
pub fn hidden_closure(hidden: &[&'static NamedFeature]) -> Vec<&'static NamedFeature> {
    let mut in_closure: Vec<bool> = FEATURES
        .iter()
        .map(|f| hidden.iter().any(|h| h.name == f.name))
        .collect();
    loop {
        let mut grew = false;
        for (i, feature) in FEATURES.iter().enumerate() {
            if in_closure[i] {
                continue;
            }
            let needs_hidden = feature.requires.iter().any(|needed| {
                FEATURES
                    .iter()
                    .position(|f| f.name == *needed)
                    .is_some_and(|j| in_closure[j])
            });
            if needs_hidden {
                in_closure[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    FEATURES
        .iter()
        .zip(in_closure)
        .filter_map(|(f, hidden)| hidden.then_some(f))
        .collect()
}

/// The chain of requirements by which hiding `hidden` hides `feature`: `["avx2", "avx",
/// "xsave"]` for avx2 under xsave. `None` if it does not.
pub fn why_hidden(
    feature: &'static NamedFeature,
    hidden: &[&'static NamedFeature],
) -> Option<Vec<&'static str>> {
    if hidden.iter().any(|h| h.name == feature.name) {
        return Some(vec![feature.name]);
    }
    feature.requires.iter().find_map(|needed| {
        let needed = lookup(needed)?;
        let mut chain = why_hidden(needed, hidden)?;
        chain.insert(0, feature.name);
        Some(chain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str) -> (u32, u32, Reg, u8) {
        let Bit(leaf, subleaf, reg, bit) = lookup(name).expect(name).bit;
        (leaf, subleaf, reg, bit)
    }

    #[test]
    fn bits_are_where_the_sdm_puts_them() {
        // SDM Vol. 2A, table 3-10 (leaf 1 ECX).
        assert_eq!(at("pcid"), (1, 0, Ecx, 17));
        assert_eq!(at("x2apic"), (1, 0, Ecx, 21));
        assert_eq!(at("tsc-deadline"), (1, 0, Ecx, 24));
        assert_eq!(at("xsave"), (1, 0, Ecx, 26));
        assert_eq!(at("avx"), (1, 0, Ecx, 28));
        assert_eq!(at("rdrand"), (1, 0, Ecx, 30));
        assert_eq!(at("hypervisor"), (1, 0, Ecx, 31));
        // Table 3-8 (leaf 7 subleaf 0).
        assert_eq!(at("fsgsbase"), (7, 0, Ebx, 0));
        assert_eq!(at("avx2"), (7, 0, Ebx, 5));
        assert_eq!(at("smep"), (7, 0, Ebx, 7));
        assert_eq!(at("erms"), (7, 0, Ebx, 9));
        assert_eq!(at("invpcid"), (7, 0, Ebx, 10));
        assert_eq!(at("avx512f"), (7, 0, Ebx, 16));
        assert_eq!(at("rdseed"), (7, 0, Ebx, 18));
        assert_eq!(at("smap"), (7, 0, Ebx, 20));
        assert_eq!(at("avx512vl"), (7, 0, Ebx, 31));
        assert_eq!(at("umip"), (7, 0, Ecx, 2));
        assert_eq!(at("pku"), (7, 0, Ecx, 3));
        assert_eq!(at("la57"), (7, 0, Ecx, 16));
        assert_eq!(at("amx-tile"), (7, 0, Edx, 24));
        assert_eq!(at("avx512-bf16"), (7, 1, Eax, 5));
        assert_eq!(at("xsaves"), (0xd, 1, Eax, 3));
        // AMD APM Vol. 3, E.4.2 (leaf 0x8000_0001).
        assert_eq!(at("pdpe1gb"), (EXT, 0, Edx, 26));
        assert_eq!(at("rdtscp"), (EXT, 0, Edx, 27));
        assert_eq!(at("lahf-lm"), (EXT, 0, Ecx, 0));
    }

    #[test]
    fn the_probe_features_agree_with_the_probe_table() {
        use super::super::CpuFeature;
        for feature in CpuFeature::ALL {
            let name = feature.name();
            let named = lookup(name).expect(name);
            assert_eq!(named.bit, feature.bit(), "{}", named.name);
        }
    }

    #[test]
    fn names_are_unique_and_requirements_exist() {
        for (i, feature) in FEATURES.iter().enumerate() {
            assert!(
                FEATURES[..i].iter().all(|g| g.name != feature.name),
                "{} twice",
                feature.name
            );
            assert!(
                FEATURES[..i].iter().all(|g| g.bit != feature.bit),
                "{}: a bit named twice",
                feature.name
            );
            for needed in feature.requires {
                assert!(lookup(needed).is_some(), "{} needs {needed}", feature.name);
            }
        }
        for (alias, canonical) in ALIASES {
            assert_eq!(
                lookup(alias).map(|f| f.name),
                Some(*canonical),
                "alias {alias}"
            );
        }
    }

    #[test]
    fn lookup_takes_any_case_and_underscores() {
        assert_eq!(lookup("X2APIC").map(|f| f.name), Some("x2apic"));
        assert_eq!(lookup("tsc_deadline").map(|f| f.name), Some("tsc-deadline"));
        assert_eq!(lookup("sse4_1").map(|f| f.name), Some("sse4.1"));
        assert_eq!(lookup("sse3").map(|f| f.name), Some("pni"));
        assert!(lookup("x3apic").is_none());
        assert!(lookup("").is_none());
    }

    fn names(features: &[&NamedFeature]) -> Vec<&'static str> {
        features.iter().map(|f| f.name).collect()
    }

    fn closure_of(hidden: &[&str]) -> Vec<&'static str> {
        let hidden: Vec<_> = hidden.iter().map(|n| lookup(n).expect(n)).collect();
        names(&hidden_closure(&hidden))
    }

    #[test]
    fn hiding_xsave_hides_everything_built_on_it() {
        let all = closure_of(&["xsave"]);
        for name in [
            "xsave",
            "osxsave",
            "avx",
            "fma",
            "f16c",
            "avx2",
            "avx512f",
            "avx512vl",
            "avx512vbmi2",
            "avx512-fp16",
            "avx512-bf16",
            "pku",
            "ospke",
            "amx-tile",
            "amx-int8",
            "xsaveopt",
            "xsaves",
            "vaes",
            "xop",
        ] {
            assert!(all.contains(&name), "{name} in {all:?}");
        }
        for name in ["bmi1", "bmi2", "x2apic", "sse4.2", "aes", "cx16", "gfni"] {
            assert!(!all.contains(&name), "{name} in {all:?}");
        }
    }

    #[test]
    fn hiding_avx_keeps_xsave_and_pku() {
        let all = closure_of(&["avx"]);
        assert!(all.contains(&"avx2") && all.contains(&"avx512f") && all.contains(&"fma"));
        assert!(all.contains(&"avx512bw") && all.contains(&"avx512-fp16"));
        for name in ["xsave", "osxsave", "pku", "amx-tile", "xsaves"] {
            assert!(!all.contains(&name), "{name} in {all:?}");
        }
    }

    #[test]
    fn hiding_avx512f_hides_only_avx512() {
        let all = closure_of(&["avx512f"]);
        assert!(all.iter().all(|n| n.starts_with("avx512")), "{all:?}");
        assert!(all.contains(&"avx512vbmi2") && all.contains(&"avx512-bf16"));
        assert_eq!(
            closure_of(&["avx512vl"]).len(),
            6,
            "vl, vbmi2, vnni, bitalg, vp2intersect, bf16"
        );
    }

    #[test]
    fn a_feature_nothing_needs_hides_alone() {
        for name in [
            "x2apic",
            "la57",
            "hypervisor",
            "tsc-deadline",
            "pcid",
            "smap",
        ] {
            assert_eq!(closure_of(&[name]), vec![name]);
        }
        assert!(closure_of(&[]).is_empty());
    }

    #[test]
    fn why_hidden_names_the_chain() {
        let xsave = lookup("xsave").expect("xsave");
        let avx512bw = lookup("avx512bw").expect("avx512bw");
        assert_eq!(
            why_hidden(avx512bw, &[xsave]),
            Some(vec!["avx512bw", "avx512f", "avx2", "avx", "xsave"])
        );
        assert_eq!(why_hidden(lookup("bmi1").expect("bmi1"), &[xsave]), None);
    }

    #[test]
    fn close_matches_catch_typos_and_prefixes() {
        assert_eq!(close_matches("x2apci").first(), Some(&"x2apic"));
        assert!(close_matches("avx512").contains(&"avx512f"));
        assert!(close_matches("avx512").len() <= 8);
        assert!(close_matches("tsc_deadlin").contains(&"tsc-deadline"));
        assert!(close_matches("frobnicate").is_empty());
    }
}
