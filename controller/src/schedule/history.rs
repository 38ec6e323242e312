//! Run history on disk: the last N run records per experiment.
//!
//! Layout: `<dir>/<experiment>/<started, RFC 3339 basic>-<seq>.json`. File names sort
//! in start order, so trimming keeps the lexically last N.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ScheduleError;
use super::runner::Verdict;

/// One entry of the run history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The experiment's name.
    pub experiment: String,
    /// When the run started (wall clock).
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Its verdict.
    pub verdict: Verdict,
    /// SLOs that were violated.
    pub failing_slos: Vec<String>,
    /// The runner's report file, if any.
    pub report_path: Option<PathBuf>,
    /// The runner's JSON report, if any.
    pub report: Option<serde_json::Value>,
}

/// Writes run records and keeps the last `keep` per experiment.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    dir: PathBuf,
    keep: usize,
}

impl HistoryStore {
    /// A store under `dir` keeping `keep` records per experiment (at least one).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    /// The directory holding `experiment`'s records.
    pub fn experiment_dir(&self, experiment: &str) -> PathBuf {
        self.dir.join(experiment)
    }

    /// Write `record` and delete the oldest records beyond the limit. Returns the path
    /// written.
    pub fn record(&self, record: &RunRecord) -> Result<PathBuf, ScheduleError> {
        let dir = self.experiment_dir(&record.experiment);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let stamp = record.started.format("%Y%m%dT%H%M%S%.3fZ");
        let mut seq = 0u32;
        let path = loop {
            let p = dir.join(format!("{stamp}-{seq:03}.json"));
            if !p.exists() {
                break p;
            }
            seq += 1;
        };
        let body = serde_json::to_vec_pretty(record).map_err(ScheduleError::Json)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        self.trim(&dir)?;
        Ok(path)
    }

    /// The stored records of `experiment`, oldest first.
    pub fn list(&self, experiment: &str) -> Result<Vec<RunRecord>, ScheduleError> {
        let dir = self.experiment_dir(experiment);
        let mut out = Vec::new();
        for path in Self::files(&dir)? {
            let body = std::fs::read(&path).map_err(|e| io(&path, e))?;
            out.push(serde_json::from_slice(&body).map_err(ScheduleError::Json)?);
        }
        Ok(out)
    }

    fn files(dir: &Path) -> Result<Vec<PathBuf>, ScheduleError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(dir, e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        Ok(files)
    }

    fn trim(&self, dir: &Path) -> Result<(), ScheduleError> {
        let files = Self::files(dir)?;
        if files.len() > self.keep {
            for old in &files[..files.len() - self.keep] {
                std::fs::remove_file(old).map_err(|e| io(old, e))?;
            }
        }
        Ok(())
    }
}

fn io(path: &Path, source: std::io::Error) -> ScheduleError {
    ScheduleError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(i: u32) -> RunRecord {
        let started =
            Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap() + chrono::Duration::days(i.into());
        RunRecord {
            experiment: "nightly".into(),
            started,
            finished: started + chrono::Duration::seconds(60),
            verdict: if i % 2 == 0 {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            failing_slos: if i % 2 == 0 {
                vec![]
            } else {
                vec!["gateway-p99".into()]
            },
            report_path: None,
            report: Some(serde_json::json!({"run": i})),
        }
    }

    #[test]
    fn history_keeps_only_the_last_n_runs_per_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::new(dir.path(), 3);
        for i in 0..5 {
            store.record(&record(i)).unwrap();
        }
        let kept = store.list("nightly").unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept, vec![record(2), record(3), record(4)]);
        assert_eq!(
            std::fs::read_dir(store.experiment_dir("nightly"))
                .unwrap()
                .count(),
            3
        );
    }

    #[test]
    fn two_runs_in_the_same_millisecond_do_not_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::new(dir.path(), 10);
        let a = store.record(&record(0)).unwrap();
        let b = store.record(&record(0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(store.list("nightly").unwrap().len(), 2);
    }
}
