//! A small in-memory time-series store and the PromQL functions the SLO kinds need,
//! computed exactly as Prometheus 2.x computes them:
//!
//! - [`extrapolated_rate`] is `promql/functions.go:extrapolatedRate` (counter resets,
//!   extrapolation to the range boundaries but never below zero, the 1.1 × average
//!   interval threshold);
//! - [`histogram_quantile`] is `promql/quantile.go:bucketQuantile` (sorting, coalescing
//!   equal bounds, forcing monotonic counts, linear interpolation inside the bucket,
//!   the `+Inf` rules).
//!
//! Ranges are closed (`[at - window, at]`) as in Prometheus 2.x.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use regex::Regex;

use super::SloError;
use super::promql::{MatchOp, Selector};

/// A label set, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// One sample: Unix milliseconds and value.
pub type Sample = (i64, f64);

/// A selector with its regular expressions compiled (anchored, as PromQL anchors them).
#[derive(Debug)]
pub struct CompiledSelector {
    metric: String,
    matchers: Vec<(String, CompiledOp)>,
}

#[derive(Debug)]
enum CompiledOp {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl CompiledSelector {
    /// Compiles `selector`; an invalid regular expression is an error.
    pub fn new(selector: &Selector) -> Result<Self, SloError> {
        let anchored = |re: &str| {
            Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| SloError::InvalidConfig(format!("label regex `{re}`: {e}")))
        };
        let matchers = selector
            .matchers
            .iter()
            .map(|m| {
                let op = match m.op {
                    MatchOp::Equal => CompiledOp::Equal(m.value.clone()),
                    MatchOp::NotEqual => CompiledOp::NotEqual(m.value.clone()),
                    MatchOp::Regex => CompiledOp::Regex(anchored(&m.value)?),
                    MatchOp::NotRegex => CompiledOp::NotRegex(anchored(&m.value)?),
                };
                Ok((m.label.clone(), op))
            })
            .collect::<Result<_, SloError>>()?;
        Ok(CompiledSelector {
            metric: selector.metric.clone(),
            matchers,
        })
    }

    fn matches(&self, name: &str, labels: &Labels) -> bool {
        name == self.metric
            && self.matchers.iter().all(|(label, op)| {
                // A missing label matches as the empty string, as in PromQL.
                let value = labels.get(label).map_or("", String::as_str);
                match op {
                    CompiledOp::Equal(v) => value == v,
                    CompiledOp::NotEqual(v) => value != v,
                    CompiledOp::Regex(re) => re.is_match(value),
                    CompiledOp::NotRegex(re) => !re.is_match(value),
                }
            })
    }
}

/// Samples of one series, oldest first.
#[derive(Debug, Default, Clone)]
struct Series {
    samples: VecDeque<Sample>,
}

/// The store: series by name and label set.
#[derive(Debug, Default)]
pub struct Store {
    series: HashMap<String, HashMap<Labels, Series>>,
    retention: Duration,
}

impl Store {
    /// An empty store that keeps samples for `retention` behind the newest append.
    pub fn new(retention: Duration) -> Self {
        Store {
            series: HashMap::new(),
            retention,
        }
    }

    /// Appends a sample. Out-of-order samples (older than the series' newest) are
    /// dropped, as Prometheus drops them.
    pub fn append(&mut self, name: &str, labels: Labels, t_ms: i64, value: f64) {
        let by_labels = self.series.entry(name.to_string()).or_default();
        let series = by_labels.entry(labels).or_default();
        if series.samples.back().is_some_and(|(last, _)| *last >= t_ms) {
            return;
        }
        series.samples.push_back((t_ms, value));
        let keep_from = t_ms - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        while series.samples.front().is_some_and(|(t, _)| *t < keep_from) {
            series.samples.pop_front();
        }
    }

    /// Number of series held.
    pub fn series_count(&self) -> usize {
        self.series.values().map(HashMap::len).sum()
    }

    /// Every series matching `selector`.
    fn matching<'s, 'q>(
        &'s self,
        selector: &'q CompiledSelector,
    ) -> impl Iterator<Item = (&'s Labels, &'s Series)> + use<'s, 'q> {
        self.series
            .get(&selector.metric)
            .into_iter()
            .flatten()
            .filter(|(labels, _)| selector.matches(&selector.metric, labels))
    }

