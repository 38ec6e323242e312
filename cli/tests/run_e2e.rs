//! End-to-end tests of `chaos run` with the real binary, the real reference fleet, the
//! in-process agent and real faults (issue 7's "done when" list).
//!
//! Each real run takes up to about a minute; the tests hold one lock so they never run
//! at the same time (they share two cores, and the resilient run's verdict must not
//! depend on a neighbour's CPU use).

#[path = "../../controller/tests/support/chromium.rs"]
mod chromium;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn chaos() -> &'static str {
    env!("CARGO_BIN_EXE_chaos")
}

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/quickstart.yaml")
}

/// PIDs of live processes whose environment holds `FL_TEST_MARKER=<marker>`: the fleet
/// services a run started (they inherit `--set-env`).
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("FL_TEST_MARKER={marker}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            // Zombies are gone as far as resources go, but we want none at all.
            out.push(pid);
        }
    }
    out
}

fn marker(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

struct Outputs {
    _dir: tempfile::TempDir,
    json: PathBuf,
    junit: PathBuf,
    html: PathBuf,
}

fn outputs() -> Result<Outputs> {
    let dir = tempfile::tempdir()?;
    Ok(Outputs {
        json: dir.path().join("report.json"),
        junit: dir.path().join("junit.xml"),
        html: dir.path().join("report.html"),
        _dir: dir,
    })
}

fn command(out: &Outputs, marker: &str) -> Command {
    let mut c = Command::new(chaos());
    c.arg("run")
        .arg(quickstart())
        .arg("--json")
        .arg(&out.json)
        .arg("--junit")
        .arg(&out.junit)
        .arg("--html")
        .arg(&out.html)
        .arg("--set-env")
        .arg(format!("FL_TEST_MARKER={marker}"))
        .env("NO_COLOR", "1")
        .env_remove("FL_RESILIENCE");
    c
}

fn wait_gone(marker: &str, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = marked_processes(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `chaos run` on the resilient fleet, without colour, its stderr shown.
trait PlainRun {
    fn plain_output(&mut self) -> std::io::Result<std::process::Output>;
}

impl PlainRun for Command {
    fn plain_output(&mut self) -> std::io::Result<std::process::Output> {
        self.env("NO_COLOR", "1")
            .env_remove("FL_RESILIENCE")
            .stderr(Stdio::inherit())
            .output()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn slo<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["slos"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn quickstart_passes_with_resilience_on_and_leaves_no_process_behind() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = outputs()?;
    let m = marker("pass");
    let output = command(&out, &m)
        .arg("--no-progress")
        .output()
        .context("running chaos")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");

    let report = read_json(&out.json)?;
    assert_eq!(report["verdict"]["outcome"], "pass");
    for name in ["gateway-errors", "gateway-p99", "client-errors"] {
        let s = slo(&report, name);
        assert_eq!(s["verdict"], "pass", "{name}: {s}");
        // One judged sample per second from t=10s to the end (~50 of them).
        assert!(s["samples"].as_array().map_or(0, Vec::len) >= 40, "{name}");
    }
    // Every fault was applied, had an effect and was reverted.
    let faults = report["faults"].as_array().context("faults")?;
    assert_eq!(faults.len(), 3);
    for f in faults {
        assert_eq!(f["status"], "reverted", "{f}");
        assert!(f["appliedMs"].is_i64() && f["revertedMs"].is_i64(), "{f}");
    }
    let recovery = &report["recovery"];
    assert_eq!(recovery["passed"], true, "{recovery}");
    // Every fault bit as asked (the effect gate held them all).
    for f in faults {
        assert_eq!(f["effectCheck"]["verdict"], "held", "{f}");
    }
    // The fleet's own reactions under the fault window: orders' breaker to the failing
    // notifications opened, and orders degraded to L2 (shedding notifications).
    let window = faults
        .iter()
        .find(|f| f["name"] == "notifications-errors")
        .context("notifications-errors")?;
    let (from, to) = (
        window["appliedMs"].as_i64().unwrap_or_default(),
        window["revertedMs"].as_i64().unwrap_or_default(),
    );
    let reached = |kind: &str, service: &str, value: f64| {
        report["reactions"].as_array().is_some_and(|rs| {
            rs.iter()
                .filter(|r| r["kind"] == kind && r["service"] == service)
                .flat_map(|r| r["points"].as_array().cloned().unwrap_or_default())
                .any(|p| {
                    let t = p[0].as_i64().unwrap_or_default();
                    (from..=to).contains(&t) && p[1].as_f64().unwrap_or_default() >= value
                })
        })
    };
    assert!(
        reached("breaker", "orders", 2.0),
        "no open breaker under the fault: {}",
        report["reactions"]
    );
    assert!(
        reached("degradation", "orders", 2.0),
        "orders did not degrade under the fault: {}",
        report["reactions"]
    );
    let junit = std::fs::read_to_string(&out.junit)?;
    assert!(!junit.contains("<failure"), "{junit}");

    let left = wait_gone(&m, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "fleet processes left after the run: {left:?}"
    );
    render_html(&out.html)?;
    Ok(())
}

#[test]
fn quickstart_without_resilience_fails_names_the_slo_and_reverts_within_a_second_of_abort()
-> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = outputs()?;
    let m = marker("fragile");
    let output = command(&out, &m)
        .arg("--no-progress")
        .env("FL_RESILIENCE", "off")
        .output()
        .context("running chaos")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}");

    let report = read_json(&out.json)?;
    assert_eq!(
        report["verdict"]["outcome"], "aborted",
        "{}",
        report["verdict"]
    );
    let reason = report["verdict"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("gateway-errors"), "{reason}");
    assert_eq!(slo(&report, "gateway-errors")["verdict"], "fail");

    // JUnit names the failing SLO as a failing testcase.
    let junit = std::fs::read_to_string(&out.junit)?;
    let failing = faultline_controller::schedule::process::failing_testcases(&junit);
    assert!(
        failing.iter().any(|t| t.contains("gateway-errors")),
        "{failing:?}\n{junit}"
    );

    // The abort fired after the condition held for its `for: 5s`, and every fault was
    // reverted within 1 s of that evaluation.
    let abort = &report["abort"];
    let since = abort["sinceMs"].as_i64().context("sinceMs")?;
    let triggered = abort["triggeredMs"].as_i64().context("triggeredMs")?;
    assert!(triggered - since >= 4_900, "{abort}");
    for f in report["faults"].as_array().context("faults")? {
        let reverted = f["revertedMs"].as_i64().context("revertedMs")?;
        let lag = reverted - triggered;
        eprintln!("{}: reverted {lag} ms after the abort", f["name"]);
        assert!(
            (0..=1_000).contains(&lag),
            "{} reverted {lag} ms after the abort",
            f["name"]
        );
    }
    let left = wait_gone(&m, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "fleet processes left after the run: {left:?}"
    );
    Ok(())
}

#[test]
fn sigint_mid_run_reverts_faults_stops_the_fleet_and_reports_aborted() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = outputs()?;
    let m = marker("sigint");
    // Progress lines on stderr (not a terminal: one plain line per second) tell us when
    // the faults are active.
    let mut child = command(&out, &m)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning chaos")?;
    common::await_stderr_line(&mut child, "faults: ", Duration::from_secs(45))?;
    let running = marked_processes(&m);
    assert_eq!(running.len(), 5, "the five fleet services run: {running:?}");
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    eprintln!("chaos exited {:?} after SIGINT", sent.elapsed());
    assert_eq!(status.code(), Some(1));
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        sent.elapsed()
    );

    let report = read_json(&out.json)?;
    assert_eq!(report["verdict"]["outcome"], "aborted");
    assert!(
        report["abort"]["condition"]
            .as_str()
            .is_some_and(|c| c.contains("SIGINT")),
        "{}",
        report["abort"]
    );
    for f in report["faults"].as_array().context("faults")? {
        assert!(f["revertedMs"].is_i64(), "fault left unreverted: {f}");
    }
    // The fleet processes are gone (the proxies and stress threads lived in the chaos
    // process, which has exited), and none of their ports still listens.
    let left = wait_gone(&m, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "fleet processes left after SIGINT: {left:?}"
    );
    for pid in running {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }
    Ok(())
}

/// Screenshots a real run's HTML report in headless Chromium and checks it is not blank.
fn render_html(page: &Path) -> Result<()> {
    let Some(bin) = chromium::chromium_or_skip("real-run HTML not rendered") else {
        return Ok(());
    };
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faultline-quickstart-report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir()?;
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1200,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let len = std::fs::metadata(&shot)?.len();
    eprintln!("SCREENSHOT {} ({len} bytes)", shot.display());
    // A blank 1200x2400 PNG compresses to a few kB; a page with charts and tables is far larger.
    assert!(len > 30_000, "screenshot looks blank: {len} bytes");
    let html = std::fs::read_to_string(page)?;
    assert_eq!(html.matches("<svg class=\"sli-chart\"").count(), 3);
    // The fleet's reactions are drawn on the same axis: a breaker lane and a
    // degradation lane for orders.
    assert_eq!(html.matches("<svg class=\"reactions-chart\"").count(), 1);
    assert!(
        html.contains("breaker orders→notifications"),
        "no breaker lane"
    );
    assert!(html.contains("degradation orders"), "no degradation lane");
    Ok(())
}

#[test]
fn dry_run_resolves_and_preflights_injects_nothing_and_exits_0() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = outputs()?;
    let m = marker("dry");
    let started = Instant::now();
    let output = command(&out, &m)
        .arg("--dry-run")
        .arg("--no-progress")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a dry run does not run the experiment"
    );
    let report = read_json(&out.json)?;
    let faults = report["faults"].as_array().context("faults")?;
    assert_eq!(faults.len(), 3);
    for f in faults {
        assert_eq!(f["status"], "skipped", "{f}");
        // Resolved against the running fleet: a PID, and proxies for the proxy faults.
        assert!(f["target"]["pid"].as_u64().is_some_and(|p| p > 0), "{f}");
    }
    let latency = faults
        .iter()
        .find(|f| f["name"] == "payments-latency")
        .context("payments-latency")?;
    assert_eq!(
        latency["target"]["proxies"],
        serde_json::json!(["orders->payments"])
    );
    assert!(wait_gone(&m, Duration::from_secs(2)).is_empty());
    Ok(())
}

