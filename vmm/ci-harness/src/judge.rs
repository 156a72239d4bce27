//! The verdicts: what a run showed in, one result per check and per parsed test case out.
//! Pure: no process, no file; a table of fabricated observations tests it.

use std::collections::BTreeMap;

use drvisor_api::HitEvent;

use crate::ktap::{self, Outcome, ResultCase};
use crate::kut;
use crate::spec::{
    Check, CheckKind, HitCheck, HitExpect, OnHit, ResultsFormat, Spec, ValueExpect, VmSpec,
};

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEnd {
    /// The guest wrote this status to the exit port.
    Guest(i32),
    /// A breakpoint's `stop` action ended it (drvisor's closing line).
    Stopped(String),
    /// It passed the spec's timeout and was killed.
    TimedOut(f64),
    /// drvisor ended it for a reason of the guest's (a triple fault, an emulation failure...):
    /// its exit code and closing line.
    Aborted(i32, String),
    /// drvisor refused the run (exit code 2): its message.
    Refused(String),
    /// The VM could not be created or started: a host or VMM problem.
    Infrastructure(String),
}

impl std::fmt::Display for RunEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunEnd::Guest(s) => write!(f, "the guest exited with status {s}"),
            RunEnd::Stopped(m) => write!(f, "stopped by a breakpoint: {m}"),
            RunEnd::TimedOut(t) => write!(f, "timed out after {t} s; the VM was killed"),
            RunEnd::Aborted(code, m) => write!(f, "drvisor ended the run with code {code}: {m}"),
            RunEnd::Refused(m) => write!(f, "drvisor refused the run: {m}"),
            RunEnd::Infrastructure(m) => write!(f, "the VM could not run: {m}"),
        }
    }
}

/// What one run showed.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The guest's console (drvisor's stdout).
    pub console: String,
    /// Every hit event, in order.
    pub hits: Vec<HitEvent>,
    pub end: RunEnd,
    /// Wall-clock seconds of the `drvisor run` child, from spawn to exit.
    pub seconds: f64,
}

/// One test case's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass {
        observed: String,
        context: Option<String>,
    },
    Fail {
        expected: String,
        observed: String,
        context: Option<String>,
    },
    Skip(String),
}

/// One test case: a check, a parsed result, or the run itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    pub verdict: Verdict,
}

/// The name of the case that judges the run itself.
pub const RUN_CASE: &str = "(run)";

/// Every case of `spec`: the run, then each check in order (a `results` check followed by its
/// parsed cases). `skips` holds the checks this host cannot deliver, with the reason.
pub fn judge(spec: &Spec, obs: &Observation, skips: &BTreeMap<String, String>) -> Vec<CaseResult> {
    let stop_expected = spec.checks.iter().any(|c| on_hit(c) == Some(OnHit::Stop));
    let mut out = vec![CaseResult {
        name: RUN_CASE.into(),
        verdict: run_verdict(&obs.end, stop_expected, &spec.vm),
    }];
    for check in &spec.checks {
        if let Some(reason) = skips.get(&check.name) {
            out.push(CaseResult {
                name: check.name.clone(),
                verdict: Verdict::Skip(reason.clone()),
            });
            continue;
        }
        if let RunEnd::Refused(_) | RunEnd::Infrastructure(_) = obs.end {
            // Nothing ran: no check can have passed or failed on its own terms.
            out.push(CaseResult {
                name: check.name.clone(),
                verdict: Verdict::Fail {
                    expected: "a run to judge".into(),
                    observed: obs.end.to_string(),
                    context: None,
                },
            });
            continue;
        }
        let (verdict, parsed) = judge_check(check, obs);
        out.push(CaseResult {
            name: check.name.clone(),
            verdict,
        });
        out.extend(parsed);
    }
    out
}

fn on_hit(c: &Check) -> Option<OnHit> {
    match &c.kind {
        CheckKind::Break(h) => Some(h.on_hit),
        CheckKind::Watch(w) => Some(w.hits.on_hit),
        _ => None,
    }
}

