//! Terminal output: a live progress line while the run goes (phase, elapsed time,
//! live SLI values, active faults) and a summary table at the end. Colour follows
//! the `NO_COLOR` convention (<https://no-color.org>): any non-empty value turns it off.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Outcome, Phase, RunReport, SloVerdict};
use crate::slo::{SloStatus, Unit};

/// Whether output may use ANSI colour: `NO_COLOR` unset or empty.
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn outcome_color(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "1;32",
        Outcome::Fail => "1;31",
        Outcome::Aborted => "1;33",
        Outcome::InvalidInput | Outcome::Error | Outcome::Inconclusive => "1;35",
        Outcome::Skipped => "1;36",
    }
}

/// The end-of-run summary: one row per SLO and per fault, then the verdict line.
pub fn summary(report: &RunReport, color: bool) -> String {
    let mut out = String::new();
    let name_w = report
        .slos
        .iter()
        .map(|s| s.name.chars().count())
        .chain(report.faults.iter().map(|f| f.name.chars().count()))
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{} {} ({} mode, {} SLO backend, {:.1}s)",
        paint(color, "1", "Experiment"),
        report.experiment.name,
        report.mode.as_str(),
        report.slo_backend,
        (report.ended_ms - report.started_ms) as f64 / 1000.0
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<name_w$}  {:<8}  {:<22}  {:<12}  VERDICT",
        "SLO", "KIND", "THRESHOLD", "WORST"
    );
    for slo in &report.slos {
        let worst = slo
            .worst_value()
            .map_or("n/a".to_string(), |v| slo.threshold.unit.format(v));
        let verdict = match slo.verdict {
            SloVerdict::Pass => paint(color, "32", "pass"),
            SloVerdict::Fail => paint(color, "31", "FAIL"),
            SloVerdict::NoData => paint(color, "33", "NO DATA"),
            SloVerdict::Inconclusive => paint(color, "35", "INCONCLUSIVE"),
            SloVerdict::NotMeasured => "not measured".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<8}  {:<22}  {:<12}  {verdict}",
            slo.name,
            truncate(&slo.kind, 8),
            truncate(&slo.threshold.describe(), 22),
            worst
        );
    }
    for slo in &report.slos {
        if let Some(t) = slo.worst_taint() {
            let _ = writeln!(
                out,
                "  {}: not judged in {} of {} measurements: {}",
                slo.name,
                slo.inconclusive().count(),
                slo.samples.len(),
                t.reason
            );
        }
    }
    if !report.faults.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<12}  {:<16}  {:<10}  EFFECT",
            "FAULT", "TARGET", "WINDOW", "BIT"
        );
        for f in &report.faults {
            let (start, end) = f.window_relative(report.started_ms);
            let status = match f.status {
                super::FaultStatus::Failed => paint(color, "31", "FAILED "),
                super::FaultStatus::Refused => paint(color, "31", "REFUSED "),
                super::FaultStatus::Skipped => "skipped ".to_string(),
                _ => String::new(),
            };
            let bit = match &f.effect_check {
                None => "-".to_string(),
                Some(c) if c.verdict.bit() => paint(color, "32", &format!("{:<10}", "held")),
                Some(c) if !c.required => format!("{:<10}", c.verdict.as_str()),
                Some(c) => paint(
                    color,
                    "35",
                    &format!("{:<10}", c.verdict.as_str().to_uppercase()),
                ),
            };
            let _ = writeln!(
                out,
                "  {:<name_w$}  {:<12}  {:<16}  {bit:<10}  {status}{}",
                f.name,
                truncate(&f.target.name, 12),
                format!("+{:.1}s–+{:.1}s", start / 1000.0, end / 1000.0),
                f.error.as_deref().unwrap_or(&f.effect.summary)
            );
            if let Some(c) = f.effect_check.as_ref().filter(|c| !c.verdict.bit()) {
                let _ = writeln!(
                    out,
                    "  {:<name_w$}  asked {}; measured {} (rule: {}){}",
                    "",
                    c.asked,
                    c.measured,
                    c.rule,
                    if c.required { "" } else { "; not required" }
                );
            }
        }
    }
    if !report.reactions.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "  fleet reactions:");
        for r in &report.reactions {
            let _ = writeln!(out, "    {}", r.describe(report.started_ms));
        }
    }
    if let Some(r) = &report.recovery {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  recovery within {:.1}s: {}",
            r.within_ms as f64 / 1000.0,
            match (r.recovered_after_ms, r.not_judged()) {
                (Some(ms), _) => format!("recovered after {:.1}s", ms as f64 / 1000.0),
                (None, Some(why)) => format!("INCONCLUSIVE ({why})"),
                (None, None) => format!("NOT recovered ({})", r.not_recovered.join(", ")),
            }
        );
    }
    if let Some(load) = &report.load {
        let _ = writeln!(
            out,
            "  load: {} requests, {} errors, {:.1}/s, p99 {}",
            load.requests,
            load.errors,
            load.achieved_rate,
            load.latency_ms
                .get("p99")
                .map_or("n/a".to_string(), |v| format!("{v:.1}ms"))
        );
        let _ = writeln!(out, "  generator: {}", generator_line(load));
        for surge in &load.surges {
            let mark = if surge.delivered() {
                ""
            } else {
                " (NOT DELIVERED)"
            };
            let _ = writeln!(out, "  {}{mark}", surge.describe());
        }
    }
    let _ = writeln!(out);
    for (n, earlier) in report.reruns.iter().enumerate() {
        let _ = writeln!(
            out,
            "Attempt {}: {} — {}",
            n + 1,
            earlier.outcome.as_str().to_uppercase(),
            earlier.reason
        );
    }
    let outcome = report.verdict.outcome;
    let _ = writeln!(
        out,
        "{} {} — {} (exit {})",
        paint(color, "1", "Verdict:"),
        paint(
            color,
            outcome_color(outcome),
            &outcome.as_str().to_uppercase()
        ),
        report.verdict.reason,
        super::exit_code(outcome)
    );
    out
}

