//! A suite: several runs in order (`chaos run DIR`), summarised by one index. The index
//! lists every experiment with its outcome, the SLO closest to (or furthest past) its
//! threshold, and where its reports are; it is written as `index.json`
//! ([`to_json`]), `index.html` ([`super::html::to_index_html`]) and a terminal table
//! ([`super::terminal::suite_table`]). Its exit code is [`suite_exit_code`].

use serde::{Deserialize, Serialize};

use super::{
    Outcome, ReportError, RunMode, RunReport, SCHEMA_VERSION, SloReport, exit_code, exit_severity,
};
use crate::slo::Threshold;

/// One run of a suite, as the suite records it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteRun {
    /// The run's report (a skipped experiment has a report too).
    pub report: RunReport,
    /// Skipped because the suite stopped early (`--fail-fast`, an interrupt), not
    /// because this mode cannot run it; `--strict` does not count these.
    pub not_run: bool,
    /// Where its own reports were written.
    pub links: ReportLinks,
}

/// Paths of one experiment's reports, relative to the index that lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportLinks {
    /// The JSON report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// The experiment's own JUnit document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junit: Option<String>,
    /// The HTML report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// How many runs ended which way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Outcome `pass`.
    pub passed: usize,
    /// Outcome `fail` or `aborted`.
    pub failed: usize,
    /// Outcome `inconclusive`: the SLOs held, but no verdict was earned (a fault did not
    /// bite as asked, or the load generator distorted a client SLO).
    #[serde(default)]
    pub inconclusive: usize,
    /// Outcome `skipped` (the mode cannot run it, or the suite stopped first).
    pub skipped: usize,
    /// Outcome `error` or `invalid`.
    pub errors: usize,
}

impl Totals {
    /// Counts the outcomes.
    pub fn of(outcomes: impl IntoIterator<Item = Outcome>) -> Totals {
        let mut t = Totals::default();
        for o in outcomes {
            match o {
                Outcome::Pass => t.passed += 1,
                Outcome::Fail | Outcome::Aborted => t.failed += 1,
                Outcome::Skipped => t.skipped += 1,
                Outcome::Inconclusive => t.inconclusive += 1,
                Outcome::InvalidInput | Outcome::Error => t.errors += 1,
            }
        }
        t
    }

    /// `3 passed, 1 failed, 0 inconclusive, 2 skipped, 0 errors`.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} inconclusive, {} skipped, {} errors",
            self.passed, self.failed, self.inconclusive, self.skipped, self.errors
        )
    }
}

/// The suite index (`index.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuiteIndex {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where the suite ran.
    pub mode: RunMode,
    /// Start of the first run, Unix milliseconds.
    pub started_ms: i64,
    /// End of the last run, Unix milliseconds.
    pub ended_ms: i64,
    /// Whether `--strict` turned skips into exit 2.
    pub strict: bool,
    /// The suite's exit code ([`suite_exit_code`]).
    pub exit_code: u8,
    /// Outcome counts.
    pub totals: Totals,
    /// Every experiment, in the order it ran.
    pub experiments: Vec<IndexEntry>,
}

/// One experiment in the suite index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// `metadata.name`, unique within the suite.
    pub name: String,
    /// The file it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// How its run ended.
    pub outcome: Outcome,
    /// The verdict's reason (for a skip: why it was not run).
    pub reason: String,
    /// The run's own exit code ([`exit_code`] of its outcome).
    pub exit_code: u8,
    /// How long it ran, milliseconds (0 when skipped).
    pub duration_ms: u64,
    /// The SLO with the least headroom: name, worst measured value and threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_slo: Option<String>,
    /// Failed (or aborted) with the worst SLO past its bound, so `worst_slo` says what
    /// failed; otherwise (a failed recovery or steady state, an SLO without data) the
    /// reason does, and the worst SLO may have held.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_on_slos: bool,
    /// Skipped because the suite stopped first, not because of the mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_run: bool,
    /// Its reports, relative to the index.
    pub reports: ReportLinks,
}

impl IndexEntry {
    /// What the summary table shows beside the outcome: the worst SLO for a run that
    /// passed or failed on its SLOs, the reason otherwise (a failed recovery, a fleet
    /// that crashed, a skip).
    pub fn detail(&self) -> &str {
        match (self.outcome, &self.worst_slo) {
            (Outcome::Pass, Some(w)) => w,
            (Outcome::Fail, Some(w)) if self.failed_on_slos => w,
            _ => &self.reason,
        }
    }
}

