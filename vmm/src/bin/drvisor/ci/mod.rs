//! `drvisor ci`: spec files in, a verdict CI understands out (JUnit XML, a JSON report, plain
//! lines and an exit code). Three rooms, as kunit.py keeps them: the spec ([`spec`]), the run
//! ([`plan`] builds a `drvisor run` command line, [`run`] runs it), and the report ([`judge`],
//! `ktap`, `kut`, [`report`], [`junit`]; [`names`] reads the guest's symbols to name the code
//! addresses in it). Everything but [`run`], [`names`] and this
//! file is pure. The
//! spec and the report are the `drvisor-ci` library; the run stays here, beside the engine it
//! needs (the host probe, `drvisor run`'s exit codes).
//!
//! Each spec runs as a child `drvisor run` (this same binary), one VM per child: a run that
//! hangs or crashes is killed or reported without touching the harness or the other specs.

/// A line on stdout. A reader that went away (`drvisor ci ... | head -1`) is no reason to
/// panic or to stop the suite: the line is dropped and the run ends with its usual status.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod names;
mod plan;
mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use drvisor::probe::{self, ProbeReport};
use drvisor_ci::report::{code, CaseReport, SpecResult};
use drvisor_ci::shard::Shard;
use drvisor_ci::spec::Spec;
use drvisor_ci::{html, judge, junit, report, shard, spec, timeline};
use serde::Serialize;

/// `drvisor ci`.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// Spec files (TOML).
    #[arg(required = true, value_name = "SPEC.toml")]
    pub specs: Vec<PathBuf>,
    /// Write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here (cases, failure context, a hit timeline).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Specs run at once, one VM each.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Run only shard I of N (0-based): the specs, sorted by path, whose index is I mod N.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
}

/// The JSON report.
#[derive(Serialize)]
struct JsonReport<'a> {
    exit_code: u8,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
    jobs: usize,
    totals: report::Totals,
    probe: Option<&'a ProbeReport>,
    specs: &'a [SpecResult],
}

/// The first `if` of `spec` that is not a valid condition, as a spec error (the spec format
/// knows the key; the language is drvisor's).
fn bad_condition(spec: &spec::Spec) -> Option<String> {
    spec.checks.iter().find_map(|c| {
        let text = c.kind.hits()?.condition.as_deref()?;
        drvisor::condition::Condition::parse(text).err().map(|e| {
            format!(
                "{}:{}: check `{}`: if = {text:?}: {e}",
                spec.path.display(),
                c.line,
                c.name
            )
        })
    })
}

/// Runs the suite; returns the exit code.
pub fn main(args: CiArgs) -> u8 {
    let start = Instant::now();
    let paths = shard::select(args.specs.clone(), args.shard);
    let mut specs = Vec::new();
    let mut errors = 0;
    for p in &paths {
        match spec::load(p) {
            Ok(s) => match bad_condition(&s) {
                None => specs.push(s),
                Some(e) => {
                    println!("ERROR {e}");
                    errors += 1;
                }
            },
            Err(e) => {
                say!("ERROR {e}");
                errors += 1;
            }
        }
    }
    if errors > 0 {
        say!(
            "drvisor ci: {errors} spec error(s); nothing ran (exit {})",
            code::SPEC_ERROR
        );
        return code::SPEC_ERROR;
    }
    let probe = match kvm_ioctls::Kvm::new() {
        Err(e) => {
            say!(
                "drvisor ci: this host cannot run the suite: {} (exit {})",
                drvisor::vm::Error::KvmAccess(e),
                code::CANNOT_RUN
            );
            return code::CANNOT_RUN;
        }
        Ok(kvm) => match probe::cache::answers(
            &kvm,
            probe::cache::default_dir().as_deref(),
            probe::cache::Want::All,
            false,
        ) {
            Ok((p, _)) => p,
            Err(e) => {
                say!(
                    "drvisor ci: the host probe failed: {e} (exit {})",
                    code::INFRASTRUCTURE
                );
                return code::INFRASTRUCTURE;
            }
        },
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            say!("drvisor ci: cannot find the drvisor binary: {e}");
            return code::INFRASTRUCTURE;
        }
    };
    // SIGINT, SIGTERM or SIGHUP: every running child is killed with its group, the specs not
    // started are left out, the reports are written, and the exit code is 128 + the signal.
    let interrupted = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let registered = signal_hook::flag::register(sig, interrupted.clone())
            .and_then(|_| signal_hook::flag::register_usize(sig, signal.clone(), sig as usize));
        if let Err(e) = registered {
            say!("drvisor ci: cannot handle signal {sig}: {e}");
            return code::INFRASTRUCTURE;
        }
    }
    let results = run_all(&specs, &probe, &exe, usize::from(args.jobs), &interrupted);
    let seconds = start.elapsed().as_secs_f64();
    let exit = report::exit_code(&results);
    let totals = report::totals(&results);
    let mut write_failed = false;
    if let Some(path) = &args.junit {
        let written = junit::xml(&results, seconds)
            .and_then(|x| std::fs::write(path, x).map_err(|e| e.to_string()));
        if let Err(e) = written {
            say!("drvisor ci: cannot write {}: {e}", path.display());
            write_failed = true;
        }
    }
    if let Some(path) = &args.json {
        let json = JsonReport {
            exit_code: exit,
            seconds,
            shard: args.shard.map(|s| s.to_string()),
            jobs: usize::from(args.jobs),
            totals,
            probe: Some(&probe),
            specs: &results,
        };
        let written = serde_json::to_string_pretty(&json)
            .map_err(|e| e.to_string())
            .and_then(|t| std::fs::write(path, t + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            say!("drvisor ci: cannot write {}: {e}", path.display());
            write_failed = true;
        }
    }
    if let Some(path) = &args.html {
        let page = html::render(&results, seconds, exit);
        if let Err(e) = std::fs::write(path, page) {
            say!("drvisor ci: cannot write {}: {e}", path.display());
            write_failed = true;
        }
    }
    let caught = signal.load(Ordering::Relaxed);
    if caught != 0 {
        let code = 128 + caught as u8;
        say!("drvisor ci: interrupted by signal {caught}; every VM was killed (exit {code})");
        return code;
    }
    say!("{}", report::summary_line(&totals, seconds, exit));
    if write_failed && exit == code::PASSED {
        return code::INFRASTRUCTURE;
    }
    exit
}

