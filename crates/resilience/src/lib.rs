//! Resilience policies for Faultline's reference fleet, usable with any async client.
//!
//! Every policy is a plain value with an `async fn call(|| fut)` wrapper plus a low-level
//! permit API for callers that must record outcomes themselves:
//!
//! - [`breaker::CircuitBreaker`]: closed / open / half-open / forced-open / disabled, count or
//!   time sliding window, failure-rate and slow-call-rate thresholds, exponential open wait and
//!   a hard cap on concurrent half-open probes. The closed fast path is lock-free.
//! - [`retry::Retry`]: five backoff kinds, retry-on predicate, `Retry-After`, deadline awareness
//!   and a shared [`retry::RetryBudget`] against retry storms.
//! - [`timeout::Timeout`], [`ratelimit::RateLimiter`] (GCRA), [`bulkhead::Bulkhead`].
//! - [`balance::Balancer`]: round robin or power-of-two-choices over peak-EWMA, with passive
//!   outlier ejection.
//! - [`degradation::DegradationController`]: L0..L3 from p99, error rate and timeout rate, with
//!   hysteresis.
//! - [`adaptive::AimdLimiter`]: an optional AIMD adaptive concurrency limit.
//! - [`stack::Stack`]: composes the above in the order explained in `docs/resilience.md`.
//!
//! Observability goes through [`event::EventSink`]; this crate has no metrics dependency.
//! With the `tower` feature, `tower_support` provides `Layer`s.

pub mod adaptive;
pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod clock;
pub mod degradation;
pub mod error;
pub mod event;
pub mod ratelimit;
pub mod retry;
pub mod stack;
pub mod timeout;
#[cfg(feature = "tower")]
pub mod tower_support;

pub use error::{ConfigError, Error};
pub use event::{Event, EventSink};
