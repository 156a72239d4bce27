//! kvm-unit-tests' report lines (`PASS: name`, `FAIL: name`, `SKIP: name`, `XFAIL`, `XPASS`)
//! into test cases. Pure: console text in, cases out.

use crate::ktap::{Outcome, ResultCase};

/// Every reported case on `console`, in order.
pub fn parse(console: &str) -> Vec<ResultCase> {
    console
        .lines()
        .filter_map(|raw| {
            let line = raw.trim();
            let (word, rest) = line.split_once(": ")?;
            let outcome = match word {
                "PASS" | "XFAIL" => Outcome::Pass,
                "FAIL" | "XPASS" => Outcome::Fail,
                "SKIP" => Outcome::Skip(String::new()),
                _ => return None,
            };
            // `SKIP: name (reason)`: the reason, when given, is the skip's message.
            let (name, outcome) = match (&outcome, rest.rsplit_once(" (")) {
                (Outcome::Skip(_), Some((n, why))) => {
                    (n, Outcome::Skip(why.trim_end_matches(')').to_owned()))
                }
                _ => (rest, outcome),
            };
            Some(ResultCase {
                name: name.trim().to_owned(),
                outcome,
                line: line.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lines_of_a_real_run() {
        let console = "\
enabling apic
PASS: DR4==DR6 with CR4.DE == 0
FAIL: single step
SKIP: nested (no VMX)
XFAIL: known broken
SUMMARY: 4 tests, 1 unexpected failures, 1 skipped
";
        let cases = parse(console);
        let got: Vec<(&str, &Outcome)> = cases
            .iter()
            .map(|c| (c.name.as_str(), &c.outcome))
            .collect();
        assert_eq!(
            got,
            vec![
                ("DR4==DR6 with CR4.DE == 0", &Outcome::Pass),
                ("single step", &Outcome::Fail),
                ("nested", &Outcome::Skip("no VMX".into())),
                ("known broken", &Outcome::Pass),
            ]
        );
    }
}
