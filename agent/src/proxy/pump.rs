//! One proxied connection: two pumps (ingress, egress) driven by the live rule set.
//!
//! Each pump reads chunks as they arrive and stamps them with their arrival time. A
//! chunk's release time is computed from its *arrival*: `arrival + sampled delay`
//! (latency), plus retransmission stalls (loss), then paced (bandwidth). Chunks are
//! written in arrival order, each no earlier than its release time. So delays do not
//! stack (a chunk arriving while the previous one waits is not delayed twice) and the
//! byte stream is never reordered. With no rule and nothing queued, a chunk is written
//! straight from the read buffer: the fast path adds no timer and no copy.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::{Framer, Segment, abort_response};
use super::rules::{Action, LOSS_MAX_RETRIES, LOSS_RTO, Rule, RuleSet};

/// Read buffer size.
const READ_BUF: usize = 256 * 1024;
/// Bytes a pump may hold in its delay queue before it stops reading (backpressure).
const MAX_QUEUED: usize = 4 << 20;
/// With a bandwidth cap, reads are sliced to this much transmission time, so pacing is
/// smooth rather than one large burst per read.
const PACE_SLICE: Duration = Duration::from_millis(10);

/// How a connection ended.
enum End {
    Done,
    Reset,
    Abort(Bytes),
    Shutdown,
}

/// How a pump ended.
enum PumpEnd {
    Eof,
    Abort(Bytes),
}

/// Serves one accepted client connection until both directions close.
pub(crate) async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    upstream: impl std::future::Future<Output = io::Result<TcpStream>>,
    mut rules: watch::Receiver<Arc<RuleSet>>,
    cancel: CancellationToken,
) {
    let peer_ip = peer.ip();
    // A partition holds new connections before they reach the upstream; a reset refuses them.
    loop {
        let set = rules.borrow_and_update().clone();
        if let Some(r) = set.resets(peer_ip) {
            r.stats.record_reset();
            super::reset(client);
            return;
        }
        match set
            .partition(true, peer_ip)
            .or(set.partition(false, peer_ip))
        {
            Some(r) => {
                r.stats.record_hold();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = rules.changed() => if changed.is_err() { return },
                }
            }
            None => break,
        }
    }
    let upstream = tokio::select! {
        _ = cancel.cancelled() => return,
        u = upstream => u,
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "proxy upstream connect failed");
            super::reset(client);
            return;
        }
    };
    let mut client = client;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let end = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let ingress = pump(cr, uw, true, peer_ip, rules.clone());
        let egress = pump(ur, cw, false, peer_ip, rules.clone());
        tokio::pin!(ingress, egress);
        let (mut ingress_done, mut egress_done) = (false, false);
        let mut reset_rx = rules.clone();
        let reset = async move {
            loop {
                if let Some(r) = reset_rx.borrow_and_update().resets(peer_ip).cloned() {
                    r.stats.record_reset();
                    return;
                }
                if reset_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::pin!(reset);
        loop {
            if ingress_done && egress_done {
                break End::Done;
            }
            tokio::select! {
                _ = cancel.cancelled() => break End::Shutdown,
                () = &mut reset => break End::Reset,
                r = &mut ingress, if !ingress_done => match r {
                    Ok(PumpEnd::Eof) => ingress_done = true,
                    Ok(PumpEnd::Abort(response)) => break End::Abort(response),
                    Err(_) => break End::Reset,
                },
                r = &mut egress, if !egress_done => match r {
                    Ok(_) => egress_done = true,
                    Err(_) => break End::Reset,
                },
            }
        }
    };
    match end {
        End::Done | End::Shutdown => {}
        End::Reset => {
            super::reset(client);
            super::reset(upstream);
        }
        End::Abort(response) => {
            // The aborted request never reaches the upstream.
            super::reset(upstream);
            if client.write_all(&response).await.is_ok() {
                let _ = client.shutdown().await;
            }
        }
    }
}

/// A chunk waiting for its release time.
struct Pending {
    bytes: Bytes,
    arrival: Instant,
    release: Instant,
    /// Rules that delayed this chunk; each records the measured added delay.
    credit: Vec<Arc<Rule>>,
}

/// Per-pump random state: samples for latency and loss, with netem-style correlation.
struct Sampler {
    rng: SmallRng,
    last_jitter: f64,
    last_loss: f64,
}

impl Sampler {
    fn new() -> Self {
        Self {
            rng: SmallRng::from_rng(&mut rand::rng()),
            last_jitter: 0.0,
            last_loss: 0.0,
        }
    }

