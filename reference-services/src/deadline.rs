//! Deadline propagation: the caller's deadline travels with each request, so a service
//! downstream can tell that its caller has already given up.
//!
//! The gateway sends [`DEADLINE_HEADER`] (Unix time in milliseconds: now plus its budget)
//! on each call to orders, and orders forwards it unchanged to inventory, payments and
//! notifications. The value is absolute, not a relative timeout as gRPC's `grpc-timeout`
//! is: a request held on the way (a slow link, a proxy, a queue) arrives with that wait
//! already spent, which a relative timeout, restarted at each hop, would not see. It
//! assumes the hosts' clocks agree to a few milliseconds, which holds on one host (local
//! and compose modes) and between NTP-synchronised Kubernetes nodes.
//!
//! With the `deadline` policy a service refuses a request that arrives after its deadline
//! (504, counted `refused`), and orders bounds its calls by the time left. Without it the
//! request is served (counted `served`): work for a caller that has gone, such as a charge
//! for an order its customer was told had failed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_http::middleware::{Ctx, Middleware};
use faultline_http::{Request, Response};
use faultline_telemetry::{DeadlineAction, ServiceMetrics};

/// The request header carrying the caller's deadline, in Unix milliseconds.
pub const DEADLINE_HEADER: &str = "x-request-deadline";

/// A caller's deadline: an absolute time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    unix_ms: u64,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Deadline {
    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        let budget = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        Deadline {
            unix_ms: now_unix_ms().saturating_add(budget),
        }
    }

    /// Parses a header value: decimal Unix milliseconds.
    pub fn parse(value: &str) -> Option<Self> {
        if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.parse().ok().map(|unix_ms| Deadline { unix_ms })
    }

    /// The deadline in a request's [`DEADLINE_HEADER`] value, if it has a valid one.
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        value.and_then(Deadline::parse)
    }

    /// The time left, `None` once the deadline has passed.
    pub fn remaining(self) -> Option<Duration> {
        let left = self.unix_ms.saturating_sub(now_unix_ms());
        (left > 0).then(|| Duration::from_millis(left))
    }

    /// The header value that carries this deadline on.
    pub fn header_value(self) -> String {
        self.unix_ms.to_string()
    }
}

/// Middleware that checks each request's deadline on arrival: with `enforce`, a request
/// whose deadline has passed is answered 504 without running its handler; either way it
/// is counted in `deadline_exceeded_total`. A malformed deadline is a 400.
pub struct DeadlineGuard {
    /// Whether a late request is refused (the `deadline` policy) or served.
    pub enforce: bool,
    /// Where late requests are counted.
    pub metrics: ServiceMetrics,
}

impl Middleware for DeadlineGuard {
    fn before(&self, req: &mut Request<'_>, _ctx: &mut Ctx) -> Option<Response> {
        let value = req.header_str(DEADLINE_HEADER)?;
        let Some(deadline) = Deadline::parse(value) else {
            return Some(Response::error(
                400,
                &format!("{DEADLINE_HEADER} must be a Unix time in milliseconds"),
            ));
        };
        if deadline.remaining().is_some() {
            return None;
        }
        if !self.enforce {
            self.metrics.deadline_exceeded(DeadlineAction::Served);
            return None;
        }
        self.metrics.deadline_exceeded(DeadlineAction::Refused);
        let late = now_unix_ms().saturating_sub(deadline.unix_ms);
        Some(Response::error(
            504,
            &format!("the caller's deadline passed {late} ms before the request arrived"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_unix_milliseconds() {
        assert_eq!(
            Deadline::parse("1700000000123"),
            Some(Deadline {
                unix_ms: 1_700_000_000_123
            })
        );
        for bad in ["", "-5", "12.5", "1e9", " 12", "99999999999999999999999"] {
            assert_eq!(Deadline::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn time_left_runs_out() {
        let d = Deadline::after(Duration::from_secs(60));
        let left = d.remaining().unwrap();
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
        assert_eq!(Deadline::parse("1").unwrap().remaining(), None);
        assert_eq!(Deadline::parse(&d.header_value()), Some(d));
    }

    /// Serves `/work` (counting the handler's runs) behind the guard, and sends it one
    /// request per deadline value: the statuses, the runs and the exposition.
    async fn guarded(enforce: bool, deadlines: &[&str]) -> (Vec<u16>, usize, String) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let obs = crate::observe::Observability::new("payments");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let app = faultline_http::Router::new().post("/work", move |_: &Request<'_>| {
            counted.fetch_add(1, Ordering::Relaxed);
            Response::text("done")
        });
        let server = faultline_http::Server::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.serve(obs.instrument(app, enforce)));
        let client = faultline_http::Client::new(faultline_http::ClientConfig::default());
        let mut statuses = Vec::new();
        for d in deadlines {
            let resp = client
                .request(faultline_http::Method::Post, format!("http://{addr}/work"))
                .header(DEADLINE_HEADER, *d)
                .send()
                .await
                .unwrap();
            statuses.push(resp.status());
        }
        let text = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(text.body()).into_owned();
        (statuses, runs.load(Ordering::Relaxed), text)
    }

    fn count(text: &str, action: &str) -> String {
        let prefix =
            format!("deadline_exceeded_total{{service=\"payments\",action=\"{action}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .to_string()
    }

    #[tokio::test]
    async fn a_late_request_is_refused_with_the_policy_and_served_and_counted_without() {
        let future = Deadline::after(Duration::from_secs(60)).header_value();
        let cases = ["1", future.as_str(), "soon"];
        let (statuses, runs, text) = guarded(true, &cases).await;
        assert_eq!(statuses, [504, 200, 400]);
        assert_eq!(runs, 1, "only the request in time did its work");
        assert_eq!(count(&text, "refused"), "1");
        assert_eq!(count(&text, "served"), "0");

        let (statuses, runs, text) = guarded(false, &cases).await;
        assert_eq!(statuses, [200, 200, 400]);
        assert_eq!(runs, 2, "the late request did its work too");
        assert_eq!(count(&text, "refused"), "0");
        assert_eq!(count(&text, "served"), "1");
    }
}
