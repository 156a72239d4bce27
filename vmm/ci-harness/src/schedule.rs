//! The specs of a suite, `jobs` at a time, one VM each: results in the specs' order, each
//! shown as it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::report::SpecResult;
use crate::run::Runner;
use crate::spec::Spec;

/// What the caller shows while specs run. Called from the worker threads, one call at a time.
pub trait Progress: Send {
    /// `spec` starts.
    fn started(&mut self, spec: &Spec);
    /// `spec` ended with `result`.
    fn finished(&mut self, spec: &Spec, result: &SpecResult);
}

/// Runs every spec, `jobs` at a time; results in the specs' order. Once the runner's
/// `interrupted` is set no further spec starts, and those are left out of the results.
pub fn run_all(
    specs: &[Spec],
    jobs: usize,
    runner: &Runner<'_>,
    progress: &mut dyn Progress,
) -> Vec<SpecResult> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<SpecResult>>> = specs.iter().map(|_| Mutex::new(None)).collect();
    let progress = Mutex::new(progress);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(specs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                if runner.interrupted.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut p) = progress.lock() {
                    p.started(spec);
                }
                let result = runner.run(spec);
                if let Ok(mut p) = progress.lock() {
                    p.finished(spec, &result);
                }
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::judge::{Observation, RunEnd};
    use crate::names::NoSymbols;
    use crate::plan::HostSupport;
    use crate::run::Launch;
    use crate::spec;

    /// A stand-in for `drvisor run` that takes a while, ends with the status its spec's
    /// `cmdline` names (`status=N`), and counts how many run at once.
    #[derive(Default)]
    struct Slow {
        running: AtomicUsize,
        most: AtomicUsize,
        launched: AtomicUsize,
        /// Sets it after this many launches (0: never).
        interrupt_after: usize,
        /// Each run waits (up to 5 s) until this many run at once, so that the overlap does
        /// not depend on how fast threads start.
        together: usize,
        interrupted: AtomicBool,
    }

    impl Launch for Slow {
        fn launch(&self, args: &[String], _: f64, _: &AtomicBool) -> Observation {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let launched = self.launched.fetch_add(1, Ordering::SeqCst) + 1;
            if launched == self.interrupt_after {
                self.interrupted.store(true, Ordering::SeqCst);
            }
            let start = std::time::Instant::now();
            while self.running.load(Ordering::SeqCst) < self.together
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(30));
            self.running.fetch_sub(1, Ordering::SeqCst);
            let status = args
                .iter()
                .find_map(|a| a.strip_prefix("--cmdline=status="))
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1);
            Observation {
                console: String::new(),
                hits: Vec::new(),
                hit_ns: Vec::new(),
                end: RunEnd::Guest(status),
                seconds: 0.03,
            }
        }
    }

    fn specs(n: usize) -> Vec<Spec> {
        (0..n)
            .map(|i| {
                spec::parse(
                    Path::new(&format!("/s/{i}.toml")),
                    &format!("[vm]\ncmdline = \"status={i}\"\n[[check]]\nname = \"s\"\nexit_status = {i}\n"),
                    &|_| true,
                )
                .expect("parses")
            })
            .collect()
    }

    /// What the progress saw, in order.
    #[derive(Default)]
    struct Seen(Vec<String>);

    impl Progress for Seen {
        fn started(&mut self, spec: &Spec) {
            self.0.push(format!("start {}", spec.name));
        }
        fn finished(&mut self, spec: &Spec, result: &SpecResult) {
            self.0.push(format!("end {} {}", spec.name, result.end));
        }
    }

    fn suite(launch: &Slow, specs: &[Spec], jobs: usize) -> (Vec<SpecResult>, Seen) {
        let runner = Runner {
            launch,
            host: &HostSupport::default(),
            symbols: &NoSymbols,
            interrupted: &launch.interrupted,
        };
        let mut seen = Seen::default();
        let results = run_all(specs, jobs, &runner, &mut seen);
        (results, seen)
    }

    #[test]
    fn results_come_in_the_specs_order_however_they_end() {
        let slow = Slow::default();
        let specs = specs(7);
        let (results, seen) = suite(&slow, &specs, 3);
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "2", "3", "4", "5", "6"]);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.end, format!("the guest exited with status {i}"));
        }
        assert_eq!(seen.0.len(), 14, "{:?}", seen.0);
        for s in &specs {
            let start = seen
                .0
                .iter()
                .position(|l| *l == format!("start {}", s.name));
            let end = seen
                .0
                .iter()
                .position(|l| l.starts_with(&format!("end {} ", s.name)));
            assert!(start.is_some() && start < end, "{:?}", seen.0);
        }
    }

    #[test]
    fn no_more_than_jobs_run_at_once() {
        let slow = Slow {
            together: 2,
            ..Slow::default()
        };
        suite(&slow, &specs(6), 2);
        assert_eq!(slow.most.load(Ordering::SeqCst), 2);
        let one = Slow::default();
        suite(&one, &specs(3), 1);
        assert_eq!(one.most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn after_an_interrupt_no_spec_starts() {
        let slow = Slow {
            interrupt_after: 2,
            ..Slow::default()
        };
        let (results, seen) = suite(&slow, &specs(5), 1);
        assert_eq!(slow.launched.load(Ordering::SeqCst), 2);
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["0", "1"]);
        assert_eq!(seen.0.len(), 4, "{:?}", seen.0);
    }

    #[test]
    fn no_specs_no_results() {
        let (results, seen) = suite(&Slow::default(), &[], 4);
        assert!(results.is_empty() && seen.0.is_empty());
    }
}
