//! Circuit breaker: fail fast while an upstream is unhealthy, and probe it carefully when it
//! may have recovered.
//!
//! States: [`State::Closed`] (calls pass, outcomes go into a sliding window),
//! [`State::Open`] (calls are rejected until the open wait ends), [`State::HalfOpen`] (at most
//! `half_open_max_concurrent` probes at a time; after `half_open_calls` probe outcomes the
//! breaker closes or re-opens), and the manual [`State::ForcedOpen`] and [`State::Disabled`].
//!
//! The closed fast path is one atomic load to admit a call and, to record it, one `fetch_add`
//! plus one `swap` on a ring slot (the `window` module); no lock is taken unless the state changes.

#[cfg(test)]
mod tests;
mod window;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use window::WindowSnapshot;
use window::{CountWindow, FAILED, RECORDED, SLOW, TimeWindow};

use crate::clock::Clock;
use crate::error::{ConfigError, Error};
use crate::event::{Event, EventSink};

/// The breaker's state, as exported in the `breaker_state` gauge (see [`State::as_gauge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Normal operation: calls pass and their outcomes are recorded.
    Closed,
    /// Tripped: calls are rejected until the open wait has passed.
    Open,
    /// Probing: a bounded number of calls pass to test the upstream.
    HalfOpen,
    /// Held open by an operator until [`CircuitBreaker::reset`].
    ForcedOpen,
    /// Switched off by an operator: every call passes and nothing is recorded.
    Disabled,
}

impl State {
    /// Numeric value for a gauge: closed 0, half-open 1, open 2, forced-open 3, disabled 4.
    pub fn as_gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    /// Lower-case name for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    fn from_code(c: u64) -> State {
        match c & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call's result counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream worked (a 404 for a missing order is usually a success).
    Success,
    /// The upstream is unhealthy (connection refused, 5xx, timeout).
    Failure,
    /// Says nothing about the upstream (the caller cancelled, a client-side validation error).
    Ignored,
}

/// The kind of sliding window over which failure and slow-call rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `window`, kept in `buckets` buckets of `window / buckets` each.
    Time {
        /// Window length.
        window: Duration,
        /// Number of buckets (granularity).
        buckets: u32,
    },
}

/// Checked breaker settings; build them with [`CircuitBreaker::builder`].
#[derive(Clone)]
pub struct Config {
    name: Arc<str>,
    window: WindowKind,
    minimum_calls: u32,
    failure_rate_ppm: u64,
    slow_rate_ppm: u64,
    slow_call_duration: Option<Duration>,
    open_wait: Duration,
    open_wait_multiplier: f64,
    max_open_wait: Duration,
    half_open_max_concurrent: u32,
    half_open_calls: u32,
    sink: Option<Arc<dyn EventSink>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate_ppm", &self.failure_rate_ppm)
            .field("slow_rate_ppm", &self.slow_rate_ppm)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("open_wait", &self.open_wait)
            .field("open_wait_multiplier", &self.open_wait_multiplier)
            .field("max_open_wait", &self.max_open_wait)
            .field("half_open_max_concurrent", &self.half_open_max_concurrent)
            .field("half_open_calls", &self.half_open_calls)
            .finish_non_exhaustive()
    }
}

/// Builder for [`CircuitBreaker`]. Defaults follow resilience4j: count window of 100, minimum
/// 100 calls, 50% failure rate, slow calls off, 60 s open wait (not growing), 10 half-open calls
/// with at most 10 concurrent.
#[derive(Debug, Clone)]
pub struct Builder {
    name: String,
    window: WindowKind,
    minimum_calls: u32,
    failure_rate: f64,
    slow_rate: f64,
    slow_call_duration: Option<Duration>,
    open_wait: Duration,
    open_wait_multiplier: f64,
    max_open_wait: Option<Duration>,
    half_open_max_concurrent: u32,
    half_open_calls: Option<u32>,
    sink: Option<SinkHolder>,
}

