use super::*;

/// A trimmed `docker inspect` answer of Engine 20.10, as compose creates containers.
fn inspect(
    name: &str,
    service: &str,
    role: &str,
    pid: u32,
    ports: &str,
    mounts: &str,
) -> Container {
    let json = format!(
        r#"{{
        "Id": "{name}-0123456789abcdef",
        "Name": "/{name}",
        "State": {{"Status": "running", "Running": true, "Paused": false, "Pid": {pid}}},
        "Config": {{"Labels": {{
            "com.docker.compose.project": "faultline",
            "com.docker.compose.service": "{service}",
            "dev.faultline.role": "{role}"}}}},
        "NetworkSettings": {{
            "Ports": {ports},
            "Networks": {{"faultline_fleet": {{"IPAddress": "172.20.0.{pid}"}}}}}},
        "Mounts": {mounts}
    }}"#
    );
    Container::from_raw(serde_json::from_str(&json).unwrap())
}

fn stack() -> ComposeStack {
    ComposeStack::from_containers(
        "faultline",
        vec![
            inspect(
                "faultline-payments-1",
                "payments",
                "fleet",
                11,
                r#"{"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32769"}]}"#,
                "[]",
            ),
            inspect(
                "faultline-gateway-1",
                "gateway",
                "fleet",
                12,
                r#"{"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32770"}, {"HostIp": "::", "HostPort": "32770"}]}"#,
                "[]",
            ),
            inspect(
                "faultline-agent-1",
                "agent",
                "agent",
                13,
                r#"{"7070/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32783"}]}"#,
                r#"[{"Type": "bind", "Source": "/srv/compose/agent-token", "Destination": "/run/faultline/agent-token"},
                    {"Type": "volume", "Name": "faultline_agent-state", "Source": "/var/lib/docker/volumes/x/_data", "Destination": "/var/lib/faultline"}]"#,
            ),
            inspect(
                "faultline-prometheus-1",
                "prometheus",
                "prometheus",
                14,
                r#"{"9090/tcp": null}"#,
                "[]",
            ),
        ],
    )
    .unwrap()
}

#[test]
fn service_target_resolves_to_container_id_and_host_pid() {
    let t = stack().resolve(&Target::service("payments"), "f").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "faultline-payments-1");
    assert_eq!(t[0].pid, Some(11));
    assert_eq!(
        t[0].container_id.as_deref(),
        Some("faultline-payments-1-0123456789abcdef")
    );
}

#[test]
fn unknown_service_error_lists_the_services_that_exist() {
    let err = stack()
        .resolve(&Target::service("paymnets"), "f")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no service `paymnets`"), "{err}");
    assert!(err.contains("payments"), "{err}");
}

#[test]
fn container_target_matches_name_or_id_prefix_and_pods_are_refused() {
    let s = stack();
    let by_name = s
        .resolve(&Target::Container("faultline-gateway-1".into()), "f")
        .unwrap();
    let by_id = s
        .resolve(&Target::Container("faultline-gateway-1-0123".into()), "f")
        .unwrap();
    assert_eq!(by_name, by_id);
    assert!(s.resolve(&Target::Container("nope".into()), "f").is_err());
    let pods = Target::Pods(faultline_spec::PodSelector {
        namespace: None,
        labels: [("app".to_string(), "x".to_string())].into(),
        mode: Default::default(),
        seed: None,
    });
    assert!(matches!(
        s.resolve(&pods, "f"),
        Err(ComposeError::Unsupported(_))
    ));
}

#[test]
fn published_ports_prefer_loopback_and_wildcard_maps_to_loopback() {
    let s = stack();
    assert_eq!(s.service_url("gateway").unwrap(), "http://127.0.0.1:32770");
    assert_eq!(s.service_url("payments").unwrap(), "http://127.0.0.1:32769");
    assert!(matches!(
        s.prometheus_url(),
        Err(ComposeError::NotPublished { port: 9090, .. })
    ));
}

#[test]
fn agent_endpoint_uses_the_token_file_mounted_into_the_agent() {
    let a = stack().agent().unwrap();
    assert_eq!(a.url, "http://127.0.0.1:32783");
    assert_eq!(a.token_file, PathBuf::from("/srv/compose/agent-token"));
}

#[test]
fn service_addresses_come_from_the_compose_network() {
    assert_eq!(
        stack().service_addresses("payments").unwrap(),
        vec![IpAddr::from([172, 20, 0, 11])]
    );
}

#[test]
fn an_empty_project_is_reported_with_how_to_start_it() {
    let err = ComposeStack::from_containers("faultline", Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("docker-compose up -d"), "{err}");
}

#[test]
fn only_a_local_unix_docker_host_is_accepted() {
    assert_eq!(
        socket_path(None).unwrap(),
        PathBuf::from("/var/run/docker.sock")
    );
    assert_eq!(
        socket_path(Some("unix:///run/user/1000/docker.sock")).unwrap(),
        PathBuf::from("/run/user/1000/docker.sock")
    );
    let err = socket_path(Some("tcp://10.0.0.1:2375")).unwrap_err();
    assert!(err.to_string().contains("not a unix socket"), "{err}");
}

#[test]
fn filters_are_percent_encoded() {
    assert_eq!(
        percent_encode(r#"{"label":["a=b"]}"#),
        "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
    );
}
