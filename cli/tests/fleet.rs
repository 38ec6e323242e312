//! End-to-end tests of the reference fleet: five real `chaos fleet serve` processes on loopback,
//! started through the launcher library exactly as the runner's local mode does.
//!
//! Every test bounds its load by count and its waits by deadlines; the set runs in well under
//! a minute. Real time is used on purpose: these tests measure real processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_fleet::{ChildLogs, Edge, Fleet, LaunchOptions, Service};
use faultline_http::{Client, ClientConfig, ClientResponse};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ORDER: &str = r#"{"sku":"A-1","qty":1}"#;

fn options() -> LaunchOptions {
    LaunchOptions::new(env!("CARGO_BIN_EXE_chaos"))
        .env("RUST_LOG", "error")
        .logs(ChildLogs::Inherit)
}

fn client() -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

async fn post_order(c: &Client, fleet: &Fleet, body: &str) -> (ClientResponse, Duration) {
    let start = Instant::now();
    let resp = c
        .post(format!("{}/api/orders", fleet.url(Service::Gateway)))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("gateway answers");
    (resp, start.elapsed())
}

async fn scrape(c: &Client, fleet: &Fleet, service: Service) -> String {
    c.get(fleet.metrics_url(service))
        .send()
        .await
        .expect("metrics answer")
        .text()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition parses")
}

/// The value of the sample `name` whose labels include all of `labels`; `None` if absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse(text).samples.into_iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (matches, s.value) {
            (true, Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => Some(v),
            _ => None,
        }
    })
}

