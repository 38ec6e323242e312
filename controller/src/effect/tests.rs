//! The effect rules on measured figures: each kind bites, falls short, or does nothing.

use std::collections::BTreeMap;

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{Fault, ValidateOptions};

use super::*;
use crate::report::{FaultApplication, FaultStatus};

/// The one fault of a minimal experiment whose fault body is `body` (YAML, indented
/// for the fault's mapping).
fn fault(body: &str) -> Fault {
    let text = format!(
        "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {{name: e}}\nspec:\n  duration: 30s\n  faults:\n    - name: f\n      target: {{service: payments}}\n      duration: 10s\n{body}\n  slos:\n    - name: s\n      errorRate: {{service: gateway, max: 1%}}\n      window: 5s\n"
    );
    faultline_spec::parse_str(&text, "t.yaml", &ValidateOptions::default())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .remove(0)
        .spec
        .faults
        .remove(0)
}

fn applied(f: &Fault, backend: &str, metrics: &[(&str, f64)]) -> FaultApplication {
    FaultApplication {
        name: f.name.clone(),
        id: "id".into(),
        target: ResolvedTarget {
            name: "payments".into(),
            pid: Some(4242),
            ..Default::default()
        },
        fault: f.kind.clone(),
        planned_start_ms: 0,
        planned_end_ms: 10_000,
        applied_ms: Some(1),
        reverted_ms: Some(2),
        status: FaultStatus::Reverted,
        backend: Some(backend.into()),
        error: None,
        effect: ObservedEffect {
            summary: String::new(),
            metrics: metrics
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        },
        effect_check: None,
    }
}

fn check(body: &str, backend: &str, metrics: &[(&str, f64)]) -> EffectCheck {
    let f = fault(body);
    judge(&f, &applied(&f, backend, metrics)).expect("applied faults are judged")
}

const LATENCY: &str = "      network: {latency: {delay: 100ms, jitter: 20ms}}";

#[test]
fn latency_holds_within_ten_percent_of_the_asked_mean_over_enough_chunks() {
    let c = check(
        LATENCY,
        "redirect",
        &[("delayed_chunks", 5000.0), ("mean_added_delay_ms", 104.0)],
    );
    assert_eq!(c.verdict, EffectVerdict::Held, "{c:?}");
    assert!(c.rule.contains("90.0-110.0 ms"), "{}", c.rule);
    let slow = check(
        LATENCY,
        "proxy",
        &[("delayed_chunks", 5000.0), ("mean_added_delay_ms", 131.0)],
    );
    assert_eq!(slow.verdict, EffectVerdict::Short);
    let few = check(
        LATENCY,
        "proxy",
        &[("delayed_chunks", 3.0), ("mean_added_delay_ms", 100.0)],
    );
    assert_eq!(
        few.verdict,
        EffectVerdict::Short,
        "3 chunks are too few to judge"
    );
    // The proxy leaves its delay figures out until it delayed something.
    let none = check(LATENCY, "proxy", &[]);
    assert_eq!(none.verdict, EffectVerdict::None);
    assert!(none.blocks());
}

#[test]
fn a_tolerance_widens_the_band_and_not_required_stops_blocking() {
    let body = format!("{LATENCY}\n      effect: {{tolerance: 40%, required: false}}");
    let c = check(
        &body,
        "proxy",
        &[("delayed_chunks", 5000.0), ("mean_added_delay_ms", 131.0)],
    );
    assert_eq!(c.verdict, EffectVerdict::Held, "{c:?}");
    let none = check(&body, "proxy", &[]);
    assert_eq!(none.verdict, EffectVerdict::None);
    assert!(!none.blocks(), "a fault that is not required never blocks");
}

