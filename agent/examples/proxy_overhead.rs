//! Proxy overhead with no fault, against a direct connection in the same run.
//! Not a test (timings depend on the host); run by `benches/agent-proxy.sh`.
//!
//! Fairness on a small box: the workload (client and server) runs on one current-thread
//! runtime pinned to CPU 0 in *both* runs, and the proxy on its own current-thread
//! runtime pinned to CPU 1. The workload therefore has the same CPU budget with and
//! without the proxy, and the proxy is measured as what it is in production: another
//! process's threads. Without pinning, three busy parties on two cores measure the
//! scheduler, not the proxy.
//!
//! - Latency: 64-byte ping-pongs on one keep-alive connection, direct and proxied in
//!   alternating blocks of 1,000 so drift hits both equally; added p50 = p50(proxy) -
//!   p50(direct).
//! - Request throughput (the acceptance figure): 32 connections doing 64-byte
//!   ping-pongs for 2 s, requests per second, direct vs proxied.
//! - Bulk throughput (reported, not the acceptance figure): one connection streams
//!   256 MiB in 64 KiB writes to a sink that answers one byte at the end. A copying
//!   proxy moves every byte twice more than a direct connection, so this shows the raw
//!   copy cost.
//! - CPU per request (load-independent, unlike the throughput ratios): during the request
//!   throughput runs, the on-CPU time of the workload thread and of the proxy thread from
//!   `/proc/self/task/<tid>/schedstat` (nanoseconds, kernel and user), divided by the
//!   requests completed. In the shared layout the proxy runs on the workload thread, so its
//!   cost is the difference between the proxied and the direct figure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_agent::proxy::ProxyRegistry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 20;
const BLOCK: usize = 1_000;
const BULK: usize = 256 << 20;
const CONCURRENCY: usize = 32;
const RPS_TIME: Duration = Duration::from_secs(2);

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("could not pin to CPU {cpu}: {e}; figures will be noisier");
    }
}

/// On-CPU nanoseconds (user and kernel) of thread `tid` of this process so far.
fn thread_cpu_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if buf[..n].ends_with(b"!") && n == 1 {
                        let _ = s.write_all(b"!").await;
                        continue;
                    }
                    if n < 1024 && s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn ping_block(s: &mut TcpStream, out: &mut Vec<Duration>) {
    let msg = [7u8; 64];
    let mut got = [0u8; 64];
    for _ in 0..BLOCK {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut got).await.unwrap();
        out.push(t.elapsed());
    }
}

