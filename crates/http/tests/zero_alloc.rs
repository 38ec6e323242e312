//! Proves the hot path allocates nothing: a plaintext GET on a warm keep-alive connection,
//! through the router, with a synchronous handler.
//!
//! This file is its own test binary with a single test, so no other test's threads allocate
//! while it counts. The counting allocator needs `unsafe impl GlobalAlloc`, the only unsafe code
//! in the crate (the crate's lint table is `deny`, allowed here).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use faultline_http::middleware::Timing;
use faultline_http::{Request, Response, Router, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the counter update has no effect on memory safety.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (all allocations go there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout`; forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUEST: &[u8] =
    b"GET /plaintext HTTP/1.1\r\nHost: bench\r\nUser-Agent: zero-alloc-test\r\nAccept: */*\r\n\r\n";

async fn one_exchange(stream: &mut TcpStream, buf: &mut [u8], expected_len: usize) -> usize {
    stream.write_all(REQUEST).await.expect("write request");
    let mut got = 0;
    while got < expected_len.max(1) {
        let n = stream.read(&mut buf[got..]).await.expect("read response");
        assert!(n > 0, "server closed the connection");
        got += n;
        if expected_len == 0 && buf[..got].windows(13).any(|w| w == b"Hello, World!") {
            break;
        }
    }
    got
}

#[test]
fn plaintext_get_on_warm_keep_alive_connection_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // A metrics-style middleware that observes the route template, as the fleet's will.
        let seen = std::sync::Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        let app = Router::new()
            .get("/plaintext", |_: &Request<'_>| {
                Response::text("Hello, World!")
            })
            .get("/other/{id}", |_: &Request<'_>| Response::new(204))
            .layer(Timing::new(move |c| {
                if c.route == Some("/plaintext") && c.status == 200 {
                    seen2.fetch_add(1, Ordering::Relaxed);
                }
            }));
        let server = Server::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let token = tokio_util::sync::CancellationToken::new();
        let server_task =
            tokio::spawn(server.serve_with_shutdown(app, token.clone().cancelled_owned()));

        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; 4096];
        let len = one_exchange(&mut stream, &mut buf, 0).await;
        // Warm up: buffers reach their steady size, the timer and thread-locals initialise.
        for _ in 0..200 {
            assert_eq!(one_exchange(&mut stream, &mut buf, len).await, len);
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        const N: u64 = 2_000;
        for _ in 0..N {
            assert_eq!(one_exchange(&mut stream, &mut buf, len).await, len);
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert!(buf[..len].starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(
            seen.load(Ordering::Relaxed),
            N + 201,
            "every request went through the middleware"
        );
        assert_eq!(
            allocated, 0,
            "{allocated} heap allocations for {N} keep-alive requests (client and server together)"
        );
        token.cancel();
        drop(stream);
        server_task.await.expect("join").expect("serve");
    });
}
