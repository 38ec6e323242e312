//! The agent's blast radius: processes no request may touch, whoever holds the token.
//!
//! Every request aimed at a process (`target.pid`, a container's main process, a pod's
//! process) is checked against [`Protection`] before anything is journalled or changed,
//! in the dry run and in the apply alike. A refusal is [`FaultError::Protected`] (HTTP
//! 403, code `protected`). The rules, in the order they are checked:
//!
//! 1. PID 1 of the agent's PID namespace (the node's init under `hostPID`);
//! 2. kernel threads (`PF_KTHREAD` in `/proc/PID/stat`, `kthreadd` included);
//! 3. the agent itself and every ancestor of it (its parent, the container runtime's
//!    shim, ...); for `chaos agent`, also every process it started (its helpers);
//! 4. the node's critical services, by process name (`/proc/PID/comm`);
//! 5. processes of pods in a protected namespace;
//! 6. with an allow-list, anything that matches none of its rules.
//!
//! Identities come from the kernel, never from the request: a thread id is judged as its
//! process (`Tgid`), ancestry and names from `/proc`, containers and pods from the
//! process's cgroup paths, and a pod's namespace from the kubelet's pod log directories
//! (`/var/log/pods/<namespace>_<name>_<uid>`). Pod labels are not a rule: the node holds
//! no record of them the caller cannot write, so a label rule would trust the caller.

use std::path::PathBuf;
use std::str::FromStr;

use faultline_spec::is_dns_label;

use crate::fault::FaultError;

/// Process names protected by default: the container runtimes, the kubelet, sshd, the init
/// system and its journal. `/proc/PID/comm` holds at most 15 bytes, so
/// `containerd-shim-runc-v2` shows as `containerd-shim`.
pub const DEFAULT_CRITICAL: &[&str] = &[
    "containerd",
    "containerd-shim",
    "dockerd",
    "kubelet",
    "sshd",
    "crio",
    "conmon",
    "systemd",
    "systemd-journal",
];

/// Where the kubelet keeps pod logs, one directory `<namespace>_<name>_<uid>` per pod.
pub const POD_LOG_DIR: &str = "/var/log/pods";

/// The kernel's `PF_KTHREAD` process flag (field 9 of `/proc/PID/stat`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Longest process name the kernel keeps in `comm`.
const COMM_LEN: usize = 15;

/// One rule of the allow-list: a target must match at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// A cgroup path (as in `/proc/PID/cgroup`) at or under this one.
    Cgroup(String),
    /// A container whose id starts with this (12 hex digits or more), found in the
    /// process's cgroup path as Docker, containerd and CRI-O name them.
    Container(String),
    /// A pod in this namespace.
    Namespace(String),
}

impl FromStr for AllowRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORMS: &str =
            "expected `cgroup:/PATH`, `container:ID` (12 or more hex digits) or `namespace:NAME`";
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| format!("allow rule {s:?}: {FORMS}"))?;
        match kind {
            "cgroup" if value.starts_with('/') => {
                Ok(AllowRule::Cgroup(value.trim_end_matches('/').to_string()))
            }
            "container"
                if value.len() >= 12
                    && value.len() <= 64
                    && value.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(AllowRule::Container(value.to_ascii_lowercase()))
            }
            "namespace" if is_dns_label(value) => Ok(AllowRule::Namespace(value.to_string())),
            _ => Err(format!("allow rule {s:?}: {FORMS}")),
        }
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowRule::Cgroup(p) => write!(f, "cgroup:{p}"),
            AllowRule::Container(id) => write!(f, "container:{id}"),
            AllowRule::Namespace(ns) => write!(f, "namespace:{ns}"),
        }
    }
}

