//! Hot reload: polls the experiments directory and sends the complete experiment set
//! whenever a file was added, changed or removed.
//!
//! Polling (every `interval`, 2 s by default) is used instead of inotify: it works on
//! every filesystem, including ConfigMap volumes whose files are swapped by symlink,
//! and it runs on tokio time so tests can drive it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faultline_spec::Experiment;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process::SourceDocs;

/// Parses one file's text into experiments, or says why it cannot.
pub type ParseFn = Arc<dyn Fn(&str, &Path) -> Result<Vec<Experiment>, String> + Send + Sync>;

/// Watches a directory of experiment files (`*.yaml`, `*.yml`).
pub struct DirSource {
    dir: PathBuf,
    interval: Duration,
    parse: ParseFn,
    /// Per file: its content, and what it parsed to last time it parsed.
    files: BTreeMap<PathBuf, (Vec<u8>, Vec<Experiment>)>,
    docs: SourceDocs,
}

/// Each YAML document of `text` by its `metadata.name`, re-serialized on its own.
fn documents_by_name(text: &str) -> Vec<(String, String)> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter_map(|v| {
            let name = v.get("metadata")?.get("name")?.as_str()?.to_owned();
            Some((name, serde_yaml::to_string(&v).ok()?))
        })
        .collect()
}

impl DirSource {
    /// Watch `dir`, parsing each file with `parse`.
    pub fn new(dir: impl Into<PathBuf>, interval: Duration, parse: ParseFn) -> Self {
        Self {
            dir: dir.into(),
            interval,
            parse,
            files: BTreeMap::new(),
            docs: SourceDocs::default(),
        }
    }

    /// Watch `dir`, parsing with `faultline_spec::parse_str` (the validator of
    /// `chaos validate`; the host CPU check is off because runs may target other hosts).
    pub fn with_spec_parser(dir: impl Into<PathBuf>, interval: Duration) -> Self {
        let parse: ParseFn = Arc::new(|text: &str, path: &Path| {
            let opts = faultline_spec::ValidateOptions::default();
            faultline_spec::parse_str(text, &path.display().to_string(), &opts)
                .map_err(|d| d.to_string())
        });
        Self::new(dir, interval, parse)
    }

    /// The document of each loaded experiment, kept current by [`DirSource::poll`].
    pub fn documents(&self) -> SourceDocs {
        self.docs.clone()
    }

    /// Re-read the directory. Returns the complete experiment set when anything
    /// changed, `None` otherwise. A file that no longer parses keeps its previous
    /// experiments (the error is logged), so a bad edit does not unschedule a nightly
    /// run; a deleted file removes its experiments.
    pub fn poll(&mut self) -> std::io::Result<Option<Vec<Experiment>>> {
        let mut seen = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
            if is_yaml && path.is_file() {
                let bytes = std::fs::File::open(&path).and_then(faultline_spec::read_bounded)?;
                seen.insert(path.clone(), bytes);
            }
        }
        let mut changed = seen.len() != self.files.len();
        let mut next = BTreeMap::new();
        for (path, bytes) in seen {
            let previous = self.files.remove(&path);
            if let Some((old_bytes, old_exps)) = &previous
                && *old_bytes == bytes
            {
                next.insert(path, (bytes, old_exps.clone()));
                continue;
            }
            changed = true;
            let name = path.display().to_string();
            let parsed = match faultline_spec::source_text(bytes.clone(), &name) {
                Ok(text) => (self.parse)(&text, &path),
                Err(diags) => Err(diags.to_string()),
            };
            let exps = match parsed {
                Ok(exps) => {
                    tracing::info!(file = %path.display(), count = exps.len(), "loaded");
                    let text = String::from_utf8_lossy(&bytes);
                    let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
                    docs.extend(documents_by_name(&text));
                    exps
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), "not reloaded, keeping the previous version: {e}");
                    previous.map(|(_, e)| e).unwrap_or_default()
                }
            };
            next.insert(path, (bytes, exps));
        }
        changed |= !self.files.is_empty();
        self.files = next;
        if !changed {
            return Ok(None);
        }
        let mut names = std::collections::HashSet::new();
        let mut all = Vec::new();
        for (path, (_, exps)) in &self.files {
            for e in exps {
                if names.insert(e.name.clone()) {
                    all.push(e.clone());
                } else {
                    tracing::error!(file = %path.display(), experiment = %e.name, "duplicate experiment name ignored");
                }
            }
        }
        Ok(Some(all))
    }

    /// Poll every `interval` and send each changed set until `cancel` fires or the
    /// receiver is gone.
    pub async fn run(mut self, tx: mpsc::Sender<Vec<Experiment>>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.poll() {
                Ok(Some(set)) => {
                    if tx.send(set).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), "cannot read experiments: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIGHTLY: &str = "apiVersion: faultline.dev/v1alpha1
kind: Experiment
metadata: {name: nightly}
spec:
  duration: 60s
  schedule: \"0 0 2 * * *\"
  faults:
    - {name: cpu, target: {service: payments}, after: 10s, duration: 30s, cpu: {load: 50%}}
";

    #[test]
    fn added_changed_broken_and_deleted_files_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = DirSource::with_spec_parser(dir.path(), Duration::from_secs(2));
        assert_eq!(source.poll().unwrap(), None, "empty dir, nothing changed");
        let file = dir.path().join("nightly.yaml");
        std::fs::write(&file, NIGHTLY).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an experiment").unwrap();
        let set = source.poll().unwrap().expect("a new file is a change");
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].spec.schedule.as_ref().unwrap().cron, "0 0 2 * * *");
        assert!(source.documents().lock().unwrap()["nightly"].contains("0 0 2 * * *"));
        assert_eq!(source.poll().unwrap(), None, "unchanged");

        std::fs::write(&file, NIGHTLY.replace("0 0 2", "0 30 3")).unwrap();
        let set = source.poll().unwrap().expect("an edit is a change");
        assert_eq!(set[0].spec.schedule.as_ref().unwrap().cron, "0 30 3 * * *");

        // A broken edit keeps the last good version scheduled.
        std::fs::write(&file, NIGHTLY.replace("duration: 60s", "duration: soon")).unwrap();
        let set = source.poll().unwrap().expect("content changed");
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].spec.schedule.as_ref().unwrap().cron, "0 30 3 * * *");

        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            source.poll().unwrap(),
            Some(vec![]),
            "deleting the file unschedules it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watcher_sends_each_change_on_its_polling_interval() {
        let dir = tempfile::tempdir().unwrap();
        let source = DirSource::with_spec_parser(dir.path(), Duration::from_secs(2));
        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, cancel.clone()));
        std::fs::write(dir.path().join("a.yaml"), NIGHTLY).unwrap();
        let set = rx.recv().await.unwrap();
        assert_eq!(set[0].name, "nightly");
        cancel.cancel();
        task.await.unwrap();
    }
}