#[derive(Clone)]
struct SinkHolder(Arc<dyn EventSink>);
impl fmt::Debug for SinkHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

impl Builder {
    /// Name used in events (e.g. the upstream service).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Judge the last `n` calls.
    pub fn count_window(mut self, n: u32) -> Self {
        self.window = WindowKind::Count(n);
        self
    }
    /// Judge the calls of the last `window`, in `buckets` buckets.
    pub fn time_window(mut self, window: Duration, buckets: u32) -> Self {
        self.window = WindowKind::Time { window, buckets };
        self
    }
    /// No verdict before this many calls are in the window.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }
    /// Open when failures / calls >= `rate` (a fraction in (0, 1]).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }
    /// Count calls slower than `duration` as slow, and open when slow / calls >= `rate`.
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.slow_call_duration = Some(duration);
        self.slow_rate = rate;
        self
    }
    /// First open wait.
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        self
    }
    /// Multiply the open wait by `multiplier` each time the breaker re-opens without having
    /// closed, up to `max`.
    pub fn exponential_open_wait(mut self, multiplier: f64, max: Duration) -> Self {
        self.open_wait_multiplier = multiplier;
        self.max_open_wait = Some(max);
        self
    }
    /// At most `n` half-open probes in flight at once; more are rejected.
    pub fn half_open_max_concurrent(mut self, n: u32) -> Self {
        self.half_open_max_concurrent = n;
        self
    }
    /// Probe outcomes needed in half-open before deciding (defaults to the concurrency cap).
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.half_open_calls = Some(n);
        self
    }
    /// Where state changes and rejections are reported.
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(SinkHolder(sink));
        self
    }

    /// Check the settings and build the breaker.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let ppm = |field, r: f64| {
            if r.is_finite() && r > 0.0 && r <= 1.0 {
                Ok((r * 1_000_000.0).round() as u64)
            } else {
                Err(ConfigError::range(field, "must be a fraction in (0, 1]"))
            }
        };
        let failure_rate_ppm = ppm("failure_rate", self.failure_rate)?;
        let slow_rate_ppm = ppm("slow_call_rate", self.slow_rate)?;
        match self.window {
            WindowKind::Count(0) => {
                return Err(ConfigError::range("count_window", "must be at least 1"));
            }
            WindowKind::Count(n) if n > 1_000_000 => {
                return Err(ConfigError::range(
                    "count_window",
                    "must be at most 1000000",
                ));
            }
            WindowKind::Time { window, buckets } => {
                if buckets == 0 || buckets > 10_000 {
                    return Err(ConfigError::range(
                        "time_window.buckets",
                        "must be 1..=10000",
                    ));
                }
                if window.as_nanos() < u128::from(buckets) {
                    return Err(ConfigError::range(
                        "time_window",
                        "must be at least 1ns per bucket",
                    ));
                }
            }
            WindowKind::Count(_) => {}
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::range("minimum_calls", "must be at least 1"));
        }
        if self.slow_call_duration == Some(Duration::ZERO) {
            return Err(ConfigError::range("slow_call_duration", "must be positive"));
        }
        if self.open_wait.is_zero() {
            return Err(ConfigError::range("open_wait", "must be positive"));
        }
        if !(self.open_wait_multiplier.is_finite() && self.open_wait_multiplier >= 1.0) {
            return Err(ConfigError::range("open_wait_multiplier", "must be >= 1"));
        }
        let max_open_wait = self.max_open_wait.unwrap_or(self.open_wait);
        if max_open_wait < self.open_wait {
            return Err(ConfigError::range("max_open_wait", "must be >= open_wait"));
        }
        if self.half_open_max_concurrent == 0 {
            return Err(ConfigError::range(
                "half_open_max_concurrent",
                "must be at least 1",
            ));
        }
        let half_open_calls = self
            .half_open_calls
            .unwrap_or(self.half_open_max_concurrent);
        if half_open_calls == 0 {
            return Err(ConfigError::range("half_open_calls", "must be at least 1"));
        }
        let config = Config {
            name: self.name.into(),
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_rate_ppm,
            slow_rate_ppm,
            slow_call_duration: self.slow_call_duration,
            open_wait: self.open_wait,
            open_wait_multiplier: self.open_wait_multiplier,
            max_open_wait,
            half_open_max_concurrent: self.half_open_max_concurrent,
            half_open_calls,
            sink: self.sink.map(|s| s.0),
        };
        Ok(CircuitBreaker::from_config(config))
    }
}

