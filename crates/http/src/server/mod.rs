//! The HTTP/1.1 server: accept loop, connection limits, graceful shutdown and worker models.

mod conn;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::router::Router;

/// Server limits and timeouts. The defaults suit the fleet and the agent.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request line plus headers, in bytes; larger heads get 431.
    pub max_head_size: usize,
    /// Most header fields per request (at most [`crate::parse::MAX_HEADERS`]); more get 431.
    pub max_headers: usize,
    /// Largest request body, in bytes (after de-chunking); larger bodies get 413.
    pub max_body_size: usize,
    /// Time allowed from the first byte of a request head to its end (slowloris defence);
    /// exceeded heads get 408 and the connection is closed.
    pub header_read_timeout: Duration,
    /// Longest silence allowed while reading a body; the connection is then closed with 408.
    pub body_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept; it is then closed silently.
    pub keep_alive_timeout: Duration,
    /// Most simultaneous connections; the next one gets 503 and is closed.
    pub max_connections: usize,
    /// Initial per-connection read buffer; it grows up to the head and body limits when needed.
    pub read_buffer_size: usize,
    /// On shutdown, how long in-flight requests may take before connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_head_size: 16 * 1024,
            max_headers: 64,
            max_body_size: 4 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            read_buffer_size: 8 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A bound, not yet serving, HTTP server.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use faultline_http::{Router, Response, Server};
/// let app = Router::new().get("/hello", |_req: &faultline_http::Request<'_>| Response::text("hi"));
/// let server = Server::bind("127.0.0.1:0").await?;
/// println!("listening on {}", server.local_addr()?);
/// server.serve_with_shutdown(app, faultline_http::shutdown_signal()).await
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
}

impl Server {
    /// Binds a listener (port 0 picks a free port; read it back with [`Server::local_addr`]).
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind(addr).await?,
            config: ServerConfig::default(),
        })
    }

    /// Wraps an already-bound listener (e.g. inherited, or created with socket options).
    pub fn from_listener(listener: TcpListener) -> Server {
        Server {
            listener,
            config: ServerConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends.
    pub async fn serve(self, app: Router) -> io::Result<()> {
        self.serve_with_shutdown(app, std::future::pending()).await
    }

    /// Serves until `signal` completes, then drains: stops accepting, lets in-flight requests
    /// finish (their responses carry `Connection: close`), closes idle connections, and after
    /// [`ServerConfig::shutdown_grace`] drops whatever is left.
    ///
    /// Runs on the current tokio runtime; on a multi-thread runtime, connections spread over
    /// its workers. See [`serve_per_core`] for the thread-per-core model.
    pub async fn serve_with_shutdown(
        self,
        app: Router,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared {
            app,
            config: self.config,
            limit: Arc::new(Semaphore::new(0)),
            drain: Drain::new(),
        });
        shared.limit.add_permits(shared.config.max_connections);
        run_accept_loop(self.listener, shared, signal).await
    }
}

struct Shared {
    app: Router,
    config: ServerConfig,
    limit: Arc<Semaphore>,
    drain: Drain,
}

/// Connection bookkeeping for the drain, kept off the per-request path: a connection flips an
/// atomic between busy and idle around each wait for input, and the drain aborts the idle ones.
/// (Polling a cancellation token on every read would take a mutex per request.)
pub(crate) struct Drain {
    draining: AtomicBool,
    conns: Mutex<HashMap<u64, (Arc<ConnState>, AbortHandle)>>,
    next_id: AtomicU64,
}

/// Per-connection drain state.
pub(crate) struct ConnState(AtomicU8);

const BUSY: u8 = 0;
const IDLE: u8 = 1;
const CLOSED: u8 = 2;

