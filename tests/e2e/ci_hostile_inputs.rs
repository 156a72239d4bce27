//! `drvisor ci`, `drvisor run` and `drvisor ctl` against hostile input: out-of-range numbers
//! in a spec, a device or a FIFO as a spec, `--jobs 0`, a reader that closes stdout, and a
//! harness killed outright. Each ends within a time bound with its own message and exit code;
//! none panics or leaves a process or a file behind.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ci_harness::harness_children;
use crate::common::*;

/// A spec file with `text`, in a folder of its own.
fn spec_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = temp_path("hostile-specs");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a spec");
    path
}

/// Files in the temporary directory named like the harness's old events files.
fn events_files_of(pid: u32) -> Vec<String> {
    let prefix = format!("drvisor-ci-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn no_panic(run: &Run) -> Result<(), Failed> {
    ensure(!run.stderr.contains("panicked") && run.code != 101, || {
        format!("a panic: {run}")
    })
}

/// `timeout` out of range is a spec error at its line and column, before anything runs.
fn out_of_range_timeouts() -> Result<(), Failed> {
    for value in ["1e300", "18446744073709551616.0", "-1", "nan", "inf", "0"] {
        let text = format!(
            "[vm]\nscenario = \"spin\"\ntimeout = {value}\n[[check]]\nname = \"s\"\nexit_status = 0\n"
        );
        let spec = spec_file("timeout.toml", &text);
        let start = Instant::now();
        let run = drvisor(&["ci", &spec.display().to_string()]);
        no_panic(&run)?;
        run.expect_code(2)?;
        let want = format!("ERROR {}:3:11: `timeout`", spec.display());
        ensure(run.stdout.contains(&want), || {
            format!("timeout = {value}: wanted {want:?}\n{run}")
        })?;
        ensure(start.elapsed() < Duration::from_secs(10), || {
            format!("timeout = {value}: took {:?}", start.elapsed())
        })?;
    }
    Ok(())
}

/// A device or a FIFO given as a spec is refused at once, not read or waited on.
fn devices_and_fifos_are_not_specs() -> Result<(), Failed> {
    let fifo = temp_path("spec.fifo");
    let c = std::ffi::CString::new(fifo.display().to_string()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo(3) reads the NUL-terminated path only.
    ensure(unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0, || {
        "mkfifo failed".into()
    })?;
    for path in ["/dev/zero".to_owned(), fifo.display().to_string()] {
        let start = Instant::now();
        let run = drvisor(&["ci", &path]);
        no_panic(&run)?;
        run.expect_code(2)?;
        ensure(run.stdout.contains("not a regular file"), || {
            run.to_string()
        })?;
        ensure(start.elapsed() < Duration::from_secs(10), || {
            format!("{path}: took {:?}", start.elapsed())
        })?;
    }
    let _ = std::fs::remove_file(&fifo);
    Ok(())
}

fn jobs_zero_is_refused() -> Result<(), Failed> {
    let spec = spec_file("ok.toml", "[[check]]\nname = \"a\"\nexit_status = 0\n");
    let run = drvisor(&["ci", "--jobs", "0", &spec.display().to_string()]);
    run.expect_code(2)?;
    ensure(run.stderr.contains("--jobs"), || run.to_string())
}

/// Spawns `drvisor ARGS` with no stdin and its stdout and stderr piped.
fn spawn_piped(args: &[&str]) -> Result<std::process::Child, Failed> {
    Command::new(DRVISOR)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}").into())
}

/// Spawns `drvisor ARGS` with its stdout's reader already gone (as `| head -0`), waits for it.
fn with_closed_stdout(args: &[&str]) -> Result<(i32, String, u32), Failed> {
    let mut child = spawn_piped(args)?;
    let pid = child.id();
    drop(child.stdout.take());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    Ok((status.code().unwrap_or(-1), stderr, pid))
}

/// `drvisor ci ... | head -0`: no panic, the usual exit code, nothing left behind.
fn ci_with_a_closed_stdout() -> Result<(), Failed> {
    let spec = spec_file(
        "hello.toml",
        "[vm]\nscenario = \"hello\"\n[[check]]\nname = \"a\"\nexit_status = 0\n",
    );
    let (code, stderr, pid) = with_closed_stdout(&["ci", &spec.display().to_string()])?;
    ensure(
        code == 0 && !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        || format!("exit {code}\n{stderr}"),
    )?;
    let left = events_files_of(pid);
    ensure(left.is_empty(), || format!("left behind: {left:?}"))
}

/// `drvisor run ... | head -0`: no panic, not a word about the pipe, the guest's exit status.
fn run_with_a_closed_stdout() -> Result<(), Failed> {
    let (code, stderr, _) = with_closed_stdout(&["run", "--scenario", "hello"])?;
    ensure(code == 0 && !stderr.contains("panicked"), || {
        format!("exit {code}\n{stderr}")
    })?;
    ensure(!stderr.contains("Broken pipe"), || {
        format!("the closed pipe is no news: {stderr}")
    })
}

/// The harness killed with SIGKILL (nothing of it runs any more): its `drvisor run` child dies
/// with it (`PR_SET_PDEATHSIG`), and no events file is left.
fn a_killed_harness_leaves_nothing_behind() -> Result<(), Failed> {
    let spec = spec_file(
        "spin.toml",
        "[vm]\nscenario = \"spin\"\ntimeout = 120\n[[check]]\nname = \"s\"\nexit_status = 0\n",
    );
    let mut child = Command::new(DRVISOR)
        .args(["ci", &spec.display().to_string()])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let start = Instant::now();
    while harness_children(pid).is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure(!harness_children(pid).is_empty(), || {
        "the VM did not start".into()
    })?;
    let _ = child.kill();
    let _ = child.wait();
    let start = Instant::now();
    while !harness_children(pid).is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = harness_children(pid);
    ensure(left.is_empty(), || format!("left behind: {left:?}"))?;
    let files = events_files_of(pid);
    ensure(files.is_empty(), || format!("files left behind: {files:?}"))
}

/// The mutations of the spec parser's property test (`vmm/ci-harness/tests`), shared as they
/// are: here drawn from a fixed seed and run by the real harness.
#[path = "../../vmm/ci-harness/tests/hostile_specs/mod.rs"]
mod hostile_specs;

use hostile_specs::{mutate, Mutation, HOSTILE_VALUES, SEEDS};

/// How many hostile specs the end-to-end run feeds `drvisor ci`.
const HOSTILE_SPECS: usize = 20;

/// The exit codes docs/ci-harness.md gives `drvisor ci` (signals aside, which no test sends
/// here).
const DOCUMENTED_CI_EXITS: [i32; 5] = [0, 1, 2, 3, 4];

/// xorshift64*: a fixed, dependency-free sequence, so every run feeds the same specs.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn mutation(&mut self) -> Mutation {
        let line = self.below(40);
        match self.below(8) {
            0 => Mutation::FlipByte {
                at: self.below(usize::MAX),
                with: 1 << self.below(8),
            },
            1 => Mutation::Truncate {
                at: self.below(usize::MAX),
            },
            2 => Mutation::DuplicateLine { line },
            3 => Mutation::HostileValue {
                line,
                value: self.below(HOSTILE_VALUES.len()),
            },
            4 => Mutation::LongString {
                line,
                len: self.below(100_000),
            },
            5 => Mutation::Nest {
                line,
                depth: 1 + self.below(1_000),
                how: self.below(3),
            },
            6 => Mutation::LongKey {
                line,
                len: 1 + self.below(50_000),
            },
            _ => Mutation::DeleteLine { line },
        }
    }
}

