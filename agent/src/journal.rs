//! The crash journal in `--state-dir`.
//!
//! Proxies and stress workers die with the agent, but a stopped process stays stopped
//! when the agent is SIGKILLed. So before any fault is applied, a record saying how to
//! undo it is appended to `journal.log` and fsynced; a revert appends a matching record.
//! When the agent starts, every apply without a revert is a leftover and is reverted.
//!
//! Each apply also carries its lease's deadline, and each renewal appends the new one, so
//! the watchdog ([`crate::watchdog`]) that outlives a dead agent reverts every leftover at
//! its deadline, not at the next start. Deadlines are `CLOCK_MONOTONIC` milliseconds,
//! which every process on the host shares and no clock change moves; after a reboot they
//! mean nothing, and a starting agent reverts every leftover at once anyway.
//!
//! Each record is one line: the CRC-32 of the JSON in hex, a space, the JSON. A torn
//! last line (the agent died mid-write) or a line whose checksum does not match is
//! reported and skipped; it never stops the agent from starting.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use faultline_spec::wire::{FaultId, FaultRequest};
use serde::{Deserialize, Serialize};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "journal.log";

/// Journal failures. Reading problems are not errors: they are reported in [`Replay`].
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory or journal file could not be created, written or synced.
    #[error("journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How to undo a fault after the agent died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RevertRecord {
    /// The fault lives in agent threads or tasks and died with the agent: nothing to do.
    DiesWithAgent,
    /// A process was stopped: continue it, but only if it is still the same process.
    /// `start_time` is field 22 of `/proc/PID/stat` (clock ticks since boot), which
    /// differs for a recycled PID.
    ContinueProcess {
        /// The stopped PID.
        pid: u32,
        /// Its start time when it was stopped.
        start_time: u64,
    },
    /// An nftables table in a network namespace: delete it. Its rules have stopped
    /// matching by themselves when the lease sets' elements timed out.
    NftTable {
        /// The namespace, checked by identity before anything is deleted.
        netns: crate::netns::NetnsRef,
        /// The table (family `inet`).
        table: String,
    },
    /// An nft redirect table (family `ip`) of a redirect proxy: delete it.
    RedirectTable {
        /// The namespace, checked by identity before anything is deleted.
        netns: crate::netns::NetnsRef,
        /// The table.
        table: String,
    },
    /// tc qdiscs and an ifb device of a bandwidth fault: remove them.
    TcShaping {
        /// The namespace, checked by identity before anything is removed.
        netns: crate::netns::NetnsRef,
        /// What was changed.
        shaping: crate::tc::Shaping,
    },
    /// A paused Docker container: unpause it.
    UnpauseContainer {
        /// Container id.
        container_id: String,
    },
    /// A killed Docker container: start it again.
    StartContainer {
        /// Container id.
        container_id: String,
    },
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Record {
    /// Written and fsynced before a fault is applied.
    Apply {
        /// The request as applied.
        request: Box<FaultRequest>,
        /// How to undo it after a crash.
        revert: RevertRecord,
        /// The lease's deadline ([`monotonic_ms`]); absent in records kept from a failed
        /// revert, which are overdue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// A renewal moved the lease's deadline. Not fsynced: the watchdog reads it from the
    /// page cache, and after a power loss every leftover is reverted at start-up anyway.
    Renew {
        /// The fault id.
        id: FaultId,
        /// The new deadline ([`monotonic_ms`]).
        deadline_ms: u64,
    },
    /// Written after a fault was reverted (or failed to apply).
    Revert {
        /// The fault id.
        id: FaultId,
    },
}

/// What a journal held when it was read at start-up.
#[derive(Debug, Default)]
pub struct Replay {
    /// Applies without a matching revert, in journal order.
    pub leftovers: Vec<(FaultRequest, RevertRecord)>,
    /// The latest lease deadline of each leftover that has one ([`monotonic_ms`]).
    pub deadlines: BTreeMap<FaultId, u64>,
    /// Torn or corrupt lines: `line N: why`. They were skipped.
    pub problems: Vec<String>,
}

/// Size past which the journal is compacted before the next record.
pub const COMPACT_AT: u64 = 4 << 20;

/// The open journal, appending records.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Bytes in the file.
    written: u64,
    /// Compact before writing once `written` reaches this.
    compact_at: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Milliseconds on `CLOCK_MONOTONIC`: the clock of the journal's lease deadlines.
pub fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// The journal deadline of a lease of `ttl` starting now.
pub fn deadline_in(ttl: std::time::Duration) -> u64 {
    monotonic_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

fn encode(record: &Record) -> String {
    let json = serde_json::to_string(record).expect("journal records always serialize");
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
}

fn decode(line: &str) -> Result<Record, String> {
    let (crc, json) = line
        .split_once(' ')
        .ok_or_else(|| "no checksum separator".to_string())?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| format!("bad checksum field `{crc}`"))?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("unreadable record: {e}"))
}