/// The end-of-suite table: one row per experiment (outcome, worst SLO or the reason it
/// has none, duration), then the totals and the suite's exit code.
pub fn suite_table(index: &super::suite::SuiteIndex, color: bool) -> String {
    let mut out = String::new();
    let name_w = index
        .experiments
        .iter()
        .map(|e| e.name.chars().count())
        .max()
        .unwrap_or(10)
        .max(10);
    let _ = writeln!(
        out,
        "{} ({} experiments, {} mode)",
        paint(color, "1", "Suite"),
        index.experiments.len(),
        index.mode.as_str()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<name_w$}  {:<12}  {:>8}  WORST SLO",
        "EXPERIMENT", "OUTCOME", "DURATION"
    );
    for e in &index.experiments {
        // Pad before painting: escape codes would count towards the width.
        let outcome = format!("{:<12}", e.outcome.as_str().to_uppercase());
        let _ = writeln!(
            out,
            "  {:<name_w$}  {}  {:>8}  {}",
            e.name,
            paint(color, outcome_color(e.outcome), &outcome),
            format!("{:.1}s", e.duration_ms as f64 / 1000.0),
            e.detail()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} {} (exit {})",
        paint(color, "1", "Total:"),
        index.totals.line(),
        index.exit_code
    );
    out
}

/// `delay p99 0.4ms, max 2.1ms; 0 delayed > 10ms, 0 expired; connections 16..=256, peak 38`.
pub fn generator_line(load: &crate::slo::client::LoadSummary) -> String {
    let q = |k: &str| {
        load.generator_delay_ms
            .get(k)
            .map_or("n/a".to_string(), |v| format!("{v:.1}ms"))
    };
    let mut line = format!(
        "delay p99 {}, max {}; {} delayed > {}ms, {} waited long, {} expired unsent",
        q("p99"),
        q("max"),
        load.delayed_requests,
        crate::slo::client::TAINT_DELAY_FLOOR.as_millis(),
        load.waited_long_requests,
        load.expired_requests
    );
    if let (Some(c), Some(max)) = (load.connections, load.max_connections) {
        let _ = write!(line, "; connections {c} up front, up to {max}");
        if let Some(peak) = load.peak_connections {
            let _ = write!(line, ", peak {peak}");
        }
    }
    line
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// One SLI value as the live line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSli {
    /// SLO name.
    pub name: String,
    /// Latest value, if any.
    pub value: Option<f64>,
    /// Unit of the value.
    pub unit: Unit,
    /// Latest judgement.
    pub status: SloStatus,
}