/// What the agent refuses to touch. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Protection {
    /// Critical services by process name.
    pub critical: Vec<String>,
    /// Pod namespaces whose processes are refused.
    pub protected_namespaces: Vec<String>,
    /// When not empty, only targets matching one of these rules are accepted.
    pub allow: Vec<AllowRule>,
    /// Whether processes the agent started are refused too. `chaos agent` sets it; the
    /// agent embedded in `chaos run` does not, since the fleet it starts is its target.
    pub own_descendants: bool,
    /// The kubelet's pod log directory, which maps a pod uid to its namespace.
    pub pod_log_dir: PathBuf,
    /// The process table: `/proc`, or a fake one in tests.
    pub proc: PathBuf,
    /// The agent's own PID.
    pub own_pid: u32,
}

impl Default for Protection {
    fn default() -> Self {
        Self {
            critical: DEFAULT_CRITICAL.iter().map(|s| s.to_string()).collect(),
            protected_namespaces: Vec::new(),
            allow: Vec::new(),
            own_descendants: false,
            pod_log_dir: PathBuf::from(POD_LOG_DIR),
            proc: PathBuf::from("/proc"),
            own_pid: std::process::id(),
        }
    }
}

/// What `/proc/PID` says about one process.
struct Proc {
    comm: String,
    ppid: u32,
    flags: u64,
}

impl Protection {
    /// Refuses `pid` when a rule protects it; `Ok` otherwise, also when it does not exist
    /// and there is no allow-list (the backend then reports the missing target).
    pub fn check(&self, pid: u32) -> Result<(), FaultError> {
        let refuse = |why: String| Err(FaultError::Protected(format!("process {pid}: {why}")));
        // A thread id signals and moves its whole process: judge the process.
        let pid = self.tgid(pid).unwrap_or(pid);
        if pid == 1 {
            return refuse("PID 1 is the node's init".into());
        }
        let Some(p) = self.read(pid) else {
            // Gone, or not visible here: the backend reports a missing target, unless an
            // allow-list must vouch for it (a container's PID outside this PID namespace).
            if self.allow.is_empty() {
                return Ok(());
            }
            return refuse(
                "it is not in this agent's process table, so the allow-list cannot be checked"
                    .into(),
            );
        };
        // By flag only: in a PID namespace, PID 2 and its children are ordinary processes.
        if p.flags & PF_KTHREAD != 0 {
            return refuse(format!("`{}` is a kernel thread", p.comm));
        }
        if pid == self.own_pid {
            return refuse("it is the agent itself".into());
        }
        if let Some(depth) = self.ancestry(self.own_pid).position(|a| a == pid) {
            let who = if depth == 0 { "parent" } else { "ancestor" };
            return refuse(format!("`{}` is the agent's {who}", p.comm));
        }
        if self.own_descendants && self.ancestry(pid).any(|a| a == self.own_pid) {
            return refuse(format!("`{}` was started by the agent", p.comm));
        }
        if let Some(name) = self.critical.iter().find(|c| comm_matches(&p.comm, c)) {
            return refuse(format!(
                "`{}` is a critical service of this node (protected: {name})",
                p.comm
            ));
        }
        let cgroups = self.cgroups(pid);
        let namespace_rules = !self.protected_namespaces.is_empty()
            || self
                .allow
                .iter()
                .any(|r| matches!(r, AllowRule::Namespace(_)));
        let namespace = match cgroups.iter().find_map(|c| pod_uid(c)) {
            Some(uid) if namespace_rules => match self.pod_namespace(&uid) {
                Some(ns) => Some(ns),
                None => {
                    return refuse(format!(
                        "it belongs to pod {uid}, whose namespace is not in {}; namespace rules cannot be checked",
                        self.pod_log_dir.display()
                    ));
                }
            },
            _ => None,
        };
        if let Some(ns) = namespace
            .as_deref()
            .filter(|ns| self.protected_namespaces.iter().any(|p| p == ns))
        {
            return refuse(format!("it belongs to a pod in protected namespace `{ns}`"));
        }
        if !self.allow.is_empty()
            && !self
                .allow
                .iter()
                .any(|r| allows(r, &cgroups, namespace.as_deref()))
        {
            let rules: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            return refuse(format!(
                "`{}` matches no rule of the allow-list ({})",
                p.comm,
                rules.join(", ")
            ));
        }
        Ok(())
    }

