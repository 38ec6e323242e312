//! PromQL syntax, checked when an experiment is read: an expression Prometheus would
//! reject is a diagnostic at its field, not a failed query halfway through a run.
//!
//! The grammar is the `promql-parser` crate's (Prometheus' own, generated from the same
//! yacc file). Length and nesting are bounded first, so hostile input costs little.
//!
//! An expression may write [`WINDOW`] where a range duration goes
//! (`increase(x[$window])`): the runner binds it to the SLO's window clipped to the time
//! the load has run, as it does for the built-in kinds, so a range never reaches back
//! into an earlier experiment on a fleet that outlives each run.

use std::time::Duration;

pub use promql_parser::parser::Expr;

/// The placeholder for the SLO's (clipped) window in a raw expression.
pub const WINDOW: &str = "$window";

/// `expr` with every [`WINDOW`] replaced by `window` as a PromQL duration (`10s`,
/// `8250ms`; at least 1 ms).
pub fn bind_window(expr: &str, window: Duration) -> String {
    if !expr.contains(WINDOW) {
        return expr.to_owned();
    }
    expr.replace(WINDOW, &format_range(window))
}

/// Formats a range duration the way PromQL reads it (`10s`, `1500ms`; at least 1 ms,
/// since a zero range is not valid PromQL).
pub fn format_range(window: Duration) -> String {
    let ms = window.as_millis().max(1);
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Longest expression accepted.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of brackets of any kind accepted.
pub const MAX_DEPTH: usize = 32;

/// Parses `expr`, or says why it is not valid PromQL within the bounds. A [`WINDOW`]
/// placeholder is checked as a 1 minute range.
pub fn parse(expr: &str) -> Result<Expr, String> {
    if expr.len() > MAX_LEN {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_LEN} are accepted",
            expr.len()
        ));
    }
    let mut depth = 0usize;
    for c in expr.chars() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return Err(format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            ));
        }
    }
    promql_parser::parser::parse(&bind_window(expr, Duration::from_secs(60)))
        .map_err(|e| format!("invalid PromQL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_expressions_parse_and_errors_say_what_is_wrong() {
        parse(r#"sum(rate(http_server_requests_total{code=~"5.."}[30s])) / 2"#).unwrap();
        assert!(
            parse("sum(rate(x[5m])")
                .unwrap_err()
                .starts_with("invalid PromQL")
        );
        let err = parse("rate(x)").unwrap_err();
        assert!(err.contains("expected type matrix"), "{err}");
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().contains("nests deeper"));
        assert!(parse(&"1+".repeat(3000)).unwrap_err().contains("bytes"));
    }

    #[test]
    fn the_window_placeholder_binds_to_a_range_duration() {
        let expr = "sum(increase(x[$window])) or vector(0)";
        parse(expr).unwrap();
        assert_eq!(
            bind_window(expr, Duration::from_secs(60)),
            "sum(increase(x[60s])) or vector(0)"
        );
        assert_eq!(
            bind_window(
                "rate(x[$window]) / rate(y[$window])",
                Duration::from_millis(8250)
            ),
            "rate(x[8250ms]) / rate(y[8250ms])"
        );
        assert_eq!(bind_window("x[$window]", Duration::ZERO), "x[1ms]");
        assert_eq!(bind_window("up", Duration::from_secs(5)), "up");
        assert!(parse("rate(x[$windows])").is_err());
    }
}
