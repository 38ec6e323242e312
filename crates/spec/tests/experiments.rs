//! Every file in `experiments/` parses and validates; between them they use every
//! fault kind and every SLO kind; quickstart.yaml is exactly the documented scenario.

mod common;

use faultline_spec::{
    ContainerAction, Duration, Experiment, FaultKind, LoadTarget, NetworkAction, Signal, SloKind,
    SloSource, Target, ValidateOptions, parse_str,
};

fn all_experiments() -> Vec<Experiment> {
    // The files describe their own target hosts; the host CPU rule is covered by the
    // invalid corpus with a fixed host size.
    let opts = ValidateOptions::default();
    let mut out = Vec::new();
    for (name, text) in common::experiment_files() {
        match parse_str(&text, &name, &opts) {
            Ok(exps) => out.extend(exps),
            Err(d) => panic!("{name} is invalid:\n{d}"),
        }
    }
    out
}

#[test]
fn every_experiment_file_parses_validates_and_says_what_it_proves() {
    let files = common::experiment_files();
    assert!(files.len() >= 8, "only {} experiment files", files.len());
    for (name, text) in &files {
        assert!(
            text.trim_start().starts_with('#'),
            "{name} must start with a comment saying what it proves"
        );
        let exps = parse_str(text, name, &ValidateOptions::default())
            .unwrap_or_else(|d| panic!("{name} is invalid:\n{d}"));
        assert!(!exps.is_empty(), "{name} holds no experiment");
    }
}

#[test]
fn experiments_use_every_fault_kind_and_every_slo_kind() {
    let exps = all_experiments();
    let mut seen = std::collections::BTreeSet::new();
    for e in &exps {
        for f in &e.spec.faults {
            match &f.kind {
                FaultKind::Network(n) => seen.insert(match n.action {
                    NetworkAction::Latency(_) => "network.latency",
                    NetworkAction::Loss(_) => "network.loss",
                    NetworkAction::Bandwidth(_) => "network.bandwidth",
                    NetworkAction::Reset(_) => "network.reset",
                    NetworkAction::Partition(_) => "network.partition",
                }),
                FaultKind::Cpu(_) => seen.insert("cpu"),
                FaultKind::Memory(_) => seen.insert("memory"),
                FaultKind::Process(p) => seen.insert(match p.signal {
                    Signal::Kill => "process.SIGKILL",
                    Signal::Term => "process.SIGTERM",
                    Signal::Stop => "process.SIGSTOP",
                }),
                FaultKind::Container(c) => seen.insert(match c.action {
                    ContainerAction::Kill => "container.kill",
                    ContainerAction::Pause => "container.pause",
                    ContainerAction::Restart => "container.restart",
                }),
                FaultKind::Http(h) => {
                    if h.abort.is_some() {
                        seen.insert("http.abort");
                    }
                    if h.delay.is_some() {
                        seen.insert("http.delay");
                    }
                    true
                }
            };
        }
        for s in &e.spec.slos {
            seen.insert(match s.kind {
                SloKind::ErrorRate { .. } => "slo.errorRate",
                SloKind::Latency { .. } => "slo.latency",
                SloKind::Throughput { .. } => "slo.throughput",
                SloKind::Promql { .. } => "slo.promql",
            });
            if s.source == SloSource::Client {
                seen.insert("slo.source.client");
            }
        }
    }
    let wanted = [
        "network.latency",
        "network.loss",
        "network.bandwidth",
        "network.reset",
        "network.partition",
        "cpu",
        "memory",
        "process.SIGKILL",
        "process.SIGTERM",
        "process.SIGSTOP",
        "container.kill",
        "container.pause",
        "container.restart",
        "http.abort",
        "http.delay",
        "slo.errorRate",
        "slo.latency",
        "slo.throughput",
        "slo.promql",
        "slo.source.client",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !seen.contains(w))
        .collect();
    assert!(missing.is_empty(), "no experiment uses {missing:?}");
}

