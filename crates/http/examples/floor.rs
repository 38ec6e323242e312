//! The CPU floor for `benches/http-vs-hyper.sh`: a responder with no HTTP logic at all.
//!
//! One thread, edge-triggered epoll, non-blocking sockets with `TCP_NODELAY`: per readable
//! event it `recv`s, counts the request ends (`\r\n\r\n`) and `send`s one fixed plaintext
//! response per request, stopping at a short read as tokio does. It is not an HTTP server
//! (no parsing, no limits, no timeouts); it shows the lowest CPU per request that *any*
//! server reaches on this host with one `recv` and one `send` per request, so the benchmark
//! can say how much of a server's CPU is the kernel's and how much is left to win.
//!
//! Usage: `cargo run --release -p faultline-http --example floor -- [ADDR]`

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 13\r\ndate: Mon, 24 Nov 2026 02:30:00 GMT\r\n\r\nHello, World!";
const LISTENER: u64 = u64::MAX;

fn accept_all(
    epoll: &OwnedFd,
    listener: &TcpListener,
    conns: &mut HashMap<u64, OwnedFd>,
) -> io::Result<()> {
    while let Ok(fd) = rustix::net::accept_with(listener, SocketFlags::NONBLOCK) {
        rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
        let token = fd.as_raw_fd() as u64;
        epoll::add(
            epoll,
            &fd,
            EventData::new_u64(token),
            EventFlags::IN | EventFlags::ET,
        )?;
        conns.insert(token, fd);
    }
    Ok(())
}

/// Answers everything `fd` has; `false` once it should be closed (end of stream or error).
fn serve(fd: impl AsFd, buf: &mut [u8], out: &mut Vec<u8>) -> bool {
    loop {
        let n = match rustix::net::recv(&fd, &mut *buf, RecvFlags::empty()) {
            Ok((0, _)) => return false,
            Ok((n, _)) => n,
            Err(e) => return e == rustix::io::Errno::AGAIN,
        };
        out.clear();
        for _ in buf[..n].windows(4).filter(|w| *w == b"\r\n\r\n") {
            out.extend_from_slice(RESPONSE);
        }
        if rustix::net::send(&fd, out, SendFlags::NOSIGNAL).is_err() {
            return false;
        }
        if n < buf.len() {
            return true; // A short read drained the socket.
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8082".into());
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    println!("listening on http://{}", listener.local_addr()?);
    let epoll = epoll::create(CreateFlags::CLOEXEC)?;
    epoll::add(
        &epoll,
        &listener,
        EventData::new_u64(LISTENER),
        EventFlags::IN,
    )?;
    let mut conns = HashMap::new();
    let mut events: Vec<Event> = Vec::with_capacity(256);
    let (mut buf, mut out) = (
        vec![0u8; 16 * 1024],
        Vec::with_capacity(16 * RESPONSE.len()),
    );
    loop {
        events.clear();
        epoll::wait(&epoll, rustix::buffer::spare_capacity(&mut events), None)?;
        for ev in &events {
            match ev.data.u64() {
                LISTENER => accept_all(&epoll, &listener, &mut conns)?,
                token => {
                    let open = conns
                        .get(&token)
                        .is_some_and(|fd| serve(fd, &mut buf, &mut out));
                    if !open {
                        conns.remove(&token); // Dropping the descriptor closes it.
                    }
                }
            }
        }
    }
}
