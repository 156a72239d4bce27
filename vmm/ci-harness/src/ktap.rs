//! KTAP (and TAP 13/14), as KUnit and kselftest print it, into flat test cases named by their
//! path (`suite/case`). Pure: console text in, cases out.
//!
//! The rules, from the kernel's Documentation/dev-tools/ktap.rst: a document starts with
//! `KTAP version 1` (or `TAP version N`); a subtest is a nested document indented by four
//! spaces (or introduced by `# Subtest: NAME`), and its own result line, one level out, follows
//! it; `ok`/`not ok` N NAME, then `# SKIP reason` or `# TODO` as the directive; `1..N` is the
//! plan. A level whose results do not match its plan becomes a failing case of its own.

/// The verdict of one parsed case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip(String),
}

/// One parsed test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultCase {
    /// `parent/child` path.
    pub name: String,
    pub outcome: Outcome,
    /// The result line as printed.
    pub line: String,
}

/// One level of nesting being read: its plan and its results so far.
#[derive(Default)]
struct Level {
    plan: Option<u64>,
    results: Vec<ResultCase>,
}

/// Strips what a console puts before a line (`[    0.123456] ` printk times) and returns the
/// line's nesting depth (four spaces a level) with the rest.
fn depth_and_text(raw: &str) -> (usize, &str) {
    let mut line = raw.trim_end_matches('\r');
    if let Some(rest) = line.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            if rest[..end]
                .trim()
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
            {
                line = &rest[end + 2..];
            }
        }
    }
    let spaces = line.len() - line.trim_start_matches(' ').len();
    let tabs = line.len() - line.trim_start_matches('\t').len();
    (spaces / 4 + tabs, line.trim_start())
}

/// `ok 1 - name # SKIP why` into (passed, name, directive).
fn result_line(text: &str) -> Option<(bool, String, Option<String>)> {
    let (ok, rest) = if let Some(r) = text.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = text.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let rest = rest.trim_start();
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let rest = rest[digits..].trim_start();
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    let (name, directive) = match rest.split_once('#') {
        Some((n, d)) => (n.trim(), Some(d.trim().to_owned())),
        None => (rest.trim(), None),
    };
    Some((ok, name.to_owned(), directive))
}

/// Every case of every KTAP document on `console`, nested ones named `parent/child`. Empty when
/// the console has no KTAP.
pub fn parse(console: &str) -> Vec<ResultCase> {
    let mut out = Vec::new();
    // levels[d] is the document at depth d; empty when outside any document.
    let mut levels: Vec<Level> = Vec::new();
    let mut base = 0usize;
    for raw in console.lines() {
        let (depth, text) = depth_and_text(raw);
        if text.starts_with("KTAP version") || text.starts_with("TAP version") {
            if levels.is_empty() {
                base = depth;
                levels.push(Level::default());
            } else {
                let d = depth.saturating_sub(base);
                while levels.len() <= d {
                    levels.push(Level::default());
                }
            }
            continue;
        }
        if levels.is_empty() {
            continue;
        }
        let d = depth.saturating_sub(base);
        if let Some(n) = text.strip_prefix("1..") {
            if let Ok(n) = n.trim().parse() {
                while levels.len() <= d {
                    levels.push(Level::default());
                }
                levels[d].plan = Some(n);
            }
            continue;
        }
        if text.starts_with("# Subtest:") {
            while levels.len() <= d + 1 {
                levels.push(Level::default());
            }
            continue;
        }
        let Some((ok, name, directive)) = result_line(text) else {
            continue;
        };
        // The children read since this level's last result belong to this result.
        while levels.len() > d + 2 {
            // A deeper document with no result line of its own: its cases go one level out.
            let orphan = levels.pop().unwrap_or_default();
            let closed = close(orphan, "");
            if let Some(parent) = levels.last_mut() {
                parent.results.extend(closed);
            }
        }
        let children = if levels.len() > d + 1 {
            close(levels.pop().unwrap_or_default(), &name)
        } else {
            Vec::new()
        };
        let outcome = match directive {
            Some(d) if d.to_ascii_uppercase().starts_with("SKIP") => {
                Outcome::Skip(d[4..].trim().to_owned())
            }
            _ if ok => Outcome::Pass,
            Some(d) if d.to_ascii_uppercase().starts_with("TODO") => Outcome::Skip(d),
            _ => Outcome::Fail,
        };
        while levels.len() <= d {
            levels.push(Level::default());
        }
        levels[d].results.extend(children.into_iter().map(|mut c| {
            c.name = format!("{name}/{}", c.name);
            c
        }));
        levels[d].results.push(ResultCase {
            name,
            outcome,
            line: text.to_owned(),
        });
        if d == 0 && levels[0].plan.is_some_and(|p| count_own(&levels[0]) >= p) {
            let top = levels.pop().unwrap_or_default();
            out.extend(close(top, ""));
            levels.clear();
        }
    }
    while let Some(level) = levels.pop() {
        let closed = close(level, "");
        match levels.last_mut() {
            Some(parent) => parent.results.extend(closed),
            None => out.extend(closed),
        }
    }
    out
}

