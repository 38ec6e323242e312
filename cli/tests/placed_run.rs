//! The operator's runner on targets it placed itself, against a real `chaos agent` over
//! HTTP: the pod's process is found by the pod uid in its cgroup path (a cgroup named
//! `pod<uid>` the test creates, as the kubelet does), a SIGSTOP fault freezes it and the
//! revert thaws it, every apply and revert reaches the reconciler's observer, and a
//! SIGKILL on a pod is a pod deletion through the API (the process itself survives).
//! `chaos run` honours `FAULTLINE_TARGETS_FILE` with the same environment.
//! Needs root for the cgroup (scripts/ci runs as root).

mod common;

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_controller::schedule::{
    ExperimentRunner, FaultObserver, InProcessRunner, PlacedTarget, PodActions, RunContext, Verdict,
};
use faultline_controller::slo::BoxFuture;
use faultline_spec::wire::{FaultId, FaultRequest, PodRef, ResolvedTarget};
use tokio_util::sync::CancellationToken;

use common::{Reaped, state_of as state};

const TOKEN: &str = "placed-run-token-0123456789abcdef";

/// A cgroup named like a kubelet pod cgroup, holding one process; removed on drop.
struct PodCgroup {
    dir: PathBuf,
    process: Reaped,
}

impl PodCgroup {
    fn new(uid: &str) -> Option<Self> {
        let process = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
        let pid = process.0.id();
        let name = format!("faultline-test-{}-pod{uid}", std::process::id());
        // A v1 hierarchy on hybrid hosts, else the unified one.
        for root in [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let dir = Path::new(root).join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            if std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok() {
                return Some(Self { dir, process });
            }
            let _ = std::fs::remove_dir(&dir);
        }
        None
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    faultline_testkit::skip(format_args!("{test}: needs root to create a pod cgroup"))
}

/// The agent, its base URL, and its standard output (kept open while it runs).
fn start_agent(dir: &Path) -> (Reaped, String, BufReader<ChildStdout>) {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let (agent, addr, out) = common::start_agent(dir);
    (agent, format!("http://{addr}"), out)
}

/// Records the process states seen while the run goes on.
fn watch_states(pid: u32, stop: Arc<Mutex<bool>>) -> std::thread::JoinHandle<Vec<char>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !*stop.lock().unwrap() {
            if let Some(s) = state(pid)
                && seen.last() != Some(&s)
            {
                seen.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    })
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    kills: Mutex<Vec<PodRef>>,
}

struct Observer(Arc<Recorder>);

impl FaultObserver for Observer {
    fn applied(&self, agent: &str, request: &FaultRequest) {
        self.0.events.lock().unwrap().push(format!(
            "applied {} on {} at {agent}",
            request.id, request.target.name
        ));
    }
    fn reverted(&self, id: &FaultId) {
        self.0.events.lock().unwrap().push(format!("reverted {id}"));
    }
}

struct Pods(Arc<Recorder>);

impl PodActions for Pods {
    fn kill<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<(), String>> {
        self.0.kills.lock().unwrap().push(pod.clone());
        Box::pin(async { Ok(()) })
    }
}

fn pod(name: &str, uid: &str) -> PodRef {
    PodRef {
        namespace: "shop".into(),
        name: name.into(),
        uid: uid.into(),
        node: "node-1".into(),
    }
}

fn experiment(yaml: &str) -> faultline_spec::Experiment {
    let opts = faultline_spec::ValidateOptions::default();
    faultline_spec::parse_str(yaml, "placed.yaml", &opts)
        .unwrap()
        .remove(0)
}

/// A SIGSTOP for 1.5 s on the worker pod, in a 3 s experiment.
macro_rules! freeze {
    () => {
        "\
apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {name: placed-run, namespace: shop}
spec:
  duration: 3s
  faults:
    - name: freeze
      target: {labels: {app: worker}, mode: one}
      after: 500ms
      duration: 1500ms
      process: {signal: SIGSTOP}
"
    };
}

const FREEZE: &str = freeze!();

const FREEZE_AND_KILL: &str = concat!(
    freeze!(),
    "    - name: kill
      target: {labels: {app: victim}, mode: one}
      after: 1s
      duration: 1s
      process: {signal: SIGKILL}
"
);

/// A node as the operator sees it: a real agent and one pod (its own uid: the tests run
/// at once, and a uid names exactly one pod).
struct Node {
    // Dropped in this order: the agent, the pod, then the directory.
    _agent: (Reaped, BufReader<ChildStdout>),
    worker: PodCgroup,
    dir: tempfile::TempDir,
    agent_url: String,
    uid: &'static str,
}

impl Node {
    fn new(test: &str, uid: &'static str) -> Option<Self> {
        if !root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (agent, agent_url, out) = start_agent(dir.path());
        let worker = PodCgroup::new(uid).expect("create a pod cgroup");
        Some(Self {
            _agent: (agent, out),
            worker,
            dir,
            agent_url,
            uid,
        })
    }

    /// The freeze fault on the worker, placed as the operator places it: the pod only;
    /// the agent finds the process.
    fn freeze_target(&self) -> PlacedTarget {
        PlacedTarget {
            fault: "freeze".into(),
            target: ResolvedTarget {
                name: "worker-0".into(),
                pod: Some(pod("worker-0", self.uid)),
                ..Default::default()
            },
            agent: self.agent_url.clone(),
        }
    }

