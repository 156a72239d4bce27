//! Upstream kvm-unit-tests' `x86/unittests.cfg`, read as its `run_tests.sh` reads it: each
//! entry's QEMU command line turned into drvisor's, and each entry into a spec `drvisor ci`
//! runs (`drvisor ci x86/unittests.cfg`). Pure: the cfg's text in, entries and specs out.

use std::path::Path;
use std::time::Duration;

use crate::spec::{Check, CheckKind, ResultsFormat, Spec, SpecError, VmSpec};

/// One `[name]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The section's name: `[name]`.
    pub name: String,
    /// The image, `NAME.flat`.
    pub file: String,
    /// `smp`: the vCPUs.
    pub smp: usize,
    /// `qemu_params` (or the older `extra_params`): QEMU options beyond upstream's `x86/run`.
    pub qemu_params: String,
    /// `test_args`: the kernel command line (`-append`).
    pub test_args: Option<String>,
    /// `arch`: `i386` or `x86_64`; `None` for both.
    pub arch: Option<String>,
    /// `timeout`, or run_tests.sh's default of 90 s.
    pub timeout: Duration,
}

/// run_tests.sh's timeout when the entry names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// The entries of a unittests.cfg, in order. `#` comments and blank lines are skipped; a
/// value's surrounding single or double quotes are removed, as the shell does.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("unittests.cfg line {}: `{raw}`", number + 1);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            entries.push(Entry {
                name: name.trim().to_owned(),
                file: String::new(),
                smp: 1,
                qemu_params: String::new(),
                test_args: None,
                arch: None,
                timeout: DEFAULT_TIMEOUT,
            });
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{}: neither a [section] nor key = value", at()))?;
        let value = unquote(value.trim());
        let entry = entries
            .last_mut()
            .ok_or_else(|| format!("{}: a key before the first [section]", at()))?;
        match key.trim() {
            "file" => entry.file = value.to_owned(),
            "smp" => {
                entry.smp = value
                    .parse()
                    .map_err(|_| format!("{}: smp is not a number", at()))?
            }
            "qemu_params" | "extra_params" => entry.qemu_params = value.to_owned(),
            "test_args" => entry.test_args = Some(value.to_owned()),
            "arch" => entry.arch = Some(value.to_owned()),
            "timeout" => {
                let secs = value.trim_end_matches('s');
                entry.timeout = Duration::from_secs(
                    secs.parse()
                        .map_err(|_| format!("{}: timeout is not a number of seconds", at()))?,
                )
            }
            // groups, check, accel, disabled_if: what run_tests.sh filters on; every entry
            // runs here, as `run_tests.sh -a` ran them for QEMU.
            _ => {}
        }
    }
    if let Some(e) = entries.iter().find(|e| e.file.is_empty()) {
        return Err(format!("unittests.cfg: [{}] names no file", e.name));
    }
    Ok(entries)
}

fn unquote(value: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// How drvisor runs an entry, or why it cannot.
#[derive(Debug, PartialEq)]
pub enum Translation {
    /// The VM drvisor boots for it.
    Run(EntryVm),
    /// What the entry needs that drvisor does not have.
    Cannot(String),
}

/// An entry's VM in drvisor's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryVm {
    /// `-smp`.
    pub vcpus: usize,
    /// `-m`, in MiB.
    pub mem_mib: u64,
    /// `-cpu`'s `+feature` and `-feature` options, in order.
    pub cpu_features: Vec<String>,
    /// `-cpu qemu64`: drvisor's model of it; `None` for the host's CPU.
    pub cpu_model: Option<String>,
    /// `-cpu ...,vendor=`.
    pub cpu_vendor: Option<String>,
    /// `test_args`.
    pub cmdline: Option<String>,
}

impl EntryVm {
    /// `drvisor run`'s options for it, beyond the image.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--vcpus".to_owned(),
            self.vcpus.to_string(),
            "--mem".to_owned(),
            self.mem_mib.to_string(),
        ];
        if let Some(model) = &self.cpu_model {
            args.extend(["--cpu-model".to_owned(), model.clone()]);
        }
        if let Some(vendor) = &self.cpu_vendor {
            args.extend(["--cpu-vendor".to_owned(), vendor.clone()]);
        }
        if !self.cpu_features.is_empty() {
            args.push(format!("--cpu-features={}", self.cpu_features.join(",")));
        }
        if let Some(line) = &self.cmdline {
            // `=`: a command line that starts with `-` is still the value.
            args.push(format!("--cmdline={line}"));
        }
        args
    }
}

/// QEMU's default guest RAM, which upstream's `x86/run` keeps.
const QEMU_DEFAULT_MEM_MIB: u64 = 128;

