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
    /// It passed the spec's timeout (in seconds) and was killed.
    TimedOut {
        seconds: f64,
        /// Where drvisor's closing line put the vCPUs (`vCPU 0 at rip=... (symbol)`), if it
        /// wrote one before the kill.
        last_seen: Option<String>,
    },
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
            RunEnd::TimedOut { seconds, last_seen } => {
                write!(f, "timed out after {seconds} s")?;
                if let Some(at) = last_seen {
                    write!(f, " with {at}")?;
                }
                f.write_str("; the VM was killed")
            }
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
    /// When each of `hits` happened, in nanoseconds since the run's start (the event line's
    /// `ns`), index for index; shorter, or None, where a line carried no time.
    pub hit_ns: Vec<Option<u64>>,
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

/// Names a code address: `function+0xoffset` where the guest's symbols know it. The binary
/// loads the symbols (the spec's `symbols`, else the kernel's own); the judge only asks.
pub type Names<'a> = &'a dyn Fn(u64) -> Option<String>;

/// A [`Names`] that knows no address (the report then shows raw addresses).
pub fn no_names(_: u64) -> Option<String> {
    None
}

/// Every case of `spec`: the run, then each check in order (a `results` check followed by its
/// parsed cases). `skips` holds the checks this host cannot deliver, with the reason; `names`
/// names the code addresses in a hit's context.
pub fn judge(
    spec: &Spec,
    obs: &Observation,
    skips: &BTreeMap<String, String>,
    names: Names<'_>,
) -> Vec<CaseResult> {
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
        let (verdict, parsed) = judge_check(check, obs, names);
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
        RunEnd::TimedOut { .. } if vm.accept_timeout => accepted(end),
        _ => Verdict::Fail {
            expected: "the guest runs to its exit".into(),
            observed: end.to_string(),
            context: None,
        },
    }
}

