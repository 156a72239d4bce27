//! `drvisor ci`: spec files in, a verdict CI understands out (JUnit XML, a JSON report, an HTML
//! page, plain lines and an exit code). The harness is the `drvisor-ci` library: the spec, the
//! run (planning each `drvisor run`, running it as a child, the parallel schedule) and the
//! report. This command parses its flags, checks the specs' conditions in drvisor's language,
//! asks the host probe what this host delivers ([`host_support`]), drops the `+feature`s a cfg
//! entry asks for and this host's KVM lacks ([`drop_what_kvm_lacks`]), reads the guests'
//! symbols for the library ([`symbols`]), handles signals, shows the progress ([`progress`]),
//! writes the reports and picks the exit code.
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

mod progress;
mod symbols;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use drvisor::probe::{self, Mechanism, ProbeReport};
use drvisor_ci::child::DrvisorRun;
use drvisor_ci::plan::HostSupport;
use drvisor_ci::report::{code, SpecResult};
use drvisor_ci::run::Runner;
use drvisor_ci::shard::Shard;
use drvisor_ci::{html, junit, qemu_cpu, report, schedule, shard, spec};
use serde::Serialize;

/// `drvisor ci`.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// Spec files (TOML), or kvm-unit-tests' `unittests.cfg` files (`*.cfg`: each entry a
    /// spec, its image in the cfg's folder).
    #[arg(required = true, value_name = "SPEC.toml|unittests.cfg")]
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

/// What the host probe found, as the runner asks it: the mechanisms a spec's checks need, at
/// CPL 0.
fn host_support(probe: &ProbeReport) -> HostSupport {
    HostSupport {
        exec_breakpoint: probe.why_not(Mechanism::HostExecBreakpoint, 0),
        write_watchpoint: probe.why_not(Mechanism::HostWriteWatchpoint, 0),
        readonly_memslot_trap: probe.why_not(Mechanism::ReadonlyMemslotTrap, 0),
    }
}

/// Takes the `+feature`s this host's KVM cannot give out of the specs that run as QEMU would
/// (a kvm-unit-tests cfg's entries), each with a note in its report ([`qemu_cpu`]).
fn drop_what_kvm_lacks(kvm: &kvm_ioctls::Kvm, specs: &mut [spec::Spec]) -> Result<(), String> {
    if !specs.iter().any(|s| s.vm.drop_unoffered_features) {
        return Ok(());
    }
    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID failed: {e}"))?;
    let offer = |name: &str| match drvisor::cpu::feature_table::lookup(name) {
        None => qemu_cpu::Offer::Unknown,
        Some(f) if f.offered_by(&supported) => qemu_cpu::Offer::Offered,
        Some(_) => qemu_cpu::Offer::Lacking,
    };
    for s in specs {
        qemu_cpu::drop_unoffered(&mut s.vm, &offer);
    }
    Ok(())
}

/// Every entry of a kvm-unit-tests `unittests.cfg` as a spec.
fn load_kvm_unit_tests_cfg(path: &Path) -> Result<Vec<spec::Spec>, spec::SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| spec::SpecError {
        file: path.to_owned(),
        at: None,
        message: format!("cannot read it: {e}"),
    })?;
    drvisor_ci::kut_cfg::specs(path, &text)
}

/// Runs the suite; returns the exit code.
pub fn main(args: CiArgs) -> u8 {
    let start = Instant::now();
    let paths = shard::select(args.specs.clone(), args.shard);
    let mut specs = Vec::new();
    let mut errors = 0;
    for p in &paths {
        if p.extension().is_some_and(|e| e == "cfg") {
            match load_kvm_unit_tests_cfg(p) {
                Ok(entries) => specs.extend(entries),
                Err(e) => {
                    say!("ERROR {e}");
                    errors += 1;
                }
            }
            continue;
        }
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
    let kvm = match kvm_ioctls::Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            say!(
                "drvisor ci: this host cannot run the suite: {} (exit {})",
                drvisor::vm::Error::KvmAccess(e),
                code::CANNOT_RUN
            );
            return code::CANNOT_RUN;
        }
    };
    let probe = match probe::cache::answers(
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
    };
    if let Err(e) = drop_what_kvm_lacks(&kvm, &mut specs) {
        say!("drvisor ci: {e} (exit {})", code::INFRASTRUCTURE);
        return code::INFRASTRUCTURE;
    }
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
    let child = DrvisorRun::new(exe);
    let runner = Runner {
        launch: &child,
        host: &host_support(&probe),
        symbols: &symbols::SpecSymbols,
        interrupted: &interrupted,
    };
    let mut progress = progress::Progress::new(specs.len());
    let results = schedule::run_all(&specs, usize::from(args.jobs), &runner, &mut progress);
    progress.clear();
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

#[cfg(test)]
mod tests {
    /// The spec parser refuses a `cmdline` at the loader's own limit, at its line and column.
    #[test]
    fn the_spec_cmdline_limit_is_the_loaders() {
        assert_eq!(drvisor_ci::spec::CMDLINE_MAX, drvisor::layout::CMDLINE_MAX);
    }
}
