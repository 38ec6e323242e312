//! An [`ExperimentRunner`] that re-executes `chaos run` as a child process.
//!
//! It depends only on the documented command-line contract of `chaos run` (DESIGN.md
//! §4): `chaos run FILE --junit OUT.xml`, exit code 0 pass, 1 an SLO was violated or
//! the run aborted, 2 invalid input, 3 infrastructure failure; SIGTERM reverts every
//! fault and ends the run as aborted. The failing SLOs are the JUnit testcases with a
//! `<failure>`. A child process also isolates the controller from a crashing run.
//!
//! Targets resolved by the caller (the operator's pods with their agents) are written
//! to `targets.json` beside the experiment file and named by the environment variable
//! [`TARGETS_ENV`]; `chaos run` must use them instead of resolving targets itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_spec::Experiment;
use tokio_util::sync::CancellationToken;

use super::runner::{ExperimentRunner, RunContext, RunOutcome, Verdict};

/// Names the JSON file (a list of `PlacedTarget`) holding the targets resolved by the
/// caller, when there are any.
pub const TARGETS_ENV: &str = "FAULTLINE_TARGETS_FILE";

/// Experiment name -> its document as written (one YAML document). Filled by
/// [`super::DirSource`]; read by [`ProcessRunner`].
pub type SourceDocs = Arc<Mutex<HashMap<String, String>>>;

/// Runs each experiment as `<program> run <file> --junit <file> --strict`. `--strict`
/// makes an experiment this mode cannot run exit 2 (an error verdict) instead of 0, so
/// a skip is never recorded as a pass.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    /// The `chaos` binary (normally `std::env::current_exe()`).
    pub program: PathBuf,
    /// Documents by experiment name, used when the context has no `source`.
    pub docs: SourceDocs,
    /// Each run gets `<work_dir>/<experiment>/<unix ms>/` for its file and reports.
    pub work_dir: PathBuf,
    /// How long a cancelled run may take to revert after SIGTERM before it is killed.
    pub grace: Duration,
    /// Passed on as `chaos run --prometheus URL`.
    pub prometheus: Option<String>,
}

fn outcome(
    verdict: Verdict,
    failing_slos: Vec<String>,
    report_path: Option<PathBuf>,
    message: Option<String>,
) -> RunOutcome {
    RunOutcome {
        verdict,
        failing_slos,
        report_path,
        report: message.map(|m| serde_json::json!({ "error": m })),
    }
}