/// Every case skipped for `reason`: the spec could not run here (an input it names is missing).
pub fn all_skipped(spec: &Spec, reason: &str) -> Vec<CaseResult> {
    std::iter::once(RUN_CASE)
        .chain(spec.checks.iter().map(|c| c.name.as_str()))
        .map(|name| CaseResult {
            name: name.to_owned(),
            verdict: Verdict::Skip(reason.to_owned()),
        })
        .collect()
}

fn run_verdict(end: &RunEnd, stop_expected: bool, vm: &VmSpec) -> Verdict {
    let pass = |observed: String| Verdict::Pass {
        observed,
        context: None,
    };
    let accepted = |why: &RunEnd| pass(format!("an accepted end: {why}"));
    match end {
        RunEnd::Guest(_) => pass(end.to_string()),
        RunEnd::Stopped(_) if stop_expected => pass(end.to_string()),
        RunEnd::Aborted(code, _) if vm.accept_exit.contains(code) => accepted(end),
        RunEnd::TimedOut(_) if vm.accept_timeout => accepted(end),
        _ => Verdict::Fail {
            expected: "the guest runs to its exit".into(),
            observed: end.to_string(),
            context: None,
        },
    }
}

fn judge_check(check: &Check, obs: &Observation) -> (Verdict, Vec<CaseResult>) {
    match &check.kind {
        CheckKind::Break(h) => (hit_verdict(h, &ValueExpect::default(), obs), Vec::new()),
        CheckKind::Watch(w) => (hit_verdict(&w.hits, &w.values, obs), Vec::new()),
        CheckKind::ConsoleMatch(re) => {
            let v = match re.find(&obs.console) {
                Some(m) => Verdict::Pass {
                    observed: format!("matched: {}", line_around(&obs.console, m.start())),
                    context: None,
                },
                None => Verdict::Fail {
                    expected: format!("the console matches /{re}/"),
                    observed: format!(
                        "no match; the console ends with:\n{}",
                        tail(&obs.console, 5)
                    ),
                    context: None,
                },
            };
            (v, Vec::new())
        }
        CheckKind::ConsoleNever(re) => {
            let v = match re.find(&obs.console) {
                None => Verdict::Pass {
                    observed: format!("no line matches /{re}/"),
                    context: None,
                },
                Some(m) => Verdict::Fail {
                    expected: format!("no console line matches /{re}/"),
                    observed: format!("matched: {}", line_around(&obs.console, m.start())),
                    context: None,
                },
            };
            (v, Vec::new())
        }
        CheckKind::Results(format) => results(check, *format, obs),
        CheckKind::ExitStatus(want) => {
            let v = match obs.end {
                RunEnd::Guest(s) if i64::from(s) == *want => Verdict::Pass {
                    observed: format!("status {s}"),
                    context: None,
                },
                _ => Verdict::Fail {
                    expected: format!("the guest exits with status {want}"),
                    observed: obs.end.to_string(),
                    context: None,
                },
            };
            (v, Vec::new())
        }
    }
}

/// A `results` check and its parsed cases, named `check/case`.
fn results(check: &Check, format: ResultsFormat, obs: &Observation) -> (Verdict, Vec<CaseResult>) {
    let (parsed, what) = match format {
        ResultsFormat::Ktap => (ktap::parse(&obs.console), "KTAP"),
        ResultsFormat::KvmUnitTests => (kut::parse(&obs.console), "kvm-unit-tests PASS/FAIL/SKIP"),
    };
    let failed = parsed.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let verdict = if parsed.is_empty() {
        Verdict::Fail {
            expected: format!("{what} results on the console"),
            observed: format!("none; the console ends with:\n{}", tail(&obs.console, 5)),
            context: None,
        }
    } else if failed > 0 {
        Verdict::Fail {
            expected: "every parsed case passes".into(),
            observed: format!("{failed} of {} failed", parsed.len()),
            context: None,
        }
    } else {
        Verdict::Pass {
            observed: format!("{} case(s), none failed", parsed.len()),
            context: None,
        }
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let cases = parsed
        .into_iter()
        .map(
            |ResultCase {
                 name,
                 outcome,
                 line,
             }| {
                // A name printed twice stays two cases.
                let n = seen.entry(name.clone()).or_default();
                *n += 1;
                let name = if *n > 1 { format!("{name} #{n}") } else { name };
                let verdict = match outcome {
                    Outcome::Pass => Verdict::Pass {
                        observed: line,
                        context: None,
                    },
                    Outcome::Skip(why) => Verdict::Skip(if why.is_empty() { line } else { why }),
                    Outcome::Fail => Verdict::Fail {
                        expected: "ok".into(),
                        observed: line,
                        context: None,
                    },
                };
                CaseResult {
                    name: format!("{}/{name}", check.name),
                    verdict,
                }
            },
        )
        .collect();
    (verdict, cases)
}

/// The hits of `h`: its label, on its vCPU when it names one.
fn hits_of<'a>(h: &HitCheck, obs: &'a Observation) -> Vec<&'a HitEvent> {
    obs.hits
        .iter()
        .filter(|e| e.label == h.target && h.vcpu.is_none_or(|v| e.vcpu == v))
        .collect()
}

