//! Helpers shared by the real-time proxy tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on port 0 that stops with the runtime.
pub async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One small echo round trip.
pub async fn round_trip(s: &mut TcpStream) -> std::time::Duration {
    let start = std::time::Instant::now();
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    start.elapsed()
}

/// Share of one CPU a busy thread gets right now, from its own CPU clock over 300 ms.
pub fn available_cpu_share() -> f64 {
    std::thread::spawn(|| {
        let start_wall = Instant::now();
        let start_cpu = cpu_now();
        let mut x = 0u64;
        while start_wall.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        (cpu_now() - start_cpu).as_secs_f64() / start_wall.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

/// This thread's CPU time.
pub fn cpu_now() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Real-time accuracy figures need a mostly idle host. Under `CI=true` this is always
/// `false` (CI has the machine to itself, and a busy CI host must fail loudly). Elsewhere,
/// when a busy thread gets less than 90% of a CPU, it prints why and returns `true`.
pub fn host_too_busy(what: &str) -> bool {
    if faultline_testkit::under_ci() {
        return false;
    }
    let share = available_cpu_share();
    if share < 0.9 {
        eprintln!(
            "skipped: a busy thread gets only {:.0}% of a CPU on this host right now; \
             {what} needs a mostly idle host (CI=true runs it regardless)",
            share * 100.0
        );
        return true;
    }
    false
}
