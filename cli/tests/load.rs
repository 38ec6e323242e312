//! `chaos load` end to end against a `faultline-http` server on loopback (real time, each
//! run at most 1.5 s and a few hundred requests).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use faultline_http::{PerCoreServer, Request, Response, Router, ServerConfig, serve_per_core};

fn server() -> PerCoreServer {
    serve_per_core(
        "127.0.0.1:0".parse().unwrap(),
        1,
        ServerConfig::default(),
        || {
            Router::new()
                .get("/hello", |_: &Request<'_>| Response::text("Hello, World!"))
                .get("/missing", |_: &Request<'_>| Response::new(404))
                // 503 only for the exact request the test sends, so a 503 proves the
                // method, body and header arrived; anything else is a 400.
                .post("/fail", |req: &Request<'_>| {
                    if req.body() == b"{}" && req.header_str("x-test") == Some("1") {
                        Response::new(503)
                    } else {
                        Response::new(400)
                    }
                })
        },
    )
    .expect("server binds port 0")
}

fn chaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(args)
        .output()
        .expect("chaos runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn chaos_load_prints_achieved_rate_outcomes_and_percentiles() {
    let s = server();
    let url = format!("http://{}/hello", s.local_addr());
    let out = chaos(&["load", &url, "--rate", "200/s", "--duration", "1s"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("200 scheduled, 200 started, 200 finished"),
        "{stdout}"
    );
    assert!(stdout.contains("req/s achieved"), "{stdout}");
    assert!(
        stdout.contains("ok 200  4xx 0  5xx 0  timeouts 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("p99 ") && stdout.contains("p99.9 "),
        "{stdout}"
    );
}

#[test]
fn chaos_load_json_counts_each_error_class_and_sends_method_body_and_headers() {
    let s = server();
    let addr = s.local_addr();
    let fail = format!("http://{addr}/fail");
    let out = chaos(&[
        "load",
        &fail,
        "--rate",
        "100/s",
        "--duration",
        "1s",
        "--method",
        "post",
        "--body",
        "{}",
        "--header",
        "X-Test: 1",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["counts"]["requests"], 100, "{r}");
    assert_eq!(r["counts"]["serverError5xx"], 100, "{r}");
    assert_eq!(r["errors"], 100, "{r}");
    let per_second: u64 = r["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_second, 100);
    // 100/s for the default 5 s timeout could hold 500 requests: that is the ceiling.
    assert_eq!(
        (r["connections"].as_u64(), r["maxConnections"].as_u64()),
        (Some(16), Some(500)),
        "{r}"
    );
    assert_eq!(r["expired"], 0, "{r}");
    assert!(r["generatorDelayMs"]["max"].is_number(), "{r}");

    // A 404 is its own class and not an error; a closed port is a transport error.
    let missing = format!("http://{addr}/missing");
    let out = chaos(&[
        "load",
        &missing,
        "--rate",
        "50/s",
        "--duration",
        "1s",
        "--format",
        "json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        (r["counts"]["clientError4xx"].as_u64(), r["errors"].as_u64()),
        (Some(50), Some(0))
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let out = chaos(&[
        "load",
        &dead,
        "--rate",
        "20/s",
        "--duration",
        "500ms",
        "--format",
        "json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["counts"]["transportErrors"], 10, "{r}");
}

#[test]
fn chaos_load_closed_loop_reports_throughput() {
    let s = server();
    let url = format!("http://{}/hello", s.local_addr());
    let out = chaos(&[
        "load",
        &url,
        "--closed-loop",
        "--duration",
        "500ms",
        "--connections",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["mode"], "closed");
    assert!(r["counts"]["ok"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
}

#[test]
fn chaos_load_rejects_bad_input_with_exit_code_2() {
    for args in [
        &["load", "https://127.0.0.1:1/", "--rate", "10/s"][..],
        &["load", "http://127.0.0.1:1/", "--rate", "0/s"],
        &["load", "http://127.0.0.1:1/"],
        &[
            "load",
            "http://127.0.0.1:1/",
            "--rate",
            "10/s",
            "--header",
            "nocolon",
        ],
        &[
            "load",
            "http://127.0.0.1:1/",
            "--rate",
            "10/s",
            "--method",
            "BREW",
        ],
        &[
            "load",
            "http://127.0.0.1:1/",
            "--rate",
            "10/s",
            "--connections",
            "0",
        ],
        &[
            "load",
            "http://127.0.0.1:1/",
            "--rate",
            "10/s",
            "--connections",
            "8",
            "--max-connections",
            "4",
        ],
        &[
            "load",
            "http://127.0.0.1:1/",
            "--rate",
            "10/s",
            "--duration",
            "soon",
        ],
    ] {
        let out = chaos(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn ctrl_c_stops_chaos_load_early_and_still_prints_the_summary() {
    let s = server();
    let url = format!("http://{}/hello", s.local_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["load", &url, "--rate", "100/s", "--duration", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chaos starts");
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait_with_output().expect("chaos exits");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("(stopped early)"), "{stdout}");
}
