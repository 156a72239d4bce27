//! Every entry of upstream kvm-unit-tests' `x86/unittests.cfg`, run by drvisor as upstream's
//! `run_tests.sh -a` runs it under QEMU, against what QEMU 10.0 did with the same entry on a host
//! like this project's (`tests/data/kvm-unit-tests/x86/qemu-10.0-results/`; its README says how
//! they were made).
//!
//! Each entry must come out the same or better:
//! - result line for result line (`PASS:`/`FAIL:`/`SKIP:`; see `kvm_unit_tests::compare`);
//! - and in its verdict, as run_tests.sh gives it: PASS over SKIP over FAIL (a timeout is a
//!   FAIL; QEMU's `FAIL` of a test that drvisor passes is better).
//!
//! Every entry runs through one `drvisor ci` of the whole vendored cfg (`--jobs 2`), as a user
//! would run it; the first trial that needs its JSON report starts it, the others wait for it,
//! and each entry's trial reads its own result (console, guest status, notes) from it. Entries
//! QEMU ran out of time on run their whole timeout, as under run_tests.sh.
//!
//! Where an entry needs what drvisor lacks (PCI devices, Hyper-V enlightenments, the VMware
//! backdoor), its trial is ignored with that reason. A `+feature` this host's KVM cannot give
//! is dropped by `drvisor ci`, as QEMU drops it after a warning; the report says so (a skipped
//! case `+feature`), and so does the trial. The verdicts were recorded on a host whose KVM
//! emulates guest CPL0 code; elsewhere (VMX, SVM) the trials are ignored, and `kvm_unit_tests`
//! compares its images with a QEMU run there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use drvisor::debug::DebugCaps;

use crate::common::{ensure, skipped, Context, Failed, Trial};
use crate::kvm_unit_tests::{compare, results};
use drvisor_ci::kut_cfg::{self as cfg, Translation};

/// The vendored build: `unittests.cfg`, the images, and QEMU's results.
fn build_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/kvm-unit-tests/x86")
}

const RESULTS: &str = "qemu-10.0-results";

/// run_tests.sh's verdict on one entry, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Fail,
    Skip,
    Pass,
}

/// What QEMU did with an entry: its verdict, whether it ran out of time, and its log.
struct Baseline {
    verdict: Verdict,
    timed_out: bool,
    log: String,
}

/// What run_tests.sh did with an entry under QEMU.
#[derive(Debug, Clone, PartialEq)]
enum QemuRun {
    /// The test ran: its verdict, and whether it ran out of time.
    Ran { verdict: Verdict, timed_out: bool },
    /// run_tests.sh did not run it, or QEMU could not start it, for this reason: `i386 only`,
    /// a `check` this host fails, `QEMU Aborted`.
    NotRun(String),
}

/// run_tests.sh's lines: `PASS name (...)`, `FAIL name (timeout; ...)`, and `SKIP name (N
/// tests, M skipped)` for a test that skipped itself, but `SKIP name (REASON)` for one that
/// never ran.
fn verdicts(summary: &str) -> BTreeMap<String, QemuRun> {
    let mut out = BTreeMap::new();
    for line in summary.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(word), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let rest = words.next().unwrap_or("").trim();
        let reason = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')'));
        let verdict = match word {
            "PASS" => Verdict::Pass,
            "FAIL" => Verdict::Fail,
            "SKIP" => match reason {
                Some(r) if !r.starts_with(|c: char| c.is_ascii_digit()) => {
                    out.insert(name.to_owned(), QemuRun::NotRun(r.to_owned()));
                    continue;
                }
                _ => Verdict::Skip,
            },
            _ => continue,
        };
        let timed_out = reason.is_some_and(|r| r.starts_with("timeout"));
        out.insert(name.to_owned(), QemuRun::Ran { verdict, timed_out });
    }
    out
}

/// drvisor's verdict from the guest's status, as run_tests.sh reads QEMU's `(status << 1) | 1`:
/// 1 (status 0) a PASS and 77 (status 38) a SKIP; anything else, a run that did not end by the
/// guest's own exit (a timeout, drvisor's own end) included, a FAIL.
fn verdict_of(guest_status: Option<i32>) -> Verdict {
    match guest_status.map(|s| (s << 1) | 1) {
        Some(1) => Verdict::Pass,
        Some(77) => Verdict::Skip,
        _ => Verdict::Fail,
    }
}