impl ConnState {
    /// Marks the connection idle (waiting for a new request). Returns false if the server is
    /// draining, in which case the connection must close instead of waiting.
    pub(crate) fn enter_idle(&self, drain: &Drain) -> bool {
        if self
            .0
            .compare_exchange(BUSY, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        // Checked after publishing IDLE: either the drain sweep sees IDLE, or we see the flag.
        !drain.is_draining()
    }

    /// Marks the connection busy (bytes of a request arrived). False if the drain closed it.
    pub(crate) fn enter_busy(&self) -> bool {
        self.0
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || self.0.load(Ordering::SeqCst) == BUSY
    }
}

impl Drain {
    fn new() -> Self {
        Drain {
            draining: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Whether shutdown has started; responses then carry `Connection: close`.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<ConnState>, AbortHandle)>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the drain: idle connections are closed now, busy ones after their response.
    fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for (state, abort) in self.lock().values() {
            if state
                .0
                .compare_exchange(IDLE, CLOSED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                abort.abort();
            }
        }
    }

    /// Ends the grace period: every remaining connection is dropped.
    fn kill_all(&self) {
        for (_, abort) in self.lock().values() {
            abort.abort();
        }
    }
}

/// Removes a connection from the drain registry when its task ends (or is aborted).
struct Registered<'a> {
    drain: &'a Drain,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.drain.lock().remove(&self.id);
    }
}

async fn run_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            biased;
            () = &mut signal => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                spawn_connection(&tracker, &shared, stream, peer);
            }
        }
    }
    drop(listener);
    shared.drain.start();
    tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown grace elapsed; dropping connections"
        );
        shared.drain.kill_all();
        tracker.wait().await;
    }
    Ok(())
}

fn spawn_connection(
    tracker: &TaskTracker,
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let Ok(permit) = Arc::clone(&shared.limit).try_acquire_owned() else {
        // Over the connection limit: a best-effort 503 without reading the request, then close.
        let _ = stream.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY failed");
    }
    let state = Arc::new(ConnState(AtomicU8::new(BUSY)));
    let id = shared.drain.next_id.fetch_add(1, Ordering::Relaxed);
    let task_shared = Arc::clone(shared);
    let task_state = Arc::clone(&state);
    // Registered under the lock so the task's own removal cannot run before the insertion.
    let mut conns = shared.drain.lock();
    let handle = tracker.spawn(async move {
        let _permit = permit;
        let _registered = Registered {
            drain: &task_shared.drain,
            id,
        };
        conn::serve_connection(
            stream,
            peer,
            &task_shared.app,
            &task_shared.config,
            &task_shared.drain,
            &task_state,
        )
        .await;
    });
    conns.insert(id, (state, handle.abort_handle()));
}

/// Completes on SIGTERM or Ctrl-C: the usual shutdown signal for a service.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

/// Binds `addr` with `SO_REUSEPORT` (a socket per worker thread, so the kernel spreads
/// connections) — the listener half of the thread-per-core model.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A running thread-per-core server; see [`serve_per_core`].
pub struct PerCoreServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    threads: Vec<std::thread::JoinHandle<io::Result<()>>>,
}

impl PerCoreServer {
    /// The bound address (the real port when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that starts the graceful drain on every worker when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for every worker to finish (after the token is cancelled).
    pub fn join(self) -> io::Result<()> {
        for t in self.threads {
            t.join()
                .map_err(|_| io::Error::other("server worker panicked"))??;
        }
        Ok(())
    }
}

/// Starts `workers` threads, each with its own current-thread tokio runtime and its own
/// `SO_REUSEPORT` listener on `addr`: no work stealing and no cross-thread wakeups, which is the
/// cheapest model per request. `make_app` builds each worker's router.
pub fn serve_per_core(
    addr: SocketAddr,
    workers: usize,
    config: ServerConfig,
    make_app: impl Fn() -> Router,
) -> io::Result<PerCoreServer> {
    let first = bind_reuseport(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(bind_reuseport(addr)?);
    }
    let shutdown = CancellationToken::new();
    let mut threads = Vec::new();
    for (i, std_listener) in listeners.into_iter().enumerate() {
        let app = make_app();
        let config = config.clone();
        let token = shutdown.clone();
        let t = std::thread::Builder::new()
            .name(format!("http-worker-{i}"))
            .spawn(move || -> io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener)?;
                    Server::from_listener(listener)
                        .with_config(config)
                        .serve_with_shutdown(app, token.cancelled_owned())
                        .await
                })
            })?;
        threads.push(t);
    }
    Ok(PerCoreServer {
        addr,
        shutdown,
        threads,
    })
}