#[test]
fn a_starved_cpu_burner_falls_short_unless_the_target_quota_is_what_capped_it() {
    let body = "      cpu: {load: 80%}";
    let starved = check(
        body,
        "burner",
        &[
            ("utilization", 0.49),
            ("workers", 1.0),
            ("target_load", 0.8),
        ],
    );
    assert_eq!(starved.verdict, EffectVerdict::Short);
    assert_eq!(starved.asked, "80% of a CPU burned");
    assert_eq!(starved.measured, "49.0% of a CPU burned");
    let full = check(
        body,
        "burner",
        &[
            ("utilization", 0.75),
            ("workers", 1.0),
            ("target_load", 0.8),
        ],
    );
    assert_eq!(
        full.verdict,
        EffectVerdict::Held,
        "75% is within 10% of 80%"
    );
    let capped = check(
        body,
        "cgroup",
        &[
            ("utilization", 0.30),
            ("workers", 1.0),
            ("cgroup_cpu_quota", 0.5),
            ("cgroup_cpu_usage", 0.49),
        ],
    );
    assert_eq!(capped.verdict, EffectVerdict::Held, "{capped:?}");
    assert!(
        capped.measured.contains("quota capped"),
        "{}",
        capped.measured
    );
    let below_quota = check(
        body,
        "cgroup",
        &[
            ("utilization", 0.30),
            ("workers", 1.0),
            ("cgroup_cpu_quota", 2.0),
            ("cgroup_cpu_usage", 0.4),
        ],
    );
    assert_eq!(below_quota.verdict, EffectVerdict::Short);
    assert_eq!(
        check(body, "burner", &[]).verdict,
        EffectVerdict::Unmeasured
    );
}

#[test]
fn an_http_fault_whose_paths_match_nothing_did_not_bite() {
    let c = check(
        "      http: {abort: {status: 503, percent: 50%}, paths: [/nothing-here]}",
        "proxy",
        &[("matched_requests", 0.0), ("aborted_requests", 0.0)],
    );
    assert_eq!(c.verdict, EffectVerdict::None);
    assert!(c.measured.contains("/nothing-here"), "{}", c.measured);
}

#[test]
fn an_http_abort_share_is_judged_by_a_binomial_bound_not_a_fixed_margin() {
    let body = "      http: {abort: {status: 503, percent: 50%}}";
    let fair = check(
        body,
        "proxy",
        &[("matched_requests", 3650.0), ("aborted_requests", 1791.0)],
    );
    assert_eq!(fair.verdict, EffectVerdict::Held, "{fair:?}");
    // 40% of 3650 is ~12 standard deviations below 50%.
    let low = check(
        body,
        "proxy",
        &[("matched_requests", 3650.0), ("aborted_requests", 1460.0)],
    );
    assert_eq!(low.verdict, EffectVerdict::Short, "{low:?}");
    // The same 40% over 10 requests is well inside the bound.
    let small = check(
        body,
        "proxy",
        &[("matched_requests", 10.0), ("aborted_requests", 4.0)],
    );
    assert_eq!(small.verdict, EffectVerdict::Held, "{small:?}");
    let never = check(
        body,
        "proxy",
        &[("matched_requests", 100.0), ("aborted_requests", 0.0)],
    );
    assert_eq!(never.verdict, EffectVerdict::None);
}

#[test]
fn an_http_delay_is_judged_on_its_share_of_the_requests_not_aborted_and_its_mean() {
    let body = "      http: {delay: {delay: 400ms, percent: 50%}}";
    let ok = check(
        body,
        "proxy",
        &[
            ("matched_requests", 2000.0),
            ("delayed_requests", 1010.0),
            ("delayed_chunks", 1010.0),
            ("mean_added_delay_ms", 401.0),
        ],
    );
    assert_eq!(ok.verdict, EffectVerdict::Held, "{ok:?}");
    let short_delay = check(
        body,
        "proxy",
        &[
            ("matched_requests", 2000.0),
            ("delayed_requests", 1010.0),
            ("delayed_chunks", 1010.0),
            ("mean_added_delay_ms", 200.0),
        ],
    );
    assert_eq!(short_delay.verdict, EffectVerdict::Short);
}

#[test]
fn an_http_delay_longer_than_the_fault_bites_with_its_requests_still_held() {
    // 2 s asked in a 2 s fault: nothing chosen is released before the fault ends.
    let body = "      http: {delay: {delay: 2s, percent: 8%}}";
    let held = check(
        body,
        "proxy",
        &[("matched_requests", 213.0), ("delayed_requests", 18.0)],
    );
    assert_eq!(held.verdict, EffectVerdict::Held, "{held:?}");
    assert!(held.measured.contains("18 still held"), "{held:?}");
    // Released ones still have to come back at the asked size.
    let off = check(
        body,
        "proxy",
        &[
            ("matched_requests", 213.0),
            ("delayed_requests", 18.0),
            ("delayed_chunks", 3.0),
            ("mean_added_delay_ms", 5.0),
        ],
    );
    assert_eq!(off.verdict, EffectVerdict::Short, "{off:?}");
    // None chosen at all is no effect, as before.
    let none = check(
        body,
        "proxy",
        &[("matched_requests", 213.0), ("delayed_requests", 0.0)],
    );
    assert_eq!(none.verdict, EffectVerdict::None, "{none:?}");
}