fn json(resp: &ClientResponse) -> serde_json::Value {
    resp.json()
        .unwrap_or_else(|e| panic!("JSON body expected ({e}): {}", resp.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_flows_through_all_five_services_and_each_counts_it() {
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let c = client();
    let (resp, _) = post_order(&c, &fleet, ORDER).await;
    assert_eq!(resp.status(), 201, "{}", resp.text());
    let order = json(&resp);
    assert_eq!(order["notified"], true);
    assert!(order["payment_id"].as_str().unwrap().starts_with("pay-"));
    let id = order["id"].as_u64().unwrap();
    let got = c
        .get(format!("{}/api/orders/{id}", fleet.url(Service::Gateway)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(json(&got), order);

    let expect = [
        (Service::Gateway, "/api/orders", "201"),
        (Service::Orders, "/orders", "201"),
        (Service::Inventory, "/reserve", "201"),
        (Service::Payments, "/charge", "201"),
        (Service::Notifications, "/notify", "202"),
    ];
    for (service, route, code) in expect {
        let text = scrape(&c, &fleet, service).await;
        let n = sample(
            &text,
            "http_server_requests_total",
            &[
                ("service", service.name()),
                ("route", route),
                ("method", "POST"),
                ("code", code),
            ],
        );
        assert_eq!(n, Some(1.0), "{service} counted the order once:\n{text}");
    }
    let orders = scrape(&c, &fleet, Service::Orders).await;
    for upstream in ["inventory", "payments", "notifications"] {
        let n = sample(
            &orders,
            "http_client_requests_total",
            &[("upstream", upstream), ("outcome", "success")],
        );
        assert_eq!(n, Some(1.0), "orders -> {upstream}");
        // Declared at start: an outcome that never happened is a 0, not a missing
        // series, so `increase` counts the first burst of it in full.
        let timeouts = sample(
            &orders,
            "http_client_requests_total",
            &[("upstream", upstream), ("outcome", "timeout")],
        );
        assert_eq!(timeouts, Some(0.0), "orders -> {upstream} timeouts");
    }
    for service in Service::START_ORDER {
        let ready = c
            .get(format!("{}/readyz", fleet.url(service)))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{service} ready");
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_payments_fails_orders_fast_once_the_breaker_opens_and_recovers_after_restart() {
    const OPEN_WAIT: Duration = Duration::from_millis(1000);
    const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
    let fleet = Fleet::start(options().env("FL_BREAKER_OPEN_MS", "1000"))
        .await
        .expect("fleet starts");
    let c = client();
    assert_eq!(post_order(&c, &fleet, ORDER).await.0.status(), 201);

    fleet.kill_service(Service::Payments).await;
    assert_eq!(fleet.pid(Service::Payments), None);
    // Drive orders until the breakers shed: bounded by count.
    let mut opened_after = None;
    for i in 0..200 {
        let (resp, _) = post_order(&c, &fleet, ORDER).await;
        assert!(
            resp.status() >= 500,
            "order {i} cannot succeed without payments"
        );
        if resp.status() == 503 && resp.header("x-shed-by-breaker").is_some() {
            opened_after = Some(i);
            break;
        }
    }
    let opened_after = opened_after.expect("a breaker opened within 200 orders");
    let orders_metrics = scrape(&c, &fleet, Service::Orders).await;
    assert_eq!(
        sample(
            &orders_metrics,
            "breaker_state",
            &[("upstream", "payments")]
        ),
        Some(2.0),
        "orders' payments breaker is open"
    );
    // Once open, every order fails with 503 in a fraction of the attempt timeout.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (resp, took) = post_order(&c, &fleet, ORDER).await;
        assert_eq!(resp.status(), 503, "{}", resp.text());
        slowest = slowest.max(took);
    }
    eprintln!("breaker open after {opened_after} orders; slowest shed response {slowest:?}");
    assert!(
        slowest < ATTEMPT_TIMEOUT / 5,
        "shed responses must not wait for timeouts: {slowest:?}"
    );

    fleet
        .start_service(Service::Payments)
        .await
        .expect("payments restarts");
    let restarted = Instant::now();
    let recovered = loop {
        let (resp, _) = post_order(&c, &fleet, ORDER).await;
        if resp.status() == 201 {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < OPEN_WAIT * 4,
            "no recovery within {:?}",
            OPEN_WAIT * 4
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("orders succeed again {recovered:?} after payments restarted");
    assert!(
        recovered <= OPEN_WAIT + ATTEMPT_TIMEOUT,
        "recovery took {recovered:?}, more than the open wait plus one probe"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_down_keeps_orders_201_and_degradation_level_2() {
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let c = client();
    fleet.kill_service(Service::Notifications).await;
    for i in 0..30 {
        let (resp, _) = post_order(&c, &fleet, ORDER).await;
        assert_eq!(resp.status(), 201, "order {i}: {}", resp.text());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let level = loop {
        let text = scrape(&c, &fleet, Service::Orders).await;
        let level = sample(&text, "degradation_level", &[("service", "orders")]);
        if level == Some(2.0) || Instant::now() > deadline {
            break level;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(level, Some(2.0), "orders' degradation_level");
    // The level is also visible on the service's responses, and shed orders say so.
    let direct = c
        .post(format!("{}/orders", fleet.url(Service::Orders)))
        .body(ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 201);
    assert_eq!(direct.header_str("x-degradation-level"), Some("2"));
    assert_eq!(json(&direct)["notified"], false);
    fleet.stop().await;
}

/// Shedding must not latch: once notifications are back, orders notify again and leave
/// L2, instead of shedding every notification for good because the breaker that forced
/// L2 never sees the probe that would close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_resumed_once_they_are_back_and_orders_leave_level_2() {
    let fleet = Fleet::start(options().env("FL_BREAKER_OPEN_MS", "1000"))
        .await
        .expect("fleet starts");
    let c = client();
    let direct = || async {
        let r = c
            .post(format!("{}/orders", fleet.url(Service::Orders)))
            .body(ORDER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text());
        r
    };
    fleet.kill_service(Service::Notifications).await;
    // Drive orders until the notifications breaker has opened (bounded: 300 orders). L2
    // comes first and sheds for a while; the breaker opens when calls resume between.
    let mut open = false;
    for _ in 0..300 {
        direct().await;
        let text = scrape(&c, &fleet, Service::Orders).await;
        if sample(&text, "breaker_state", &[("upstream", "notifications")]) == Some(2.0) {
            open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        open,
        "orders' notifications breaker opened with notifications down"
    );
    fleet
        .start_service(Service::Notifications)
        .await
        .expect("notifications restart");
    let back = Instant::now();
    // Bounded: at most 200 orders over at most 20 s.
    let mut resumed = None;
    for _ in 0..200 {
        let r = direct().await;
        if json(&r)["notified"] == true && r.header_str("x-degradation-level") == Some("0") {
            resumed = Some(back.elapsed());
            break;
        }
        if back.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = resumed.expect("orders notify again and leave L2 within 20 s");
    eprintln!("notifications resumed {resumed:?} after they came back");
    fleet.stop().await;
}

/// A TCP proxy that delays every chunk going to the upstream by `delay`.
async fn delaying_proxy(listener: TcpListener, upstream: SocketAddr, delay: Duration) {
    while let Ok((mut down, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut dr, mut dw) = down.split();
            let (mut ur, mut uw) = up.split();
            let to_upstream = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match dr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    tokio::time::sleep(delay).await;
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = uw.shutdown().await;
            };
            let to_downstream = async {
                let _ = tokio::io::copy(&mut ur, &mut dw).await;
                let _ = dw.shutdown().await;
            };
            tokio::join!(to_upstream, to_downstream);
        });
    }
}

/// Starts a fleet whose orders -> payments edge goes through a proxy adding `delay`, and
/// returns the gateway latencies and statuses of `n` sequential orders.
async fn orders_with_slow_payments(
    resilience: bool,
    delay: Duration,
    n: usize,
) -> Vec<(u16, Duration)> {
    let slow_edge = Edge {
        from: Service::Orders,
        to: Service::Payments,
    };
    let opts = options()
        .resilience(resilience)
        .env("FL_ATTEMPT_TIMEOUT_MS", "150");
    let fleet = Fleet::start_wired(opts, |edge, _replica, upstream| {
        if edge != slow_edge {
            return upstream;
        }
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        tokio::spawn(delaying_proxy(listener, upstream, delay));
        addr
    })
    .await
    .expect("fleet starts");
    assert_ne!(
        fleet.dial_addrs(slow_edge),
        [fleet.addr(Service::Payments)],
        "orders dials the proxy, not payments"
    );
    let c = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (resp, took) = post_order(&c, &fleet, ORDER).await;
        out.push((resp.status(), took));
    }
    fleet.stop().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_off_lets_slow_payments_drag_gateway_latency_and_on_bounds_it() {
    let delay = Duration::from_millis(800);
    let off = orders_with_slow_payments(false, delay, 4).await;
    let on = orders_with_slow_payments(true, delay, 4).await;
    eprintln!("FL_RESILIENCE=off: {off:?}\nFL_RESILIENCE=on: {on:?}");
    // Off: no timeout anywhere, every order waits for the slow payments and succeeds late.
    for (status, took) in &off {
        assert_eq!(*status, 201);
        assert!(
            *took >= delay,
            "off: {took:?} should include the {delay:?} delay"
        );
    }
    // On: the 150 ms attempt timeout (three attempts at most) bounds the wait and fails the
    // order instead of hanging on payments.
    for (status, took) in &on {
        assert!(matches!(status, 503 | 504), "on: status {status}");
        assert!(
            *took < Duration::from_millis(700),
            "on: {took:?} not bounded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_field_and_unknown_sku_get_4xx_json_and_leave_state_intact() {
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let c = client();
    let stock = |c: Client, url: String| async move {
        let r = c.get(format!("{url}/stock/A-1")).send().await.unwrap();
        json(&r)["available"].as_u64().unwrap()
    };
    let inventory = fleet.url(Service::Inventory);
    let before = stock(c.clone(), inventory.clone()).await;
    let cases = [
        ("malformed JSON", r#"{"sku":"A-1","qty":"#, 400),
        ("missing field", r#"{"sku":"A-1"}"#, 422),
        ("unknown SKU", r#"{"sku":"NOPE-9","qty":1}"#, 422),
        ("zero quantity", r#"{"sku":"A-1","qty":0}"#, 422),
        (
            "unknown field",
            r#"{"sku":"A-1","qty":1,"coupon":"x"}"#,
            422,
        ),
    ];
    for (what, body, status) in cases {
        let (resp, _) = post_order(&c, &fleet, body).await;
        assert_eq!(resp.status(), status, "{what}: {}", resp.text());
        let err = json(&resp);
        assert!(
            err["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {err}"
        );
    }
    let bad_id = c
        .get(format!("{}/api/orders/abc", fleet.url(Service::Gateway)))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_id.status(), 400);
    assert!(json(&bad_id)["error"].is_string());
    assert_eq!(
        stock(c.clone(), inventory.clone()).await,
        before,
        "no stock moved"
    );
    let metrics = scrape(&c, &fleet, Service::Payments).await;
    assert_eq!(
        sample(
            &metrics,
            "http_server_requests_total",
            &[("route", "/charge")]
        ),
        None,
        "nothing was charged"
    );
    // And the fleet still works, moving exactly one unit.
    let (resp, _) = post_order(&c, &fleet, ORDER).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(stock(c.clone(), inventory).await, before - 1);
    fleet.stop().await;
}

/// Sample lines in an exposition, counting every histogram bucket, `_sum` and `_count`.
fn exposition_sample_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

fn parsed_sample_lines(scrape: &Scrape) -> usize {
    scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(b) => b.len(),
            Value::Summary(q) => q.len(),
            _ => 1,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_metrics_round_trip_through_prometheus_parse_without_loss() {
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let c = client();
    assert_eq!(post_order(&c, &fleet, ORDER).await.0.status(), 201);
    let (bad, _) = post_order(&c, &fleet, "{").await;
    assert_eq!(bad.status(), 400);
    let mut families: BTreeMap<Service, usize> = BTreeMap::new();
    for replica in fleet.metrics_targets() {
        let service = replica.service;
        let text = c.get(replica.metrics_url()).send().await.unwrap().text();
        let parsed = parse(&text);
        assert_eq!(
            parsed_sample_lines(&parsed),
            exposition_sample_lines(&text),
            "{service}: prometheus-parse lost samples:\n{text}"
        );
        for s in &parsed.samples {
            assert_eq!(
                s.labels.get("service"),
                Some(service.name()),
                "{}",
                s.metric
            );
        }
        assert!(
            parsed
                .samples
                .iter()
                .any(|s| s.metric == "degradation_level"),
            "{service} exposes degradation_level"
        );
        families.insert(service, parsed.samples.len());
    }
    assert!(families.values().all(|n| *n > 1), "{families:?}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_service_is_restarted_on_its_address_with_a_new_pid() {
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let c = client();
    let old = fleet.pid(Service::Payments).expect("payments runs");
    let addr = fleet.addr(Service::Payments);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let new = loop {
        match fleet.pid(Service::Payments) {
            Some(p) if p != old => break p,
            _ if Instant::now() > deadline => panic!("payments was not restarted"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert_ne!(new, old);
    assert_eq!(fleet.restarts(Service::Payments), 1);
    assert_eq!(fleet.addr(Service::Payments), addr);
    // The restarted process serves on the same address; orders reach it again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (resp, _) = post_order(&c, &fleet, ORDER).await;
        if resp.status() == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orders did not recover: {}",
            resp.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.stop().await;
}

/// Whether `pid` is a live process (not gone and not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_drop_leave_no_fleet_process_behind() {
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let pids: Vec<u32> = Service::START_ORDER
        .iter()
        .map(|s| fleet.pid(*s).expect("running"))
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));
    fleet.stop().await;
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "stop left processes: {pids:?}"
    );

    // The error-path guard: dropping a fleet without stop() kills every child.
    let fleet = Fleet::start(options()).await.expect("fleet starts");
    let pids: Vec<u32> = Service::START_ORDER
        .iter()
        .map(|s| fleet.pid(*s).expect("running"))
        .collect();
    drop(fleet);
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "drop left processes: {pids:?}"
    );
}

/// Arguments, environment, and what stderr must mention.
type BadConfigCase = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn fleet_serve_rejects_bad_configuration_with_exit_2_naming_the_problem() {
    let cases: [BadConfigCase; 6] = [
        (&["fleet", "serve", "orders"], &[], "FL_UPSTREAM_INVENTORY"),
        (
            &["fleet", "serve", "payments"],
            &[("FL_RESILIENCE", "maybe")],
            "FL_RESILIENCE",
        ),
        (
            &["fleet", "serve", "payments"],
            &[("FL_DISABLE", "retries,breakers")],
            "unknown policy \"breakers\": expected a comma-separated list of retries, retry-budget",
        ),
        (
            &["fleet", "up", "--disable", "drain,bulkhead"],
            &[],
            "unknown policy \"bulkhead\"",
        ),
        (
            &[
                "run",
                "--set-env",
                "FL_DISABLE=timeouts",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../experiments/quickstart.yaml"
                ),
            ],
            &[],
            "the fleet's environment: FL_DISABLE names an unknown policy \"timeouts\"",
        ),
        (
            &["fleet", "serve", "billing"],
            &[],
            "unknown service `billing`",
        ),
    ];
    for (args, env, expected) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chaos"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("FL_UPSTREAM_INVENTORY")
            .output()
            .expect("chaos runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn fleet_serve_announces_its_address_first_and_exits_0_on_sigterm() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["fleet", "serve", "payments", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("chaos runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("first line is JSON");
    assert_eq!(v["event"], "listening");
    assert_eq!(v["service"], "payments");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(child.id())));
    let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    std::net::TcpStream::connect(addr).expect("it listens");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_as_processes_of_their_own_and_their_dependant_uses_each() {
    let fleet = Fleet::start(options().replicas(Service::Inventory, 2))
        .await
        .expect("fleet starts");
    let replicas = fleet.replicas(Service::Inventory);
    let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["inventory-1", "inventory-2"]);
    assert_ne!(replicas[0].addr, replicas[1].addr);
    assert_ne!(replicas[0].pid, replicas[1].pid);
    assert!(replicas.iter().all(|r| r.pid.is_some_and(alive)));
    let edge = Edge {
        from: Service::Orders,
        to: Service::Inventory,
    };
    assert_eq!(
        fleet.dial_addrs(edge),
        [replicas[0].addr, replicas[1].addr],
        "orders dials both replicas"
    );
    assert_eq!(fleet.replicas(Service::Payments).len(), 1);
    assert_eq!(fleet.replicas(Service::Payments)[0].name, "payments");

    let c = client();
    for _ in 0..40 {
        assert_eq!(post_order(&c, &fleet, ORDER).await.0.status(), 201);
    }
    // Each replica answered some of the 40 reservations: orders balances over both.
    let mut served = Vec::new();
    for r in &replicas {
        let text = c.get(r.metrics_url()).send().await.unwrap().text();
        let reserved = parse(&text)
            .samples
            .iter()
            .filter(|s| {
                s.metric == "http_server_requests_total"
                    && s.labels.get("route") == Some("/reserve")
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum::<f64>();
        served.push(reserved);
    }
    assert!(
        served.iter().all(|n| *n >= 1.0),
        "reservations per replica: {served:?}"
    );
    assert!(served.iter().sum::<f64>() >= 40.0, "{served:?}");

    // One replica gone: the other keeps placements going.
    let gone = replicas[0].pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(gone).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..10 {
        let (resp, _) = post_order(&c, &fleet, ORDER).await;
        assert_eq!(resp.status(), 201, "{}", resp.text());
    }
    fleet.stop().await;
    assert!(!alive(replicas[1].pid.unwrap()), "stop ends every replica");
}