    fn latency(&mut self, delay: Duration, jitter: Duration, normal: bool, corr: f64) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        let d = delay.as_secs_f64();
        let j = jitter.as_secs_f64();
        let secs = if normal {
            let z: f64 = self.rng.sample(rand_distr::StandardNormal);
            let z = corr * self.last_jitter + (1.0 - corr) * z;
            self.last_jitter = z;
            (d + j * z).clamp(d - 2.0 * j, d + 2.0 * j)
        } else {
            // Uniform in [-1, 1].
            let u: f64 = self.rng.random::<f64>() * 2.0 - 1.0;
            let u = corr * self.last_jitter + (1.0 - corr) * u;
            self.last_jitter = u;
            d + j * u
        };
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Emulated loss: each transmission of the chunk is lost with `p`; every loss costs a
    /// retransmission timeout, doubling as TCP's exponential backoff does.
    fn loss_stall(&mut self, p: f64, corr: f64) -> Duration {
        let mut stall = Duration::ZERO;
        let mut rto = LOSS_RTO;
        for _ in 0..LOSS_MAX_RETRIES {
            let r: f64 = self.rng.random();
            let r = corr * self.last_loss + (1.0 - corr) * r;
            self.last_loss = r;
            if r >= p {
                break;
            }
            stall += rto;
            rto *= 2;
        }
        stall
    }

    fn chance(&mut self, p: f64) -> bool {
        p >= 1.0 || self.rng.random::<f64>() < p
    }
}

