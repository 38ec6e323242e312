//! A YAML document tree that remembers where every value and key came from.
//!
//! Built from `saphyr-parser`'s event stream (see docs/yaml.md for why): each node
//! carries the 1-based line and column of its first character, counted over the whole
//! stream, so errors in the third document of a file point at the right line.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

/// The most bytes a YAML text may have: an experiment file is a few KiB, a suite of a
/// hundred experiments a few hundred. Readers stop reading past it (`read_bounded`).
pub const MAX_SOURCE_BYTES: usize = 4 << 20;

/// The deepest nesting of sequences and mappings: an experiment nests about 8 levels.
pub const MAX_DEPTH: usize = 64;

/// The most nodes (scalars, keys, sequences, mappings) a YAML text may hold, each alias
/// counted at the size of what it expands to: a shipped experiment has 60-164, and the
/// validation benchmark's 1,000-experiment file 164,000. It bounds "billion laughs"
/// alias bombs, whose expansion multiplies with every level, to tens of MB and
/// milliseconds.
pub const MAX_NODES: usize = 250_000;

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    fn from_span(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A scalar after YAML 1.2 core-schema resolution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

/// One YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// The resolved scalar and its source text (used when a string is wanted).
    Scalar(Scalar, String),
    Seq(Vec<Node>),
    /// Keys keep their own position, for "unknown field" errors.
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and where it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) pos: Pos,
}

/// A syntax error with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
}

impl SyntaxError {
    fn from_scan(e: &ScanError) -> Self {
        Self {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: format!("YAML syntax error: {}", e.info()),
        }
    }
}

/// A loaded document: its tree (`None` when the document is empty) and any
/// duplicate-key problems, which do not stop loading.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) root: Option<Node>,
    pub(crate) problems: Vec<SyntaxError>,
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Key, Node)>, Option<Key>),
}

/// Counts the nodes a stream builds, aliases at their expanded size, against
/// [`MAX_NODES`].
#[derive(Default)]
struct Budget {
    nodes: usize,
    /// The node count when each open collection started, innermost last.
    starts: Vec<usize>,
    /// The expanded size of each anchored node, by anchor id.
    anchored: HashMap<usize, usize>,
}

impl Budget {
    fn spend(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "YAML expands to more than {MAX_NODES} values here (aliases count at the size of what they repeat): an experiment file needs a few hundred; is this an alias bomb?"
                ),
            });
        }
        Ok(())
    }

    fn open(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        if self.starts.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "YAML nests deeper than {MAX_DEPTH} levels: an experiment needs about 8"
                ),
            });
        }
        self.spend(1, pos)?;
        self.starts.push(self.nodes - 1);
        Ok(())
    }

    /// Closes the innermost collection, remembering its size under its anchor (0: none).
    fn closed(&mut self, anchor: usize) {
        let size = self.starts.pop().map_or(1, |start| self.nodes - start);
        if anchor != 0 {
            self.anchored.insert(anchor, size);
        }
    }
}