const STATE_MASK: u64 = 0b111;
const STATE_BITS: u32 = 3;

enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

struct Inner {
    config: Config,
    clock: Clock,
    /// generation << 3 | state. The generation makes outcomes of calls admitted under an
    /// earlier state (e.g. a slow call that started before the breaker opened) be ignored.
    word: AtomicU64,
    window: Window,
    open_until: AtomicU64,
    /// in-flight probes (low 32 bits) and probes admitted this half-open period (high 32 bits).
    probes: AtomicU64,
    probe_done: AtomicU32,
    probe_failures: AtomicU32,
    probe_slow: AtomicU32,
    /// Serialises state changes (rare) so each generation changes state exactly once.
    transition: Mutex<TransitionState>,
    transitions_total: AtomicU64,
    rejected_total: AtomicU64,
}

struct TransitionState {
    consecutive_opens: u32,
}

/// A circuit breaker; cheap to clone (the clones share state).
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.config.name)
            .field("state", &self.state())
            .finish()
    }
}

/// Counters a metrics exporter can poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Current state.
    pub state: State,
    /// Outcomes in the closed window.
    pub window: WindowSnapshot,
    /// State changes since creation.
    pub transitions_total: u64,
    /// Calls rejected since creation.
    pub rejected_total: u64,
}

/// Why [`CircuitBreaker::try_acquire`] refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker rejected the call in state {state}")]
pub struct Rejected {
    /// The state that refused it.
    pub state: State,
}

impl CircuitBreaker {
    /// Start configuring a breaker.
    pub fn builder() -> Builder {
        Builder {
            name: "breaker".to_owned(),
            window: WindowKind::Count(100),
            minimum_calls: 100,
            failure_rate: 0.5,
            slow_rate: 1.0,
            slow_call_duration: None,
            open_wait: Duration::from_secs(60),
            open_wait_multiplier: 1.0,
            max_open_wait: None,
            half_open_max_concurrent: 10,
            half_open_calls: None,
            sink: None,
        }
    }

