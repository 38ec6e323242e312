//! Errors: [`ConfigError`] for invalid policy settings, [`Error`] for a call rejected or failed
//! by a policy.

use std::time::Duration;

/// A policy was configured with values that cannot work; returned by every `try_new`/`build`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value is outside its allowed range.
    #[error("{field}: {reason}")]
    OutOfRange {
        /// The setting, e.g. `failure_rate_threshold`.
        field: &'static str,
        /// What was expected.
        reason: &'static str,
    },
}

impl ConfigError {
    pub(crate) fn range(field: &'static str, reason: &'static str) -> Self {
        ConfigError::OutOfRange { field, reason }
    }
}

/// Why a call wrapped by a policy did not return the inner success value.
///
/// `E` is the wrapped client's own error; policies never hide it, they add their own reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error<E> {
    /// The wrapped call itself failed.
    #[error("call failed: {0}")]
    Inner(E),
    /// The call (or one attempt of it) took longer than the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open (or forced open, or out of half-open probes) and rejected the call.
    #[error("circuit breaker open")]
    BreakerOpen,
    /// The rate limiter rejected the call; it may be tried again after `retry_after`.
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// Earliest time a call would conform to the rate.
        retry_after: Duration,
    },
    /// The bulkhead's concurrency limit and its queue are both full.
    #[error("bulkhead full")]
    BulkheadFull,
    /// The call waited in the bulkhead queue for longer than the queue timeout.
    #[error("bulkhead queue timeout after {0:?}")]
    QueueTimeout(Duration),
    /// The caller's overall deadline passed before the call could (re)start.
    #[error("deadline exceeded")]
    DeadlineExceeded,
}

impl<E> Error<E> {
    /// The inner error, if the wrapped call itself failed.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// True when a policy rejected the call without running it (shed load), so it says nothing
    /// about the upstream's health.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Error::BreakerOpen
                | Error::RateLimited { .. }
                | Error::BulkheadFull
                | Error::QueueTimeout(_)
                | Error::DeadlineExceeded
        )
    }
}
