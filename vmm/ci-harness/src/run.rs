//! One spec, start to verdict: skip what the host cannot deliver, plan the `drvisor run`
//! arguments for the rest, launch it, judge what it did.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::events_file;
use crate::judge::{self, Observation, RunEnd};
use crate::names::{GuestSymbols, SpecNames};
use crate::plan::{self, HostSupport};
use crate::qemu_cpu::DroppedFeature;
use crate::report::{CaseReport, SpecResult, Status};
use crate::spec::{self, Spec};
use crate::timeline;

/// How a spec's VM runs: [`crate::child::DrvisorRun`], the real `drvisor run` child, or a
/// stand-in in tests.
pub trait Launch: Sync {
    /// Runs `drvisor` with `args` (their `--events` file is [`events_file::CHILD_PATH`]); ends
    /// it after `timeout` seconds, or as soon as `interrupted` is set.
    fn launch(&self, args: &[String], timeout: f64, interrupted: &AtomicBool) -> Observation;
}

/// What every spec of a suite runs with.
#[derive(Clone, Copy)]
pub struct Runner<'a> {
    /// Runs each spec's VM.
    pub launch: &'a dyn Launch,
    /// What this host delivers (checks it cannot are skipped).
    pub host: &'a HostSupport,
    /// Names for the code addresses in the reports.
    pub symbols: &'a dyn GuestSymbols,
    /// Set on SIGINT, SIGTERM or SIGHUP: running VMs are killed, no new spec starts.
    pub interrupted: &'a AtomicBool,
}

impl Runner<'_> {
    /// One spec: skip what the host cannot deliver, run the rest, judge.
    pub fn run(&self, spec: &Spec) -> SpecResult {
        let start = Instant::now();
        if let Some(reason) = &spec.vm.not_run {
            return SpecResult {
                path: spec.path.clone(),
                name: spec.name.clone(),
                seconds: 0.0,
                run_seconds: 0.0,
                end: format!("not run: {reason}"),
                guest_status: None,
                console: String::new(),
                run_end: None,
                spec_error: None,
                cases: judge::all_skipped(spec, reason)
                    .into_iter()
                    .map(CaseReport::from)
                    .collect(),
                timeline: Vec::new(),
            };
        }
        let skips = plan::skips(spec, self.host);
        let args = plan::run_args(spec, &skips, Path::new(events_file::CHILD_PATH));
        let obs = self.launch.launch(&args, spec.vm.timeout, self.interrupted);
        let spec_error = match &obs.end {
            judge::RunEnd::Refused(m) => Some(refusal_at(spec, m)),
            _ => None,
        };
        let names = SpecNames::new(&spec.vm, self.symbols);
        let mut cases: Vec<CaseReport> = judge::judge(spec, &obs, &skips, &|a| names.name(a))
            .into_iter()
            .map(CaseReport::from)
            .collect();
        // Right after `(run)`: what the run went without.
        let dropped = spec.vm.dropped_features.iter().map(dropped_case);
        cases.splice(1.min(cases.len())..1.min(cases.len()), dropped);
        let timeline = timeline::of(spec, &obs, &skips);
        let guest_status = match obs.end {
            RunEnd::Guest(s) => Some(s),
            _ => None,
        };
        SpecResult {
            path: spec.path.clone(),
            name: spec.name.clone(),
            seconds: start.elapsed().as_secs_f64(),
            run_seconds: obs.seconds,
            end: obs.end.to_string(),
            guest_status,
            console: obs.console,
            run_end: Some(obs.end),
            spec_error,
            cases,
            timeline,
        }
    }
}

