//! The quickstart release gate's faults, reproduced without the runner: 100ms±20ms on every
//! request into payments, 80% CPU burn, and 503 on half the requests into notifications, under
//! 200 req/s of open-model load through the gateway. With resilience the gateway keeps its 5xx
//! rate <= 0.5% and p99 <= 800 ms; with `FL_RESILIENCE=off` it does not.
//!
//! A bounded real-time load test (2 x 10 s), so it is ignored by default; run it on a quiet
//! machine with
//! `cargo test --release -p faultline-cli --test fleet_gate -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faultline_fleet::{ChildLogs, Edge, Fleet, LaunchOptions, Service};
use faultline_http::{Client, ClientConfig, OwnedRequest, Response, Router, Server, handler_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RATE: u64 = 200;
const RUN: Duration = Duration::from_secs(10);

/// Delays every chunk into the upstream by 100 ms ± 20 ms (uniform).
async fn latency_proxy(listener: TcpListener, upstream: SocketAddr) {
    let seed = Arc::new(AtomicU64::new(0x9e37_79b9_7f4a_7c15));
    while let Ok((mut down, _)) = listener.accept().await {
        let seed = Arc::clone(&seed);
        tokio::spawn(async move {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut dr, mut dw) = down.split();
            let (mut ur, mut uw) = up.split();
            let inbound = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match dr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // xorshift: good enough for jitter.
                    let mut x = seed.fetch_add(0x6a09_e667, Ordering::Relaxed);
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let jitter = x % 41;
                    tokio::time::sleep(Duration::from_millis(80 + jitter)).await;
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = uw.shutdown().await;
            };
            let outbound = async {
                let _ = tokio::io::copy(&mut ur, &mut dw).await;
                let _ = dw.shutdown().await;
            };
            tokio::join!(inbound, outbound);
        });
    }
}

/// An HTTP front for notifications that answers 503 to every other request and forwards the
/// rest.
async fn abort_half(upstream: SocketAddr) -> SocketAddr {
    let n = Arc::new(AtomicU64::new(0));
    let client = Client::default();
    let app = Router::new().post(
        "/notify",
        handler_fn(move |req: OwnedRequest| {
            let n = Arc::clone(&n);
            let client = client.clone();
            async move {
                if n.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    return Response::error(503, "injected abort");
                }
                match client
                    .post(format!("http://{upstream}/notify"))
                    .body(req.body().clone())
                    .send()
                    .await
                {
                    Ok(r) => Response::new(r.status()).with_body(r.body().clone()),
                    Err(e) => Response::error(502, &e.to_string()),
                }
            }
        }),
    );
    let server = Server::bind("127.0.0.1:0")
        .await
        .expect("abort front binds");
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(app));
    addr
}

/// Burns `load` of every core with a 10 ms duty cycle until `stop`.
fn burners(load: f64, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cores)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let period = Duration::from_millis(10);
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    while start.elapsed() < period.mul_f64(load) {
                        std::hint::spin_loop();
                    }
                    std::thread::sleep(period.mul_f64(1.0 - load));
                }
            })
        })
        .collect()
}

struct Outcome {
    sent: usize,
    errors_5xx: usize,
    p99: Duration,
}

async fn run(resilience: bool) -> Outcome {
    let options = LaunchOptions::new(env!("CARGO_BIN_EXE_chaos"))
        .resilience(resilience)
        .env("RUST_LOG", "error")
        .logs(ChildLogs::Inherit);
    let payments_edge = Edge {
        from: Service::Orders,
        to: Service::Payments,
    };
    let notify_edge = Edge {
        from: Service::Orders,
        to: Service::Notifications,
    };
    // The abort front must exist before the fleet dials it, but it needs notifications'
    // address: wire it through a placeholder proxy address resolved at start.
    let mut pending_notify = None;
    let fleet = Fleet::start_wired(options, |edge, _replica, upstream| {
        if edge == payments_edge {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(latency_proxy(TcpListener::from_std(l).unwrap(), upstream));
            addr
        } else if edge == notify_edge {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            pending_notify = Some((l, upstream));
            addr
        } else {
            upstream
        }
    })
    .await
    .expect("fleet starts");
    let (front_listener, notify_addr) = pending_notify.expect("notifications edge wired");
    let front = abort_half(notify_addr).await;
    // Forward the placeholder to the abort front (plain TCP relay, no delay).
    front_listener.set_nonblocking(true).unwrap();
    let relay = TcpListener::from_std(front_listener).unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = relay.accept().await {
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(front).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let burn = burners(0.8, Arc::clone(&stop));
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    });
    let gateway = fleet.url(Service::Gateway);
    let total = (RATE * RUN.as_secs()) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + Duration::from_micros(1_000_000 / RATE * i as u64);
        tokio::time::sleep_until(scheduled).await;
        let c = client.clone();
        let gw = gateway.clone();
        tasks.push(tokio::spawn(async move {
            let resp = if i % 4 == 3 {
                c.get(format!("{gw}/api/orders/1")).send().await
            } else {
                c.post(format!("{gw}/api/orders"))
                    .body(r#"{"sku":"A-1","qty":1}"#)
                    .send()
                    .await
            };
            // Latency from the scheduled send time: no coordinated omission.
            let took = scheduled.elapsed();
            (resp.map(|r| r.status()).unwrap_or(599), took)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors_5xx = 0;
    for t in tasks {
        let (status, took) = t.await.unwrap();
        if status >= 500 {
            errors_5xx += 1;
        }
        lat.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    for b in burn {
        b.join().unwrap();
    }
    fleet.stop().await;
    lat.sort();
    Outcome {
        sent: total,
        errors_5xx,
        p99: lat[lat.len() * 99 / 100],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10 s real-time load per mode; run with --release -- --ignored"]
async fn quickstart_faults_pass_with_resilience_and_fail_without() {
    let on = run(true).await;
    let off = run(false).await;
    for (name, o) in [("on", &on), ("off", &off)] {
        eprintln!(
            "resilience {name}: {} requests, {} 5xx ({:.2}%), p99 {:?}",
            o.sent,
            o.errors_5xx,
            100.0 * o.errors_5xx as f64 / o.sent as f64,
            o.p99
        );
    }
    assert!(on.errors_5xx * 200 <= on.sent, "on: 5xx rate above 0.5%");
    assert!(on.p99 <= Duration::from_millis(800), "on: p99 {:?}", on.p99);
    assert!(
        off.errors_5xx * 200 > off.sent || off.p99 > Duration::from_millis(800),
        "off must fail the gate"
    );
}
