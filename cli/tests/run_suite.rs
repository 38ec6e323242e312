//! `chaos run` over several experiments (issue 14, suites): multi-document files,
//! directories, skips the mode cannot run, `--strict`, `--fail-fast`, up-front
//! validation, unique names, the combined JUnit document and the suite index.
//!
//! Real runs here are a few seconds long (experiments written to a temp dir); the rest
//! use `--dry-run`, which still starts a fresh local environment per experiment. The
//! tests hold one lock so fleets never start side by side on a small machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn chaos(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chaos"));
    c.arg("run")
        .arg("--no-progress")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("FL_RESILIENCE")
        .env_remove("FAULTLINE_TARGETS_FILE");
    c
}

fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

/// A 4-second experiment on the local fleet: light load on the gateway and a
/// client-side SLO that holds (`max: 50%`) or one that cannot (`min: 100000/s`).
fn short(name: &str, holds: bool) -> String {
    let slo = if holds {
        "errorRate: {service: gateway, max: 50%}"
    } else {
        "throughput: {service: gateway, min: 100000/s}"
    };
    format!(
        "apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  duration: 4s
  load:
    target: gateway
    rate: 20/s
    requests:
      - {{method: GET, path: /api/orders/1}}
  faults:
    - name: stop-notifications
      target: {{service: notifications}}
      after: 1s
      duration: 1s
      process: {{signal: SIGSTOP}}
  slos:
    - name: client-slo
      source: client
      {slo}
"
    )
}

/// An experiment local mode cannot run: a container fault.
fn containers(name: &str) -> String {
    format!(
        "apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {{name: {name}}}
spec:
  duration: 10s
  faults:
    - name: pause-payments
      target: {{container: faultline-payments-1}}
      after: 1s
      duration: 5s
      container: {{action: pause}}
  slos:
    - name: gateway-errors
      errorRate: {{service: gateway, max: 1%}}
"
    )
}

fn write(dir: &Path, file: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn show(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The single `faultline-reports/<stamp>/` directory a suite wrote under `dir`.
fn suite_dir(dir: &Path) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("faultline-reports"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(dirs.len() == 1, "{dirs:?}");
    Ok(dirs.remove(0))
}

fn entries(index: &Value) -> Vec<(String, String)> {
    index["experiments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or_default().to_string(),
                        e["outcome"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_multi_document_file_runs_every_document_in_order_each_in_a_fresh_fleet() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let file = write(
        dir.path(),
        "two.yaml",
        &format!("{}---\n{}", short("first", true), short("second", true)),
    )?;
    let output = chaos(dir.path()).arg(&file).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout.find("[1/2] first").context("first ran")?;
    let second = stdout.find("[2/2] second").context("second ran")?;
    assert!(first < second, "{stdout}");
    assert!(
        stdout.contains("2 passed, 0 failed, 0 inconclusive, 0 skipped, 0 errors (exit 0)"),
        "{stdout}"
    );

    let root = suite_dir(dir.path())?;
    for name in ["first", "second"] {
        let report = read_json(&root.join(name).join("report.json"))?;
        assert_eq!(report["verdict"]["outcome"], "pass", "{report}");
        // Each experiment injected into its own fleet: the fault resolved to a PID.
        assert_eq!(report["faults"][0]["status"], "reverted", "{report}");
        assert!(root.join(name).join("fleet-logs").is_dir());
    }
    Ok(())
}

#[test]
fn process_signals_yaml_dry_runs_its_three_documents() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let output = chaos(dir.path())
        .arg(experiments_dir().join("process-signals.yaml"))
        .arg("--dry-run")
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let index = read_json(&suite_dir(dir.path())?.join("index.json"))?;
    assert_eq!(
        entries(&index),
        [
            ("notifications-sigkill".to_string(), "pass".to_string()),
            ("inventory-sigterm".to_string(), "pass".to_string()),
            ("payments-sigstop".to_string(), "pass".to_string()),
        ]
    );
    Ok(())
}

#[test]
fn a_directory_reports_container_experiments_as_skipped_with_the_reason_and_exits_0() -> Result<()>
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let exps = dir.path().join("exps");
    std::fs::create_dir(&exps)?;
    write(&exps, "a-local.yaml", &short("local-one", true))?;
    write(&exps, "b-containers.yaml", &containers("compose-only"))?;
    let output = chaos(dir.path()).arg(&exps).arg("--dry-run").output()?;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("compose-only skipped: needs --env compose"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 passed, 0 failed, 0 inconclusive, 1 skipped, 0 errors"),
        "{stdout}"
    );

    let root = suite_dir(dir.path())?;
    let index = read_json(&root.join("index.json"))?;
    let skipped = &index["experiments"][1];
    assert_eq!(skipped["outcome"], "skipped");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|r| r.contains("needs --env compose") && r.contains("pause-payments")),
        "{skipped}"
    );
    let report = read_json(&root.join("compose-only").join("report.json"))?;
    assert_eq!(report["verdict"]["outcome"], "skipped");
    Ok(())
}

#[test]
fn strict_turns_a_skip_into_exit_2() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let file = write(dir.path(), "c.yaml", &containers("compose-only"))?;
    let output = chaos(dir.path()).arg(&file).output()?;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let output = chaos(dir.path()).arg(&file).arg("--strict").output()?;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    Ok(())
}