pub fn trials(ctx: &Context) -> Vec<Trial> {
    let mut trials = vec![
        Trial::test("kvm_unit_tests_cfg::verdict_rules", verdict_rules),
        Trial::test("kvm_unit_tests_cfg::through_drvisor_ci", through_drvisor_ci),
    ];
    let dir = build_dir();
    let loaded = std::fs::read_to_string(dir.join("unittests.cfg"))
        .map_err(|e| format!("{}: {e}", dir.join("unittests.cfg").display()))
        .and_then(|text| cfg::parse(&text))
        .and_then(|entries| {
            let summary = dir.join(RESULTS).join("run_tests.txt");
            std::fs::read_to_string(&summary)
                .map(|s| (entries, verdicts(&s)))
                .map_err(|e| format!("{}: {e}", summary.display()))
        });
    let (entries, qemu) = match loaded {
        Ok(l) => l,
        Err(why) => {
            // The build belongs to the repository: without it this is a broken checkout.
            trials.push(Trial::test("kvm_unit_tests_cfg::the_build", move || {
                Err(why.into())
            }));
            return trials;
        }
    };
    let recorded_here = DebugCaps::from_probe(&ctx.probe) == DebugCaps::pvm_like();
    for entry in entries {
        let name = format!("kvm_unit_tests_cfg::{}", entry.name);
        if !recorded_here {
            trials.push(skipped(
                &name,
                "QEMU's verdicts were recorded on a host whose KVM emulates guest CPL0 code, and \
                 this host's KVM is not one (kvm_unit_tests compares its images with QEMU here)",
            ));
            continue;
        }
        if entry.arch.as_deref() == Some("i386") {
            trials.push(skipped(
                &name,
                "a 32-bit test; the vendored build is x86_64, and run_tests.sh skipped it too",
            ));
            continue;
        }
        if let Translation::Cannot(what) = cfg::translate(&entry) {
            trials.push(skipped(
                &name,
                &format!("needs {what}, which drvisor lacks"),
            ));
            continue;
        }
        let (verdict, timed_out) = match qemu.get(&entry.name) {
            Some(QemuRun::Ran { verdict, timed_out }) => (*verdict, *timed_out),
            Some(QemuRun::NotRun(why)) => {
                let why = format!("QEMU did not run it on this host ({why}): nothing to compare");
                trials.push(skipped(&name, &why));
                continue;
            }
            None => {
                let why = format!(
                    "no QEMU verdict for [{}] in {RESULTS}/run_tests.txt",
                    entry.name
                );
                trials.push(Trial::test(name, move || Err(why.into())));
                continue;
            }
        };
        if entry.file == "msr.flat" && crate::kvm_unit_tests::spec_ctrl_shown() {
            trials.push(skipped(
                &name,
                "this host shows the guest SPEC_CTRL (CPUID.7:EDX[26]) whatever KVM_SET_CPUID2 \
                 sets, so the test writes SPEC_CTRL's bits, and its MSR here neither keeps them \
                 nor faults: 7 FAILs under QEMU 10.0 on such a host as under drvisor \
                 (tests/data/kvm-unit-tests/qemu-10.0-spec-ctrl-shown/msr.log); QEMU's verdicts \
                 were recorded where the guest did not see it",
            ));
            continue;
        }
        if entry.name == "ioapic" {
            if let Some(why) = crate::kvm_unit_tests::ioapic_by_chance_here() {
                trials.push(skipped(&name, &why));
                continue;
            }
        }
        let dir = dir.clone();
        trials.push(Trial::test(name, move || {
            let log =
                std::fs::read_to_string(dir.join(RESULTS).join(format!("{}.log", entry.name)))
                    .unwrap_or_default();
            let base = Baseline {
                verdict,
                timed_out,
                log,
            };
            judge_entry(&entry.name, &base)
        }));
    }
    trials
}

/// What `drvisor ci` reported for one entry.
struct CiEntry {
    /// The guest's exit status, when the guest ended the run itself.
    guest_status: Option<i32>,
    /// How the run ended, in `drvisor ci`'s words.
    end: String,
    console: String,
    /// Each `+feature` drvisor ci dropped (this host's KVM lacks it), with its reason.
    dropped: Vec<(String, String)>,
    seconds: f64,
}

