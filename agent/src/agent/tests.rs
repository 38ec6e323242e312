use std::time::Duration;

use faultline_spec::wire::{FaultPhase, FaultRequest, ResolvedTarget};
use faultline_spec::{
    CpuFault, Direction, Empty, FaultKind, Latency, NetworkAction, NetworkBackend, NetworkFault,
    Percent, ProcessFault, Signal,
};

use super::*;

fn cpu_request(id: &str, ttl_s: u64) -> FaultRequest {
    FaultRequest {
        id: id.into(),
        experiment: "exp".into(),
        target: ResolvedTarget {
            name: "agent".into(),
            ..Default::default()
        },
        fault: FaultKind::Cpu(CpuFault {
            load: Percent::from_fraction(0.05).unwrap(),
            workers: Some(1),
        }),
        ttl: faultline_spec::Duration::from_secs(ttl_s),
    }
}

async fn agent() -> Agent {
    Agent::start(AgentConfig::default()).await.unwrap().0
}

fn counter(agent: &Agent, name: &str) -> String {
    agent
        .metrics()
        .encode()
        .lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(start_paused = true)]
async fn a_fault_is_reverted_when_its_lease_expires() {
    let agent = agent().await;
    agent.apply(cpu_request("f1", 5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(agent.list().len(), 1, "still inside the lease");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Let the revert (a blocking task) finish.
    for _ in 0..100 {
        if agent.list().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(agent.list().is_empty());
    assert_eq!(agent.get("f1").unwrap().phase, FaultPhase::Expired);
    assert!(counter(&agent, "faultline_agent_fault_expiries_total").contains("} 1"));
}

#[tokio::test(start_paused = true)]
async fn renewing_extends_the_lease_from_now() {
    let agent = agent().await;
    agent.apply(cpu_request("f1", 5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = agent
        .renew("f1", faultline_spec::Duration::from_secs(5))
        .unwrap();
    assert_eq!(s.lease.renewals, 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(agent.list().len(), 1, "renewed lease still runs at 8 s");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..100 {
        if agent.list().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(agent.get("f1").unwrap().phase, FaultPhase::Expired);
    let err = agent
        .renew("f1", faultline_spec::Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::NotActive {
                phase: FaultPhase::Expired,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn apply_is_idempotent_on_the_id_and_rejects_a_different_request() {
    let agent = agent().await;
    let first = agent.apply(cpu_request("f1", 30)).await.unwrap();
    assert!(first.created);
    let again = agent.apply(cpu_request("f1", 30)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.state.applied_at_ms, first.state.applied_at_ms);
    assert_eq!(agent.list().len(), 1, "nothing applied twice");
    let mut other = cpu_request("f1", 30);
    other.experiment = "another".into();
    assert!(matches!(
        agent.apply(other).await,
        Err(AgentError::Conflict(_))
    ));
    // After a revert, the same apply returns the reverted state instead of re-injecting.
    agent.revert("f1").await.unwrap();
    let after = agent.apply(cpu_request("f1", 30)).await.unwrap();
    assert!(!after.created);
    assert_eq!(after.state.phase, FaultPhase::Reverted);
    assert!(agent.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn revert_is_idempotent_and_reports_the_effect() {
    let agent = agent().await;
    agent.apply(cpu_request("f1", 30)).await.unwrap();
    let first = agent.revert("f1").await.unwrap().unwrap();
    assert_eq!(first.phase, FaultPhase::Reverted);
    assert!(first.effect.metrics.contains_key("cpu_seconds"));
    let second = agent.revert("f1").await.unwrap().unwrap();
    assert_eq!(second, first);
    assert!(agent.revert("never-applied").await.unwrap().is_none());
    assert!(counter(&agent, "faultline_agent_fault_reverts_total").contains("} 1"));
    assert!(counter(&agent, "faultline_agent_active_faults").contains("} 0"));
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_and_a_fault_without_target_are_refused_without_change() {
    let agent = agent().await;
    let mut zero = cpu_request("z", 1);
    zero.ttl = faultline_spec::Duration::ZERO;
    assert!(matches!(agent.apply(zero).await, Err(AgentError::ZeroTtl)));
    let stop = FaultRequest {
        fault: FaultKind::Process(ProcessFault {
            signal: Signal::Stop,
        }),
        ..cpu_request("p", 10)
    };
    let err = agent.apply(stop).await.unwrap_err();
    assert_eq!(err.status().0, 422, "{err}");
    let net = FaultRequest {
        fault: FaultKind::Network(NetworkFault {
            action: NetworkAction::Partition(Empty {}),
            direction: Direction::Both,
            peers: vec![],
            ports: vec![],
            backend: NetworkBackend::Nftables,
        }),
        ..cpu_request("n", 10)
    };
    assert_eq!(
        agent.apply(net).await.unwrap_err().status(),
        (422, "unsupported")
    );
    assert!(agent.list().is_empty());
    assert!(counter(&agent, "faultline_agent_fault_apply_failures_total").contains("} 1"));
}

#[tokio::test(start_paused = true)]
async fn network_faults_act_on_the_named_proxies() {
    let agent = agent().await;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = agent
        .create_proxy("orders->payments", upstream.local_addr().unwrap())
        .await
        .unwrap();
    assert_eq!(
        agent
            .create_proxy("orders->payments", upstream.local_addr().unwrap())
            .await
            .unwrap(),
        addr
    );
    let req = FaultRequest {
        target: ResolvedTarget {
            name: "payments".into(),
            proxies: vec!["orders->payments".into()],
            ..Default::default()
        },
        fault: FaultKind::Network(NetworkFault {
            action: NetworkAction::Latency(Latency {
                delay: faultline_spec::Duration::from_millis(100),
                jitter: faultline_spec::Duration::ZERO,
                correlation: None,
                distribution: Default::default(),
            }),
            direction: Direction::Ingress,
            peers: vec![],
            ports: vec![],
            backend: NetworkBackend::Auto,
        }),
        ..cpu_request("lat", 30)
    };
    let s = agent.apply(req.clone()).await.unwrap().state;
    assert_eq!(s.backend, "proxy");
    let missing = FaultRequest {
        id: "lat2".into(),
        target: ResolvedTarget {
            name: "x".into(),
            proxies: vec!["nope".into()],
            ..Default::default()
        },
        ..req
    };
    assert_eq!(
        agent.apply(missing).await.unwrap_err().status().1,
        "target_not_found"
    );
}

#[tokio::test]
async fn a_journal_leftover_stop_is_continued_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    {
        let (agent, _) = Agent::start(AgentConfig {
            state_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .await
        .unwrap();
        let req = FaultRequest {
            target: ResolvedTarget {
                name: "sleep".into(),
                pid: Some(pid),
                ..Default::default()
            },
            fault: FaultKind::Process(ProcessFault {
                signal: Signal::Stop,
            }),
            ..cpu_request("stop", 300)
        };
        agent.apply(req).await.unwrap();
        assert_eq!(crate::process::proc_stat(pid).unwrap().state, 'T');
        // Simulate a crash: the guard must not run, so leak the agent.
        std::mem::forget(agent);
    }
    assert_eq!(crate::process::proc_stat(pid).unwrap().state, 'T');
    let (_agent, report) = Agent::start(AgentConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(report.reverted.len(), 1, "{report:?}");
    assert!(report.reverted[0].contains("continued"), "{report:?}");
    assert_ne!(crate::process::proc_stat(pid).unwrap().state, 'T');
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_corrupt_journal_is_reported_and_never_blocks_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(crate::journal::JOURNAL_FILE),
        b"deadbeef {\"op\":\"apply\"}\n\x00\x01garbage\n0000",
    )
    .unwrap();
    let (agent, report) = Agent::start(AgentConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(report.problems.len(), 3, "{report:?}");
    assert!(report.reverted.is_empty() && report.failed.is_empty());
    // The fresh journal works: a fault can be applied and reverted.
    agent.apply(cpu_request("after", 30)).await.unwrap();
    agent.revert("after").await.unwrap();
    let replay = crate::journal::replay(dir.path()).unwrap();
    assert!(
        replay.problems.is_empty() && replay.leftovers.is_empty(),
        "{replay:?}"
    );
}

#[tokio::test]
async fn check_accepts_exactly_the_requests_apply_accepts_and_changes_nothing() {
    let agent = agent().await;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    agent
        .create_proxy("orders->payments", upstream.local_addr().unwrap())
        .await
        .unwrap();
    let network = |id: &str, proxies: &[&str], peers: &[&str], ports: &[u16]| FaultRequest {
        target: ResolvedTarget {
            name: "payments".into(),
            proxies: proxies.iter().map(|p| (*p).to_string()).collect(),
            ..Default::default()
        },
        fault: FaultKind::Network(NetworkFault {
            action: NetworkAction::Partition(Empty {}),
            direction: Direction::Ingress,
            peers: peers
                .iter()
                .map(|p| faultline_spec::Peer::parse(p).unwrap())
                .collect(),
            ports: ports.to_vec(),
            backend: NetworkBackend::Auto,
        }),
        ..cpu_request(id, 30)
    };
    let mut zero = cpu_request("zero", 1);
    zero.ttl = faultline_spec::Duration::ZERO;
    let signal = |id: &str, pid: Option<u32>| FaultRequest {
        target: ResolvedTarget {
            name: "p".into(),
            pid,
            ..Default::default()
        },
        fault: FaultKind::Process(ProcessFault {
            signal: Signal::Stop,
        }),
        ..cpu_request(id, 30)
    };
    let cases = [
        (network("ok", &["orders->payments"], &[], &[]), true),
        (
            network("port", &["orders->payments"], &[], &[upstream_port]),
            true,
        ),
        (
            network("other-port", &["orders->payments"], &[], &[1]),
            false,
        ),
        (network("no-proxy", &["nope"], &[], &[]), false),
        (network("no-proxies", &[], &[], &[]), false),
        // The first build's dry run passed this and the apply refused it.
        (
            network("service-peer", &["orders->payments"], &["orders"], &[]),
            false,
        ),
        (
            network("cidr-peer", &["orders->payments"], &["127.0.0.1"], &[]),
            true,
        ),
        (zero, false),
        (signal("no-pid", None), false),
        (signal("self", Some(std::process::id())), false),
        (signal("gone", Some(u32::MAX - 1)), false),
        (cpu_request("cpu", 30), true),
    ];
    for (request, accepted) in cases {
        let id = request.id.clone();
        let checked = agent.check(&request).await;
        assert!(agent.get(&id).is_none(), "{id}: check applied nothing");
        assert_eq!(checked.is_ok(), accepted, "{id}: check said {checked:?}");
        let applied = agent.apply(request).await;
        assert_eq!(
            applied.is_ok(),
            accepted,
            "{id}: apply disagrees with check: {:?}",
            applied.as_ref().err()
        );
        if let (Err(c), Err(a)) = (&checked, &applied) {
            assert_eq!(c.status(), a.status(), "{id}: same refusal");
        }
        if applied.is_ok() {
            agent.revert(&id).await.unwrap();
        }
    }
}