/// A feature the run went without ([`crate::qemu_cpu`]), as a skipped case named after it.
fn dropped_case(d: &DroppedFeature) -> CaseReport {
    CaseReport {
        name: d.feature.clone(),
        status: Status::Skipped,
        expected: None,
        observed: None,
        context: None,
        reason: Some(d.reason.clone()),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::names::NoSymbols;

    /// A stand-in for `drvisor run`: ends every run as told, and keeps the arguments it got.
    pub(crate) struct Fake {
        pub end: RunEnd,
        pub args: Mutex<Vec<Vec<String>>>,
    }

    impl Fake {
        pub fn ending(end: RunEnd) -> Fake {
            Fake {
                end,
                args: Mutex::new(Vec::new()),
            }
        }
    }

    impl Launch for Fake {
        fn launch(&self, args: &[String], _: f64, _: &AtomicBool) -> Observation {
            self.args.lock().expect("not poisoned").push(args.to_vec());
            Observation {
                console: "booted\n".into(),
                hits: Vec::new(),
                hit_ns: Vec::new(),
                end: self.end.clone(),
                seconds: 0.5,
            }
        }
    }

    fn spec() -> Spec {
        spec::parse(
            Path::new("/s/t.toml"),
            "[[check]]\nname = \"status\"\nexit_status = 0\n\
             [[check]]\nname = \"b\"\nbreak = \"drv_target_9\"\nhits = 0\n\
             [[check]]\nname = \"w\"\nwatch = \"v\"\nengine = \"hw\"\nhits = 0\n",
            &|_| true,
        )
        .expect("parses")
    }

    fn statuses(r: &SpecResult) -> Vec<(&str, Status)> {
        r.cases
            .iter()
            .map(|c| (c.name.as_str(), c.status))
            .collect()
    }

    #[test]
    fn a_run_is_planned_launched_and_judged() {
        let fake = Fake::ending(RunEnd::Guest(0));
        let host = HostSupport {
            write_watchpoint: Some("no hw".into()),
            ..HostSupport::default()
        };
        let runner = Runner {
            launch: &fake,
            host: &host,
            symbols: &NoSymbols,
            interrupted: &AtomicBool::new(false),
        };
        let r = runner.run(&spec());
        let args = fake.args.lock().expect("not poisoned");
        assert_eq!(args.len(), 1);
        let line = args[0].join(" ");
        assert!(
            line.starts_with("run ") && line.contains("--events /proc/self/fd/3"),
            "{line}"
        );
        assert!(
            line.ends_with("--break drv_target_9"),
            "the skipped watch is left out: {line}"
        );
        assert_eq!(
            statuses(&r),
            [
                ("(run)", Status::Passed),
                ("status", Status::Passed),
                ("b", Status::Passed),
                ("w", Status::Skipped),
            ]
        );
        assert_eq!(r.run_seconds, 0.5);
        assert_eq!(r.end, "the guest exited with status 0");
        assert_eq!(r.spec_error, None);
    }

    /// drvisor's refusal names a location: the spec error points at that check's line.
    #[test]
    fn a_refusal_is_a_spec_error_at_its_check() {
        let fake = Fake::ending(RunEnd::Refused(
            "unknown symbol 'drv_target_9'; did you mean 'drv_target_0'?".into(),
        ));
        let runner = Runner {
            launch: &fake,
            host: &HostSupport::default(),
            symbols: &NoSymbols,
            interrupted: &AtomicBool::new(false),
        };
        let r = runner.run(&spec());
        assert_eq!(
            r.spec_error.as_deref(),
            Some("/s/t.toml:4: unknown symbol 'drv_target_9'; did you mean 'drv_target_0'?")
        );
    }

    /// A feature dropped before the run (a cfg entry's `+vmx` on a host without VMX) is a
    /// skipped case right after `(run)`, with its reason; the guest's status and console are
    /// in the result.
    #[test]
    fn a_dropped_feature_is_a_skipped_case_and_the_console_is_kept() {
        let fake = Fake::ending(RunEnd::Guest(3));
        let runner = Runner {
            launch: &fake,
            host: &HostSupport::default(),
            symbols: &NoSymbols,
            interrupted: &AtomicBool::new(false),
        };
        let mut s = spec();
        s.vm.dropped_features = vec![DroppedFeature {
            feature: "+vmx".into(),
            reason: "no VMX here".into(),
        }];
        let r = runner.run(&s);
        assert_eq!(
            &statuses(&r)[..2],
            [("(run)", Status::Passed), ("+vmx", Status::Skipped)]
        );
        assert_eq!(r.cases[1].reason.as_deref(), Some("no VMX here"));
        assert_eq!(r.guest_status, Some(3));
        assert_eq!(r.console, "booted\n");
        let timed_out = Fake::ending(RunEnd::TimedOut {
            seconds: 1.0,
            last_seen: None,
        });
        let r = Runner {
            launch: &timed_out,
            ..runner
        }
        .run(&s);
        assert_eq!(r.guest_status, None);
    }

    /// A spec whose inputs are missing (`inputs_missing = "skip"`) starts no VM.
    #[test]
    fn a_spec_with_missing_inputs_is_not_run() {
        let fake = Fake::ending(RunEnd::Guest(0));
        let runner = Runner {
            launch: &fake,
            host: &HostSupport::default(),
            symbols: &NoSymbols,
            interrupted: &AtomicBool::new(false),
        };
        let mut s = spec();
        s.vm.not_run = Some("kernel /k is not there".into());
        let r = runner.run(&s);
        assert!(fake.args.lock().expect("not poisoned").is_empty());
        assert_eq!(r.end, "not run: kernel /k is not there");
        assert!(r.run_end.is_none());
        assert!(
            r.cases.iter().all(|c| c.status == Status::Skipped),
            "{:?}",
            statuses(&r)
        );
    }
}