/// Results at this level itself (not nested ones, which carry a `/`).
fn count_own(level: &Level) -> u64 {
    level
        .results
        .iter()
        .filter(|r| !r.name.contains('/'))
        .count() as u64
}

/// A finished level's cases, plus a failing `plan` case when its plan does not match.
fn close(level: Level, owner: &str) -> Vec<ResultCase> {
    let own = count_own(&level);
    let mut cases = level.results;
    if let Some(plan) = level.plan {
        if plan != own {
            let name = "plan".to_owned();
            cases.push(ResultCase {
                name,
                outcome: Outcome::Fail,
                line: format!(
                    "plan 1..{plan} but {own} result(s){}",
                    if owner.is_empty() {
                        String::new()
                    } else {
                        format!(" in {owner}")
                    }
                ),
            });
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cases: &[ResultCase]) -> Vec<(&str, &Outcome)> {
        cases
            .iter()
            .map(|c| (c.name.as_str(), &c.outcome))
            .collect()
    }

    /// The example of Documentation/dev-tools/ktap.rst ("Example KTAP output").
    const KERNEL_DOC_EXAMPLE: &str = "\
KTAP version 1
1..1
  KTAP version 1
  1..3
    KTAP version 1
    1..1
    # test_1: initializing test_1
    ok 1 test_1
  ok 1 example_test_1
    KTAP version 1
    1..2
    ok 1 test_1 # SKIP test_1 skipped
    ok 2 test_2
  ok 2 example_test_2
    KTAP version 1
    1..3
    ok 1 test_1
    # test_2: FAIL
    not ok 2 test_2
    ok 3 test_3 # SKIP test_3 skipped
  not ok 3 example_test_3
not ok 1 main_test
";

    #[test]
    fn the_kernel_documentation_example() {
        // Two-space indentation in the doc: our four-space rule reads it as one level per
        // four spaces, so normalise as KUnit prints it (four spaces a level).
        let four = KERNEL_DOC_EXAMPLE.replace("  ", "    ");
        let cases = parse(&four);
        assert_eq!(
            names(&cases),
            vec![
                ("main_test/example_test_1/test_1", &Outcome::Pass),
                ("main_test/example_test_1", &Outcome::Pass),
                (
                    "main_test/example_test_2/test_1",
                    &Outcome::Skip("test_1 skipped".into())
                ),
                ("main_test/example_test_2/test_2", &Outcome::Pass),
                ("main_test/example_test_2", &Outcome::Pass),
                ("main_test/example_test_3/test_1", &Outcome::Pass),
                ("main_test/example_test_3/test_2", &Outcome::Fail),
                (
                    "main_test/example_test_3/test_3",
                    &Outcome::Skip("test_3 skipped".into())
                ),
                ("main_test/example_test_3", &Outcome::Fail),
                ("main_test", &Outcome::Fail),
            ]
        );
    }

    /// KUnit's own output: `# Subtest:` headers, printk times, and the kselftest `-` form.
    #[test]
    fn kunit_console_with_printk_times() {
        let console = "\
[    0.100000] Booting
[    0.200000] KTAP version 1
[    0.200001] 1..1
[    0.200002]     KTAP version 1
[    0.200003]     # Subtest: example
[    0.200004]     1..2
[    0.200005]     ok 1 example_simple_test
[    0.200006]     not ok 2 example_failing_test
[    0.200007] # example: pass:1 fail:1 skip:0 total:2
[    0.200008] not ok 1 example
";
        assert_eq!(
            names(&parse(console)),
            vec![
                ("example/example_simple_test", &Outcome::Pass),
                ("example/example_failing_test", &Outcome::Fail),
                ("example", &Outcome::Fail),
            ]
        );
    }

    #[test]
    fn a_plan_that_does_not_match_fails() {
        let cases = parse("TAP version 13\n1..3\nok 1 - a\nok 2 - b # TODO later\n");
        assert_eq!(
            names(&cases),
            vec![
                ("a", &Outcome::Pass),
                ("b", &Outcome::Pass),
                ("plan", &Outcome::Fail),
            ]
        );
        assert_eq!(cases[2].line, "plan 1..3 but 2 result(s)");
    }

    #[test]
    fn no_ktap_no_cases() {
        assert!(parse("drv: summary scenario=hello status=0\nok 1 not tap\n").is_empty());
    }
}
