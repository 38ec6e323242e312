//! Raw PromQL on the embedded store: the subset an SLO over a fleet's own counters,
//! gauges and histograms needs, evaluated as an instant query with Prometheus 2.x's
//! semantics, so a `promql` SLO gives the same verdict in local mode as it does against
//! a Prometheus server (compose mode runs the shipped ones on both).
//!
//! Supported (anything else is refused by [`check`] before a run starts, naming the
//! construct):
//! - number literals, parentheses, unary minus;
//! - instant selectors (the latest sample in the last 5 minutes, Prometheus' lookback)
//!   and range selectors as function arguments; no `offset` or `@`;
//! - `rate`, `increase`, `avg_over_time`, `min_over_time`, `max_over_time`,
//!   `histogram_quantile`, `vector`, `scalar`, `abs`, `clamp_min`, `clamp_max`;
//! - `sum`, `avg`, `min`, `max`, `count`, with `by (...)` or `without (...)`;
//! - `+ - * /` between scalars and vectors (vector–vector one-to-one, optionally
//!   `on (...)` or `ignoring (...)`), and `or`.
//!
//! Parsing is the spec's ([`faultline_spec::promql::parse`], which bounds the input and
//! uses the `promql-parser` crate's Prometheus grammar); only evaluation is ours, built on the store's `rate` and `histogram_quantile`, which follow Prometheus'
//! own code.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_spec::promql::Expr;
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, LabelModifier, VectorSelector};

use super::promql::{MatchOp, Matcher, Selector};
use super::tsdb::{CompiledSelector, Labels, Store, extrapolated_rate, histogram_quantile};
use super::{SloError, Threshold};

/// Prometheus' default lookback for instant selectors.
const LOOKBACK: Duration = Duration::from_secs(300);

/// The functions over a range selector the engine evaluates ([`eval`] matches each).
const RANGE_FNS: [&str; 5] = [
    "rate",
    "increase",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
];
/// The functions over instant values the engine evaluates ([`call_plain`] matches each).
const PLAIN_FNS: [&str; 6] = [
    "histogram_quantile",
    "vector",
    "scalar",
    "abs",
    "clamp_min",
    "clamp_max",
];

/// A value of the evaluator: a scalar or an instant vector (series without metric
/// names, as every function and operator here drops them).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// One value per label set.
    Vector(Vec<(Labels, f64)>),
}

/// Parses `expr` and checks that the embedded engine can evaluate it.
pub fn check(expr: &str) -> Result<Expr, String> {
    let parsed = faultline_spec::promql::parse(expr)?;
    supported(&parsed)?;
    Ok(parsed)
}

/// Evaluates a raw PromQL SLO on `store` at `at_ms`: the value it is judged by (the
/// worst series when several come back, as the Prometheus backend does) and a note.
pub fn evaluate_slo(
    store: &Store,
    expr: &str,
    threshold: &Threshold,
    at_ms: i64,
) -> Result<(Option<f64>, Option<String>), SloError> {
    let parsed = check(expr).map_err(|reason| SloError::Unsupported {
        backend: "embedded",
        reason,
    })?;
    let values = match eval(store, &parsed, at_ms)? {
        Value::Scalar(v) => vec![v],
        Value::Vector(v) => v.into_iter().map(|(_, v)| v).collect(),
    };
    Ok(super::worst(threshold, &values))
}

fn unsupported(what: impl std::fmt::Display) -> String {
    format!(
        "{what} is not in the embedded engine's PromQL subset (docs/slos.md lists it; a Prometheus server runs everything)"
    )
}

