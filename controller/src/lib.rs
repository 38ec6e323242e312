//! `faultline-controller`: the pieces `chaos run` and `chaos controller` are built from.
//!
//! - [`slo`]: the SLO engine. One [`slo::SloBackend`] trait with three implementations:
//!   the embedded scraper ([`slo::embedded`]), a Prometheus server
//!   ([`slo::prometheus`]) and the load generator's own measurements ([`slo::client`]).
//! - [`effect`]: the effect gate: whether each fault measurably bit, as asked.
//! - [`load`]: the load generator (open model at a constant arrival rate, HDR
//!   histograms, no coordinated omission); it fills [`slo::client`]'s measurements.
//! - [`run`]: the experiment runner of `chaos run` and its [`run::Environment`] seam.
//! - [`report`]: the run report model and its JSON, JUnit XML, HTML and terminal
//!   renderings, plus the exit-code mapping.
//! - [`schedule`]: `chaos controller --experiments DIR`: cron, concurrency policies,
//!   the target lock, run history and the controller's metrics.
//! - [`compose`]: `chaos run --env compose`: the docker compose stack found through the
//!   Docker API (targets, agent, Prometheus, published ports).
//! - [`operator`]: `chaos controller --kubernetes`: the `Experiment` CRD and its
//!   reconciler.

pub mod compose;
pub mod effect;
pub mod load;
pub mod operator;
pub mod report;
pub mod run;
pub mod schedule;
pub mod slo;
