//! Running the planned experiments in order, and where their reports go.
//!
//! Output layout (docs/running.md, "Suites"):
//! - one experiment: as before, `--json/--junit/--html FILE` or
//!   `faultline-reports/<experiment>-<stamp>/{report.json,junit.xml,report.html,fleet-logs/}`;
//! - several, no report flags: `faultline-reports/<stamp>/` holding `index.json`,
//!   `index.html`, one combined `junit.xml`, and `<experiment>/{report.json,junit.xml,
//!   report.html,fleet-logs/}` per experiment;
//! - several, with flags: `--junit F` is the combined document, `--json F` and
//!   `--html F` are the suite index, each experiment's report goes beside it as
//!   `<stem>-<experiment>.<ext>`, fleet logs under `fleet-logs/<experiment>/` there.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use faultline_controller::report::suite::{ReportLinks, SuiteIndex, SuiteRun};
use faultline_controller::report::terminal::{color_enabled, suite_table, summary};
use faultline_controller::report::{Outcome, RunReport, exit_code, html, json, junit, suite};
use faultline_controller::run::{self as runner, Interrupt};

use super::plan::Planned;
use super::{Invocation, RunArgs, run_one};

/// Where one experiment's reports and fleet logs go.
#[derive(Debug, Default)]
struct Outputs {
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
    logs: Option<PathBuf>,
}

/// Where everything goes: per experiment, and the suite's own files (only with
/// several experiments).
#[derive(Debug, Default)]
struct Layout {
    experiments: Vec<Outputs>,
    index_json: Option<PathBuf>,
    index_html: Option<PathBuf>,
    junit: Option<PathBuf>,
}

/// A new directory `faultline-reports/<name>-<stamp>` (`<stamp>` alone for an empty name).
fn claim_report_dir(name: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = if name.is_empty() {
        stamp.to_string()
    } else {
        format!("{name}-{stamp}")
    };
    claim_dir(Path::new("faultline-reports"), &base)
}

/// `root/base`, claimed by creating it, so two runs started in the same second never
/// share a directory: the second gets `base-2`, and so on.
fn claim_dir(root: &Path, base: &str) -> PathBuf {
    let _ = std::fs::create_dir_all(root);
    for n in 1..1000 {
        let dir = root.join(if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        });
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // Created, or unusable: writing the reports then says what is wrong with it.
            _ => return dir,
        }
    }
    root.join(base)
}