    fn runner(&self) -> InProcessRunner {
        InProcessRunner {
            agent_token_file: self.dir.path().join("token"),
            prometheus: None,
            work_dir: self.dir.path().join("runs"),
            lease_ttl: Duration::from_secs(3),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runner_freezes_a_pod_by_uid_reports_every_fault_and_kills_pods_through_the_api()
 {
    let Some(node) = Node::new("placed run", "4f6b8a2e-1c3d-4e5f-8a9b-0c1d2e3f4a51") else {
        return;
    };
    let victim = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
    let victim_pod = pod("victim-0", "9a8b7c6d-0000-4000-8000-000000000001");
    let targets = vec![
        node.freeze_target(),
        PlacedTarget {
            fault: "kill".into(),
            target: ResolvedTarget {
                name: "victim-0".into(),
                pid: Some(victim.0.id()),
                pod: Some(victim_pod.clone()),
                ..Default::default()
            },
            agent: node.agent_url.clone(),
        },
    ];
    let recorder = Arc::new(Recorder::default());
    let context = RunContext {
        faults: Some(Arc::new(Observer(recorder.clone()))),
        targets,
        pods: Some(Arc::new(Pods(recorder.clone()))),
        ..RunContext::default()
    };
    let stop = Arc::new(Mutex::new(false));
    let states = watch_states(node.worker.pid(), stop.clone());
    let outcome = node
        .runner()
        .run(
            experiment(FREEZE_AND_KILL),
            context,
            CancellationToken::new(),
        )
        .await;
    *stop.lock().unwrap() = true;
    let states = states.join().unwrap();

    assert_eq!(outcome.verdict, Verdict::Pass, "{outcome:?}");
    assert!(
        states.contains(&'T'),
        "the pod's process was stopped: {states:?}"
    );
    assert_eq!(
        state(node.worker.pid()),
        Some('S'),
        "and continued by the revert"
    );
    let events = recorder.events.lock().unwrap().clone();
    let applied: Vec<&String> = events.iter().filter(|e| e.starts_with("applied")).collect();
    assert_eq!(
        applied.len(),
        1,
        "only the freeze stays applied: {events:?}"
    );
    assert!(
        applied[0].contains("on worker-0 at http://127.0.0.1:"),
        "{events:?}"
    );
    let freeze_id = applied[0].split(' ').nth(1).unwrap();
    assert!(
        events.contains(&format!("reverted {freeze_id}")),
        "the revert was reported: {events:?}"
    );
    assert_eq!(*recorder.kills.lock().unwrap(), [victim_pod]);
    assert_eq!(
        state(victim.0.id()),
        Some('S'),
        "the kill went through the API, not the agent"
    );
    let report = outcome.report_path.expect("a JSON report");
    let json = std::fs::read_to_string(&report).unwrap();
    assert!(json.contains("deleted pod shop/victim-0"), "{json}");
    assert!(report.with_file_name("junit.xml").exists());
    assert!(report.with_file_name("report.html").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_slo_without_prometheus_fails_the_preflight_and_injects_nothing() {
    let Some(node) = Node::new(
        "placed run preflight",
        "4f6b8a2e-1c3d-4e5f-8a9b-0c1d2e3f4a52",
    ) else {
        return;
    };
    let yaml = format!(
        "{FREEZE}  slos:\n    - name: p99\n      latency: {{service: gateway, quantile: 0.99, max: 1s}}\n      window: 1s\n"
    );
    let recorder = Arc::new(Recorder::default());
    let context = RunContext {
        faults: Some(Arc::new(Observer(recorder.clone()))),
        targets: vec![node.freeze_target()],
        ..RunContext::default()
    };
    let outcome = node
        .runner()
        .run(experiment(&yaml), context, CancellationToken::new())
        .await;
    assert_eq!(outcome.verdict, Verdict::Error, "{outcome:?}");
    let report = outcome.report.unwrap().to_string();
    assert!(report.contains("--prometheus"), "{report}");
    assert!(recorder.events.lock().unwrap().is_empty());
    assert_eq!(state(node.worker.pid()), Some('S'));
}

#[test]
fn chaos_run_honours_a_targets_file_from_its_caller() {
    let Some(node) = Node::new(
        "chaos run with FAULTLINE_TARGETS_FILE",
        "4f6b8a2e-1c3d-4e5f-8a9b-0c1d2e3f4a53",
    ) else {
        return;
    };
    let dir = node.dir.path();
    let file = dir.join("freeze.yaml");
    std::fs::write(&file, FREEZE).unwrap();
    let targets = dir.join("targets.json");
    std::fs::write(
        &targets,
        serde_json::to_vec(&[node.freeze_target()]).unwrap(),
    )
    .unwrap();
    let json = dir.join("report.json");
    let stop = Arc::new(Mutex::new(false));
    let states = watch_states(node.worker.pid(), stop.clone());
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .arg("run")
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .arg("--no-progress")
        .env("FAULTLINE_TARGETS_FILE", &targets)
        .env("FAULTLINE_AGENT_TOKEN_FILE", dir.join("token"))
        .output()
        .unwrap();
    *stop.lock().unwrap() = true;
    let states = states.join().unwrap();
    let report = std::fs::read_to_string(&json).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{report}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the run lasted its duration"
    );
    assert!(states.contains(&'T'), "{states:?}");
    assert_eq!(state(node.worker.pid()), Some('S'));
    assert!(report.contains("\"mode\": \"kubernetes\""), "{report}");
}
