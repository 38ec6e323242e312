//! `chaos run --env compose`: the docker compose stack of `deploy/compose` as the run's
//! environment.
//!
//! Everything is found through the Docker Engine API on the local socket, by the labels
//! docker compose puts on its containers, so nothing about the stack is configured twice:
//! - `{service: payments}` is every running container labelled
//!   `com.docker.compose.project=<project>` and `com.docker.compose.service=payments`,
//!   resolved to its container id and host PID (the agent runs with `pid: host` and
//!   injects into that PID's network namespace and cgroup);
//! - `{container: name}` is a container by name or id, `{pid: N}` a host PID;
//! - the agent, Prometheus and the load target are reached on the host ports Docker
//!   published for them on 127.0.0.1, read back from the API (compose picks free ports
//!   unless the user pins them);
//! - the agent's bearer token is the host file mounted into the agent container, so the
//!   controller uses exactly the token the agent checks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_spec::Target;
use faultline_spec::wire::ResolvedTarget;
use serde::Deserialize;

mod env;
#[cfg(test)]
mod tests;

pub use env::{ComposeEnvironment, ComposeOptions};

/// The compose label naming a container's project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The compose label naming a container's service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Faultline's label telling the agent and Prometheus apart from the fleet.
pub const ROLE_LABEL: &str = "dev.faultline.role";
/// The project name `deploy/compose/.env` sets.
pub const DEFAULT_PROJECT: &str = "faultline";
/// Port the agent listens on inside its container.
pub const AGENT_PORT: u16 = 7070;
/// Port Prometheus listens on inside its container.
pub const PROMETHEUS_PORT: u16 = 9090;
/// Port every fleet service listens on inside its container.
pub const FLEET_PORT: u16 = 8080;
/// Where the agent container reads its token (see `deploy/compose/compose.yaml`).
pub const AGENT_TOKEN_PATH: &str = "/run/faultline/agent-token";

/// Docker Engine API version spoken (Engine 20.10 and later).
const API: &str = "v1.41";

/// Why the compose environment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The Docker socket could not be reached or answered nonsense.
    #[error("docker API {call}: {message}")]
    Docker {
        /// The API call.
        call: String,
        /// What went wrong.
        message: String,
    },
    /// `DOCKER_HOST` names something other than a unix socket.
    #[error(
        "DOCKER_HOST={0} is not a unix socket; compose mode needs the local engine (unix:///var/run/docker.sock)"
    )]
    RemoteEngine(String),
    /// No container of the project is running.
    #[error(
        "no running container of compose project `{0}`; start the stack with `docker-compose up -d` in deploy/compose (see docs/compose.md)"
    )]
    NoStack(String),
    /// A target names nothing running in the stack.
    #[error("{0}")]
    TargetNotFound(String),
    /// A target form compose mode cannot serve.
    #[error("{0}")]
    Unsupported(String),
    /// A container does not publish the port the controller needs.
    #[error(
        "container {container} does not publish port {port} on the host (see compose.yaml `ports:`)"
    )]
    NotPublished {
        /// The container.
        container: String,
        /// The port inside the container.
        port: u16,
    },
}

/// The Docker Engine API on a unix socket.
#[derive(Debug, Clone)]
pub struct Docker {
    client: reqwest::Client,
    socket: PathBuf,
}

impl Docker {
    /// The engine at `DOCKER_HOST` (`unix://...`), else `/var/run/docker.sock`.
    pub fn from_env() -> Result<Self, ComposeError> {
        Self::at(socket_path(std::env::var("DOCKER_HOST").ok().as_deref())?)
    }

