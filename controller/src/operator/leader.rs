//! Leader election through a `coordination.k8s.io/v1` Lease, so several controller
//! replicas are safe: only the holder reconciles.
//!
//! The holder renews the lease every `duration / 3`. Another replica takes it over once
//! `renewTime + leaseDurationSeconds` has passed. Every write is a `replace` carrying
//! the `resourceVersion` that was read, so two replicas racing for an expired lease
//! cannot both win: the loser gets 409 Conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::OperatorError;
use crate::schedule::Clock;

/// Competes for one Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    clock: Clock,
}

fn micro(clock: &Clock) -> MicroTime {
    let ms = clock.now().timestamp_millis();
    MicroTime(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// Compete for Lease `name` in `namespace` as `identity` (the pod name).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        clock: Clock,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            clock,
        }
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(micro(&self.clock)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Take or renew the lease. `Ok(true)` while this replica is the leader.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, OperatorError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(OperatorError::Kube)?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Some(micro(&self.clock)), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(OperatorError::Kube(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let new_spec = if holder == self.identity {
            self.spec(
                spec.acquire_time.clone(),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            let ttl_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
            let renewed_ms = spec
                .renew_time
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0);
            let now_ms = self.clock.now().timestamp_millis();
            if !holder.is_empty() && now_ms < renewed_ms + ttl_ms {
                return Ok(false);
            }
            self.spec(
                Some(micro(&self.clock)),
                spec.lease_transitions.unwrap_or(0) + 1,
            )
        };
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(OperatorError::Kube(e)),
        }
    }

    /// Compete until `cancel` fires, publishing leadership on `leading`. API errors
    /// count as "not leading" (a replica that cannot renew must stop acting).
    pub async fn run(self, leading: watch::Sender<bool>, cancel: CancellationToken) {
        let period = self.duration / 3;
        loop {
            let lead = match self.try_acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("leader election: {e}");
                    false
                }
            };
            leading.send_if_modified(|v| std::mem::replace(v, lead) != lead);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};

    /// `METHOD path` and body of each request.
    type Log = Arc<Mutex<Vec<(String, Value)>>>;

    /// A fake API server holding one Lease (or none).
    fn fake(lease: Option<Value>) -> (Client, Log) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        tokio::spawn(async move {
            let mut stored = lease;
            while let Some((req, send)) = handle.next_request().await {
                let line = format!("{} {}", req.method(), req.uri().path());
                let method = req.method().clone();
                let bytes = req.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                log2.lock().unwrap().push((line, body.clone()));
                let (code, resp) = match (method.as_str(), &stored) {
                    ("GET", None) => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                    ("GET", Some(l)) => (200, l.clone()),
                    ("POST", _) | ("PUT", _) => {
                        stored = Some(body.clone());
                        (200, body)
                    }
                    _ => (405, Value::Null),
                };
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&resp).unwrap()))
                        .unwrap(),
                );
            }
        });
        (Client::new(service, "faultline-system"), log)
    }

    fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "faultline-controller", "namespace": "faultline-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": transitions}
        })
    }

    fn elector(client: Client) -> LeaderElector {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        LeaderElector::new(
            client,
            "faultline-system",
            "faultline-controller",
            "controller-b",
            Duration::from_secs(15),
            Clock::anchored(now),
        )
    }

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/faultline-system/leases";

    #[tokio::test(start_paused = true)]
    async fn first_replica_creates_the_lease_and_leads() {
        let (client, log) = fake(None);
        assert!(elector(client).try_acquire_or_renew().await.unwrap());
        let log = log.lock().unwrap();
        assert_eq!(log[0].0, format!("GET {PATH}/faultline-controller"));
        assert_eq!(log[1].0, format!("POST {PATH}"));
        assert_eq!(log[1].1["spec"]["holderIdentity"], "controller-b");
        assert_eq!(log[1].1["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_lease_held_by_another_replica_is_left_alone() {
        let (client, log) = fake(Some(lease(
            "controller-a",
            "2026-03-01T11:59:55.000000Z",
            0,
        )));
        assert!(!elector(client).try_acquire_or_renew().await.unwrap());
        assert_eq!(log.lock().unwrap().len(), 1, "only the GET; no write");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_is_taken_over_with_its_resource_version() {
        let (client, log) = fake(Some(lease(
            "controller-a",
            "2026-03-01T11:59:40.000000Z",
            3,
        )));
        assert!(elector(client).try_acquire_or_renew().await.unwrap());
        let log = log.lock().unwrap();
        assert_eq!(log[1].0, format!("PUT {PATH}/faultline-controller"));
        let body = &log[1].1;
        assert_eq!(
            body["metadata"]["resourceVersion"], "7",
            "optimistic concurrency"
        );
        assert_eq!(body["spec"]["holderIdentity"], "controller-b");
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        assert_eq!(body["spec"]["renewTime"], "2026-03-01T12:00:00.000000Z");
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_renews_its_own_lease() {
        let (client, log) = fake(Some(lease(
            "controller-b",
            "2026-03-01T11:59:55.000000Z",
            2,
        )));
        let e = elector(client);
        assert!(e.try_acquire_or_renew().await.unwrap());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(e.try_acquire_or_renew().await.unwrap());
        let log = log.lock().unwrap();
        assert_eq!(log[3].1["spec"]["renewTime"], "2026-03-01T12:00:05.000000Z");
        assert_eq!(
            log[3].1["spec"]["leaseTransitions"], 2,
            "a renewal is not a transition"
        );
    }
}