/// What the live progress line shows; the runner updates it every second.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveState {
    /// Current phase.
    pub phase: Phase,
    /// Time since the run started.
    pub elapsed: Duration,
    /// The experiment's whole duration.
    pub total: Duration,
    /// Latest SLI values.
    pub slis: Vec<LiveSli>,
    /// Names of faults active right now.
    pub active_faults: Vec<String>,
}

/// The live status line: `[inject] 23.0s/60.0s · gateway-p99 212.4ms ok · faults: payments-latency`.
pub fn status_line(state: &LiveState, color: bool) -> String {
    let mut line = format!(
        "[{}] {:.1}s/{:.1}s",
        state.phase.as_str(),
        state.elapsed.as_secs_f64(),
        state.total.as_secs_f64()
    );
    for sli in &state.slis {
        let value = sli.value.map_or("n/a".to_string(), |v| sli.unit.format(v));
        let status = match sli.status {
            SloStatus::Ok => paint(color, "32", "ok"),
            SloStatus::Violated => paint(color, "31", "VIOLATED"),
            SloStatus::NoData => paint(color, "33", "no data"),
            SloStatus::Inconclusive => paint(color, "35", "inconclusive"),
        };
        let _ = write!(line, " · {} {value} {status}", sli.name);
    }
    if state.active_faults.is_empty() {
        line.push_str(" · no faults active");
    } else {
        let _ = write!(line, " · faults: {}", state.active_faults.join(", "));
    }
    line
}

/// Where live progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A redrawn bar on stderr (interactive terminals).
    Bar,
    /// One plain line per update on stderr (CI logs, pipes).
    Plain,
    /// Nothing (tests, `--quiet`).
    Hidden,
}

impl ProgressMode {
    /// `Bar` on a terminal, `Plain` otherwise.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Plain
        }
    }
}

/// Live progress the runner drives: call [`Progress::update`] every second and
/// [`Progress::finish`] at the end.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    mode: ProgressMode,
    color: bool,
    last_phase: Option<Phase>,
}

impl Progress {
    /// Starts progress output for a run of `total` length.
    pub fn new(total: Duration, mode: ProgressMode) -> Self {
        let color = color_enabled();
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.as_millis().try_into().unwrap_or(u64::MAX)),
                ProgressDrawTarget::stderr(),
            );
            let template = if color {
                "{bar:24.cyan/blue} {msg}"
            } else {
                "{bar:24} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            bar,
            mode,
            color,
            last_phase: None,
        }
    }

    /// Shows `state`. In plain mode a line is printed per call.
    pub fn update(&mut self, state: &LiveState) {
        let line = status_line(state, self.color);
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(state.elapsed.as_millis().try_into().unwrap_or(u64::MAX));
                bar.set_message(line);
            }
            (None, ProgressMode::Plain) => eprintln!("{line}"),
            _ => {}
        }
        self.last_phase = Some(state.phase);
    }

    /// The phase last shown.
    pub fn phase(&self) -> Option<Phase> {
        self.last_phase
    }

    /// Removes the bar so the summary prints cleanly.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_phase_slis_and_faults_without_color() {
        let state = LiveState {
            phase: Phase::Inject,
            elapsed: Duration::from_millis(23_000),
            total: Duration::from_secs(60),
            slis: vec![LiveSli {
                name: "gateway-p99".into(),
                value: Some(0.2124),
                unit: Unit::Seconds,
                status: SloStatus::Ok,
            }],
            active_faults: vec!["payments-latency".into()],
        };
        let line = status_line(&state, false);
        assert_eq!(
            line,
            "[inject] 23.0s/60.0s · gateway-p99 212.4ms ok · faults: payments-latency"
        );
        assert!(!line.contains('\x1b'));
        assert!(status_line(&state, true).contains("\x1b[32mok"));
    }
}
