//! A kvm-unit-tests cfg entry's `-cpu MODEL,+feature` as QEMU treats it. QEMU gives the guest
//! a `+feature` this host's KVM cannot give by warning (`host doesn't support requested
//! feature: CPUID.01H:ECX.vmx [bit 5]`) and running without it; `drvisor run` refuses such a
//! feature, so that no run of its own starts with a feature silently missing. For a cfg entry
//! the harness does what QEMU does, in the open: it drops the feature before the run, and the
//! report carries a skipped case `+feature` with the reason.
//!
//! Pure: the spec and what KVM lacks in, the spec without those features and the notes out.
//! What KVM lacks comes from the caller (`drvisor ci` asks `KVM_GET_SUPPORTED_CPUID`).

use serde::Serialize;

use crate::spec::VmSpec;

/// A `+feature` taken out of a spec's `cpu_features` before its run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DroppedFeature {
    /// As the spec wrote it: `+vmx`.
    pub feature: String,
    /// Why, and what QEMU does with it.
    pub reason: String,
}

/// What this host's KVM and drvisor make of a feature name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// KVM can give the guest this feature.
    Offered,
    /// drvisor knows it, and this host's KVM cannot give it.
    Lacking,
    /// drvisor's `--cpu-features` does not know the name (QEMU's `npt`, `vmx-mbec`...).
    Unknown,
}

/// Takes every `+feature` this host's KVM lacks out of `vm.cpu_features`, when the spec asks for
/// QEMU's treatment ([`VmSpec::drop_unoffered_features`]) and will run; the list goes when
/// nothing is left in it. Each dropped feature is recorded in `vm.dropped_features`. A name
/// drvisor does not know makes the entry one it cannot run (`vm.not_run`, with the name):
/// drvisor cannot give the guest that CPU, nor tell whether this host could.
/// `offer` gets the name without its sign, as written (`tsc-deadline`).
pub fn drop_unoffered(vm: &mut VmSpec, offer: &dyn Fn(&str) -> Offer) {
    if !vm.drop_unoffered_features || vm.not_run.is_some() {
        return;
    }
    let Some(list) = vm.cpu_features.take() else {
        return;
    };
    let mut kept = Vec::new();
    for item in list.split(',') {
        let name = item.trim().trim_start_matches(['+', '-']);
        match (offer(name), item.trim().starts_with('+')) {
            (Offer::Unknown, _) => {
                vm.not_run = Some(format!(
                    "needs the CPU feature `{name}` (`-cpu ...,{}`), which drvisor's \
                     --cpu-features does not know",
                    item.trim()
                ));
                vm.cpu_features = Some(list);
                vm.dropped_features.clear();
                return;
            }
            (Offer::Lacking, true) => vm.dropped_features.push(DroppedFeature {
                feature: format!("+{name}"),
                reason: format!(
                    "this host's KVM cannot give the guest {name} (it is not in \
                     KVM_GET_SUPPORTED_CPUID): the entry runs without it, as QEMU runs it after \
                     warning \"host doesn't support requested feature\""
                ),
            }),
            _ => kept.push(item),
        }
    }
    vm.cpu_features = (!kept.is_empty()).then(|| kept.join(","));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(features: &str) -> VmSpec {
        VmSpec {
            cpu_features: Some(features.into()),
            drop_unoffered_features: true,
            ..VmSpec::default()
        }
    }

    fn lacks_vmx_and_pcid(name: &str) -> Offer {
        match name {
            "vmx" | "pcid" => Offer::Lacking,
            "npt" => Offer::Unknown,
            _ => Offer::Offered,
        }
    }

    /// A name drvisor does not know: the entry is not run, with the name, list untouched.
    #[test]
    fn an_unknown_feature_is_an_entry_drvisor_cannot_run() {
        let mut v = vm("+vmx,+npt");
        drop_unoffered(&mut v, &lacks_vmx_and_pcid);
        let why = v.not_run.as_deref().unwrap_or_default();
        assert!(why.contains("`npt` (`-cpu ...,+npt`)"), "{why}");
        assert_eq!(v.cpu_features.as_deref(), Some("+vmx,+npt"));
        assert!(v.dropped_features.is_empty());
    }

    #[test]
    fn what_kvm_lacks_is_dropped_with_a_note_and_the_rest_stays() {
        let mut v = vm("+vmx,-pku,+x2apic,+pcid");
        drop_unoffered(&mut v, &lacks_vmx_and_pcid);
        assert_eq!(v.cpu_features.as_deref(), Some("-pku,+x2apic"));
        let dropped: Vec<&str> = v
            .dropped_features
            .iter()
            .map(|d| d.feature.as_str())
            .collect();
        assert_eq!(dropped, ["+vmx", "+pcid"]);
        let why = &v.dropped_features[0].reason;
        assert!(
            why.contains("cannot give the guest vmx") && why.contains("QEMU"),
            "{why}"
        );
    }

    #[test]
    fn a_list_left_empty_goes() {
        let mut v = vm("+pcid,+vmx");
        drop_unoffered(&mut v, &lacks_vmx_and_pcid);
        assert_eq!(v.cpu_features, None);
        assert_eq!(v.dropped_features.len(), 2);
    }

    /// A hidden feature is never dropped: hiding what the host lacks is already done.
    #[test]
    fn only_required_features_are_dropped() {
        let mut v = vm("-vmx,-pcid");
        drop_unoffered(&mut v, &lacks_vmx_and_pcid);
        assert_eq!(v.cpu_features.as_deref(), Some("-vmx,-pcid"));
        assert!(v.dropped_features.is_empty());
    }

    /// A TOML spec keeps `drvisor run`'s rule: the run is refused, nothing is dropped.
    #[test]
    fn a_spec_that_did_not_ask_keeps_its_list() {
        let mut v = VmSpec {
            drop_unoffered_features: false,
            ..vm("+vmx")
        };
        drop_unoffered(&mut v, &lacks_vmx_and_pcid);
        assert_eq!(v.cpu_features.as_deref(), Some("+vmx"));
        assert!(v.dropped_features.is_empty());
        let mut not_run = VmSpec {
            not_run: Some("a 32-bit test".into()),
            ..vm("+vmx")
        };
        drop_unoffered(&mut not_run, &lacks_vmx_and_pcid);
        assert!(not_run.dropped_features.is_empty());
    }
}
