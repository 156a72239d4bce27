//! What the harness hands back: the per-spec results, the JSON report, the summary lines and
//! the exit code. Pure: results in, text and a number out.

use std::path::PathBuf;

use serde::Serialize;

use crate::judge::{CaseResult, RunEnd, Verdict};
use crate::timeline::CheckHits;

/// The harness's exit codes (issue 10's table).
pub mod code {
    /// Every check passed (skips allowed, and listed).
    pub const PASSED: u8 = 0;
    /// A check failed.
    pub const FAILED: u8 = 1;
    /// A spec error, with file, line and column.
    pub const SPEC_ERROR: u8 = 2;
    /// This host cannot run the suite: no /dev/kvm, or every check skipped.
    pub const CANNOT_RUN: u8 = 3;
    /// Infrastructure: a VM could not be created or started.
    pub const INFRASTRUCTURE: u8 = 4;
}

/// One spec's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct SpecResult {
    pub path: PathBuf,
    pub name: String,
    pub seconds: f64,
    /// Of which the `drvisor run` child (VM creation, boot, the guest's run, teardown).
    pub run_seconds: f64,
    /// How the run ended, in words.
    pub end: String,
    /// The status the guest exited with, when the run ended by the guest's own exit (none for
    /// a timeout, drvisor's own end, or a spec that did not run).
    pub guest_status: Option<i32>,
    /// The guest's console, as `drvisor run` printed it (empty for a spec that did not run).
    pub console: String,
    #[serde(skip)]
    pub run_end: Option<RunEnd>,
    /// A run-time spec error (drvisor refused a location), with file and line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_error: Option<String>,
    pub cases: Vec<CaseReport>,
    /// The hits of each check that counts hits, with their times, for the HTML timeline.
    #[serde(skip)]
    pub timeline: Vec<CheckHits>,
}

/// One test case in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

impl From<CaseResult> for CaseReport {
    fn from(c: CaseResult) -> Self {
        let blank = CaseReport {
            name: c.name,
            status: Status::Passed,
            expected: None,
            observed: None,
            context: None,
            reason: None,
        };
        match c.verdict {
            Verdict::Pass { observed, context } => CaseReport {
                observed: Some(observed),
                context,
                ..blank
            },
            Verdict::Fail {
                expected,
                observed,
                context,
            } => CaseReport {
                status: Status::Failed,
                expected: Some(expected),
                observed: Some(observed),
                context,
                ..blank
            },
            Verdict::Skip(reason) => CaseReport {
                status: Status::Skipped,
                reason: Some(reason),
                ..blank
            },
        }
    }
}

/// Counts over every case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub specs: usize,
    pub cases: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub fn totals(specs: &[SpecResult]) -> Totals {
    let mut t = Totals {
        specs: specs.len(),
        ..Totals::default()
    };
    for c in specs.iter().flat_map(|s| &s.cases) {
        t.cases += 1;
        match c.status {
            Status::Passed => t.passed += 1,
            Status::Failed => t.failed += 1,
            Status::Skipped => t.skipped += 1,
        }
    }
    t
}

/// The exit code for these results: a spec error, then infrastructure, then a failure, then
/// "every check skipped" (the `(run)` case aside), else success.
pub fn exit_code(specs: &[SpecResult]) -> u8 {
    if specs.iter().any(|s| s.spec_error.is_some()) {
        return code::SPEC_ERROR;
    }
    if specs
        .iter()
        .any(|s| matches!(s.run_end, Some(RunEnd::Infrastructure(_))))
    {
        return code::INFRASTRUCTURE;
    }
    let t = totals(specs);
    if t.failed > 0 {
        return code::FAILED;
    }
    let checks_run = specs
        .iter()
        .flat_map(|s| &s.cases)
        .filter(|c| c.name != crate::judge::RUN_CASE && c.status != Status::Skipped)
        .count();
    if checks_run == 0 {
        return code::CANNOT_RUN;
    }
    code::PASSED
}

