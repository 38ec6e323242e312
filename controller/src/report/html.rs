//! The self-contained HTML report: inline CSS, inline SVG charts, no scripts and no
//! external assets, so it can be attached to a CI run and opened anywhere.
//!
//! Each SLI is charted over the run's time against its threshold (dashed), with the
//! fault windows shaded and labelled; violated measurements are red dots, missing
//! measurements break the line and show as grey ticks on the time axis.

use std::fmt::Write as _;

use super::junit::escape_xml as esc;
use super::{FaultApplication, Outcome, ReportError, RunReport, SloReport, SloVerdict};
use crate::effect::{EffectCheck, EffectVerdict};
use crate::slo::reactions::ReactionKind;
use crate::slo::{SloStatus, Unit};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 230.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 34.0;

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{color:#5b6673;font-size:13px}
.badge{display:inline-block;padding:4px 12px;border-radius:12px;font-weight:700;color:#fff;text-transform:uppercase;font-size:13px;letter-spacing:.04em}
.pass{background:#1f9d55}.fail{background:#d64545}.aborted{background:#d9822b}.error,.invalid{background:#7c5cbf}.nodata{background:#7b8794}.inconclusive{background:#8e44ad}.skipped{background:#3b8ea5}
.verdict{background:#fff;border-radius:8px;padding:16px;margin:16px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef1f5;font-weight:600}
figure{background:#fff;margin:12px 0;padding:12px;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
figcaption{font-size:13px;margin-bottom:6px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;background:#f0f2f5;padding:1px 4px;border-radius:3px;word-break:break-all}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#5b6673}
.legend span{display:inline-block;margin-right:14px;font-size:12px;color:#5b6673}
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
"#;

/// The document up to `<main>`: head with `title`, the inline style, the body's start.
fn page_start(title: &str) -> Result<String, ReportError> {
    let mut h = String::new();
    writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
    )?;
    writeln!(
        h,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    writeln!(h, "<title>{}</title>", esc(title))?;
    writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>\n<main>")?;
    Ok(h)
}

/// Renders the report as one self-contained HTML document.
pub fn to_html(report: &RunReport) -> Result<String, ReportError> {
    let outcome = report.verdict.outcome;
    let mut h = page_start(&format!(
        "{} — {}",
        report.experiment.name,
        outcome.as_str().to_uppercase()
    ))?;
    writeln!(h, "<h1>{}</h1>", esc(&report.experiment.name))?;
    if let Some(d) = &report.experiment.description {
        writeln!(h, "<p class=\"meta\">{}</p>", esc(d))?;
    }
    writeln!(
        h,
        "<p class=\"meta\">mode {} · SLO backend {} · started {} · {:.1} s</p>",
        report.mode.as_str(),
        esc(&report.slo_backend),
        esc(&format_time(report.started_ms)),
        (report.ended_ms - report.started_ms) as f64 / 1000.0
    )?;
    writeln!(
        h,
        "<div class=\"verdict\"><span class=\"badge {cls}\" id=\"verdict\">{}</span> <span>{}</span></div>",
        outcome.as_str(),
        esc(&report.verdict.reason),
        cls = outcome_class(outcome)
    )?;

    // SLO table.
    writeln!(
        h,
        "<h2>SLOs</h2>\n<table>\n<tr><th>SLO</th><th>measures</th><th>threshold</th><th>worst</th><th>verdict</th></tr>"
    )?;
    for slo in &report.slos {
        writeln!(
            h,
            "<tr><td><a href=\"#slo-{id}\">{name}</a></td><td>{desc} <span class=\"meta\">({source}, window {w:.1}s)</span></td><td>{thr}</td><td>{worst}</td><td><span class=\"badge {cls}\">{v}</span></td></tr>",
            id = anchor(&slo.name),
            name = esc(&slo.name),
            desc = esc(&slo.description),
            source = esc(&slo.source),
            w = slo.window_ms as f64 / 1000.0,
            thr = esc(&slo.threshold.describe()),
            worst = slo
                .worst_value()
                .map_or("n/a".to_string(), |v| esc(&slo.threshold.unit.format(v))),
            cls = verdict_class(slo.verdict),
            v = slo.verdict.as_str()
        )?;
    }
    writeln!(h, "</table>")?;

    // Charts.
    writeln!(h, "<h2>SLIs over time</h2>")?;
    writeln!(
        h,
        "<div class=\"legend\"><span><i class=\"sw\" style=\"background:#2b6cb0\"></i>measured</span><span><i class=\"sw\" style=\"background:#d64545\"></i>threshold / violation</span><span><i class=\"sw\" style=\"background:rgba(245,166,35,.35)\"></i>fault active</span><span><i class=\"sw\" style=\"background:#9aa5b1\"></i>no data</span></div>"
    )?;
    for slo in &report.slos {
        writeln!(
            h,
            "<figure id=\"slo-{}\"><figcaption><b>{}</b> — {} <span class=\"badge {}\">{}</span><br><code>{}</code></figcaption>",
            anchor(&slo.name),
            esc(&slo.name),
            esc(&slo.description),
            verdict_class(slo.verdict),
            slo.verdict.as_str(),
            esc(&slo.query)
        )?;
        if let Some(t) = slo.worst_taint() {
            writeln!(
                h,
                "<p class=\"meta\">Not judged in {} of {} measurements: {}; raise <code>load.maxConnections</code>.</p>",
                slo.inconclusive().count(),
                slo.samples.len(),
                esc(&t.reason)
            )?;
        }
        h.push_str(&chart(report, slo));
        writeln!(h, "</figure>")?;
    }

    // The fleet's own reactions, on the same time axis.
    if !report.reactions.is_empty() {
        writeln!(h, "<h2>What the fleet did</h2>")?;
        writeln!(
            h,
            "<p class=\"meta\">The fleet's own resilience policies over the run, read from its metrics: why the SLOs held (or did not).</p>"
        )?;
        writeln!(
            h,
            "<div class=\"legend\"><span><i class=\"sw\" style=\"background:#c6f6d5\"></i>breaker closed</span><span><i class=\"sw\" style=\"background:#f6ad55\"></i>half-open</span><span><i class=\"sw\" style=\"background:#d64545\"></i>open</span><span><i class=\"sw\" style=\"background:#8e44ad\"></i>degradation level (0-3)</span><span><i class=\"sw\" style=\"background:#2b6cb0\"></i>retries/s, 429/s (scaled to peak)</span><span><i class=\"sw\" style=\"background:rgba(245,166,35,.35)\"></i>fault active</span></div>"
        )?;
        writeln!(h, "<figure id=\"reactions\">")?;
        h.push_str(&reactions_chart(report));
        writeln!(h, "<ul class=\"meta\">")?;
        for r in &report.reactions {
            writeln!(h, "<li>{}</li>", esc(&r.describe(report.started_ms)))?;
        }
        writeln!(h, "</ul></figure>")?;
    }

    // Steady state and recovery.
    if report.steady_state.is_some() || report.recovery.is_some() {
        writeln!(
            h,
            "<h2>Checks</h2>\n<table>\n<tr><th>check</th><th>result</th><th>detail</th></tr>"
        )?;
        if let Some(s) = &report.steady_state {
            let detail = s
                .slos
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            let badge = if !s.passed && s.reason.is_none() && !s.inconclusive.is_empty() {
                "<span class=\"badge inconclusive\">inconclusive</span>"
            } else {
                pass_badge(s.passed)
            };
            writeln!(
                h,
                "<tr><td>steady state ({:.1}s)</td><td>{}</td><td>{}{}</td></tr>",
                s.window_ms as f64 / 1000.0,
                badge,
                esc(&detail),
                s.reason
                    .as_deref()
                    .map(|r| format!(" — {}", esc(r)))
                    .unwrap_or_default()
            )?;
        }
        if let Some(r) = &report.recovery {
            let not_judged = r.not_judged();
            let detail = match (r.recovered_after_ms, &not_judged) {
                (Some(ms), _) => format!(
                    "every SLO held again {:.1}s after {} ended",
                    ms as f64 / 1000.0,
                    report.disturbance()
                ),
                (None, Some(why)) => format!("not judged: {why}"),
                (None, None) => format!("not recovered: {}", r.not_recovered.join(", ")),
            };
            let badge = if not_judged.is_some() {
                "<span class=\"badge inconclusive\">inconclusive</span>"
            } else {
                pass_badge(r.passed)
            };
            writeln!(
                h,
                "<tr><td>recovery (within {:.1}s)</td><td>{}</td><td>{}</td></tr>",
                r.within_ms as f64 / 1000.0,
                badge,
                esc(&detail)
            )?;
        }
        writeln!(h, "</table>")?;
    }
    if let Some(a) = &report.abort {
        writeln!(
            h,
            "<h2>Abort</h2><p>{} held from +{:.1}s; the run stopped at +{:.1}s.</p>",
            esc(&a.condition),
            (a.since_ms - report.started_ms) as f64 / 1000.0,
            (a.triggered_ms - report.started_ms) as f64 / 1000.0
        )?;
    }

    // Faults.
    writeln!(h, "<h2>Faults</h2>")?;
    if report.faults.is_empty() {
        writeln!(h, "<p class=\"meta\">No faults were applied.</p>")?;
    } else {
        writeln!(
            h,
            "<table>\n<tr><th>fault</th><th>target</th><th>kind</th><th>window</th><th>status</th><th>observed effect</th><th>bit as asked?</th></tr>"
        )?;
        for f in &report.faults {
            let (start, end) = f.window_relative(report.started_ms);
            let metrics = f
                .effect
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={v:.3}"))
                .collect::<Vec<_>>()
                .join(" ");
            writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}<br><code>{}</code></td><td>+{:.1}s – +{:.1}s</td><td>{}{}</td><td>{}<br><span class=\"meta\">{}</span></td><td>{}</td></tr>",
                esc(&f.name),
                esc(&f.target.name),
                esc(f.fault.name()),
                esc(&serde_json::to_string(&f.fault)?),
                start / 1000.0,
                end / 1000.0,
                esc(&format!("{:?}", f.status).to_lowercase()),
                f.error
                    .as_deref()
                    .map(|e| format!("<br>{}", esc(e)))
                    .unwrap_or_default(),
                esc(&f.effect.summary),
                esc(&metrics),
                effect_cell(f.effect_check.as_ref())
            )?;
        }
        writeln!(h, "</table>")?;
    }

    if let Some(load) = &report.load {
        writeln!(
            h,
            "<h2>Load</h2>\n<table>\n<tr><th>requests</th><th>errors</th><th>achieved rate</th><th>latency (ms)</th><th>load generator</th></tr>"
        )?;
        let lat = load
            .latency_ms
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(" · ");
        writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1}/s over {} s</td><td>{}</td><td>{}</td></tr>\n</table>",
            load.requests,
            load.errors,
            load.achieved_rate,
            load.seconds,
            esc(&lat),
            esc(&super::terminal::generator_line(load))
        )?;
        for surge in &load.surges {
            let verdict = if surge.delivered() {
                "delivered"
            } else {
                "not delivered"
            };
            writeln!(h, "<p>{verdict}: {}</p>", esc(&surge.describe()))?;
        }
    }

    if !report.phases.is_empty() {
        writeln!(
            h,
            "<h2>Phases</h2>\n<table>\n<tr><th>phase</th><th>from</th><th>to</th></tr>"
        )?;
        for p in &report.phases {
            writeln!(
                h,
                "<tr><td>{}</td><td>+{:.1}s</td><td>+{:.1}s</td></tr>",
                p.phase.as_str(),
                (p.started_ms - report.started_ms) as f64 / 1000.0,
                (p.ended_ms - report.started_ms) as f64 / 1000.0
            )?;
        }
        writeln!(h, "</table>")?;
    }
    writeln!(
        h,
        "<p class=\"meta\">Generated by Faultline · report schema v{}</p>",
        report.schema_version
    )?;
    writeln!(h, "</main>\n</body>\n</html>")?;
    Ok(h)
}

/// Renders the suite index as one self-contained HTML page: a row per experiment with
/// its outcome, worst SLO or reason, duration and links to its own reports.
pub fn to_index_html(index: &super::suite::SuiteIndex) -> Result<String, ReportError> {
    let mut h = page_start(&format!("Faultline suite — {}", index.totals.line()))?;
    writeln!(
        h,
        "<h1>Suite of {} experiments</h1>",
        index.experiments.len()
    )?;
    writeln!(
        h,
        "<p class=\"meta\">mode {} · started {} · {:.1} s</p>",
        index.mode.as_str(),
        esc(&format_time(index.started_ms)),
        (index.ended_ms - index.started_ms) as f64 / 1000.0
    )?;
    writeln!(
        h,
        "<div class=\"verdict\" id=\"totals\">{} · exit {}</div>",
        esc(&index.totals.line()),
        index.exit_code
    )?;
    writeln!(
        h,
        "<table>\n<tr><th>Experiment</th><th>Outcome</th><th>Worst SLO / reason</th><th>Duration</th><th>Reports</th></tr>"
    )?;
    for e in &index.experiments {
        let name = match &e.reports.html {
            Some(href) => format!("<a href=\"{}\">{}</a>", esc(href), esc(&e.name)),
            None => esc(&e.name),
        };
        let links: Vec<String> = [
            ("html", &e.reports.html),
            ("json", &e.reports.json),
            ("junit", &e.reports.junit),
        ]
        .into_iter()
        .filter_map(|(label, href)| {
            href.as_ref()
                .map(|href| format!("<a href=\"{}\">{label}</a>", esc(href)))
        })
        .collect();
        writeln!(
            h,
            "<tr><td>{name}</td><td><span class=\"badge {cls}\">{}</span></td><td>{}</td><td>{:.1} s</td><td>{}</td></tr>",
            e.outcome.as_str(),
            esc(e.detail()),
            e.duration_ms as f64 / 1000.0,
            links.join(" · "),
            cls = outcome_class(e.outcome)
        )?;
    }
    writeln!(h, "</table>\n</main>\n</body>\n</html>")?;
    Ok(h)
}

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Aborted => "aborted",
        Outcome::InvalidInput => "invalid",
        Outcome::Error => "error",
        Outcome::Inconclusive => "inconclusive",
        Outcome::Skipped => "skipped",
    }
}

/// The effect gate's judgement of one fault: a badge, then asked, measured and the rule.
fn effect_cell(check: Option<&EffectCheck>) -> String {
    let Some(c) = check else {
        return "<span class=\"meta\">not judged (never applied)</span>".into();
    };
    let cls = match c.verdict {
        EffectVerdict::Held => "pass",
        _ if !c.required => "nodata",
        _ => "inconclusive",
    };
    format!(
        "<span class=\"badge {cls}\">{}</span>{}<br>asked {}<br>measured {}<br><span class=\"meta\">rule: {}</span>",
        esc(c.verdict.as_str()),
        if c.required {
            ""
        } else {
            " <span class=\"meta\">(not required)</span>"
        },
        esc(&c.asked),
        esc(&c.measured),
        esc(&c.rule)
    )
}

fn verdict_class(v: SloVerdict) -> &'static str {
    match v {
        SloVerdict::Pass => "pass",
        SloVerdict::Fail => "fail",
        SloVerdict::NoData => "nodata",
        SloVerdict::Inconclusive => "inconclusive",
        SloVerdict::NotMeasured => "skipped",
    }
}

