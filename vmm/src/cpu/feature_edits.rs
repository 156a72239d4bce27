//! The features a user hides from the guest's CPUID or requires in it (`-x2apic,+avx2`, as
//! QEMU's `-cpu` takes them): parsed, checked for contradictions, and applied to a CPUID with
//! everything that depends on a hidden feature.

use kvm_bindings::CpuId;

use super::cpuid::{clear, drop_xsave_components, hide_features, Bit, CpuFeature};
use super::feature_table::{self, NamedFeature};

/// A feature list that cannot be used as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// An empty item (`-x2apic,,+avx`) or an empty list.
    #[error("an empty feature in {list:?}; write features as `-NAME` (hide) or `+NAME` (require), separated by commas, e.g. -x2apic,+avx2")]
    Empty {
        /// The whole list.
        list: String,
    },
    /// A name without `+` or `-`.
    #[error("{item:?} needs a sign: `-{item}` hides it from the guest, `+{item}` requires it")]
    NoSign {
        /// The item as written.
        item: String,
    },
    /// A name the table does not know.
    #[error("unknown CPU feature {name:?}{}", suggestion(close))]
    Unknown {
        /// The name as written.
        name: String,
        /// The table's names closest to it.
        close: Vec<&'static str>,
    },
    /// `+osxsave` or `+ospke`: bits the guest's kernel sets itself (CR4.OSXSAVE, CR4.PKE).
    #[error("+{name} cannot be required: the CPU shows it once the guest's kernel sets {cr4}; require +{instead}")]
    SetByTheGuest {
        /// The feature.
        name: &'static str,
        /// The control bit that sets it.
        cr4: &'static str,
        /// The feature to require instead.
        instead: &'static str,
    },
    /// One feature both hidden and required.
    #[error("{name} is both hidden (-{name}) and required (+{name})")]
    Both {
        /// The feature.
        name: &'static str,
    },
    /// A required feature that a hidden one takes along.
    #[error("+{required} contradicts -{hidden}: {}", chain.join(" needs "))]
    Contradiction {
        /// The required feature.
        required: &'static str,
        /// The hidden feature it needs (directly or through others).
        hidden: &'static str,
        /// From the required feature to the hidden one: `["avx2", "avx", "xsave"]`.
        chain: Vec<&'static str>,
    },
}

/// CPUID bits that mirror a CR4 bit the guest sets (SDM Vol. 2A, table 3-10 and 3-8): the
/// feature, the CR4 bit, the feature that makes it possible.
const SET_BY_THE_GUEST: &[(&str, &str, &str)] = &[
    ("osxsave", "CR4.OSXSAVE", "xsave"),
    ("ospke", "CR4.PKE", "pku"),
];

fn suggestion(close: &[&str]) -> String {
    if close.is_empty() {
        " (the names are QEMU's `-cpu` feature names: x2apic, avx2, avx512f, tsc-deadline...; docs/cli.md lists them)".to_owned()
    } else {
        format!(" (did you mean {}?)", close.join(", "))
    }
}

/// A required feature the guest cannot have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// KVM does not offer it on this host.
    #[error("+{name}: this host's KVM cannot give the guest {name} (it is not in KVM_GET_SUPPORTED_CPUID)")]
    NotSupported {
        /// The feature.
        name: &'static str,
    },
    /// KVM offers it, but `--cpuid filtered` took it out.
    #[error("+{name}: KVM offers {name}, but the host probe found that it (or a feature it needs) fails at CPL0 on this host, so the filtered CPUID leaves it out")]
    FilteredOut {
        /// The feature.
        name: &'static str,
    },
}

/// Features to hide and features to require, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureEdits {
    hide: Vec<&'static NamedFeature>,
    require: Vec<&'static NamedFeature>,
}

/// The guest's CPUID after [`FeatureEdits::apply`].
#[derive(Debug)]
pub struct Applied {
    /// The CPUID to give the guest.
    pub cpuid: CpuId,
    /// Features the guest would have seen that went only because they need a hidden one, in
    /// the table's order.
    pub also_hidden: Vec<&'static str>,
}