/// The one place the subset is decided: walks the tree without evaluating it.
fn supported(expr: &Expr) -> Result<(), String> {
    match expr {
        Expr::NumberLiteral(_) => Ok(()),
        Expr::Paren(p) => supported(&p.expr),
        Expr::Unary(u) => supported(&u.expr),
        Expr::VectorSelector(vs) => selector(vs).map(|_| ()),
        Expr::MatrixSelector(_) => Err(unsupported(
            "a range selector outside a function (an SLO needs an instant value)",
        )),
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !["sum", "avg", "min", "max", "count"].contains(&op.as_str()) {
                return Err(unsupported(format!("the aggregation `{op}`")));
            }
            if a.param.is_some() {
                return Err(unsupported(format!("a parameter to `{op}`")));
            }
            supported(&a.expr)
        }
        Expr::Binary(b) => {
            let op = b.op.to_string();
            if !["+", "-", "*", "/", "or"].contains(&op.as_str()) {
                return Err(unsupported(format!("the operator `{op}`")));
            }
            if let Some(m) = &b.modifier {
                if m.return_bool {
                    return Err(unsupported("`bool`"));
                }
                if !matches!(
                    m.card,
                    parser::VectorMatchCardinality::OneToOne
                        | parser::VectorMatchCardinality::ManyToMany
                ) {
                    return Err(unsupported("`group_left`/`group_right`"));
                }
            }
            supported(&b.lhs)?;
            supported(&b.rhs)
        }
        Expr::Call(call) => {
            let name = call.func.name;
            if RANGE_FNS.contains(&name) {
                match call.args.args.first().map(|a| a.as_ref()) {
                    Some(Expr::MatrixSelector(m)) => selector(&m.vs).map(|_| ()),
                    _ => Err(unsupported(format!(
                        "`{name}` over anything but a range selector (subqueries)"
                    ))),
                }
            } else if PLAIN_FNS.contains(&name) {
                call.args.args.iter().try_for_each(|a| supported(a))
            } else {
                Err(unsupported(format!("the function `{name}`")))
            }
        }
        Expr::Subquery(_) => Err(unsupported("a subquery")),
        Expr::StringLiteral(_) => Err(unsupported("a string literal")),
        Expr::Extension(_) => Err(unsupported("an extension expression")),
    }
}