fn hit_verdict(h: &HitCheck, values: &ValueExpect, obs: &Observation) -> Verdict {
    let hits = hits_of(h, obs);
    let n = hits.len() as u64;
    // One hit per matching console line: the count comes from this run's console.
    let per_line = h.expect.per_line.as_ref().map(|p| {
        let lines = obs.console.lines().filter(|l| p.0.is_match(l)).count() as u64;
        (p.0.as_str(), lines)
    });
    let h = &match per_line {
        Some((_, lines)) => HitCheck {
            expect: HitExpect {
                min: lines,
                max: Some(lines),
                per_line: None,
            },
            ..h.clone()
        },
        None => h.clone(),
    };
    let mut expected = expect_text(h, values);
    if let Some((pattern, _)) = per_line {
        expected += &format!(" (one per console line matching /{pattern}/)");
    }
    let fail = |observed: String, offending: Option<&HitEvent>| Verdict::Fail {
        expected: expected.clone(),
        observed,
        context: offending.map(hit_context),
    };
    if n < h.expect.min {
        return fail(format!("{n} hit(s)"), hits.last().copied());
    }
    if let Some(max) = h.expect.max {
        if n > max {
            return fail(format!("{n} hit(s)"), hits.get(max as usize).copied());
        }
    }
    let value = |e: &HitEvent| e.access.as_ref().map(|a| a.value);
    for e in &hits {
        let Some(v) = value(e) else {
            if values.any() {
                return fail(
                    "a hit without the written value (not the page engine)".into(),
                    Some(e),
                );
            }
            continue;
        };
        if let Some((lo, hi)) = values.values_in {
            if !(lo..=hi).contains(&v) {
                return fail(format!("value {v:#x} written (hit #{})", e.count), Some(e));
            }
        }
        if values.never_value == Some(v) {
            return fail(format!("value {v:#x} written (hit #{})", e.count), Some(e));
        }
    }
    if let Some(want) = values.last_value {
        match hits.last().and_then(|e| value(e)) {
            Some(v) if v == want => {}
            Some(v) => return fail(format!("last value {v:#x}"), hits.last().copied()),
            None => return fail("no value written".into(), None),
        }
    }
    let last = hits.last().and_then(|e| value(e));
    Verdict::Pass {
        observed: match last {
            Some(v) => format!("{n} hit(s), last value {v:#x}"),
            None => format!("{n} hit(s)"),
        },
        context: (h.on_hit == OnHit::Capture)
            .then(|| hits.first().map(|e| hit_context(e)))
            .flatten(),
    }
}

/// What the check asks, in words.
fn expect_text(h: &HitCheck, values: &ValueExpect) -> String {
    let on = h.vcpu.map_or_else(String::new, |v| format!(" on vCPU {v}"));
    let mut text = match (h.expect.min, h.expect.max) {
        (0, Some(0)) => format!("no hit of {}{on}", h.target),
        (lo, Some(hi)) if lo == hi => format!("exactly {lo} hit(s) of {}{on}", h.target),
        (lo, Some(hi)) => format!("{lo} to {hi} hits of {}{on}", h.target),
        (lo, None) => format!("at least {lo} hit(s) of {}{on}", h.target),
    };
    if let Some((lo, hi)) = values.values_in {
        text += &format!(", every value in [{lo:#x}, {hi:#x}]");
    }
    if let Some(v) = values.never_value {
        text += &format!(", never the value {v:#x}");
    }
    if let Some(v) = values.last_value {
        text += &format!(", last value {v:#x}");
    }
    text
}

