//! Container faults through the Docker Engine API: kill, pause (unpaused at the end of
//! the lease or on revert) and restart; and container -> PID resolution.
//!
//! The Engine API is plain HTTP/1.1 over a unix socket, and the agent needs five calls
//! (inspect, kill, pause, unpause, restart), each a request with no body and a small
//! JSON answer. So this talks to the socket directly with `httparse` instead of pulling
//! in `bollard`, whose hyper/tower client stack is far larger than these five calls and
//! would need an async runtime context inside the blocking apply path.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{ContainerAction, ContainerFault};

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;

/// Docker Engine API version the agent speaks (supported by Engine 17.07 and later).
const API: &str = "v1.41";
/// Upper bound on one API call; `restart` waits up to its own 10 s stop timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A Docker Engine reached through its unix socket.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: String,
}

/// One answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

fn err(what: &str, e: impl std::fmt::Display) -> FaultError {
    FaultError::io(what.to_string(), std::io::Error::other(e.to_string()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
}

impl Docker {
    /// The socket from `DOCKER_HOST` (`unix://...`), else `/var/run/docker.sock`.
    pub fn from_env() -> Self {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        Self { socket }
    }

    /// One call, `Connection: close`.
    pub fn call(&self, method: &str, path: &str) -> Result<Answer, FaultError> {
        let what = format!("docker {method} {path}");
        let mut s = UnixStream::connect(&self.socket).map_err(|e| {
            FaultError::io(format!("connect to the Docker socket {}", self.socket), e)
        })?;
        s.set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| FaultError::io(&what, e))?;
        write!(
            s,
            "{method} /{API}{path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| FaultError::io(&what, e))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| FaultError::io(&what, e))?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&raw).map_err(|e| err(&what, e))? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Err(err(&what, "truncated answer")),
        };
        let chunked = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("transfer-encoding")
                && String::from_utf8_lossy(h.value).contains("chunked")
        });
        let body = if chunked {
            dechunk(&raw[head..])
        } else {
            raw[head..].to_vec()
        };
        Ok(Answer {
            status: resp.code.unwrap_or(0),
            body,
        })
    }

    fn expect(&self, method: &str, path: &str, ok: &[u16]) -> Result<Answer, FaultError> {
        let a = self.call(method, path)?;
        if ok.contains(&a.status) {
            return Ok(a);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&a.body).into_owned());
        if a.status == 404 {
            return Err(FaultError::TargetNotFound(format!("docker: {message}")));
        }
        Err(err(
            &format!("docker {method} {path}"),
            format!("status {}: {message}", a.status),
        ))
    }

    /// `GET /containers/{id}/json`.
    pub fn inspect(&self, id: &str) -> Result<serde_json::Value, FaultError> {
        let a = self.expect("GET", &format!("/containers/{id}/json"), &[200])?;
        serde_json::from_slice(&a.body).map_err(|e| err("docker inspect", e))
    }

    /// The host PID of a running container's main process.
    pub fn container_pid(&self, id: &str) -> Result<u32, FaultError> {
        let v = self.inspect(id)?;
        let pid = v["State"]["Pid"].as_u64().unwrap_or(0);
        if pid == 0 {
            return Err(FaultError::TargetNotFound(format!(
                "container {id} is not running"
            )));
        }
        Ok(pid as u32)
    }

    /// `State.Status` of a container: `running`, `paused`, `exited`, ...
    pub fn status(&self, id: &str) -> Result<String, FaultError> {
        Ok(self.inspect(id)?["State"]["Status"]
            .as_str()
            .unwrap_or("unknown")
            .to_string())
    }

    /// Starts a stopped container; one that is already running (304) is left alone.
    pub fn start(&self, id: &str) -> Result<(), FaultError> {
        self.expect("POST", &format!("/containers/{id}/start"), &[204, 304])
            .map(drop)
    }

    /// Unpauses a container; one that is not paused (or gone) is left alone.
    pub fn unpause(&self, id: &str) -> Result<(), FaultError> {
        match self.expect("POST", &format!("/containers/{id}/unpause"), &[204]) {
            Ok(_) | Err(FaultError::TargetNotFound(_)) => Ok(()),
            Err(e) if self.status(id).is_ok_and(|s| s != "paused") => {
                tracing::debug!(error = %e, "unpause of a container that is not paused");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// `container: {action}` for one container.
#[derive(Debug, Clone)]
pub struct ContainerFaultImpl {
    action: ContainerAction,
    docker: Docker,
}

impl ContainerFaultImpl {
    /// A container fault using the Docker socket from the environment.
    pub fn new(fault: &ContainerFault) -> Self {
        Self {
            action: fault.action,
            docker: Docker::from_env(),
        }
    }
}

/// The applied action. A pause is undone on revert and on drop (unpause), and so is a
/// kill (the container is started again: a fault lasts its `duration`, and Docker's
/// restart policies ignore a container stopped through its API).
#[derive(Debug)]
pub struct ContainerHandle {
    docker: Docker,
    id: String,
    action: ContainerAction,
    status_after: String,
    /// The action showed in the container's state right after it: a killed container
    /// not running (or already running again under a new main process), a paused one
    /// paused, a restarted one with a new main process.
    took_effect: bool,
    pid_before: u32,
    pid_after: Option<u32>,
    /// Whatever the action left to undo has been undone.
    restored: bool,
}

fn container_id(target: &ResolvedTarget) -> Result<&str, FaultError> {
    target.container_id.as_deref().ok_or_else(|| {
        FaultError::Invalid(format!(
            "container faults need `target.containerId`; target `{}` has none",
            target.name
        ))
    })
}

impl ContainerHandle {
    fn effect(&self) -> ObservedEffect {
        let mut e = ObservedEffect::default();
        e.metrics
            .insert("pid_before".into(), f64::from(self.pid_before));
        e.metrics
            .insert("took_effect".into(), f64::from(u8::from(self.took_effect)));
        if let Some(p) = self.pid_after {
            e.metrics.insert("pid_after".into(), f64::from(p));
        }
        let verb = match self.action {
            ContainerAction::Kill => "killed",
            ContainerAction::Pause => "paused",
            ContainerAction::Restart => "restarted",
        };
        e.summary = format!(
            "container {} {verb}; state after: {}{}",
            self.id,
            self.status_after,
            match (self.restored, self.action) {
                (true, ContainerAction::Pause) => ", unpaused",
                (true, ContainerAction::Kill) => ", started again",
                _ => "",
            }
        );
        e
    }
}

impl ContainerHandle {
    /// Unpauses a paused container, starts a killed one.
    fn restore(&self) -> Result<(), FaultError> {
        match self.action {
            ContainerAction::Pause => self.docker.unpause(&self.id),
            ContainerAction::Kill => self.docker.start(&self.id),
            ContainerAction::Restart => Ok(()),
        }
    }
}

impl Drop for ContainerHandle {
    fn drop(&mut self) {
        if !self.restored
            && let Err(e) = self.restore()
        {
            tracing::error!(container = %self.id, error = %e, "could not undo a container fault");
        }
    }
}

impl Fault for ContainerFaultImpl {
    type Handle = ContainerHandle;

    fn backend(&self) -> &'static str {
        "docker"
    }

    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        let id = container_id(target)?;
        Ok(match self.action {
            ContainerAction::Pause => RevertRecord::UnpauseContainer {
                container_id: id.to_string(),
            },
            ContainerAction::Kill => RevertRecord::StartContainer {
                container_id: id.to_string(),
            },
            ContainerAction::Restart => RevertRecord::DiesWithAgent,
        })
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        self.docker.status(container_id(target)?).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<ContainerHandle, FaultError> {
        let id = container_id(target)?;
        let pid_before = self.docker.container_pid(id)?;
        let path = match self.action {
            ContainerAction::Kill => format!("/containers/{id}/kill?signal=SIGKILL"),
            ContainerAction::Pause => format!("/containers/{id}/pause"),
            ContainerAction::Restart => format!("/containers/{id}/restart?t=10"),
        };
        self.docker.expect("POST", &path, &[204])?;
        let status_after = self.docker.status(id)?;
        let pid_after = self.docker.container_pid(id).ok();
        let took_effect = match self.action {
            // A restart policy may have started it again already: a new main process
            // shows the kill landed all the same.
            ContainerAction::Kill => {
                status_after != "running" || pid_after.is_some_and(|p| p != pid_before)
            }
            ContainerAction::Pause => status_after == "paused",
            ContainerAction::Restart => pid_after.is_some_and(|p| p != pid_before),
        };
        Ok(ContainerHandle {
            took_effect,
            docker: self.docker.clone(),
            id: id.to_string(),
            action: self.action,
            status_after,
            pid_before,
            pid_after,
            restored: self.action == ContainerAction::Restart,
        })
    }

    fn observe(&self, handle: &ContainerHandle) -> ObservedEffect {
        handle.effect()
    }

    fn revert(&self, mut handle: ContainerHandle) -> Result<ObservedEffect, FaultError> {
        if !handle.restored {
            handle.restore()?;
            handle.restored = true;
            handle.status_after = handle.docker.status(&handle.id)?;
        }
        Ok(handle.effect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"),
            b"Wikipedia"
        );
    }
}
