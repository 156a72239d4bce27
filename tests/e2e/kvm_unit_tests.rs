//! The unmodified upstream kvm-unit-tests images (`tests/data/kvm-unit-tests/`, ELF32
//! multiboot; nobody on this project wrote them), booted as QEMU's `-kernel` boots them, against
//! what QEMU does with each on the same kind of host:
//! - on a host whose KVM emulates guest CPL0 code (this project's machines, where the probe
//!   finds the guest's breakpoints live beside the host's), what QEMU 7.2 printed there
//!   (`qemu-7.2-results/`);
//! - on any other host (VMX, SVM, the nested SVM guest of `tests/nested-svm/`), QEMU's answers
//!   differ, so QEMU is run here for the baseline: the recorded command line plus `-cpu host`
//!   (drvisor gives the guest the host's CPUID) and `-smp` as drvisor's `--vcpus`. Without
//!   `qemu-system-x86_64` those trials are ignored with the reason.
//!
//! For each image, the `PASS`/`FAIL`/`SKIP` lines and the exit status (`--exit-status qemu`)
//! must match QEMU's. Where drvisor does better (a QEMU `FAIL` that passes here, a further
//! result where QEMU hung) the test says so and passes; where it does worse it fails.
//!
//! The images are found in `$DRVISOR_KVM_UNIT_TESTS`, by default `tests/data/kvm-unit-tests` in
//! the repository (its README says where they come from). Without them every trial fails: they
//! belong to the repository, so their absence is a broken checkout, not a host that cannot run
//! them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drvisor::debug::DebugCaps;

use crate::common::{ensure, skipped, Context, Failed, Trial, DRVISOR};

/// One image run, and what QEMU did with it.
struct Case {
    /// Trial name suffix.
    name: &'static str,
    /// `NAME.flat`, under the images' folder.
    image: &'static str,
    vcpus: usize,
    /// The guest gets x2APIC, as the cfg's `-cpu qemu64,+x2apic` gives it (drvisor
    /// `--cpu-features +x2apic`, QEMU run here `-cpu host,+x2apic`).
    x2apic: bool,
    /// QEMU's recorded log for the same image, `NAME.log` under the images' folder.
    qemu_log: &'static str,
    /// QEMU's recorded process status, from `summary.txt`; `None`: QEMU timed out (hung).
    qemu_status: Option<i32>,
    /// Extra guest output lines that must appear.
    must_print: &'static [&'static str],
    /// Where QEMU stopped on an emulation failure in the recorded run: the instruction bytes
    /// drvisor must report.
    stops_at: Option<&'static str>,
    /// What QEMU did on a VMX or SVM KVM, recorded (`NAME.log` under the images' folder, its
    /// exit status): the baseline on such a host without QEMU.
    real_kvm_log: Option<(&'static str, i32)>,
    /// Its handlers lower a level-triggered line before their EOI and count the interrupts:
    /// chance on a host that ends interrupts as it delivers them ([`ioapic_by_chance_here`]).
    level_interrupts: bool,
}

/// A 1-vCPU image of the 7.2-era build that QEMU passed; each case says how it differs.
const PLAIN: Case = Case {
    name: "",
    image: "",
    vcpus: 1,
    x2apic: false,
    qemu_log: "",
    qemu_status: Some(1),
    must_print: &[],
    stops_at: None,
    real_kvm_log: None,
    level_interrupts: false,
};

