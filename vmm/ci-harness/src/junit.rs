//! JUnit XML through `quick-junit`: one testsuite per spec, one testcase per case. A failure
//! carries expected against observed as its message and the hit context as its text.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::report::{SpecResult, Status};

/// The XML for `specs`.
pub fn xml(specs: &[SpecResult], seconds: f64) -> Result<String, String> {
    let mut report = Report::new("drvisor-ci");
    report.set_time(Duration::from_secs_f64(seconds));
    for s in specs {
        let mut suite = TestSuite::new(s.name.clone());
        suite.set_time(Duration::from_secs_f64(s.seconds));
        suite.add_property(("spec", s.path.display().to_string().as_str()));
        suite.add_property(("end", s.end.as_str()));
        for c in &s.cases {
            let status = match c.status {
                Status::Passed => TestCaseStatus::success(),
                Status::Skipped => {
                    let mut st = TestCaseStatus::skipped();
                    if let Some(r) = &c.reason {
                        st.set_message(r.clone());
                    }
                    st
                }
                Status::Failed => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(format!(
                        "expected {}; observed {}",
                        c.expected.as_deref().unwrap_or("?"),
                        c.observed.as_deref().unwrap_or("?")
                    ));
                    st.set_type("check");
                    let mut text = format!(
                        "expected: {}\nobserved: {}\n",
                        c.expected.as_deref().unwrap_or_default(),
                        c.observed.as_deref().unwrap_or_default()
                    );
                    if let Some(ctx) = &c.context {
                        text += &format!("context:\n{ctx}\n");
                    }
                    st.set_description(text);
                    st
                }
            };
            let mut case = TestCase::new(c.name.clone(), status);
            case.set_classname(s.name.clone());
            if let (Status::Passed, Some(ctx)) = (c.status, &c.context) {
                case.set_system_out(ctx.clone());
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::CaseReport;

    #[test]
    fn counts_and_evidence_reach_the_xml() {
        let case = |name: &str, status| CaseReport {
            name: name.into(),
            status,
            expected: Some("exactly 3 hit(s) of f".into()),
            observed: Some("2 hit(s)".into()),
            context: Some("hit #2 of f".into()),
            reason: Some("no hw".into()),
        };
        let specs = vec![SpecResult {
            path: "a.toml".into(),
            name: "a".into(),
            seconds: 0.5,
            run_seconds: 0.4,
            end: "the guest exited with status 0".into(),
            guest_status: Some(0),
            console: String::new(),
            run_end: None,
            spec_error: None,
            cases: vec![
                case("ok", Status::Passed),
                case("bad", Status::Failed),
                case("skip", Status::Skipped),
            ],
            timeline: Vec::new(),
        }];
        let xml = xml(&specs, 1.0).expect("serializes");
        assert!(
            xml.contains(r#"<testsuite name="a" tests="3" disabled="1" errors="0" failures="1""#),
            "{xml}"
        );
        assert!(
            xml.contains("expected exactly 3 hit(s) of f; observed 2 hit(s)"),
            "{xml}"
        );
        assert!(xml.contains("hit #2 of f"), "{xml}");
        assert!(xml.contains(r#"<skipped message="no hw"/>"#), "{xml}");
    }
}
