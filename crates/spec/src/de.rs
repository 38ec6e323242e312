//! A serde `Deserializer` over the positioned YAML tree that collects every
//! structural error instead of stopping at the first.
//!
//! - Unknown keys are reported (with a "did you mean") and skipped, so the struct
//!   still deserializes and later fields are checked too.
//! - Any other error is recorded with the position and path of the node where it
//!   happened, then travels up as [`DeError::Reported`] until a [`Recover`] wrapper
//!   turns it into "this part is missing", so sibling faults and SLOs are still checked.

use std::cell::{Cell, RefCell};
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diagnostic::{Path, did_you_mean, one_of};
use crate::yaml::{Node, Pos, Scalar, Value};

/// A structural problem with its place.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located {
    pub(crate) pos: Pos,
    pub(crate) path: String,
    pub(crate) message: String,
}

/// The error type of [`NodeDeserializer`].
#[derive(Debug)]
pub(crate) enum DeError {
    /// Already recorded in the sink with its position.
    Reported,
    /// Not yet placed: the deserializer that sees it attaches its node's position.
    Message(String),
    /// A required field is absent (kept apart so a misspelt key that already
    /// said "did you mean `field`" is not reported twice).
    MissingField(&'static str),
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Reported => f.write_str("error already reported"),
            DeError::Message(m) => f.write_str(m),
            DeError::MissingField(field) => write!(f, "missing required field `{field}`"),
        }
    }
}

impl std::error::Error for DeError {}

fn describe(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(b) => format!("boolean `{b}`"),
        Unexpected::Unsigned(u) => format!("number `{u}`"),
        Unexpected::Signed(i) => format!("number `{i}`"),
        Unexpected::Float(f) => format!("number `{f}`"),
        Unexpected::Str(s) => format!("string `{s}`"),
        Unexpected::Unit | Unexpected::Option => "nothing (null)".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a mapping".into(),
        other => other.to_string(),
    }
}

