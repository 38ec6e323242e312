//! Running one service: what `chaos fleet serve <service>` does.

use std::io::Write;

use faultline_http::{Request, Response, Server};
use serde::Serialize;

use crate::Service;
use crate::config::{ConfigError, Policy, ServiceConfig};
use crate::observe::Observability;
use crate::services::{self, BuildError};

/// Why a service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The environment is misconfigured.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The service could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Binding or serving failed.
    #[error("{service} on {addr}: {source}")]
    Io {
        /// The service.
        service: Service,
        /// The address it tried to use.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
}

/// The first line a service prints on stdout, so a supervisor learns its address.
#[derive(Debug, Serialize)]
pub struct Announcement<'a> {
    /// Always `listening`.
    pub event: &'a str,
    /// The service.
    pub service: &'a str,
    /// The bound address (the real port when `FL_BIND` asked for port 0).
    pub addr: std::net::SocketAddr,
    /// This process's id.
    pub pid: u32,
}

/// Runs `service` configured from the environment until SIGTERM or Ctrl-C, then drains.
pub async fn run(service: Service) -> Result<(), ServeError> {
    let config = ServiceConfig::from_env(service)?;
    let shutdown = install_shutdown_signal().map_err(|source| ServeError::Io {
        service,
        addr: config.bind.to_string(),
        source,
    })?;
    run_with(config, shutdown).await
}

/// Installs the SIGTERM and SIGINT handlers *now* and returns a future that completes on
/// either. Call it before the service announces itself: a handler installed lazily, when the
/// shutdown future is first polled, would leave a window after the announcement in which a
/// supervisor's SIGTERM still kills the process with the default action instead of draining.
/// Must be called inside a tokio runtime.
pub fn install_shutdown_signal()
-> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs a service with an explicit configuration until `shutdown` completes.
pub async fn run_with(
    config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let service = config.service;
    let io = |source| ServeError::Io {
        service,
        addr: config.bind.to_string(),
        source,
    };
    let obs = Observability::new(service.name());
    let built = services::build(&config, &obs)?;
    let mut router = built.router;
    if matches!(
        service,
        Service::Inventory | Service::Payments | Service::Notifications
    ) {
        // A leaf has no upstreams: it is ready whenever it serves.
        router = router.get("/readyz", |_: &Request<'_>| {
            Response::json(&serde_json::json!({"ready": true}))
        });
    }
    let app = obs.instrument(router, config.disabled.keeps(Policy::Deadline));
    let server = Server::bind(config.bind).await.map_err(io)?;
    let addr = server.local_addr().map_err(io)?;
    let line = serde_json::to_string(&Announcement {
        event: "listening",
        service: service.name(),
        addr,
        pid: std::process::id(),
    })
    .unwrap_or_default();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(io)?;
    }
    tracing::info!(%service, %addr, disabled = %config.disabled, "serving");
    // Background work (degradation evaluation, queue workers) lives exactly as long as the
    // server: it is dropped when the server has drained.
    let background = async {
        futures_util::future::join_all(built.background).await;
        std::future::pending::<()>().await;
    };
    if config.disabled.keeps(Policy::Drain) {
        tokio::select! {
            r = server.serve_with_shutdown(app, shutdown) => r.map_err(io)?,
            () = background => {}
        }
    } else {
        // No drain: the signal drops the server, and every connection with a request in
        // flight is cut when the runtime ends.
        tokio::select! {
            r = server.serve(app) => r.map_err(io)?,
            () = background => {}
            () = shutdown => tracing::info!(%service, "stopping without draining"),
        }
    }
    tracing::info!(%service, "stopped");
    Ok(())
}