#[test]
fn quickstart_is_the_documented_scenario_without_promql() {
    let text = std::fs::read_to_string(common::experiments_dir().join("quickstart.yaml")).unwrap();
    let exps = parse_str(&text, "quickstart.yaml", &ValidateOptions::default()).unwrap();
    assert_eq!(exps.len(), 1);
    let e = &exps[0];
    assert_eq!(e.name, "payments-latency-cpu");
    let s = &e.spec;
    assert_eq!(s.duration, Duration::from_secs(60));

    let load = s.load.as_ref().expect("quickstart has load");
    assert_eq!(load.target, LoadTarget::Service("gateway".into()));
    assert_eq!(load.rate.as_per_second(), 200.0);
    assert_eq!(load.connections, 16);
    // 200/s for a 5 s timeout could hold 1000 requests in flight; the default caps at 512.
    assert_eq!(load.max_connections, 512);
    let reqs: Vec<(&str, &str, Option<&str>, u32)> = load
        .requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.body.as_deref(),
                r.weight,
            )
        })
        .collect();
    assert_eq!(
        reqs,
        [
            ("POST", "/api/orders", Some(r#"{"sku":"A-1","qty":1}"#), 3),
            ("GET", "/api/orders/1", None, 1)
        ]
    );

    let ss = s.steady_state.as_ref().unwrap();
    assert_eq!(ss.window, Duration::from_secs(10));
    assert_eq!(ss.slos, ["gateway-errors", "gateway-p99"]);

    let names: Vec<&str> = s.faults.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["payments-latency", "payments-cpu", "notifications-errors"]
    );
    for f in &s.faults {
        assert_eq!(f.after, Duration::from_secs(10), "{}", f.name);
        assert_eq!(f.duration, Duration::from_secs(30), "{}", f.name);
    }
    assert_eq!(s.faults[0].target, Target::service("payments"));
    match &s.faults[0].kind {
        FaultKind::Network(n) => {
            assert_eq!(n.direction, faultline_spec::Direction::Ingress);
            match &n.action {
                NetworkAction::Latency(l) => {
                    assert_eq!(l.delay, Duration::from_millis(100));
                    assert_eq!(l.jitter, Duration::from_millis(20));
                }
                other => panic!("payments-latency is {other:?}"),
            }
        }
        other => panic!("payments-latency is {other:?}"),
    }
    match &s.faults[1].kind {
        FaultKind::Cpu(c) => assert_eq!(c.load.percent(), 80.0),
        other => panic!("payments-cpu is {other:?}"),
    }
    assert_eq!(s.faults[2].target, Target::service("notifications"));
    match &s.faults[2].kind {
        FaultKind::Http(h) => {
            let a = h.abort.as_ref().expect("abort");
            assert_eq!(a.status, 503);
            assert_eq!(a.percent.percent(), 50.0);
        }
        other => panic!("notifications-errors is {other:?}"),
    }

    let slos: Vec<(&str, SloSource, &SloKind)> = s
        .slos
        .iter()
        .map(|x| (x.name.as_str(), x.source, &x.kind))
        .collect();
    assert_eq!(slos.len(), 3);
    assert!(
        matches!(slos[0], ("gateway-errors", SloSource::Server, SloKind::ErrorRate { service, max, .. }) if service == "gateway" && (max.percent() - 0.5).abs() < 1e-9)
    );
    assert!(
        matches!(slos[1], ("gateway-p99", SloSource::Server, SloKind::Latency { service, quantile, max }) if service == "gateway" && *quantile == 0.99 && *max == Duration::from_millis(800))
    );
    assert!(
        matches!(slos[2], ("client-errors", SloSource::Client, SloKind::ErrorRate { service, max, .. }) if service == "gateway" && (max.percent() - 1.0).abs() < 1e-9)
    );
    assert!(s.slos.iter().all(|x| x.window == Duration::from_secs(10)));
    assert!(
        !s.slos
            .iter()
            .any(|x| matches!(x.kind, SloKind::Promql { .. })),
        "local mode has no Prometheus"
    );

    assert_eq!(s.abort.len(), 1);
    assert_eq!(s.abort[0].for_duration, Duration::from_secs(5));
    assert!(
        matches!(&s.abort[0].kind, SloKind::ErrorRate { service, max, .. } if service == "gateway" && (max.percent() - 20.0).abs() < 1e-9)
    );
    assert_eq!(s.recovery.as_ref().unwrap().within, Duration::from_secs(5));
    assert!(
        text.contains("DESIGN.md"),
        "header must explain the deviation from DESIGN.md"
    );
}

