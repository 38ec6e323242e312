//! Events and metrics hooks. Components report here; the fleet turns them into Prometheus
//! metrics (`breaker_state`, `breaker_transitions_total`, `retries_total`, `degradation_level`).

use std::time::Duration;

use crate::breaker::State;
use crate::degradation::Level;

/// Something a policy did that an operator wants to count or log.
///
/// `name` is the component's configured name (e.g. the upstream `payments`), so one sink can
/// serve many components with bounded labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// A breaker changed state.
    BreakerTransition {
        /// Breaker name.
        name: &'a str,
        /// Previous state.
        from: State,
        /// New state.
        to: State,
    },
    /// A breaker rejected a call.
    BreakerRejected {
        /// Breaker name.
        name: &'a str,
        /// State that rejected it.
        state: State,
    },
    /// A retry is about to sleep `delay` and then make attempt number `attempt` (2 = first retry).
    Retry {
        /// Retry policy name.
        name: &'a str,
        /// The attempt about to be made, counting the first call as 1.
        attempt: u32,
        /// Backoff before it.
        delay: Duration,
    },
    /// A retry was wanted but the retry budget had nothing left.
    RetryBudgetExhausted {
        /// Retry policy name.
        name: &'a str,
    },
    /// A retry was wanted but would have slept past the deadline, or past max attempts.
    RetryGaveUp {
        /// Retry policy name.
        name: &'a str,
        /// Attempts made.
        attempts: u32,
    },
    /// A timeout fired.
    Timeout {
        /// Component name.
        name: &'a str,
        /// Its limit.
        after: Duration,
    },
    /// The rate limiter rejected a call.
    RateLimited {
        /// Limiter name.
        name: &'a str,
    },
    /// The bulkhead rejected a call (queue full or queue timeout).
    BulkheadRejected {
        /// Bulkhead name.
        name: &'a str,
    },
    /// The balancer ejected an endpoint after consecutive failures.
    EndpointEjected {
        /// Balancer name.
        name: &'a str,
        /// Index of the endpoint in the balancer.
        endpoint: usize,
        /// How long it stays out.
        for_: Duration,
    },
    /// The degradation controller changed level.
    DegradationChanged {
        /// Controller name.
        name: &'a str,
        /// Previous level.
        from: Level,
        /// New level.
        to: Level,
    },
}

/// Receives [`Event`]s. Implemented for any `Fn(&Event) + Send + Sync`, so a closure is enough.
///
/// Called synchronously on the caller's task, sometimes while a transition is being made:
/// keep it cheap and never call back into the component that reported.
pub trait EventSink: Send + Sync {
    /// Handle one event.
    fn on_event(&self, event: &Event<'_>);
}

impl<F> EventSink for F
where
    F: Fn(&Event<'_>) + Send + Sync,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event)
    }
}
