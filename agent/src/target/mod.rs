//! Target resolution on the node: which process a [`ResolvedTarget`] names, and from it
//! the network namespace, cgroup and CPU affinity that privileged backends act on.
//!
//! A target is a PID (`target.pid`), a Docker container (`target.container_id`, whose
//! main PID comes from the Docker Engine API) or a Kubernetes pod (`target.pod`, whose
//! processes are found by the pod's uid in `/proc/*/cgroup`; the agent runs with
//! `hostPID`). Everything else is read from `/proc/PID`.

use std::path::Path;

use faultline_spec::wire::ResolvedTarget;

use crate::fault::FaultError;
use crate::netns::Netns;

/// The target's host PID: `target.pid`, or the main PID of `target.container_id`.
pub fn pid(target: &ResolvedTarget) -> Result<u32, FaultError> {
    if let Some(pid) = target.pid {
        return Ok(pid);
    }
    if let Some(id) = &target.container_id {
        return crate::docker::Docker::from_env().container_pid(id);
    }
    if let Some(pod) = &target.pod {
        return pod_pid(Path::new("/proc"), &pod.uid).ok_or_else(|| {
            FaultError::TargetNotFound(format!(
                "no process of pod {}/{} (uid {}) runs on this node",
                pod.namespace, pod.name, pod.uid
            ))
        });
    }
    Err(FaultError::Invalid(format!(
        "target `{}` has neither `pid`, `containerId` nor `pod`; privileged backends act on a process",
        target.name
    )))
}

/// Whether the target names something privileged backends can act on.
pub fn is_node_target(target: &ResolvedTarget) -> bool {
    target.pid.is_some() || target.container_id.is_some() || target.pod.is_some()
}

/// The main process of the pod with `uid`, from the process table under `proc`: the
/// earliest-started process whose cgroup path names the pod, other than the sandbox's
/// `pause`. The kubelet names pod cgroups `pod<uid>` (cgroupfs driver) or
/// `pod<uid with _ for ->` (systemd driver: `kubepods-burstable-pod<uid>.slice`).
pub fn pod_pid(proc: &Path, uid: &str) -> Option<u32> {
    let dashed = format!("pod{uid}");
    let underscored = format!("pod{}", uid.replace('-', "_"));
    let mut best: Option<(u64, u32)> = None;
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(cgroup) = std::fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        if !cgroup.contains(&dashed) && !cgroup.contains(&underscored) {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "pause" {
            continue;
        }
        // Field 22 of /proc/PID/stat (start time in clock ticks), counted after the
        // parenthesised command name, which may itself hold spaces.
        let Some(start) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(19)?.parse::<u64>().ok()
            })
        else {
            continue;
        };
        if best.is_none_or(|b| (start, pid) < b) {
            best = Some((start, pid));
        }
    }
    best.map(|(_, pid)| pid)
}

/// The target's network namespace.
pub fn netns(target: &ResolvedTarget) -> Result<Netns, FaultError> {
    let pid = pid(target)?;
    Netns::of_pid(pid).map_err(|e| FaultError::TargetNotFound(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_pid_or_container_is_invalid() {
        let err = pid(&ResolvedTarget {
            name: "x".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, FaultError::Invalid(_)), "{err}");
    }

    /// A fake process table: (pid, comm, start time, cgroup line).
    fn fake_proc(entries: &[(u32, &str, u64, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        for (pid, comm, start, cgroup) in entries {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(p.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
            let mut fields = vec!["0".to_string(); 50];
            fields[19] = start.to_string();
            std::fs::write(
                p.join("stat"),
                format!("{pid} ({comm} x) S {}", fields.join(" ")),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn a_pod_resolves_to_its_earliest_non_pause_process_under_either_cgroup_driver() {
        let uid = "0b5e1c2a-7f3d-4e8a-9c11-2d3e4f5a6b7c";
        let systemd = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5e1c2a_7f3d_4e8a_9c11_2d3e4f5a6b7c.slice/cri-containerd-abc.scope";
        let cgroupfs = "/../../kubepods/besteffort/pod0b5e1c2a-7f3d-4e8a-9c11-2d3e4f5a6b7c/def";
        let proc = fake_proc(&[
            (10, "pause", 100, systemd),
            (42, "payments", 300, systemd),
            (43, "payments", 301, systemd),
            (7, "other", 50, "/kubepods.slice/kubepods-podffff.slice/x"),
        ]);
        assert_eq!(pod_pid(proc.path(), uid), Some(42));
        let proc = fake_proc(&[(99, "pause", 1, cgroupfs), (120, "app", 2, cgroupfs)]);
        assert_eq!(pod_pid(proc.path(), uid), Some(120));
        let proc = fake_proc(&[(10, "pause", 100, systemd)]);
        assert_eq!(pod_pid(proc.path(), uid), None, "only the sandbox");
    }

    #[test]
    fn a_pod_that_is_not_on_this_node_is_target_not_found() {
        let t = ResolvedTarget {
            name: "payments-0".into(),
            pod: Some(faultline_spec::wire::PodRef {
                namespace: "shop".into(),
                name: "payments-0".into(),
                uid: "00000000-dead-beef-0000-000000000000".into(),
                node: "n1".into(),
            }),
            ..Default::default()
        };
        assert!(matches!(pid(&t), Err(FaultError::TargetNotFound(_))));
    }

    #[test]
    fn the_own_pid_resolves_to_the_own_namespace() {
        let t = ResolvedTarget {
            name: "me".into(),
            pid: Some(std::process::id()),
            ..Default::default()
        };
        assert_eq!(netns(&t).unwrap().id(), Netns::current().unwrap().id());
    }
}