#[test]
fn signals_must_reach_the_target_pid_and_sigstop_must_stop_it() {
    let kill = "      process: {signal: SIGKILL}";
    assert_eq!(
        check(kill, "signal", &[("delivered", 1.0), ("pid", 4242.0)]).verdict,
        EffectVerdict::Held
    );
    assert_eq!(
        check(kill, "signal", &[("delivered", 1.0), ("pid", 7.0)]).verdict,
        EffectVerdict::Short,
        "a signal to another process is not the fault asked for"
    );
    let stop = "      process: {signal: SIGSTOP}";
    let not_stopped = check(
        stop,
        "signal",
        &[("delivered", 1.0), ("pid", 4242.0), ("stopped", 0.0)],
    );
    assert_eq!(not_stopped.verdict, EffectVerdict::Short);
    assert!(not_stopped.measured.contains("did not stop"));
    assert_eq!(
        check(
            stop,
            "signal",
            &[("delivered", 1.0), ("pid", 4242.0), ("stopped", 1.0)]
        )
        .verdict,
        EffectVerdict::Held
    );
}

#[test]
fn network_drops_resets_and_caps_must_be_observed_by_their_backend() {
    let loss = "      network: {loss: {percent: 30%}, backend: nftables}";
    assert_eq!(
        check(loss, "nftables", &[("matched_packets", 0.0)]).verdict,
        EffectVerdict::None
    );
    assert_eq!(
        check(loss, "nftables", &[("matched_packets", 12.0)]).verdict,
        EffectVerdict::Held
    );
    let proxy_loss = "      network: {loss: {percent: 30%}}";
    assert_eq!(
        check(proxy_loss, "redirect", &[("stalled_chunks", 40.0)]).verdict,
        EffectVerdict::Held
    );
    let reset = "      network: {reset: {}}";
    assert_eq!(
        check(reset, "redirect", &[("reset_connections", 0.0)]).verdict,
        EffectVerdict::None
    );
    let cap = "      network: {bandwidth: {rate: 1Mbit/s}}";
    assert_eq!(
        check(cap, "redirect", &[("paced_bytes", 5000.0)]).verdict,
        EffectVerdict::None,
        "paced bytes that were never held back did not meet the cap"
    );
    assert_eq!(
        check(cap, "tc", &[("shaped_bytes", 9e6), ("overlimits", 31.0)]).verdict,
        EffectVerdict::Held
    );
}

#[test]
fn memory_must_be_held_and_containers_must_change_state() {
    let mem = "      memory: {size: 64MiB}";
    assert_eq!(
        check(mem, "memory", &[("bytes_held", 64.0 * 1048576.0)]).verdict,
        EffectVerdict::Held
    );
    assert_eq!(
        check(mem, "memory", &[("bytes_held", 16.0 * 1048576.0)]).verdict,
        EffectVerdict::Short
    );
    let pause = "      container: {action: pause}";
    assert_eq!(
        check(pause, "docker", &[("took_effect", 0.0)]).verdict,
        EffectVerdict::None
    );
}

#[test]
fn faults_never_applied_are_not_judged() {
    let f = fault(LATENCY);
    let mut app = applied(&f, "proxy", &[]);
    app.status = FaultStatus::Failed;
    assert!(judge(&f, &app).is_none());
}

#[test]
fn a_pod_killed_through_the_kubernetes_api_is_judged_by_the_deletion() {
    let kill = "      process: {signal: SIGKILL}";
    let deleted = check(kill, "kubernetes-api", &[("delivered", 1.0)]);
    assert_eq!(deleted.verdict, EffectVerdict::Held, "{deleted:?}");
    assert!(deleted.rule.contains("Kubernetes API"));
    assert_eq!(
        check(kill, "kubernetes-api", &[]).verdict,
        EffectVerdict::Unmeasured
    );
}
