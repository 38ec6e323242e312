//! The `chaos` binary end to end: exit codes, output formats, and the schema it prints.

use std::path::PathBuf;
use std::process::{Command, Output};

fn chaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("chaos runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_experiments_dir_exits_0_and_lists_each_experiment() {
    let out = chaos(&["validate", "experiments/"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let quickstart = stdout
        .lines()
        .find(|l| l.contains("payments-latency-cpu"))
        .expect("quickstart listed");
    assert!(
        quickstart.contains("experiments/quickstart.yaml"),
        "{quickstart}"
    );
    assert!(
        quickstart.contains("faults: payments-latency, payments-cpu, notifications-errors"),
        "{quickstart}"
    );
    assert!(
        quickstart.contains("slos: gateway-errors, gateway-p99, client-errors"),
        "{quickstart}"
    );
    // process-signals.yaml holds three documents; each is listed.
    for name in [
        "notifications-sigkill",
        "inventory-sigterm",
        "payments-sigstop",
    ] {
        assert!(stdout.contains(name), "{name} not listed:\n{stdout}");
    }
}

#[test]
fn three_mistakes_exit_2_with_three_located_errors() {
    let file = "crates/spec/tests/data/three-mistakes.yaml";
    let out = chaos(&["validate", file]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with(file)).collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(
        errors[0].starts_with(&format!("{file}:7:13: spec.duration: ")),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with(&format!("{file}:8:53: spec.steadyState.slos[1]: ")),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].starts_with(&format!(
            "{file}:15:19: spec.faults[0].network.latency.dealy: "
        )),
        "{}",
        errors[2]
    );
    assert!(errors[2].contains("did you mean `delay`"), "{}", errors[2]);
    assert!(stderr.contains("3 error(s) in 1 of 1 file(s)"), "{stderr}");
}

#[test]
fn json_format_reports_every_error_as_an_object() {
    let out = chaos(&[
        "validate",
        "--format",
        "json",
        "crates/spec/tests/data/three-mistakes.yaml",
        "experiments/quickstart.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["valid"], false);
    assert_eq!(report["files"], 2);
    assert_eq!(report["experiments"][0]["name"], "payments-latency-cpu");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[2]["path"], "spec.faults[0].network.latency.dealy");
    assert_eq!(errors[2]["line"], 15);
    assert_eq!(errors[2]["column"], 19);
}

#[test]
fn missing_file_or_empty_directory_is_invalid_input() {
    let out = chaos(&["validate", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read no/such/file.yaml"),
        "{}",
        text(&out.stderr)
    );

    let empty = std::env::temp_dir().join(format!("chaos-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = chaos(&["validate", empty.to_str().unwrap()]);
    std::fs::remove_dir_all(&empty).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no experiment files"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn printed_schema_validates_every_experiment_file() {
    let out = chaos(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let dir = repo().join("experiments");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for doc in faultline_spec::documents_as_json(&source, &path.display().to_string()).unwrap()
        {
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} documents checked");
}

#[test]
fn version_and_help_describe_the_tool() {
    let out = chaos(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("chaos {}", env!("CARGO_PKG_VERSION"))
    );

    let out = chaos(&["validate", "--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("--format"), "{help}");
    assert!(help.contains("searched recursively"), "{help}");
    assert!(help.contains("--no-host-check"), "{help}");
}

#[test]
fn fleet_policies_lists_every_name_fl_disable_accepts() {
    let out = chaos(&["fleet", "policies"]);
    assert!(out.status.success());
    let names: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    let expected: Vec<String> = faultline_fleet::config::Policy::ALL
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert_eq!(names, expected);
    assert!(faultline_fleet::config::Disabled::parse(&names.join(",")).is_ok());
}