/// A hit as evidence: where, which vCPU, the access and the registers.
pub fn hit_context(e: &HitEvent) -> String {
    let r = &e.regs;
    let access = e.access.as_ref().map_or_else(String::new, |a| {
        format!(
            " {} of {} byte(s) at phys {:#x}: {:#x}{}",
            if a.write { "write" } else { "read" },
            a.len,
            a.phys_addr,
            a.value,
            a.old.map_or_else(String::new, |o| format!(" (was {o:#x})"))
        )
    });
    format!(
        "hit #{} of {} on vCPU {} at rip={:#x} addr={:#x}{access}\n\
         rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}\n\
         rsp={:#x} rbp={:#x} r8={:#x} r9={:#x} r10={:#x} r11={:#x}\n\
         r12={:#x} r13={:#x} r14={:#x} r15={:#x} rflags={:#x}",
        e.count,
        e.label,
        e.vcpu,
        e.rip,
        e.addr,
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rsp,
        r.rbp,
        r.r8,
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15,
        r.rflags
    ) + &e.stack.as_ref().map_or_else(String::new, |s| {
        let words: Vec<String> = s
            .bytes
            .as_bytes()
            .chunks(16)
            .map(|q| {
                // Each quadword as a number: its 8 bytes, last first.
                let q = std::str::from_utf8(q).unwrap_or_default();
                let mut be: Vec<&str> = (0..q.len() / 2).map(|i| &q[2 * i..2 * i + 2]).collect();
                be.reverse();
                be.concat()
            })
            .collect();
        format!("\nstack at {:#x}: {}", s.addr, words.join(" "))
    })
}

/// The whole line around byte `at`.
fn line_around(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    &text[start..end]
}

