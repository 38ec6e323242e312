//! tower `Layer`s for the breaker, rate limiter, bulkhead and timeout, so hyper, axum and tonic
//! users can adopt the policies. Errors become [`Error<S::Error>`](crate::Error). Retry is left
//! to `tower::retry` with a budget from this crate's policy if needed, since a tower retry needs
//! a cloneable request, which only the application can provide.
//!
//! The futures are boxed: one allocation per request on this path (the plain `call` API has
//! none), the price of naming the future type without hand-written pin projections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{CircuitBreaker, Outcome};
use crate::bulkhead::Bulkhead;
use crate::error::Error;
use crate::ratelimit::RateLimiter;
use crate::timeout::Timeout;

/// A boxed, sendable response future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Classifies a service's result for the breaker.
pub type Classifier<R, E> = Arc<dyn Fn(&Result<R, E>) -> Outcome + Send + Sync>;

/// Wraps a service in a [`CircuitBreaker`].
pub struct BreakerLayer<R, E> {
    breaker: CircuitBreaker,
    classify: Classifier<R, E>,
}

impl<R, E> Clone for BreakerLayer<R, E> {
    fn clone(&self) -> Self {
        BreakerLayer {
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<R, E> BreakerLayer<R, E> {
    /// Every `Err` of the inner service is a failure.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self::with_classifier(
            breaker,
            Arc::new(|r: &Result<R, E>| {
                if r.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                }
            }),
        )
    }
    /// `classify` decides (e.g. a 5xx response is a failure).
    pub fn with_classifier(breaker: CircuitBreaker, classify: Classifier<R, E>) -> Self {
        BreakerLayer { breaker, classify }
    }
}

impl<S, R, E> Layer<S> for BreakerLayer<R, E> {
    type Service = BreakerService<S, R, E>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
pub struct BreakerService<S, R, E> {
    inner: S,
    breaker: CircuitBreaker,
    classify: Classifier<R, E>,
}

impl<S: Clone, R, E> Clone for BreakerService<S, R, E> {
    fn clone(&self) -> Self {
        BreakerService {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, Req> Service<Req> for BreakerService<S, S::Response, S::Error>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = BoxFuture<Result<S::Response, Error<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Ask the breaker before calling the inner service, so a rejected request never starts.
        let permit = match self.breaker.try_acquire_owned() {
            Ok(p) => p,
            Err(_) => return Box::pin(async { Err(Error::BreakerOpen) }),
        };
        let classify = self.classify.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            permit.record(classify(&r));
            r.map_err(Error::Inner)
        })
    }
}

/// A layer that hands a clone of one policy `P` to every service it makes. The rate limiter,
/// bulkhead and timeout layers are this type; what each does is its [`PolicyService`]'s
/// `Service` impl.
#[derive(Clone, Debug)]
pub struct PolicyLayer<P> {
    policy: P,
}

impl<P> PolicyLayer<P> {
    /// Share `policy` between all services the layer makes.
    pub fn new(policy: P) -> Self {
        PolicyLayer { policy }
    }
}

impl<S, P: Clone> Layer<S> for PolicyLayer<P> {
    type Service = PolicyService<S, P>;
    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by a [`PolicyLayer`]: the inner service behind policy `P`.
#[derive(Clone, Debug)]
pub struct PolicyService<S, P> {
    inner: S,
    policy: P,
}

/// Rejects requests over a rate with [`Error::RateLimited`].
pub type RateLimitLayer = PolicyLayer<Arc<RateLimiter>>;

/// The service made by [`RateLimitLayer`].
pub type RateLimitService<S> = PolicyService<S, Arc<RateLimiter>>;

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = BoxFuture<Result<S::Response, Error<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.policy.check() {
            Err(e) => Box::pin(async move {
                Err(Error::RateLimited {
                    retry_after: e.retry_after,
                })
            }),
            Ok(()) => {
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Error::Inner) })
            }
        }
    }
}

/// Bounds concurrency with a [`Bulkhead`].
pub type BulkheadLayer = PolicyLayer<Bulkhead>;

/// The service made by [`BulkheadLayer`].
pub type BulkheadService<S> = PolicyService<S, Bulkhead>;

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = BoxFuture<Result<S::Response, Error<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let bulkhead = self.policy.clone();
        // The readied service goes into the future; a fresh clone takes its place (tower's
        // usual pattern for services that call the inner one later).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _permit = bulkhead.acquire().await?;
            inner.call(req).await.map_err(Error::Inner)
        })
    }
}

/// Fails requests that take longer than a [`Timeout`] with [`Error::Timeout`].
pub type TimeoutLayer = PolicyLayer<Timeout>;

/// The service made by [`TimeoutLayer`].
pub type TimeoutService<S> = PolicyService<S, Timeout>;

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = BoxFuture<Result<S::Response, Error<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let timeout = self.policy.clone();
        Box::pin(async move { timeout.call(|| fut).await })
    }
}
