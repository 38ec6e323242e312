//! Target resolution on the node: which process a [`ResolvedTarget`] names, and from it
//! the network namespace, cgroup and CPU affinity that privileged backends act on.
//!
//! A target is a PID (`target.pid`) or a Docker container (`target.container_id`, whose
//! main PID comes from the Docker Engine API). Everything else is read from `/proc/PID`.

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
    Err(FaultError::Invalid(format!(
        "target `{}` has neither `pid` nor `containerId`; privileged backends act on a process",
        target.name
    )))
}

/// Whether the target names something privileged backends can act on.
pub fn is_node_target(target: &ResolvedTarget) -> bool {
    target.pid.is_some() || target.container_id.is_some()
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