impl SuiteIndex {
    /// The index of `runs` in the order they ran.
    pub fn new(mode: RunMode, runs: &[SuiteRun], strict: bool) -> SuiteIndex {
        let experiments = runs
            .iter()
            .map(|run| {
                let r = &run.report;
                let (headroom, worst_slo) = worst(r).unzip();
                IndexEntry {
                    name: r.experiment.name.clone(),
                    file: r.experiment.file.clone(),
                    outcome: r.verdict.outcome,
                    reason: r.verdict.reason.clone(),
                    exit_code: exit_code(r.verdict.outcome),
                    duration_ms: u64::try_from(r.ended_ms - r.started_ms).unwrap_or(0),
                    worst_slo,
                    failed_on_slos: matches!(r.verdict.outcome, Outcome::Fail | Outcome::Aborted)
                        && headroom.is_some_and(|h| h < 0.0),
                    not_run: run.not_run,
                    reports: run.links.clone(),
                }
            })
            .collect();
        SuiteIndex {
            schema_version: SCHEMA_VERSION,
            mode,
            started_ms: runs.iter().map(|r| r.report.started_ms).min().unwrap_or(0),
            ended_ms: runs.iter().map(|r| r.report.ended_ms).max().unwrap_or(0),
            strict,
            exit_code: suite_exit_code(runs, strict),
            totals: Totals::of(runs.iter().map(|r| r.report.verdict.outcome)),
            experiments,
        }
    }
}

/// The suite's exit code: the most severe ([`exit_severity`]) [`exit_code`] of its
/// runs. With `strict`, an
/// experiment skipped because this mode cannot run it counts as invalid input (2);
/// experiments not run because the suite stopped first do not.
pub fn suite_exit_code(runs: &[SuiteRun], strict: bool) -> u8 {
    runs.iter()
        .map(|run| {
            let outcome = run.report.verdict.outcome;
            if strict && outcome == Outcome::Skipped && !run.not_run {
                exit_code(Outcome::InvalidInput)
            } else {
                exit_code(outcome)
            }
        })
        .max_by_key(|c| exit_severity(*c))
        .unwrap_or(0)
}

/// The SLO with the least headroom (most negative when violated), as
/// `gateway-p99 812.0ms vs <= 800.0ms`. `None` when no SLO has a measured value.
pub fn worst_slo(report: &RunReport) -> Option<String> {
    worst(report).map(|(_, w)| w)
}

/// The SLO with the least headroom: the headroom (negative past its bound) and the
/// description.
fn worst(report: &RunReport) -> Option<(f64, String)> {
    report
        .slos
        .iter()
        .filter_map(|s| {
            let v = s.worst_value()?;
            Some((headroom(&s.threshold, v), s, v))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(h, s, v)| (h, describe_worst(s, v)))
}

fn describe_worst(slo: &SloReport, value: f64) -> String {
    format!(
        "{} {} vs {}",
        slo.name,
        slo.threshold.unit.format(value),
        slo.threshold.describe()
    )
}

/// How far `value` is inside its bounds, relative to the bound (negative outside), so
/// SLOs of different units compare.
fn headroom(t: &Threshold, value: f64) -> f64 {
    let rel = |gap: f64, bound: f64| gap / bound.abs().max(1e-9);
    let over = t.max.map(|max| rel(max - value, max));
    let under = t.min.map(|min| rel(value - min, min));
    match (over, under) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => f64::INFINITY,
    }
}