const CASES: &[Case] = &[
    Case {
        name: "smptest_2_vcpus",
        image: "smptest",
        vcpus: 2,
        qemu_log: "qemu-7.2-results/smptest",
        must_print: &["found 2 cpus", "setup: CPU 1 online"],
        ..PLAIN
    },
    Case {
        // QEMU's results are for 2 vCPUs; the results lines are the same for any count.
        name: "smptest_4_vcpus",
        image: "smptest",
        vcpus: 4,
        qemu_log: "qemu-7.2-results/smptest",
        must_print: &["found 4 cpus", "ipi called, cpu 3", "setup: CPU 3 online"],
        ..PLAIN
    },
    Case {
        name: "setjmp",
        image: "setjmp",
        qemu_log: "qemu-7.2-results/setjmp",
        ..PLAIN
    },
    Case {
        name: "tsc",
        image: "tsc",
        qemu_log: "qemu-7.2-results/tsc",
        qemu_status: Some(77),
        ..PLAIN
    },
    Case {
        name: "msr",
        image: "msr",
        qemu_log: "qemu-7.2-results/msr",
        qemu_status: Some(3),
        ..PLAIN
    },
    Case {
        // QEMU passes the CPL0 split-lock check here, then hangs at the first user-mode test.
        name: "debug",
        image: "debug",
        qemu_log: "qemu-7.2-results/debug",
        qemu_status: None,
        ..PLAIN
    },
    Case {
        // QEMU: 98 PASS and 1 SKIP, then KVM cannot emulate `movbe` (test_illegal_movbe) and
        // QEMU pauses the VM until the timeout. drvisor ends there with exit code 78 (71 under
        // `--exit-status raw`: under `qemu` drvisor's own codes are even).
        name: "emulator",
        image: "emulator",
        qemu_log: "qemu-7.2-results/emulator",
        qemu_status: None,
        stops_at: Some("instruction bytes: 0f 38 f0 c0"),
        ..PLAIN
    },
    Case {
        // Upstream's current build, the cfg's `[ioapic]` entry (4 vCPUs, x2APIC). QEMU here
        // printed 27 results and hung before the rest; on a KVM that ends interrupts at the
        // guest's EOI the test runs to its end (30 PASS under QEMU on nested SVM).
        name: "ioapic",
        image: "x86/ioapic",
        vcpus: 4,
        x2apic: true,
        qemu_log: "x86/qemu-10.0-results/ioapic",
        qemu_status: None,
        real_kvm_log: Some(("x86/qemu-10.0-nested-svm/ioapic", 1)),
        level_interrupts: true,
        ..PLAIN
    },
];

/// What QEMU did with an image: its log (serial output and its own messages) and its process
/// status, `None` where it ran out of time.
struct Baseline {
    log: String,
    status: Option<i32>,
    /// The instruction bytes drvisor must report where QEMU stopped on an emulation failure
    /// (`Some("")`: any bytes).
    stops_at: Option<String>,
}

/// Where QEMU's answers come from on this host.
#[derive(Clone)]
enum Source {
    /// `qemu-7.2-results/`, recorded on a host like this one.
    Recorded,
    /// QEMU run here.
    Live,
    /// The case's log from QEMU on a real KVM ([`Case::real_kvm_log`]), where this host is a
    /// VMX or SVM one without QEMU.
    RealKvm,
}

/// QEMU's time budget per image, as in the recorded runs.
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to watch a run that QEMU never finished, after it printed all QEMU's results.
const GRACE_AFTER_QEMU_RESULTS: Duration = Duration::from_secs(10);
/// A run that should finish: QEMU needed at most 24 s for these here.
const FINISH_TIMEOUT: Duration = Duration::from_secs(240);

/// Where the images are, or why they are not.
fn images_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("DRVISOR_KVM_UNIT_TESTS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/kvm-unit-tests"),
    };
    if dir.join("qemu-7.2-results").is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "no kvm-unit-tests images in {} (they belong to the repository: \
             tests/data/kvm-unit-tests; DRVISOR_KVM_UNIT_TESTS names another folder)",
            dir.display()
        ))
    }
}

/// QEMU's recorded answers hold on a host whose KVM emulates guest CPL0 code, as the one they
/// were recorded on; elsewhere QEMU must run here, if it can.
fn baseline_source(ctx: &Context) -> Result<Source, String> {
    if DebugCaps::from_probe(&ctx.probe) == DebugCaps::pvm_like() {
        return Ok(Source::Recorded);
    }
    match Command::new(QEMU).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(Source::Live),
        _ => Err(format!(
            "QEMU's recorded results are from a host that emulates guest CPL0 code and this \
             host is not one; no `{QEMU}` here to run for a baseline (install qemu-system-x86)"
        )),
    }
}

const QEMU: &str = "qemu-system-x86_64";

