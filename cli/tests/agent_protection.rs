//! The agent's blast radius, through a real `chaos agent`: requests aimed at PID 1, at the
//! agent's parent, at a kernel thread, at a critical service and at a process outside the
//! allow-list each get 403 `protected`, in the dry run and in the apply, and the target
//! is untouched afterwards. Each test also applies the same fault to an unprotected
//! process, so a refusal is the rule's doing and not an agent that cannot act at all.
//!
//! PID 1 is a process the test starts as init of a PID namespace it creates (`unshare
//! --pid`), with the agent inside: never this machine's real PID 1. Needs root.

mod common;

#[path = "../../agent/tests/netns_common.rs"]
mod netns_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Reaped, announced, start_agent_with, state_of};

const TOKEN: &str = "protection-test-token-0123456789";

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    common::call(addr, TOKEN, method, path, body)
}

fn sigstop(id: &str, pid: u32) -> String {
    format!(
        r#"{{"id":"{id}","experiment":"protection","target":{{"name":"t","pid":{pid}}},"fault":{{"process":{{"signal":"SIGSTOP"}}}},"ttl":"30s"}}"#
    )
}

/// SIGSTOP aimed at `pid` (as the agent sees it) is refused with 403 `protected`, in the
/// dry run and the apply, and `host_pid` keeps its state; the refusal names `why`.
fn refused(addr: SocketAddr, pid: u32, host_pid: u32, why: &str) {
    assert!(state_of(host_pid).is_some(), "pid {pid} runs");
    for path in ["/v1/faults?dryRun=true", "/v1/faults"] {
        let (status, text) = call(addr, "POST", path, &sigstop("stop-refused", pid));
        assert_eq!(status, 403, "{path} on pid {pid}: {text}");
        assert!(text.contains(r#""error":"protected""#), "{text}");
        assert!(text.contains(why), "the refusal names {why:?}: {text}");
    }
    std::thread::sleep(Duration::from_millis(100));
    let after = state_of(host_pid);
    assert!(
        after.is_some_and(|s| s != 'T' && s != 't'),
        "pid {pid} untouched: state {after:?}"
    );
    let (status, text) = call(addr, "GET", "/v1/faults", "");
    assert_eq!(status, 200);
    assert!(
        text.ends_with(r#"{"faults":[]}"#),
        "nothing applied: {text}"
    );
}

/// SIGSTOP on `pid` is applied (state T at `host_pid`) and reverted (running again).
fn stopped_and_continued(addr: SocketAddr, pid: u32, host_pid: u32) {
    let (status, text) = call(addr, "POST", "/v1/faults", &sigstop("stop-ok", pid));
    assert_eq!(status, 201, "an unprotected process: {text}");
    assert_eq!(state_of(host_pid), Some('T'));
    let (status, text) = call(addr, "DELETE", "/v1/faults/stop-ok", "");
    assert_eq!(status, 200, "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_of(host_pid) == Some('T') {
        assert!(Instant::now() < deadline, "pid {pid} still stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn token_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    dir
}

fn sleeper() -> Reaped {
    Reaped(Command::new("sleep").arg("600").spawn().unwrap())
}

/// Parent PID and the PID in the innermost namespace, from `/proc/PID/status`.
fn ppid_and_ns_pid(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let ppid = field("PPid:").trim().parse().unwrap();
    let ns_pid = field("NSpid:")
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    (ppid, ns_pid)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .is_some_and(|v| v.trim() == pid.to_string())
            })
        })
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn pid_1_of_its_namespace_and_the_agents_parent_are_refused_and_left_running() {
    if !netns_common::privileged_or_skip("agent protection (PID namespace)") {
        return;
    }
    let dir = token_dir();
    // PID 1 of the new namespace is `sh`, waiting; its children are a `sleep` (the
    // unprotected control) and a second `sh`, the agent's parent. `--kill-child` takes
    // the whole namespace down with `unshare`.
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .args(["sh", "-c"])
        .arg(r#"sleep 600 & sh -c '"$FL_CHAOS" agent --listen 127.0.0.1:0 --token-file "$FL_DIR/token" --state-dir "$FL_DIR/state"; true' & wait"#)
        .env("FL_CHAOS", env!("CARGO_BIN_EXE_chaos"))
        .env("FL_DIR", dir.path());
    let (unshare, addr, _out) = announced(command);
    let init = children(unshare.0.id());
    assert_eq!(init.len(), 1, "unshare forks one init: {init:?}");
    let init = init[0];
    assert_eq!(ppid_and_ns_pid(init).1, 1, "PID 1 inside the namespace");
    let (mut sleep, mut parent) = (None, None);
    for c in children(init) {
        match comm(c).as_str() {
            "sleep" => sleep = Some(c),
            "sh" => parent = Some(c),
            other => panic!("unexpected child {c} ({other}) of the namespace's init"),
        }
    }
    let (sleep, parent) = (sleep.unwrap(), parent.unwrap());
    let agent = children(parent);
    assert_eq!(agent.len(), 1);
    assert_eq!(comm(agent[0]), "chaos");

    refused(addr, 1, init, "PID 1 is the node's init");
    refused(
        addr,
        ppid_and_ns_pid(parent).1,
        parent,
        "is the agent's parent",
    );
    refused(
        addr,
        ppid_and_ns_pid(agent[0]).1,
        agent[0],
        "the agent itself",
    );
    stopped_and_continued(addr, ppid_and_ns_pid(sleep).1, sleep);
    assert!(state_of(init).is_some() && state_of(parent).is_some());
}

#[test]
fn a_kernel_thread_and_a_critical_service_are_refused_and_left_alone() {
    if !netns_common::privileged_or_skip("agent protection (kernel thread, critical)") {
        return;
    }
    let dir = token_dir();
    // The test's own `sleep` plays the node's critical service.
    let (_agent, addr, _out) = start_agent_with(dir.path(), &["--critical-processes", "sleep"]);
    assert_eq!(comm(2), "kthreadd", "PID 2 is the kernel's thread parent");
    refused(addr, 2, 2, "is a kernel thread");
    let kworker = children(2)
        .into_iter()
        .find(|&p| comm(p).starts_with("kworker"))
        .expect("a kworker thread");
    refused(addr, kworker, kworker, "is a kernel thread");
    let critical = sleeper();
    refused(
        addr,
        critical.0.id(),
        critical.0.id(),
        "is a critical service of this node (protected: sleep)",
    );
    let other = Reaped(
        Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    stopped_and_continued(addr, other.0.id(), other.0.id());
}

/// A `pids` cgroup (v1) of its own; dropping it removes the cgroup.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_process_outside_the_allow_list_is_refused_and_one_inside_is_not() {
    if !netns_common::privileged_or_skip("agent protection (allow-list)") {
        return;
    }
    let name = format!("faultline-test-{}-allow", std::process::id());
    let root = PathBuf::from("/sys/fs/cgroup/pids");
    if !root.join("cgroup.procs").exists() {
        faultline_testkit::skip("agent protection (allow-list): no cgroup v1 `pids` hierarchy");
        return;
    }
    let inside = sleeper();
    let outside = sleeper();
    let cgroup = Cgroup(root.join(&name));
    std::fs::create_dir(&cgroup.0).unwrap();
    std::fs::write(cgroup.0.join("cgroup.procs"), inside.0.id().to_string()).unwrap();
    let dir = token_dir();
    let rule = format!("cgroup:/{name}");
    let (_agent, addr, _out) = start_agent_with(dir.path(), &["--allow", &rule]);
    refused(
        addr,
        outside.0.id(),
        outside.0.id(),
        &format!("matches no rule of the allow-list ({rule})"),
    );
    stopped_and_continued(addr, inside.0.id(), inside.0.id());
    drop((inside, outside));
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn a_malformed_allow_rule_or_namespace_is_refused_at_start_with_exit_2() {
    let dir = token_dir();
    for args in [
        &["--allow", "label:app=payments"][..],
        &["--allow", "cgroup:relative"],
        &["--protect-namespace", "Kube_System"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
            .args(["agent", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(dir.path().join("token"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("expected `cgroup:/PATH`")
                || stderr.contains("is not a Kubernetes namespace name"),
            "{args:?}: {stderr}"
        );
    }
}

/// The agent's arguments in the shipped DaemonSet.
fn daemonset_agent_args() -> Vec<String> {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/agent.yaml"),
    )
    .unwrap();
    let ds: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let args = &ds["spec"]["template"]["spec"]["containers"][0]["args"];
    args.as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_shipped_daemonset_refuses_kube_system_and_faultline_pods_and_serves_others() {
    if !netns_common::privileged_or_skip("agent protection (DaemonSet namespaces)") {
        return;
    }
    let root = PathBuf::from("/sys/fs/cgroup/pids");
    if !root.join("cgroup.procs").exists() {
        faultline_testkit::skip("agent protection (namespaces): no cgroup v1 `pids` hierarchy");
        return;
    }
    let args = daemonset_agent_args();
    for ns in ["kube-system", "faultline-system"] {
        assert!(
            args.contains(&format!("--protect-namespace={ns}")),
            "{args:?}"
        );
    }
    // The DaemonSet's own arguments, with the node's paths replaced by the test's: pods
    // are cgroups under a kubepods tree of our own, the kubelet's log directory a
    // temporary one.
    let dir = token_dir();
    let pod_logs = dir.path().join("pods");
    std::fs::create_dir(&pod_logs).unwrap();
    let local = |a: &String| -> Option<String> {
        let (flag, _) = a.split_once('=').unwrap_or((a, ""));
        Some(match flag {
            "agent" => return None,
            "--listen" => "--listen=127.0.0.1:0".into(),
            "--token-file" => format!("--token-file={}", dir.path().join("token").display()),
            "--state-dir" => format!("--state-dir={}", dir.path().join("state").display()),
            "--pod-log-dir" => format!("--pod-log-dir={}", pod_logs.display()),
            _ => a.clone(),
        })
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_chaos"));
    command.arg("agent").args(args.iter().filter_map(local));
    let (_agent, addr, _out) = announced(command);

    let kubepods = Cgroup(root.join(format!("faultline-test-{}-kubepods", std::process::id())));
    std::fs::create_dir(&kubepods.0).unwrap();
    let mut pods = Vec::new();
    for (i, ns) in ["kube-system", "faultline-system", "shop"]
        .iter()
        .enumerate()
    {
        let uid = format!("0b5e1c2a-7f3d-4e8a-9c11-2d3e4f5a6b7{i}");
        std::fs::create_dir(pod_logs.join(format!("{ns}_app-{i}_{uid}"))).unwrap();
        let cgroup = Cgroup(kubepods.0.join(format!("pod{uid}")));
        std::fs::create_dir(&cgroup.0).unwrap();
        let process = sleeper();
        std::fs::write(cgroup.0.join("cgroup.procs"), process.0.id().to_string()).unwrap();
        pods.push((*ns, process, cgroup));
    }
    for (ns, process, _) in &pods[..2] {
        let pid = process.0.id();
        refused(
            addr,
            pid,
            pid,
            &format!("a pod in protected namespace `{ns}`"),
        );
    }
    let shop = pods[2].1.0.id();
    stopped_and_continued(addr, shop, shop);
    // Processes leave their cgroups (which are then removed) before the tree goes.
    for (_, process, cgroup) in pods {
        drop(process);
        std::thread::sleep(Duration::from_millis(50));
        drop(cgroup);
    }
}

/// A run aimed at a protected target stops before anything is injected: exit 2, the
/// fault reported `refused` with the agent's reason in the terminal and the JSON report.
/// The target is `kthreadd`: a kernel thread ignores SIGSTOP, so even a broken guard
/// could not stop anything.
#[test]
fn chaos_run_at_a_protected_target_exits_2_with_the_fault_refused_and_nothing_injected() {
    assert_eq!(comm(2), "kthreadd");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("protected.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {name: stop-a-kernel-thread}
spec:
  duration: 20s
  load:
    target: gateway
    rate: 20/s
    requests: [{method: GET, path: /healthz}]
  faults:
    - name: stop-kthreadd
      target: {pid: 2}
      after: 5s
      duration: 5s
      process: {signal: SIGSTOP}
  slos:
    - {name: errors, source: client, errorRate: {service: gateway, max: 1%}}
"#,
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["run", "--no-progress", "--json"])
        .arg(&json)
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.contains("REFUSED"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let fault = &report["faults"][0];
    assert_eq!(fault["status"], "refused", "{fault}");
    assert!(
        fault["error"]
            .as_str()
            .unwrap()
            .contains("`kthreadd` is a kernel thread"),
        "{fault}"
    );
    assert!(fault["appliedMs"].is_null(), "never applied: {fault}");
    assert!(
        report["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("nothing was injected"),
        "{}",
        report["verdict"]
    );
}