impl FeatureEdits {
    /// Parses `-NAME` and `+NAME` items separated by commas (names as QEMU's `-cpu` spells
    /// them; `_` for `-` and any case are fine). A repeated item counts once.
    pub fn parse(list: &str) -> Result<Self, ParseError> {
        let mut edits = FeatureEdits::default();
        for item in list.split(',').map(str::trim) {
            let (hide, name) = match (item.strip_prefix('-'), item.strip_prefix('+')) {
                (Some(name), _) => (true, name),
                (_, Some(name)) => (false, name),
                _ if item.is_empty() => {
                    return Err(ParseError::Empty {
                        list: list.to_owned(),
                    })
                }
                _ => {
                    return Err(ParseError::NoSign {
                        item: item.to_owned(),
                    })
                }
            };
            if name.trim().is_empty() {
                return Err(ParseError::Empty {
                    list: list.to_owned(),
                });
            }
            let feature = feature_table::lookup(name).ok_or_else(|| ParseError::Unknown {
                name: name.to_owned(),
                close: feature_table::close_matches(name),
            })?;
            let (this, other) = if hide {
                (&mut edits.hide, &edits.require)
            } else {
                (&mut edits.require, &edits.hide)
            };
            if other.contains(&feature) {
                return Err(ParseError::Both { name: feature.name });
            }
            if let Some(&(_, cr4, instead)) = (!hide)
                .then(|| SET_BY_THE_GUEST.iter().find(|(n, _, _)| *n == feature.name))
                .flatten()
            {
                return Err(ParseError::SetByTheGuest {
                    name: feature.name,
                    cr4,
                    instead,
                });
            }
            if !this.contains(&feature) {
                this.push(feature);
            }
        }
        for &required in &edits.require {
            if let Some(chain) = feature_table::why_hidden(required, &edits.hide) {
                return Err(ParseError::Contradiction {
                    required: required.name,
                    hidden: chain.last().copied().unwrap_or(required.name),
                    chain,
                });
            }
        }
        Ok(edits)
    }

    /// Edits that hide `features` and require nothing.
    pub(super) fn hiding(features: Vec<&'static NamedFeature>) -> Self {
        FeatureEdits {
            hide: features,
            require: Vec::new(),
        }
    }

    /// The names required, with every feature they need, directly or through another.
    pub(super) fn required_with_needs(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        let mut todo: Vec<&'static str> = self.required();
        while let Some(name) = todo.pop() {
            if names.contains(&name) {
                continue;
            }
            names.push(name);
            if let Some(feature) = feature_table::lookup(name) {
                todo.extend(feature.requires);
            }
        }
        names
    }

    /// Whether there is nothing to hide or require.
    pub fn is_empty(&self) -> bool {
        self.hide.is_empty() && self.require.is_empty()
    }

