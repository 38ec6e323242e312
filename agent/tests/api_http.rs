//! The agent API over real HTTP (faultline-http server on port 0): authentication,
//! malformed and unknown-kind bodies, idempotent apply and revert.

use std::net::SocketAddr;

use faultline_agent::api::{Api, Token};
use faultline_agent::{Agent, AgentConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    _state: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server() -> Server {
    let state = tempfile::tempdir().unwrap();
    let (agent, _) = Agent::start(AgentConfig {
        state_dir: Some(state.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        faultline_agent::api::serve(
            listener,
            Api::new(agent, Token::new(TOKEN).unwrap()),
            s.cancelled_owned(),
        )
        .await
        .unwrap();
    });
    Server {
        addr,
        stop,
        _state: state,
    }
}

/// One request on a fresh connection; returns status and parsed JSON body (Null if empty).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Decode a chunked body.
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    (status, value)
}

fn memory_fault(id: &str) -> String {
    json!({
        "id": id,
        "experiment": "api-test",
        "target": {"name": "agent"},
        "fault": {"memory": {"size": "1MiB"}},
        "ttl": "30s"
    })
    .to_string()
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_and_change_nothing() {
    let s = server().await;
    for token in [
        None,
        Some("wrong-token-wrong-token"),
        Some(&TOKEN[..TOKEN.len() - 1]),
    ] {
        let (status, body) = call(s.addr, "POST", "/v1/faults", token, &memory_fault("f1")).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized");
        let (status, _) = call(s.addr, "DELETE", "/v1/faults/f1", token, "").await;
        assert_eq!(status, 401);
        let (status, _) = call(s.addr, "GET", "/v1/capabilities", token, "").await;
        assert_eq!(status, 401);
    }
    let (status, body) = call(s.addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(body["faults"], json!([]), "nothing was applied");
    let (_, metrics) = call(s.addr, "GET", "/metrics", None, "").await;
    assert!(
        !metrics
            .as_str()
            .unwrap()
            .contains("faultline_agent_fault_applies_total{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_json_gets_400_and_an_unknown_fault_kind_422_with_json_errors() {
    let s = server().await;
    let (status, body) = call(s.addr, "POST", "/v1/faults", Some(TOKEN), "{\"id\": ").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "malformed");
    let unknown = json!({
        "id": "f1", "experiment": "e", "target": {"name": "t"},
        "fault": {"meteor": {"size": "large"}}, "ttl": "30s"
    })
    .to_string();
    let (status, body) = call(s.addr, "POST", "/v1/faults", Some(TOKEN), &unknown).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "unknown_fault_kind");
    assert!(
        body["message"].as_str().unwrap().contains("meteor"),
        "{body}"
    );
    let (status, body) = call(
        s.addr,
        "POST",
        "/v1/faults/f1/renew",
        Some(TOKEN),
        "not json",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = call(s.addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert_eq!(list["faults"], json!([]));
}

#[tokio::test]
async fn apply_is_idempotent_on_the_id_and_delete_is_idempotent() {
    let s = server().await;
    let (status, first) = call(
        s.addr,
        "POST",
        "/v1/faults",
        Some(TOKEN),
        &memory_fault("f1"),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["phase"], "active");
    assert_eq!(first["backend"], "memory");
    assert_eq!(first["effect"]["metrics"]["bytes_held"], 1_048_576.0);
    let (status, second) = call(
        s.addr,
        "POST",
        "/v1/faults",
        Some(TOKEN),
        &memory_fault("f1"),
    )
    .await;
    assert_eq!(
        status, 201,
        "a repeated apply replays the first answer: {second}"
    );
    assert_eq!(second, first, "same state, nothing applied twice");
    assert_eq!(second["appliedAtMs"], first["appliedAtMs"]);
    assert_eq!(second["lease"], first["lease"]);
    let (_, list) = call(s.addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert_eq!(list["faults"].as_array().unwrap().len(), 1);

    let (status, renewed) = call(
        s.addr,
        "POST",
        "/v1/faults/f1/renew",
        Some(TOKEN),
        "{\"ttl\": \"60s\"}",
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["lease"]["renewals"], 1);
    assert_eq!(renewed["lease"]["ttl"], "1m");

    let (status, gone) = call(s.addr, "DELETE", "/v1/faults/f1", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(gone["phase"], "reverted");
    let (status, again) = call(s.addr, "DELETE", "/v1/faults/f1", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(again, gone);
    let (status, _) = call(s.addr, "DELETE", "/v1/faults/never", Some(TOKEN), "").await;
    assert_eq!(status, 204);
    let (status, body) = call(
        s.addr,
        "POST",
        "/v1/faults/f1/renew",
        Some(TOKEN),
        "{\"ttl\": \"60s\"}",
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_active")));
    let (_, list) = call(s.addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert_eq!(list["faults"], json!([]));
    let (_, metrics) = call(s.addr, "GET", "/metrics", None, "").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("faultline_agent_fault_applies_total{kind=\"memory\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("faultline_agent_fault_reverts_total{kind=\"memory\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("faultline_agent_active_faults{kind=\"memory\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn capabilities_and_health_answer() {
    let s = server().await;
    let (status, caps) = call(s.addr, "GET", "/v1/capabilities", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert!(
        caps["faultKinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "process"),
        "{caps}"
    );
    assert!(caps["pidfd"].is_boolean(), "{caps}");
    let (status, _) = call(s.addr, "GET", "/healthz", None, "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_dry_run_checks_the_request_and_applies_nothing() {
    let s = server().await;
    let (status, body) = call(
        s.addr,
        "POST",
        "/v1/faults?dryRun=true",
        Some(TOKEN),
        &memory_fault("dry"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dryRun"], true);
    assert_eq!(body["id"], "dry");
    assert_eq!(body["backend"], "memory");
    let (_, list) = call(s.addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert_eq!(list["faults"], json!([]), "a dry run applies nothing");

    // What apply would refuse, the dry run refuses with the same status and code.
    let stop_without_pid = json!({
        "id": "stop", "experiment": "api-test", "target": {"name": "nobody"},
        "fault": {"process": {"signal": "SIGSTOP"}}, "ttl": "30s"
    })
    .to_string();
    let (dry_status, dry_body) = call(
        s.addr,
        "POST",
        "/v1/faults?dryRun=true",
        Some(TOKEN),
        &stop_without_pid,
    )
    .await;
    let (real_status, real_body) =
        call(s.addr, "POST", "/v1/faults", Some(TOKEN), &stop_without_pid).await;
    assert_eq!(dry_status, 422, "{dry_body}");
    assert_eq!(
        (dry_status, &dry_body["error"]),
        (real_status, &real_body["error"])
    );

    // A query the agent does not know is refused, never ignored into a real apply.
    let (status, body) = call(
        s.addr,
        "POST",
        "/v1/faults?dryrun=true",
        Some(TOKEN),
        &memory_fault("typo"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = call(s.addr, "GET", "/v1/faults", Some(TOKEN), "").await;
    assert_eq!(list["faults"], json!([]));
}

/// The response schema the OpenAPI document gives `method path` for `status`, as a
/// standalone JSON Schema (the document's components travel along for `$ref`s).
fn documented_schema(doc: &Value, path: &str, method: &str, status: u16) -> Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let answer = &op["responses"][status.to_string()];
    assert!(
        answer.is_object(),
        "{method} {path} does not document {status}"
    );
    let mut schema = answer["content"]["application/json"]["schema"].clone();
    if schema.is_null() {
        return Value::Null;
    }
    schema["components"] = doc["components"].clone();
    schema
}

/// Every answer of a whole fault lifecycle, and of each kind of refusal, has a status the
/// document lists for its operation and a body that matches the schema listed for it.
#[tokio::test]
async fn every_answer_matches_the_openapi_document() {
    let s = server().await;
    let (status, doc) = call(s.addr, "GET", "/v1/openapi.json", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        faultline_agent::openapi::document(),
        "the served document is the built one"
    );
    let mut target = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let stop = json!({"id": "stop-1", "experiment": "api-test",
        "target": {"name": "sleep", "pid": target.id()},
        "fault": {"process": {"signal": "SIGSTOP"}}, "ttl": "30s"})
    .to_string();
    let calls: Vec<(&str, &str, &str, Option<&str>, String)> = vec![
        (
            "post",
            "/v1/faults",
            "/v1/faults?dryRun=true",
            Some(TOKEN),
            stop.clone(),
        ),
        (
            "post",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            stop.clone(),
        ),
        (
            "post",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            memory_fault("mem-1"),
        ),
        (
            "get",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            String::new(),
        ),
        (
            "get",
            "/v1/faults/{id}",
            "/v1/faults/stop-1",
            Some(TOKEN),
            String::new(),
        ),
        (
            "post",
            "/v1/faults/{id}/renew",
            "/v1/faults/stop-1/renew",
            Some(TOKEN),
            r#"{"ttl":"40s"}"#.into(),
        ),
        (
            "delete",
            "/v1/faults/{id}",
            "/v1/faults/stop-1",
            Some(TOKEN),
            String::new(),
        ),
        (
            "delete",
            "/v1/faults/{id}",
            "/v1/faults/mem-1",
            Some(TOKEN),
            String::new(),
        ),
        (
            "get",
            "/v1/capabilities",
            "/v1/capabilities",
            Some(TOKEN),
            String::new(),
        ),
        // Refusals: malformed, unknown kind, invalid, conflict, protected, unknown id,
        // not active, no token.
        ("post", "/v1/faults", "/v1/faults", Some(TOKEN), "{".into()),
        (
            "post",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            stop.replace("process", "teleport"),
        ),
        (
            "post",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            stop.replace("30s", "0s"),
        ),
        (
            "post",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            stop.replace("SIGSTOP", "SIGTERM"),
        ),
        (
            "post",
            "/v1/faults",
            "/v1/faults",
            Some(TOKEN),
            stop.replace(&format!("{}", target.id()), "1")
                .replace("stop-1", "stop-init"),
        ),
        (
            "post",
            "/v1/faults",
            "/v1/faults?dryrun=true",
            Some(TOKEN),
            stop.replace("stop-1", "stop-2"),
        ),
        (
            "get",
            "/v1/faults/{id}",
            "/v1/faults/never",
            Some(TOKEN),
            String::new(),
        ),
        (
            "post",
            "/v1/faults/{id}/renew",
            "/v1/faults/stop-1/renew",
            Some(TOKEN),
            r#"{"ttl":"40s"}"#.into(),
        ),
        (
            "post",
            "/v1/faults/{id}/renew",
            "/v1/faults/stop-1/renew",
            Some(TOKEN),
            r#"{"ttl":5}"#.into(),
        ),
        ("get", "/v1/faults", "/v1/faults", None, String::new()),
    ];
    let mut statuses = Vec::new();
    for (method, template, path, token, body) in &calls {
        let (status, answer) = call(s.addr, &method.to_uppercase(), path, *token, body).await;
        statuses.push(status);
        let schema = documented_schema(&doc, template, method, status);
        if schema.is_null() {
            assert_eq!(answer, Value::Null, "{method} {path}: {status} has no body");
            continue;
        }
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        let problems: Vec<String> = validator
            .iter_errors(&answer)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{method} {path} -> {status}: {answer}\n{}",
            problems.join("\n")
        );
    }
    assert_eq!(
        statuses,
        [
            200, 201, 201, 200, 200, 200, 200, 200, 200, 400, 422, 422, 409, 403, 400, 404, 409,
            400, 401
        ],
        "the lifecycle and each refusal were reached"
    );
    // The check can fail: a state with a phase the document does not list does not match.
    let (_, mut state) = call(s.addr, "GET", "/v1/faults/stop-1", Some(TOKEN), "").await;
    state["phase"] = json!("sideways");
    let schema = documented_schema(&doc, "/v1/faults/{id}", "get", 200);
    assert!(!jsonschema::validator_for(&schema).unwrap().is_valid(&state));
    target.kill().unwrap();
    target.wait().unwrap();
}

/// A method a path does not take, or one the HTTP stack does not know, gets 405 with the
/// methods the path takes in `Allow`, never a 5xx; a path the API does not have gets 404
/// with an `ApiError` body.
#[tokio::test]
async fn other_methods_get_405_with_allow_and_unknown_paths_404() {
    let s = server().await;
    for (method, path, allow) in [
        ("PUT", "/v1/faults", "GET, HEAD, POST"),
        ("PATCH", "/v1/faults/f-1", "GET, HEAD, DELETE"),
        ("GET", "/v1/faults/f-1/renew", "POST"),
        ("DELETE", "/v1/capabilities", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("QUERY", "/v1/faults", "GET, HEAD, POST"),
    ] {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 405"), "{method} {path}: {raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{method} {path}: {raw}"
        );
    }
    let (status, body) = call(s.addr, "GET", "/v2/faults", Some(TOKEN), "").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}