/// The plain lines for one spec: one per case, evidence indented under a failure.
pub fn spec_lines(s: &SpecResult) -> String {
    let mut out = String::new();
    if let Some(e) = &s.spec_error {
        out += &format!("ERROR {e}\n");
    }
    for c in &s.cases {
        let id = format!("{}::{}", s.name, c.name);
        match c.status {
            Status::Passed => out += &format!("PASS  {id}\n"),
            Status::Skipped => {
                out += &format!("SKIP  {id}: {}\n", c.reason.as_deref().unwrap_or_default())
            }
            Status::Failed => {
                out += &format!("FAIL  {id}\n");
                let indent = |t: &str| t.replace('\n', "\n        ");
                if let Some(e) = &c.expected {
                    out += &format!("      expected: {}\n", indent(e));
                }
                if let Some(o) = &c.observed {
                    out += &format!("      observed: {}\n", indent(o));
                }
                if let Some(ctx) = &c.context {
                    out += &format!("      context:  {}\n", indent(ctx));
                }
            }
        }
    }
    out
}

/// The progress line shown on a terminal under the finished specs' lines.
pub fn progress_line(done: usize, total: usize, running: &[&str]) -> String {
    let mut line = format!("[{done}/{total}]");
    if !running.is_empty() {
        line += &format!(" running {}", running.join(", "));
    }
    // One terminal line: a long list is cut, not wrapped.
    if line.chars().count() > 100 {
        line = line.chars().take(97).collect::<String>() + "...";
    }
    line
}

/// The closing line.
pub fn summary_line(t: &Totals, seconds: f64, code: u8) -> String {
    format!(
        "drvisor ci: {} spec(s), {} case(s): {} passed, {} failed, {} skipped in {seconds:.1} s (exit {code})",
        t.specs, t.cases, t.passed, t.failed, t.skipped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cases: &[(&str, Status)], end: RunEnd) -> SpecResult {
        SpecResult {
            path: "x.toml".into(),
            name: "x".into(),
            seconds: 0.0,
            run_seconds: 0.0,
            end: end.to_string(),
            guest_status: None,
            console: String::new(),
            run_end: Some(end),
            spec_error: None,
            cases: cases
                .iter()
                .map(|(n, s)| CaseReport {
                    name: (*n).into(),
                    status: *s,
                    expected: None,
                    observed: None,
                    context: None,
                    reason: None,
                })
                .collect(),
            timeline: Vec::new(),
        }
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line(1, 3, &["exec", "write"]),
            "[1/3] running exec, write"
        );
        assert_eq!(progress_line(3, 3, &[]), "[3/3]");
        let long: Vec<String> = (0..40).map(|i| format!("spec{i}")).collect();
        let names: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(progress_line(0, 40, &names).chars().count(), 100);
    }

    #[test]
    fn exit_codes_by_table() {
        use Status::*;
        let ok = RunEnd::Guest(0);
        let table = [
            (
                vec![spec(
                    &[("(run)", Passed), ("a", Passed), ("b", Skipped)],
                    ok.clone(),
                )],
                0,
            ),
            (
                vec![spec(&[("(run)", Passed), ("a", Failed)], ok.clone())],
                1,
            ),
            (
                vec![spec(&[("(run)", Passed), ("a", Skipped)], ok.clone())],
                3,
            ),
            (
                vec![spec(
                    &[("(run)", Failed)],
                    RunEnd::Infrastructure("x".into()),
                )],
                4,
            ),
            (vec![], 3),
        ];
        for (specs, want) in table {
            assert_eq!(exit_code(&specs), want, "{specs:?}");
        }
        let mut bad = spec(&[], RunEnd::Refused("x".into()));
        bad.spec_error = Some("x.toml:3: unknown symbol".into());
        assert_eq!(exit_code(&[bad]), 2);
    }
}
