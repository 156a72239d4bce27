//! What the probe's answers depend on, read from the host: the kernel, the KVM modules and their
//! parameters, the CPU and its microcode, and drvisor's own probe code. Two hosts (or one host
//! before and after an update) with equal keys give equal answers, so a cached answer is used
//! only under an equal key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bumped whenever an experiment changes what it runs or how it judges, so that answers from an
/// older probe are never reused (the source hash below catches what a forgotten bump misses).
pub const PROBE_VERSION: u32 = 1;

/// The probe's own source, hashed into the key: a rebuilt drvisor with changed experiments
/// re-probes even at the same version number.
const PROBE_SOURCES: [&str; 4] = [
    include_str!("experiments.rs"),
    include_str!("instructions.rs"),
    include_str!("tiny_vm.rs"),
    include_str!("mod.rs"),
];

/// The `/proc/cpuinfo` fields of the first CPU that identify it (not its clock, which moves).
const CPU_FIELDS: [&str; 7] = [
    "vendor_id",
    "cpu family",
    "model",
    "model name",
    "stepping",
    "microcode",
    "flags",
];

/// The key a cached probe answer is stored under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v`: the build of that release.
    pub kernel_version: String,
    /// Every `/sys/module/kvm*/parameters/*`, as `module/parameter` -> value.
    pub kvm_parameters: BTreeMap<String, String>,
    /// The identifying fields of `/proc/cpuinfo`'s first entry.
    pub cpu: BTreeMap<String, String>,
    /// drvisor's package version.
    pub drvisor_version: String,
    /// [`PROBE_VERSION`] and a hash of the probe's source.
    pub probe_code: String,
}

impl HostKey {
    /// The key of this host, read from `/proc` and `/sys`. What cannot be read is recorded as
    /// such (an unreadable file is part of the host's state too).
    pub fn read() -> HostKey {
        let text = |p: &str| read_trimmed(Path::new(p));
        HostKey {
            kernel_release: text("/proc/sys/kernel/osrelease"),
            kernel_version: text("/proc/sys/kernel/version"),
            kvm_parameters: kvm_parameters(Path::new("/sys/module")),
            cpu: cpu_fields(&text("/proc/cpuinfo")),
            drvisor_version: env!("CARGO_PKG_VERSION").to_owned(),
            probe_code: probe_code(),
        }
    }

    /// The first field in which `self` and `other` differ, for the debug line that says why a
    /// cache was not used; `None` if they are equal.
    pub fn first_difference(&self, other: &HostKey) -> Option<&'static str> {
        [
            (
                "kernel release",
                self.kernel_release == other.kernel_release,
            ),
            (
                "kernel version",
                self.kernel_version == other.kernel_version,
            ),
            (
                "KVM module parameters",
                self.kvm_parameters == other.kvm_parameters,
            ),
            ("CPU model or microcode", self.cpu == other.cpu),
            (
                "drvisor version",
                self.drvisor_version == other.drvisor_version,
            ),
            ("probe code", self.probe_code == other.probe_code),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(what, _)| what)
    }
}

fn read_trimmed(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim_end().to_owned(),
        Err(e) => format!("<unreadable: {}>", e.kind()),
    }
}

/// `module/parameter` -> value for every module under `sys_module` whose name starts with `kvm`.
pub fn kvm_parameters(sys_module: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(modules) = std::fs::read_dir(sys_module) else {
        return out;
    };
    for module in modules.flatten() {
        let name = module.file_name().to_string_lossy().into_owned();
        if !name.starts_with("kvm") {
            continue;
        }
        let Ok(params) = std::fs::read_dir(module.path().join("parameters")) else {
            out.insert(name, "<no parameters>".into());
            continue;
        };
        for param in params.flatten() {
            let key = format!("{name}/{}", param.file_name().to_string_lossy());
            out.insert(key, read_trimmed(&param.path()));
        }
    }
    out
}

/// The identifying fields of the first entry of `cpuinfo` (a `/proc/cpuinfo` text).
pub fn cpu_fields(cpuinfo: &str) -> BTreeMap<String, String> {
    cpuinfo
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| CPU_FIELDS.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `v{PROBE_VERSION}-{hash}`: FNV-1a over the probe's source, stable across builds and hosts.
pub fn probe_code() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in PROBE_SOURCES.iter().flat_map(|s| s.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("v{PROBE_VERSION}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str =
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
        model name\t: AMD EPYC\nstepping\t: 1\nmicrocode\t: 0x1000065\ncpu MHz\t\t: 2596.144\n\
        flags\t\t: fpu vme\n\nprocessor\t: 1\nmicrocode\t: 0x1000066\n";

    #[test]
    fn the_cpu_is_its_first_entry_without_its_clock() {
        let cpu = cpu_fields(CPUINFO);
        assert_eq!(cpu["microcode"], "0x1000065");
        assert_eq!(cpu["model name"], "AMD EPYC");
        assert_eq!(cpu["flags"], "fpu vme");
        assert!(!cpu.contains_key("cpu MHz"));
        assert!(!cpu.contains_key("processor"));
        assert_eq!(cpu.len(), 7);
        // A new clock speed is the same CPU; new microcode is not.
        assert_eq!(cpu_fields(&CPUINFO.replace("2596.144", "3000.0")), cpu);
        assert_ne!(
            cpu_fields(&CPUINFO.replacen("0x1000065", "0x1000070", 1)),
            cpu
        );
    }

    #[test]
    fn kvm_parameters_are_read_per_module_and_other_modules_are_left_out() {
        let root = std::env::temp_dir().join(format!("drvisor-hostkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (module, param, value) in [
            ("kvm", "halt_poll_ns", "200000\n"),
            ("kvm_amd", "nested", "1\n"),
            ("loop", "max_loop", "8\n"),
        ] {
            let dir = root.join(module).join("parameters");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(param), value).unwrap();
        }
        let params = kvm_parameters(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(params.len(), 2, "{params:?}");
        assert_eq!(params["kvm/halt_poll_ns"], "200000");
        assert_eq!(params["kvm_amd/nested"], "1");
    }

    #[test]
    fn the_first_difference_names_the_field() {
        let key = HostKey::read();
        assert_eq!(key.first_difference(&key.clone()), None);
        let mut other = key.clone();
        other.kernel_release.push('+');
        assert_eq!(key.first_difference(&other), Some("kernel release"));
        let mut other = key.clone();
        other.kvm_parameters.insert("kvm/new".into(), "Y".into());
        assert_eq!(key.first_difference(&other), Some("KVM module parameters"));
        let mut other = key.clone();
        other.probe_code = "v0-0".into();
        assert_eq!(key.first_difference(&other), Some("probe code"));
    }

    #[test]
    fn the_probe_code_key_names_the_version_and_is_stable() {
        assert!(probe_code().starts_with(&format!("v{PROBE_VERSION}-")));
        assert_eq!(probe_code(), probe_code());
    }
}
