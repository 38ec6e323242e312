//! The one standard set of latency histogram buckets.

/// Upper bounds in seconds, used by every duration histogram in Faultline.
///
/// Dense from 0.5 ms to 1 s, where SLO thresholds live (a p99 of `800ms` must not
/// be interpolated across a 0.5 s–1 s gap with nothing in between), sparse above.
/// `histogram_quantile` interpolates linearly inside a bucket, so the spacing bounds
/// the error of every quantile an SLO reads.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_buckets_are_strictly_increasing_and_finite() {
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(DURATION_BUCKETS.iter().all(|b| b.is_finite() && *b > 0.0));
    }
}
