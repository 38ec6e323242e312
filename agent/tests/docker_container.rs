//! Container faults through the Docker Engine API against real containers. The image is
//! built here, `FROM scratch` around a static binary compiled by the test, because
//! nothing can be pulled. Needs a reachable Docker socket and `rustc`.

mod netns_common;

use std::process::Command;
use std::time::{Duration, Instant};

use faultline_agent::docker::Docker;
use faultline_spec::wire::{FaultRequest, ResolvedTarget};
use faultline_spec::{ContainerAction, ContainerFault, FaultKind};

fn docker_or_skip() -> bool {
    let ok = Docker::from_env()
        .call("GET", "/_ping")
        .is_ok_and(|a| a.status == 200)
        && Command::new("docker")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        && Command::new("rustc")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    faultline_testkit::skip(
        "container faults: needs a running Docker engine with its socket at /var/run/docker.sock (apt-get install docker.io), the docker CLI and rustc",
    )
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test image and every container made from it; removed on drop.
struct Image {
    tag: String,
    containers: Vec<String>,
}

impl Image {
    fn build() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sleeper.rs"),
            "fn main() { loop { std::thread::sleep(std::time::Duration::from_secs(3600)); } }",
        )
        .unwrap();
        let out = Command::new("rustc")
            .args([
                "-O",
                "-C",
                "target-feature=+crt-static",
                "sleeper.rs",
                "-o",
                "sleeper",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n",
        )
        .unwrap();
        let tag = format!("faultline-test/sleeper:{}", std::process::id());
        docker(&["build", "-q", "-t", &tag, dir.path().to_str().unwrap()]);
        Image {
            tag,
            containers: Vec::new(),
        }
    }

    fn run(&mut self, name: &str) -> String {
        let name = format!("faultline-test-{}-{name}", std::process::id());
        let id = docker(&["run", "-d", "--name", &name, &self.tag]);
        self.containers.push(id.clone());
        id
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn request(id: &str, container: &str, action: ContainerAction, ttl: Duration) -> FaultRequest {
    FaultRequest {
        id: id.into(),
        experiment: "docker".into(),
        target: ResolvedTarget {
            name: "sleeper".into(),
            container_id: Some(container.into()),
            ..Default::default()
        },
        fault: FaultKind::Container(ContainerFault { action }),
        ttl: faultline_spec::Duration::from_millis(ttl.as_millis() as u64),
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_kill_and_restart_act_on_a_real_container() {
    if !docker_or_skip() {
        return;
    }
    let d = Docker::from_env();
    let mut image = Image::build();
    let (agent, _dir) = netns_common::agent_with_state_dir().await;

    // Container -> PID resolution: the PID the agent resolves is the container's process.
    let c = image.run("pause");
    let pid = faultline_agent::target::pid(&ResolvedTarget {
        name: "x".into(),
        container_id: Some(c.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        pid.to_string(),
        docker(&["inspect", "-f", "{{.State.Pid}}", &c])
    );

    // Pause: frozen until revert.
    let out = agent
        .apply(request(
            "pause",
            &c,
            ContainerAction::Pause,
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    assert_eq!(out.state.backend, "docker");
    assert_eq!(d.status(&c).unwrap(), "paused");
    agent.revert("pause").await.unwrap();
    assert_eq!(d.status(&c).unwrap(), "running");
    assert!(matches!(proc_state(pid), Some('S' | 'R')));

    // Pause with a short lease and no renewal: unpaused when the lease ends.
    agent
        .apply(request(
            "pause-lease",
            &c,
            ContainerAction::Pause,
            Duration::from_millis(800),
        ))
        .await
        .unwrap();
    assert_eq!(d.status(&c).unwrap(), "paused");
    let start = Instant::now();
    while d.status(&c).unwrap() == "paused" {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still paused after the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Restart: a new main process.
    agent
        .apply(request(
            "restart",
            &c,
            ContainerAction::Restart,
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    assert_eq!(d.status(&c).unwrap(), "running");
    assert_ne!(
        d.container_pid(&c).unwrap(),
        pid,
        "restarted with a new process"
    );
    assert!(proc_state(pid).is_none(), "the old process is gone");

    // Kill: the container exits.
    agent
        .apply(request(
            "kill",
            &c,
            ContainerAction::Kill,
            Duration::from_secs(60),
        ))
        .await
        .unwrap();
    assert_eq!(d.status(&c).unwrap(), "exited");
    assert_eq!(docker(&["inspect", "-f", "{{.State.ExitCode}}", &c]), "137");
    // The fault lasts its duration: the revert starts the container again (Docker's
    // restart policies ignore a container stopped through its API).
    let reverted = agent.revert("kill").await.unwrap().unwrap();
    assert_eq!(d.status(&c).unwrap(), "running");
    assert!(
        reverted.effect.summary.contains("started again"),
        "{}",
        reverted.effect.summary
    );
}
