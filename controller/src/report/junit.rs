//! JUnit XML: one `<testcase>` per SLO and per fault application, so CI systems
//! show a run natively. A violated SLO (or one without data) is a `<failure>` whose
//! message names the measured value and the threshold; a fault that could not be
//! applied is an `<error>`. An aborted or errored run adds a `run` testcase saying why.

use std::fmt::Write as _;

use super::{FaultStatus, Outcome, ReportError, RunReport, SloVerdict};
use crate::slo::SloStatus;

/// Escapes text for XML 1.0 attribute values and character data. Characters XML 1.0
/// cannot carry at all (most C0 controls) are replaced by U+FFFD.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms.max(0) as f64 / 1000.0)
}

/// Renders the report as a JUnit XML document: `<testsuites>` around the run's one
/// `<testsuite>`.
pub fn to_junit(report: &RunReport) -> Result<String, ReportError> {
    to_junit_suite(std::slice::from_ref(report))
}

/// Renders several runs (a suite) as one JUnit XML document: `<testsuites>` with one
/// `<testsuite>` per run, in order. For one run this is exactly [`to_junit`].
pub fn to_junit_suite(reports: &[RunReport]) -> Result<String, ReportError> {
    let total = reports
        .iter()
        .map(Counts::of)
        .fold(Counts::default(), Counts::add);
    let time = seconds(
        reports
            .iter()
            .map(|r| (r.ended_ms - r.started_ms).max(0))
            .sum(),
    );
    let mut x = String::new();
    writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        x,
        r#"<testsuites name="faultline" tests="{}" failures="{}" errors="{}" time="{time}">"#,
        total.tests, total.failures, total.errors
    )?;
    for report in reports {
        write_testsuite(&mut x, report)?;
    }
    writeln!(x, "</testsuites>")?;
    Ok(x)
}

/// The counts a `<testsuite>` (or the `<testsuites>` around several) carries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

impl Counts {
    fn of(report: &RunReport) -> Counts {
        let slo_failures = report
            .slos
            .iter()
            .filter(|s| matches!(s.verdict, SloVerdict::Fail | SloVerdict::NoData))
            .count();
        let slo_unjudged = report
            .slos
            .iter()
            .filter(|s| s.verdict == SloVerdict::Inconclusive)
            .count();
        let fault_errors = report
            .faults
            .iter()
            .filter(|f| matches!(f.status, FaultStatus::Failed | FaultStatus::Refused))
            .count();
        let faults_missed = report
            .faults
            .iter()
            .filter(|f| f.effect_check.as_ref().is_some_and(|c| c.blocks()))
            .count();
        let run_case = has_run_case(report);
        let outcome = report.verdict.outcome;
        let run_failed = matches!(outcome, Outcome::Aborted | Outcome::Inconclusive);
        Counts {
            tests: report.slos.len() + report.faults.len() + usize::from(run_case),
            failures: slo_failures
                + slo_unjudged
                + faults_missed
                + usize::from(run_case && run_failed),
            errors: fault_errors
                + usize::from(run_case && !run_failed && outcome != Outcome::Skipped),
            skipped: usize::from(outcome == Outcome::Skipped)
                + report
                    .slos
                    .iter()
                    .filter(|s| s.verdict == SloVerdict::NotMeasured)
                    .count(),
        }
    }

    fn add(self, other: Counts) -> Counts {
        Counts {
            tests: self.tests + other.tests,
            failures: self.failures + other.failures,
            errors: self.errors + other.errors,
            skipped: self.skipped + other.skipped,
        }
    }
}

/// Whether the run gets a `run` testcase saying why it has no (complete) verdict.
fn has_run_case(report: &RunReport) -> bool {
    matches!(
        report.verdict.outcome,
        Outcome::Aborted
            | Outcome::Error
            | Outcome::InvalidInput
            | Outcome::Inconclusive
            | Outcome::Skipped
    )
}

