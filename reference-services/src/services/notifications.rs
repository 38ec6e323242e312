//! notifications: accepts notifications into a bounded queue (202), 503 when it is full,
//! and hands them to the outbound provider at the rate it accepts (`FL_NOTIFY_SEND_RATE`).
//! Without the `notify-queue-bound` policy the queue grows without limit, and with it how
//! long a customer waits for the message (`notification_delivery_lag_seconds`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faultline_http::{Request, Response, Router};
use faultline_telemetry::ServiceMetrics;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{Built, parse_body};
use crate::config::{Policy, ServiceConfig};
use crate::observe::Observability;

/// `POST /notify` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The order the notification is about.
    pub order_id: u64,
    /// The message.
    pub message: String,
}

/// A notification waiting for the provider, and when it was accepted.
struct Queued {
    request: NotifyRequest,
    at: Instant,
}

/// The sending side of the delivery queue.
enum Queue {
    Bounded(mpsc::Sender<Queued>),
    Unbounded(mpsc::UnboundedSender<Queued>),
}

impl Queue {
    /// Queues `n`; false when the queue is full.
    fn offer(&self, n: Queued) -> bool {
        match self {
            Queue::Bounded(tx) => tx.try_send(n).is_ok(),
            Queue::Unbounded(tx) => tx.send(n).is_ok(),
        }
    }
}

/// The receiving side of the delivery queue.
enum Inbox {
    Bounded(mpsc::Receiver<Queued>),
    Unbounded(mpsc::UnboundedReceiver<Queued>),
}

impl Inbox {
    async fn recv(&mut self) -> Option<Queued> {
        match self {
            Inbox::Bounded(rx) => rx.recv().await,
            Inbox::Unbounded(rx) => rx.recv().await,
        }
    }

    fn try_recv(&mut self) -> Option<Queued> {
        match self {
            Inbox::Bounded(rx) => rx.try_recv().ok(),
            Inbox::Unbounded(rx) => rx.try_recv().ok(),
        }
    }
}

/// How often the delivery worker hands a batch to the provider: coarse enough for
/// tokio's millisecond timer, fine enough that a batch is a handful of notifications.
const SEND_TICK: Duration = Duration::from_millis(10);

/// Hands queued notifications to the outbound provider, at most `send_rate` per second
/// (providers cap a sender's rate), until the queue closes.
async fn deliver(
    mut inbox: Inbox,
    send_rate: u32,
    delivered: Arc<AtomicU64>,
    metrics: ServiceMetrics,
) {
    let per_tick = ((f64::from(send_rate) * SEND_TICK.as_secs_f64()).round() as usize).max(1);
    let mut tick = tokio::time::interval(SEND_TICK);
    // A worker that was idle or late gets no credit: the provider's cap holds per tick.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(first) = inbox.recv().await else {
            return;
        };
        let mut next = Some(first);
        for _ in 0..per_tick {
            let Some(n) = next.take().or_else(|| inbox.try_recv()) else {
                break;
            };
            tracing::debug!(order_id = n.request.order_id, message = %n.request.message, "notification delivered");
            metrics.notification_delivered(n.at.elapsed());
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Builds the notifications routes and the queue's delivery worker.
pub fn build(config: &ServiceConfig, obs: &Observability) -> Built {
    let (tx, rx) = if config.disabled.keeps(Policy::NotifyQueueBound) {
        let (tx, rx) = mpsc::channel(config.notify_queue);
        (Queue::Bounded(tx), Inbox::Bounded(rx))
    } else {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue::Unbounded(tx), Inbox::Unbounded(rx))
    };
    let metrics = obs.metrics.clone();
    metrics.declare_notification_queue();
    let delivered = Arc::new(AtomicU64::new(0));
    let worker = deliver(
        rx,
        config.notify_send_rate,
        Arc::clone(&delivered),
        metrics.clone(),
    );
    let router = Router::new()
        .post("/notify", move |req: &Request<'_>| {
            let request: NotifyRequest = match parse_body(req.body()) {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            // Counted before it is offered, so the worker never takes the gauge below 0.
            metrics.notification_queued();
            if tx.offer(Queued {
                request,
                at: Instant::now(),
            }) {
                Response::json_with_status(202, &serde_json::json!({"queued": true}))
            } else {
                metrics.notification_refused();
                Response::error(503, "notification queue is full")
            }
        })
        .get("/stats", move |_: &Request<'_>| {
            Response::json(&serde_json::json!({"delivered": delivered.load(Ordering::Relaxed)}))
        });
    Built {
        router,
        background: vec![Box::pin(worker)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(order_id: u64) -> Queued {
        Queued {
            request: NotifyRequest {
                order_id,
                message: "paid".into(),
            },
            at: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_provider_gets_at_most_its_rate_and_a_full_queue_refuses() {
        let (tx, rx) = mpsc::channel(8);
        let queue = Queue::Bounded(tx);
        let accepted = (0..20).filter(|i| queue.offer(queued(*i))).count();
        assert_eq!(accepted, 8, "the bound holds");
        let delivered = Arc::new(AtomicU64::new(0));
        let metrics = Observability::new("notifications").metrics;
        // 200/s is 2 per 10 ms tick: ticks at 0, 10 and 20 ms hand on 6 of the 8.
        let worker = tokio::spawn(deliver(
            Inbox::Bounded(rx),
            200,
            Arc::clone(&delivered),
            metrics,
        ));
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(delivered.load(Ordering::Relaxed), 6);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(delivered.load(Ordering::Relaxed), 8);
        drop(queue);
        worker.await.unwrap();
    }

    #[test]
    fn without_the_bound_nothing_is_refused() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let queue = Queue::Unbounded(tx);
        assert!((0..5000).all(|i| queue.offer(queued(i))));
    }
}
