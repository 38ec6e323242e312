//! payments: idempotent charges; every new charge does real CPU work (iterated hashing, about
//! 0.5 ms by default) so CPU stress on the process shows in its latency. A new charge for
//! an order already charged under another key is accepted, as a processor that trusts its
//! keys would, and counted in `double_charges_total`: the business invariant idempotency
//! keys protect, readable by an SLO.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use faultline_http::{Request, Response, Router};
use serde::{Deserialize, Serialize};

use super::{Built, parse_body};
use crate::config::ServiceConfig;
use crate::observe::Observability;

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

/// Charges by idempotency key, and the orders charged.
#[derive(Default)]
struct Ledger {
    by_key: HashMap<String, Payment>,
    orders: HashSet<u64>,
}

/// Builds the payments routes.
pub fn build(config: &ServiceConfig, obs: &Observability) -> Built {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let rounds = config.payments_work_rounds;
    let metrics = obs.metrics.clone();
    metrics.double_charges(0);
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
        if let Some(p) = ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_key
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
        let mut guard = ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A concurrent duplicate may have won the race while we hashed: keep the first.
        if let Some(p) = guard.by_key.get(key) {
            return Response::json(p);
        }
        if !guard.orders.insert(payment.order_id) {
            metrics.double_charges(1);
        }
        guard.by_key.insert(key.to_string(), payment.clone());
        Response::json_with_status(201, &payment)
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

    #[tokio::test]
    async fn a_second_key_for_a_charged_order_is_a_double_charge_and_a_replay_is_not() {
        use crate::upstream::{IDEMPOTENCY_KEY, Upstream, UpstreamPolicy};
        let obs = Observability::new("payments");
        let config = ServiceConfig::from_lookup(crate::Service::Payments, |k| {
            (k == "FL_PAYMENTS_WORK_ROUNDS").then(|| "10".to_string())
        })
        .unwrap();
        let app = obs.instrument(build(&config, &obs).router, true);
        let server = faultline_http::Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(server.serve(app));
        let client = Upstream::new(
            crate::Service::Payments,
            vec![addr],
            UpstreamPolicy::NAIVE,
            Observability::new("orders").metrics,
        )
        .unwrap();
        let charge = |order: u64, key: &'static str| {
            let body = format!(r#"{{"order_id":{order},"amount_cents":1299}}"#);
            let client = &client;
            async move {
                client
                    .call(
                        faultline_http::Method::Post,
                        "/charge",
                        Some(body.into()),
                        &[(IDEMPOTENCY_KEY, key)],
                    )
                    .await
                    .unwrap()
                    .status()
            }
        };
        let doubles = || async {
            let metrics = client
                .call(faultline_http::Method::Get, "/metrics", None, &[])
                .await
                .unwrap();
            let text = String::from_utf8_lossy(metrics.body()).into_owned();
            text.lines()
                .find(|l| l.starts_with("double_charges_total{"))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        assert_eq!(
            doubles().await.as_deref(),
            Some("0"),
            "exposed from the start"
        );
        assert_eq!(charge(1, "order-1").await, 201);
        assert_eq!(
            charge(1, "order-1").await,
            200,
            "a replay answers the stored charge"
        );
        assert_eq!(charge(2, "order-2").await, 201);
        assert_eq!(doubles().await.as_deref(), Some("0"));
        assert_eq!(charge(1, "order-1-again").await, 201);
        assert_eq!(doubles().await.as_deref(), Some("1"));
    }
}