/// Serializes the index as pretty JSON.
pub fn to_json(index: &SuiteIndex) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(index)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{SloVerdict, Verdict};
    use crate::slo::{Evaluation, Evidence, Unit};

    pub(crate) fn report(name: &str, outcome: Outcome) -> RunReport {
        let none = crate::run::RunError::Infrastructure(String::new());
        let mut r = crate::run::early_report(None, Some(name), RunMode::Local, &none);
        r.experiment.file = Some(format!("{name}.yaml"));
        r.slo_backend = "embedded".into();
        r.started_ms = 1_000;
        r.ended_ms = 11_000;
        r.verdict = Verdict {
            outcome,
            reason: format!("{name} is {}", outcome.as_str()),
        };
        r
    }

    fn run(outcome: Outcome, not_run: bool) -> SuiteRun {
        SuiteRun {
            report: report("x", outcome),
            not_run,
            links: ReportLinks::default(),
        }
    }

    pub(crate) fn slo(name: &str, max: f64, value: f64, unit: Unit) -> SloReport {
        let threshold = Threshold {
            max: Some(max),
            min: None,
            unit,
        };
        SloReport {
            name: name.into(),
            kind: "latency".into(),
            description: String::new(),
            source: "server".into(),
            window_ms: 10_000,
            query: "q".into(),
            threshold,
            samples: vec![Evaluation {
                at_ms: 2_000,
                value: Some(value),
                threshold,
                status: threshold.judge(Some(value)),
                evidence: Evidence {
                    backend: "embedded".into(),
                    query: "q".into(),
                    detail: None,
                    generator: None,
                },
            }],
            verdict: if value > max {
                SloVerdict::Fail
            } else {
                SloVerdict::Pass
            },
        }
    }

    #[test]
    fn suite_exits_with_the_worst_run_and_skips_count_as_zero() {
        let runs = [
            run(Outcome::Pass, false),
            run(Outcome::Skipped, false),
            run(Outcome::Fail, false),
        ];
        assert_eq!(suite_exit_code(&runs, false), 1);
        assert_eq!(suite_exit_code(&runs[..2], false), 0);
        assert_eq!(suite_exit_code(&[run(Outcome::Error, false)], false), 3);
        assert_eq!(suite_exit_code(&[], false), 0);
    }

    #[test]
    fn an_unearned_verdict_outweighs_a_pass_but_never_a_failure_or_an_error() {
        let inconclusive = run(Outcome::Inconclusive, false);
        let pass = run(Outcome::Pass, false);
        assert_eq!(
            suite_exit_code(&[pass.clone(), inconclusive.clone()], false),
            4
        );
        let fail = run(Outcome::Fail, false);
        assert_eq!(suite_exit_code(&[inconclusive.clone(), fail], false), 1);
        let error = run(Outcome::Error, false);
        assert_eq!(suite_exit_code(&[error, inconclusive], false), 3);
    }

    #[test]
    fn strict_turns_mode_skips_into_exit_2_but_not_runs_the_suite_stopped() {
        let skipped = [run(Outcome::Pass, false), run(Outcome::Skipped, false)];
        assert_eq!(suite_exit_code(&skipped, true), 2);
        let stopped = [run(Outcome::Fail, false), run(Outcome::Skipped, true)];
        assert_eq!(suite_exit_code(&stopped, true), 1);
    }

    #[test]
    fn worst_slo_is_the_one_with_least_headroom_across_units() {
        let mut r = report("x", Outcome::Fail);
        r.slos = vec![
            slo("p99", 0.8, 0.6, Unit::Seconds),
            slo("errors", 0.01, 0.012, Unit::Ratio),
        ];
        let worst = worst_slo(&r).unwrap();
        assert!(worst.starts_with("errors 1.2"), "{worst}");
        assert!(worst.contains("vs <= 1.0"), "{worst}");
        assert_eq!(worst_slo(&report("y", Outcome::Pass)), None);
    }

    #[test]
    fn a_failure_that_is_not_an_slo_shows_its_reason_not_a_held_slo() {
        let mut recovery = run(Outcome::Fail, false);
        recovery.report.slos = vec![slo("p90", 0.25, 0.005, Unit::Seconds)];
        recovery.report.verdict.reason =
            "not recovered within 5000 ms after the last fault: p90".into();
        let mut breached = recovery.clone();
        breached.report.slos = vec![slo("p90", 0.25, 0.5, Unit::Seconds)];
        // Failed on an SLO without data: the held one is not what failed.
        let mut no_data = recovery.clone();
        let mut silent = slo("errors", 0.01, 0.0, Unit::Ratio);
        silent.samples.clear();
        silent.verdict = SloVerdict::NoData;
        no_data.report.slos.push(silent);
        no_data.report.verdict.reason = "SLOs not met: errors (noData)".into();
        let index = SuiteIndex::new(RunMode::Local, &[recovery, breached, no_data], false);
        assert!(index.experiments[0].detail().starts_with("not recovered"));
        assert_eq!(
            index.experiments[2].detail(),
            "SLOs not met: errors (noData)"
        );
        assert!(!index.experiments[2].failed_on_slos);
        assert!(
            index.experiments[1].detail().starts_with("p90 500"),
            "{}",
            index.experiments[1].detail()
        );
    }

    #[test]
    fn index_lists_every_run_with_totals_and_shows_reasons_for_skips() {
        let mut skipped = run(Outcome::Skipped, false);
        skipped.report.verdict.reason = "needs --env compose".into();
        skipped.report.experiment.name = "containers".into();
        let runs = [run(Outcome::Pass, false), skipped];
        let index = SuiteIndex::new(RunMode::Local, &runs, false);
        assert_eq!(index.experiments.len(), 2);
        assert_eq!(index.exit_code, 0);
        assert_eq!(
            index.totals.line(),
            "1 passed, 0 failed, 0 inconclusive, 1 skipped, 0 errors"
        );
        assert_eq!(index.experiments[1].detail(), "needs --env compose");
        let json: serde_json::Value = serde_json::from_str(&to_json(&index).unwrap()).unwrap();
        assert_eq!(json["experiments"][1]["outcome"], "skipped");
        assert_eq!(json["experiments"][1]["name"], "containers");
    }
}