    /// The names hidden as written.
    pub fn hidden(&self) -> Vec<&'static str> {
        self.hide.iter().map(|f| f.name).collect()
    }

    /// The names hidden, with every feature that needs one of them, in the table's order.
    pub fn hidden_with_dependents(&self) -> Vec<&'static str> {
        feature_table::hidden_closure(&self.hide)
            .into_iter()
            .map(|f| f.name)
            .collect()
    }

    /// The names required as written.
    pub fn required(&self) -> Vec<&'static str> {
        self.require.iter().map(|f| f.name).collect()
    }

    /// `guest` (the CPUID drvisor would give the guest) with the hidden features and all that
    /// need them cleared, once every required feature is found in it. `kvm` is
    /// `KVM_GET_SUPPORTED_CPUID` as KVM returned it: it tells a feature this host cannot give
    /// from one `--cpuid filtered` took out. Leaf 0xD stays consistent: without XSAVE it is
    /// zero; the state components of AVX, AVX-512, PKU and AMX leave its supported XCR0 and
    /// its sizes with their feature.
    pub fn apply(&self, kvm: &CpuId, guest: &CpuId) -> Result<Applied, ApplyError> {
        for &feature in &self.require {
            if !feature.bit.set_in(guest) {
                let name = feature.name;
                return Err(if feature.bit.set_in(kvm) {
                    ApplyError::FilteredOut { name }
                } else {
                    ApplyError::NotSupported { name }
                });
            }
        }
        let closure = feature_table::hidden_closure(&self.hide);
        let also_hidden = closure
            .iter()
            .filter(|f| !self.hide.contains(f) && f.bit.set_in(guest))
            .map(|f| f.name)
            .collect();
        // The probe's own hiding keeps its families and leaf 0xD consistent for XSAVE, AVX
        // and AVX2; the named bits and the other state components follow.
        let probe_features: Vec<CpuFeature> = CpuFeature::ALL
            .into_iter()
            .filter(|p| closure.iter().any(|f| f.bit == p.bit()))
            .collect();
        let mut cpuid = hide_features(guest, &probe_features);
        let bits: Vec<Bit> = closure.iter().map(|f| f.bit).collect();
        clear(&mut cpuid, &bits);
        if !probe_features.contains(&CpuFeature::Xsave) {
            let xcr0 = closure.iter().fold(0, |mask, f| mask | f.xcr0);
            if xcr0 != 0 {
                drop_xsave_components(&mut cpuid, xcr0);
            }
        }
        Ok(Applied { cpuid, also_hidden })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_entries::entry;
    use kvm_bindings::kvm_cpuid_entry2;

    /// Every bit set, with leaf 0xD for x87 | SSE | YMM | AVX-512 | PKRU (Skylake-SP sizes).
    fn everything() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0, [0x000a_0671, 0x0102_0800, 0xffff_ffff, 0xffff_ffff]),
            entry(7, 0, [1, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]),
            entry(7, 1, [0xffff_ffff, 0, 0, 0]),
            entry(0xd, 0, [0x2e7, 0xa88, 0xa88, 0]),
            entry(0xd, 1, [0xf, 0xa88, 0, 0]),
            entry(0xd, 2, [0x100, 0x240, 0, 0]),
            entry(0xd, 5, [0x40, 0x440, 0, 0]),
            entry(0xd, 6, [0x200, 0x480, 0, 0]),
            entry(0xd, 7, [0x400, 0x680, 0, 0]),
            entry(0xd, 9, [0x8, 0xa80, 0, 0]),
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

    fn set(cpuid: &CpuId, name: &str) -> bool {
        feature_table::lookup(name).expect(name).bit.set_in(cpuid)
    }

    fn apply(list: &str, host: &CpuId) -> Applied {
        FeatureEdits::parse(list)
            .expect("a valid list")
            .apply(host, host)
            .expect("applies")
    }

    #[test]
    fn parse_takes_signs_case_and_repeats() {
        let edits = FeatureEdits::parse("-x2apic, -AVX512F,+tsc_deadline,-x2apic").expect("valid");
        assert_eq!(edits.hidden(), vec!["x2apic", "avx512f"]);
        assert_eq!(edits.required(), vec!["tsc-deadline"]);
        assert!(!edits.is_empty());
        assert!(FeatureEdits::default().is_empty());
    }

    #[test]
    fn parse_refuses_what_it_cannot_use() {
        assert!(matches!(
            FeatureEdits::parse(""),
            Err(ParseError::Empty { .. })
        ));
        assert!(matches!(
            FeatureEdits::parse("-x2apic,,+avx"),
            Err(ParseError::Empty { .. })
        ));
        assert!(matches!(
            FeatureEdits::parse("-"),
            Err(ParseError::Empty { .. })
        ));
        assert_eq!(
            FeatureEdits::parse("x2apic"),
            Err(ParseError::NoSign {
                item: "x2apic".into()
            })
        );
        let Err(ParseError::Unknown { name, close }) = FeatureEdits::parse("-x2apci") else {
            panic!("an unknown name");
        };
        assert_eq!((name.as_str(), close.first()), ("x2apci", Some(&"x2apic")));
        assert_eq!(
            FeatureEdits::parse("+osxsave"),
            Err(ParseError::SetByTheGuest {
                name: "osxsave",
                cr4: "CR4.OSXSAVE",
                instead: "xsave"
            })
        );
        assert!(FeatureEdits::parse("-osxsave,-ospke").is_ok());
        assert_eq!(
            FeatureEdits::parse("-x2apic,+x2apic"),
            Err(ParseError::Both { name: "x2apic" })
        );
        assert_eq!(
            FeatureEdits::parse("+avx2,-xsave"),
            Err(ParseError::Contradiction {
                required: "avx2",
                hidden: "xsave",
                chain: vec!["avx2", "avx", "xsave"]
            })
        );
    }

    #[test]
    fn error_messages_say_how_to_fix_it() {
        let unknown = FeatureEdits::parse("-x2apci").unwrap_err().to_string();
        assert!(unknown.contains("did you mean x2apic"), "{unknown}");
        let none = FeatureEdits::parse("-zzzzzzzz").unwrap_err().to_string();
        assert!(none.contains("docs/cli.md"), "{none}");
        let sign = FeatureEdits::parse("avx").unwrap_err().to_string();
        assert!(
            sign.contains("`-avx` hides") && sign.contains("`+avx` requires"),
            "{sign}"
        );
        let contra = FeatureEdits::parse("-avx,+avx512bw")
            .unwrap_err()
            .to_string();
        assert_eq!(
            contra,
            "+avx512bw contradicts -avx: avx512bw needs avx512f needs avx2 needs avx"
        );
    }

    #[test]
    fn hiding_x2apic_clears_exactly_its_bit() {
        let host = everything();
        let out = apply("-x2apic", &host);
        assert_eq!(get(&out.cpuid, 1, 0).ecx, !(1 << 21));
        assert!(out.also_hidden.is_empty());
        for e in host.as_slice().iter().filter(|e| e.function != 1) {
            assert_eq!(get(&out.cpuid, e.function, e.index), *e);
        }
    }

    #[test]
    fn hiding_each_named_feature_clears_its_bit() {
        let host = everything();
        for feature in feature_table::FEATURES {
            let out = apply(&format!("-{}", feature.name), &host);
            assert!(!feature.bit.set_in(&out.cpuid), "{}", feature.name);
        }
    }

    #[test]
    fn hiding_xsave_clears_its_dependents_and_leaf_0xd() {
        let host = everything();
        let out = apply("-xsave", &host);
        for name in [
            "xsave", "avx", "avx2", "avx512f", "pku", "amx-tile", "xsaves", "fma",
        ] {
            assert!(!set(&out.cpuid, name), "{name}");
        }
        for name in ["bmi1", "x2apic", "aes", "gfni"] {
            assert!(set(&out.cpuid, name), "{name}");
        }
        assert!(out.also_hidden.contains(&"avx512bw"));
        let edits = FeatureEdits::parse("-xsave").expect("valid");
        assert_eq!(edits.hidden_with_dependents().first(), Some(&"fma"));
        assert!(edits.hidden_with_dependents().contains(&"xsave"));
        assert!(!out.also_hidden.contains(&"xsave"));
        for e in out.cpuid.as_slice().iter().filter(|e| e.function == 0xd) {
            assert_eq!(
                (e.eax, e.ebx, e.ecx, e.edx),
                (0, 0, 0, 0),
                "0xD.{}",
                e.index
            );
        }
    }

    #[test]
    fn hiding_avx512f_drops_its_state_but_keeps_avx2_and_pkru() {
        let host = everything();
        let out = apply("-avx512f", &host);
        assert!(set(&out.cpuid, "avx2") && set(&out.cpuid, "pku"));
        assert!(!set(&out.cpuid, "avx512vl") && !set(&out.cpuid, "avx512-bf16"));
        let d0 = get(&out.cpuid, 0xd, 0);
        assert_eq!(d0.eax, 0x207, "x87 | SSE | YMM | PKRU");
        assert_eq!(d0.ecx, 0xa80 + 8, "up to the end of PKRU");
        assert_eq!(get(&out.cpuid, 0xd, 5).eax, 0);
    }

    #[test]
    fn hiding_pku_drops_pkru_and_ospke() {
        let host = everything();
        let out = apply("-pku", &host);
        assert!(!set(&out.cpuid, "ospke"));
        assert_eq!(out.also_hidden, vec!["ospke"]);
        assert_eq!(get(&out.cpuid, 0xd, 0).eax, 0xe7);
        assert_eq!(get(&out.cpuid, 0xd, 0).ecx, 0x680 + 0x400);
    }

    #[test]
    fn also_hidden_lists_only_what_the_guest_had() {
        let mut host = everything();
        for e in host.as_mut_slice().iter_mut().filter(|e| e.function == 7) {
            (e.eax, e.ebx, e.ecx, e.edx) = (e.eax, 1 << 5, 0, 0);
        }
        let out = apply("-avx", &host);
        assert!(out.also_hidden.contains(&"avx2") && out.also_hidden.contains(&"fma"));
        assert!(
            !out.also_hidden.contains(&"avx512f"),
            "{:?}",
            out.also_hidden
        );
    }

    #[test]
    fn a_required_feature_must_be_there() {
        let host = everything();
        let mut kvm_list = host.clone();
        let mut guest = host.clone();
        for e in guest.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
            e.ecx &= !(1 << 28);
        }
        for e in kvm_list
            .as_mut_slice()
            .iter_mut()
            .filter(|e| e.function == 7)
        {
            e.ebx &= !(1 << 16);
        }
        for e in guest.as_mut_slice().iter_mut().filter(|e| e.function == 7) {
            e.ebx &= !(1 << 16);
        }
        let edits = |list| FeatureEdits::parse(list).expect("valid");
        assert_eq!(
            edits("+avx512f").apply(&kvm_list, &guest).unwrap_err(),
            ApplyError::NotSupported { name: "avx512f" }
        );
        assert_eq!(
            edits("+avx").apply(&kvm_list, &guest).unwrap_err(),
            ApplyError::FilteredOut { name: "avx" }
        );
        let ok = edits("+x2apic,-la57")
            .apply(&kvm_list, &guest)
            .expect("x2apic is there");
        assert!(set(&ok.cpuid, "x2apic") && !set(&ok.cpuid, "la57"));
        let message = ApplyError::NotSupported { name: "avx512f" }.to_string();
        assert!(message.contains("KVM_GET_SUPPORTED_CPUID"), "{message}");
    }

    #[test]
    fn nothing_to_do_changes_nothing() {
        let host = everything();
        let out = FeatureEdits::default()
            .apply(&host, &host)
            .expect("applies");
        assert_eq!(out.cpuid.as_slice(), host.as_slice());
    }
}
