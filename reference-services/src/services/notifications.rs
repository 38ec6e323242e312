//! notifications: accepts notifications into a bounded queue (202), 503 when it is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use faultline_http::{Request, Response, Router};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Built, parse_body};
use crate::config::ServiceConfig;

/// `POST /notify` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The order the notification is about.
    pub order_id: u64,
    /// The message.
    pub message: String,
}

/// Builds the notifications routes and the queue's delivery worker.
pub fn build(config: &ServiceConfig) -> Built {
    let (tx, mut rx) = mpsc::channel::<NotifyRequest>(config.notify_queue);
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
            match tx.try_send(body) {
                Ok(()) => Response::json_with_status(202, &serde_json::json!({"queued": true})),
                Err(_) => Response::error(503, "notification queue is full"),
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
