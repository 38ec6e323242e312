//! Which experiments a command line names: the one place `chaos validate` and
//! `chaos run` collect files (directories searched recursively) and parse them
//! (every document of a multi-document file), so both agree on what a file holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faultline_spec::{Diagnostic, Experiment, ValidateOptions};

use crate::exit::InvalidInput;

/// One experiment and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked experiment.
    pub experiment: Experiment,
    /// The file, as named on the command line or found under a directory.
    pub file: String,
}

/// Everything the files hold: the valid experiments in order (files in order, then
/// documents in order), and every diagnostic of the invalid ones.
#[derive(Debug, Default)]
pub struct Collection {
    /// How many files were read.
    pub files: usize,
    /// The experiments of the valid files.
    pub experiments: Vec<Loaded>,
    /// Every mistake in every invalid file.
    pub errors: Vec<Diagnostic>,
}

/// Validation options for this host: the CPU fault rule checks against this machine's
/// CPUs unless `no_host_check`, and service names against the reference fleet's when
/// `fleet` (local and compose modes run it; a Kubernetes cluster runs its own).
pub fn validate_options(no_host_check: bool, fleet: bool) -> ValidateOptions {
    ValidateOptions {
        host_cpus: if no_host_check {
            None
        } else {
            std::thread::available_parallelism().ok().map(|n| n.get())
        },
        services: fleet.then(|| {
            faultline_fleet::Service::START_ORDER
                .iter()
                .map(|s| s.name().to_owned())
                .collect()
        }),
    }
}

/// Reads and validates every file under `paths`. A path that cannot be read is an
/// error; an invalid file is not (its diagnostics are collected, so every mistake is
/// reported at once). Experiment names must be unique across the files, because a
/// suite's reports are keyed by them: a name used twice is a diagnostic too.
pub fn load(paths: &[PathBuf], opts: &ValidateOptions) -> Result<Collection, InvalidInput> {
    let files = collect_files(paths)?;
    let mut out = Collection {
        files: files.len(),
        ..Collection::default()
    };
    for file in &files {
        let name = file.display().to_string();
        let bytes = std::fs::File::open(file)
            .and_then(faultline_spec::read_bounded)
            .map_err(|e| InvalidInput(format!("cannot read {name}: {e}")))?;
        let source = match faultline_spec::source_text(bytes, &name) {
            Ok(source) => source,
            Err(diags) => {
                out.errors.extend(diags);
                continue;
            }
        };
        match faultline_spec::parse_str(&source, &name, opts) {
            Ok(experiments) => out
                .experiments
                .extend(experiments.into_iter().map(|experiment| Loaded {
                    experiment,
                    file: name.clone(),
                })),
            Err(diags) => out.errors.extend(diags),
        }
    }
    out.errors.extend(duplicate_names(&out.experiments));
    Ok(out)
}

/// A diagnostic for each experiment name used more than once, on the second file that
/// uses it.
fn duplicate_names(experiments: &[Loaded]) -> Vec<Diagnostic> {
    let mut files: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for l in experiments {
        files
            .entry(l.experiment.name.as_str())
            .or_default()
            .push(l.file.as_str());
    }
    files
        .into_iter()
        .filter(|(_, f)| f.len() > 1)
        .map(|(name, f)| Diagnostic {
            file: f[1].to_string(),
            line: 0,
            column: 0,
            path: "metadata.name".into(),
            message: format!(
                "experiment name `{name}` is used {} times ({}); names must be unique in a suite because reports are keyed by them",
                f.len(),
                f.join(", ")
            ),
        })
        .collect()
}

/// Files named on the command line, plus `*.yaml`/`*.yml` found recursively under the
/// directories, sorted so the order (and a suite's run order) is stable.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InvalidInput> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| InvalidInput(format!("cannot read {}: {e}", p.display())))?;
        if meta.is_dir() {
            let before = files.len();
            walk(p, &mut files)?;
            if files.len() == before {
                return Err(InvalidInput(format!(
                    "no experiment files (*.yaml, *.yml) under {}",
                    p.display()
                )));
            }
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InvalidInput> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| InvalidInput(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPERIMENT: &str = "apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {name: same}
spec:
  duration: 10s
  load: {target: gateway, rate: 10/s, requests: [{method: GET, path: /healthz}]}
  slos:
    - {name: errors, errorRate: {service: gateway, max: 1%}, window: 5s}
  faults:
    - name: stop
      target: {service: payments}
      duration: 2s
      process: {signal: SIGSTOP}
";

    #[test]
    fn a_name_used_twice_is_a_diagnostic_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.yaml", "b.yaml"] {
            std::fs::write(dir.path().join(f), EXPERIMENT).unwrap();
        }
        let loaded = load(&[dir.path().to_path_buf()], &validate_options(true, true)).unwrap();
        assert_eq!(loaded.experiments.len(), 2);
        assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
        let d = &loaded.errors[0];
        assert!(d.file.ends_with("b.yaml"), "{d}");
        assert_eq!(d.path, "metadata.name");
        assert!(d.message.contains("`same` is used 2 times"), "{d}");
        let one = load(&[dir.path().join("a.yaml")], &validate_options(true, true)).unwrap();
        assert!(one.errors.is_empty(), "{:?}", one.errors);
    }
}