/// Serde names primitive types (`u16`); people expect words.
fn expectation(exp: &dyn de::Expected) -> String {
    let text = exp.to_string();
    match text.as_str() {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" => "a whole number of 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "a boolean" => "`true` or `false`".into(),
        _ => text,
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Message(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::Message(format!(
            "expected {}, found {}",
            expectation(exp),
            describe(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::Message(format!(
            "expected {}, found {}",
            expectation(exp),
            describe(&unexp)
        ))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::Message(format!("expected {exp}, found {len} elements"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = did_you_mean(variant, expected.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        DeError::Message(format!(
            "unknown value `{variant}`{hint}: expected {}",
            one_of(expected)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::Message(unknown_field_message(field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::MissingField(field)
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::Message(format!("field `{field}` is given twice"))
    }
}

pub(crate) fn unknown_field_message(field: &str, expected: &[&str]) -> String {
    match did_you_mean(field, expected.iter().copied()) {
        Some(s) => format!(
            "unknown field `{field}`, did you mean `{s}`? (expected {})",
            one_of(expected)
        ),
        None if expected.is_empty() => {
            format!("unknown field `{field}`: this mapping takes no fields")
        }
        None => format!("unknown field `{field}`: expected {}", one_of(expected)),
    }
}

thread_local! {
    /// True while a [`NodeDeserializer`] runs on this thread, so [`Recover`] knows
    /// the errors it swallows were recorded.
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
}

/// Where structural problems are recorded.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) problems: RefCell<Vec<Located>>,
}

/// Deserializes `T` from `node`, recording every structural problem in the sink.
/// Returns `None` when the value could not be built at all.
pub(crate) fn from_node<'de, T: Deserialize<'de>>(
    node: &'de Node,
    root: Path,
    sink: &Sink,
) -> Option<T> {
    struct Guard(bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            COLLECTING.with(|c| c.set(self.0));
        }
    }
    let _guard = Guard(COLLECTING.with(|c| c.replace(true)));
    let de = NodeDeserializer {
        node,
        path: root,
        sink,
    };
    T::deserialize(de).ok()
}

/// Deserializes a part of the document; when that part is broken, its problems are
/// recorded and the value is `None`, so the rest of the document is still checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Recover<T>(pub Option<T>);

impl<T> Recover<T> {
    /// The value, when it deserialized.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<T> From<T> for Recover<T> {
    fn from(value: T) -> Self {
        Self(Some(value))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Recover<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match T::deserialize(deserializer) {
            Ok(v) => Ok(Self(Some(v))),
            // Swallow only when the error was recorded by our own deserializer;
            // other formats (serde_json) keep failing normally.
            Err(_) if COLLECTING.with(Cell::get) => Ok(Self(None)),
            Err(e) => Err(e),
        }
    }
}

impl<T: Serialize> Serialize for Recover<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Recover<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

pub(crate) struct NodeDeserializer<'de, 's> {
    node: &'de Node,
    path: Path,
    sink: &'s Sink,
}

impl<'de, 's> NodeDeserializer<'de, 's> {
    fn child(&self, node: &'de Node, path: Path) -> Self {
        Self {
            node,
            path,
            sink: self.sink,
        }
    }

    fn record(&self, pos: Pos, path: &Path, message: String) {
        self.sink.problems.borrow_mut().push(Located {
            pos,
            path: path.as_str().to_owned(),
            message,
        });
    }

    /// Places an unplaced error at this node.
    fn place<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| match e {
            DeError::Reported => DeError::Reported,
            e => {
                self.record(self.node.pos, &self.path, e.to_string());
                DeError::Reported
            }
        })
    }

    fn scalar_text(&self) -> Option<&'de str> {
        match &self.node.value {
            Value::Scalar(Scalar::Null, _) => None,
            Value::Scalar(_, text) => Some(text),
            _ => None,
        }
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Scalar(s, _) => match s {
                Scalar::Null => visitor.visit_unit(),
                Scalar::Bool(b) => visitor.visit_bool(*b),
                Scalar::Int(i) => visitor.visit_i64(*i),
                Scalar::Uint(u) => visitor.visit_u64(*u),
                Scalar::Float(f) => visitor.visit_f64(*f),
                Scalar::Str(s) => visitor.visit_borrowed_str(s),
            },
            Value::Seq(items) => visitor.visit_seq(Seq {
                de: &self,
                items: items.iter().enumerate(),
                len: items.len(),
            }),
            Value::Map(entries) => visitor.visit_map(Map {
                de: &self,
                entries: entries.iter(),
                value: None,
                fields: None,
                present: Vec::new(),
            }),
        };
        self.place(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // YAML scalars are text: `name: 123` is the string "123" when a string is wanted,
        // and unit values such as `max: 0.005` keep their spelling.
        match self.scalar_text() {
            Some(text) => {
                let r = visitor.visit_borrowed_str(text);
                self.place(r)
            }
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar(Scalar::Null, _) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let suggested = RefCell::new(Vec::new());
        let r = match &self.node.value {
            Value::Map(entries) => visitor.visit_map(Map {
                de: &self,
                entries: entries.iter(),
                value: None,
                fields: Some((fields, &suggested)),
                present: entries.iter().map(|(k, _)| k.name.as_str()).collect(),
            }),
            // `reset:` with nothing after it means `reset: {}`; for other structs an
            // empty value then reports the required fields that are missing.
            Value::Scalar(Scalar::Null, _) => visitor.visit_map(Map {
                de: &self,
                entries: [].iter(),
                value: None,
                fields: Some((fields, &suggested)),
                present: Vec::new(),
            }),
            _ if fields.is_empty() => Err(DeError::Message(format!(
                "expected `{{}}` (this takes no fields), found {}",
                self.found()
            ))),
            _ => Err(DeError::Message(format!(
                "expected a mapping with fields {}, found {}",
                crate::diagnostic::all_of(fields),
                self.found()
            ))),
        };
        match r {
            // `dealy: 5s` already said "did you mean `delay`": do not also say `delay` is missing.
            Err(DeError::MissingField(f)) if suggested.borrow().contains(&f) => {
                Err(DeError::Reported)
            }
            r => self.place(r),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Scalar(Scalar::Str(_) | Scalar::Int(_) | Scalar::Uint(_), text) => visitor
                .visit_enum(Enum {
                    de: &self,
                    variant: (text.as_str(), self.node.pos),
                    value: None,
                }),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                visitor.visit_enum(Enum {
                    de: &self,
                    variant: (k.name.as_str(), k.pos),
                    value: Some((v, self.path.key(&k.name))),
                })
            }
            _ => Err(DeError::Message(format!(
                "expected one of {}, found {}",
                one_of(variants),
                self.found()
            ))),
        };
        self.place(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple tuple_struct map
    }
}

impl NodeDeserializer<'_, '_> {
    fn found(&self) -> String {
        match &self.node.value {
            Value::Scalar(Scalar::Null, _) => "nothing (null)".into(),
            Value::Scalar(Scalar::Bool(b), _) => format!("boolean `{b}`"),
            Value::Scalar(Scalar::Str(s), _) => format!("string `{s}`"),
            Value::Scalar(_, text) => format!("number `{text}`"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

struct Seq<'a, 'de, 's, I> {
    de: &'a NodeDeserializer<'de, 's>,
    items: I,
    len: usize,
}

impl<'de, I> SeqAccess<'de> for Seq<'_, 'de, '_, I>
where
    I: Iterator<Item = (usize, &'de Node)>,
{
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => seed
                .deserialize(self.de.child(node, self.de.path.index(i)))
                .map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len)
    }
}

struct Map<'a, 'de, 's, I> {
    de: &'a NodeDeserializer<'de, 's>,
    entries: I,
    value: Option<(&'de Node, Path)>,
    /// Known fields (for structs) and the ones suggested for misspelt keys.
    fields: Option<(&'static [&'static str], &'a RefCell<Vec<&'static str>>)>,
    /// Every key written in this mapping.
    present: Vec<&'de str>,
}

impl<'de, I> MapAccess<'de> for Map<'_, 'de, '_, I>
where
    I: Iterator<Item = &'de (crate::yaml::Key, Node)>,
{
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, value) in self.entries.by_ref() {
            let path = self.de.path.key(&key.name);
            let mut name = key.name.as_str();
            if let Some((fields, suggested)) = self.fields {
                if !fields.contains(&name) {
                    self.de
                        .record(key.pos, &path, unknown_field_message(name, fields));
                    // Recover like a compiler: read a misspelt key as the field it
                    // most likely meant (when that field is not also given), so its
                    // value is still checked and no "missing field" follows.
                    match did_you_mean(name, fields.iter().copied()) {
                        Some(s)
                            if !self.present.contains(&s) && !suggested.borrow().contains(&s) =>
                        {
                            suggested.borrow_mut().push(s);
                            name = s;
                        }
                        _ => continue,
                    }
                }
            }
            self.value = Some((value, path));
            let key_de: de::value::StrDeserializer<'_, DeError> = name.into_deserializer();
            return seed.deserialize(key_de).map(Some).map_err(|e| match e {
                DeError::Reported => DeError::Reported,
                e => {
                    self.de
                        .record(key.pos, &self.de.path.key(&key.name), e.to_string());
                    DeError::Reported
                }
            });
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| DeError::Message("a value was asked for before its key".into()))?;
        seed.deserialize(self.de.child(node, path))
    }
}

struct Enum<'a, 'de, 's> {
    de: &'a NodeDeserializer<'de, 's>,
    variant: (&'de str, Pos),
    value: Option<(&'de Node, Path)>,
}

impl<'de> EnumAccess<'de> for Enum<'_, 'de, '_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let name: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(self.variant.0);
        match seed.deserialize(name) {
            Ok(v) => Ok((v, self)),
            Err(DeError::Reported) => Err(DeError::Reported),
            Err(e) => {
                let path = match &self.value {
                    Some((_, p)) => p.clone(),
                    None => self.de.path.clone(),
                };
                self.de.record(self.variant.1, &path, e.to_string());
                Err(DeError::Reported)
            }
        }
    }
}

impl<'de> VariantAccess<'de> for Enum<'_, 'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some((node, path)) => match &node.value {
                Value::Scalar(Scalar::Null, _) => Ok(()),
                Value::Map(m) if m.is_empty() => Ok(()),
                _ => {
                    self.de.record(
                        node.pos,
                        &path,
                        format!("`{}` takes no value", self.variant.0),
                    );
                    Err(DeError::Reported)
                }
            },
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some((node, path)) => seed.deserialize(self.de.child(node, path)),
            None => Err(DeError::Message(format!(
                "`{}` needs a value, written `{}: <value>`",
                self.variant.0, self.variant.0
            ))),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Some((node, path)) => self.de.child(node, path).deserialize_any(visitor),
            None => Err(DeError::Message(format!(
                "`{}` needs a list value",
                self.variant.0
            ))),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some((node, path)) => self
                .de
                .child(node, path)
                .deserialize_struct("", fields, visitor),
            None => Err(DeError::Message(format!(
                "`{}` needs a mapping with fields {}",
                self.variant.0,
                one_of(fields)
            ))),
        }
    }
}