/// The directory of the first report flag; fleet logs go there.
fn flag_dir(args: &RunArgs) -> Option<PathBuf> {
    [&args.json, &args.junit, &args.html]
        .into_iter()
        .flatten()
        .next()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// `dir/report.json` becomes `dir/report-<experiment>.json`.
fn beside(file: &Path, experiment: &str) -> PathBuf {
    let stem = file.file_stem().map_or_else(
        || "report".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let name = match file.extension() {
        Some(ext) => format!("{stem}-{experiment}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{experiment}"),
    };
    file.with_file_name(name)
}

impl Layout {
    fn new(args: &RunArgs, names: &[&str]) -> Layout {
        let flags = args.json.is_some() || args.junit.is_some() || args.html.is_some();
        let in_dir = |dir: PathBuf| Outputs {
            json: Some(dir.join("report.json")),
            junit: Some(dir.join("junit.xml")),
            html: Some(dir.join("report.html")),
            logs: Some(dir.join("fleet-logs")),
        };
        match (names, flags) {
            ([name], false) => Layout {
                experiments: vec![in_dir(claim_report_dir(name))],
                ..Layout::default()
            },
            ([_], true) => Layout {
                experiments: vec![Outputs {
                    json: args.json.clone(),
                    junit: args.junit.clone(),
                    html: args.html.clone(),
                    logs: flag_dir(args)
                        .filter(|d| !d.as_os_str().is_empty())
                        .map(|d| d.join("fleet-logs")),
                }],
                ..Layout::default()
            },
            (_, false) => {
                let root = claim_report_dir("");
                Layout {
                    experiments: names.iter().map(|n| in_dir(root.join(n))).collect(),
                    index_json: Some(root.join("index.json")),
                    index_html: Some(root.join("index.html")),
                    junit: Some(root.join("junit.xml")),
                }
            }
            (_, true) => {
                let logs = flag_dir(args).unwrap_or_default().join("fleet-logs");
                Layout {
                    experiments: names
                        .iter()
                        .map(|n| Outputs {
                            json: args.json.as_deref().map(|f| beside(f, n)),
                            junit: None,
                            html: args.html.as_deref().map(|f| beside(f, n)),
                            logs: Some(logs.join(n)),
                        })
                        .collect(),
                    index_json: args.json.clone(),
                    index_html: args.html.clone(),
                    junit: args.junit.clone(),
                }
            }
        }
    }

    fn is_suite(&self) -> bool {
        self.experiments.len() > 1
    }
}

/// Runs the planned experiments in order, writes every report, prints the summaries
/// and returns the exit code.
pub(super) async fn run(cx: &Invocation<'_>, planned: Vec<Planned>) -> anyhow::Result<u8> {
    let names: Vec<&str> = planned
        .iter()
        .map(|p| p.loaded.experiment.name.as_str())
        .collect();
    let layout = Layout::new(cx.args, &names);
    let color = color_enabled() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let interrupt = Interrupt::new();
    let signals = spawn_signal_handler(interrupt.clone());
    let result = run_all(cx, &planned, &layout, color, &interrupt).await;
    signals.abort();
    let runs = result?;
    let code = suite::suite_exit_code(&runs, cx.args.strict);
    if layout.is_suite() {
        write_suite(cx, &layout, &runs)?;
        println!();
        println!(
            "{}",
            suite_table(&SuiteIndex::new(cx.mode, &runs, cx.args.strict), color)
        );
        for p in [&layout.index_json, &layout.index_html, &layout.junit]
            .into_iter()
            .flatten()
        {
            println!("report: {}", p.display());
        }
    } else {
        let out = &layout.experiments[0];
        for p in [&out.json, &out.junit, &out.html].into_iter().flatten() {
            println!("report: {}", p.display());
        }
    }
    Ok(code)
}

async fn run_all(
    cx: &Invocation<'_>,
    planned: &[Planned],
    layout: &Layout,
    color: bool,
    interrupt: &Interrupt,
) -> anyhow::Result<Vec<SuiteRun>> {
    let total = planned.len();
    let mut runs = Vec::with_capacity(total);
    let mut stopped: Option<String> = None;
    for (i, (p, out)) in planned.iter().zip(&layout.experiments).enumerate() {
        let (experiment, file) = (&p.loaded.experiment, p.loaded.file.as_str());
        let skip = |reason: &str| runner::skipped_report(experiment, Some(file), cx.mode, reason);
        let (report, not_run) = match (&stopped, &p.skip) {
            (Some(reason), _) => (skip(reason), true),
            (None, Some(reason)) => (skip(reason), false),
            (None, None) => {
                if total > 1 {
                    println!("[{}/{total}] {} ({file})", i + 1, experiment.name);
                }
                let mut report = run_one(cx, &p.loaded, out.logs.clone(), interrupt).await;
                let mut earlier = Vec::new();
                while report.verdict.outcome == Outcome::Inconclusive
                    && earlier.len() < cx.args.rerun_inconclusive as usize
                    && !interrupt.is_triggered()
                {
                    println!(
                        "{} inconclusive ({}); running it again, attempt {} of {}",
                        experiment.name,
                        report.verdict.reason,
                        earlier.len() + 2,
                        cx.args.rerun_inconclusive + 1
                    );
                    earlier.push(report.verdict);
                    // Each attempt's fleet logs apart: `attempt-2/` and on, beside the first's.
                    let logs = out
                        .logs
                        .as_ref()
                        .map(|d| d.join(format!("attempt-{}", earlier.len() + 1)));
                    report = run_one(cx, &p.loaded, logs, interrupt).await;
                }
                report.reruns = earlier;
                (report, false)
            }
        };
        write_reports(&report, out)?;
        if total == 1 || (p.skip.is_none() && !not_run) {
            println!("{}", summary(&report, color));
        } else {
            println!(
                "[{}/{total}] {} skipped: {}",
                i + 1,
                experiment.name,
                report.verdict.reason
            );
        }
        if stopped.is_none() {
            if interrupt.is_triggered() {
                stopped = Some("not run: the suite was interrupted".into());
            } else if cx.args.fail_fast && exit_code(report.verdict.outcome) != 0 {
                stopped = Some(format!(
                    "not run: --fail-fast after {} failed",
                    experiment.name
                ));
            }
        }
        runs.push(SuiteRun {
            report,
            not_run,
            links: ReportLinks::default(),
        });
    }
    Ok(runs)
}

/// The paths of `out`'s reports relative to `base` (the directory of the index that
/// links them).
fn links(out: &Outputs, base: &Path) -> ReportLinks {
    let rel = |p: &Option<PathBuf>| {
        p.as_ref().map(|p| {
            p.strip_prefix(base)
                .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
        })
    };
    ReportLinks {
        json: rel(&out.json),
        junit: rel(&out.junit),
        html: rel(&out.html),
    }
}

fn write_suite(cx: &Invocation<'_>, layout: &Layout, runs: &[SuiteRun]) -> anyhow::Result<()> {
    let index_at = |index: &Path| {
        let base = index.parent().unwrap_or(Path::new(""));
        let linked: Vec<SuiteRun> = runs
            .iter()
            .zip(&layout.experiments)
            .map(|(run, out)| SuiteRun {
                links: links(out, base),
                ..run.clone()
            })
            .collect();
        SuiteIndex::new(cx.mode, &linked, cx.args.strict)
    };
    if let Some(p) = &layout.index_json {
        write(p, suite::to_json(&index_at(p))?)?;
    }
    if let Some(p) = &layout.index_html {
        write(p, html::to_index_html(&index_at(p))?)?;
    }
    if let Some(p) = &layout.junit {
        let reports: Vec<RunReport> = runs.iter().map(|r| r.report.clone()).collect();
        write(p, junit::to_junit_suite(&reports)?)?;
    }
    Ok(())
}

fn write(path: &Path, text: String) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_reports(report: &RunReport, out: &Outputs) -> anyhow::Result<()> {
    if let Some(p) = &out.json {
        write(p, json::to_json(report)?)?;
    }
    if let Some(p) = &out.junit {
        write(p, junit::to_junit(report)?)?;
    }
    if let Some(p) = &out.html {
        write(p, html::to_html(report)?)?;
    }
    Ok(())
}

/// SIGINT and SIGTERM trigger the interrupt: the runner reverts every fault of the
/// current experiment, stops the load and the fleet, and writes a report marked
/// aborted; the experiments after it are reported as not run.
fn spawn_signal_handler(interrupt: Interrupt) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => interrupt.trigger("interrupted (SIGINT)"),
                _ = term.recv() => interrupt.trigger("interrupted (SIGTERM)"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_experiment_reports_go_beside_the_index_named_after_the_experiment() {
        assert_eq!(
            beside(Path::new("out/report.json"), "quickstart"),
            PathBuf::from("out/report-quickstart.json")
        );
        assert_eq!(beside(Path::new("index"), "a"), PathBuf::from("index-a"));
    }

    #[test]
    fn runs_started_in_the_same_second_get_their_own_report_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("faultline-reports");
        let dirs: Vec<PathBuf> = (0..3)
            .map(|_| claim_dir(&root, "20261205T012345Z"))
            .collect();
        assert_eq!(
            dirs,
            [
                root.join("20261205T012345Z"),
                root.join("20261205T012345Z-2"),
                root.join("20261205T012345Z-3"),
            ]
        );
        assert!(dirs.iter().all(|d| d.is_dir()));
    }
}
