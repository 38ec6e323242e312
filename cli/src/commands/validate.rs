//! `chaos validate FILE|DIR...`: parse and validate experiment files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use faultline_spec::{Diagnostic, Experiment, ValidateOptions};
use serde::Serialize;

use crate::cli::{Format, ValidateArgs};
use crate::exit::{self, InvalidInput};

/// One valid experiment, as listed by `chaos validate`.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    file: String,
    faults: Vec<String>,
    slos: Vec<String>,
}

impl Listed {
    fn new(e: &Experiment, file: &str) -> Self {
        Self {
            name: e.name.clone(),
            file: file.to_owned(),
            faults: e.spec.faults.iter().map(|f| f.name.clone()).collect(),
            slos: e.spec.slos.iter().map(|s| s.name.clone()).collect(),
        }
    }
}

/// The `--format json` document.
#[derive(Debug, Serialize)]
struct Report {
    valid: bool,
    files: usize,
    experiments: Vec<Listed>,
    errors: Vec<Diagnostic>,
}

/// Validates every file and prints the result; exit 0 when all are valid, 2 otherwise.
pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let files = collect_files(&args.paths)?;
    let opts = ValidateOptions {
        host_cpus: if args.no_host_check {
            None
        } else {
            std::thread::available_parallelism().ok().map(|n| n.get())
        },
    };
    let mut report = Report {
        valid: true,
        files: files.len(),
        experiments: Vec::new(),
        errors: Vec::new(),
    };
    for file in &files {
        let name = file.display().to_string();
        let source = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {name}"))
            .map_err(|e| InvalidInput(format!("{e:#}")))?;
        match faultline_spec::parse_str(&source, &name, &opts) {
            Ok(experiments) => report
                .experiments
                .extend(experiments.iter().map(|e| Listed::new(e, &name))),
            Err(diags) => {
                report.valid = false;
                report.errors.extend(diags);
            }
        }
    }
    match args.format {
        Format::Json => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Human => print_human(&report)?,
    }
    Ok(ExitCode::from(if report.valid {
        exit::OK
    } else {
        exit::INVALID_INPUT
    }))
}

fn print_human(report: &Report) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for e in &report.experiments {
        writeln!(
            out,
            "ok  {}  ({})  faults: {}  slos: {}",
            e.name,
            e.file,
            list(&e.faults),
            list(&e.slos)
        )?;
    }
    let mut err = std::io::stderr().lock();
    for d in &report.errors {
        writeln!(err, "{d}")?;
    }
    if report.valid {
        writeln!(
            out,
            "{} experiment(s) in {} file(s) are valid",
            report.experiments.len(),
            report.files
        )?;
    } else {
        let bad_files = {
            let mut f: Vec<&str> = report.errors.iter().map(|d| d.file.as_str()).collect();
            f.dedup();
            f.len()
        };
        writeln!(
            err,
            "{} error(s) in {} of {} file(s)",
            report.errors.len(),
            bad_files,
            report.files
        )?;
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Files named on the command line, plus `*.yaml`/`*.yml` found recursively under the
/// directories, sorted so output is stable.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
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
                ))
                .into());
            }
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
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