/// The last `n` lines.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec;

    fn spec(checks: &str) -> Spec {
        spec::parse(Path::new("/s/t.toml"), checks, &|_| true).unwrap_or_else(|e| panic!("{e}"))
    }

    fn hit(label: &str, vcpu: u32, count: u64, value: Option<u64>) -> HitEvent {
        let mut v = serde_json::json!({
            "event": "hit", "id": 1, "label": label, "vcpu": vcpu, "rip": 0x1000, "addr": 0x2000,
            "kind": "write", "engine": "page", "action": "continue", "count": count,
            "regs": {"rax":0,"rbx":0,"rcx":0,"rdx":0,"rsi":0,"rdi":0,"rsp":0,"rbp":0,"r8":0,"r9":0,
                     "r10":0,"r11":0,"r12":0,"r13":0,"r14":0,"r15":0,"rip":0x1000,"rflags":2}
        });
        if let Some(value) = value {
            v["access"] =
                serde_json::json!({"phys_addr": 0x2000, "len": 4, "write": true, "value": value});
        }
        serde_json::from_value(v).expect("a hit event")
    }

    fn verdicts(spec: &Spec, obs: &Observation) -> Vec<(String, &'static str)> {
        judge(spec, obs, &BTreeMap::new())
            .into_iter()
            .map(|c| {
                let word = match c.verdict {
                    Verdict::Pass { .. } => "pass",
                    Verdict::Fail { .. } => "fail",
                    Verdict::Skip(_) => "skip",
                };
                (c.name, word)
            })
            .collect()
    }

    /// Each kind of check, against one fabricated run: three hits of f, writes 1, 2, 3 of w.
    #[test]
    fn every_kind_passes_and_fails_by_table() {
        let obs = Observation {
            console: "drv: hello\nBUG: oops\ndrv: summary status=0\n".into(),
            hits: vec![
                hit("f", 0, 1, None),
                hit("f", 1, 2, None),
                hit("f", 0, 3, None),
                hit("w", 0, 1, Some(1)),
                hit("w", 0, 2, Some(2)),
                hit("w", 0, 3, Some(3)),
            ],
            end: RunEnd::Guest(0),
            seconds: 0.0,
        };
        let table: &[(&str, &str)] = &[
            ("break = \"f\"\nhits = 3", "pass"),
            ("break = \"f\"\nhits_per_line = \"^drv: \"", "fail"),
            ("break = \"f\"\nhits_per_line = \"^(drv|BUG)\"", "pass"),
            ("break = \"f\"\nhits = 2", "fail"),
            ("break = \"f\"\nvcpu = 0\nhits = 2", "pass"),
            ("break = \"f\"\nmin = 4", "fail"),
            ("break = \"f\"\nmax = 3", "pass"),
            ("break = \"g\"\nnever = true", "pass"),
            ("break = \"f\"\nnever = true", "fail"),
            ("break = \"g\"", "fail"),
            ("watch = \"w\"\nvalues_in = [1, 3]", "pass"),
            ("watch = \"w\"\nvalues_in = [1, 2]", "fail"),
            ("watch = \"w\"\nnever_value = 7", "pass"),
            ("watch = \"w\"\nnever_value = 2", "fail"),
            ("watch = \"w\"\nlast_value = 3", "pass"),
            ("watch = \"w\"\nlast_value = 2", "fail"),
            ("console_match = \"summary status=0\"", "pass"),
            ("console_match = \"status=1\"", "fail"),
            ("console_never = \"panic\"", "pass"),
            ("console_never = \"^BUG:\"", "fail"),
            ("exit_status = 0", "pass"),
            ("exit_status = 1", "fail"),
            ("results = \"ktap\"", "fail"),
        ];
        for (body, want) in table {
            let s = spec(&format!("[[check]]\nname = \"c\"\n{body}\n"));
            let got = verdicts(&s, &obs);
            assert_eq!(got[0], ("(run)".to_owned(), "pass"));
            assert_eq!(got[1].1, *want, "{body}");
        }
    }

    #[test]
    fn a_failure_carries_the_offending_hit() {
        let s = spec("[[check]]\nname = \"c\"\nwatch = \"w\"\nnever_value = 2\n");
        let obs = Observation {
            console: String::new(),
            hits: vec![hit("w", 0, 1, Some(1)), hit("w", 0, 2, Some(2))],
            end: RunEnd::Guest(0),
            seconds: 0.0,
        };
        let cases = judge(&s, &obs, &BTreeMap::new());
        match &cases[1].verdict {
            Verdict::Fail {
                observed,
                context: Some(ctx),
                ..
            } => {
                assert_eq!(observed, "value 0x2 written (hit #2)");
                assert!(
                    ctx.starts_with("hit #2 of w on vCPU 0 at rip=0x1000"),
                    "{ctx}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_timeout_fails_the_run_and_the_exit_status() {
        let s = spec("[[check]]\nname = \"e\"\nexit_status = 0\n");
        let obs = Observation {
            console: String::new(),
            hits: vec![],
            end: RunEnd::TimedOut(2.0),
            seconds: 0.0,
        };
        assert_eq!(
            verdicts(&s, &obs),
            vec![("(run)".to_owned(), "fail"), ("e".to_owned(), "fail")]
        );
    }

    #[test]
    fn skipped_checks_stay_skipped() {
        let s = spec("[[check]]\nname = \"c\"\nbreak = \"f\"\n");
        let obs = Observation {
            console: String::new(),
            hits: vec![],
            end: RunEnd::Guest(0),
            seconds: 0.0,
        };
        let skips = BTreeMap::from([("c".to_owned(), "no exec breakpoints".to_owned())]);
        let cases = judge(&s, &obs, &skips);
        assert_eq!(
            cases[1].verdict,
            Verdict::Skip("no exec breakpoints".into())
        );
    }

    #[test]
    fn ktap_cases_become_their_own_cases() {
        let s = spec("[[check]]\nname = \"kunit\"\nresults = \"ktap\"\n");
        let obs = Observation {
            console: "KTAP version 1\n1..2\nok 1 a\nnot ok 2 b\n".into(),
            hits: vec![],
            end: RunEnd::Guest(0),
            seconds: 0.0,
        };
        assert_eq!(
            verdicts(&s, &obs),
            vec![
                ("(run)".to_owned(), "pass"),
                ("kunit".to_owned(), "fail"),
                ("kunit/a".to_owned(), "pass"),
                ("kunit/b".to_owned(), "fail"),
            ]
        );
    }
}
