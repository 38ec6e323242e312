//! `chaos validate FILE|DIR...`: parse and validate experiment files.

use std::io::Write;
use std::process::ExitCode;

use faultline_spec::{Diagnostic, Experiment};
use serde::Serialize;

use super::files;
use crate::cli::{Format, ValidateArgs};
use crate::exit;

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
    let fleet = args.env != crate::cli::ValidateEnv::Kubernetes;
    let loaded = files::load(
        &args.paths,
        &files::validate_options(args.no_host_check, fleet),
    )?;
    let report = Report {
        valid: loaded.errors.is_empty(),
        files: loaded.files,
        experiments: loaded
            .experiments
            .iter()
            .map(|l| Listed::new(&l.experiment, &l.file))
            .collect(),
        errors: loaded.errors,
    };
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