    fn from_config(config: Config) -> Self {
        let window = match config.window {
            WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
            WindowKind::Time { window, buckets } => {
                let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
                Window::Time(TimeWindow::new(buckets, nanos / u64::from(buckets)))
            }
        };
        CircuitBreaker {
            inner: Arc::new(Inner {
                config,
                clock: Clock::tokio(),
                word: AtomicU64::new(State::Closed.code()),
                window,
                open_until: AtomicU64::new(0),
                probes: AtomicU64::new(0),
                probe_done: AtomicU32::new(0),
                probe_failures: AtomicU32::new(0),
                probe_slow: AtomicU32::new(0),
                transition: Mutex::new(TransitionState {
                    consecutive_opens: 0,
                }),
                transitions_total: AtomicU64::new(0),
                rejected_total: AtomicU64::new(0),
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The current state. An open breaker whose wait has passed reports `Open` until the next
    /// call moves it to half-open.
    pub fn state(&self) -> State {
        State::from_code(self.inner.word.load(Ordering::Acquire))
    }

    /// Counters for exporters.
    pub fn metrics(&self) -> Metrics {
        let inner = &self.inner;
        Metrics {
            state: self.state(),
            window: match &inner.window {
                Window::Count(w) => w.snapshot(),
                Window::Time(w) => w.snapshot(inner.clock.now_nanos()),
            },
            transitions_total: inner.transitions_total.load(Ordering::Relaxed),
            rejected_total: inner.rejected_total.load(Ordering::Relaxed),
        }
    }

    /// Ask to make a call. On success, run the call and report its outcome on the permit
    /// (dropping the permit unrecorded counts as [`Outcome::Ignored`]).
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let inner = &*self.inner;
        loop {
            let word = inner.word.load(Ordering::Acquire);
            let state = State::from_code(word);
            match state {
                State::Closed => {
                    return Ok(Permit::new(inner, word, false));
                }
                State::Disabled => return Ok(Permit::new(inner, word, false)),
                State::Open => {
                    let now = inner.clock.now_nanos();
                    if now >= inner.open_until.load(Ordering::Acquire) {
                        inner.transition(word, State::HalfOpen);
                        continue;
                    }
                    return Err(inner.reject(state));
                }
                State::ForcedOpen => return Err(inner.reject(state)),
                State::HalfOpen => {
                    let max_c = u64::from(inner.config.half_open_max_concurrent);
                    let max_total = u64::from(inner.config.half_open_calls);
                    let admitted =
                        inner
                            .probes
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                                let in_flight = p & 0xFFFF_FFFF;
                                let total = p >> 32;
                                (in_flight < max_c && total < max_total)
                                    .then_some(p + 1 + (1 << 32))
                            });
                    if admitted.is_err() {
                        return Err(inner.reject(state));
                    }
                    // The breaker may have left half-open between the load and the update; the
                    // permit's generation check makes such a probe's outcome harmless.
                    return Ok(Permit::new(inner, word, true));
                }
            }
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), returning a permit that owns a breaker handle.
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        self.try_acquire().map(|p| p.into_owned(self))
    }

    /// Run `f` through the breaker; an `Err` counts as a failure.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(f, |r: &Result<T, E>| {
            if r.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        })
        .await
    }

    /// Run `f` through the breaker, with `classify` deciding how its result counts (e.g. an HTTP
    /// 503 in an `Ok` is a failure, a 404 in an `Ok` a success).
    pub async fn call_classified<F, Fut, T, E, C>(&self, f: F, classify: C) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        let permit = self.try_acquire().map_err(|_| Error::BreakerOpen)?;
        let result = f().await;
        permit.record(classify(&result));
        result.map_err(Error::Inner)
    }

    /// Hold the breaker open until [`reset`](Self::reset), e.g. during maintenance.
    pub fn force_open(&self) {
        self.inner.transition_any(State::ForcedOpen);
    }

    /// Let every call pass and record nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.inner.transition_any(State::Disabled);
    }

    /// Close the breaker and clear its window and open-wait growth.
    pub fn reset(&self) {
        self.inner.transition_any(State::Closed);
    }
}

impl Inner {
    #[cold]
    fn reject(&self, state: State) -> Rejected {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        if let Some(sink) = &self.config.sink {
            sink.on_event(&Event::BreakerRejected {
                name: &self.config.name,
                state,
            });
        }
        Rejected { state }
    }

    #[inline]
    fn now_if_needed(&self) -> Option<Instant> {
        match (&self.window, self.config.slow_call_duration) {
            (Window::Count(_), None) => None,
            _ => Some(Instant::now()),
        }
    }

    fn on_closed(&self, word: u64, bits: u8) {
        if self.word.load(Ordering::Acquire) != word {
            return;
        }
        let snap = match &self.window {
            Window::Count(w) => {
                w.record(bits);
                if bits & (FAILED | SLOW) == 0 {
                    return;
                }
                w.snapshot()
            }
            Window::Time(w) => {
                let now = self.clock.now_nanos();
                w.record(now, bits);
                if bits & (FAILED | SLOW) == 0 {
                    return;
                }
                w.snapshot(now)
            }
        };
        if snap.calls >= self.config.minimum_calls && self.over_threshold(snap) {
            self.transition(word, State::Open);
        }
    }

