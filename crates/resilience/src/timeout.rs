//! Timeout: bound how long one call (or one attempt) may take.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfigError, Error};
use crate::event::{Event, EventSink};

/// A per-call time limit. Put it innermost (around each attempt) so a slow attempt is both
/// retried and counted as a failure by the breaker.
#[derive(Clone)]
pub struct Timeout {
    name: Arc<str>,
    limit: Duration,
    sink: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Timeout {
    /// A timeout of `limit` (must be positive).
    pub fn try_new(limit: Duration) -> Result<Self, ConfigError> {
        if limit.is_zero() {
            return Err(ConfigError::range("timeout", "must be positive"));
        }
        Ok(Timeout {
            name: "timeout".into(),
            limit,
            sink: None,
        })
    }

    /// Name used in events.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Report fired timeouts here.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Run `f`, failing with [`Error::Timeout`] if it takes longer than the limit. The inner
    /// future is dropped (cancelled) when the limit passes.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match tokio::time::timeout(self.limit, f()).await {
            Ok(r) => r.map_err(Error::Inner),
            Err(_) => {
                if let Some(sink) = &self.sink {
                    sink.on_event(&Event::Timeout {
                        name: &self.name,
                        after: self.limit,
                    });
                }
                Err(Error::Timeout(self.limit))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timeout_fires_at_the_limit_and_not_before() {
        let t = Timeout::try_new(Duration::from_millis(100)).unwrap();
        let start = tokio::time::Instant::now();
        let r: Result<(), Error<()>> = t
            .call(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert_eq!(r, Err(Error::Timeout(Duration::from_millis(100))));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        let ok: Result<u8, Error<()>> = t
            .call(|| async {
                tokio::time::sleep(Duration::from_millis(99)).await;
                Ok(7)
            })
            .await;
        assert_eq!(ok, Ok(7));
    }

    #[test]
    fn zero_timeout_is_rejected() {
        assert!(Timeout::try_new(Duration::ZERO).is_err());
    }
}
