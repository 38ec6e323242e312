//! Property tests: every unit value survives display -> parse unchanged, so values
//! round-trip through YAML, JSON and the agent wire format.

use faultline_spec::{ByteSize, Duration, Percent, Rate};
use proptest::prelude::*;

proptest! {
    #[test]
    fn durations_round_trip_through_their_text(nanos in 0u64..=faultline_spec::units::MAX_DURATION.as_nanos() as u64) {
        let d = Duration(std::time::Duration::from_nanos(nanos));
        prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
    }

    #[test]
    fn percentages_round_trip_within_a_billionth(fraction in 0.0f64..=1.0) {
        let p = Percent::from_fraction(fraction).unwrap();
        let back: Percent = p.to_string().parse().unwrap();
        prop_assert!((back.fraction() - p.fraction()).abs() < 1e-9);
    }

    #[test]
    fn sizes_round_trip_through_their_text(bytes in 0u64..=faultline_spec::units::MAX_BYTE_SIZE) {
        let s = ByteSize(bytes);
        prop_assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
    }

    #[test]
    fn rates_round_trip_within_a_millionth(per_second in 0.001f64..1e6) {
        let r = Rate::per_second(per_second).unwrap();
        let back: Rate = r.to_string().parse().unwrap();
        prop_assert!((back.as_per_second() - r.as_per_second()).abs() <= 1e-6 * r.as_per_second().max(1.0));
    }

    #[test]
    fn values_above_the_caps_are_refused_with_the_cap(over in 1u64..1_000_000) {
        let too_long = format!("{}s", 24 * 3600 + over);
        prop_assert!(too_long.parse::<Duration>().unwrap_err().to_string().contains("at most 24h"));
        let too_big = format!("{}B", faultline_spec::units::MAX_BYTE_SIZE + over);
        prop_assert!(too_big.parse::<ByteSize>().unwrap_err().to_string().contains("at most 1TiB"));
        let too_fast = format!("{}bit", faultline_spec::units::MAX_BANDWIDTH_BITS + over * 1000);
        prop_assert!(too_fast.parse::<faultline_spec::Bandwidth>().unwrap_err().to_string().contains("at most 1000Gbit/s"));
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,200}") {
        let _ = faultline_spec::parse_str(&text, "fuzz.yaml", &Default::default());
    }
}