    fn over_threshold(&self, s: WindowSnapshot) -> bool {
        let calls = u64::from(s.calls);
        calls > 0
            && (u64::from(s.failures) * 1_000_000 >= self.config.failure_rate_ppm * calls
                || (self.config.slow_call_duration.is_some()
                    && u64::from(s.slow) * 1_000_000 >= self.config.slow_rate_ppm * calls))
    }

    fn on_half_open(&self, word: u64, bits: u8) {
        if self.word.load(Ordering::Acquire) != word {
            return;
        }
        if bits & FAILED != 0 {
            self.probe_failures.fetch_add(1, Ordering::AcqRel);
        }
        if bits & SLOW != 0 {
            self.probe_slow.fetch_add(1, Ordering::AcqRel);
        }
        let done = self.probe_done.fetch_add(1, Ordering::AcqRel) + 1;
        if done >= self.config.half_open_calls {
            let snap = WindowSnapshot {
                calls: done,
                failures: self.probe_failures.load(Ordering::Acquire),
                slow: self.probe_slow.load(Ordering::Acquire),
            };
            let to = if self.over_threshold(snap) {
                State::Open
            } else {
                State::Closed
            };
            self.transition(word, to);
        }
    }

    /// Change state if the state word is still `expected`; returns whether this call did it.
    fn transition(&self, expected: u64, to: State) -> bool {
        let mut guard = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.word.load(Ordering::Acquire);
        if current != expected {
            return false;
        }
        self.apply(&mut guard, current, to);
        true
    }

    fn transition_any(&self, to: State) {
        let mut guard = self
            .transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.word.load(Ordering::Acquire);
        if to == State::Closed {
            guard.consecutive_opens = 0;
        }
        self.apply(&mut guard, current, to);
    }

    fn apply(&self, guard: &mut TransitionState, current: u64, to: State) {
        let from = State::from_code(current);
        match to {
            State::Open => {
                let c = &self.config;
                let factor = c
                    .open_wait_multiplier
                    .powi(guard.consecutive_opens.min(64) as i32);
                let wait = c
                    .open_wait
                    .checked_mul_f64_saturating(factor)
                    .min(c.max_open_wait);
                guard.consecutive_opens = guard.consecutive_opens.saturating_add(1);
                let until = self
                    .clock
                    .now_nanos()
                    .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
                self.open_until.store(until, Ordering::Release);
            }
            State::HalfOpen => {
                // Keep the in-flight count: probes of an earlier half-open period that are still
                // running count against the cap, so the upstream never sees more than N.
                let _ = self
                    .probes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                        Some(p & 0xFFFF_FFFF)
                    });
                self.probe_done.store(0, Ordering::Release);
                self.probe_failures.store(0, Ordering::Release);
                self.probe_slow.store(0, Ordering::Release);
            }
            State::Closed => {
                guard.consecutive_opens = 0;
                match &self.window {
                    Window::Count(w) => w.reset(),
                    Window::Time(w) => w.reset(),
                }
            }
            State::ForcedOpen | State::Disabled => {}
        }
        let generation = (current >> STATE_BITS).wrapping_add(1);
        self.word
            .store((generation << STATE_BITS) | to.code(), Ordering::Release);
        if from != to {
            self.transitions_total.fetch_add(1, Ordering::Relaxed);
            if let Some(sink) = &self.config.sink {
                sink.on_event(&Event::BreakerTransition {
                    name: &self.config.name,
                    from,
                    to,
                });
            }
        }
    }
}

trait DurationExt {
    fn checked_mul_f64_saturating(self, f: f64) -> Duration;
}

impl DurationExt for Duration {
    fn checked_mul_f64_saturating(self, f: f64) -> Duration {
        Duration::try_from_secs_f64(self.as_secs_f64() * f).unwrap_or(Duration::MAX)
    }
}