/// Reads the journal in `dir` (a missing journal is empty) and returns its leftovers.
pub fn replay(dir: &Path) -> Result<Replay, JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(&path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let mut replay = Replay::default();
    let mut open: BTreeMap<FaultId, (usize, FaultRequest, RevertRecord)> = BTreeMap::new();
    let text = String::from_utf8_lossy(&bytes);
    let ends_with_newline = text.ends_with('\n');
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        if line.is_empty() {
            continue;
        }
        if last && !ends_with_newline {
            replay
                .problems
                .push(format!("line {}: torn record (no newline), skipped", i + 1));
            continue;
        }
        match decode(line) {
            Ok(Record::Apply {
                request,
                revert,
                deadline_ms,
            }) => {
                match deadline_ms {
                    Some(d) => replay.deadlines.insert(request.id.clone(), d),
                    None => replay.deadlines.remove(&request.id),
                };
                open.insert(request.id.clone(), (i, *request, revert));
            }
            Ok(Record::Renew { id, deadline_ms }) => {
                if open.contains_key(&id) {
                    replay.deadlines.insert(id, deadline_ms);
                }
            }
            Ok(Record::Revert { id }) => {
                open.remove(&id);
                replay.deadlines.remove(&id);
            }
            Err(why) => replay
                .problems
                .push(format!("line {}: {why}, skipped", i + 1)),
        }
    }
    let mut left: Vec<_> = open.into_values().collect();
    left.sort_by_key(|(i, _, _)| *i);
    replay.leftovers = left.into_iter().map(|(_, r, v)| (r, v)).collect();
    Ok(replay)
}

impl Journal {
    /// Starts a fresh journal in `dir` that holds only `keep` (leftovers that could not be
    /// reverted, so the next start tries again). The new file replaces the old one
    /// atomically: written to a temporary file, fsynced, renamed, and the directory fsynced.
    pub fn create(dir: &Path, keep: &[(FaultRequest, RevertRecord)]) -> Result<Self, JournalError> {
        let records = keep.iter().map(|(request, revert)| Record::Apply {
            request: Box::new(request.clone()),
            revert: revert.clone(),
            deadline_ms: None,
        });
        Self::rewrite(dir, records)
    }

    /// Replaces the journal in `dir` with `records`, atomically.
    fn rewrite(dir: &Path, records: impl Iterator<Item = Record>) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(JOURNAL_FILE);
        let tmp = dir.join(format!("{JOURNAL_FILE}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            for record in records {
                f.write_all(encode(&record).as_bytes())
                    .map_err(io_err(&tmp))?;
            }
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Self::open(dir)
    }