/// The names of the testcases that carry a `<failure>` or `<error>` element.
pub fn failing_testcases(junit: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(junit);
    let mut current: Option<String> = None;
    let mut failing = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.name().as_ref() {
                b"testcase" => {
                    current = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == b"name")
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                }
                b"failure" | b"error" => {
                    if let Some(name) = current.take() {
                        failing.push(name);
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.name().as_ref() == b"testcase" => current = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    failing
}

impl ExperimentRunner for ProcessRunner {
    async fn run(
        &self,
        experiment: Experiment,
        context: RunContext,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let source = context.source.clone().or_else(|| {
            let docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
            docs.get(&experiment.name).cloned()
        });
        let Some(source) = source else {
            let msg = format!("no source document for experiment {}", experiment.name);
            return outcome(Verdict::Error, vec![], None, Some(msg));
        };
        let dir = context.run_dir(&self.work_dir, &experiment.name);
        let file = dir.join("experiment.yaml");
        let junit = dir.join("junit.xml");
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            return outcome(
                Verdict::Error,
                vec![],
                None,
                Some(format!("{}: {e}", dir.display())),
            );
        }
        if let Err(e) = tokio::fs::write(&file, source).await {
            return outcome(
                Verdict::Error,
                vec![],
                None,
                Some(format!("{}: {e}", file.display())),
            );
        }
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("run")
            .arg(&file)
            .arg("--junit")
            .arg(&junit)
            .arg("--strict")
            .kill_on_drop(true);
        if let Some(url) = &self.prometheus {
            command.arg("--prometheus").arg(url);
        }
        if !context.targets.is_empty() {
            let targets = dir.join("targets.json");
            let body = serde_json::to_vec_pretty(&context.targets).unwrap_or_default();
            if let Err(e) = tokio::fs::write(&targets, body).await {
                return outcome(
                    Verdict::Error,
                    vec![],
                    None,
                    Some(format!("{}: {e}", targets.display())),
                );
            }
            command.env(TARGETS_ENV, &targets);
        }
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot start {}: {e}", self.program.display());
                return outcome(Verdict::Error, vec![], None, Some(msg));
            }
        };
        let status = tokio::select! {
            status = child.wait() => status,
            _ = cancel.cancelled() => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    // SIGTERM makes `chaos run` revert its faults and write an aborted report.
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                }
                match tokio::time::timeout(self.grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let _ = child.kill().await;
                        child.wait().await
                    }
                }
            }
        };
        let failing = tokio::fs::read_to_string(&junit)
            .await
            .map(|x| failing_testcases(&x))
            .unwrap_or_default();
        let report = junit.exists().then_some(junit);
        match status.map(|s| s.code()) {
            Ok(Some(0)) => outcome(Verdict::Pass, failing, report, None),
            Ok(Some(1)) if cancel.is_cancelled() => {
                outcome(Verdict::Aborted, failing, report, None)
            }
            Ok(Some(1)) => outcome(Verdict::Fail, failing, report, None),
            Ok(Some(4)) if !cancel.is_cancelled() => {
                outcome(Verdict::Inconclusive, failing, report, None)
            }
            Ok(code) => {
                let msg = format!("chaos run exited with {code:?}");
                let verdict = if cancel.is_cancelled() {
                    Verdict::Aborted
                } else {
                    Verdict::Error
                };
                outcome(verdict, failing, report, Some(msg))
            }
            Err(e) => outcome(Verdict::Error, failing, report, Some(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let path = dir.join("fake-chaos");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn exp() -> Experiment {
        use faultline_spec::{ExperimentSpec, units::Duration as D};
        Experiment {
            name: "nightly".into(),
            namespace: None,
            labels: Default::default(),
            spec: ExperimentSpec {
                description: None,
                duration: D(Duration::from_secs(60)),
                schedule: None,
                load: None,
                steady_state: None,
                faults: vec![],
                slos: vec![],
                abort: vec![],
                recovery: None,
                replicas: Default::default(),
            },
        }
    }

    const JUNIT: &str = r#"<testsuites><testsuite name="nightly"><testcase name="gateway-errors"/><testcase name="gateway-p99"><failure message="p99 1.2s > 800ms"/></testcase><testcase name="fault payments-cpu"></testcase></testsuite></testsuites>"#;

    #[test]
    fn junit_failures_name_the_failing_slos() {
        assert_eq!(failing_testcases(JUNIT), ["gateway-p99"]);
        assert!(failing_testcases("<not xml").is_empty());
    }

    #[tokio::test]
    async fn exit_code_one_with_junit_failure_is_a_fail_verdict_naming_the_slo() {
        let dir = tempfile::tempdir().unwrap();
        // $2 is the experiment file, $4 the JUnit path.
        let program = script(
            dir.path(),
            &format!(
                "test -s \"$2\" || exit 2\n\
                 grep -q payments-0 \"$FAULTLINE_TARGETS_FILE\" || exit 3\n\
                 cat > \"$4\" <<'X'\n{JUNIT}\nX\nexit 1"
            ),
        );
        let runner = ProcessRunner {
            program,
            docs: Default::default(),
            work_dir: dir.path().join("runs"),
            grace: Duration::from_secs(5),
            prometheus: None,
        };
        // Targets resolved by the caller reach the child through FAULTLINE_TARGETS_FILE.
        let target = crate::schedule::PlacedTarget {
            fault: "cpu".into(),
            target: faultline_spec::wire::ResolvedTarget {
                name: "payments-0".into(),
                ..Default::default()
            },
            agent: "http://10.0.0.1:7070".into(),
        };
        let ctx = RunContext {
            source: Some("kind: Experiment\n".into()),
            targets: vec![target],
            ..RunContext::default()
        };
        let out = runner.run(exp(), ctx, CancellationToken::new()).await;
        assert_eq!(out.verdict, Verdict::Fail, "{out:?}");
        assert_eq!(out.failing_slos, ["gateway-p99"]);
        assert!(out.report_path.unwrap().ends_with("junit.xml"));
    }

    #[tokio::test]
    async fn cancel_sends_sigterm_and_the_run_ends_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("reverted");
        let program = script(
            dir.path(),
            &format!(
                "trap 'touch {}; exit 1' TERM\nwhile true; do sleep 0.05; done",
                marker.display()
            ),
        );
        let docs: SourceDocs = Default::default();
        docs.lock()
            .unwrap()
            .insert("nightly".into(), "kind: Experiment\n".into());
        let runner = ProcessRunner {
            program,
            docs,
            work_dir: dir.path().join("runs"),
            grace: Duration::from_secs(10),
            prometheus: None,
        };
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c2.cancel();
        });
        let out = runner.run(exp(), RunContext::default(), cancel).await;
        assert_eq!(out.verdict, Verdict::Aborted, "{out:?}");
        assert!(marker.exists(), "the child got SIGTERM and ran its revert");
    }

    #[tokio::test]
    async fn missing_program_is_an_error_verdict_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let runner = ProcessRunner {
            program: dir.path().join("nope"),
            docs: Default::default(),
            work_dir: dir.path().into(),
            grace: Duration::from_secs(1),
            prometheus: None,
        };
        let ctx = RunContext {
            source: Some("x".into()),
            ..RunContext::default()
        };
        let out = runner.run(exp(), ctx, CancellationToken::new()).await;
        assert_eq!(out.verdict, Verdict::Error);
        let out = runner
            .run(exp(), RunContext::default(), CancellationToken::new())
            .await;
        assert_eq!(out.verdict, Verdict::Error, "no source document");
    }
}