/// [`HOSTILE_SPECS`] mutated examples, each one to three mutations deep: (what was done, text).
fn hostile_specs() -> Vec<(String, String)> {
    let mut draw = Draw(0x6472_7669_736f_7221);
    (0..HOSTILE_SPECS)
        .map(|_| {
            let (name, seed) = SEEDS[draw.below(SEEDS.len())];
            let ms: Vec<Mutation> = (0..1 + draw.below(3)).map(|_| draw.mutation()).collect();
            let text = ms.iter().fold(seed.to_owned(), |t, m| mutate(&t, m));
            let mut what = format!("{name} with {ms:?}");
            what.truncate(300);
            (what, text)
        })
        .collect()
}

/// The real `drvisor ci` on each hostile spec: it ends in time with a documented exit code
/// (2, a spec error, naming the file, line and column), never panics, and leaves no child
/// and no file behind. Some of the specs still run a VM, some are spec errors: both ways out
/// are walked.
fn hostile_specs_end_cleanly() -> Result<(), Failed> {
    let (mut ran, mut refused) = (0, 0);
    for (i, (what, text)) in hostile_specs().into_iter().enumerate() {
        let spec = spec_file(&format!("hostile-{i}.toml"), &text);
        let path = spec.display().to_string();
        let mut child = spawn_piped(&["ci", &path])?;
        let pid = child.id();
        let which = |e: Failed| -> Failed {
            format!("spec {i} ({what}): {}", e.message().unwrap_or_default()).into()
        };
        let start = Instant::now();
        let run = Drained::start(&mut child)
            .wait(&mut child, Duration::from_secs(30))
            .map_err(which)?;
        let took = start.elapsed();
        no_panic(&run).map_err(which)?;
        ensure(DOCUMENTED_CI_EXITS.contains(&run.code), || {
            format!(
                "spec {i} ({what}): exit {}, not a documented one\n{run}",
                run.code
            )
        })?;
        if run.code == 2 {
            refused += 1;
            // The parser's errors have their line and column; what `drvisor run` refuses in a
            // spec that parsed names the file (and a check's line where it names its location).
            let by_run = run.stdout.contains("drvisor refused the run");
            let placed = run
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("ERROR {path}:")))
                .any(|rest| {
                    let mut p = rest.splitn(3, ':');
                    let num = |s: Option<&str>| s.is_some_and(|s| s.parse::<usize>().is_ok());
                    by_run || (num(p.next()) && num(p.next()))
                });
            ensure(placed, || {
                format!("spec {i} ({what}): a spec error without file:line:col\n{run}")
            })?;
        } else {
            ran += 1;
        }
        let wait = Instant::now();
        while !harness_children(pid).is_empty() && wait.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = harness_children(pid);
        ensure(left.is_empty(), || {
            format!("spec {i} ({what}): left behind: {left:?}")
        })?;
        let files = events_files_of(pid);
        ensure(files.is_empty(), || {
            format!("spec {i} ({what}): files left behind: {files:?}")
        })?;
        // A message quotes a few lines, not the megabyte string it is about.
        ensure(run.stdout.len() + run.stderr.len() < 16 * 1024, || {
            format!(
                "spec {i} ({what}): {} bytes of output:\n{:.2000}",
                run.stdout.len() + run.stderr.len(),
                run.stdout
            )
        })?;
        println!("hostile spec {i}: exit {} in {took:.1?}", run.code);
        let _ = std::fs::remove_file(&spec);
    }
    ensure(ran > 0 && refused > 0, || {
        format!("the specs should both run and be refused: {ran} ran, {refused} refused")
    })
}

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "ci_hostile_inputs::out_of_range_timeouts",
            out_of_range_timeouts,
        ),
        Trial::test(
            "ci_hostile_inputs::devices_and_fifos_are_not_specs",
            devices_and_fifos_are_not_specs,
        ),
        Trial::test(
            "ci_hostile_inputs::jobs_zero_is_refused",
            jobs_zero_is_refused,
        ),
        Trial::test(
            "ci_hostile_inputs::ci_with_a_closed_stdout",
            ci_with_a_closed_stdout,
        ),
        Trial::test(
            "ci_hostile_inputs::run_with_a_closed_stdout",
            run_with_a_closed_stdout,
        ),
        Trial::test(
            "ci_hostile_inputs::a_killed_harness_leaves_nothing_behind",
            a_killed_harness_leaves_nothing_behind,
        ),
        Trial::test(
            "ci_hostile_inputs::hostile_specs_end_cleanly",
            hostile_specs_end_cleanly,
        ),
    ]
}