/// What a permit remembers about its call; shared by [`Permit`] and [`OwnedPermit`].
struct Ticket {
    word: u64,
    probe: bool,
    recorded: bool,
    started: Option<Instant>,
}

impl Ticket {
    #[inline]
    fn new(inner: &Inner, word: u64, probe: bool) -> Self {
        let started = if State::from_code(word) == State::Disabled {
            None
        } else {
            inner.now_if_needed()
        };
        Ticket {
            word,
            probe,
            recorded: false,
            started,
        }
    }

    #[inline]
    fn record(&mut self, inner: &Inner, outcome: Outcome, elapsed: Option<Duration>) {
        let bits = match outcome {
            Outcome::Ignored => return, // release() gives the probe slot back.
            Outcome::Success => RECORDED,
            Outcome::Failure => RECORDED | FAILED,
        };
        let elapsed = elapsed.or_else(|| self.started.map(|s| s.elapsed()));
        let slow = match (inner.config.slow_call_duration, elapsed) {
            (Some(limit), Some(e)) if e >= limit => SLOW,
            _ => 0,
        };
        self.recorded = true;
        match State::from_code(self.word) {
            State::Closed => inner.on_closed(self.word, bits | slow),
            State::HalfOpen if self.probe => inner.on_half_open(self.word, bits | slow),
            _ => {}
        }
    }

    #[inline]
    fn release(&mut self, inner: &Inner) {
        if self.probe {
            // Free the concurrency slot; an unrecorded probe also gives back its place in the
            // half-open quota so the breaker cannot get stuck waiting for an outcome that never
            // comes. Only touch counters of the generation that admitted us.
            let same_period = inner.word.load(Ordering::Acquire) == self.word;
            let _ = inner
                .probes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                    if p & 0xFFFF_FFFF == 0 {
                        return None;
                    }
                    let mut next = p - 1;
                    if !self.recorded && same_period && next >> 32 != 0 {
                        next -= 1 << 32;
                    }
                    Some(next)
                });
            self.probe = false;
        }
    }
}

/// Permission to make one call; report its result with [`Permit::record`].
#[must_use = "a permit reports the call's outcome; dropping it counts the call as ignored"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Ticket,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("state", &State::from_code(self.ticket.word))
            .field("probe", &self.ticket.probe)
            .finish()
    }
}

impl<'a> Permit<'a> {
    #[inline]
    fn new(inner: &'a Inner, word: u64, probe: bool) -> Self {
        Permit {
            inner,
            ticket: Ticket::new(inner, word, probe),
        }
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe
    }

    /// Report the call's outcome; its duration (since the permit was granted) decides whether
    /// it was slow.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.ticket.record(self.inner, outcome, None);
    }

    /// Report the outcome with a duration measured by the caller.
    pub fn record_elapsed(mut self, outcome: Outcome, elapsed: Duration) {
        self.ticket.record(self.inner, outcome, Some(elapsed));
    }

    /// Detach from the borrow of the breaker (for futures that must be `'static`).
    pub fn into_owned(self, breaker: &CircuitBreaker) -> OwnedPermit {
        let mut this = std::mem::ManuallyDrop::new(self);
        OwnedPermit {
            inner: breaker.inner.clone(),
            ticket: std::mem::replace(
                &mut this.ticket,
                Ticket {
                    word: 0,
                    probe: false,
                    recorded: true,
                    started: None,
                },
            ),
        }
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.ticket.release(self.inner);
    }
}

/// A [`Permit`] that owns a handle to its breaker, for `'static` futures (tower services).
#[must_use = "a permit reports the call's outcome; dropping it counts the call as ignored"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    ticket: Ticket,
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("state", &State::from_code(self.ticket.word))
            .field("probe", &self.ticket.probe)
            .finish()
    }
}

impl OwnedPermit {
    /// Report the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        self.ticket.record(&self.inner, outcome, None);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.ticket.release(&self.inner);
    }
}
