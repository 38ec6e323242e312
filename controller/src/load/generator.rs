//! The run itself: dispatcher, connection workers, batching of measurements, report.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::LoadError;
use super::schedule::{RequestMix, Schedule, Spell};
use super::stats::{LoadReport, LoadStats, Outcome, Sample};
use super::transport::{HttpRequest, HttpTransport, Transport};
use crate::slo::client::{Backlog, ClientMeasurements, Waiting};

/// Most connections one run may use; far above what the open model needs on one
/// machine, and a bound on the number of tasks.
pub const MAX_CONNECTIONS: usize = 10_000;

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Arrival rate (requests per second), independent of responses.
    Open {
        /// Requests per second.
        rate: f64,
        /// Spells of another rate (`spec.load.surges`), in time order.
        spells: Vec<Spell>,
    },
    /// Every connection sends its next request as soon as the previous one ends: the
    /// maximum throughput, as `wrk` measures it. Latency counts from the actual send.
    Closed,
}

/// A checked description of one load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Pacing.
    pub mode: Mode,
    /// How long requests are scheduled (open) or sent (closed).
    pub duration: Duration,
    /// Connections (workers, each with at most one request in flight) opened up front.
    pub connections: usize,
    /// Open model: the most connections the generator may open when a request is due
    /// and every open one is busy. At least `connections`; the closed loop ignores it.
    pub max_connections: usize,
    /// Per-request deadline, counted from the scheduled time; past it the request is a
    /// timeout error.
    pub timeout: Duration,
    /// Weight of each mix entry, in the transport's order.
    pub weights: Vec<u32>,
}