#[test]
fn invalid_experiments_exit_2_and_targets_this_mode_cannot_reach_are_skipped_with_the_reason()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec: {duration: 10s, slos: [], faults: [], bogus: 1}\n",
    )?;
    let output = Command::new(chaos()).arg("run").arg(&bad).output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bogus"));

    let quickstart = std::fs::read_to_string(quickstart())?;
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        quickstart.replace(
            "target: {service: notifications}",
            "target: {service: billing}",
        ),
    )?;
    let output = Command::new(chaos()).arg("run").arg(&unknown).output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("billing"));

    let container = dir.path().join("container.yaml");
    std::fs::write(
        &container,
        quickstart.replace(
            "target: {service: notifications}",
            "target: {container: notifications}",
        ),
    )?;
    let json = dir.path().join("r.json");
    let output = Command::new(chaos())
        .arg("run")
        .arg(&container)
        .arg("--json")
        .arg(&json)
        .output()?;
    assert_eq!(output.status.code(), Some(0));
    let report = read_json(&json)?;
    assert_eq!(report["verdict"]["outcome"], "skipped");
    assert!(
        report["verdict"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--env compose")),
        "{}",
        report["verdict"]
    );
    Ok(())
}

/// `--rerun-inconclusive 1`: a run that earned no verdict (an HTTP fault whose path
/// matches nothing) runs once more; the second verdict counts, the first is kept in its
/// report and printed.
#[test]
fn an_inconclusive_run_is_run_again_and_keeps_the_earlier_verdict() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("unbitten.yaml");
    std::fs::write(
        &file,
        "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {name: matches-nothing}\nspec:\n  duration: 10s\n  load:\n    target: gateway\n    rate: 20/s\n    connections: 4\n    requests: [{path: /api/orders/1}]\n  faults:\n    - name: matches-nothing\n      target: {service: payments}\n      after: 3s\n      duration: 6s\n      http: {abort: {status: 503, percent: 50%}, paths: [/no-such-path]}\n  slos:\n    - name: gateway-up\n      errorRate: {service: gateway, max: 50%}\n      window: 5s\n",
    )?;
    let json = dir.path().join("report.json");
    let output = Command::new(chaos())
        .arg("run")
        .arg(&file)
        .args(["--rerun-inconclusive", "1", "--no-progress", "--json"])
        .arg(&json)
        .plain_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("running it again, attempt 2 of 2"),
        "{stdout}"
    );
    assert!(stdout.contains("Attempt 1: INCONCLUSIVE"), "{stdout}");
    let report = read_json(&json)?;
    assert_eq!(report["verdict"]["outcome"], "inconclusive");
    let reruns = report["reruns"].as_array().context("reruns")?;
    assert_eq!(reruns.len(), 1, "{report}");
    assert_eq!(reruns[0]["outcome"], "inconclusive");
    // The second attempt's fleet logs are kept apart from the first's.
    let logs = dir.path().join("fleet-logs");
    assert!(logs.join("gateway.log").is_file(), "first attempt's logs");
    assert!(
        logs.join("attempt-2").join("gateway.log").is_file(),
        "second attempt's logs"
    );
    Ok(())
}

