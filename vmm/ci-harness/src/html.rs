//! The HTML report: one self-contained page (inline CSS, no script, no external asset) that a
//! CI engineer opens from a build artifact. A summary line, then per spec its cases as a table
//! (a failure's hit context folded in a `<details>`) and an inline SVG timeline of its checks'
//! hits per vCPU. Pure: results in, a String out. Every text from a spec, the guest or a
//! message goes through [`escape`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::report::{self, CaseReport, SpecResult, Status};
use crate::timeline::CheckHits;

/// `text` safe in HTML element content and in a double- or single-quoted attribute value:
/// `& < > " '` as references; control characters other than tab, newline and carriage return
/// (not allowed in HTML) as U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.8em}\
.summary{font-size:1.05em}.meta{color:#59636e;margin:.2em 0}\
table{border-collapse:collapse;width:100%;margin:.6em 0}\
th,td{border:1px solid #d1d9e0;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f6f8fa}td{white-space:pre-wrap;word-break:break-word}\
.st{font-weight:bold;white-space:nowrap}\
.passed .st,span.passed{color:#1a7f37}.failed .st,span.failed{color:#cf222e}\
.skipped .st,span.skipped{color:#6e7781}tr.failed{background:#fff5f5}\
.error{color:#cf222e;white-space:pre-wrap}\
pre{margin:.3em 0;font-size:.85em;white-space:pre-wrap;word-break:break-all}\
summary{cursor:pointer;color:#0969da}svg{font-family:monospace;font-size:11px}";

/// The page for `specs`, a run of `seconds` that exits with `exit`.
pub fn render(specs: &[SpecResult], seconds: f64, exit: u8) -> String {
    let t = report::totals(specs);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>drvisor ci: {} passed, {} failed, {} skipped</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<h1>drvisor ci</h1>\n\
         <p class=\"summary\" id=\"summary\">{} spec(s), {} case(s): \
         <span class=\"passed\">{} passed</span>, <span class=\"failed\">{} failed</span>, \
         <span class=\"skipped\">{} skipped</span> in {seconds:.1} s (exit {exit})</p>\n",
        t.passed, t.failed, t.skipped, t.specs, t.cases, t.passed, t.failed, t.skipped
    );
    for (i, s) in specs.iter().enumerate() {
        spec_section(&mut out, i, s);
    }
    out += "</body>\n</html>\n";
    out
}

fn spec_section(out: &mut String, index: usize, s: &SpecResult) {
    let _ = write!(
        out,
        "<section id=\"spec-{index}\">\n<h2>{}</h2>\n\
         <p class=\"meta\">{} &middot; {:.1} s (the run {:.1} s) &middot; {}</p>\n",
        escape(&s.name),
        escape(&s.path.display().to_string()),
        s.seconds,
        s.run_seconds,
        escape(&s.end)
    );
    if let Some(e) = &s.spec_error {
        let _ = writeln!(out, "<p class=\"error\">spec error: {}</p>", escape(e));
    }
    out.push_str(
        "<table>\n<thead><tr><th>status</th><th>case</th><th>expected</th>\
         <th>observed</th><th>context</th></tr></thead>\n<tbody>\n",
    );
    for c in &s.cases {
        case_row(out, c);
    }
    out.push_str("</tbody>\n</table>\n");
    timeline(out, s);
    out.push_str("</section>\n");
}

fn case_row(out: &mut String, c: &CaseReport) {
    let (class, word) = match c.status {
        Status::Passed => ("passed", "PASS"),
        Status::Failed => ("failed", "FAIL"),
        Status::Skipped => ("skipped", "SKIP"),
    };
    let cell = |t: Option<&String>| t.map_or_else(String::new, |t| escape(t));
    // A skip's reason is what was observed.
    let observed = match c.status {
        Status::Skipped => c.reason.as_ref(),
        _ => c.observed.as_ref(),
    };
    let context = c.context.as_ref().map_or_else(String::new, |ctx| {
        let label = match c.status {
            Status::Failed => "the offending hit",
            _ => "the captured hit",
        };
        format!(
            "<details><summary>{label}</summary><pre>{}</pre></details>",
            escape(ctx)
        )
    });
    let _ = writeln!(
        out,
        "<tr class=\"case {class}\"><td class=\"st\">{word}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{context}</td></tr>",
        escape(&c.name),
        cell(c.expected.as_ref()),
        cell(observed)
    );
}

/// Geometry of a timeline: the labels' column (at least; wider for a longer label), the
/// plot's width, a row's height.
const LABEL_W: u64 = 340;
/// A label character's width in pixels, at most: the SVG's 11 px monospace font is 0.6 em
/// (DejaVu Sans Mono, Liberation Mono, Courier: 6.6 px), with room to spare.
const CHAR_W: u64 = 7;
/// Space between a label's end and the plot.
const LABEL_GAP: u64 = 10;
/// A check's name in a label, at most (the rest of the label is its vCPU and count).
const NAME_CHARS: usize = 30;
const PLOT_W: u64 = 560;
const ROW_H: u64 = 20;

/// The spec's hits, as the data allows: per check and vCPU, a tick at each hit's time (the
/// axis is the run, from its start to its end or its last hit); where no hit carried a time, a
/// bar of hit counts per check. Nothing for a spec without a check that counts hits.
/// A label too long for its column is cut; its whole text is the row's tooltip.
fn timeline(out: &mut String, s: &SpecResult) {
    if s.timeline.is_empty() {
        return;
    }
    let mut hits = s.timeline.iter().flat_map(|c| &c.hits).peekable();
    let untimed_only = hits.peek().is_some() && hits.all(|h| h.ns.is_none());
    if untimed_only {
        hit_counts(out, &s.timeline);
    } else {
        hit_times(out, s);
    }
}

/// One row per check and vCPU with its hits as ticks; a check without hits gets one row.
fn hit_times(out: &mut String, s: &SpecResult) {
    let last = s
        .timeline
        .iter()
        .flat_map(|c| &c.hits)
        .filter_map(|h| h.ns)
        .max()
        .unwrap_or(0);
    let run_ns = (s.run_seconds * 1e9) as u64;
    let span = last.max(run_ns).max(1);
    // Per row: its label, its check's whole name, its ticks' pixel columns.
    let mut rows: Vec<(String, &str, BTreeSet<u64>)> = Vec::new();
    for c in &s.timeline {
        let mut per_vcpu: BTreeMap<u32, (usize, usize, BTreeSet<u64>)> = BTreeMap::new();
        for h in &c.hits {
            let (n, untimed, xs) = per_vcpu.entry(h.vcpu).or_default();
            *n += 1;
            match h.ns {
                // One tick per pixel column: a million hits stay a small picture.
                Some(ns) => {
                    xs.insert(
                        u64::try_from(u128::from(ns) * u128::from(PLOT_W) / u128::from(span))
                            .unwrap_or(PLOT_W),
                    );
                }
                None => *untimed += 1,
            }
        }
        if per_vcpu.is_empty() {
            let label = format!("{}: no hits", clip(&c.check, NAME_CHARS));
            rows.push((label, &c.check, BTreeSet::new()));
        }
        for (vcpu, (n, untimed, xs)) in per_vcpu {
            let mut label = format!("{} vCPU {vcpu}: {n} hit(s)", clip(&c.check, NAME_CHARS));
            if untimed > 0 {
                label += &format!(", {untimed} without a time");
            }
            rows.push((label, &c.check, xs));
        }
    }
    let label_w = label_column(rows.iter().map(|r| r.0.as_str()));
    let height = ROW_H * (rows.len() as u64 + 1) + 8;
    let width = label_w + PLOT_W + 10;
    let _ = write!(
        out,
        "<figure>\n<figcaption>Hits over the run, per check and vCPU (0 to {:.3} s)\
         </figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\n",
        span as f64 / 1e9
    );
    for (i, (label, check, xs)) in rows.iter().enumerate() {
        let y = ROW_H * i as u64 + ROW_H / 2 + 4;
        let _ = writeln!(
            out,
            "<text x=\"0\" y=\"{}\"><title>{}</title>{}</text>\
             <line x1=\"{label_w}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#d1d9e0\"/>",
            y + 4,
            escape(check),
            escape(label),
            label_w + PLOT_W
        );
        for x in xs {
            let x = label_w + x;
            let _ = write!(
                out,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#0969da\"/>",
                y - 6,
                y + 6
            );
        }
        if !xs.is_empty() {
            out.push('\n');
        }
    }
    let axis = ROW_H * rows.len() as u64 + ROW_H / 2 + 4;
    let _ = write!(
        out,
        "<text x=\"{label_w}\" y=\"{axis}\">0 s</text>\
         <text x=\"{}\" y=\"{axis}\" text-anchor=\"end\">{:.3} s</text>\n</svg>\n</figure>\n",
        label_w + PLOT_W,
        span as f64 / 1e9
    );
}

/// One bar per check, its length its hit count (the longest spans the plot).
fn hit_counts(out: &mut String, checks: &[CheckHits]) {
    let most = checks
        .iter()
        .map(|c| c.hits.len())
        .max()
        .unwrap_or(0)
        .max(1) as u64;
    let labels: Vec<String> = checks
        .iter()
        .map(|c| format!("{}: {} hit(s)", clip(&c.check, NAME_CHARS), c.hits.len()))
        .collect();
    let label_w = label_column(labels.iter().map(String::as_str));
    let height = ROW_H * checks.len() as u64 + 8;
    let width = label_w + PLOT_W + 10;
    let _ = write!(
        out,
        "<figure>\n<figcaption>Hits per check (the events carried no times)</figcaption>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\">\n"
    );
    for (i, (c, label)) in checks.iter().zip(&labels).enumerate() {
        let y = ROW_H * i as u64 + 4;
        let n = c.hits.len() as u64;
        let _ = writeln!(
            out,
            "<text x=\"0\" y=\"{}\"><title>{}</title>{}</text>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#0969da\"/>",
            y + 12,
            escape(&c.check),
            escape(label),
            y + 2,
            n * PLOT_W / most,
            ROW_H - 6
        );
    }
    out.push_str("</svg>\n</figure>\n");
}

/// The labels' column: [`LABEL_W`], or wider where a label would run into the plot (a check
/// name is cut, but a vCPU number and a hit count are not: `... vCPU 0: 100000 hit(s)`).
fn label_column<'a>(labels: impl Iterator<Item = &'a str>) -> u64 {
    labels
        .map(|l| l.chars().count() as u64 * CHAR_W + LABEL_GAP)
        .fold(LABEL_W, u64::max)
}

/// `text` cut to `n` characters, with `...` where it was cut.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    text.chars().take(n - 3).collect::<String>() + "..."
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::TimedHit;

    #[test]
    fn escape_leaves_no_markup() {
        let hostile = "<script>alert(\"x&y\")</script>' onload='z\u{0}\u{1b}[31m";
        let e = escape(hostile);
        assert_eq!(
            e,
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39; onload=&#39;z\
             \u{FFFD}\u{FFFD}[31m"
        );
        for bad in ['<', '>', '"', '\'', '\u{0}', '\u{1b}'] {
            assert!(!e.contains(bad), "{bad:?} in {e}");
        }
        // Every `&` starts a reference.
        assert_eq!(e.matches('&').count(), e.matches(';').count());
        assert_eq!(escape("plain text\n\tkept"), "plain text\n\tkept");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    fn case(name: &str, status: Status, context: Option<&str>) -> CaseReport {
        CaseReport {
            name: name.into(),
            status,
            expected: Some("exactly 3 hit(s) of f".into()),
            observed: Some("2 hit(s)".into()),
            context: context.map(Into::into),
            reason: (status == Status::Skipped).then(|| "no hw".into()),
        }
    }

    fn spec(name: &str, cases: Vec<CaseReport>, timeline: Vec<CheckHits>) -> SpecResult {
        SpecResult {
            path: format!("ci/{name}.toml").into(),
            name: name.into(),
            seconds: 1.5,
            run_seconds: 1.0,
            end: "the guest exited with status 0".into(),
            guest_status: Some(0),
            console: String::new(),
            run_end: None,
            spec_error: None,
            cases,
            timeline,
        }
    }

    fn hits(check: &str, hits: &[(u32, Option<u64>)]) -> CheckHits {
        CheckHits {
            check: check.into(),
            hits: hits
                .iter()
                .map(|&(vcpu, ns)| TimedHit { vcpu, ns })
                .collect(),
        }
    }

    #[test]
    fn a_failure_folds_its_context_in_details() {
        let ctx = "hit #2 of f on vCPU 0 at rip=0x1000 (f+0x0) addr=0x1000\nrax=0x1 <&>";
        let page = render(
            &[spec(
                "a",
                vec![
                    case("ok", Status::Passed, None),
                    case("bad", Status::Failed, Some(ctx)),
                ],
                Vec::new(),
            )],
            2.0,
            1,
        );
        let row = page
            .lines()
            .find(|l| l.starts_with("<tr class=\"case failed\">"))
            .unwrap_or_else(|| panic!("no failed row:\n{page}"));
        assert!(
            row.contains("<td class=\"st\">FAIL</td><td>bad</td>"),
            "{row}"
        );
        assert!(
            row.contains("<td>exactly 3 hit(s) of f</td><td>2 hit(s)</td>"),
            "{row}"
        );
        assert!(
            page.contains(
                "<details><summary>the offending hit</summary><pre>hit #2 of f on vCPU 0 at \
                 rip=0x1000 (f+0x0) addr=0x1000\nrax=0x1 &lt;&amp;&gt;</pre></details>"
            ),
            "{page}"
        );
        // The passing case without a context has no details.
        assert_eq!(page.matches("<details>").count(), 1, "{page}");
    }

    #[test]
    fn the_summary_counts_every_case() {
        let specs = [
            spec(
                "a",
                vec![
                    case("(run)", Status::Passed, None),
                    case("x", Status::Failed, None),
                    case("y", Status::Skipped, None),
                ],
                Vec::new(),
            ),
            spec(
                "b",
                vec![
                    case("(run)", Status::Passed, None),
                    case("z", Status::Passed, None),
                ],
                Vec::new(),
            ),
        ];
        let page = render(&specs, 12.34, 1);
        assert!(
            page.contains(
                "2 spec(s), 5 case(s): <span class=\"passed\">3 passed</span>, \
                 <span class=\"failed\">1 failed</span>, <span class=\"skipped\">1 skipped</span> \
                 in 12.3 s (exit 1)"
            ),
            "{page}"
        );
        assert_eq!(page.matches("<tr class=\"case passed\">").count(), 3);
        assert_eq!(page.matches("<tr class=\"case failed\">").count(), 1);
        assert_eq!(page.matches("<tr class=\"case skipped\">").count(), 1);
        // A skip shows its reason.
        assert!(page.contains(
            "<td class=\"st\">SKIP</td><td>y</td><td>exactly 3 hit(s) of f</td><td>no hw</td>"
        ));
        assert_eq!(page.matches("<section ").count(), 2);
        assert_eq!(
            page.matches("<table>").count(),
            page.matches("</table>").count()
        );
    }

    #[test]
    fn hostile_names_and_messages_are_escaped() {
        let evil = "<img src=x onerror=alert(1)>&\"'";
        let mut s = spec(
            evil,
            vec![CaseReport {
                name: evil.into(),
                status: Status::Failed,
                expected: Some(evil.into()),
                observed: Some(evil.into()),
                context: Some(evil.into()),
                reason: None,
            }],
            vec![hits(evil, &[(0, Some(5))])],
        );
        s.end = evil.into();
        s.spec_error = Some(evil.into());
        let page = render(&[s], 1.0, 2);
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("\"'"), "{page}");
        // The name, its messages and its context each appear escaped.
        assert!(page.matches(&escape(evil)).count() >= 7, "{page}");
    }

    #[test]
    fn timed_hits_become_ticks_per_vcpu() {
        let s = spec(
            "t",
            Vec::new(),
            vec![
                // 1 s run: 0.5 s is the plot's middle; two hits in one pixel are one tick.
                hits(
                    "f",
                    &[(0, Some(500_000_000)), (0, Some(500_000_001)), (1, Some(0))],
                ),
                hits("g", &[]),
                hits(
                    "a check whose name is longer than its column",
                    &[(2, Some(1))],
                ),
            ],
        );
        let page = render(&[s], 1.0, 0);
        assert!(
            page.contains("Hits over the run, per check and vCPU (0 to 1.000 s)"),
            "{page}"
        );
        assert!(page.contains(">f vCPU 0: 2 hit(s)</text>"), "{page}");
        assert!(page.contains(">f vCPU 1: 1 hit(s)</text>"), "{page}");
        assert!(page.contains(">g: no hits</text>"), "{page}");
        assert!(
            page.contains(
                "<title>a check whose name is longer than its column</title>\
                 a check whose name is longe... vCPU 2: 1 hit(s)</text>"
            ),
            "{page}"
        );
        let middle = LABEL_W + PLOT_W / 2;
        assert_eq!(
            page.matches(&format!("<line x1=\"{middle}\" y1=")).count(),
            1,
            "{page}"
        );
        assert_eq!(
            page.matches(&format!("<line x1=\"{LABEL_W}\" y1=\""))
                .count(),
            6,
            "four rows' lines, vCPU 1's tick at 0 and vCPU 2's at 1 ns\n{page}"
        );
    }

    #[test]
    fn a_long_label_widens_its_column_instead_of_running_into_the_plot() {
        // 100000 hits in the run's first millisecond: one tick, at the plot's start.
        let many: Vec<(u32, Option<u64>)> = (0..100_000).map(|i| (0, Some(i * 10))).collect();
        let s = spec(
            "t",
            Vec::new(),
            vec![
                hits("a check whose name is longer than its column", &many),
                hits("f", &[(0, Some(1))]),
            ],
        );
        let page = render(&[s], 1.0, 0);
        let label = "a check whose name is longe... vCPU 0: 100000 hit(s)";
        assert!(page.contains(&format!("{label}</text>")), "{page}");
        let column = label.chars().count() as u64 * CHAR_W + LABEL_GAP;
        assert!(column > LABEL_W, "{column}");
        assert_eq!(
            page.matches(&format!("<line x1=\"{column}\" y1=\""))
                .count(),
            4,
            "both rows' baselines and their ticks start at the wider column\n{page}"
        );
        assert!(
            page.contains(&format!("<text x=\"{column}\" y=\"54\">0 s</text>")),
            "{page}"
        );
        let width = column + PLOT_W + 10;
        assert!(
            page.contains(&format!(
                "width=\"{width}\" height=\"68\" viewBox=\"0 0 {width} 68\""
            )),
            "{page}"
        );
        assert!(!page.contains(&format!("x1=\"{LABEL_W}\"")), "{page}");
        // Short labels keep the usual column.
        let page = render(&[spec("u", Vec::new(), vec![hits("f", &many)])], 1.0, 0);
        assert!(
            page.contains(&format!("<line x1=\"{LABEL_W}\" y1=")),
            "{page}"
        );
    }

    #[test]
    fn untimed_hits_become_count_bars() {
        let s = spec(
            "t",
            Vec::new(),
            vec![hits("f", &[(0, None), (1, None)]), hits("g", &[(0, None)])],
        );
        let page = render(&[s], 1.0, 0);
        assert!(
            page.contains("Hits per check (the events carried no times)"),
            "{page}"
        );
        assert!(
            page.contains(&format!("width=\"{PLOT_W}\" height")),
            "{page}"
        );
        assert!(
            page.contains(&format!("width=\"{}\" height", PLOT_W / 2)),
            "{page}"
        );
        assert!(page.contains(">f: 2 hit(s)</text>"), "{page}");
        // Checks without a hit get the timeline's rows, not bars.
        let page = render(&[spec("n", Vec::new(), vec![hits("f", &[])])], 1.0, 0);
        assert!(page.contains(">f: no hits</text>"), "{page}");
        // A spec without a check that counts hits has no figure.
        let page = render(&[spec("u", Vec::new(), Vec::new())], 1.0, 0);
        assert!(!page.contains("<svg"), "{page}");
    }
}