fn pass_badge(passed: bool) -> &'static str {
    if passed {
        "<span class=\"badge pass\">pass</span>"
    } else {
        "<span class=\"badge fail\">fail</span>"
    }
}

/// A "nice" step (1, 2 or 5 × 10ⁿ) giving about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn fault_windows(report: &RunReport) -> Vec<(&FaultApplication, f64, f64)> {
    report
        .faults
        .iter()
        // Only faults that were actually in place are shaded; a failed or skipped
        // fault changed nothing, and shading it would suggest otherwise.
        .filter(|f| {
            matches!(
                f.status,
                super::FaultStatus::Reverted | super::FaultStatus::Expired
            )
        })
        .map(|f| {
            let (s, e) = f.window_relative(report.started_ms);
            (f, s / 1000.0, e / 1000.0)
        })
        .collect()
}

/// One SVG chart of an SLI over the run.
fn chart(report: &RunReport, slo: &SloReport) -> String {
    let unit = slo.threshold.unit;
    let run_secs = run_secs(report);
    let points: Vec<(f64, Option<f64>, SloStatus)> = slo
        .samples
        .iter()
        .map(|e| {
            (
                (e.at_ms - report.started_ms) as f64 / 1000.0,
                e.value.filter(|v| v.is_finite()),
                e.status,
            )
        })
        .collect();
    let mut y_max = points.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
    for bound in [slo.threshold.max, slo.threshold.min].into_iter().flatten() {
        y_max = y_max.max(bound);
    }
    if y_max <= 0.0 {
        y_max = match unit {
            Unit::Ratio => 0.01,
            _ => 1.0,
        };
    }
    let y_step = nice_step(y_max * 1.1, 4.0);
    let y_top = (y_max * 1.1 / y_step).ceil() * y_step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + (t.clamp(0.0, run_secs) / run_secs) * plot_w;
    let y = |v: f64| TOP + plot_h - (v.clamp(0.0, y_top) / y_top) * plot_h;

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"sli-chart\" data-slo=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{} over time\">",
        esc(&slo.name),
        esc(&slo.name)
    );
    let _ = write!(s, "<title>{} over time</title>", esc(&slo.name));
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fbfcfd\" stroke=\"#d5dae1\"/>"
    );
    shade_fault_windows(&mut s, report, &x, plot_h);
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= y_top + y_step / 2.0 {
        let yy = y(v);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e6e9ee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            esc(&unit.format(v))
        );
        v += y_step;
    }
    x_ticks(&mut s, run_secs, &x, TOP + plot_h);
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since run start</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0
    );
    // Thresholds.
    for (label, bound) in [("max", slo.threshold.max), ("min", slo.threshold.min)] {
        if let Some(b) = bound {
            let yy = y(b);
            let _ = write!(
                s,
                "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#d64545\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#d64545\">{label} {}</text>",
                LEFT + plot_w,
                LEFT + plot_w - 4.0,
                yy - 4.0,
                esc(&unit.format(b))
            );
        }
    }
    // The series: one polyline per run of consecutive measured points.
    let mut segment: Vec<String> = Vec::new();
    let flush = |segment: &mut Vec<String>, s: &mut String| {
        if segment.len() > 1 {
            let _ = write!(
                s,
                "<polyline class=\"sli\" fill=\"none\" stroke=\"#2b6cb0\" stroke-width=\"2\" points=\"{}\"/>",
                segment.join(" ")
            );
        }
        segment.clear();
    };
    for (t, value, _) in &points {
        match value {
            Some(v) => segment.push(format!("{:.1},{:.1}", x(*t), y(*v))),
            None => flush(&mut segment, &mut s),
        }
    }
    flush(&mut segment, &mut s);
    for (t, value, status) in &points {
        match (value, status) {
            (Some(v), SloStatus::Violated) => {
                let _ = write!(
                    s,
                    "<circle class=\"violation\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#d64545\"><title>+{t:.1}s {}</title></circle>",
                    x(*t),
                    y(*v),
                    esc(&unit.format(*v))
                );
            }
            (Some(v), SloStatus::Inconclusive) => {
                let _ = write!(
                    s,
                    "<circle class=\"inconclusive\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#8e44ad\"><title>+{t:.1}s {} not judged (generator delay)</title></circle>",
                    x(*t),
                    y(*v),
                    esc(&unit.format(*v))
                );
            }
            (Some(v), _) if points.len() == 1 => {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2b6cb0\"/>",
                    x(*t),
                    y(*v)
                );
            }
            (None, _) => {
                let _ = write!(
                    s,
                    "<rect class=\"nodata\" x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"8\" fill=\"#9aa5b1\"><title>+{t:.1}s no data</title></rect>",
                    x(*t) - 1.5,
                    TOP + plot_h - 8.0
                );
            }
            _ => {}
        }
    }
    s.push_str("</svg>\n");
    s
}