    /// Opens the existing journal in `dir` for appending, as it is: the watchdog's way in,
    /// after the agent that created it died.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let written = file.metadata().map_err(io_err(&path))?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            written,
            compact_at: COMPACT_AT,
        })
    }

    /// Appends one record and fsyncs it before returning.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        self.note(record)?;
        let path = self.dir.join(JOURNAL_FILE);
        self.file.sync_data().map_err(io_err(&path))
    }

    /// Appends one record without waiting for the disk: other processes see it at once.
    /// A journal grown past [`COMPACT_AT`] is compacted first.
    pub fn note(&mut self, record: &Record) -> Result<(), JournalError> {
        if self.written >= self.compact_at {
            self.compact()?;
        }
        let path = self.dir.join(JOURNAL_FILE);
        let line = encode(record);
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err(&path))?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Rewrites the journal with only its open applies, each with its latest deadline.
    /// Renewals would otherwise grow it without bound while the agent runs: a lease renewed
    /// every few seconds writes about 150 bytes each time.
    fn compact(&mut self) -> Result<(), JournalError> {
        let replay = replay(&self.dir)?;
        for p in &replay.problems {
            tracing::warn!(problem = %p, "journal record dropped while compacting");
        }
        let deadlines = replay.deadlines;
        let records = replay
            .leftovers
            .into_iter()
            .map(|(request, revert)| Record::Apply {
                deadline_ms: deadlines.get(&request.id).copied(),
                request: Box::new(request),
                revert,
            });
        let compact_at = self.compact_at;
        *self = Self::rewrite(&self.dir, records)?;
        // A journal that stays big after compaction (many open faults) is not compacted
        // again until it has doubled.
        self.compact_at = compact_at.max(self.written * 2);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_spec::wire::ResolvedTarget;
    use faultline_spec::{FaultKind, ProcessFault, Signal};

    fn request(id: &str) -> FaultRequest {
        FaultRequest {
            id: id.into(),
            experiment: "exp".into(),
            target: ResolvedTarget {
                name: "svc".into(),
                pid: Some(42),
                ..Default::default()
            },
            fault: FaultKind::Process(ProcessFault {
                signal: Signal::Stop,
            }),
            ttl: faultline_spec::Duration::from_secs(30),
        }
    }

    fn stop(pid: u32) -> RevertRecord {
        RevertRecord::ContinueProcess { pid, start_time: 7 }
    }

    fn apply(id: &str, pid: u32) -> Record {
        Record::Apply {
            request: Box::new(request(id)),
            revert: stop(pid),
            deadline_ms: None,
        }
    }

    #[test]
    fn a_leftovers_deadline_is_its_latest_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), &[]).unwrap();
        for (id, deadline) in [("a", 100), ("b", 200)] {
            j.append(&Record::Apply {
                request: Box::new(request(id)),
                revert: stop(1),
                deadline_ms: Some(deadline),
            })
            .unwrap();
        }
        j.note(&Record::Renew {
            id: "a".into(),
            deadline_ms: 150,
        })
        .unwrap();
        j.append(&Record::Revert { id: "b".into() }).unwrap();
        // A renewal after the revert (a race the agent's locks allow) resurrects nothing.
        j.note(&Record::Renew {
            id: "b".into(),
            deadline_ms: 300,
        })
        .unwrap();
        j.append(&apply("c", 1)).unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.deadlines, BTreeMap::from([("a".into(), 150)]));
        let ids: Vec<_> = r.leftovers.iter().map(|(q, _)| q.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn renewals_are_compacted_away_keeping_open_applies_and_their_latest_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), &[]).unwrap();
        j.compact_at = 4096;
        j.append(&apply("reverted", 1)).unwrap();
        j.append(&Record::Revert {
            id: "reverted".into(),
        })
        .unwrap();
        j.append(&Record::Apply {
            request: Box::new(request("open")),
            revert: stop(2),
            deadline_ms: Some(1),
        })
        .unwrap();
        for deadline_ms in 2..=1000 {
            j.note(&Record::Renew {
                id: "open".into(),
                deadline_ms,
            })
            .unwrap();
        }
        let size = std::fs::metadata(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .len();
        assert!(size <= 8192, "compacted: {size} bytes after 1,000 renewals");
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.leftovers, vec![(request("open"), stop(2))]);
        assert_eq!(r.deadlines, BTreeMap::from([("open".into(), 1000)]));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn applies_without_revert_are_leftovers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), &[]).unwrap();
        for id in ["a", "b", "c"] {
            j.append(&apply(id, 1)).unwrap();
        }
        j.append(&Record::Revert { id: "b".into() }).unwrap();
        let r = replay(dir.path()).unwrap();
        let ids: Vec<_> = r.leftovers.iter().map(|(q, _)| q.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn torn_and_corrupt_records_are_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), &[]).unwrap();
        j.append(&apply("good", 5)).unwrap();
        let mut line = encode(&apply("flipped", 6));
        // Corrupt one byte of the JSON so the checksum no longer matches.
        line = line.replacen("flipped", "flipPed", 1);
        let torn = encode(&apply("torn", 7));
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
        f.write_all(b"garbage without checksum\n").unwrap();
        f.write_all(&torn.as_bytes()[..torn.len() / 2]).unwrap();
        drop(f);

        let r = replay(dir.path()).unwrap();
        let ids: Vec<_> = r.leftovers.iter().map(|(q, _)| q.id.as_str()).collect();
        assert_eq!(ids, ["good"]);
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("checksum mismatch"),
            "{:?}",
            r.problems
        );
        assert!(r.problems[2].contains("torn"), "{:?}", r.problems);
    }

    #[test]
    fn a_fresh_journal_keeps_only_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), &[]).unwrap();
        j.append(&apply("old", 1)).unwrap();
        drop(j);
        let _ = Journal::create(dir.path(), &[(request("kept"), stop(2))]).unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.leftovers, vec![(request("kept"), stop(2))]);
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let r = replay(&dir.path().join("nope")).unwrap();
        assert!(r.leftovers.is_empty() && r.problems.is_empty());
    }
}