async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    ingress: bool,
    peer: IpAddr,
    mut rules_rx: watch::Receiver<Arc<RuleSet>>,
) -> io::Result<PumpEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_BUF];
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut queued = 0usize;
    let mut eof = false;
    let mut rules_open = true;
    let mut pacer: Option<Instant> = None;
    let mut sampler = Sampler::new();
    let mut framer = Framer::default();
    let mut framing = false;
    let mut segments = Vec::new();
    let mut held_by: Option<u64> = None;
    // A chunk the fast path read after the rules changed, to be handled under the new rules.
    let mut carried: Option<(usize, Instant)> = None;
    loop {
        let set = rules_rx.borrow_and_update().clone();
        let partition = set.partition(ingress, peer).cloned();
        match &partition {
            Some(r) if held_by != Some(r.id) => {
                r.stats.record_hold();
                held_by = Some(r.id);
            }
            None => held_by = None,
            _ => {}
        }
        let held = partition.is_some();
        if eof && queue.is_empty() && !held {
            writer.shutdown().await?;
            return Ok(PumpEnd::Eof);
        }
        let http = ingress
            && set
                .matching(true, peer)
                .any(|r| matches!(r.action, Action::Http(_)));
        if framing && !http {
            // The HTTP rule went away: release a held partial head and stop framing.
            if let Some(partial) = framer.take_partial() {
                let now = Instant::now();
                queue.push_back(Pending {
                    bytes: partial,
                    arrival: now,
                    release: now,
                    credit: Vec::new(),
                });
            }
            framer.reset();
        }
        framing = http;
        let bandwidth = set
            .matching(ingress, peer)
            .filter_map(|r| match r.action {
                Action::Bandwidth { bytes_per_second } => Some(bytes_per_second),
                _ => None,
            })
            .reduce(f64::min);
        if bandwidth.is_none() {
            pacer = None;
        }
        let read_len = match bandwidth {
            Some(bps) => ((bps * PACE_SLICE.as_secs_f64()) as usize).clamp(1024, READ_BUF),
            None => READ_BUF,
        };
        if carried.is_none()
            && rules_open
            && !held
            && !eof
            && queue.is_empty()
            && set.matching(ingress, peer).next().is_none()
        {
            // Fault-free fast path: a plain read/write loop with no timer, no copy, no clock
            // read and no registration on the rule channel per chunk; one atomic load per
            // chunk notices a rule change. A chunk read after a change is carried into the
            // general path below and handled under the new rules, so a fault added to a live
            // connection applies from the first chunk that arrives after it. (Resets of idle
            // connections are watched by `connection` itself.)
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 || rules_rx.has_changed().unwrap_or(false) {
                    carried = Some((n, Instant::now()));
                    break;
                }
                writer.write_all(&buf[..n]).await?;
            }
            continue;
        }
        let read_result = if let Some(c) = carried.take() {
            Some(c)
        } else {
            let wake = queue.front().map(|p| p.release);
            tokio::select! {
            biased;
            changed = rules_rx.changed(), if rules_open => {
                if changed.is_err() {
                    rules_open = false;
                }
                None
            }
            _ = super::timer::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() && !held => {
                let p = queue.pop_front().expect("queue has a head");
                queued -= p.bytes.len();
                let now = Instant::now();
                let added = now.saturating_duration_since(p.arrival);
                for r in &p.credit {
                    r.stats.record_delay(added);
                }
                writer.write_all(&p.bytes).await?;
                None
            }
            n = reader.read(&mut buf[..read_len]), if !eof && !held && queued < MAX_QUEUED => {
                Some((n?, Instant::now()))
            }
            }
        };
        if let Some((n, arrival)) = read_result {
            if n == 0 {
                eof = true;
                if let Some(partial) = framer.take_partial() {
                    queued += partial.len();
                    queue.push_back(Pending {
                        bytes: partial,
                        arrival,
                        release: arrival,
                        credit: Vec::new(),
                    });
                }
                continue;
            }
            let active = set.matching(ingress, peer).next().is_some();
            if !active && queue.is_empty() {
                writer.write_all(&buf[..n]).await?;
                continue;
            }
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            segments.clear();
            if framing {
                framer.push(chunk, &mut segments);
            } else {
                segments.push(Segment::Data(chunk));
            }
            for segment in segments.drain(..) {
                let (bytes, head) = match segment {
                    Segment::Data(b) => (b, None),
                    Segment::Head(h, b) => (b, Some(h)),
                };
                let mut release = arrival;
                let mut credit = Vec::new();
                for rule in set.matching(ingress, peer) {
                    match &rule.action {
                        Action::Latency {
                            delay,
                            jitter,
                            normal,
                            correlation,
                        } => {
                            release += sampler.latency(*delay, *jitter, *normal, *correlation);
                            credit.push(rule.clone());
                        }
                        Action::Loss {
                            probability,
                            correlation,
                        } => {
                            let stall = sampler.loss_stall(*probability, *correlation);
                            if !stall.is_zero() {
                                rule.stats.record_stall(stall);
                                release += stall;
                            }
                        }
                        Action::Http(h) => {
                            let Some(head) = &head else { continue };
                            if !h.matches(&head.method, &head.target) {
                                continue;
                            }
                            if let Some((status, p)) = h.abort
                                && sampler.chance(p)
                            {
                                rule.stats.record_request(true);
                                return Ok(PumpEnd::Abort(abort_response(status)));
                            }
                            rule.stats.record_request(false);
                            if let Some((delay, jitter, p)) = h.delay
                                && sampler.chance(p)
                            {
                                rule.stats.record_request_delayed();
                                release += sampler.latency(delay, jitter, false, 0.0);
                                credit.push(rule.clone());
                            }
                        }
                        Action::Bandwidth { .. } | Action::Reset | Action::Partition => {}
                    }
                }
                if let Some(bps) = bandwidth {
                    let start = pacer.map_or(release, |p| p.max(release));
                    let finish = start + Duration::from_secs_f64(bytes.len() as f64 / bps);
                    pacer = Some(finish);
                    release = finish;
                    for rule in set.matching(ingress, peer) {
                        if matches!(rule.action, Action::Bandwidth { .. }) {
                            rule.stats.record_paced(bytes.len());
                            credit.push(rule.clone());
                        }
                    }
                }
                if queue.is_empty() && release <= arrival && credit.is_empty() && !held {
                    writer.write_all(&bytes).await?;
                } else {
                    queued += bytes.len();
                    queue.push_back(Pending {
                        bytes,
                        arrival,
                        release,
                        credit,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_jitter_is_centred_and_clamped_to_two_deviations() {
        let mut s = Sampler::new();
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(10));
        let samples: Vec<f64> = (0..20_000)
            .map(|_| s.latency(d, j, true, 0.0).as_secs_f64() * 1000.0)
            .collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 100.0).abs() < 0.5, "mean {mean}");
        assert!(samples.iter().all(|x| (80.0..=120.0).contains(x)));
        // About 68% within one deviation, as a normal distribution has.
        let within = samples
            .iter()
            .filter(|x| (**x - 100.0).abs() <= 10.0)
            .count();
        let share = within as f64 / samples.len() as f64;
        assert!((0.64..=0.72).contains(&share), "{share}");
    }

    #[test]
    fn uniform_jitter_covers_the_range_evenly() {
        let mut s = Sampler::new();
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(20));
        let mut buckets = [0usize; 4];
        for _ in 0..20_000 {
            let ms = s.latency(d, j, false, 0.0).as_secs_f64() * 1000.0;
            assert!((80.0..=120.0).contains(&ms));
            buckets[(((ms - 80.0) / 10.0) as usize).min(3)] += 1;
        }
        for b in buckets {
            assert!((4_600..=5_400).contains(&b), "{buckets:?}");
        }
    }
}