/// How many seconds the charts' x axis spans: the run, at least its planned duration.
fn run_secs(report: &RunReport) -> f64 {
    ((report.ended_ms - report.started_ms) as f64 / 1000.0)
        .max(report.experiment.duration_ms as f64 / 1000.0)
        .max(1.0)
}

/// Shades the windows of applied faults over a plot `plot_h` high starting at `TOP`,
/// with one label per start time: faults that start together share a label ("a, b,
/// c"), and labels of successive start times alternate rows.
fn shade_fault_windows(s: &mut String, report: &RunReport, x: &dyn Fn(f64) -> f64, plot_h: f64) {
    let windows = fault_windows(report);
    let mut labels: Vec<(f64, Vec<&str>)> = Vec::new();
    for (fault, start, end) in &windows {
        let x0 = x(*start);
        let w = (x(*end) - x0).max(1.0);
        let _ = write!(
            s,
            "<rect class=\"fault-window\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{plot_h}\" fill=\"#f5a623\" fill-opacity=\"0.22\"><title>{} on {}: +{start:.1}s – +{end:.1}s</title></rect>",
            esc(&fault.name),
            esc(&fault.target.name)
        );
        match labels.iter_mut().find(|(lx, _)| (*lx - x0).abs() < 1.0) {
            Some((_, names)) => names.push(&fault.name),
            None => labels.push((x0, vec![&fault.name])),
        }
    }
    for (i, (x0, names)) in labels.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#b7791f\">{}</text>",
            x0 + 3.0,
            TOP - 4.0 - 12.0 * (i % 2) as f64,
            esc(&names.join(", "))
        );
    }
}