/// Whether this host shows a guest SPEC_CTRL (CPUID.7:EDX[26]) whatever its VMM gives it. Hosts
/// whose KVM emulates guest CPL0 code come in two kinds here: one shows it (KVM_SET_CPUID2
/// cannot clear leaf 7 there), one does not. kvm-unit-tests' `msr` takes another path on each
/// (it writes SPEC_CTRL's bits, or it expects #GP on the MSR), and under QEMU as under drvisor
/// the MSR there neither keeps a write nor faults: QEMU's results differ by kind.
pub fn spec_ctrl_shown() -> bool {
    static SHOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOWN.get_or_init(|| {
        let run = crate::common::drvisor(&["run", "--scenario", "cpuid", "--cpuid", "host"]);
        run.guest_lines(&["cpuid", "leaf=7"])
            .first()
            .and_then(|l| crate::common::field(l, "edx"))
            .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .is_some_and(|edx| edx & (1 << 26) != 0)
    })
}

/// Why `ioapic` passes or hangs by chance on this host, under QEMU as under drvisor; `None`
/// where interrupts end at the guest's EOI.
pub(crate) fn ioapic_by_chance_here() -> Option<String> {
    crate::scenarios::interrupts_end_as_delivered().then(|| {
        format!(
            "{}. ioapic's `physical destination mode` check waits for its level interrupt's \
             handler to have run exactly once, so here it passes only when CPU 0 reads the \
             count between the two runs: chance, for QEMU as for drvisor (both also stop here \
             after `Reconfigure Remote IRR set`, 27 of the test's 30 checks). It runs on hosts \
             where interrupts end at the guest's EOI (all 30 pass on nested SVM)",
            crate::scenarios::EARLY_EOI
        )
    })
}

/// QEMU's recorded log for `c`, for this kind of host (see [`spec_ctrl_shown`]).
fn recorded_log(dir: &Path, c: &Case) -> PathBuf {
    if c.name == "msr" && spec_ctrl_shown() {
        dir.join("qemu-10.0-spec-ctrl-shown/msr.log")
    } else {
        dir.join(format!("{}.log", c.qemu_log))
    }
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let mut trials = vec![Trial::test(
        "kvm_unit_tests::comparison_rules",
        comparison_rules,
    )];
    let dir = match images_dir() {
        Ok(dir) => dir,
        Err(reason) => {
            // The images belong to the repository: without them every trial fails.
            let names = CASES.iter().map(|c| c.name).chain([
                "breakpoints_on_report",
                "elf32_symbols",
                "s3_wakes_every_vcpu_at_the_waking_vector",
                "s3_host_breakpoint_at_the_waking_vector",
                "sieve",
            ]);
            for name in names {
                let reason = reason.clone();
                trials.push(Trial::test(format!("kvm_unit_tests::{name}"), move || {
                    Err(reason.into())
                }));
            }
            return trials;
        }
    };
    let emulated_host = !ctx.probe.delivers(drvisor::probe::Mechanism::NativeCpl0, 0);
    for c in CASES {
        let name = format!("kvm_unit_tests::{}", c.name);
        let source = match baseline_source(ctx) {
            Err(_) if c.real_kvm_log.is_some() => Ok(Source::RealKvm),
            other => other,
        };
        if c.level_interrupts {
            if let Some(why) = ioapic_by_chance_here() {
                trials.push(skipped(&name, &why));
                continue;
            }
        }
        match source {
            Ok(Source::Live) if c.name == "emulator" && emulated_host => trials.push(skipped(
                &name,
                "on a KVM that itself runs under an emulator (the nested SVM guest), the \
                 emulator image run for QEMU's baseline crashed the outer QEMU (TCG assertion \
                 `tcg_handle_interrupt: bql_locked()`), taking every test with it; it runs \
                 against the recorded results on this project's hosts, and live on VMX/SVM",
            )),
            Ok(source) => {
                let dir = dir.clone();
                trials.push(Trial::test(name, move || run_case(&dir, c, &source)));
            }
            Err(reason) => trials.push(skipped(&name, &reason)),
        }
    }
    let d = dir.clone();
    trials.push(Trial::test(
        "kvm_unit_tests::breakpoints_on_report",
        move || breakpoints_on_report(&d),
    ));
    let d = dir.clone();
    trials.push(Trial::test("kvm_unit_tests::elf32_symbols", move || {
        elf32_symbols(&d)
    }));
    // The image of upstream's current build, which the cfg comparison runs too.
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/kvm-unit-tests/x86");
    let d2 = d.clone();
    trials.push(Trial::test(
        "kvm_unit_tests::s3_wakes_every_vcpu_at_the_waking_vector",
        move || s3_wakes_at_the_waking_vector(&d2, false),
    ));
    let name = "kvm_unit_tests::s3_host_breakpoint_at_the_waking_vector";
    trials.push(
        match crate::acpi_s3::real_mode_breakpoint_not_run_here(ctx) {
            Some(why) => skipped(name, why),
            None => Trial::test(name, move || s3_wakes_at_the_waking_vector(&d, true)),
        },
    );
    // Opt-in: it runs for up to QEMU's 120 s. `cargo test -p drvisor --test e2e -- --ignored
    // kvm_unit_tests::sieve` runs it.
    println!(
        "skipping kvm_unit_tests::sieve: slow (QEMU's 120 s budget of emulated CPL0 code); \
         run it with --ignored"
    );
    let d = dir.clone();
    trials.push(
        Trial::test("kvm_unit_tests::sieve", move || sieve_as_far_as_qemu(&d))
            .with_ignored_flag(true),
    );
    trials
}