/// Appends one run's `<testsuite>`: a testcase per SLO, per fault application, and
/// the `run` testcase when the run has no complete verdict.
fn write_testsuite(x: &mut String, report: &RunReport) -> Result<(), ReportError> {
    let Counts {
        tests,
        failures,
        errors,
        skipped,
    } = Counts::of(report);
    let run_case = has_run_case(report);
    let suite = escape_xml(&report.experiment.name);
    let time = seconds(report.ended_ms - report.started_ms);
    let timestamp = chrono::DateTime::from_timestamp_millis(report.started_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default();
    writeln!(
        x,
        r#"  <testsuite name="{suite}" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{time}" timestamp="{timestamp}">"#
    )?;
    writeln!(x, "    <properties>")?;
    for (name, value) in [
        ("verdict", report.verdict.outcome.as_str().to_string()),
        ("reason", report.verdict.reason.clone()),
        ("mode", report.mode.as_str().to_string()),
        ("sloBackend", report.slo_backend.clone()),
    ] {
        writeln!(
            x,
            r#"      <property name="{name}" value="{}"/>"#,
            escape_xml(&value)
        )?;
    }
    writeln!(x, "    </properties>")?;

    for slo in &report.slos {
        let name = escape_xml(&slo.name);
        writeln!(
            x,
            r#"    <testcase classname="{suite}.slo" name="{name}" time="{time}">"#
        )?;
        let unit = slo.threshold.unit;
        match slo.verdict {
            SloVerdict::Pass => {}
            SloVerdict::Fail => {
                let worst = slo
                    .worst_value()
                    .map_or("n/a".to_string(), |v| unit.format(v));
                let count = slo.violations().count();
                let message = format!(
                    "{} violated: measured {worst}, threshold {} ({count} of {} measurements violated)",
                    slo.name,
                    slo.threshold.describe(),
                    slo.samples.len()
                );
                writeln!(
                    x,
                    r#"      <failure type="SloViolated" message="{}">{}</failure>"#,
                    escape_xml(&message),
                    escape_xml(&sample_lines(report.started_ms, slo))
                )?;
            }
            SloVerdict::Inconclusive => {
                let figure = slo.worst_taint().map_or(String::new(), |t| {
                    format!(" ({}; raise load.maxConnections)", t.reason)
                });
                let message = format!(
                    "{}: not judged in {} of {} measurements: the load generator delayed requests beyond its tolerance, so client-side measurements describe the generator, not the system{figure}",
                    slo.name,
                    slo.inconclusive().count(),
                    slo.samples.len()
                );
                writeln!(
                    x,
                    r#"      <failure type="inconclusive" message="{}">{}</failure>"#,
                    escape_xml(&message),
                    escape_xml(&sample_lines(report.started_ms, slo))
                )?;
            }
            SloVerdict::NotMeasured => writeln!(
                x,
                r#"      <skipped message="{}: not measured (a dry run measures nothing)"/>"#,
                escape_xml(&slo.name)
            )?,
            SloVerdict::NoData => {
                let missing = slo
                    .samples
                    .iter()
                    .filter(|e| e.status == SloStatus::NoData)
                    .count();
                let message = format!(
                    "{}: no data in {missing} of {} measurements; missing data is not a pass",
                    slo.name,
                    slo.samples.len()
                );
                writeln!(
                    x,
                    r#"      <failure type="NoData" message="{}">{}</failure>"#,
                    escape_xml(&message),
                    escape_xml(&sample_lines(report.started_ms, slo))
                )?;
            }
        }
        writeln!(
            x,
            "      <system-out>{}</system-out>",
            escape_xml(&format!(
                "{}\nquery: {}\nthreshold: {}",
                slo.description,
                slo.query,
                slo.threshold.describe()
            ))
        )?;
        writeln!(x, "    </testcase>")?;
    }

    for fault in &report.faults {
        let name = escape_xml(&format!("{} @ {}", fault.name, fault.target.name));
        let duration = match (fault.applied_ms, fault.reverted_ms) {
            (Some(a), Some(r)) => seconds(r - a),
            _ => "0.000".to_string(),
        };
        writeln!(
            x,
            r#"    <testcase classname="{suite}.fault" name="{name}" time="{duration}">"#
        )?;
        match fault.status {
            FaultStatus::Failed => writeln!(
                x,
                r#"      <error type="FaultNotApplied" message="{}"/>"#,
                escape_xml(
                    fault
                        .error
                        .as_deref()
                        .unwrap_or("the fault could not be applied")
                )
            )?,
            FaultStatus::Refused => writeln!(
                x,
                r#"      <error type="FaultRefused" message="{}"/>"#,
                escape_xml(
                    fault
                        .error
                        .as_deref()
                        .unwrap_or("the agent refused a protected target")
                )
            )?,
            FaultStatus::Skipped => writeln!(
                x,
                r#"      <skipped message="{}"/>"#,
                escape_xml("the fault was not applied: the run stopped first")
            )?,
            FaultStatus::Reverted | FaultStatus::Expired => {
                if let Some(c) = fault.effect_check.as_ref().filter(|c| c.blocks()) {
                    writeln!(
                        x,
                        r#"      <failure type="inconclusive" message="{}"/>"#,
                        escape_xml(&c.describe(&fault.name, &fault.target.name))
                    )?;
                }
            }
        }
        writeln!(
            x,
            "      <system-out>{}</system-out>",
            escape_xml(&format!(
                "kind: {}\nbackend: {}\neffect: {}\nmetrics: {}\neffect check: {}",
                fault.fault.name(),
                fault.backend.as_deref().unwrap_or("-"),
                fault.effect.summary,
                serde_json::to_string(&fault.effect.metrics)?,
                fault
                    .effect_check
                    .as_ref()
                    .map_or("-".to_string(), |c| format!(
                        "{} (asked {}; measured {}; rule: {})",
                        c.verdict.as_str(),
                        c.asked,
                        c.measured,
                        c.rule
                    ))
            ))
        )?;
        writeln!(x, "    </testcase>")?;
    }

    if run_case {
        writeln!(
            x,
            r#"    <testcase classname="{suite}" name="run" time="{time}">"#
        )?;
        let kind = match report.verdict.outcome {
            Outcome::Aborted | Outcome::Inconclusive => "failure",
            Outcome::Skipped => "skipped",
            _ => "error",
        };
        writeln!(
            x,
            r#"      <{kind} type="{}" message="{}"/>"#,
            report.verdict.outcome.as_str(),
            escape_xml(&report.verdict.reason)
        )?;
        writeln!(x, "    </testcase>")?;
    }
    writeln!(x, "  </testsuite>")?;
    Ok(())
}

/// `+12.0s  0.812% violated` lines for a failure body.
fn sample_lines(started_ms: i64, slo: &super::SloReport) -> String {
    slo.samples
        .iter()
        .map(|e| {
            let value = e
                .value
                .map_or("no data".to_string(), |v| slo.threshold.unit.format(v));
            let status = match e.status {
                SloStatus::Ok => "ok",
                SloStatus::Violated => "VIOLATED",
                SloStatus::NoData => "NO DATA",
                SloStatus::Inconclusive => "INCONCLUSIVE (generator delay)",
            };
            format!(
                "+{:.1}s  {value}  {status}",
                (e.at_ms - started_ms) as f64 / 1000.0
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::suite::tests::{report, slo};
    use crate::slo::Unit;

    #[test]
    fn escape_xml_handles_markup_quotes_and_control_characters() {
        assert_eq!(
            escape_xml(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(escape_xml("a\u{1}b\tc"), "a\u{FFFD}b\tc");
    }

    #[test]
    fn a_suite_is_one_testsuites_with_a_testsuite_per_run_and_summed_counts() {
        let mut failed = report("checkout", Outcome::Fail);
        failed.slos = vec![slo("gateway-p99", 0.8, 1.2, Unit::Seconds)];
        let skipped = report("containers", Outcome::Skipped);
        let x = to_junit_suite(&[failed, skipped]).unwrap();
        assert_eq!(x.matches("<testsuites ").count(), 1);
        assert_eq!(x.matches("<testsuite ").count(), 2);
        assert!(
            x.contains(r#"<testsuite name="checkout" tests="1" failures="1""#),
            "{x}"
        );
        assert!(
            x.contains(
                r#"<testsuite name="containers" tests="1" failures="0" errors="0" skipped="1""#
            ),
            "{x}"
        );
        assert!(
            x.contains(r#"<testsuites name="faultline" tests="2" failures="1" errors="0""#),
            "{x}"
        );
    }

    #[test]
    fn a_dry_runs_slos_are_skipped_testcases_not_failures() {
        let mut dry = report("checkout", Outcome::Pass);
        let mut unmeasured = slo("gateway-p99", 0.8, 0.1, Unit::Seconds);
        unmeasured.samples.clear();
        unmeasured.verdict = SloVerdict::NotMeasured;
        dry.slos = vec![unmeasured];
        let x = to_junit(&dry).unwrap();
        assert!(
            x.contains(r#"tests="1" failures="0" errors="0" skipped="1""#),
            "{x}"
        );
        assert!(
            x.contains(
                r#"<skipped message="gateway-p99: not measured (a dry run measures nothing)"/>"#
            ),
            "{x}"
        );
        assert!(!x.contains("<failure"), "{x}");
    }

    #[test]
    fn one_run_renders_as_the_single_run_document_the_controller_parses() {
        let mut failed = report("checkout", Outcome::Fail);
        failed.slos = vec![
            slo("gateway-p99", 0.8, 1.2, Unit::Seconds),
            slo("gateway-errors", 0.01, 0.0, Unit::Ratio),
        ];
        let x = to_junit(&failed).unwrap();
        assert_eq!(x, to_junit_suite(std::slice::from_ref(&failed)).unwrap());
        assert_eq!(x.matches("<testsuite ").count(), 1);
        assert_eq!(
            crate::schedule::process::failing_testcases(&x),
            ["gateway-p99"]
        );
    }
}
