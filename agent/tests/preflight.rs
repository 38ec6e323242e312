//! Preflight: capabilities are found by trial, and a request for a backend the host lacks
//! fails before anything is injected, naming what is missing. Runs as root (scripts/ci).

mod netns_common;

use faultline_agent::{Agent, AgentConfig};
use faultline_spec::wire::FaultRequest;
use faultline_spec::{Direction, FaultKind, NetworkBackend, NetworkFault};
use netns_common::NetPair;

fn latency(pid: u32, backend: NetworkBackend) -> FaultRequest {
    let fault = FaultKind::Network(NetworkFault {
        ports: vec![9],
        backend,
        ..netns_common::network(netns_common::latency_ms(20), Direction::Ingress)
    });
    netns_common::request_on_pid(&format!("lat-{backend:?}"), "preflight", pid, fault, 30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netem_request_without_sch_netem_fails_before_injection_and_auto_picks_the_proxy() {
    let Some((pair, pid)) = NetPair::with_target_or_skip("preflight", 51) else {
        return;
    };
    let (agent, _) = Agent::start(AgentConfig::default()).await.unwrap();
    let caps = agent.capabilities();
    assert!(caps.privileged && caps.nftables, "{caps:?}");
    assert!(caps.network_backends["loss"].contains(&"nftables".to_string()));
    assert!(caps.network_backends["bandwidth"].contains(&"tc".to_string()));
    if caps.netem {
        eprintln!("this kernel has sch_netem; the missing-netem refusal cannot be shown here");
        return;
    }
    assert!(
        caps.missing["netem"].contains("sch_netem"),
        "{:?}",
        caps.missing
    );

    let (tables, qdiscs) = (pair.tables(), pair.qdiscs());
    let err = agent
        .apply(latency(pid, NetworkBackend::Netem))
        .await
        .expect_err("netem must be refused on a kernel without it");
    assert_eq!(err.status(), (422, "unsupported"));
    assert!(err.to_string().contains("sch_netem"), "{err}");
    assert_eq!(pair.tables(), tables, "nothing was injected");
    assert_eq!(pair.qdiscs(), qdiscs, "nothing was injected");
    assert!(agent.get("lat-Netem").is_none());

    let ok = agent
        .apply(latency(pid, NetworkBackend::Auto))
        .await
        .unwrap();
    assert_eq!(ok.state.backend, "redirect");
    agent.revert("lat-Auto").await.unwrap();
}
