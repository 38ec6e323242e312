//! `faultline-spec`: the experiment model (v1alpha1), its parsing and validation,
//! its JSON Schema, and the agent wire types.
//!
//! This crate does no I/O and needs no runtime: it is shared by the CLI, the agent,
//! the controller and the Kubernetes operator.
//!
//! ```
//! let yaml = r#"
//! apiVersion: faultline.dev/v1alpha1
//! kind: Experiment
//! metadata: {name: demo}
//! spec:
//!   duration: 30s
//!   faults:
//!     - name: slow-payments
//!       target: {service: payments}
//!       duration: 10s
//!       network: {latency: {delay: 100ms}}
//! "#;
//! let experiments = faultline_spec::parse_str(yaml, "demo.yaml", &Default::default()).unwrap();
//! assert_eq!(experiments[0].name, "demo");
//! ```

mod de;
pub mod diagnostic;
pub mod model;
pub mod promql;
pub mod raw;
pub mod selection;
pub mod units;
mod validate;
pub mod wire;
mod yaml;

use std::collections::HashMap;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::*;
pub use units::{Bandwidth, ByteSize, Duration, Percent, Rate, UnitError};
pub use validate::{
    DEFAULT_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_CAP, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WINDOW,
    MAX_LOAD_CONNECTIONS, MAX_REPLICAS, ValidateOptions, default_max_connections, is_dns_label,
};
pub use wire::WireError;
pub use yaml::{MAX_DEPTH, MAX_NODES, MAX_SOURCE_BYTES};

use crate::diagnostic::{Path, Problems};
use crate::yaml::{Node, Pos};

/// Reads an experiment file's bytes from `reader`, but never more than
/// [`MAX_SOURCE_BYTES`] + 1: enough for [`parse_str`] to refuse an oversized file
/// with a located error, without first holding all of a huge one in memory.
pub fn read_bounded(reader: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader
        .take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Turns bytes from [`read_bounded`] into the text [`parse_str`] takes. An oversized
/// file (cut short by the bounded read, so possibly mid-character) or one that is not
/// UTF-8 is a located diagnostic.
pub fn source_text(bytes: Vec<u8>, file_name: &str) -> Result<String, Diagnostics> {
    let refuse = |line: usize, message: String| {
        Diagnostics(vec![Diagnostic {
            file: file_name.to_owned(),
            line,
            column: 1,
            path: String::new(),
            message,
        }])
    };
    if bytes.len() > MAX_SOURCE_BYTES {
        return Err(refuse(1, yaml::too_large()));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
        refuse(
            line,
            format!(
                "the file is not UTF-8 (invalid byte at offset {})",
                valid.len()
            ),
        )
    })
}

/// Parses and validates every experiment in a YAML file (documents separated by `---`).
///
/// `file_name` only labels diagnostics. On failure, every problem of every document is
/// returned at once, each with `file:line:col`, field path and what was expected.
pub fn parse_str(
    source: &str,
    file_name: &str,
    opts: &ValidateOptions,
) -> Result<Vec<Experiment>, Diagnostics> {
    let (docs, syntax) = yaml::load(source);
    let mut diags = Vec::new();
    let mut experiments = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let diag = |pos: Pos, path: &str, message: String| Diagnostic {
        file: file_name.to_owned(),
        line: pos.line,
        column: pos.column,
        path: path.to_owned(),
        message,
    };
    for doc in &docs {
        for e in &doc.problems {
            diags.push(diag(e.pos, "", e.message.clone()));
        }
        let Some(root) = &doc.root else { continue };
        let sink = de::Sink::default();
        let raw: Option<raw::ExperimentDocument> = de::from_node(root, Path::root(), &sink);
        let structural = sink.problems.into_inner();
        let clean = structural.is_empty() && doc.problems.is_empty();
        for l in structural {
            diags.push(diag(l.pos, &l.path, l.message));
        }
        let Some(raw) = raw else { continue };
        let mut problems = Problems::default();
        let checked = validate::experiment(&raw, opts, &mut problems);
        // The position index is only built when something must be placed: valid
        // documents (the common case) skip it.
        let positions = std::cell::OnceCell::new();
        let positions = || positions.get_or_init(|| root.positions());
        let had_problems = !problems.0.is_empty();
        for pr in problems.0 {
            diags.push(diag(
                locate(positions(), &pr.path, root),
                &pr.path,
                pr.message,
            ));
        }
        if let Some(m) = raw.metadata.get() {
            if let Some(first_line) = names.get(&m.name) {
                let path = "metadata.name";
                diags.push(diag(
                    locate(positions(), path, root),
                    path,
                    format!(
                        "experiment name `{}` is already used by the document at line {first_line}: names must be unique",
                        m.name
                    ),
                ));
            } else {
                names.insert(m.name.clone(), root.pos.line);
            }
        }
        if let (Some(exp), true, false) = (checked, clean, had_problems) {
            experiments.push(exp);
        }
    }
    if let Some(e) = syntax {
        diags.push(diag(e.pos, "", e.message));
    } else if diags.is_empty() && experiments.is_empty() {
        diags.push(diag(
            Pos { line: 1, column: 1 },
            "",
            "the file holds no experiment: expected a YAML document with `apiVersion: faultline.dev/v1alpha1` and `kind: Experiment`".into(),
        ));
    }
    if diags.is_empty() {
        Ok(experiments)
    } else {
        let mut d = Diagnostics(diags);
        d.sort();
        Err(d)
    }
}

/// The position of `path`, or of its nearest ancestor that exists (a missing field is
/// reported at the mapping that lacks it).
fn locate(positions: &HashMap<String, Pos>, path: &str, root: &Node) -> Pos {
    let mut p = path;
    loop {
        if let Some(pos) = positions.get(p) {
            return *pos;
        }
        match p.rfind(['.', '[']) {
            Some(i) => p = &p[..i],
            None => return positions.get("").copied().unwrap_or(root.pos),
        }
    }
}

/// Every document of a YAML file as JSON, without validation (for JSON Schema checks
/// and tools). Fails only on YAML syntax errors.
pub fn documents_as_json(
    source: &str,
    file_name: &str,
) -> Result<Vec<serde_json::Value>, Diagnostics> {
    let (docs, syntax) = yaml::load(source);
    if let Some(e) = syntax {
        return Err(Diagnostics(vec![Diagnostic {
            file: file_name.to_owned(),
            line: e.pos.line,
            column: e.pos.column,
            path: String::new(),
            message: e.message,
        }]));
    }
    Ok(docs
        .iter()
        .filter_map(|d| d.root.as_ref().map(Node::to_json))
        .collect())
}

/// The JSON Schema of an experiment document (draft 2020-12), generated from the raw
/// types. `chaos schema` prints it; editors use it through yaml-language-server.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::ExperimentDocument);
    serde_json::to_value(&schema).unwrap_or_default()
}
