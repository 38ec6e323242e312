//! Every file in `tests/invalid/` is an experiment with a mistake; its `.expected`
//! sibling holds the exact diagnostics. Regenerate after an intended message change
//! with `UPDATE_EXPECTED=1 cargo test -p faultline-spec --test invalid_corpus`, then
//! review the diff.

use std::path::PathBuf;

use faultline_spec::{ValidateOptions, parse_str};

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_holds_at_least_25_invalid_experiments() {
    assert!(corpus().len() >= 25, "only {} files", corpus().len());
}

#[test]
fn every_invalid_experiment_gives_its_expected_specific_messages() {
    // A fixed host size keeps the CPU rule independent of the machine running the tests.
    // The reference fleet's names, as local and compose modes check them.
    let services = [
        "gateway",
        "orders",
        "inventory",
        "payments",
        "notifications",
    ];
    let opts = ValidateOptions {
        host_cpus: Some(4),
        services: Some(services.map(str::to_owned).to_vec()),
    };
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut failures = Vec::new();
    for file in corpus() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&file).unwrap();
        let diags = match parse_str(&source, &name, &opts) {
            Ok(_) => {
                failures.push(format!(
                    "{name}: was accepted, but it is in the invalid corpus"
                ));
                continue;
            }
            Err(d) => d,
        };
        for d in &diags {
            let generic = d.message.trim() == "invalid type"
                || d.message.starts_with("invalid type")
                || d.message.len() < 20;
            assert!(!generic, "{name}: message is not specific: {d}");
            assert!(d.line >= 1 && d.column >= 1, "{name}: no position: {d}");
            assert!(
                !d.message.contains('\n'),
                "{name}: message spans lines: {d}"
            );
        }
        let actual = format!("{diags}\n");
        let expected_path = file.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: diagnostics changed\n--- expected\n{expected}--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no {} (run with UPDATE_EXPECTED=1 to create it)",
                expected_path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