impl LoadConfig {
    /// The configuration and HTTP transport for an experiment's `load:` section, sending
    /// to `base_url` (the resolved target, e.g. `http://127.0.0.1:8080`) for `duration`.
    pub fn from_spec(
        load: &faultline_spec::Load,
        base_url: &str,
        duration: Duration,
    ) -> Result<(LoadConfig, HttpTransport), LoadError> {
        let requests = load
            .requests
            .iter()
            .map(|r| {
                HttpRequest::new(
                    &r.method,
                    base_url,
                    &r.path,
                    r.headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    r.body.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connections = load.connections as usize;
        let max_connections = load.max_connections as usize;
        let config = LoadConfig {
            mode: Mode::Open {
                rate: load.rate.as_per_second(),
                spells: load
                    .surges
                    .iter()
                    .map(|s| Spell {
                        start: s.after.std(),
                        length: s.duration.std(),
                        rate: s.rate.as_per_second(),
                    })
                    .collect(),
            },
            duration,
            connections,
            max_connections,
            timeout: load.timeout.0,
            weights: load.requests.iter().map(|r| r.weight).collect(),
        };
        config.check()?;
        Ok((config, HttpTransport::new(requests, max_connections)))
    }

    fn check(&self) -> Result<(), LoadError> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(LoadError::InvalidConfig(format!(
                "connections must be between 1 and {MAX_CONNECTIONS}, got {}",
                self.connections
            )));
        }
        if self.mode != Mode::Closed
            && (self.max_connections < self.connections || self.max_connections > MAX_CONNECTIONS)
        {
            return Err(LoadError::InvalidConfig(format!(
                "max connections must be between connections ({}) and {MAX_CONNECTIONS}, got {}",
                self.connections, self.max_connections
            )));
        }
        if self.timeout.is_zero() {
            return Err(LoadError::InvalidConfig(
                "timeout must be above zero".into(),
            ));
        }
        if self.duration.is_zero() {
            return Err(LoadError::InvalidConfig(
                "duration must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// A running load. Dropping it stops the run.
#[derive(Debug)]
pub struct LoadHandle {
    stats: LoadStats,
    cancel: CancellationToken,
    driver: JoinHandle<Result<LoadReport, LoadError>>,
    _stop_on_drop: DropGuard,
}

impl LoadHandle {
    /// The live measurements.
    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }

    /// Stops scheduling and sending; requests in flight are abandoned unrecorded.
    /// [`LoadHandle::wait`] then returns promptly with `cancelled: true`.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Waits for the run to end (its duration plus at most one timeout for the last
    /// requests, or a stop) and returns the summary.
    pub async fn wait(mut self) -> Result<LoadReport, LoadError> {
        match (&mut self.driver).await {
            Ok(r) => r,
            Err(e) => Err(LoadError::TaskFailed(e.to_string())),
        }
    }
}

struct Shared<T> {
    transport: T,
    schedule: Option<Schedule>,
    mix: RequestMix,
    timeout: Duration,
    start: Instant,
    start_wall: SystemTime,
    end: Instant,
    /// Open model: requests released by the dispatcher.
    released: AtomicU64,
    /// Next request index to claim.
    next: AtomicU64,
    /// The dispatcher will release nothing more.
    finished: AtomicBool,
    notify: Notify,
    /// Latest start of a request, nanoseconds after `start`.
    last_start_ns: AtomicU64,
    /// Open model: workers spawned so far (never fewer: a connection, once open, stays).
    open: AtomicUsize,
    /// Open model: workers waiting for a request, including woken ones that have not
    /// claimed theirs yet.
    idle: AtomicUsize,
    /// Open model: the most workers the dispatcher may spawn.
    max_connections: usize,
    stats: LoadStats,
    cancel: CancellationToken,
}

/// Starts a run on the current tokio runtime (an error outside one). Results go into `measurements` (the SLO
/// engine's client series) and the handle's [`LoadStats`]. Cancelling `cancel` (or a
/// parent of it) stops the run, as does [`LoadHandle::stop`] or dropping the handle.
pub fn start<T: Transport>(
    config: LoadConfig,
    transport: T,
    measurements: Arc<RwLock<ClientMeasurements>>,
    cancel: CancellationToken,
) -> Result<LoadHandle, LoadError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| LoadError::NoRuntime)?;
    config.check()?;
    let schedule = match &config.mode {
        Mode::Open { rate, spells } => Some(Schedule::with_spells(*rate, config.duration, spells)?),
        Mode::Closed => None,
    };
    let mix = RequestMix::try_new(&config.weights)?;
    let cancel = cancel.child_token();
    let stats = LoadStats::new(measurements, config.timeout);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        transport,
        schedule,
        mix,
        timeout: config.timeout,
        start,
        start_wall: SystemTime::now(),
        end: start + config.duration,
        released: AtomicU64::new(0),
        next: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        notify: Notify::new(),
        last_start_ns: AtomicU64::new(0),
        open: AtomicUsize::new(config.connections),
        idle: AtomicUsize::new(0),
        max_connections: config.max_connections.max(config.connections),
        stats: stats.clone(),
        cancel: cancel.clone(),
    });
    if shared.schedule.is_some() {
        stats
            .measurements
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set_backlog(Arc::new(Queue(Arc::downgrade(&shared))));
    }
    let driver = runtime.spawn(drive(shared, config.connections));
    Ok(LoadHandle {
        stats,
        _stop_on_drop: cancel.clone().drop_guard(),
        cancel,
        driver,
    })
}

async fn drive<T: Transport>(
    shared: Arc<Shared<T>>,
    connections: usize,
) -> Result<LoadReport, LoadError> {
    let mut tasks = JoinSet::new();
    // The dispatcher asks for more workers through this channel, so that every task
    // stays in the one `JoinSet` this function owns.
    let (grow_tx, mut grow_rx) = mpsc::unbounded_channel::<usize>();
    if shared.schedule.is_some() {
        tasks.spawn(dispatch(Arc::clone(&shared), grow_tx));
        for _ in 0..connections {
            tasks.spawn(open_worker(Arc::clone(&shared)));
        }
    } else {
        drop(grow_tx);
        for _ in 0..connections {
            tasks.spawn(closed_worker(Arc::clone(&shared)));
        }
    }
    let mut failure = None;
    let mut growing = true;
    loop {
        tokio::select! {
            biased;
            more = grow_rx.recv(), if growing => match more {
                Some(n) => {
                    for _ in 0..n {
                        tasks.spawn(open_worker(Arc::clone(&shared)));
                    }
                }
                // The dispatcher is done: nothing more to open.
                _ => growing = false,
            },
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    // Stop the others: a report missing one worker's requests would lie.
                    shared.cancel.cancel();
                    failure.get_or_insert(e.to_string());
                }
            },
        }
    }
    if let Some(e) = failure {
        return Err(LoadError::TaskFailed(e));
    }
    Ok(report(&shared, connections))
}

fn report<T>(shared: &Shared<T>, connections: usize) -> LoadReport {
    let elapsed = shared.start.elapsed();
    let stats = &shared.stats;
    let counts = stats.counts();
    let (started, send_lag_ms) = stats.send_lag();
    let delay = stats.generator_delay();
    let open_model = shared.schedule.is_some();
    let (mode, target_rate, scheduled, achieved_rate) = match &shared.schedule {
        Some(s) => {
            let last = Duration::from_nanos(shared.last_start_ns.load(Ordering::Acquire));
            let window = (last + s.interval()).as_secs_f64();
            let achieved = if started == 0 {
                0.0
            } else {
                started as f64 / window
            };
            (
                "open",
                Some(s.mean_rate()),
                Some(shared.released.load(Ordering::Acquire)),
                achieved,
            )
        }
        None => {
            let window = elapsed.as_secs_f64().max(1e-9);
            ("closed", None, None, counts.requests as f64 / window)
        }
    };
    LoadReport {
        mode,
        target_rate,
        scheduled,
        started,
        achieved_rate,
        elapsed_secs: elapsed.as_secs_f64(),
        cancelled: shared.cancel.is_cancelled(),
        counts,
        errors: counts.errors(),
        latency_ms: stats.latency(),
        send_lag_ms,
        connections,
        max_connections: if open_model {
            shared.max_connections
        } else {
            connections
        },
        peak_connections: if open_model {
            shared.open.load(Ordering::Acquire)
        } else {
            connections
        },
        generator_delay_ms: delay.quantiles,
        delayed: delay.delayed,
        waited_long: delay.waited_long,
        expired: delay.expired,
        seconds: stats.series(),
    }
}