/// The whole cfg's run can take as long as every entry's timeout one after the other on one
/// job; this only stops a harness that hangs.
const CI_LIMIT: Duration = Duration::from_secs(3600);

/// The one `drvisor ci` run of the vendored cfg, by entry; the first trial that asks starts it,
/// the others wait for it.
fn ci_report() -> &'static Result<BTreeMap<String, CiEntry>, String> {
    static REPORT: OnceLock<Result<BTreeMap<String, CiEntry>, String>> = OnceLock::new();
    REPORT.get_or_init(run_ci)
}

fn run_ci() -> Result<BTreeMap<String, CiEntry>, String> {
    let dir = crate::common::temp_path("kut-cfg-ci");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = dir.join("report.json");
    let cfg = build_dir().join("unittests.cfg");
    let args = [
        "ci",
        &cfg.to_string_lossy(),
        "--jobs",
        "2",
        "--json",
        &json.to_string_lossy(),
    ];
    let start = Instant::now();
    let run = crate::common::drvisor_within(&args, CI_LIMIT);
    let took = start.elapsed();
    let show = || {
        format!(
            "drvisor {} (exit {})\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            run.code,
            run.stdout,
            run.stderr
        )
    };
    let text = std::fs::read_to_string(&json);
    let _ = std::fs::remove_dir_all(&dir);
    let text = text.map_err(|e| format!("no JSON report ({e}) from {}", show()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("the JSON report: {e}\n{}", show()))?;
    let specs = report["specs"]
        .as_array()
        .ok_or_else(|| format!("the JSON report has no `specs`\n{}", show()))?;
    let mut out = BTreeMap::new();
    for s in specs {
        let name = s["name"].as_str().unwrap_or_default().to_owned();
        let dropped = s["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let case = c["name"].as_str()?;
                case.starts_with('+').then(|| {
                    let why = c["reason"].as_str().unwrap_or_default();
                    (case.to_owned(), why.to_owned())
                })
            })
            .collect();
        let entry = CiEntry {
            guest_status: s["guest_status"]
                .as_i64()
                .and_then(|v| i32::try_from(v).ok()),
            end: s["end"].as_str().unwrap_or_default().to_owned(),
            console: s["console"].as_str().unwrap_or_default().to_owned(),
            dropped,
            seconds: s["run_seconds"].as_f64().unwrap_or_default(),
        };
        out.insert(name, entry);
    }
    let summary = run.stdout.lines().last().unwrap_or_default();
    println!(
        "  drvisor ci, the whole cfg, --jobs 2: {:.0} s for every trial below ({summary})",
        took.as_secs_f64()
    );
    Ok(out)
}

/// One entry's result in the shared `drvisor ci` run, against QEMU's.
fn judge_entry(name: &str, base: &Baseline) -> Result<(), Failed> {
    let report = ci_report().as_ref().map_err(|e| Failed::from(e.as_str()))?;
    let run = report
        .get(name)
        .ok_or_else(|| format!("drvisor ci's report has no [{name}]"))?;
    let notes: String = run
        .dropped
        .iter()
        .map(|(feature, why)| format!("  {name}: drvisor ci ran it without {feature}: {why}\n"))
        .collect();
    let show = || {
        format!(
            "{notes}drvisor ci: {} after {:.1} s\n--- console\n{}---",
            run.end, run.seconds, run.console
        )
    };
    let qemu = results(&base.log);
    let cmp = compare(&qemu, &results(&run.console));
    ensure(cmp.worse.is_empty(), || {
        format!("worse than QEMU:\n  {}\n{}", cmp.worse.join("\n  "), show())
    })?;
    let ours = verdict_of(run.guest_status);
    ensure(ours >= base.verdict, || {
        format!(
            "verdict {ours:?} (guest status {:?}), QEMU's {:?}\n{}",
            run.guest_status,
            base.verdict,
            show()
        )
    })?;
    let qemu_end = if base.timed_out {
        "timed out".into()
    } else {
        format!("{:?}", base.verdict)
    };
    // One print per trial: the trials print at once, when the shared run ends.
    let mut said = notes.clone();
    if cmp.better.is_empty() && ours == base.verdict {
        said += &format!(
            "  {name}: same as QEMU (QEMU {qemu_end}; drvisor {ours:?} after {:.0} s)",
            run.seconds
        );
    } else {
        said += &format!(
            "  {name}: better than QEMU (QEMU {qemu_end}; drvisor {ours:?} after {:.0} s):\n    {}",
            run.seconds,
            cmp.better.join("\n    ")
        );
    }
    println!("{said}");
    Ok(())
}