#[test]
fn an_invalid_file_in_the_set_exits_2_with_its_diagnostics_before_anything_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let exps = dir.path().join("exps");
    std::fs::create_dir(&exps)?;
    write(&exps, "a-good.yaml", &short("good", true))?;
    write(
        &exps,
        "b-bad.yaml",
        "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {name: bad}\nspec: {duration: 10s, slos: [], faults: [], bogus: 1}\n",
    )?;
    let output = chaos(dir.path()).arg(&exps).output()?;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("b-bad.yaml") && stderr.contains("bogus"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", show(&output));
    assert!(!dir.path().join("faultline-reports").exists());
    Ok(())
}

#[test]
fn duplicate_experiment_names_exit_2_before_anything_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = write(dir.path(), "a.yaml", &short("same", true))?;
    let b = write(dir.path(), "b.yaml", &short("same", false))?;
    let output = chaos(dir.path()).arg(&a).arg(&b).output()?;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("`same` is used 2 times"),
        "{}",
        show(&output)
    );
    assert!(!dir.path().join("faultline-reports").exists());
    Ok(())
}

#[test]
fn fail_fast_stops_after_the_first_failing_experiment_and_reports_the_rest_not_run() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let file = write(
        dir.path(),
        "suite.yaml",
        &format!(
            "{}---\n{}---\n{}",
            short("cannot-hold", false),
            short("after-1", true),
            short("after-2", true)
        ),
    )?;
    let junit = dir.path().join("out/junit.xml");
    let index = dir.path().join("out/index.json");
    let output = chaos(dir.path())
        .arg(&file)
        .arg("--fail-fast")
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&index)
        .output()?;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("[2/3] after-1 ("),
        "after-1 must not run: {stdout}"
    );

    let index = read_json(&index)?;
    assert_eq!(
        entries(&index),
        [
            ("cannot-hold".to_string(), "fail".to_string()),
            ("after-1".to_string(), "skipped".to_string()),
            ("after-2".to_string(), "skipped".to_string()),
        ]
    );
    assert_eq!(index["exitCode"], 1);
    assert_eq!(
        index["experiments"][1]["reason"],
        "not run: --fail-fast after cannot-hold failed"
    );
    // Per-experiment JSON reports go beside the index, linked relative to it.
    assert_eq!(
        index["experiments"][0]["reports"]["json"],
        "index-cannot-hold.json"
    );
    let first = read_json(&dir.path().join("out/index-cannot-hold.json"))?;
    assert_eq!(first["verdict"]["outcome"], "fail");

    // One combined JUnit document, one <testsuite> per experiment.
    let xml = std::fs::read_to_string(&junit)?;
    assert_eq!(xml.matches("<testsuites ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    for name in ["cannot-hold", "after-1", "after-2"] {
        assert!(
            xml.contains(&format!("<testsuite name=\"{name}\"")),
            "{xml}"
        );
    }
    Ok(())
}

#[test]
fn the_suite_index_lists_every_experiment_with_outcome_and_report_paths() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let a = write(dir.path(), "a.yaml", &short("local-one", true))?;
    let b = write(dir.path(), "b.yaml", &containers("compose-only"))?;
    let output = chaos(dir.path())
        .arg(&a)
        .arg(&b)
        .arg("--dry-run")
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let root = suite_dir(dir.path())?;
    let index = read_json(&root.join("index.json"))?;
    assert_eq!(
        entries(&index),
        [
            ("local-one".to_string(), "pass".to_string()),
            ("compose-only".to_string(), "skipped".to_string()),
        ]
    );
    for e in index["experiments"].as_array().context("experiments")? {
        for kind in ["json", "junit", "html"] {
            let rel = e["reports"][kind].as_str().context("report path")?;
            assert!(root.join(rel).is_file(), "{rel} missing");
        }
    }
    let page = std::fs::read_to_string(root.join("index.html"))?;
    assert!(page.contains("href=\"local-one/report.html\""), "{page}");
    let xml = std::fs::read_to_string(root.join("junit.xml"))?;
    assert_eq!(xml.matches("<testsuite ").count(), 2);
    Ok(())
}

#[test]
fn sigint_during_a_suite_reverts_the_current_experiment_and_reports_the_rest_not_run() -> Result<()>
{
    use std::process::Stdio;
    use std::time::Duration;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let long = short("interrupted", true)
        .replace("duration: 4s", "duration: 20s")
        .replace("      duration: 1s", "      duration: 10s");
    let file = write(
        dir.path(),
        "suite.yaml",
        &format!("{long}---\n{}", short("never-started", true)),
    )?;
    let index = dir.path().join("index.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .arg("run")
        .arg(&file)
        .arg("--json")
        .arg(&index)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("FL_RESILIENCE")
        .env_remove("FAULTLINE_TARGETS_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Progress lines on stderr (not a terminal: one per second) say when the fault is on.
    common::await_stderr_line(&mut child, "faults: ", Duration::from_secs(30))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    assert_eq!(status.code(), Some(1));

    let index = read_json(&index)?;
    assert_eq!(
        entries(&index),
        [
            ("interrupted".to_string(), "aborted".to_string()),
            ("never-started".to_string(), "skipped".to_string()),
        ]
    );
    assert_eq!(index["experiments"][1]["notRun"], true);
    assert_eq!(
        index["experiments"][1]["reason"],
        "not run: the suite was interrupted"
    );
    let first = read_json(&dir.path().join("index-interrupted.json"))?;
    assert_eq!(first["faults"][0]["status"], "reverted", "{first}");
    Ok(())
}
