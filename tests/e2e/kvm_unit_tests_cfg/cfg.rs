//! Upstream kvm-unit-tests' `x86/unittests.cfg`, read as its `run_tests.sh` reads it, and each
//! entry's QEMU command line turned into drvisor's.

use std::time::Duration;

/// One `[name]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    /// The image, `NAME.flat`.
    pub file: String,
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
    /// drvisor's options beyond the image: `--vcpus`, `--mem`, `--cpu-features`, `--cmdline`.
    Run(Vec<String>),
    /// What the entry needs that drvisor does not have.
    Cannot(String),
}

/// QEMU's default guest RAM, which upstream's `x86/run` keeps.
const QEMU_DEFAULT_MEM_MIB: u64 = 128;

/// drvisor's options for `entry`, read from its QEMU options:
/// - `-smp` and `-m` become `--vcpus` and `--mem`;
/// - `-cpu MODEL,+f,-f` becomes `--cpu-features +f,-f` (drvisor gives the guest the host's
///   CPU, as `-cpu host`; `max` and `qemu64` differ from it only in features the entries name);
///   `host-phys-bits` and `migratable=no` describe what drvisor does anyway, as `-machine
///   pit=off` changes nothing its one entry measures;
/// - what drvisor lacks (Hyper-V enlightenments, the VMware backdoor, other `-device`s and
///   `-machine` options) makes the entry one drvisor cannot run, with the reason.
pub fn translate(entry: &Entry) -> Translation {
    let mut mem = QEMU_DEFAULT_MEM_MIB;
    let mut features: Vec<String> = Vec::new();
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
                for option in value.split(',').skip(1) {
                    match option {
                        "host-phys-bits" | "migratable=no" => {}
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
    let mut args = vec![
        "--vcpus".to_owned(),
        entry.smp.to_string(),
        "--mem".to_owned(),
        mem.to_string(),
    ];
    if !features.is_empty() {
        args.push(format!("--cpu-features={}", features.join(",")));
    }
    if let Some(line) = &entry.test_args {
        // `=`: a command line that starts with `-` is still the value.
        args.push(format!("--cmdline={line}"));
    }
    Translation::Run(args)
}

/// QEMU's `-m` size in MiB: a number of MiB, or with an `M`/`G` suffix.
fn mem_mib(value: &str) -> Option<u64> {
    let lower = value.to_ascii_lowercase();
    if let Some(g) = lower.strip_suffix('g') {
        return g.parse::<u64>().ok()?.checked_mul(1024);
    }
    lower.strip_suffix('m').unwrap_or(&lower).parse().ok()
}

/// The rules above, on entries shaped as upstream's.
pub fn translation_rules() -> Result<(), String> {
    let cfg = "# c\n[a]\nfile = apic.flat\nsmp = 2\nqemu_params = -cpu qemu64,+x2apic,-pku -m 2g\n\
               test_args = '-x y'\ntimeout = 30\ngroups = apic\n\n[b]\nfile = b.flat\n\
               qemu_params = -cpu host,hv_passthrough -device hyperv-testdev\narch = i386\n\
               [c]\nfile = c.flat\nqemu_params = -machine vmport=on\n\
               [d]\nfile = d.flat\nqemu_params = -machine pit=off\n";
    let entries = parse(cfg)?;
    let want_a = Entry {
        name: "a".into(),
        file: "apic.flat".into(),
        smp: 2,
        qemu_params: "-cpu qemu64,+x2apic,-pku -m 2g".into(),
        test_args: Some("-x y".into()),
        arch: None,
        timeout: Duration::from_secs(30),
    };
    if entries.len() != 4 || entries[0] != want_a || entries[1].arch.as_deref() != Some("i386") {
        return Err(format!("parsed {entries:?}"));
    }
    let a = translate(&entries[0]);
    let want = [
        "--vcpus",
        "2",
        "--mem",
        "2048",
        "--cpu-features=+x2apic,-pku",
        "--cmdline=-x y",
    ];
    if a != Translation::Run(want.iter().map(|s| s.to_string()).collect()) {
        return Err(format!("translated {a:?}"));
    }
    if !matches!(translate(&entries[3]), Translation::Run(_)) {
        return Err("-machine pit=off refused".into());
    }
    for (e, needs) in [(&entries[1], "Hyper-V"), (&entries[2], "vmport=on")] {
        match translate(e) {
            Translation::Cannot(why) if why.contains(needs) => {}
            other => return Err(format!("[{}]: {other:?}", e.name)),
        }
    }
    if parse("file = x\n").is_ok() || parse("[x]\nsmp = two\nfile = x\n").is_ok() {
        return Err("malformed cfg accepted".into());
    }
    Ok(())
}