/// Loads every document of a YAML stream. A syntax error stops loading: the
/// documents before it are returned with the error.
pub(crate) fn load(source: &str) -> (Vec<Document>, Option<SyntaxError>) {
    if source.len() > MAX_SOURCE_BYTES {
        return (
            Vec::new(),
            Some(SyntaxError {
                pos: Pos { line: 1, column: 1 },
                message: too_large(),
            }),
        );
    }
    let mut budget = Budget::default();
    let mut parser = Parser::new_from_str(source);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut current: Option<Document> = None;

    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            Ok(ev) => ev,
            Err(e) => return (docs, Some(SyntaxError::from_scan(&e))),
        };
        let pos = Pos::from_span(&span);
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                current = Some(Document {
                    root: None,
                    problems: Vec::new(),
                });
                anchors.clear();
                budget.anchored.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take() {
                    docs.push(doc);
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    let size = budget.anchored.get(&id).copied().unwrap_or(1);
                    if let Err(e) = budget.spend(size, pos) {
                        return (docs, Some(e));
                    }
                    Some((
                        Node {
                            pos,
                            value: node.value.clone(),
                        },
                        0,
                    ))
                }
                None => {
                    return (
                        docs,
                        Some(SyntaxError {
                            pos,
                            message: "YAML alias refers to an unknown anchor".into(),
                        }),
                    );
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                if let Err(e) = budget.spend(1, pos) {
                    return (docs, Some(e));
                }
                if anchor != 0 {
                    budget.anchored.insert(anchor, 1);
                }
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let scalar = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Scalar::Str(text.to_string())
                };
                Some((
                    Node {
                        pos,
                        value: Value::Scalar(scalar, text.into_owned()),
                    },
                    anchor,
                ))
            }
            Event::SequenceStart(anchor, _) => {
                if let Err(e) = budget.open(pos) {
                    return (docs, Some(e));
                }
                stack.push(Frame::Seq(pos, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                if let Err(e) = budget.open(pos) {
                    return (docs, Some(e));
                }
                stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(pos, anchor, items)) => {
                    budget.closed(anchor);
                    Some((
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ))
                }
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(pos, anchor, entries, _)) => {
                    budget.closed(anchor);
                    Some((
                        Node {
                            pos,
                            value: Value::Map(merge_keys(entries)),
                        },
                        anchor,
                    ))
                }
                _ => None,
            },
        };
        let Some((node, anchor)) = finished else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => {
                if let Some(doc) = current.as_mut() {
                    doc.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => {
                    *pending = Some(Key {
                        name: key_text(&node),
                        pos: node.pos,
                    })
                }
                Some(key) => {
                    if entries.iter().any(|(k, _)| k.name == key.name) {
                        if let Some(doc) = current.as_mut() {
                            doc.problems.push(SyntaxError {
                                pos: key.pos,
                                message: format!(
                                    "duplicate key `{}`: a mapping may hold each key once",
                                    key.name
                                ),
                            });
                        }
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    if let Some(doc) = current.take() {
        docs.push(doc);
    }
    (docs, None)
}

/// The message for a text over [`MAX_SOURCE_BYTES`].
pub(crate) fn too_large() -> String {
    format!(
        "the file is larger than {} MiB: an experiment file is a few KiB",
        MAX_SOURCE_BYTES >> 20
    )
}

/// Applies YAML merge keys (`<<: *defaults`, or a list of aliases): the merged
/// mappings' entries are added unless the mapping sets the key itself, so shared
/// settings can be written once per document.
fn merge_keys(entries: Vec<(Key, Node)>) -> Vec<(Key, Node)> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|(k, _)| k.name == "<<");
    for (key, value) in merges {
        let sources = match value.value {
            Value::Map(m) => vec![m],
            Value::Seq(items) => items
                .into_iter()
                .filter_map(|n| match n.value {
                    Value::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            // Not mergeable: keep it so the unknown-field check reports `<<`.
            other => {
                own.push((
                    key,
                    Node {
                        pos: value.pos,
                        value: other,
                    },
                ));
                continue;
            }
        };
        for source in sources {
            for (k, v) in source {
                if !own.iter().any(|(o, _)| o.name == k.name) {
                    own.push((k, v));
                }
            }
        }
    }
    own
}

fn key_text(node: &Node) -> String {
    match &node.value {
        Value::Scalar(_, text) => text.clone(),
        Value::Seq(_) => "[..]".into(),
        Value::Map(_) => "{..}".into(),
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let int_like = {
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    if int_like {
        if let Ok(i) = text.parse::<i64>() {
            return Scalar::Int(i);
        }
        if let Ok(u) = text.trim_start_matches('+').parse::<u64>() {
            return Scalar::Uint(u);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(u) = u64::from_str_radix(hex, 16) {
            return Scalar::Uint(u);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(u) = u64::from_str_radix(oct, 8) {
            return Scalar::Uint(u);
        }
    }
    let float_like = {
        let t = text.strip_prefix(['-', '+']).unwrap_or(text);
        t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    };
    if float_like {
        if let Ok(f) = text.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    Scalar::Str(text.to_owned())
}

impl Node {
    /// The tree as JSON (for JSON Schema validation of files).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar(s, _) => match s {
                Scalar::Null => J::Null,
                Scalar::Bool(b) => J::Bool(*b),
                Scalar::Int(i) => J::from(*i),
                Scalar::Uint(u) => J::from(*u),
                Scalar::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
                Scalar::Str(s) => J::String(s.clone()),
            },
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Every value's position by field path (`spec.faults[0].name`), for placing
    /// problems found after deserialization.
    pub(crate) fn positions(&self) -> HashMap<String, Pos> {
        let mut out = HashMap::new();
        self.collect_positions(String::new(), &mut out);
        out
    }

    fn collect_positions(&self, path: String, out: &mut HashMap<String, Pos>) {
        match &self.value {
            Value::Scalar(..) => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.collect_positions(format!("{path}[{i}]"), out);
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    let child = if path.is_empty() {
                        k.name.clone()
                    } else {
                        format!("{path}.{}", k.name)
                    };
                    v.collect_positions(child.clone(), out);
                }
            }
        }
        out.insert(path, self.pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_across_documents() {
        let (docs, err) = load("a: 1\n---\nb:\n  c: x\n");
        assert!(err.is_none());
        assert_eq!(docs.len(), 2);
        let pos = docs[1].root.as_ref().unwrap().positions();
        assert_eq!(pos["b.c"], Pos { line: 4, column: 6 });
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        assert_eq!(resolve_plain("12"), Scalar::Int(12));
        assert_eq!(resolve_plain("0.5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain("yes"), Scalar::Str("yes".into()));
        assert_eq!(resolve_plain("~"), Scalar::Null);
        assert_eq!(resolve_plain("10s"), Scalar::Str("10s".into()));
    }

    #[test]
    fn merge_keys_add_shared_entries_without_overriding() {
        let (docs, err) =
            load("base: &b {window: 10s, source: client}\nslo:\n  <<: *b\n  window: 30s\n");
        assert!(err.is_none());
        let json = docs[0].root.as_ref().unwrap().to_json();
        assert_eq!(
            json["slo"],
            serde_json::json!({"window": "30s", "source": "client"})
        );
    }

    /// A "billion laughs" file: each level a list of ten aliases of the one before.
    fn laughs(levels: usize) -> String {
        let mut s = String::from("a0: &a0 [lol]\n");
        for i in 1..=levels {
            let prev = format!("*a{}", i - 1);
            s += &format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", "));
        }
        s
    }

    #[test]
    fn alias_bombs_stop_at_the_node_budget_with_a_located_error() {
        // 10^5 values expand fine; 10^6 and beyond do not, however deep the bomb.
        let (docs, err) = load(&laughs(5));
        assert!(err.is_none(), "{err:?}");
        assert_eq!(docs.len(), 1);
        for levels in [6, 8, 20] {
            let (_, err) = load(&laughs(levels));
            let err = err.expect("refused");
            assert!(err.message.contains("alias bomb"), "{}", err.message);
            assert_eq!(err.pos.line, 7, "at the alias that crosses the budget");
        }
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        // Block nesting (`- - - ...`) reaches our depth check; flow nesting (`[[[...`)
        // is refused by the scanner itself past 255 levels, before it builds anything.
        let deep = "- ".repeat(50_000) + "x\n";
        let (_, err) = load(&deep);
        let err = err.expect("refused");
        assert!(err.message.contains("deeper than 64"), "{}", err.message);
        assert_eq!(
            err.pos,
            Pos {
                line: 1,
                column: 129
            }
        );
        let flow = "[".repeat(50_000) + &"]".repeat(50_000);
        assert!(load(&flow).1.is_some());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(load(&ok).1.is_none());

        let big = format!("a: {}\n", "x".repeat(MAX_SOURCE_BYTES));
        let (_, err) = load(&big);
        assert!(err.expect("refused").message.contains("larger than 4 MiB"));
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_position() {
        let (docs, _) = load("a: 1\na: 2\n");
        assert_eq!(docs[0].problems.len(), 1);
        assert_eq!(docs[0].problems[0].pos, Pos { line: 2, column: 1 });
    }
}
