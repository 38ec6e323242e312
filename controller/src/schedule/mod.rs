//! `chaos controller --experiments DIR`: runs scheduled experiments without a cluster.
//!
//! - [`runner`]: the [`ExperimentRunner`] seam the runner of `chaos run` implements.
//! - [`cron`]: fire times (the `cron` crate) on a [`Clock`] that tests drive with paused
//!   tokio time.
//! - [`lock`]: the target lock.
//! - [`history`]: the last N run records per experiment on disk.
//! - [`metrics`]: the controller's own metrics.
//! - [`process`]: a runner that re-executes `chaos run` as a child process.
//! - [`placed`]: the operator's in-process runner on targets it placed itself (pods
//!   with the agents on their nodes), and the environment behind it.
//! - [`source`]: watches the experiments directory and reloads changed files.
//! - [`serve`]: the `/metrics` endpoint.
//! - [`scheduler`]: ties them together under a concurrency policy.

pub mod cron;
pub mod history;
pub mod lock;
pub mod metrics;
pub mod placed;
pub mod process;
pub mod runner;
pub mod scheduler;
pub mod serve;
pub mod source;

use std::path::PathBuf;

pub use self::cron::{Clock, CronSchedule};
pub use history::{HistoryStore, RunRecord};
pub use lock::{LockPolicy, TargetLock};
pub use metrics::ControllerMetrics;
pub use placed::{InProcessRunner, PlacedEnvironment, PlacedOptions};
pub use process::{ProcessRunner, SourceDocs};
pub use runner::{
    ExperimentRunner, FaultObserver, PlacedTarget, PodActions, RunContext, RunOutcome, Verdict,
};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use source::DirSource;

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A cron expression did not parse.
    #[error("invalid cron expression {expr:?}: {message}")]
    Cron {
        /// The expression.
        expr: String,
        /// What is wrong with it.
        message: String,
    },
    /// An unknown IANA time zone.
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A history record could not be (de)serialized.
    #[error("run record: {0}")]
    Json(#[source] serde_json::Error),
}
