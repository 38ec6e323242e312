//! The generated JSON Schema accepts every experiment file, rejects what validation
//! rejects structurally, and matches the committed docs/experiment.schema.json.

mod common;

use std::path::PathBuf;

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&faultline_spec::json_schema())
        .expect("the generated schema compiles")
}

#[test]
fn generated_schema_accepts_every_experiment_file() {
    let v = validator();
    for (name, text) in common::experiment_files() {
        let docs = faultline_spec::documents_as_json(&text, &name).unwrap();
        assert!(!docs.is_empty(), "{name}");
        for doc in docs {
            let errors: Vec<String> = v
                .iter_errors(&doc)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{name} does not match the schema:\n{}",
                errors.join("\n")
            );
        }
    }
}

#[test]
fn generated_schema_rejects_unknown_fields_and_bad_units() {
    let v = validator();
    let (name, text) = common::experiment_files()
        .into_iter()
        .find(|(n, _)| n == "quickstart.yaml")
        .unwrap();
    let doc = faultline_spec::documents_as_json(&text, &name)
        .unwrap()
        .remove(0);

    let mut typo = doc.clone();
    typo["spec"]["faults"][0]["network"]["latency"]["dealy"] = "100ms".into();
    assert!(!v.is_valid(&typo), "unknown field accepted");

    let mut unit = doc.clone();
    unit["spec"]["duration"] = "60 seconds".into();
    assert!(!v.is_valid(&unit), "bad duration accepted");

    assert!(v.is_valid(&doc));
}

#[test]
fn committed_schema_matches_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/experiment.schema.json");
    let generated = serde_json::to_string_pretty(&faultline_spec::json_schema()).unwrap() + "\n";
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/experiment.schema.json is out of date with the spec types; regenerate it with\n    cargo run -q -p faultline-cli -- schema > docs/experiment.schema.json"
    );
}
