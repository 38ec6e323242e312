//! notifications: accepts notifications into a bounded queue (202), 503 when it is full;
//! without the `notify-queue-bound` policy the queue grows without limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use faultline_http::{Request, Response, Router};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Built, parse_body};
use crate::config::{Policy, ServiceConfig};

/// `POST /notify` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The order the notification is about.
    pub order_id: u64,
    /// The message.
    pub message: String,
}

/// The sending side of the delivery queue.
enum Queue {
    Bounded(mpsc::Sender<NotifyRequest>),
    Unbounded(mpsc::UnboundedSender<NotifyRequest>),
}

impl Queue {
    /// Queues `n`; false when the queue is full.
    fn offer(&self, n: NotifyRequest) -> bool {
        match self {
            Queue::Bounded(tx) => tx.try_send(n).is_ok(),
            Queue::Unbounded(tx) => tx.send(n).is_ok(),
        }
    }
}

/// The receiving side of the delivery queue.
enum Inbox {
    Bounded(mpsc::Receiver<NotifyRequest>),
    Unbounded(mpsc::UnboundedReceiver<NotifyRequest>),
}

impl Inbox {
    async fn recv(&mut self) -> Option<NotifyRequest> {
        match self {
            Inbox::Bounded(rx) => rx.recv().await,
            Inbox::Unbounded(rx) => rx.recv().await,
        }
    }
}

/// Builds the notifications routes and the queue's delivery worker.
pub fn build(config: &ServiceConfig) -> Built {
    let (tx, mut rx) = if config.disabled.keeps(Policy::NotifyQueueBound) {
        let (tx, rx) = mpsc::channel(config.notify_queue);
        (Queue::Bounded(tx), Inbox::Bounded(rx))
    } else {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue::Unbounded(tx), Inbox::Unbounded(rx))
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let worker_delivered = Arc::clone(&delivered);
    let worker = async move {
        while let Some(n) = rx.recv().await {
            tracing::debug!(order_id = n.order_id, message = %n.message, "notification delivered");
            worker_delivered.fetch_add(1, Ordering::Relaxed);
        }
    };
    let router = Router::new()
        .post("/notify", move |req: &Request<'_>| {
            let body: NotifyRequest = match parse_body(req.body()) {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            if tx.offer(body) {
                Response::json_with_status(202, &serde_json::json!({"queued": true}))
            } else {
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