/// Two faults that cannot bite as asked, on the real fleet, each in its own experiment
/// whose loose SLO holds: a CPU burner whose target shares its only core with a process
/// that saturates it (the whole run is pinned to CPU 0 beside a busy loop there), and an
/// HTTP abort whose path matches no request. Both runs must end `inconclusive` (exit
/// 4), naming the fault, the asked and the measured effect, never `pass`.
#[test]
fn faults_that_do_not_bite_as_asked_end_inconclusive_not_pass() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("unbitten.yaml");
    let experiment = |name: &str, fault: &str| {
        format!(
            "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {{name: {name}}}\nspec:\n  duration: 16s\n  load:\n    target: gateway\n    rate: 20/s\n    connections: 4\n    requests: [{{path: /api/orders/1}}]\n  faults:\n    - name: {name}\n      target: {{service: payments}}\n      after: 3s\n      duration: 10s\n      {fault}\n  slos:\n    - name: gateway-up\n      errorRate: {{service: gateway, max: 50%}}\n      window: 5s\n"
        )
    };
    std::fs::write(
        &file,
        format!(
            "{}---\n{}",
            experiment("starved-cpu", "cpu: {load: 80%}"),
            experiment(
                "http-matches-nothing",
                "http: {abort: {status: 503, percent: 50%}, paths: [/no-such-path]}"
            )
        ),
    )?;
    // A busy loop on CPU 0, and the run (so the fleet and the burners) pinned there too:
    // the scheduler splits the core between the loop and the burner, which then cannot
    // reach 80%.
    let _hog = common::Reaped(
        Command::new("taskset")
            .args(["-c", "0", "sh", "-c", "while :; do :; done"])
            .spawn()
            .context("taskset (util-linux) starts the busy loop")?,
    );
    let json = dir.path().join("suite.json");
    let junit = dir.path().join("junit.xml");
    let output = Command::new("taskset")
        .args(["-c", "0", chaos(), "run"])
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .arg("--no-progress")
        .plain_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("0 passed, 0 failed, 2 inconclusive"),
        "{stdout}"
    );

    let cpu = read_json(&dir.path().join("suite-starved-cpu.json"))?;
    assert_eq!(
        cpu["verdict"]["outcome"], "inconclusive",
        "{}",
        cpu["verdict"]
    );
    assert_eq!(slo(&cpu, "gateway-up")["verdict"], "pass");
    let check = &cpu["faults"][0]["effectCheck"];
    assert_eq!(check["verdict"], "short", "{check}");
    let burned = cpu["faults"][0]["effect"]["metrics"]["utilization"]
        .as_f64()
        .context("the burner reports its utilization")?;
    assert!(burned < 0.72, "a starved burner measured {burned}");
    let reason = cpu["verdict"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("fault `starved-cpu`")
            && reason.contains("asked 80% of a CPU burned")
            && reason.contains("measured "),
        "{reason}"
    );

    let http = read_json(&dir.path().join("suite-http-matches-nothing.json"))?;
    assert_eq!(
        http["verdict"]["outcome"], "inconclusive",
        "{}",
        http["verdict"]
    );
    let check = &http["faults"][0]["effectCheck"];
    assert_eq!(check["verdict"], "none", "{check}");
    assert!(
        check["measured"]
            .as_str()
            .is_some_and(|m| m.contains("no request matched") && m.contains("/no-such-path")),
        "{check}"
    );

    let xml = std::fs::read_to_string(&junit)?;
    assert_eq!(
        xml.matches(r#"<failure type="inconclusive""#).count(),
        4,
        "a fault testcase and a run testcase per experiment: {xml}"
    );
    Ok(())
}