/// Releases requests as they fall due. Sleeping until the next due time means one
/// wake-up per request at low rates and, because tokio's timer has millisecond
/// resolution, one wake-up per millisecond releasing a batch at high rates.
///
/// After each release, if more requests are waiting than workers are idle, it asks
/// `grow` for that many more workers, up to `max_connections` open in all: the open
/// model, not the pool, decides how many requests are in flight.
async fn dispatch<T: Transport>(shared: Arc<Shared<T>>, grow: mpsc::UnboundedSender<usize>) {
    let Some(schedule) = &shared.schedule else {
        return;
    };
    let total = schedule.total();
    let mut released = 0;
    loop {
        let due = schedule.due(shared.start.elapsed());
        if due > released {
            shared.released.store(due, Ordering::Release);
            // Wake one idle worker per new request; busy workers pick up further
            // requests without being woken.
            let open = shared.open.load(Ordering::Acquire);
            for _ in 0..(due - released).min(open as u64) {
                shared.notify.notify_one();
            }
            released = due;
            let waiting = due.saturating_sub(shared.next.load(Ordering::Acquire));
            let idle = shared.idle.load(Ordering::Acquire) as u64;
            let more = growth(waiting, idle, open, shared.max_connections);
            if more > 0 {
                shared.open.fetch_add(more, Ordering::AcqRel);
                // The receiver lives as long as the run; if it is gone, the run is over.
                let _ = grow.send(more);
            }
        }
        if released >= total {
            break;
        }
        let next = shared.start + schedule.offset(released);
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    shared.finished.store(true, Ordering::Release);
    shared.notify.notify_waiters();
}

/// Measurements a worker has not recorded yet. Recording in batches keeps the shared
/// locks off the per-request path; the age limit keeps the live view fresh.
struct Batch {
    samples: Vec<Sample>,
    since: Instant,
}

const BATCH_LEN: usize = 64;
const BATCH_AGE: Duration = Duration::from_millis(50);

impl Batch {
    fn new() -> Self {
        Batch {
            samples: Vec::with_capacity(BATCH_LEN),
            since: Instant::now(),
        }
    }

    fn push(&mut self, s: Sample, stats: &LoadStats, now: Instant) {
        if self.samples.is_empty() {
            self.since = now;
        }
        self.samples.push(s);
        if self.samples.len() >= BATCH_LEN || now.duration_since(self.since) >= BATCH_AGE {
            self.flush(stats);
        }
    }

    fn flush(&mut self, stats: &LoadStats) {
        stats.record(&self.samples);
        self.samples.clear();
    }

    /// Sends one request; `None` if the run was cancelled meanwhile. While the request is
    /// in flight (a stalled server can hold it for the whole timeout), the batch is still
    /// recorded once it is [`BATCH_AGE`] old, so the live view of earlier seconds stays
    /// complete when it matters most.
    async fn send_while_fresh<T: Transport>(
        &mut self,
        shared: &Shared<T>,
        entry: usize,
        timeout: Duration,
    ) -> Option<Outcome> {
        let mut send = pin!(shared.transport.send(entry, timeout));
        loop {
            let pending = !self.samples.is_empty();
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => return None,
                o = &mut send => return Some(o),
                _ = tokio::time::sleep_until(self.since + BATCH_AGE), if pending => {
                    self.flush(&shared.stats);
                }
            }
        }
    }
}

/// The open model's queue as the SLO engine sees it: released requests no worker has
/// taken yet. Weak, so the measurements do not keep a finished run alive.
struct Queue<T>(Weak<Shared<T>>);

impl<T: Transport> Backlog for Queue<T> {
    fn waiting_between(&self, from: SystemTime, to: SystemTime) -> Waiting {
        let Some(shared) = self.0.upgrade() else {
            return Waiting::default();
        };
        let Some(schedule) = &shared.schedule else {
            return Waiting::default();
        };
        let released = shared.released.load(Ordering::Acquire);
        let next = shared.next.load(Ordering::Acquire).min(released);
        // Requests scheduled strictly before `t`.
        let before = |t: SystemTime| match t.duration_since(shared.start_wall) {
            Ok(d) if !d.is_zero() => schedule.due(d - Duration::from_nanos(1)),
            _ => 0,
        };
        let first = before(from).max(next);
        let count = before(to).min(released).saturating_sub(first);
        Waiting {
            count,
            oldest: (count > 0).then(|| shared.wall(schedule.offset(first))),
        }
    }
}