/// Seconds along the x axis, below `bottom`.
fn x_ticks(s: &mut String, run_secs: f64, x: &dyn Fn(f64) -> f64, bottom: f64) {
    let x_step = nice_step(run_secs, 8.0);
    let mut t = 0.0;
    while t <= run_secs + 1e-9 {
        let xx = x(t);
        let _ = write!(
            s,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{bottom:.1}\" y2=\"{:.1}\" stroke=\"#9aa5b1\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}s</text>",
            bottom + 4.0,
            bottom + 16.0
        );
        t += x_step;
    }
}

/// Height of one lane of the reactions chart: its label row and its band.
const LANE: f64 = 34.0;

/// The fleet's reactions on the SLI charts' time axis: one lane per series under the
/// same fault shading. Breakers are coloured bands (green closed, amber half-open, red
/// open); degradation is a purple band whose depth is the level; retries and 429s are
/// bars scaled to their peak.
fn reactions_chart(report: &RunReport) -> String {
    let run_secs = run_secs(report);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = LANE * report.reactions.len() as f64;
    let height = TOP + plot_h + BOTTOM;
    let x = |t: f64| LEFT + (t.clamp(0.0, run_secs) / run_secs) * plot_w;
    let rel = |ms: i64| (ms - report.started_ms) as f64 / 1000.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"reactions-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"the fleet's reactions over time\"><title>the fleet's reactions over time</title>"
    );
    let _ = write!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fbfcfd\" stroke=\"#d5dae1\"/>"
    );
    // Shading first: the lanes' bands are drawn over it, so their colours stay true and
    // the windows show in the label rows and wherever a lane is quiet.
    shade_fault_windows(&mut s, report, &x, plot_h);
    for (i, r) in report.reactions.iter().enumerate() {
        let top = TOP + LANE * i as f64;
        let (band_top, band_h) = (top + 14.0, LANE - 18.0);
        let peak = r.peak().max(f64::MIN_POSITIVE);
        let _ = write!(
            s,
            "<g class=\"reaction\" data-kind=\"{}\"><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1d232a\">{}</text>",
            esc(&format!("{:?}", r.kind).to_lowercase()),
            LEFT + 4.0,
            top + 11.0,
            esc(&r.label())
        );
        for (j, &(t, v)) in r.points.iter().enumerate() {
            let start = rel(t);
            let end = r.points.get(j + 1).map_or(start + 1.0, |p| rel(p.0));
            let (x0, w) = (x(start), (x(end) - x(start)).max(0.5));
            let (fill, h, what) = match r.kind {
                ReactionKind::Breaker => match v as i64 {
                    0 => ("#c6f6d5", band_h, "closed".to_string()),
                    1 => ("#f6ad55", band_h, "half-open".to_string()),
                    _ => ("#d64545", band_h, "open".to_string()),
                },
                ReactionKind::Degradation if v > 0.0 => (
                    "#8e44ad",
                    band_h * (v / 3.0).min(1.0),
                    format!("level {v:.0}"),
                ),
                ReactionKind::Retries | ReactionKind::RateLimited if v > 0.0 => {
                    ("#2b6cb0", band_h * v / peak, format!("{v:.1}/s"))
                }
                _ => continue,
            };
            let _ = write!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{fill}\"><title>{} +{start:.1}s: {what}</title></rect>",
                band_top + band_h - h,
                esc(&r.label())
            );
        }
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e6e9ee\"/></g>",
            LEFT + plot_w,
            top + LANE,
            top + LANE
        );
    }
    x_ticks(&mut s, run_secs, &x, TOP + plot_h);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(60.0, 8.0), 10.0);
        assert!((nice_step(0.011, 4.0) - 0.005).abs() < 1e-12);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
    }
}