    fn read(&self, pid: u32) -> Option<Proc> {
        let text = std::fs::read_to_string(self.proc.join(pid.to_string()).join("stat")).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        // Fields after the command name start at field 3 (state): ppid is 4, flags 9.
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        Some(Proc {
            comm,
            ppid: fields.get(1)?.parse().ok()?,
            flags: fields.get(6)?.parse().ok()?,
        })
    }

    fn tgid(&self, pid: u32) -> Option<u32> {
        let status =
            std::fs::read_to_string(self.proc.join(pid.to_string()).join("status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))?
            .trim()
            .parse()
            .ok()
    }

    /// The ancestors of `pid`, parent first, up to (not including) PID 0.
    fn ancestry(&self, pid: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.read(pid).map(|p| p.ppid);
        // A process table changes while it is read: follow a bounded number of links.
        let mut budget = 4096;
        std::iter::from_fn(move || {
            let pid = next.filter(|&p| p != 0 && budget > 0)?;
            budget -= 1;
            next = self.read(pid).map(|p| p.ppid).filter(|&pp| pp != pid);
            Some(pid)
        })
    }

    /// The process's cgroup paths, one per hierarchy.
    fn cgroups(&self, pid: u32) -> Vec<String> {
        std::fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| Some(l.splitn(3, ':').nth(2)?.to_string()))
            .collect()
    }

    /// The namespace of the pod with `uid`, from the kubelet's pod log directory.
    fn pod_namespace(&self, uid: &str) -> Option<String> {
        let suffix = format!("_{uid}");
        std::fs::read_dir(&self.pod_log_dir)
            .ok()?
            .flatten()
            .find_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_suffix(&suffix)?;
                let (ns, _pod) = rest.split_once('_')?;
                is_dns_label(ns).then(|| ns.to_string())
            })
    }
}

/// Whether a process called `comm` is the service `name` (`comm` is cut at 15 bytes).
fn comm_matches(comm: &str, name: &str) -> bool {
    let cut = name.get(..COMM_LEN.min(name.len())).unwrap_or(name);
    comm == cut
}

