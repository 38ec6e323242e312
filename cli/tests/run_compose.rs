//! `chaos run --env compose` as a process, without a stack: it must say what to start and
//! exit 3 (infrastructure), and refuse local-only options with exit 2. The end-to-end run
//! against a real stack is scripts/compose-e2e.sh.

use std::process::Command;

fn chaos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
}

fn quickstart() -> String {
    format!(
        "{}/../experiments/quickstart.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn compose_run_without_a_stack_exits_3_and_names_what_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = chaos()
        .current_dir(dir.path())
        .args([
            "run",
            "--env",
            "compose",
            "--no-progress",
            "--compose-project",
        ])
        .arg(format!("faultline-absent-{}", std::process::id()))
        .arg("--json")
        .arg(&json)
        .arg(quickstart())
        .env_remove("COMPOSE_PROJECT_NAME")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    let report = std::fs::read_to_string(&json).unwrap();
    // With an engine: no container of the project; without one: the socket is named.
    assert!(
        report.contains("docker-compose up -d") || report.contains("docker.sock"),
        "{report}"
    );
    assert!(report.contains("\"compose\""), "mode recorded: {report}");
}

#[test]
fn compose_run_refuses_set_env_with_exit_2() {
    // The default report directory is relative to the working directory.
    let dir = tempfile::tempdir().unwrap();
    let out = chaos()
        .current_dir(dir.path())
        .args([
            "run",
            "--env",
            "compose",
            "--no-progress",
            "--set-env",
            "FL_RESILIENCE=off",
        ])
        .arg(quickstart())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("FL_RESILIENCE=off docker-compose up -d"),
        "{text}"
    );
}
