//! The dry run cannot lie (issue 14): for every experiment shipped in `experiments/`, if
//! `chaos run --dry-run` passes in local mode, then no fault of it is refused when the
//! run applies it.
//!
//! The apply half runs a compressed copy of each experiment: the same faults on the same
//! targets with the same parameters, in the same mode, but each injected at 1 s for 2 s,
//! without steady state, recovery or abort conditions, so the whole property takes about
//! a minute rather than the length of the suite. The SLO and effect verdicts of the
//! compressed runs are not the point (the suite judges them at full length); a fault that
//! could not be applied is, and so is an infrastructure error.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use serde_yaml::Value as Yaml;

fn chaos() -> &'static str {
    env!("CARGO_BIN_EXE_chaos")
}

fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

/// Every experiment document shipped, with its file name.
fn shipped() -> Vec<(String, Yaml)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(experiments_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Yaml as serde::Deserialize>::deserialize(doc).unwrap();
            out.push((f.file_name().unwrap().to_string_lossy().into_owned(), value));
        }
    }
    out
}

fn name_of(doc: &Yaml) -> String {
    doc["metadata"]["name"].as_str().unwrap().to_string()
}

/// The same experiment, each fault at 1 s for 2 s, 4 s in all, SLOs over 2 s windows.
fn compressed(doc: &Yaml) -> Yaml {
    let mut doc = doc.clone();
    let spec = doc["spec"].as_mapping_mut().unwrap();
    for key in ["steadyState", "recovery", "abort", "schedule", "timeZone"] {
        spec.remove(key);
    }
    spec.insert("duration".into(), "4s".into());
    for slo in spec
        .get_mut("slos")
        .and_then(Yaml::as_sequence_mut)
        .unwrap()
    {
        slo.as_mapping_mut()
            .unwrap()
            .insert("window".into(), "2s".into());
    }
    for fault in spec
        .get_mut("faults")
        .and_then(Yaml::as_sequence_mut)
        .unwrap()
    {
        let fault = fault.as_mapping_mut().unwrap();
        fault.insert("after".into(), "1s".into());
        fault.insert("duration".into(), "2s".into());
    }
    doc
}

/// Runs `chaos run [extra] FILE --json OUT` and returns the exit code, the report and
/// what the command printed on stderr.
fn run(file: &Path, extra: &[&str], out: &Path) -> (i32, Value, String) {
    let status = Command::new(chaos())
        .arg("run")
        .args(extra)
        .arg(file)
        .args(["--no-progress", "--json"])
        .arg(out)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = std::fs::read_to_string(out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (
        status.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&status.stderr).into_owned(),
    )
}

#[test]
fn every_fault_a_passing_dry_run_accepts_is_applied_without_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    let mut not_local = Vec::new();
    let mut no_faults = Vec::new();
    for (file, doc) in shipped() {
        let name = name_of(&doc);
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
        let (code, dry, stderr) = run(
            &path,
            &["--dry-run"],
            &dir.path().join(format!("{name}-dry.json")),
        );
        let outcome = dry["verdict"]["outcome"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        if outcome == "skipped" {
            not_local.push(name);
            continue;
        }
        assert_eq!(
            (code, outcome.as_str()),
            (0, "pass"),
            "{file}/{name}: the dry run neither passed nor skipped: {} {stderr}",
            dry["verdict"]
        );
        // A surge-only experiment has no fault for the property to hold of.
        if dry["faults"].as_array().is_none_or(Vec::is_empty) {
            no_faults.push(name);
            continue;
        }
        for fault in dry["faults"].as_array().unwrap() {
            assert!(
                fault["backend"].is_string(),
                "{name}: the dry run named no backend for {fault}"
            );
        }
        // A dry run measures nothing: its SLOs are neither passed nor failed (JUnit skips).
        for slo in dry["slos"].as_array().unwrap() {
            assert_eq!(slo["verdict"], "notMeasured", "{name}: {slo}");
        }

        let short = dir.path().join(format!("{name}-short.yaml"));
        std::fs::write(&short, serde_yaml::to_string(&compressed(&doc)).unwrap()).unwrap();
        let (code, report, stderr) =
            run(&short, &[], &dir.path().join(format!("{name}-short.json")));
        let outcome = report["verdict"]["outcome"].as_str().unwrap_or("none");
        // `inconclusive` is an effect verdict, not a refusal: the compressed schedule runs
        // every fault at once, so one downstream of another may see no traffic (a test run:
        // critical-leaf-stalls' stalled payments matched no /charge while inventory was
        // stalled too). Refusals are checked per fault below; an error still fails here.
        assert!(
            matches!(outcome, "pass" | "fail" | "inconclusive"),
            "{file}/{name}: after a passing dry run the run ended {outcome} (exit {code}): {} {stderr}",
            report["verdict"]["reason"]
        );
        let faults = report["faults"].as_array().unwrap();
        assert!(!faults.is_empty(), "{name}: no fault was applied");
        for fault in faults {
            assert_ne!(
                fault["status"], "failed",
                "{file}/{name}: the agent refused a fault its dry run accepted: {fault}"
            );
            assert!(
                fault["appliedMs"].is_i64(),
                "{name}: fault never applied: {fault}"
            );
        }
        checked.push(name);
    }
    // The property must not hold vacuously: every experiment local mode can run is here.
    assert!(
        checked.len() >= 9,
        "only {checked:?} were checked; skipped: {not_local:?}; without faults: {no_faults:?}"
    );
}