    /// Samples of every series matching `selector` inside `[at - window, at]`.
    pub fn range(
        &self,
        selector: &CompiledSelector,
        window: Duration,
        at_ms: i64,
    ) -> Vec<(&Labels, Vec<Sample>)> {
        let start = at_ms - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.matching(selector)
            .map(|(labels, series)| {
                let samples = series
                    .samples
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t >= start && *t <= at_ms)
                    .collect();
                (labels, samples)
            })
            .collect()
    }

    /// The newest sample inside `[at - lookback, at]` of every series matching
    /// `selector` that has one: an instant selector's value.
    pub fn latest(
        &self,
        selector: &CompiledSelector,
        lookback: Duration,
        at_ms: i64,
    ) -> Vec<(Labels, f64)> {
        let start = at_ms - i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
        self.matching(selector)
            .filter_map(|(labels, series)| {
                let (t, v) = series.samples.iter().rev().find(|(t, _)| *t <= at_ms)?;
                (*t >= start).then(|| (labels.clone(), *v))
            })
            .collect()
    }

    /// `rate(selector[window])` at `at_ms`, one value per series that has one.
    pub fn rate(
        &self,
        selector: &CompiledSelector,
        window: Duration,
        at_ms: i64,
    ) -> Vec<(Labels, f64)> {
        let start = at_ms - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.range(selector, window, at_ms)
            .into_iter()
            .filter_map(|(labels, samples)| {
                extrapolated_rate(&samples, start, at_ms, true, true).map(|v| (labels.clone(), v))
            })
            .collect()
    }

    /// `sum(rate(selector[window]))`; `None` when no series has a rate (PromQL's empty result).
    pub fn sum_rate(
        &self,
        selector: &CompiledSelector,
        window: Duration,
        at_ms: i64,
    ) -> Option<f64> {
        let rates = self.rate(selector, window, at_ms);
        if rates.is_empty() {
            None
        } else {
            Some(rates.iter().map(|(_, v)| v).sum())
        }
    }

    /// `histogram_quantile(q, sum by (le) (rate(buckets[window])))`; `None` when no
    /// bucket series has a rate. NaN when the buckets hold no observations.
    pub fn quantile(
        &self,
        q: f64,
        buckets: &CompiledSelector,
        window: Duration,
        at_ms: i64,
    ) -> Option<f64> {
        let rates = self.rate(buckets, window, at_ms);
        if rates.is_empty() {
            return None;
        }
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (labels, rate) in rates {
            // A bucket series without a parseable `le` is dropped, as `sum by (le)`
            // would group it under an empty le that histogram_quantile then ignores.
            let Some(le) = labels.get("le").and_then(|s| parse_float(s)) else {
                continue;
            };
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += rate;
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        if buckets.is_empty() {
            return None;
        }
        Some(histogram_quantile(q, &mut buckets))
    }
}

