//! A YAML document tree that remembers where every value and key came from.
//!
//! Built from `saphyr-parser`'s event stream (see docs/yaml.md for why): each node
//! carries the 1-based line and column of its first character, counted over the whole
//! stream, so errors in the third document of a file point at the right line.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

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

/// Loads every document of a YAML stream. A syntax error stops loading: the
/// documents before it are returned with the error.
pub(crate) fn load(source: &str) -> (Vec<Document>, Option<SyntaxError>) {
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
                None
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take() {
                    docs.push(doc);
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => Some((
                    Node {
                        pos,
                        value: node.value.clone(),
                    },
                    0,
                )),
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
                stack.push(Frame::Seq(pos, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(pos, anchor, items)) => Some((
                    Node {
                        pos,
                        value: Value::Seq(items),
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(pos, anchor, entries, _)) => Some((
                    Node {
                        pos,
                        value: Value::Map(merge_keys(entries)),
                    },
                    anchor,
                )),
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

    #[test]
    fn duplicate_keys_are_reported_with_their_position() {
        let (docs, _) = load("a: 1\na: 2\n");
        assert_eq!(docs[0].problems.len(), 1);
        assert_eq!(docs[0].problems[0].pos, Pos { line: 2, column: 1 });
    }
}