/// sieve prints no results; QEMU got to `mapped:78498 out of 1000000` in its 120 s and was
/// stopped there. drvisor must print every line QEMU printed within the same time.
fn sieve_as_far_as_qemu(dir: &Path) -> Result<(), Failed> {
    let qemu_log = std::fs::read_to_string(dir.join("qemu-7.2-results/sieve.log"))
        .map_err(|e| format!("cannot read QEMU's log: {e}"))?;
    let guest_lines: Vec<&str> = qemu_log
        .lines()
        .filter(|l| !l.starts_with("qemu-system-x86_64:"))
        .collect();
    let all_printed = |out: &str| {
        let mut ours = out.lines();
        guest_lines.iter().all(|want| ours.any(|l| l == *want))
    };
    let run = run_watched(
        DRVISOR,
        &drvisor_args(dir, "sieve", 1, &[]),
        Duration::from_secs(120),
        all_printed,
        Duration::ZERO,
    );
    ensure(all_printed(&run.stdout), || {
        format!(
            "not as far as QEMU in 120 s; QEMU printed:\n{}\n--- drvisor:\n{}",
            guest_lines.join("\n"),
            run.stdout
        )
    })
}

/// The result lines of a kvm-unit-tests log, counted.
pub(crate) fn results(log: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        if ["PASS: ", "FAIL: ", "SKIP: "]
            .iter()
            .any(|p| line.starts_with(p))
        {
            *out.entry(line.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// drvisor's results against QEMU's: what is better, what is worse.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Comparison {
    pub(crate) better: Vec<String>,
    pub(crate) worse: Vec<String>,
}

/// Lines only QEMU printed are worse unless they are QEMU's failures; lines only drvisor
/// printed are better unless they are failures. With `qemu_finished` false, QEMU hung, so
/// drvisor's further passes are better too.
pub(crate) fn compare(
    qemu: &BTreeMap<String, usize>,
    ours: &BTreeMap<String, usize>,
) -> Comparison {
    let mut c = Comparison::default();
    for (line, q, o) in differing_lines(qemu, ours) {
        let what = format!("{line} (QEMU {q}x, drvisor {o}x)");
        // Fewer passes, or more failures, is worse.
        if (o < q) != line.starts_with("FAIL: ") {
            c.worse.push(what);
        } else {
            c.better.push(what);
        }
    }
    c
}

/// The result lines counted differently in `a` and `b`: (line, count in `a`, count in `b`).
fn differing_lines<'m>(
    a: &'m BTreeMap<String, usize>,
    b: &'m BTreeMap<String, usize>,
) -> Vec<(&'m str, usize, usize)> {
    let count = |m: &BTreeMap<String, usize>, l: &str| m.get(l).copied().unwrap_or(0);
    let lines: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    lines
        .into_iter()
        .map(|l| (l.as_str(), count(a, l), count(b, l)))
        .filter(|(_, x, y)| x != y)
        .collect()
}

/// QEMU's process status and drvisor's for the same end. With `--no-reboot`, QEMU exits 0
/// when the guest resets itself, as a triple fault does; drvisor ends that with its own
/// triple-fault code, 70, and says so.
fn same_status(qemu: i32, drvisor: i32) -> bool {
    qemu == drvisor || (qemu == 0 && drvisor == 70)
}

fn comparison_rules() -> Result<(), Failed> {
    ensure(same_status(1, 1) && same_status(0, 70), || {
        "a guest reset is QEMU's 0 and drvisor's 70".into()
    })?;
    ensure(!same_status(1, 70) && !same_status(0, 1), || {
        "a triple fault is not a pass, and a pass is not a reset".into()
    })?;
    let m = |lines: &[&str]| results(&lines.join("\n"));
    let same = compare(&m(&["PASS: a", "FAIL: b"]), &m(&["PASS: a", "FAIL: b"]));
    ensure(same == Comparison::default(), || format!("{same:?}"))?;
    let better = compare(&m(&["PASS: a", "FAIL: b"]), &m(&["PASS: a", "PASS: b"]));
    ensure(better.worse.is_empty() && better.better.len() == 2, || {
        format!("{better:?}")
    })?;
    let worse = compare(&m(&["PASS: a", "PASS: a"]), &m(&["PASS: a", "FAIL: c"]));
    ensure(worse.worse.len() == 2 && worse.better.is_empty(), || {
        format!("{worse:?}")
    })?;
    // A QEMU run whose guest broke (fewer results, another status) fails the judgement; the
    // difference between QEMU's two runs names both.
    let qemu = |log: &str, status| Baseline {
        log: log.into(),
        status,
        stops_at: None,
    };
    let ours = Watched {
        stdout: "PASS: a\nPASS: b\n".into(),
        stderr: String::new(),
        status: Some(1),
    };
    let whole = qemu("PASS: a\nPASS: b\n", Some(1));
    let broken = qemu("PASS: a\n", Some(0));
    let case = Case { ..PLAIN };
    ensure(judge(&case, &whole, &ours).is_ok(), || {
        "the same run holds up".into()
    })?;
    let why = judge(&case, &broken, &ours).err().unwrap_or_default();
    ensure(why.starts_with("exit status 1, QEMU's was 0"), || {
        why.clone()
    })?;
    let differences = qemu_differences(&whole, &broken);
    ensure(
        differences == ["PASS: b (1x, then 0x)", "exit status Some(1), then Some(0)"],
        || format!("{differences:?}"),
    )
}

/// A run's output so far, and its status once it ended.
pub(crate) struct Watched {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) status: Option<i32>,
}