/// A label set from pairs (tests build series with it).
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Parses a Prometheus float (`+Inf`, `-Inf`, `NaN`, or a decimal).
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Prometheus' `extrapolatedRate` for `rate()` (`is_rate`) and `increase()` over
/// the closed range `[range_start_ms, range_end_ms]`. `samples` are the samples in
/// that range, oldest first. Returns `None` with fewer than two samples, as
/// Prometheus returns no value then.
pub fn extrapolated_rate(
    samples: &[Sample],
    range_start_ms: i64,
    range_end_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[samples.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        // A drop means the counter restarted from zero: add what it had reached.
        let mut previous = 0.0;
        for &(_, v) in samples {
            if v < previous {
                result += previous;
            }
            previous = v;
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let mut duration_to_start = secs(first_t - range_start_ms);
    let duration_to_end = secs(range_end_ms - last_t);
    let sampled_interval = secs(last_t - first_t);
    let average_between_samples = sampled_interval / (samples.len() - 1) as f64;

    if is_counter && result > 0.0 && first_v >= 0.0 {
        // Counters cannot go below zero: extrapolate at most to where it would be zero.
        let duration_to_zero = sampled_interval * (first_v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }

    let threshold = average_between_samples * 1.1;
    let mut extrapolate_to = sampled_interval;
    extrapolate_to += if duration_to_start < threshold {
        duration_to_start
    } else {
        average_between_samples / 2.0
    };
    extrapolate_to += if duration_to_end < threshold {
        duration_to_end
    } else {
        average_between_samples / 2.0
    };
    result *= extrapolate_to / sampled_interval;
    if is_rate {
        result /= secs(range_end_ms - range_start_ms);
    }
    Some(result)
}

/// Prometheus' `bucketQuantile`: the `q` quantile of cumulative `(upper bound, count)`
/// buckets. NaN without a `+Inf` bucket, with fewer than two buckets or with no
/// observations; `-Inf`/`+Inf` for `q` below 0 or above 1.
pub fn histogram_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.last().is_some_and(|(le, _)| *le == f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same upper bound.
    buckets.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    // Force monotonic counts: precision loss in rates can make a bucket smaller than
    // the one before it.
    let mut max = f64::NEG_INFINITY;
    for bucket in buckets.iter_mut() {
        if bucket.1 > max {
            max = bucket.1;
        } else {
            bucket.1 = max;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // First bucket (excluding +Inf) whose count reaches the rank.
    let last = buckets.len() - 1;
    let b = buckets[..last]
        .iter()
        .position(|(_, count)| *count >= rank)
        .unwrap_or(last);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let bucket_end = buckets[b].0;
    let mut count = buckets[b].1;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn at(secs: &[(f64, f64)]) -> Vec<Sample> {
        secs.iter()
            .map(|(t, v)| ((t * 1000.0) as i64, *v))
            .collect()
    }

    #[test]
    fn rate_of_a_steady_counter_extrapolates_to_the_range_start() {
        // Samples at 1..=10 s, +10 each; range [0, 10]. Prometheus: increase 100, rate 10.
        let s: Vec<_> = (1..=10)
            .map(|i| (f64::from(i), f64::from(i) * 10.0))
            .collect();
        let s = at(&s);
        assert!(close(
            extrapolated_rate(&s, 0, 10_000, true, false).unwrap(),
            100.0
        ));
        assert!(close(
            extrapolated_rate(&s, 0, 10_000, true, true).unwrap(),
            10.0
        ));
    }

    #[test]
    fn increase_adds_the_pre_reset_value_after_a_counter_reset() {
        // 10,20,30 then reset to 5,15,25 at 1..=6 s; range [0, 6].
        // raw 15 + reset 30 = 45; extrapolated by 6/5 = 54; rate 9.
        let s = at(&[
            (1., 10.),
            (2., 20.),
            (3., 30.),
            (4., 5.),
            (5., 15.),
            (6., 25.),
        ]);
        assert!(close(
            extrapolated_rate(&s, 0, 6_000, true, false).unwrap(),
            54.0
        ));
        assert!(close(
            extrapolated_rate(&s, 0, 6_000, true, true).unwrap(),
            9.0
        ));
    }

    #[test]
    fn extrapolation_stops_at_half_an_interval_when_samples_end_early() {
        // Samples at 5,6,7 s (100,110,120) in [0,10]: 20 × (2 + 0.5 + 0.5) / 2 = 30; rate 3.
        let s = at(&[(5., 100.), (6., 110.), (7., 120.)]);
        assert!(close(
            extrapolated_rate(&s, 0, 10_000, true, false).unwrap(),
            30.0
        ));
        assert!(close(
            extrapolated_rate(&s, 0, 10_000, true, true).unwrap(),
            3.0
        ));
    }

    #[test]
    fn extrapolation_never_reaches_below_zero_for_counters() {
        // 1,11,21 at 5,6,7 s: zero is 0.1 s before the first sample, so
        // 20 × (2 + 0.1 + 0.5) / 2 = 26.
        let s = at(&[(5., 1.), (6., 11.), (7., 21.)]);
        assert!(close(
            extrapolated_rate(&s, 0, 10_000, true, false).unwrap(),
            26.0
        ));
    }

    #[test]
    fn rate_needs_two_samples() {
        assert_eq!(
            extrapolated_rate(&at(&[(1., 5.)]), 0, 10_000, true, true),
            None
        );
        assert_eq!(extrapolated_rate(&[], 0, 10_000, true, true), None);
    }

    fn buckets() -> Vec<(f64, f64)> {
        vec![(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (f64::INFINITY, 40.0)]
    }

    #[test]
    fn histogram_quantile_interpolates_linearly_inside_the_bucket() {
        assert!(close(histogram_quantile(0.5, &mut buckets()), 0.15));
        assert!(close(histogram_quantile(0.99, &mut buckets()), 0.488));
        assert!(close(histogram_quantile(1.0, &mut buckets()), 0.5));
        // First bucket starts at zero: rank 2 of 10 → 0.02.
        assert!(close(histogram_quantile(0.05, &mut buckets()), 0.02));
    }

    #[test]
    fn histogram_quantile_in_the_inf_bucket_returns_the_highest_finite_bound() {
        let mut b = vec![(0.1, 10.0), (0.2, 30.0), (f64::INFINITY, 40.0)];
        assert!(close(histogram_quantile(0.9, &mut b), 0.2));
    }

    #[test]
    fn histogram_quantile_edge_cases_match_prometheus() {
        assert!(histogram_quantile(0.5, &mut vec![(0.1, 1.0), (0.2, 2.0)]).is_nan());
        assert!(histogram_quantile(0.5, &mut vec![(0.1, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert!(histogram_quantile(0.5, &mut vec![(f64::INFINITY, 3.0)]).is_nan());
        assert_eq!(histogram_quantile(-0.1, &mut buckets()), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.1, &mut buckets()), f64::INFINITY);
        // Unsorted, duplicated and non-monotonic input is normalized first:
        // (0.1, 10), (0.2, 10 forced up from 8), (+Inf, 20); q=0.75 → rank 15 → +Inf bucket → 0.2.
        let mut messy = vec![(f64::INFINITY, 20.0), (0.2, 8.0), (0.1, 4.0), (0.1, 6.0)];
        assert!(close(histogram_quantile(0.75, &mut messy), 0.2));
        // q=0.25 → rank 5 → first bucket (0, 0.1] with 10 → 0.05.
        let mut messy = vec![(f64::INFINITY, 20.0), (0.2, 8.0), (0.1, 4.0), (0.1, 6.0)];
        assert!(close(histogram_quantile(0.25, &mut messy), 0.05));
    }

    #[test]
    fn store_quantile_sums_bucket_rates_across_series_by_le() {
        let mut store = Store::new(Duration::from_secs(60));
        // Two instances with the same buckets; each gains 10 obs/s ≤0.1 and 10 more ≤0.2.
        for instance in ["a", "b"] {
            for (le, per_sec) in [("0.1", 10.0), ("0.2", 20.0), ("+Inf", 20.0)] {
                let labels: Labels = [("le", le), ("instance", instance), ("service", "s")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                for t in 0..=10 {
                    store.append("h_bucket", labels.clone(), t * 1000, per_sec * t as f64);
                }
            }
        }
        let sel = CompiledSelector::new(&Selector {
            metric: "h_bucket".into(),
            matchers: vec![super::super::promql::Matcher::equal("service", "s")],
        })
        .unwrap();
        // rank 0.75 × 40 = 30 in (0.1, 0.2] holding 20 from 20 → 0.1 + 0.1 × 10/20.
        let q = store
            .quantile(0.75, &sel, Duration::from_secs(10), 10_000)
            .unwrap();
        assert!(close(q, 0.15), "{q}");
        assert_eq!(
            store.quantile(0.75, &sel, Duration::from_secs(10), 100_000),
            None
        );
    }

    #[test]
    fn store_drops_out_of_order_samples_and_old_ones_past_retention() {
        let mut store = Store::new(Duration::from_secs(5));
        let labels = Labels::new();
        store.append("c", labels.clone(), 10_000, 1.0);
        store.append("c", labels.clone(), 9_000, 0.5);
        store.append("c", labels.clone(), 16_000, 2.0);
        let sel = CompiledSelector::new(&Selector {
            metric: "c".into(),
            matchers: vec![],
        })
        .unwrap();
        let got = store.range(&sel, Duration::from_secs(100), 20_000);
        assert_eq!(got[0].1, vec![(16_000, 2.0)]);
    }

    #[test]
    fn latest_is_the_newest_sample_at_or_before_the_time_within_the_lookback() {
        let mut store = Store::new(Duration::from_secs(600));
        let sel = CompiledSelector::new(&Selector {
            metric: "g".into(),
            matchers: vec![],
        })
        .unwrap();
        for (t, v) in [(10_000, 1.0), (20_000, 2.0), (30_000, 3.0)] {
            store.append("g", Labels::new(), t, v);
        }
        let lookback = Duration::from_secs(5);
        assert_eq!(
            store.latest(&sel, lookback, 25_000),
            vec![(Labels::new(), 2.0)]
        );
        assert_eq!(
            store.latest(&sel, lookback, 30_000),
            vec![(Labels::new(), 3.0)]
        );
        // The newest sample before the time is older than the lookback: stale, no value.
        assert!(store.latest(&sel, lookback, 29_000).is_empty());
        assert!(store.latest(&sel, lookback, 5_000).is_empty());
    }
}
