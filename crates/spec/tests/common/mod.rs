//! Helpers shared by the integration tests (included with `mod common;`).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// The repository's `experiments/` directory.
pub fn experiments_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

/// Every experiment file, sorted, with its text.
pub fn experiment_files() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(experiments_dir())
        .expect("experiments/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("readable experiment");
            (name, text)
        })
        .collect()
}
