//! Network namespaces: entering a target's namespace from a dedicated thread.
//!
//! `setns(2)` changes the namespace of the calling *thread* only. So namespace work never
//! runs on a tokio worker: [`Netns::run`] spawns a scoped thread, enters the namespace,
//! runs the closure, and switches the thread back to the agent's own namespace before it
//! ends. Sockets keep the namespace they were created in, and child processes inherit the
//! namespace of the thread that spawned them, so both "create a listening socket inside
//! the target's namespace" and "run `nft`/`tc` inside it" are closures passed to `run`.
//!
//! `nix::sched::setns` is a safe wrapper, so this module needs no `unsafe`.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

/// Namespace failures.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (the process or namespace is gone).
    #[error("open network namespace {path}: {source}")]
    Open {
        /// `/proc/PID/ns/net` or a bind mount such as `/run/netns/NAME`.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed (usually missing CAP_SYS_ADMIN).
    #[error("setns into {path}: {source}")]
    Setns {
        /// The namespace.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// The namespace thread could not be spawned or panicked.
    #[error("namespace thread: {0}")]
    Thread(String),
}

/// Identity of a network namespace: device and inode of its nsfs file. Two opens of the
/// same namespace, through any path, have the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    /// Device of the nsfs file.
    pub dev: u64,
    /// Inode of the nsfs file.
    pub ino: u64,
}

/// What the journal keeps to find a namespace again after the agent restarted: the path
/// it was opened through and its identity, which is checked before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetnsRef {
    /// Path it was opened through.
    pub path: PathBuf,
    /// Its identity.
    pub id: NetnsId,
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    id: NetnsId,
}

/// Directory where `ip netns add` bind-mounts named namespaces.
const NAMED_NETNS_DIR: &str = "/run/netns";

impl Netns {
    /// Opens a namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`).
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let err = |source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            id: NetnsId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// The network namespace of process `pid`.
    pub fn of_pid(pid: u32) -> Result<Self, NetnsError> {
        Self::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// The agent's own namespace (of the calling thread).
    pub fn current() -> Result<Self, NetnsError> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// Finds the namespace a journal record names: through its recorded path when that
    /// still leads to the same namespace, else through the named namespaces in
    /// `/run/netns`. `None` when the namespace no longer exists anywhere we can see.
    pub fn find(r: &NetnsRef) -> Option<Self> {
        if let Ok(ns) = Self::open(&r.path)
            && ns.id == r.id
        {
            return Some(ns);
        }
        let dir = std::fs::read_dir(NAMED_NETNS_DIR).ok()?;
        dir.flatten()
            .filter_map(|e| Self::open(&e.path()).ok())
            .find(|ns| ns.id == r.id)
    }

    /// Its identity.
    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The path it was opened through.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the journal keeps to find it again.
    pub fn to_ref(&self) -> NetnsRef {
        NetnsRef {
            path: self.path.clone(),
            id: self.id,
        }
    }

    /// Whether this is the namespace the agent itself runs in.
    pub fn is_current(&self) -> bool {
        Self::current().is_ok_and(|me| me.id == self.id)
    }

    /// Runs `f` on a dedicated thread inside this namespace and returns its result. The
    /// thread enters the namespace with `setns`, runs `f`, and switches back to the
    /// namespace it started in before it ends, so no thread is left in a foreign
    /// namespace. Sockets created and processes spawned by `f` belong to this namespace.
    pub fn run<R, F>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || -> Result<R, NetnsError> {
                    let home = Netns::current()?;
                    nix::sched::setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Setns {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    let out = f();
                    if let Err(e) = nix::sched::setns(&home.file, CloneFlags::CLONE_NEWNET) {
                        // The thread ends right after this, so nothing else runs in the
                        // foreign namespace; still worth knowing.
                        tracing::warn!(error = %e, "could not switch a netns thread back");
                    }
                    Ok(out)
                })
                .map_err(|e| NetnsError::Thread(e.to_string()))?;
            worker
                .join()
                .map_err(|_| NetnsError::Thread("namespace thread panicked".into()))?
        })
    }
}

/// Runs `f` on a dedicated thread inside a fresh, empty network namespace that only
/// this thread holds; it disappears with everything in it when the thread ends. Used to
/// probe capabilities by trial without touching any real namespace.
pub fn run_in_scratch<R, F>(f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-scratch".into())
            .spawn_scoped(scope, || -> Result<R, NetnsError> {
                let home = Netns::current()?;
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetnsError::Setns {
                        path: PathBuf::from("(new namespace)"),
                        source,
                    }
                })?;
                let out = f();
                if let Err(e) = nix::sched::setns(&home.file, CloneFlags::CLONE_NEWNET) {
                    tracing::warn!(error = %e, "could not switch a scratch netns thread back");
                }
                Ok(out)
            })
            .map_err(|e| NetnsError::Thread(e.to_string()))?
            .join()
            .map_err(|_| NetnsError::Thread("scratch namespace thread panicked".into()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_namespace_has_the_same_identity_through_any_path() {
        let a = Netns::current().unwrap();
        let b = Netns::of_pid(std::process::id()).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(a.is_current());
        let found = Netns::find(&b.to_ref()).unwrap();
        assert_eq!(found.id(), a.id());
    }

    #[test]
    fn running_in_the_own_namespace_returns_the_closure_result() {
        let ns = Netns::current().unwrap();
        match ns.run(|| 41 + 1) {
            Ok(v) => assert_eq!(v, 42),
            // Without CAP_SYS_ADMIN even entering the own namespace is refused; that
            // must be a clear error, not a panic.
            Err(e) => assert!(matches!(e, NetnsError::Setns { .. }), "{e}"),
        }
    }
}
