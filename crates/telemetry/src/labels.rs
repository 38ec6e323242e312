//! Bounded label values that survive every parser Faultline uses.
//!
//! `prometheus-parse` (the embedded scraper's parser) is regex-based: it splits label
//! pairs on `,` and `=`, ends the label block at the first `}`, and strips quotes
//! without unescaping. A label value containing any of `} , = " \` or a line break
//! silently loses or corrupts samples there, so such characters never reach the
//! exposition: every label value goes through [`LabelValue::new`], which replaces them
//! with `_` and caps the length. Route labels are templates (`/api/orders/:id`), never
//! raw paths, which keeps the label set bounded.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Longest label value kept, in bytes; longer values are cut at a character boundary.
pub const MAX_LABEL_VALUE_LEN: usize = 128;

/// The method label used for any method outside the standard set.
pub const OTHER_METHOD: &str = "OTHER";

/// Characters replaced by `_` in label values (see the module docs for why).
const FORBIDDEN: &[char] = &['{', '}', ',', '=', '"', '\\', '\n', '\r'];

/// Returns `value` with every character that breaks `prometheus-parse` replaced by `_`,
/// cut to at most [`MAX_LABEL_VALUE_LEN`] bytes.
pub fn sanitize_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_LABEL_VALUE_LEN));
    for c in value.chars() {
        let c = if FORBIDDEN.contains(&c) || c.is_control() {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_LABEL_VALUE_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// Turns a router template into the route label form: `{id}` segments become `:id`
/// (and `{*rest}` becomes `*rest`), then the result is sanitized.
///
/// `route_label("/api/orders/{id}") == "/api/orders/:id"`.
pub fn route_label(template: &str) -> String {
    let mut converted = String::with_capacity(template.len());
    for (i, segment) in template.split('/').enumerate() {
        if i > 0 {
            converted.push('/');
        }
        match segment
            .strip_prefix('{')
            .and_then(|inner| inner.strip_suffix('}'))
        {
            Some(param) if param.starts_with('*') => converted.push_str(param),
            Some(param) => {
                converted.push(':');
                converted.push_str(param);
            }
            None => converted.push_str(segment),
        }
    }
    sanitize_label_value(&converted)
}

/// Maps a request method onto a bounded set: the nine standard methods in upper case,
/// anything else [`OTHER_METHOD`].
pub fn method_label(method: &str) -> &'static str {
    const STANDARD: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or(OTHER_METHOD)
}

/// Maps a status code onto its three-digit label; codes outside 100–999 become `000`.
pub fn code_label(code: u16) -> LabelValue {
    if (100..=999).contains(&code) {
        LabelValue(Arc::from(code.to_string()))
    } else {
        LabelValue(Arc::from("000"))
    }
}

/// A label value that has been sanitized; the only way label values reach the
/// exposition. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue(Arc<str>);

impl LabelValue {
    /// Sanitizes `value` (see [`sanitize_label_value`]).
    pub fn new(value: &str) -> Self {
        LabelValue(Arc::from(sanitize_label_value(value)))
    }

    /// A route label from a router template (see [`route_label`]).
    pub fn route(template: &str) -> Self {
        LabelValue(Arc::from(route_label(template)))
    }

    /// A value known at compile time to be clean, e.g. an outcome or method name.
    pub(crate) fn from_static(value: &'static str) -> Self {
        debug_assert_eq!(sanitize_label_value(value), value);
        LabelValue(Arc::from(value))
    }

    /// The sanitized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_every_character_that_breaks_the_parser() {
        assert_eq!(sanitize_label_value(r#"a}b,c=d"e\f{g"#), "a_b_c_d_e_f_g");
        assert_eq!(sanitize_label_value("line\nbreak\r"), "line_break_");
        assert_eq!(sanitize_label_value("/api/orders/:id"), "/api/orders/:id");
    }

    #[test]
    fn sanitize_caps_length_at_a_char_boundary() {
        let long = "é".repeat(200);
        let out = sanitize_label_value(&long);
        assert!(out.len() <= MAX_LABEL_VALUE_LEN);
        assert_eq!(out.chars().count(), MAX_LABEL_VALUE_LEN / 2);
    }

    #[test]
    fn route_label_turns_braces_into_colon_params() {
        assert_eq!(route_label("/api/orders/{id}"), "/api/orders/:id");
        assert_eq!(route_label("/static/{*path}"), "/static/*path");
        assert_eq!(route_label("/stock/:sku"), "/stock/:sku");
        assert_eq!(route_label("/weird/{a,b}x"), "/weird/_a_b_x");
    }

    #[test]
    fn method_label_is_bounded() {
        assert_eq!(method_label("get"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("BREW"), OTHER_METHOD);
    }

    #[test]
    fn code_label_keeps_three_digits_only() {
        assert_eq!(code_label(503).as_str(), "503");
        assert_eq!(code_label(42).as_str(), "000");
    }
}