/// The store selector a PromQL selector names.
fn selector(vs: &VectorSelector) -> Result<Selector, String> {
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(unsupported("`offset` or `@`"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` inside a selector"));
    }
    let mut metric = vs.name.clone();
    let mut matchers = Vec::new();
    for m in &vs.matchers.matchers {
        let op = match &m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        if m.name == "__name__" {
            if op != MatchOp::Equal {
                return Err(unsupported("a `__name__` matcher other than `=`"));
            }
            metric = Some(m.value.clone());
            continue;
        }
        matchers.push(Matcher {
            label: m.name.clone(),
            op,
            value: m.value.clone(),
        });
    }
    let metric = metric.ok_or_else(|| unsupported("a selector without a metric name"))?;
    Ok(Selector { metric, matchers })
}

fn compiled(vs: &VectorSelector) -> Result<CompiledSelector, SloError> {
    let s = selector(vs).map_err(|reason| SloError::Unsupported {
        backend: "embedded",
        reason,
    })?;
    CompiledSelector::new(&s)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Evaluates a checked expression.
fn eval(store: &Store, expr: &Expr, at_ms: i64) -> Result<Value, SloError> {
    Ok(match expr {
        Expr::NumberLiteral(n) => Value::Scalar(n.val),
        Expr::Paren(p) => eval(store, &p.expr, at_ms)?,
        Expr::Unary(u) => map_values(eval(store, &u.expr, at_ms)?, |v| -v),
        Expr::VectorSelector(vs) => Value::Vector(store.latest(&compiled(vs)?, LOOKBACK, at_ms)),
        Expr::Aggregate(a) => {
            let Value::Vector(input) = eval(store, &a.expr, at_ms)? else {
                return Err(type_error("an aggregation needs a vector"));
            };
            aggregate(&a.op.to_string(), a.modifier.as_ref(), input)
        }
        Expr::Binary(b) => {
            let lhs = eval(store, &b.lhs, at_ms)?;
            let rhs = eval(store, &b.rhs, at_ms)?;
            let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
            binary(&b.op.to_string(), matching, lhs, rhs)?
        }
        Expr::Call(call) => {
            let name = call.func.name;
            let args = &call.args.args;
            if let Some(Expr::MatrixSelector(m)) = args.first().map(|a| a.as_ref()) {
                let sel = compiled(&m.vs)?;
                let start = at_ms - ms(m.range);
                let mut out = Vec::new();
                for (labels, samples) in store.range(&sel, m.range, at_ms) {
                    let value = match name {
                        "rate" => extrapolated_rate(&samples, start, at_ms, true, true),
                        "increase" => extrapolated_rate(&samples, start, at_ms, true, false),
                        "avg_over_time" => (!samples.is_empty()).then(|| {
                            samples.iter().map(|s| s.1).sum::<f64>() / samples.len() as f64
                        }),
                        "min_over_time" => samples.iter().map(|s| s.1).reduce(f64::min),
                        "max_over_time" => samples.iter().map(|s| s.1).reduce(f64::max),
                        other => return Err(type_error(&unsupported(format!("`{other}`")))),
                    };
                    if let Some(v) = value {
                        out.push((labels.clone(), v));
                    }
                }
                return Ok(Value::Vector(out));
            }
            let values = args
                .iter()
                .map(|a| eval(store, a, at_ms))
                .collect::<Result<Vec<_>, _>>()?;
            call_plain(name, values)?
        }
        other => {
            return Err(SloError::Unsupported {
                backend: "embedded",
                reason: unsupported(format!("`{other}`")),
            });
        }
    })
}

fn type_error(message: &str) -> SloError {
    SloError::Unsupported {
        backend: "embedded",
        reason: message.to_string(),
    }
}

fn map_values(v: Value, f: impl Fn(f64) -> f64) -> Value {
    match v {
        Value::Scalar(s) => Value::Scalar(f(s)),
        Value::Vector(v) => Value::Vector(v.into_iter().map(|(l, x)| (l, f(x))).collect()),
    }
}

fn call_plain(name: &str, mut args: Vec<Value>) -> Result<Value, SloError> {
    let scalar = |v: &Value, what: &str| match v {
        Value::Scalar(s) => Ok(*s),
        Value::Vector(_) => Err(type_error(&format!(
            "`{name}` needs a number as its {what} argument"
        ))),
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(type_error(&format!("`{name}` takes {n} argument(s)")))
        }
    };
    Ok(match name {
        "vector" => {
            arity(1)?;
            Value::Vector(vec![(Labels::new(), scalar(&args[0], "first")?)])
        }
        "scalar" => {
            arity(1)?;
            match &args[0] {
                Value::Vector(v) if v.len() == 1 => Value::Scalar(v[0].1),
                Value::Vector(_) => Value::Scalar(f64::NAN),
                Value::Scalar(s) => Value::Scalar(*s),
            }
        }
        "abs" => {
            arity(1)?;
            map_values(args.remove(0), f64::abs)
        }
        "clamp_min" | "clamp_max" => {
            arity(2)?;
            let bound = scalar(&args[1], "second")?;
            if name == "clamp_min" {
                map_values(args.remove(0), |v| v.max(bound))
            } else {
                map_values(args.remove(0), |v| v.min(bound))
            }
        }
        "histogram_quantile" => {
            arity(2)?;
            let q = scalar(&args[0], "first")?;
            let Value::Vector(buckets) = args.remove(1) else {
                return Err(type_error("`histogram_quantile` needs a vector of buckets"));
            };
            let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for (mut labels, count) in buckets {
                // A bucket without a parseable `le` is ignored, as Prometheus ignores it.
                let Some(le) = labels
                    .remove("le")
                    .and_then(|s| super::tsdb::parse_float(&s))
                else {
                    continue;
                };
                groups.entry(labels).or_default().push((le, count));
            }
            Value::Vector(
                groups
                    .into_iter()
                    .map(|(labels, mut b)| (labels, histogram_quantile(q, &mut b)))
                    .collect(),
            )
        }
        other => return Err(type_error(&unsupported(format!("the function `{other}`")))),
    })
}

/// The labels a series is grouped or matched by under a `by`/`on` (include) or
/// `without`/`ignoring` (exclude) modifier; all of them without one.
fn key(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        None => labels.clone(),
        Some(LabelModifier::Include(keep)) => labels
            .iter()
            .filter(|(k, _)| keep.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(drop)) => labels
            .iter()
            .filter(|(k, _)| !drop.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn aggregate(op: &str, modifier: Option<&LabelModifier>, input: Vec<(Labels, f64)>) -> Value {
    // No modifier aggregates everything into one series with no labels.
    let grouping =
        modifier
            .cloned()
            .unwrap_or(LabelModifier::Include(promql_parser::label::Labels::new(
                Vec::new(),
            )));
    let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
    for (labels, v) in input {
        groups
            .entry(key(&labels, Some(&grouping)))
            .or_default()
            .push(v);
    }
    Value::Vector(
        groups
            .into_iter()
            .map(|(labels, values)| {
                let n = values.len() as f64;
                let v = match op {
                    "sum" => values.iter().sum(),
                    "avg" => values.iter().sum::<f64>() / n,
                    "min" => values.iter().copied().fold(f64::NAN, f64::min),
                    "max" => values.iter().copied().fold(f64::NAN, f64::max),
                    _ => n, // count; `supported` admits nothing else
                };
                (labels, v)
            })
            .collect(),
    )
}

fn arith(op: &str, a: f64, b: f64) -> f64 {
    match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        _ => a / b, // `/`; `supported` admits nothing else
    }
}

fn binary(
    op: &str,
    matching: Option<&LabelModifier>,
    lhs: Value,
    rhs: Value,
) -> Result<Value, SloError> {
    Ok(match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) if op != "or" => Value::Scalar(arith(op, a, b)),
        (Value::Vector(v), Value::Scalar(b)) if op != "or" => {
            Value::Vector(v.into_iter().map(|(l, a)| (l, arith(op, a, b))).collect())
        }
        (Value::Scalar(a), Value::Vector(v)) if op != "or" => {
            Value::Vector(v.into_iter().map(|(l, b)| (l, arith(op, a, b))).collect())
        }
        (Value::Vector(left), Value::Vector(right)) => {
            if op == "or" {
                let seen: Vec<Labels> = left.iter().map(|(l, _)| key(l, matching)).collect();
                let mut out = left;
                out.extend(
                    right
                        .into_iter()
                        .filter(|(l, _)| !seen.contains(&key(l, matching))),
                );
                Value::Vector(out)
            } else {
                let mut by_key: BTreeMap<Labels, f64> = BTreeMap::new();
                for (l, v) in right {
                    if by_key.insert(key(&l, matching), v).is_some() {
                        return Err(type_error(
                            "many-to-many matching: several right-hand series share a label set",
                        ));
                    }
                }
                // As Prometheus: two left-hand series matching the same right-hand one
                // would give one result label set twice, which is an error, not a pick.
                let mut out: BTreeMap<Labels, f64> = BTreeMap::new();
                for (l, a) in left {
                    let k = key(&l, matching);
                    let Some(b) = by_key.get(&k) else { continue };
                    if out.insert(k, arith(op, a, *b)).is_some() {
                        return Err(type_error(
                            "many-to-many matching: several left-hand series share a label set",
                        ));
                    }
                }
                Value::Vector(out.into_iter().collect())
            }
        }
        _ => return Err(type_error("`or` needs vectors on both sides")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::Unit;
    use crate::slo::tsdb::labels;

    /// Two services' request counters, 10 s apart: orders grows by 100/s (5 of them
    /// errors), payments by 150/s; a queue gauge; one latency histogram.
    fn store() -> Store {
        let mut s = Store::new(Duration::from_secs(600));
        for step in 0..=6i64 {
            let t = step * 10_000;
            let n = step as f64 * 10.0;
            let counter = |s: &mut Store, svc: &str, code: &str, per_s: f64| {
                s.append(
                    "http_server_requests_total",
                    labels(&[("service", svc), ("code", code)]),
                    t,
                    per_s * n,
                );
            };
            counter(&mut s, "orders", "200", 95.0);
            counter(&mut s, "orders", "503", 5.0);
            counter(&mut s, "payments", "200", 150.0);
            s.append(
                "queue_depth",
                labels(&[("service", "notifications")]),
                t,
                step as f64 * 2.0,
            );
            for (le, share) in [("0.1", 0.5), ("0.5", 0.9), ("+Inf", 1.0)] {
                s.append(
                    "lat_bucket",
                    labels(&[("service", "orders"), ("le", le)]),
                    t,
                    share * 100.0 * n,
                );
            }
        }
        s
    }

    fn value(expr: &str) -> Value {
        eval(&store(), &check(expr).unwrap(), 60_000).unwrap()
    }

    fn single(expr: &str) -> f64 {
        match value(expr) {
            Value::Scalar(v) => v,
            Value::Vector(v) => {
                assert_eq!(v.len(), 1, "{expr}: {v:?}");
                v[0].1
            }
        }
    }

    #[test]
    fn rates_sums_and_ratios_match_prometheus_arithmetic() {
        assert!(
            (single(r#"sum(rate(http_server_requests_total{service="orders"}[30s]))"#) - 100.0)
                .abs()
                < 1e-9
        );
        let share = single(
            r#"sum(rate(http_server_requests_total{service="orders",code=~"5.."}[30s])) / sum(rate(http_server_requests_total{service="orders"}[30s]))"#,
        );
        assert!((share - 0.05).abs() < 1e-9, "{share}");
        let amplification = single(
            r#"sum(increase(http_server_requests_total{service="payments"}[30s])) / sum(increase(http_server_requests_total{service="orders"}[30s]))"#,
        );
        assert!((amplification - 1.5).abs() < 1e-9);
        assert!((single("-(1 + 2) * 3") + 9.0).abs() < 1e-12);
    }

    #[test]
    fn grouping_matching_and_or_keep_prometheus_label_rules() {
        let Value::Vector(by) = value("sum by (service) (rate(http_server_requests_total[30s]))")
        else {
            panic!()
        };
        assert_eq!(by.len(), 2);
        let Value::Vector(joined) = value(
            r#"sum by (service) (rate(http_server_requests_total{code=~"5.."}[30s])) / sum by (service) (rate(http_server_requests_total[30s]))"#,
        ) else {
            panic!()
        };
        // payments has no 5xx series: one-to-one matching leaves only orders.
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].0, labels(&[("service", "orders")]));
        // orders has two series (200 and 503) on the left for one right-hand `service`:
        // Prometheus refuses that match, and so does the engine.
        let err = eval(
            &store(),
            &check(
                r#"rate(http_server_requests_total[30s]) / on (service) sum by (service) (rate(http_server_requests_total[30s]))"#,
            )
            .unwrap(),
            60_000,
        )
        .unwrap_err();
        assert!(err.to_string().contains("left-hand"), "{err}");
        // The usual "no errors counts as zero" idiom.
        assert_eq!(
            single(r#"sum(rate(http_server_requests_total{code="418"}[30s])) or vector(0)"#),
            0.0
        );
        assert_eq!(single(r#"max_over_time(queue_depth[30s])"#), 12.0);
        assert_eq!(single(r#"queue_depth"#), 12.0);
        let p90 = single(r#"histogram_quantile(0.9, sum by (le) (rate(lat_bucket[30s])))"#);
        assert!((p90 - 0.5).abs() < 1e-9, "{p90}");
    }

    #[test]
    fn an_empty_result_is_no_data_and_several_series_report_the_worst() {
        let threshold = Threshold {
            max: Some(0.01),
            min: None,
            unit: Unit::Number,
        };
        let (v, note) =
            evaluate_slo(&store(), r#"rate(nothing_total[30s])"#, &threshold, 60_000).unwrap();
        assert_eq!(v, None);
        assert!(note.unwrap().contains("empty result"));
        let (v, note) = evaluate_slo(
            &store(),
            r#"sum by (service) (rate(http_server_requests_total[30s]))"#,
            &threshold,
            60_000,
        )
        .unwrap();
        assert!((v.unwrap() - 150.0).abs() < 1e-9);
        assert!(note.unwrap().contains("2 series"));
    }

    #[test]
    fn constructs_outside_the_subset_are_named_before_anything_runs() {
        for (expr, named) in [
            ("topk(3, up)", "topk"),
            ("rate(up[5m]) > 1", ">"),
            ("up offset 5m", "offset"),
            (
                "label_replace(up, \"a\", \"b\", \"c\", \"d\")",
                "label_replace",
            ),
            ("rate(up[5m:1m])", "subqueries"),
            ("up[5m]", "range selector"),
            ("a * on (x) group_left b", "group_left"),
            ("sum(", "invalid PromQL"),
        ] {
            let err = check(expr).unwrap_err();
            assert!(err.contains(named), "{expr}: {err}");
        }
    }
}