/// The pod uid a cgroup path names: `pod<uid>` (cgroupfs driver) or `pod<uid with _>`
/// (systemd driver), normalised to dashes.
fn pod_uid(path: &str) -> Option<String> {
    path.match_indices("pod").find_map(|(i, _)| {
        let candidate = path.get(i + 3..i + 3 + 36)?.replace('_', "-");
        let shaped = candidate.char_indices().all(|(j, c)| {
            if matches!(j, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
        shaped.then_some(candidate)
    })
}

fn allows(rule: &AllowRule, cgroups: &[String], namespace: Option<&str>) -> bool {
    match rule {
        AllowRule::Cgroup(prefix) => cgroups.iter().any(|c| {
            c.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }),
        AllowRule::Container(id) => cgroups.iter().any(|c| {
            c.rsplit('/').next().is_some_and(|leaf| {
                // `<id>` (cgroupfs), `docker-<id>.scope`, `cri-containerd-<id>.scope`,
                // `crio-<id>.scope`.
                let leaf = leaf.strip_suffix(".scope").unwrap_or(leaf);
                let bare = leaf.rsplit('-').next().unwrap_or(leaf);
                bare.len() == 64 && bare.starts_with(id.as_str())
            })
        }),
        AllowRule::Namespace(ns) => namespace == Some(ns.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake process table: (pid, comm, ppid, flags, cgroup path).
    fn fake_proc(entries: &[(u32, &str, u32, u64, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, comm, ppid, flags, cgroup) in entries {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            std::fs::write(
                p.join("stat"),
                format!("{pid} ({comm}) S {ppid} 1 1 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 100"),
            )
            .unwrap();
            std::fs::write(p.join("status"), format!("Name:\t{comm}\nTgid:\t{pid}\n")).unwrap();
            std::fs::write(p.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        }
        dir
    }

    const UID: &str = "0b5e1c2a-7f3d-4e8a-9c11-2d3e4f5a6b7c";
    const CID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f04f1e2d3c4b5a69788796a5b4c3d2e1f0";

    /// init(1) → shim(50) → agent(100) → helper(101); kthreadd(2) → kworker(3);
    /// init → sshd(60) → sshd(61); init → shim(70) → app(71) in a pod; init → loose(80)
    /// in a Docker container.
    fn node() -> (tempfile::TempDir, tempfile::TempDir, Protection) {
        let pod = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        let docker = format!("/system.slice/docker-{CID}.scope");
        let proc = fake_proc(&[
            (1, "systemd", 0, 0, "/init.scope"),
            (2, "kthreadd", 0, PF_KTHREAD, "/"),
            (3, "kworker/0:1", 2, PF_KTHREAD, "/"),
            (
                50,
                "containerd-shim",
                1,
                0,
                "/system.slice/containerd.service",
            ),
            (100, "chaos", 50, 0, "/faultline/agent"),
            (101, "memory helper", 100, 0, "/faultline/agent"),
            (60, "sshd", 1, 0, "/system.slice/ssh.service"),
            (61, "sshd", 60, 0, "/system.slice/ssh.service"),
            (
                70,
                "containerd-shim",
                1,
                0,
                "/system.slice/containerd.service",
            ),
            (71, "payments", 70, 0, &pod),
            (80, "orders", 1, 0, &docker),
            (81, "threaded", 1, 0, "/user.slice"),
        ]);
        // A thread of the agent: /proc/<tid> answers with the thread's own stat.
        std::fs::create_dir(proc.path().join("102")).unwrap();
        std::fs::write(
            proc.path().join("102/stat"),
            "102 (tokio-rt) S 50 1 1 0 -1 0 0 0",
        )
        .unwrap();
        std::fs::write(proc.path().join("102/status"), "Tgid:\t100\n").unwrap();
        let pods = tempfile::tempdir().unwrap();
        std::fs::create_dir(pods.path().join(format!("shop_payments-0_{UID}"))).unwrap();
        let protection = Protection {
            own_descendants: true,
            pod_log_dir: pods.path().to_path_buf(),
            proc: proc.path().to_path_buf(),
            own_pid: 100,
            ..Protection::default()
        };
        (proc, pods, protection)
    }

    fn refusal(p: &Protection, pid: u32) -> String {
        match p.check(pid) {
            Err(FaultError::Protected(why)) => why,
            other => panic!("process {pid} was not refused: {other:?}"),
        }
    }

    #[test]
    fn init_kernel_threads_the_agent_its_tree_and_critical_services_are_refused() {
        let (_proc, _pods, p) = node();
        assert!(refusal(&p, 1).contains("PID 1"));
        assert!(refusal(&p, 2).contains("kernel thread"));
        assert!(refusal(&p, 3).contains("`kworker/0:1` is a kernel thread"));
        assert!(refusal(&p, 100).contains("the agent itself"));
        assert!(refusal(&p, 102).contains("the agent itself"), "a thread id");
        assert!(refusal(&p, 50).contains("the agent's parent"));
        assert!(refusal(&p, 101).contains("started by the agent"));
        assert!(refusal(&p, 60).contains("critical service"));
        assert!(refusal(&p, 61).contains("critical service"));
        assert!(refusal(&p, 70).contains("(protected: containerd-shim)"));
        for pid in [71, 80, 81, 4242] {
            p.check(pid).unwrap();
        }
    }

    #[test]
    fn the_embedded_agent_may_hurt_what_it_started() {
        let (_proc, _pods, mut p) = node();
        p.own_descendants = false;
        p.check(101).unwrap();
    }

    #[test]
    fn critical_names_are_cut_like_comm() {
        let (_proc, _pods, mut p) = node();
        p.critical = vec!["containerd-shim-runc-v2".into()];
        assert!(refusal(&p, 70).contains("critical service"));
        p.critical = vec![];
        p.check(70).unwrap();
    }

    #[test]
    fn protected_namespaces_refuse_their_pods_from_the_kubelets_record() {
        let (_proc, _pods, mut p) = node();
        p.protected_namespaces = vec!["kube-system".into()];
        p.check(71).unwrap();
        p.protected_namespaces = vec!["kube-system".into(), "shop".into()];
        assert!(refusal(&p, 71).contains("protected namespace `shop`"));
        p.check(80).unwrap();
    }

    #[test]
    fn a_pod_whose_namespace_is_unknown_is_refused_while_namespace_rules_are_set() {
        let (_proc, pods, mut p) = node();
        p.check(71).unwrap();
        p.protected_namespaces = vec!["kube-system".into()];
        std::fs::remove_dir(pods.path().join(format!("shop_payments-0_{UID}"))).unwrap();
        assert!(refusal(&p, 71).contains("namespace rules cannot be checked"));
    }

    #[test]
    fn an_allow_list_admits_only_what_matches_one_of_its_rules() {
        let (_proc, _pods, mut p) = node();
        p.allow = vec!["namespace:shop".parse().unwrap()];
        p.check(71).unwrap();
        assert!(refusal(&p, 80).contains("matches no rule of the allow-list (namespace:shop)"));
        assert!(refusal(&p, 81).contains("allow-list"));
        p.allow = vec![format!("container:{}", &CID[..12]).parse().unwrap()];
        p.check(71).unwrap();
        p.check(80).unwrap();
        assert!(refusal(&p, 81).contains("allow-list"));
        p.allow = vec!["cgroup:/system.slice".parse().unwrap()];
        p.check(80).unwrap();
        assert!(refusal(&p, 71).contains("allow-list"));
        p.allow = vec!["cgroup:/system".parse().unwrap()];
        assert!(
            refusal(&p, 80).contains("allow-list"),
            "a prefix is whole path components"
        );
        // The allow-list never overrides a protection.
        p.allow = vec!["cgroup:/".parse().unwrap()];
        assert!(refusal(&p, 60).contains("critical service"));
        assert!(refusal(&p, 4242).contains("allow-list cannot be checked"));
    }

    #[test]
    fn allow_rules_parse_or_say_what_they_expect() {
        assert_eq!(
            "cgroup:/kubepods/".parse::<AllowRule>().unwrap(),
            AllowRule::Cgroup("/kubepods".into())
        );
        assert_eq!(
            "namespace:shop".parse::<AllowRule>().unwrap().to_string(),
            "namespace:shop"
        );
        for bad in [
            "shop",
            "cgroup:relative",
            "container:abc",
            "namespace:Shop_1",
            "label:app=x",
        ] {
            let err = bad.parse::<AllowRule>().unwrap_err();
            assert!(err.contains("expected `cgroup:/PATH`"), "{bad}: {err}");
        }
    }

    #[test]
    fn pod_uids_are_read_from_either_cgroup_driver() {
        assert_eq!(
            pod_uid(&format!("/kubepods/besteffort/pod{UID}/abc")).as_deref(),
            Some(UID)
        );
        assert_eq!(
            pod_uid(
                "/kubepods.slice/kubepods-burstable-pod0b5e1c2a_7f3d_4e8a_9c11_2d3e4f5a6b7c.slice"
            )
            .as_deref(),
            Some(UID)
        );
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
    }

    #[test]
    fn the_real_process_table_protects_init_and_this_process() {
        let p = Protection {
            own_descendants: true,
            ..Protection::default()
        };
        assert!(refusal(&p, 1).contains("PID 1"));
        assert!(refusal(&p, std::process::id()).contains("the agent itself"));
        let parent = std::os::unix::process::parent_id();
        if parent != 1 {
            assert!(refusal(&p, parent).contains("parent"));
        }
    }
}