/// What stdout shows while specs run: each spec's lines as it ends and, on a terminal only, a
/// progress line under them that is rewritten in place. Plain lines when stdout is a pipe or a
/// file (CI logs).
struct Progress {
    tty: bool,
    total: usize,
    done: usize,
    running: Vec<String>,
}

impl Progress {
    fn started(&mut self, name: &str) {
        self.running.push(name.to_owned());
        self.redraw("");
    }

    fn finished(&mut self, name: &str, lines: &str) {
        self.running.retain(|n| n != name);
        self.done += 1;
        self.redraw(lines);
    }

    fn redraw(&self, lines: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if !self.tty {
            let _ = out.write_all(lines.as_bytes());
            return;
        }
        let running: Vec<&str> = self.running.iter().map(String::as_str).collect();
        // \r and erase-line: the old progress line goes, the new lines take its place.
        let _ = write!(
            out,
            "\r\x1b[K{lines}{}",
            report::progress_line(self.done, self.total, &running)
        );
        let _ = out.flush();
    }

    fn clear(&self) {
        if self.tty {
            use std::io::Write;
            let _ = write!(std::io::stdout().lock(), "\r\x1b[K");
        }
    }
}

/// Runs every spec, `jobs` at a time; results in the specs' order, each printed as it ends.
fn run_all(
    specs: &[Spec],
    probe: &ProbeReport,
    exe: &Path,
    jobs: usize,
    interrupted: &Arc<AtomicBool>,
) -> Vec<SpecResult> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<SpecResult>>> = specs.iter().map(|_| Mutex::new(None)).collect();
    let progress = Mutex::new(Progress {
        tty: std::io::stdout().is_terminal(),
        total: specs.len(),
        done: 0,
        running: Vec::new(),
    });
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(specs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                if interrupted.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut p) = progress.lock() {
                    p.started(&spec.name);
                }
                let result = run_spec(spec, probe, exe, interrupted);
                if let Ok(mut p) = progress.lock() {
                    p.finished(&spec.name, &report::spec_lines(&result));
                }
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    if let Ok(p) = progress.lock() {
        p.clear();
    }
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

/// One spec: skip what the host cannot deliver, run the rest, judge.
fn run_spec(
    spec: &Spec,
    probe: &ProbeReport,
    exe: &Path,
    interrupted: &Arc<AtomicBool>,
) -> SpecResult {
    let start = Instant::now();
    if let Some(reason) = &spec.vm.missing {
        return SpecResult {
            path: spec.path.clone(),
            name: spec.name.clone(),
            seconds: 0.0,
            run_seconds: 0.0,
            end: format!("not run: {reason}"),
            run_end: None,
            spec_error: None,
            cases: judge::all_skipped(spec, reason)
                .into_iter()
                .map(CaseReport::from)
                .collect(),
            timeline: Vec::new(),
        };
    }
    let skips = plan::skips(spec, probe);
    let args = plan::run_args(spec, &skips, Path::new(run::CHILD_PATH));
    let obs = match run::EventsFile::new() {
        Ok(mut events) => run::run(exe, &args, &mut events, spec.vm.timeout, interrupted),
        // Judged like any run that could not start: every case fails with this reason.
        Err(e) => run::not_run(judge::RunEnd::Infrastructure(format!(
            "cannot create a temporary events file: {e}"
        ))),
    };
    let spec_error = match &obs.end {
        judge::RunEnd::Refused(m) => Some(refusal_at(spec, m)),
        _ => None,
    };
    let names = names::SpecNames::new(&spec.vm);
    let cases: Vec<CaseReport> = judge::judge(spec, &obs, &skips, &|a| names.name(a))
        .into_iter()
        .map(CaseReport::from)
        .collect();
    let timeline = timeline::of(spec, &obs, &skips);
    SpecResult {
        path: spec.path.clone(),
        name: spec.name.clone(),
        seconds: start.elapsed().as_secs_f64(),
        run_seconds: obs.seconds,
        end: obs.end.to_string(),
        run_end: Some(obs.end),
        spec_error,
        cases,
        timeline,
    }
}

/// drvisor's refusal as a spec error, at the line of the check whose location it names
/// (`unknown symbol 'drv_target_9'; did you mean ...`).
fn refusal_at(spec: &Spec, message: &str) -> String {
    let line = spec.checks.iter().find_map(|c| {
        let target = match &c.kind {
            spec::CheckKind::Break(h) => &h.target,
            spec::CheckKind::Watch(w) => &w.hits.target,
            _ => return None,
        };
        let name = target.split(':').next().unwrap_or(target);
        message.contains(name).then_some(c.line)
    });
    match line {
        Some(l) => format!("{}:{l}: {message}", spec.path.display()),
        None => format!("{}: {message}", spec.path.display()),
    }
}