/// drvisor's options for `entry`, read from its QEMU options:
/// - `-smp` and `-m` become `--vcpus` and `--mem`;
/// - `-cpu qemu64,+f,-f` becomes `--cpu-model qemu64 --cpu-features +f,-f`, `vendor=V`
///   `--cpu-vendor V`; any other model
///   becomes the host's CPU with the features (`host` and `max` are it; the few entries that
///   name an older model, `IvyBridge`, `Opteron_G1`, `Skylake-Server`, test what their options
///   add or take away);
///   `host-phys-bits` and `migratable=no` describe what drvisor does anyway, as `-machine
///   pit=off` changes nothing its one entry measures;
/// - what drvisor lacks (Hyper-V enlightenments, the VMware backdoor, other `-device`s and
///   `-machine` options) makes the entry one drvisor cannot run, with the reason.
pub fn translate(entry: &Entry) -> Translation {
    let mut mem = QEMU_DEFAULT_MEM_MIB;
    let mut features: Vec<String> = Vec::new();
    let mut model = None;
    let mut vendor = None;
    let mut words = entry.qemu_params.split_whitespace();
    while let Some(word) = words.next() {
        let Some(value) = (match word {
            "-enable-kvm" => continue,
            "-cpu" | "-m" | "-device" | "-machine" | "-M" | "-global" => words.next(),
            other => return Translation::Cannot(format!("the QEMU option `{other}`")),
        }) else {
            return Translation::Cannot(format!("`{word}` without its value"));
        };
        match word {
            "-m" => match mem_mib(value) {
                Some(m) => mem = m,
                None => return Translation::Cannot(format!("the memory size `-m {value}`")),
            },
            "-cpu" => {
                if value.split(',').next() == Some("qemu64") {
                    model = Some("qemu64".to_owned());
                }
                for option in value.split(',').skip(1) {
                    match option {
                        "host-phys-bits" | "migratable=no" => {}
                        o if o.starts_with("vendor=") => vendor = Some(o["vendor=".len()..].into()),
                        o if o.starts_with("hv_") => {
                            return Translation::Cannot(
                                "Hyper-V enlightenments (`-cpu ...,hv_passthrough`)".into(),
                            )
                        }
                        o if o.starts_with('+') || o.starts_with('-') => features.push(o.into()),
                        o => return Translation::Cannot(format!("the CPU option `{o}` (-cpu)")),
                    }
                }
            }
            "-device" => return Translation::Cannot(format!("QEMU's device `{value}`")),
            // Without a PIT, QEMU's in-kernel PIT cannot inhibit AVIC; drvisor's PIT stays,
            // and the one entry that asks (vmexit_ipi) times IPIs, which it does not touch.
            "-machine" | "-M" if value == "pit=off" => {}
            "-machine" | "-M" => {
                return Translation::Cannot(format!("the machine option `{word} {value}`"))
            }
            // -global: a QEMU device's property.
            _ => return Translation::Cannot(format!("the QEMU property `-global {value}`")),
        }
    }
    Translation::Run(EntryVm {
        vcpus: entry.smp,
        mem_mib: mem,
        cpu_features: features,
        cpu_model: model,
        cpu_vendor: vendor,
        cmdline: entry.test_args.clone(),
    })
}