/// Runs `program` with `args` until it exits, `deadline` passes, or `done(stdout)` has been true
/// for `grace`; then kills it.
pub(crate) fn run_watched(
    program: &str,
    args: &[String],
    deadline: Duration,
    done: impl Fn(&str) -> bool,
    grace: Duration,
) -> Watched {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drvisor");
    let pipe_to = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut s = b.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        buf
    };
    let out = pipe_to(Box::new(child.stdout.take().expect("piped")));
    let err = pipe_to(Box::new(child.stderr.take().expect("piped")));
    let start = Instant::now();
    let mut done_at: Option<Instant> = None;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        let now = Instant::now();
        if done_at.is_none() && done(&out.lock().unwrap_or_else(|e| e.into_inner())) {
            done_at = Some(now);
        }
        if now - start > deadline || done_at.is_some_and(|t| now - t > grace) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the readers drain what the child wrote.
    std::thread::sleep(Duration::from_millis(50));
    let text = |b: &Arc<Mutex<String>>| b.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Watched {
        stdout: text(&out),
        stderr: text(&err),
        status,
    }
}

fn drvisor_args(dir: &Path, image: &str, vcpus: usize, extra: &[&str]) -> Vec<String> {
    let kernel = dir.join(format!("{image}.flat"));
    let mut args: Vec<String> = [
        "run",
        "--kernel",
        kernel.to_str().unwrap_or_default(),
        "--mem",
        "256",
        "--exit-status",
        "qemu",
        "--vcpus",
        &vcpus.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn read_log(path: &Path) -> Result<String, Failed> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read QEMU's log: {e}").into())
}

/// QEMU's answers for `c`: recorded, or from running QEMU here.
fn baseline(dir: &Path, c: &Case, source: &Source) -> Result<Baseline, Failed> {
    match source {
        Source::Recorded => Ok(Baseline {
            log: read_log(&recorded_log(dir, c))?,
            status: c.qemu_status,
            stops_at: c.stops_at.map(str::to_owned),
        }),
        Source::RealKvm => {
            let (log, status) = c.real_kvm_log.ok_or("no log from a real KVM")?;
            Ok(Baseline {
                log: read_log(&dir.join(format!("{log}.log")))?,
                status: Some(status),
                stops_at: None,
            })
        }
        Source::Live => {
            let kernel = dir.join(format!("{}.flat", c.image));
            let cpu = if c.x2apic { "host,+x2apic" } else { "host" };
            let args: Vec<String> = [
                "-enable-kvm",
                "-cpu",
                cpu,
                "-nodefaults",
                "--no-reboot",
                "-device",
                "pc-testdev",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x4",
                "-serial",
                "stdio",
                "-display",
                "none",
                "-m",
                "256",
                "-smp",
                &c.vcpus.to_string(),
                "-kernel",
                kernel.to_str().unwrap_or_default(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let run = run_watched(QEMU, &args, QEMU_TIMEOUT, |_| false, Duration::ZERO);
            let log = format!("{}{}", run.stdout, run.stderr);
            let stops_at = log.contains("emulation failure").then(String::new);
            println!(
                "  {}: QEMU here: status {:?}, {} result lines",
                c.name,
                run.status,
                results(&log).values().sum::<usize>()
            );
            Ok(Baseline {
                log,
                status: run.status,
                stops_at,
            })
        }
    }
}

/// How many more times QEMU runs, on a live baseline, when drvisor's run does not hold up
/// against QEMU's first. On a KVM that itself runs under an emulator (the nested guests), the
/// emulator's defects now and then break a guest's run (docs/testing.md, flake policy), QEMU's
/// as well as drvisor's; a QEMU run that its own next run contradicts cannot judge drvisor.
/// drvisor must then hold up against a QEMU run that differs from the first, and the test
/// prints how QEMU's runs differed.
const QEMU_RERUNS: usize = 2;

fn run_case(dir: &Path, c: &Case, source: &Source) -> Result<(), Failed> {
    let first = baseline(dir, c, source)?;
    let run = run_drvisor(dir, c, &first);
    let mut verdict = judge(c, &first, &run).map(|cmp| (cmp, first.status));
    if verdict.is_err() && matches!(source, Source::Live) {
        for rerun in 1..=QEMU_RERUNS {
            let again = baseline(dir, c, source)?;
            let differences = qemu_differences(&first, &again);
            if differences.is_empty() {
                continue;
            }
            println!(
                "  {}: QEMU's run {} differs from its first here:\n    {}",
                c.name,
                rerun + 1,
                differences.join("\n    ")
            );
            if let Ok(cmp) = judge(c, &again, &run) {
                verdict = Ok((cmp, again.status));
                break;
            }
        }
    }
    let (cmp, qemu_status) = verdict?;
    if let (None, Some(o)) = (qemu_status, run.status) {
        println!("  {}: drvisor ended with {o} where QEMU hung", c.name);
    }
    if cmp.better.is_empty() {
        println!("  {}: same results as QEMU", c.name);
    } else {
        println!(
            "  {}: better than QEMU:\n    {}",
            c.name,
            cmp.better.join("\n    ")
        );
    }
    Ok(())
}

/// drvisor's run of `c`; where QEMU hung, it is watched until it has printed QEMU's results,
/// then a while longer.
fn run_drvisor(dir: &Path, c: &Case, base: &Baseline) -> Watched {
    let cpu: &[&str] = if c.x2apic {
        &["--cpu-features", "+x2apic"]
    } else {
        &[]
    };
    let args = drvisor_args(dir, c.image, c.vcpus, cpu);
    let qemu = results(&base.log);
    match base.status {
        Some(_) => run_watched(DRVISOR, &args, FINISH_TIMEOUT, |_| false, Duration::ZERO),
        None => run_watched(
            DRVISOR,
            &args,
            FINISH_TIMEOUT,
            |out| compare(&qemu, &results(out)).worse.is_empty(),
            GRACE_AFTER_QEMU_RESULTS,
        ),
    }
}

/// Whether drvisor's `run` holds up against QEMU's `base`: no result worse, the lines `c` wants,
/// the same emulation failure and exit status. Ok: how the results compare; Err: why not, with
/// both sides' output.
fn judge(c: &Case, base: &Baseline, run: &Watched) -> Result<Comparison, String> {
    let qemu = results(&base.log);
    let show = || {
        let qemu_lines: Vec<String> = qemu.iter().map(|(l, n)| format!("{l} ({n}x)")).collect();
        format!(
            "--- QEMU's results (status {:?})\n{}\n--- stdout\n{}--- stderr\n{}---",
            base.status,
            qemu_lines.join("\n"),
            run.stdout,
            run.stderr
        )
    };
    let cmp = compare(&qemu, &results(&run.stdout));
    if !cmp.worse.is_empty() {
        return Err(format!(
            "worse than QEMU:\n  {}\n{}",
            cmp.worse.join("\n  "),
            show()
        ));
    }
    if let Some(line) = c
        .must_print
        .iter()
        .find(|want| !run.stdout.lines().any(|l| l == **want))
    {
        return Err(format!("wanted the line `{line}`\n{}", show()));
    }
    if let Some(bytes) = &base.stops_at {
        if run.status != Some(drvisor::exit_code::QEMU_INTERNAL_ERROR.into())
            || !run.stderr.contains(bytes.as_str())
        {
            return Err(format!(
                "wanted the emulation failure at `{bytes}`\n{}",
                show()
            ));
        }
    }
    match (base.status, run.status) {
        (Some(q), Some(o)) if !same_status(q, o) => {
            Err(format!("exit status {o}, QEMU's was {q}\n{}", show()))
        }
        (Some(q), None) => Err(format!("no exit status, QEMU's was {q}\n{}", show())),
        _ => Ok(cmp),
    }
}

/// How two QEMU runs of the same image differ: result lines and exit status.
fn qemu_differences(first: &Baseline, again: &Baseline) -> Vec<String> {
    let (a, b) = (results(&first.log), results(&again.log));
    let mut differences: Vec<String> = differing_lines(&a, &b)
        .into_iter()
        .map(|(l, x, y)| format!("{l} ({x}x, then {y}x)"))
        .collect();
    if first.status != again.status {
        differences.push(format!(
            "exit status {:?}, then {:?}",
            first.status, again.status
        ));
    }
    differences
}

/// Host breakpoints on the image's own `report` change nothing the test prints, and hit once
/// per call: setjmp reports ten results, each through `report`.
fn breakpoints_on_report(dir: &Path) -> Result<(), Failed> {
    let plain = run_watched(
        DRVISOR,
        &drvisor_args(dir, "setjmp", 1, &[]),
        FINISH_TIMEOUT,
        |_| false,
        Duration::ZERO,
    );
    let events = crate::common::temp_path("kut-events.jsonl");
    let ev = events.to_str().unwrap_or_default();
    let broken = run_watched(
        DRVISOR,
        &drvisor_args(
            dir,
            "setjmp",
            1,
            &[
                "--break",
                "report",
                "--break",
                "report_summary",
                "--events",
                ev,
            ],
        ),
        FINISH_TIMEOUT,
        |_| false,
        Duration::ZERO,
    );
    let hits = crate::common::hits_only(crate::common::read_events(&events)?);
    let _ = std::fs::remove_file(&events);
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL") || l.starts_with("SUMMARY"))
            .map(str::to_owned)
            .collect()
    };
    ensure(lines(&plain.stdout) == lines(&broken.stdout), || {
        format!(
            "different results with breakpoints:\n{}\n--- vs\n{}",
            plain.stdout, broken.stdout
        )
    })?;
    ensure(plain.status == Some(1) && broken.status == Some(1), || {
        format!("statuses {:?} {:?}", plain.status, broken.status)
    })?;
    let count = |label: &str| hits.iter().filter(|e| e["label"] == label).count();
    let reports = lines(&plain.stdout)
        .iter()
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .count();
    ensure(count("report") == reports && reports == 10, || {
        format!("{} hits on report for {reports} results", count("report"))
    })?;
    ensure(count("report_summary") == 1, || {
        format!("{} hits on report_summary", count("report_summary"))
    })
}

/// ACPI S3 with upstream's `s3` image, on two vCPUs: the guest enables the RTC alarm as its
/// wake event and sleeps; drvisor resets both vCPUs, and the boot vCPU resumes in real mode at
/// the FACS's waking vector (0x1000), whose code sends what it finds at address 0 to the exit
/// port. Status 1 (value 0) says that no instruction after the sleep's `out` ran (the loop
/// after it stores 1 there). `with_breakpoint`: a host breakpoint at the waking vector, armed
/// from the start, fires once after the wake, in the reset state: it stayed armed through the
/// reset.
fn s3_wakes_at_the_waking_vector(dir: &Path, with_breakpoint: bool) -> Result<(), Failed> {
    let events = crate::common::temp_path("kut-s3-events.jsonl");
    let ev = events.to_str().unwrap_or_default();
    let extra: &[&str] = if with_breakpoint {
        &["--break", "0x1000", "--events", ev]
    } else {
        &[]
    };
    let run = run_watched(
        DRVISOR,
        &drvisor_args(dir, "s3", 2, extra),
        FINISH_TIMEOUT,
        |_| false,
        Duration::ZERO,
    );
    ensure(run.status == Some(1), || {
        format!(
            "status {:?} (1: resumed with nothing run after the sleep)\n{}{}",
            run.status, run.stdout, run.stderr
        )
    })?;
    if !with_breakpoint {
        return Ok(());
    }
    let hits = crate::common::hits_only(crate::common::read_events(&events)?);
    let _ = std::fs::remove_file(&events);
    ensure(hits.len() == 1, || {
        format!("wanted one hit at 0x1000: {hits:?}")
    })?;
    let hit = &hits[0];
    // Linear 0x1000 at IP 0: CS is 0x100 (base 0x1000), real mode; RFLAGS at reset.
    ensure(
        hit["vcpu"] == 0
            && hit["addr"] == 0x1000
            && hit["regs"]["rip"] == 0
            && hit["regs"]["rflags"] == 2,
        || format!("the hit is not the boot vCPU at reset, at 0100:0000: {hit}"),
    )
}

/// The images' ELF32 symbol tables: `start64` is a local label without `.type` in
/// `x86/cstart64.S`, run once by the boot CPU; `max_cpus` is an absolute symbol (`.set`).
fn elf32_symbols(dir: &Path) -> Result<(), Failed> {
    let events = crate::common::temp_path("kut-sym-events.jsonl");
    let ev = events.to_str().unwrap_or_default();
    let run = run_watched(
        DRVISOR,
        &drvisor_args(dir, "setjmp", 1, &["--break", "start64", "--events", ev]),
        FINISH_TIMEOUT,
        |_| false,
        Duration::ZERO,
    );
    let hits = crate::common::hits_only(crate::common::read_events(&events)?);
    let _ = std::fs::remove_file(&events);
    ensure(run.status == Some(1), || {
        format!("status {:?}\n{}{}", run.status, run.stdout, run.stderr)
    })?;
    ensure(hits.len() == 1 && hits[0]["label"] == "start64", || {
        format!("wanted one hit on start64: {hits:?}")
    })?;
    let abs = run_watched(
        DRVISOR,
        &drvisor_args(dir, "setjmp", 1, &["--break", "max_cpus"]),
        FINISH_TIMEOUT,
        |_| false,
        Duration::ZERO,
    );
    ensure(
        abs.status == Some(2) && abs.stderr.contains("`max_cpus` is an absolute symbol"),
        || format!("status {:?}: {}", abs.status, abs.stderr),
    )
}
