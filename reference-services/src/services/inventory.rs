//! inventory: stock levels and idempotent reservations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use faultline_http::{Request, Response, Router};
use serde::{Deserialize, Serialize};

use super::{Built, parse_body};
use crate::config::ServiceConfig;

/// `POST /reserve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// The SKU.
    pub sku: String,
    /// How many units.
    pub qty: u64,
}

/// A reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    /// The idempotency key it was made with.
    pub key: String,
    /// The SKU.
    pub sku: String,
    /// Units reserved.
    pub qty: u64,
    /// Units left after it.
    pub remaining: u64,
}

#[derive(Default)]
struct State {
    stock: HashMap<String, u64>,
    reservations: HashMap<String, Reservation>,
}

/// Builds the inventory routes over the configured initial stock.
pub fn build(config: &ServiceConfig) -> Built {
    let state = Arc::new(Mutex::new(State {
        stock: config.stock.clone().into_iter().collect(),
        reservations: HashMap::new(),
    }));
    let reserve_state = Arc::clone(&state);
    let router = Router::new()
        .post("/reserve", move |req: &Request<'_>| {
            reserve(&reserve_state, req)
        })
        .get("/stock/{sku}", move |req: &Request<'_>| {
            let sku = req.param("sku").unwrap_or("");
            let guard = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.stock.get(sku) {
                Some(n) => Response::json(&serde_json::json!({"sku": sku, "available": n})),
                None => Response::error(404, &format!("unknown SKU {sku:?}")),
            }
        });
    Built {
        router,
        background: Vec::new(),
    }
}

fn reserve(state: &Mutex<State>, req: &Request<'_>) -> Response {
    let Some(key) = req
        .header_str(crate::upstream::IDEMPOTENCY_KEY)
        .filter(|k| !k.is_empty())
    else {
        return Response::error(400, "missing Idempotency-Key header");
    };
    let body: ReserveRequest = match parse_body(req.body()) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.qty == 0 {
        return Response::error(422, "qty must be at least 1");
    }
    let mut guard = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(existing) = guard.reservations.get(key) {
        // A retried reservation: same answer, no second deduction.
        return Response::json(existing);
    }
    let Some(available) = guard.stock.get_mut(&body.sku) else {
        return Response::error(404, &format!("unknown SKU {:?}", body.sku));
    };
    if *available < body.qty {
        return Response::error(409, &format!("insufficient stock for {:?}", body.sku));
    }
    *available -= body.qty;
    let reservation = Reservation {
        key: key.to_string(),
        sku: body.sku,
        qty: body.qty,
        remaining: *available,
    };
    guard
        .reservations
        .insert(key.to_string(), reservation.clone());
    Response::json_with_status(201, &reservation)
}