/// A spec for each entry of the cfg at `path`, in order, named as the entry: the image in the
/// cfg's folder booted as QEMU would boot it, with the entry's timeout; it passes when the
/// image reports results, none failed, and it exits with status 0 (kvm-unit-tests' `exit(0)`).
/// An entry for i386 alone, or one needing what drvisor lacks, is a spec that does not run,
/// every check skipped with the reason.
pub fn specs(path: &Path, text: &str) -> Result<Vec<Spec>, SpecError> {
    let entries = parse(text).map_err(|message| SpecError {
        file: path.to_owned(),
        at: None,
        message,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(entries.iter().map(|e| spec(path, dir, e)).collect())
}

fn spec(path: &Path, dir: &Path, entry: &Entry) -> Spec {
    let mut vm = VmSpec {
        kernel: Some(dir.join(&entry.file)),
        timeout: entry.timeout.as_secs_f64(),
        vcpus: 1,
        mem: QEMU_DEFAULT_MEM_MIB,
        // QEMU runs without a `+feature` the host's KVM lacks, after a warning.
        drop_unoffered_features: true,
        ..VmSpec::default()
    };
    if entry.arch.as_deref() == Some("i386") {
        vm.not_run = Some("a 32-bit (i386) test: drvisor boots x86_64 builds".into());
    } else {
        match translate(entry) {
            Translation::Run(t) => {
                vm.vcpus = u32::try_from(t.vcpus).unwrap_or(u32::MAX);
                vm.mem = t.mem_mib;
                vm.cpu_features = (!t.cpu_features.is_empty()).then(|| t.cpu_features.join(","));
                vm.cpu_model = t.cpu_model;
                vm.cpu_vendor = t.cpu_vendor;
                vm.cmdline = t.cmdline.unwrap_or_default();
            }
            Translation::Cannot(what) => {
                vm.not_run = Some(format!("needs {what}, which drvisor lacks"))
            }
        }
    }
    let check = |name: &str, kind| Check {
        name: name.into(),
        line: 0,
        kind,
    };
    Spec {
        path: path.to_owned(),
        name: entry.name.clone(),
        vm,
        checks: vec![
            check("results", CheckKind::Results(ResultsFormat::KvmUnitTests)),
            check("status 0", CheckKind::ExitStatus(0)),
        ],
    }
}

/// QEMU's `-m` size in MiB: a number of MiB, or with an `M`/`G` suffix.
fn mem_mib(value: &str) -> Option<u64> {
    let lower = value.to_ascii_lowercase();
    if let Some(g) = lower.strip_suffix('g') {
        return g.parse::<u64>().ok()?.checked_mul(1024);
    }
    lower.strip_suffix('m').unwrap_or(&lower).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "# c\n[a]\nfile = apic.flat\nsmp = 2\n\
                       qemu_params = -cpu qemu64,vendor=GenuineIntel,+x2apic,-pku -m 2g\n\
                       test_args = '-x y'\ntimeout = 30\ngroups = apic\n\n[b]\nfile = b.flat\n\
                       qemu_params = -cpu host,hv_passthrough -device hyperv-testdev\narch = i386\n\
                       [c]\nfile = c.flat\nqemu_params = -machine vmport=on\n\
                       [d]\nfile = d.flat\nqemu_params = -machine pit=off\n";

    #[test]
    fn entries_are_read_as_run_tests_reads_them() {
        let entries = parse(CFG).unwrap();
        let want_a = Entry {
            name: "a".into(),
            file: "apic.flat".into(),
            smp: 2,
            qemu_params: "-cpu qemu64,vendor=GenuineIntel,+x2apic,-pku -m 2g".into(),
            test_args: Some("-x y".into()),
            arch: None,
            timeout: Duration::from_secs(30),
        };
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0], want_a);
        assert_eq!(entries[1].arch.as_deref(), Some("i386"));
        assert_eq!(entries[2].timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn qemu_options_become_drvisors() {
        let entries = parse(CFG).unwrap();
        let Translation::Run(a) = translate(&entries[0]) else {
            panic!("[a] not run");
        };
        assert_eq!(
            a.args(),
            [
                "--vcpus",
                "2",
                "--mem",
                "2048",
                "--cpu-model",
                "qemu64",
                "--cpu-vendor",
                "GenuineIntel",
                "--cpu-features=+x2apic,-pku",
                "--cmdline=-x y"
            ]
        );
        assert!(matches!(translate(&entries[3]), Translation::Run(_)));
        for (e, needs) in [(&entries[1], "Hyper-V"), (&entries[2], "vmport=on")] {
            match translate(e) {
                Translation::Cannot(why) if why.contains(needs) => {}
                other => panic!("[{}]: {other:?}", e.name),
            }
        }
    }

    #[test]
    fn a_malformed_cfg_is_refused() {
        assert!(parse("file = x\n").is_err());
        assert!(parse("[x]\nsmp = two\nfile = x\n").is_err());
        assert!(parse("[x]\nsmp = 1\n").is_err());
        let err = specs(Path::new("/k/unittests.cfg"), "[x]\nsmp = 1\n").unwrap_err();
        assert!(err.to_string().contains("[x] names no file"), "{err}");
    }

    #[test]
    fn each_entry_is_a_spec_and_what_cannot_run_says_why() {
        let specs = specs(Path::new("/k/unittests.cfg"), CFG).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        let a = &specs[0];
        assert_eq!(a.vm.kernel.as_deref(), Some(Path::new("/k/apic.flat")));
        assert_eq!((a.vm.vcpus, a.vm.mem, a.vm.timeout), (2, 2048, 30.0));
        assert_eq!(a.vm.cpu_features.as_deref(), Some("+x2apic,-pku"));
        assert_eq!(a.vm.cpu_model.as_deref(), Some("qemu64"));
        assert_eq!(a.vm.cmdline, "-x y");
        assert_eq!(a.vm.not_run, None);
        assert!(a.vm.drop_unoffered_features);
        assert!(matches!(
            a.checks[0].kind,
            CheckKind::Results(ResultsFormat::KvmUnitTests)
        ));
        assert!(matches!(a.checks[1].kind, CheckKind::ExitStatus(0)));
        assert!(specs[1].vm.not_run.as_deref().unwrap().contains("i386"));
        assert!(specs[2]
            .vm
            .not_run
            .as_deref()
            .unwrap()
            .contains("vmport=on"));
        let d = &specs[3];
        assert_eq!((d.vm.vcpus, d.vm.mem, d.vm.timeout), (1, 128, 90.0));
    }
}
