//! The one real-time lease test the issue asks for: without renewal, a fault is reverted
//! within its TTL plus 200 ms and traffic is back to normal.

mod common;

use std::time::{Duration, Instant};

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::wire::{FaultPhase, FaultRequest, ResolvedTarget};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_fault_is_reverted_within_ttl_plus_200ms_and_traffic_recovers() {
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let proxy = agent
        .create_proxy("edge", common::echo().await)
        .await
        .unwrap();
    let mut conn = TcpStream::connect(proxy).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let baseline = common::round_trip(&mut conn).await;
    assert!(
        baseline < Duration::from_millis(50),
        "baseline {baseline:?}"
    );

    let request: FaultRequest = serde_json::from_value(serde_json::json!({
        "id": "lease-test",
        "experiment": "lease",
        "target": {"name": "echo", "proxies": ["edge"]},
        "fault": {"network": {"latency": {"delay": "300ms"}, "direction": "ingress"}},
        "ttl": "1s"
    }))
    .unwrap();
    assert_eq!(
        request.target,
        ResolvedTarget {
            name: "echo".into(),
            proxies: vec!["edge".into()],
            ..Default::default()
        }
    );
    let applied_at = Instant::now();
    agent.apply(request).await.unwrap();
    let slow = common::round_trip(&mut conn).await;
    assert!(slow >= Duration::from_millis(290), "fault active: {slow:?}");

    // Poll (bounded) until the lease runs out.
    let reverted_after = loop {
        if agent.list().is_empty() {
            break applied_at.elapsed();
        }
        assert!(
            applied_at.elapsed() < Duration::from_secs(5),
            "never reverted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("reverted {reverted_after:?} after apply (ttl 1 s)");
    assert!(
        reverted_after <= Duration::from_millis(1_200),
        "reverted after {reverted_after:?}"
    );
    assert_eq!(agent.get("lease-test").unwrap().phase, FaultPhase::Expired);
    // The same connection is fast again.
    let after = common::round_trip(&mut conn).await;
    assert!(
        after < Duration::from_millis(50),
        "traffic after expiry: {after:?}"
    );
}