/// Upstream's own entries, copied from the vendored cfg into one of their own beside the images,
/// run by `drvisor ci`: one that runs on every host (`setjmp`, one vCPU: the nested VMX host has
/// one CPU, and L1 stopped answering when two VMs with three vCPUs ran there at once), one that
/// needs Hyper-V and one for i386 alone, which are skipped with their reasons.
fn through_drvisor_ci() -> Result<(), Failed> {
    let upstream = std::fs::read_to_string(build_dir().join("unittests.cfg"))
        .map_err(|e| format!("the vendored cfg: {e}"))?;
    let wanted = ["setjmp", "hyperv_synic", "cmpxchg8b"];
    let dir = crate::common::temp_path("kut-cfg");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cfg = String::new();
    for name in wanted {
        let section = cfg_section(&upstream, name).ok_or(format!("no [{name}] upstream"))?;
        let file = section
            .lines()
            .find_map(|l| l.strip_prefix("file = "))
            .ok_or(format!("[{name}] names no file"))?;
        std::os::unix::fs::symlink(build_dir().join(file), dir.join(file))
            .map_err(|e| e.to_string())?;
        cfg.push_str(&section);
    }
    let path = dir.join("unittests.cfg");
    std::fs::write(&path, &cfg).map_err(|e| e.to_string())?;
    let junit = dir.join("junit.xml");
    let run = crate::common::drvisor(&[
        "ci",
        &path.to_string_lossy(),
        "--junit",
        &junit.to_string_lossy(),
    ]);
    let show = || {
        format!(
            "{cfg}\n--- stdout\n{}--- stderr\n{}",
            run.stdout, run.stderr
        )
    };
    ensure(run.code == 0, || format!("exit {}\n{}", run.code, show()))?;
    for line in [
        "PASS  setjmp::results/actual 9 == expected 9",
        "PASS  setjmp::status 0",
        "SKIP  hyperv_synic::(run): needs Hyper-V enlightenments",
        "SKIP  cmpxchg8b::(run): a 32-bit (i386) test",
        "drvisor ci: 3 spec(s)",
    ] {
        ensure(run.stdout.lines().any(|l| l.starts_with(line)), || {
            format!("no line `{line}`\n{}", show())
        })?;
    }
    let xml = std::fs::read_to_string(&junit).map_err(|e| e.to_string())?;
    ensure(xml.matches("<testsuite ").count() == 3, || xml.clone())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `[name]` and its lines, up to the next section, from a cfg.
fn cfg_section(cfg: &str, name: &str) -> Option<String> {
    let header = format!("[{name}]");
    let mut lines = cfg.lines().skip_while(|l| l.trim() != header);
    let first = lines.next()?;
    let mut out = format!("{first}\n");
    for l in lines.take_while(|l| !l.trim_start().starts_with('[')) {
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

fn verdict_rules() -> Result<(), Failed> {
    let v = verdicts(
        "PASS a (3 tests)\nFAIL b (timeout; duration=30)\nSKIP c (i386 only)\n\
         FAIL d (2 tests, 1 unexpected failures)\nSKIP e (5 tests, 5 skipped)\nPASS f \nnoise\n",
    );
    let ran = |verdict, timed_out| Some(QemuRun::Ran { verdict, timed_out });
    ensure(
        v.get("a").cloned() == ran(Verdict::Pass, false)
            && v.get("b").cloned() == ran(Verdict::Fail, true)
            && v.get("c") == Some(&QemuRun::NotRun("i386 only".into()))
            && v.get("d").cloned() == ran(Verdict::Fail, false)
            && v.get("e").cloned() == ran(Verdict::Skip, false)
            && v.get("f").cloned() == ran(Verdict::Pass, false)
            && v.len() == 6,
        || format!("{v:?}"),
    )?;
    ensure(
        verdict_of(Some(0)) == Verdict::Pass
            && verdict_of(Some(38)) == Verdict::Skip
            && verdict_of(Some(1)) == Verdict::Fail
            && verdict_of(Some(3)) == Verdict::Fail
            && verdict_of(None) == Verdict::Fail,
        || "statuses".into(),
    )
}
