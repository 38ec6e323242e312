//! Bulkhead: a concurrency limit with a bounded wait queue and a queue timeout, so one slow
//! dependency cannot tie up every task or connection of the caller.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ConfigError, Error};
use crate::event::{Event, EventSink};

/// A concurrency limit with a bounded FIFO queue (tokio's semaphore is fair).
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

struct Inner {
    name: Box<str>,
    semaphore: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue: usize,
    queued: AtomicUsize,
    queue_timeout: Duration,
    sink: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.inner.max_concurrent)
            .field("max_queue", &self.inner.max_queue)
            .field("queue_timeout", &self.inner.queue_timeout)
            .finish()
    }
}

/// A slot in the bulkhead, released on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

struct QueueSlot<'a>(&'a AtomicUsize);
impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// At most `max_concurrent` calls at once; up to `max_queue` more wait, each at most
    /// `queue_timeout`.
    pub fn try_new(
        max_concurrent: usize,
        max_queue: usize,
        queue_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if max_concurrent == 0 || max_concurrent > Semaphore::MAX_PERMITS {
            return Err(ConfigError::range("max_concurrent", "must be at least 1"));
        }
        Ok(Bulkhead {
            inner: Arc::new(Inner {
                name: "bulkhead".into(),
                semaphore: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                max_queue,
                queued: AtomicUsize::new(0),
                queue_timeout,
                sink: None,
            }),
        })
    }

    /// Name used in events (call before cloning).
    pub fn with_name(mut self, name: &str) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.name = name.into();
        }
        self
    }

    /// Report rejections here (call before cloning).
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.sink = Some(sink);
        }
        self
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.inner.max_concurrent - self.inner.semaphore.available_permits()
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Take a slot: at once if one is free, else wait in the queue if it has room.
    pub async fn acquire<E>(&self) -> Result<BulkheadPermit, Error<E>> {
        let inner = &*self.inner;
        if let Ok(p) = inner.semaphore.clone().try_acquire_owned() {
            return Ok(BulkheadPermit { _permit: p });
        }
        let prev = inner.queued.fetch_add(1, Ordering::AcqRel);
        let _slot = QueueSlot(&inner.queued);
        if prev >= inner.max_queue {
            return Err(self.reject(Error::BulkheadFull));
        }
        match tokio::time::timeout(inner.queue_timeout, inner.semaphore.clone().acquire_owned())
            .await
        {
            Ok(Ok(p)) => Ok(BulkheadPermit { _permit: p }),
            // The semaphore is never closed; treat it like a full bulkhead if it ever is.
            Ok(Err(_)) => Err(self.reject(Error::BulkheadFull)),
            Err(_) => Err(self.reject(Error::QueueTimeout(inner.queue_timeout))),
        }
    }

    fn reject<E>(&self, e: Error<E>) -> Error<E> {
        if let Some(sink) = &self.inner.sink {
            sink.on_event(&Event::BulkheadRejected {
                name: &self.inner.name,
            });
        }
        e
    }

    /// Run `f` inside the bulkhead.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _permit = self.acquire().await?;
        f().await.map_err(Error::Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test(start_paused = true)]
    async fn bulkhead_queues_up_to_its_bound_and_rejects_the_rest() {
        let b = Bulkhead::try_new(1, 1, Duration::from_secs(10)).unwrap();
        let (release, hold) = oneshot::channel::<()>();
        let b1 = b.clone();
        let first = tokio::spawn(async move {
            b1.call(|| async {
                let _ = hold.await;
                Ok::<_, ()>(1)
            })
            .await
        });
        tokio::task::yield_now().await;
        assert_eq!(b.in_flight(), 1);
        let b2 = b.clone();
        let queued = tokio::spawn(async move { b2.call(|| async { Ok::<_, ()>(2) }).await });
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 1);
        let third = b.call(|| async { Ok::<_, ()>(3) }).await;
        assert_eq!(third, Err(Error::BulkheadFull));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(queued.await.unwrap(), Ok(2));
        assert_eq!(b.queued(), 0);
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bulkhead_queue_times_out() {
        let b = Bulkhead::try_new(1, 4, Duration::from_millis(50)).unwrap();
        let _held = b.acquire::<()>().await.unwrap();
        let start = tokio::time::Instant::now();
        let r = b.call(|| async { Ok::<_, ()>(()) }).await;
        assert_eq!(r, Err(Error::QueueTimeout(Duration::from_millis(50))));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert_eq!(b.queued(), 0, "a timed-out waiter leaves the queue");
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        assert!(Bulkhead::try_new(0, 1, Duration::from_secs(1)).is_err());
    }
}
