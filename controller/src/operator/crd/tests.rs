//! The committed CRD stays in sync with the types, and every experiment file is a
//! valid instance of its schema.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;

use super::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crd_path() -> PathBuf {
    repo().join("deploy/kubernetes/crd.yaml")
}

/// The CRD's `openAPIV3Schema`, as a JSON Schema validator.
fn validator() -> jsonschema::Validator {
    let crd = serde_json::to_value(Experiment::crd()).unwrap();
    let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    assert!(schema.is_object(), "the CRD has a schema");
    jsonschema::validator_for(&schema).unwrap()
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

use serde::Deserialize;

#[test]
fn committed_crd_yaml_matches_the_generated_crd() {
    let generated = crd_yaml();
    if std::env::var_os("FAULTLINE_UPDATE_CRD").is_some() {
        std::fs::write(crd_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(crd_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "deploy/kubernetes/crd.yaml is stale: regenerate it with \
         `FAULTLINE_UPDATE_CRD=1 cargo test -p faultline-controller committed_crd_yaml` \
         (or `chaos controller --print-crd > deploy/kubernetes/crd.yaml`)"
    );
}

#[test]
fn crd_is_namespaced_with_status_subresource_and_spec_from_faultline_spec() {
    let crd = serde_json::to_value(Experiment::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "experiments.faultline.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for field in [
        "duration", "schedule", "faults", "slos", "abort", "recovery", "load",
    ] {
        assert!(
            spec["properties"][field].is_object(),
            "spec.{field} missing: {spec}"
        );
    }
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
    for field in [
        "phase",
        "conditions",
        "lastVerdict",
        "results",
        "activeFaults",
    ] {
        assert!(
            status["properties"][field].is_object(),
            "status.{field} missing"
        );
    }
}

#[test]
fn every_experiment_file_is_a_valid_instance_of_the_crd() {
    let validator = validator();
    let dir = repo().join("experiments");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            continue;
        }
        for doc in documents(&path) {
            let errors: Vec<String> = validator
                .iter_errors(&doc)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            // And the resource, read back as the custom resource type, parses.
            let _: Experiment = serde_json::from_value(doc).unwrap();
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no experiment files found in {}",
        dir.display()
    );
}

#[test]
fn crd_schema_rejects_a_malformed_experiment() {
    let validator = validator();
    let bad = serde_json::json!({
        "apiVersion": "faultline.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": "bad"},
        "spec": {"duration": "soon", "faults": [{"name": "x", "target": {"service": "payments"}, "after": "1s", "duration": "1s", "cpu": {"load": "80%"}}]}
    });
    assert!(
        !validator.is_valid(&bad),
        "`duration: soon` must not pass the schema"
    );
}