    /// The engine listening on `socket`.
    pub fn at(socket: impl Into<PathBuf>) -> Result<Self, ComposeError> {
        let socket = socket.into();
        let client = reqwest::Client::builder()
            .unix_socket(socket.clone())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ComposeError::Docker {
                call: "client".into(),
                message: e.to_string(),
            })?;
        Ok(Self { client, socket })
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ComposeError> {
        let call = format!("GET {path}");
        let err = |message: String| ComposeError::Docker {
            call: call.clone(),
            message,
        };
        let resp = self
            .client
            .get(format!("http://docker/{API}{path}"))
            .send()
            .await
            .map_err(|e| err(format!("{} (socket {})", e, self.socket.display())))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
        if status.as_u16() == 404 {
            return Err(ComposeError::TargetNotFound(format!(
                "docker: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        if !status.is_success() {
            return Err(err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        serde_json::from_slice(&body).map_err(|e| err(format!("unexpected answer: {e}")))
    }

    /// Ids of the running containers of compose project `project`.
    pub async fn project_containers(&self, project: &str) -> Result<Vec<String>, ComposeError> {
        #[derive(Deserialize)]
        struct Summary {
            #[serde(rename = "Id")]
            id: String,
        }
        let filters = serde_json::json!({ "label": [format!("{PROJECT_LABEL}={project}")] });
        let path = format!(
            "/containers/json?filters={}",
            percent_encode(&filters.to_string())
        );
        let list: Vec<Summary> = self.get(&path).await?;
        Ok(list.into_iter().map(|s| s.id).collect())
    }

    /// `GET /containers/{id}/json`, reduced to what the controller uses.
    pub async fn inspect(&self, id: &str) -> Result<Container, ComposeError> {
        let raw: raw::Inspect = self
            .get(&format!("/containers/{}/json", percent_encode(id)))
            .await?;
        Ok(Container::from_raw(raw))
    }
}

/// The socket a `DOCKER_HOST` value names; only local unix sockets are usable, because
/// the agent and the PIDs it is given live on this host.
fn socket_path(docker_host: Option<&str>) -> Result<PathBuf, ComposeError> {
    match docker_host {
        Some(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => Ok(PathBuf::from(p)),
            None => Err(ComposeError::RemoteEngine(h.to_string())),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Percent-encodes everything but unreserved characters (for query values and ids).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Engine API's inspect answer, only the fields used.
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Inspect {
        pub id: String,
        pub name: String,
        pub state: State,
        pub config: Config,
        pub network_settings: NetworkSettings,
        #[serde(default)]
        pub mounts: Vec<Mount>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct State {
        pub running: bool,
        #[serde(default)]
        pub paused: bool,
        pub pid: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Config {
        #[serde(default)]
        pub labels: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct NetworkSettings {
        #[serde(default)]
        pub ports: Option<BTreeMap<String, Option<Vec<Binding>>>>,
        #[serde(default)]
        pub networks: Option<BTreeMap<String, Network>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Binding {
        pub host_ip: String,
        pub host_port: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Network {
        #[serde(rename = "IPAddress", default)]
        pub ip_address: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Mount {
        #[serde(default)]
        pub source: String,
        pub destination: String,
    }
}

/// One container of the stack, as the controller needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Its compose service, if compose created it.
    pub service: Option<String>,
    /// Its `dev.faultline.role` label: `fleet`, `agent`, `prometheus`, ...
    pub role: Option<String>,
    /// Host PID of its main process (0 when it is not running).
    pub pid: u32,
    /// Running and not paused.
    pub running: bool,
    /// TCP port inside the container -> where the host reaches it.
    pub published: BTreeMap<u16, SocketAddr>,
    /// Its addresses on its networks (for `peers: [service]`).
    pub addresses: Vec<IpAddr>,
    /// Bind mounts: destination inside the container -> source on the host.
    pub mounts: BTreeMap<PathBuf, PathBuf>,
}

impl Container {
    fn from_raw(raw: raw::Inspect) -> Self {
        let labels = raw.config.labels.unwrap_or_default();
        let mut published = BTreeMap::new();
        for (key, bindings) in raw.network_settings.ports.unwrap_or_default() {
            let Some(port) = key.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            // Prefer a loopback binding; a wildcard one is reached through loopback too.
            let mut best: Option<SocketAddr> = None;
            for b in bindings.unwrap_or_default() {
                let Ok(host_port) = b.host_port.parse::<u16>() else {
                    continue;
                };
                let ip: IpAddr = match b.host_ip.as_str() {
                    "" | "0.0.0.0" => IpAddr::from([127, 0, 0, 1]),
                    "::" => continue,
                    other => match other.parse() {
                        Ok(ip) => ip,
                        Err(_) => continue,
                    },
                };
                if best.is_none() || ip.is_loopback() {
                    best = Some(SocketAddr::new(ip, host_port));
                }
            }
            if let Some(addr) = best {
                published.insert(port, addr);
            }
        }
        let addresses = raw
            .network_settings
            .networks
            .unwrap_or_default()
            .values()
            .filter_map(|n| n.ip_address.parse().ok())
            .collect();
        let mounts = raw
            .mounts
            .into_iter()
            .filter(|m| !m.source.is_empty())
            .map(|m| (PathBuf::from(m.destination), PathBuf::from(m.source)))
            .collect();
        Self {
            id: raw.id,
            name: raw.name.trim_start_matches('/').to_string(),
            service: labels.get(SERVICE_LABEL).cloned(),
            role: labels.get(ROLE_LABEL).cloned(),
            pid: raw.state.pid,
            running: raw.state.running && !raw.state.paused,
            published,
            addresses,
            mounts,
        }
    }

    /// Where the host reaches `port` of this container.
    pub fn published(&self, port: u16) -> Result<SocketAddr, ComposeError> {
        self.published
            .get(&port)
            .copied()
            .ok_or_else(|| ComposeError::NotPublished {
                container: self.name.clone(),
                port,
            })
    }

    fn resolved(&self, name: &str) -> ResolvedTarget {
        ResolvedTarget {
            name: name.to_string(),
            pid: (self.pid != 0).then_some(self.pid),
            container_id: Some(self.id.clone()),
            ..Default::default()
        }
    }
}

/// How the controller reaches the stack's agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEndpoint {
    /// Base URL, `http://127.0.0.1:<published port>`.
    pub url: String,
    /// The host file mounted as the agent's token.
    pub token_file: PathBuf,
}

/// A snapshot of a running compose stack.
#[derive(Debug, Clone)]
pub struct ComposeStack {
    project: String,
    containers: Vec<Container>,
}

impl ComposeStack {
    /// Reads every running container of `project` from the engine.
    pub async fn discover(docker: &Docker, project: &str) -> Result<Self, ComposeError> {
        let ids = docker.project_containers(project).await?;
        let mut containers = Vec::with_capacity(ids.len());
        for id in ids {
            match docker.inspect(&id).await {
                Ok(c) => containers.push(c),
                // Removed between list and inspect: it is not part of the stack any more.
                Err(ComposeError::TargetNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Self::from_containers(project, containers)
    }

    /// A stack made of already inspected containers.
    pub fn from_containers(
        project: &str,
        mut containers: Vec<Container>,
    ) -> Result<Self, ComposeError> {
        if containers.is_empty() {
            return Err(ComposeError::NoStack(project.to_string()));
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            project: project.to_string(),
            containers,
        })
    }

    /// The compose project name.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Every container of the stack.
    pub fn containers(&self) -> &[Container] {
        &self.containers
    }

    /// The running containers of compose service `service`.
    pub fn service(&self, service: &str) -> Result<Vec<&Container>, ComposeError> {
        let all: Vec<&Container> = self
            .containers
            .iter()
            .filter(|c| c.service.as_deref() == Some(service))
            .collect();
        if all.is_empty() {
            let mut known: Vec<&str> = self
                .containers
                .iter()
                .filter_map(|c| c.service.as_deref())
                .collect();
            known.dedup();
            return Err(ComposeError::TargetNotFound(format!(
                "compose project `{}` has no service `{service}` (services: {})",
                self.project,
                known.join(", ")
            )));
        }
        let running: Vec<&Container> = all.into_iter().filter(|c| c.running).collect();
        if running.is_empty() {
            return Err(ComposeError::TargetNotFound(format!(
                "no container of compose service `{service}` is running"
            )));
        }
        Ok(running)
    }

    fn by_role(&self, role: &str) -> Result<&Container, ComposeError> {
        self.containers
            .iter()
            .find(|c| c.role.as_deref() == Some(role) && c.running)
            .ok_or_else(|| {
                ComposeError::TargetNotFound(format!(
                    "compose project `{}` has no running container labelled {ROLE_LABEL}={role}",
                    self.project
                ))
            })
    }

    /// What `target`, the target of the fault named `fault`, names on this node, one entry
    /// per container it hits. Compose has no pod selectors; `{service}` hits the running
    /// replicas its `mode` selects (every one by default), seeded from the fault's name
    /// when it gives no seed.
    pub fn resolve(
        &self,
        target: &Target,
        fault: &str,
    ) -> Result<Vec<ResolvedTarget>, ComposeError> {
        match target {
            Target::Service(s) => {
                let replicas = self.service(&s.name)?;
                Ok(s
                    .select(&replicas, |c| c.name.as_str(), fault)
                    .into_iter()
                    .map(|c| c.resolved(&c.name))
                    .collect())
            }
            Target::Container(name) => {
                let c = self
                    .containers
                    .iter()
                    .find(|c| &c.name == name || c.id.starts_with(name.as_str()))
                    .ok_or_else(|| {
                        ComposeError::TargetNotFound(format!(
                            "no container `{name}` in compose project `{}`",
                            self.project
                        ))
                    })?;
                // Container faults (kill, restart) act on stopped containers too; the
                // agent needs only the id for them.
                Ok(vec![c.resolved(&c.name)])
            }
            Target::Pid(pid) => Ok(vec![ResolvedTarget {
                name: format!("pid {pid}"),
                pid: Some(*pid),
                ..Default::default()
            }]),
            Target::Pods(_) => Err(ComposeError::Unsupported(
                "label-selected pods are a Kubernetes target; compose mode takes {service}, {container} or {pid}".into(),
            )),
        }
    }

    /// The addresses of a service's containers on the compose network, for
    /// `peers: [service]` narrowing (as /32 CIDRs on the agent side).
    pub fn service_addresses(&self, service: &str) -> Result<Vec<IpAddr>, ComposeError> {
        Ok(self
            .service(service)?
            .into_iter()
            .flat_map(|c| c.addresses.iter().copied())
            .collect())
    }

    /// The URL the host reaches a fleet service at (its published port 8080).
    pub fn service_url(&self, service: &str) -> Result<String, ComposeError> {
        let c = self.service(service)?[0];
        Ok(format!("http://{}", c.published(FLEET_PORT)?))
    }

    /// The agent container's API and token.
    pub fn agent(&self) -> Result<AgentEndpoint, ComposeError> {
        let c = self.by_role("agent")?;
        let addr = c.published(AGENT_PORT)?;
        let token_file = c
            .mounts
            .get(Path::new(AGENT_TOKEN_PATH))
            .cloned()
            .ok_or_else(|| {
                ComposeError::TargetNotFound(format!(
                    "agent container {} has no token file mounted at {AGENT_TOKEN_PATH}",
                    c.name
                ))
            })?;
        Ok(AgentEndpoint {
            url: format!("http://{addr}"),
            token_file,
        })
    }

    /// The stack's Prometheus API base URL.
    pub fn prometheus_url(&self) -> Result<String, ComposeError> {
        let c = self.by_role("prometheus")?;
        Ok(format!("http://{}", c.published(PROMETHEUS_PORT)?))
    }
}