#[test]
fn three_independent_mistakes_give_exactly_three_located_errors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/three-mistakes.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let diags = parse_str(&text, "three-mistakes.yaml", &ValidateOptions::default()).unwrap_err();
    let got: Vec<(usize, usize, &str)> = diags
        .iter()
        .map(|d| (d.line, d.column, d.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (7, 13, "spec.duration"),
            (8, 53, "spec.steadyState.slos[1]"),
            (15, 19, "spec.faults[0].network.latency.dealy"),
        ],
        "{diags}"
    );
    let msgs: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
    assert!(msgs[0].contains("unknown unit `seconds`"), "{}", msgs[0]);
    assert!(
        msgs[1].contains("SLO `gateway-p99` is not defined"),
        "{}",
        msgs[1]
    );
    assert!(msgs[2].contains("did you mean `delay`"), "{}", msgs[2]);
    assert!(
        diags
            .to_string()
            .lines()
            .all(|l| l.starts_with("three-mistakes.yaml:"))
    );
}

#[test]
fn errors_in_later_documents_carry_their_own_line() {
    let doc = |name: &str, duration: &str| {
        format!(
            "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: {duration}\n"
        )
    };
    let text = format!(
        "{}---\n{}---\n{}",
        doc("a", "10s"),
        doc("b", "10s"),
        doc("c", "ten")
    );
    let diags = parse_str(&text, "multi.yaml", &ValidateOptions::default()).unwrap_err();
    assert_eq!(diags.len(), 1, "{diags}");
    let d = diags.iter().next().unwrap();
    // Document 3 starts after two 5-line documents and two `---` lines.
    assert_eq!(
        (d.line, d.column, d.path.as_str()),
        (17, 13, "spec.duration")
    );

    let ok = format!("{}---\n{}", doc("a", "10s"), doc("b", "20s"));
    let exps = parse_str(&ok, "multi.yaml", &ValidateOptions::default()).unwrap();
    let names: Vec<&str> = exps.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn cpu_load_is_checked_against_the_host_only_when_the_caller_gives_it() {
    let text = "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec:\n  duration: 10s\n  faults:\n    - name: burn\n      target: {service: payments}\n      duration: 5s\n      cpu: {load: 75%, workers: 4}\n";
    assert!(
        parse_str(
            text,
            "x.yaml",
            &ValidateOptions {
                host_cpus: Some(3),
                ..Default::default()
            }
        )
        .is_ok()
    );
    assert!(parse_str(text, "x.yaml", &ValidateOptions::default()).is_ok());
    let d = parse_str(
        text,
        "x.yaml",
        &ValidateOptions {
            host_cpus: Some(2),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        d.to_string()
            .contains("needs 3.00 CPUs, but this host can give 2"),
        "{d}"
    );
}

#[test]
fn truncated_or_garbled_files_give_diagnostics_never_panics() {
    let text = std::fs::read_to_string(common::experiments_dir().join("quickstart.yaml")).unwrap();
    let opts = ValidateOptions {
        host_cpus: Some(1),
        ..Default::default()
    };
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    for &end in &boundaries {
        if let Err(d) = parse_str(&text[..end], "cut.yaml", &opts) {
            assert!(!d.is_empty());
            assert!(d.iter().all(|d| d.line >= 1 && d.column >= 1), "{d}");
        }
    }
    // Swapping structural characters in place must not panic either.
    for (i, c) in text.char_indices() {
        if matches!(c, ':' | '{' | '[' | '-' | ',') {
            let mut garbled = text.clone();
            garbled.replace_range(i..i + 1, "}");
            let _ = parse_str(&garbled, "garbled.yaml", &opts);
        }
    }
}

#[test]
fn max_connections_defaults_to_what_one_timeout_of_the_schedule_can_hold() {
    let doc = |load_extra: &str| {
        format!(
            "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata:\n  name: m\nspec:\n  duration: 30s\n  load:\n    target: gateway\n    rate: 20/s\n    timeout: 2s\n{load_extra}    requests:\n      - {{path: /}}\n"
        )
    };
    let max = |extra: &str| {
        let exps = parse_str(&doc(extra), "m.yaml", &ValidateOptions::default()).unwrap();
        let load = exps[0].spec.load.clone().unwrap();
        (load.connections, load.max_connections)
    };
    // 20/s × 2 s: at most 40 requests are ever in flight.
    assert_eq!(max(""), (16, 40));
    // Never below the connections opened up front.
    assert_eq!(max("    connections: 64\n"), (64, 64));
    // An explicit value wins.
    assert_eq!(max("    connections: 4\n    maxConnections: 8\n"), (4, 8));
}
