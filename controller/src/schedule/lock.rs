//! The target lock: two experiments never hit the same target at once.
//!
//! An experiment locks the set of all its fault targets at once (all or nothing), so
//! two experiments waiting for each other's targets cannot deadlock. Runs of the same
//! experiment share its targets (the `Allow` concurrency policy asked for overlap), so
//! the lock counts holds per owner.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use faultline_spec::{Experiment, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What the second experiment does when a target it needs is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LockPolicy {
    /// Wait until the targets are free, then run.
    #[default]
    Wait,
    /// Do not run; the run is recorded with verdict `skipped`.
    Skip,
}

/// Shared table of held targets. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TargetLock {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// key -> (owner, number of guards the owner holds on it)
    held: Mutex<HashMap<String, (String, usize)>>,
    released: Notify,
}

/// Holds a set of targets until dropped.
#[derive(Debug)]
pub struct TargetGuard {
    inner: Arc<Inner>,
    keys: BTreeSet<String>,
}

/// The lock keys of an experiment: one per distinct fault target.
pub fn target_keys(experiment: &Experiment) -> BTreeSet<String> {
    experiment
        .spec
        .faults
        .iter()
        .map(|f| match &f.target {
            Target::Service(s) => format!("service/{}", s.name),
            Target::Pods(sel) => {
                let ns = sel
                    .namespace
                    .as_deref()
                    .or(experiment.namespace.as_deref())
                    .unwrap_or("default");
                let labels: Vec<String> =
                    sel.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("pods/{ns}/{}", labels.join(","))
            }
            Target::Pid(p) => format!("pid/{p}"),
            Target::Container(c) => format!("container/{c}"),
        })
        .collect()
}

impl TargetLock {
    /// A lock with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take every key for `owner` if none is held by another owner; otherwise the
    /// current holder of the first busy key.
    pub fn try_acquire(&self, owner: &str, keys: BTreeSet<String>) -> Result<TargetGuard, String> {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((holder, _)) = keys
            .iter()
            .filter_map(|k| held.get(k))
            .find(|(holder, _)| holder != owner)
        {
            return Err(holder.clone());
        }
        for k in &keys {
            held.entry(k.clone())
                .or_insert_with(|| (owner.to_owned(), 0))
                .1 += 1;
        }
        Ok(TargetGuard {
            inner: self.inner.clone(),
            keys,
        })
    }

    /// Wait until every key is free, then take them all.
    pub async fn acquire(&self, owner: &str, keys: BTreeSet<String>) -> TargetGuard {
        loop {
            // Register interest before checking, so a release between the check and the
            // wait is not missed.
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_acquire(owner, keys.clone()) {
                Ok(guard) => return guard,
                Err(_) => released.await,
            }
        }
    }

    /// Who holds `key`, if anyone.
    pub fn holder(&self, key: &str) -> Option<String> {
        let held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(key).map(|(owner, _)| owner.clone())
    }
}

impl Drop for TargetGuard {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some((_, count)) = held.get_mut(k) {
                *count -= 1;
                if *count == 0 {
                    held.remove(k);
                }
            }
        }
        drop(held);
        self.inner.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlapping_target_sets_exclude_each_other_and_disjoint_ones_do_not() {
        let lock = TargetLock::new();
        let a = lock
            .try_acquire("a", keys(&["service/payments", "service/orders"]))
            .unwrap();
        assert_eq!(
            lock.try_acquire("b", keys(&["service/orders"]))
                .unwrap_err(),
            "a"
        );
        let _c = lock.try_acquire("c", keys(&["service/gateway"])).unwrap();
        drop(a);
        assert!(lock.holder("service/orders").is_none());
        assert_eq!(lock.holder("service/gateway").as_deref(), Some("c"));
        lock.try_acquire("b", keys(&["service/orders"])).unwrap();
    }

    #[test]
    fn runs_of_the_same_experiment_share_targets_until_the_last_one_releases() {
        let lock = TargetLock::new();
        let first = lock.try_acquire("a", keys(&["service/payments"])).unwrap();
        let second = lock.try_acquire("a", keys(&["service/payments"])).unwrap();
        drop(first);
        assert_eq!(
            lock.try_acquire("b", keys(&["service/payments"]))
                .unwrap_err(),
            "a"
        );
        drop(second);
        lock.try_acquire("b", keys(&["service/payments"])).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_gets_the_targets_when_the_holder_releases() {
        let lock = TargetLock::new();
        let a = lock.try_acquire("a", keys(&["service/payments"])).unwrap();
        let l2 = lock.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.acquire("b", keys(&["service/payments"])).await;
            tokio::time::Instant::now()
        });
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "b must wait while a holds payments");
        let released_at = tokio::time::Instant::now();
        drop(a);
        let got_at = waiter.await.unwrap();
        assert_eq!(got_at, released_at);
    }
}