async fn bulk(addr: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    s.write_all(b"!").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    BULK as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

/// Request/response throughput: `CONCURRENCY` connections each doing 64-byte ping-pongs
/// for `RPS_TIME`; returns requests per second and the on-CPU nanoseconds per request of
/// the workload thread and (if it has its own thread) of the proxy.
async fn request_rate(addr: SocketAddr, proxy_tid: Option<i32>) -> (f64, f64, f64) {
    let me = gettid();
    let (w0, p0) = (thread_cpu_ns(me), proxy_tid.map_or(0, thread_cpu_ns));
    let stop = Instant::now() + RPS_TIME;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (msg, mut got) = ([7u8; 64], [0u8; 64]);
            let mut n = 0u64;
            while Instant::now() < stop {
                s.write_all(&msg).await.unwrap();
                s.read_exact(&mut got).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let (w1, p1) = (thread_cpu_ns(me), proxy_tid.map_or(0, thread_cpu_ns));
    let per = |a: u64, b: u64| (b - a) as f64 / total.max(1) as f64;
    (
        total as f64 / RPS_TIME.as_secs_f64(),
        per(w0, w1),
        per(p0, p1),
    )
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6
}

/// Where the proxy runs, for `measure`.
struct ProxySide {
    /// The proxy's thread, when it has its own.
    tid: Option<i32>,
    /// An echo server on the proxy's core (split layout only): pinging it directly measures
    /// what two cross-core wake-ups cost on this host, with no proxy involved.
    remote_echo: Option<SocketAddr>,
}

async fn measure(upstream: SocketAddr, proxy: SocketAddr, side: ProxySide) {
    let proxy_tid = side.tid;
    if let Some(remote) = side.remote_echo {
        let mut c = TcpStream::connect(remote).await.unwrap();
        c.set_nodelay(true).unwrap();
        let mut v = Vec::new();
        ping_block(&mut c, &mut v).await;
        v.clear();
        for _ in 0..ROUNDS / 4 {
            ping_block(&mut c, &mut v).await;
        }
        println!(
            "cross-core wake-up baseline: direct round trip to an echo server on the proxy's core \
             (2 cross-core wake-ups, no proxy): p50 {:.1} us",
            pct(&mut v, 0.5)
        );
    }
    let mut direct_conn = TcpStream::connect(upstream).await.unwrap();
    let mut proxy_conn = TcpStream::connect(proxy).await.unwrap();
    direct_conn.set_nodelay(true).unwrap();
    proxy_conn.set_nodelay(true).unwrap();
    // Warm up both paths.
    let mut scratch = Vec::new();
    ping_block(&mut direct_conn, &mut scratch).await;
    ping_block(&mut proxy_conn, &mut scratch).await;
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ping_block(&mut direct_conn, &mut direct).await;
        ping_block(&mut proxy_conn, &mut proxied).await;
    }
    let (d50, d99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    let (p50, p99) = (pct(&mut proxied, 0.5), pct(&mut proxied, 0.99));
    println!("round trip (64 B, {} samples each):", direct.len());
    println!("  direct  p50 {d50:8.1} us  p99 {d99:8.1} us");
    println!("  proxied p50 {p50:8.1} us  p99 {p99:8.1} us");
    println!(
        "  added   p50 {:8.1} us  p99 {:8.1} us",
        p50 - d50,
        p99 - d99
    );
    let mut dt = Vec::new();
    let mut pt = Vec::new();
    for _ in 0..3 {
        dt.push(bulk(upstream).await);
        pt.push(bulk(proxy).await);
    }
    dt.sort_by(f64::total_cmp);
    pt.sort_by(f64::total_cmp);
    let (d, p) = (dt[1], pt[1]);
    println!("bulk throughput (256 MiB, median of 3):");
    println!("  direct  {d:8.0} MiB/s");
    println!("  proxied {p:8.0} MiB/s  ({:.2}x direct)", p / d);
    let mut dr = Vec::new();
    let mut pr = Vec::new();
    for _ in 0..3 {
        dr.push(request_rate(upstream, None).await);
        pr.push(request_rate(proxy, proxy_tid).await);
    }
    dr.sort_by(|a, b| a.0.total_cmp(&b.0));
    pr.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (d, p) = (dr[1], pr[1]);
    println!(
        "request throughput ({CONCURRENCY} connections, 64 B ping-pong, median of 3 x {RPS_TIME:?}):"
    );
    println!("  direct  {:8.0} req/s", d.0);
    println!("  proxied {:8.0} req/s  ({:.2}x direct)", p.0, p.0 / d.0);
    println!("CPU per request (same runs, on-CPU time from schedstat):");
    println!("  direct  workload thread {:6.2} us", d.1 / 1e3);
    print!("  proxied workload thread {:6.2} us", p.1 / 1e3);
    if proxy_tid.is_some() {
        println!(", proxy thread {:6.2} us", p.2 / 1e3);
    } else {
        println!(
            " (proxy included: {:+.2} us per request)",
            (p.1 - d.1) / 1e3
        );
    }
}

/// `split`: proxy on CPU 1, workload on CPU 0 (the proxy as another process's threads).
fn split() {
    let (upstream_tx, upstream_rx) = std::sync::mpsc::channel();
    let (proxy_tx, proxy_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let proxy_thread = std::thread::spawn(move || {
        pin(1);
        let tid = gettid();
        runtime().block_on(async move {
            let upstream: SocketAddr = upstream_rx.recv().unwrap();
            let reg = ProxyRegistry::default();
            let remote_echo = echo_server().await;
            proxy_tx
                .send((
                    reg.create("bench", upstream).await.unwrap(),
                    tid,
                    remote_echo,
                ))
                .unwrap();
            tokio::task::spawn_blocking(move || {
                let _ = done_rx.recv();
            })
            .await
            .unwrap();
            drop(reg);
        });
    });
    pin(0);
    runtime().block_on(async move {
        let upstream = echo_server().await;
        upstream_tx.send(upstream).unwrap();
        let (proxy, tid, remote_echo) = proxy_rx.recv().unwrap();
        let side = ProxySide {
            tid: Some(tid),
            remote_echo: Some(remote_echo),
        };
        measure(upstream, proxy, side).await;
    });
    drop(done_tx);
    proxy_thread.join().unwrap();
}

/// `shared`: workload and proxy on one runtime pinned to CPU 0 (the embedded agent on
/// the same core as its callers): no cross-core wake-ups, every cycle the proxy costs
/// is taken from the workload.
fn shared() {
    pin(0);
    runtime().block_on(async move {
        let upstream = echo_server().await;
        let reg = ProxyRegistry::default();
        let proxy = reg.create("bench", upstream).await.unwrap();
        let side = ProxySide {
            tid: None,
            remote_echo: None,
        };
        measure(upstream, proxy, side).await;
    });
}

fn main() {
    let layout = std::env::args().nth(1).unwrap_or_else(|| "split".into());
    println!("layout: {layout}");
    match layout.as_str() {
        "split" => split(),
        "shared" => shared(),
        other => {
            eprintln!("unknown layout `{other}`: expected `split` or `shared`");
            std::process::exit(2);
        }
    }
}