fn judge_check(check: &Check, obs: &Observation, names: Names<'_>) -> (Verdict, Vec<CaseResult>) {
    match &check.kind {
        CheckKind::Break(h) => (
            hit_verdict(h, &ValueExpect::default(), obs, names),
            Vec::new(),
        ),
        CheckKind::Watch(w) => (hit_verdict(&w.hits, &w.values, obs, names), Vec::new()),
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
    obs.hits.iter().filter(|e| counts(h, e)).collect()
}

/// Whether `h` counts the hit `e`: its label, on its vCPU when it names one.
pub fn counts(h: &HitCheck, e: &HitEvent) -> bool {
    e.label == h.target && h.vcpu.is_none_or(|v| e.vcpu == v)
}

fn hit_verdict(h: &HitCheck, values: &ValueExpect, obs: &Observation, names: Names<'_>) -> Verdict {
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
        context: offending.map(|e| hit_context(e, names)),
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
    if let Some(function) = &h.stack_contains {
        for e in &hits {
            if e.stack.is_none() {
                return fail(
                    format!("hit #{} carries no captured stack", e.count),
                    Some(e),
                );
            }
            let found = stack_functions(e);
            if !found.iter().any(|f| names_function(f, function)) {
                let observed = if found.is_empty() {
                    format!(
                        "hit #{}: no word of its captured stack points into a known function",
                        e.count
                    )
                } else {
                    // Rust symbols by their path, as people write them.
                    let shown: Vec<String> = found
                        .iter()
                        .map(|f| rust_path(f).unwrap_or_else(|| (*f).to_owned()))
                        .collect();
                    format!(
                        "hit #{}: its captured stack names {}",
                        e.count,
                        shown.join(", ")
                    )
                };
                return fail(observed, Some(e));
            }
        }
    }
    let last = hits.last().and_then(|e| value(e));
    let mut observed = match last {
        Some(v) => format!("{n} hit(s), last value {v:#x}"),
        None => format!("{n} hit(s)"),
    };
    if let Some(function) = &h.stack_contains {
        observed += &format!(", each with {function} on its stack");
    }
    Verdict::Pass {
        observed,
        context: (h.on_hit == OnHit::Capture)
            .then(|| hits.first().map(|e| hit_context(e, names)))
            .flatten(),
    }
}

/// The functions a hit's captured stack points into (its `symbolized` words, as drvisor named
/// them), each once, in stack order.
fn stack_functions(e: &HitEvent) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for w in &e.symbolized {
        let f = function_of(&w.symbol);
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The function part of a stack word's name: `? do_syscall_64+0x5b/0x90` -> `do_syscall_64`.
fn function_of(symbol: &str) -> &str {
    let s = symbol.strip_prefix("? ").unwrap_or(symbol);
    s.split('+').next().unwrap_or(s)
}

/// Whether the symbol `name` is the function `want`: the same name, or a Rust symbol (legacy
/// mangling, `_ZN...E`) whose path is `want` or ends in `::want`.
fn names_function(name: &str, want: &str) -> bool {
    if name == want {
        return true;
    }
    rust_path(name).is_some_and(|path| {
        path == want
            || path
                .strip_suffix(want)
                .is_some_and(|head| head.ends_with("::"))
    })
}

/// The path of a mangled Rust symbol, `_ZN13drvisor_guest7targets9exec_loop17h0123...E` ->
/// `drvisor_guest::targets::exec_loop` (its hash left out); None for any other name.
fn rust_path(name: &str) -> Option<String> {
    rustc_demangle::try_demangle(name)
        .ok()
        .map(|d| format!("{d:#}"))
        .filter(|path| !path.is_empty())
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
    if let Some(f) = &h.stack_contains {
        text += &format!(", each with {f} on its captured stack");
    }
    text
}

/// A hit as evidence: where (named by `names` where it can), which vCPU, the access, the
/// registers, and the captured stack with the words of it that point into code.
pub fn hit_context(e: &HitEvent, names: Names<'_>) -> String {
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
    let named = |a: u64| names(a).map_or_else(String::new, |n| format!(" ({n})"));
    format!(
        "hit #{} of {} on vCPU {} at rip={:#x}{} addr={:#x}{access}\n\
         rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}\n\
         rsp={:#x} rbp={:#x} r8={:#x} r9={:#x} r10={:#x} r11={:#x}\n\
         r12={:#x} r13={:#x} r14={:#x} r15={:#x} rflags={:#x}",
        e.count,
        e.label,
        e.vcpu,
        e.rip,
        named(e.rip),
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
    }) + &stack_names(e)
}

/// The words of a hit's captured stack that point into code, one line: `rsp+0x8: ? f+0x1c/0x40`.
fn stack_names(e: &HitEvent) -> String {
    if e.symbolized.is_empty() {
        return String::new();
    }
    let base = e.stack.as_ref().map_or(e.regs.rsp, |s| s.addr);
    let words: Vec<String> = e
        .symbolized
        .iter()
        .map(|w| format!("rsp+{:#x}: {}", w.addr.wrapping_sub(base), w.symbol))
        .collect();
    format!("\nstack words into code: {}", words.join(", "))
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
        judge(spec, obs, &BTreeMap::new(), &no_names)
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
            hit_ns: Vec::new(),
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
            hit_ns: Vec::new(),
            console: String::new(),
            hits: vec![hit("w", 0, 1, Some(1)), hit("w", 0, 2, Some(2))],
            end: RunEnd::Guest(0),
            seconds: 0.0,
        };
        let cases = judge(&s, &obs, &BTreeMap::new(), &no_names);
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

    /// A hit of `label` whose captured stack (at RSP 0x8000) points into `functions`.
    fn hit_with_stack(label: &str, count: u64, functions: &[&str]) -> HitEvent {
        let mut e = hit(label, 0, count, None);
        e.regs.rsp = 0x8000;
        e.stack = Some(drvisor_api::MemorySnippet {
            addr: 0x8000,
            bytes: "00".repeat(8 * functions.len().max(1)),
        });
        e.symbolized = functions
            .iter()
            .enumerate()
            .map(|(i, f)| drvisor_api::StackWord {
                addr: 0x8000 + 8 * i as u64,
                value: 0xffff_ffff_8100_0000 + i as u64,
                symbol: format!("? {f}+0x1c/0x40"),
            })
            .collect();
        e
    }

    fn stack_obs(hits: Vec<HitEvent>) -> Observation {
        Observation {
            hit_ns: Vec::new(),
            console: String::new(),
            hits,
            end: RunEnd::Guest(0),
            seconds: 0.0,
        }
    }

    fn only_verdict(body: &str, obs: &Observation, names: Names<'_>) -> Verdict {
        let s = spec(&format!("[[check]]\nname = \"c\"\n{body}\n"));
        let mut cases = judge(&s, obs, &BTreeMap::new(), names);
        cases.remove(1).verdict
    }

    /// `stack_contains` holds when every hit's stack names the function, by its name or, for a
    /// Rust symbol, by the end of its path.
    #[test]
    fn stack_contains_needs_the_function_on_every_hit_stack() {
        let rust = "_ZN13drvisor_guest7targets9exec_loop17hfe7b9cfccb29bbccE";
        let obs = stack_obs(vec![
            hit_with_stack("f", 1, &["do_syscall_64", "entry_SYSCALL_64"]),
            hit_with_stack("f", 2, &["x64_sys_call", "do_syscall_64"]),
            hit_with_stack("g", 1, &[rust]),
        ]);
        let table = [
            ("break = \"f\"\nstack_contains = \"do_syscall_64\"", "pass"),
            (
                "break = \"f\"\nstack_contains = \"entry_SYSCALL_64\"",
                "fail",
            ),
            ("break = \"f\"\nstack_contains = \"do_syscall\"", "fail"),
            ("break = \"g\"\nstack_contains = \"exec_loop\"", "pass"),
            (
                "break = \"g\"\nstack_contains = \"targets::exec_loop\"",
                "pass",
            ),
            ("break = \"g\"\nstack_contains = \"loop\"", "fail"),
            ("break = \"g\"\nstack_contains = \"guest\"", "fail"),
            ("break = \"h\"\nstack_contains = \"x\"", "fail"),
        ];
        for (body, want) in table {
            let got = match only_verdict(body, &obs, &no_names) {
                Verdict::Pass { .. } => "pass",
                Verdict::Fail { .. } => "fail",
                Verdict::Skip(_) => "skip",
            };
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn a_stack_without_the_function_is_reported_with_what_it_names() {
        let obs = stack_obs(vec![
            hit_with_stack("f", 1, &["caller_a"]),
            hit_with_stack("f", 2, &["caller_b", "caller_b", "start"]),
        ]);
        match only_verdict(
            "break = \"f\"\nstack_contains = \"caller_a\"",
            &obs,
            &no_names,
        ) {
            Verdict::Fail {
                expected,
                observed,
                context: Some(ctx),
            } => {
                assert_eq!(
                    expected,
                    "at least 1 hit(s) of f, each with caller_a on its captured stack"
                );
                assert_eq!(observed, "hit #2: its captured stack names caller_b, start");
                assert!(ctx.starts_with("hit #2 of f"), "{ctx}");
                assert!(
                    ctx.contains(
                        "stack words into code: rsp+0x0: ? caller_b+0x1c/0x40, \
                         rsp+0x8: ? caller_b+0x1c/0x40, rsp+0x10: ? start+0x1c/0x40"
                    ),
                    "{ctx}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn rust_functions_are_reported_by_their_path() {
        let rust = "_ZN13drvisor_guest7targets9exec_loop17hfe7b9cfccb29bbccE";
        let obs = stack_obs(vec![hit_with_stack("f", 1, &[rust, "c_caller"])]);
        match only_verdict("break = \"f\"\nstack_contains = \"main\"", &obs, &no_names) {
            Verdict::Fail { observed, .. } => assert_eq!(
                observed,
                "hit #1: its captured stack names drvisor_guest::targets::exec_loop, c_caller"
            ),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_hit_without_a_captured_stack_fails_stack_contains() {
        let obs = stack_obs(vec![hit("f", 0, 1, None)]);
        match only_verdict("break = \"f\"\nstack_contains = \"g\"", &obs, &no_names) {
            Verdict::Fail { observed, .. } => {
                assert_eq!(observed, "hit #1 carries no captured stack")
            }
            v => panic!("{v:?}"),
        }
    }

    /// The rip in a hit's context is named where the lookup knows it, and left raw elsewhere.
    #[test]
    fn the_context_names_the_rip() {
        let names = |a: u64| (a == 0x1000).then(|| "__x64_sys_getppid+0x7".to_owned());
        let obs = stack_obs(vec![hit("f", 0, 1, None)]);
        match only_verdict("break = \"f\"\nhits = 2", &obs, &names) {
            Verdict::Fail {
                context: Some(ctx), ..
            } => assert!(
                ctx.starts_with(
                    "hit #1 of f on vCPU 0 at rip=0x1000 (__x64_sys_getppid+0x7) addr=0x2000"
                ),
                "{ctx}"
            ),
            v => panic!("{v:?}"),
        }
        match only_verdict("break = \"f\"\nhits = 2", &obs, &no_names) {
            Verdict::Fail {
                context: Some(ctx), ..
            } => assert!(
                ctx.starts_with("hit #1 of f on vCPU 0 at rip=0x1000 addr=0x2000"),
                "{ctx}"
            ),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn rust_paths_are_read_from_legacy_mangled_names() {
        assert_eq!(
            rust_path("_ZN13drvisor_guest7targets9exec_loop17hfe7b9cfccb29bbccE").as_deref(),
            Some("drvisor_guest::targets::exec_loop")
        );
        assert_eq!(
            rust_path("_ZN4core3ptr13drop_in_placeE").as_deref(),
            Some("core::ptr::drop_in_place")
        );
        assert_eq!(rust_path("do_syscall_64"), None);
        assert_eq!(rust_path("_ZN99shortE"), None);
        assert_eq!(rust_path("_ZNE"), None);
        assert_eq!(rust_path("_ZN18446744073709551615aE"), None);
    }

    #[test]
    fn a_timeout_fails_the_run_and_the_exit_status() {
        let s = spec("[[check]]\nname = \"e\"\nexit_status = 0\n");
        let obs = Observation {
            hit_ns: Vec::new(),
            console: String::new(),
            hits: vec![],
            end: RunEnd::TimedOut {
                seconds: 2.0,
                last_seen: None,
            },
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
            hit_ns: Vec::new(),
            console: String::new(),
            hits: vec![],
            end: RunEnd::Guest(0),
            seconds: 0.0,
        };
        let skips = BTreeMap::from([("c".to_owned(), "no exec breakpoints".to_owned())]);
        let cases = judge(&s, &obs, &skips, &no_names);
        assert_eq!(
            cases[1].verdict,
            Verdict::Skip("no exec breakpoints".into())
        );
    }

    #[test]
    fn ktap_cases_become_their_own_cases() {
        let s = spec("[[check]]\nname = \"kunit\"\nresults = \"ktap\"\n");
        let obs = Observation {
            hit_ns: Vec::new(),
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
