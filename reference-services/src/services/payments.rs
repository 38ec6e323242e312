//! payments: idempotent charges; every new charge does real CPU work (iterated hashing, about
//! 0.5 ms by default) so CPU stress on the process shows in its latency.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use faultline_http::{Request, Response, Router};
use serde::{Deserialize, Serialize};

use super::{Built, parse_body};
use crate::config::ServiceConfig;

/// `POST /charge` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    /// The order being paid.
    pub order_id: u64,
    /// Amount in cents.
    pub amount_cents: u64,
}

/// A recorded payment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    /// Payment id (derived from the work's digest).
    pub id: String,
    /// The order.
    pub order_id: u64,
    /// Amount in cents.
    pub amount_cents: u64,
}

/// The CPU work of one charge: `rounds` chained SipHash rounds over the request.
pub fn sign(order_id: u64, amount_cents: u64, rounds: u32) -> u64 {
    let mut digest = order_id ^ amount_cents.rotate_left(32);
    for i in 0..rounds {
        let mut h = DefaultHasher::new();
        (digest, i, order_id).hash(&mut h);
        digest = h.finish();
    }
    digest
}

/// Builds the payments routes.
pub fn build(config: &ServiceConfig) -> Built {
    let payments: Arc<Mutex<HashMap<String, Payment>>> = Arc::default();
    let rounds = config.payments_work_rounds;
    let router = Router::new().post("/charge", move |req: &Request<'_>| {
        let Some(key) = req
            .header_str(crate::upstream::IDEMPOTENCY_KEY)
            .filter(|k| !k.is_empty())
        else {
            return Response::error(400, "missing Idempotency-Key header");
        };
        let body: ChargeRequest = match parse_body(req.body()) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if let Some(p) = payments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
        {
            return Response::json(p);
        }
        let digest = sign(body.order_id, body.amount_cents, rounds);
        let payment = Payment {
            id: format!("pay-{digest:016x}"),
            order_id: body.order_id,
            amount_cents: body.amount_cents,
        };
        let mut guard = payments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A concurrent duplicate may have won the race while we hashed: keep the first.
        let stored = guard.entry(key.to_string()).or_insert(payment).clone();
        Response::json_with_status(201, &stored)
    });
    Built {
        router,
        background: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn signing_is_deterministic_and_depends_on_every_input() {
        assert_eq!(sign(7, 1299, 100), sign(7, 1299, 100));
        assert_ne!(sign(7, 1299, 100), sign(8, 1299, 100));
        assert_ne!(sign(7, 1299, 100), sign(7, 1300, 100));
        assert_ne!(sign(7, 1299, 100), sign(7, 1299, 101));
    }

    #[test]
    fn a_charge_burns_real_cpu_time() {
        use nix::time::{ClockId, clock_gettime};
        let cpu = || Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap());
        let rounds = crate::config::DEFAULT_PAYMENTS_WORK_ROUNDS;
        let start = cpu();
        for i in 0..20 {
            std::hint::black_box(sign(i, 1299, rounds));
        }
        let per_charge = (cpu() - start) / 20;
        // Thread CPU time, not wall time: other load on the machine cannot inflate it. The
        // default aims at ~0.5 ms in release builds; any build spends at least 0.1 ms.
        assert!(per_charge >= Duration::from_micros(100), "{per_charge:?}");
    }
}