/// How many workers to open: one per released request no idle worker will take, as
/// far as `max_connections` allows.
pub(super) fn growth(waiting: u64, idle: u64, open: usize, max_connections: usize) -> usize {
    let short = usize::try_from(waiting.saturating_sub(idle)).unwrap_or(usize::MAX);
    short.min(max_connections.saturating_sub(open))
}

impl<T> Shared<T> {
    /// Claims the next released request, if any.
    fn claim(&self) -> Option<u64> {
        let released = self.released.load(Ordering::Acquire);
        self.next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < released).then_some(n + 1)
            })
            .ok()
    }

    fn wall(&self, offset: Duration) -> SystemTime {
        self.start_wall + offset
    }

    fn note_start(&self, at: Instant) {
        let ns = u64::try_from(at.duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.last_start_ns.fetch_max(ns, Ordering::AcqRel);
    }
}

async fn open_worker<T: Transport>(shared: Arc<Shared<T>>) {
    let Some(schedule) = &shared.schedule else {
        return;
    };
    let mut batch = Batch::new();
    loop {
        let index = match shared.claim() {
            Some(i) => i,
            None => {
                let mut notified = pin!(shared.notify.notified());
                notified.as_mut().enable();
                // Counted idle from before the second look, so the dispatcher never
                // sees a worker that is about to wait as busy and opens one too many
                // rather than one too few.
                shared.idle.fetch_add(1, Ordering::AcqRel);
                // Check again now that a wake-up cannot be missed.
                match shared.claim() {
                    Some(i) => {
                        shared.idle.fetch_sub(1, Ordering::AcqRel);
                        i
                    }
                    None => {
                        if shared.finished.load(Ordering::Acquire)
                            && shared.next.load(Ordering::Acquire)
                                >= shared.released.load(Ordering::Acquire)
                        {
                            shared.idle.fetch_sub(1, Ordering::AcqRel);
                            break;
                        }
                        batch.flush(&shared.stats);
                        let woken = tokio::select! {
                            biased;
                            _ = shared.cancel.cancelled() => false,
                            _ = notified => true,
                        };
                        shared.idle.fetch_sub(1, Ordering::AcqRel);
                        if woken {
                            continue;
                        }
                        break;
                    }
                }
            }
        };
        let offset = schedule.offset(index);
        let scheduled = shared.start + offset;
        let deadline = scheduled + shared.timeout;
        let begin = Instant::now();
        let sample = if begin >= deadline {
            // It waited for a connection past its deadline: the client would have given
            // up at the deadline, so that is its latency.
            Sample {
                scheduled: shared.wall(offset),
                latency: shared.timeout,
                send_lag: None,
                waited: Some(begin.duration_since(scheduled)),
                outcome: Outcome::Timeout,
            }
        } else {
            shared.note_start(begin);
            let entry = shared.mix.pick(index);
            let Some(outcome) = batch
                .send_while_fresh(&shared, entry, deadline - begin)
                .await
            else {
                break;
            };
            let end = Instant::now();
            // A transport that overran the budget it was given still missed the deadline.
            let outcome = if end > deadline {
                Outcome::Timeout
            } else {
                outcome
            };
            let waited = begin.saturating_duration_since(scheduled);
            Sample {
                scheduled: shared.wall(offset),
                latency: end.duration_since(scheduled),
                send_lag: Some(waited),
                waited: Some(waited),
                outcome,
            }
        };
        batch.push(sample, &shared.stats, Instant::now());
    }
    batch.flush(&shared.stats);
}

async fn closed_worker<T: Transport>(shared: Arc<Shared<T>>) {
    let mut batch = Batch::new();
    loop {
        let begin = Instant::now();
        if begin >= shared.end || shared.cancel.is_cancelled() {
            break;
        }
        shared.note_start(begin);
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let entry = shared.mix.pick(index);
        let Some(outcome) = batch.send_while_fresh(&shared, entry, shared.timeout).await else {
            break;
        };
        let end = Instant::now();
        let outcome = if end.duration_since(begin) > shared.timeout {
            Outcome::Timeout
        } else {
            outcome
        };
        batch.push(
            Sample {
                scheduled: shared.wall(begin.duration_since(shared.start)),
                latency: end.duration_since(begin),
                send_lag: Some(Duration::ZERO),
                waited: None,
                outcome,
            },
            &shared.stats,
            end,
        );
    }
    batch.flush(&shared.stats);
}
