//! Loss, partition and reset as nftables rules in the target's network namespace.
//!
//! Each fault gets its own table, `inet faultline_<id>`, so a revert is one
//! `delete table`. Every rule matches *through* two sets (`peers4`, `peers6`) whose
//! elements are the fault's peers (all addresses when none are given) and carry a kernel
//! timeout equal to the lease's TTL (`flags interval, timeout`). A lease renewal
//! replaces the elements with fresh ones in one transaction. If the agent dies
//! (SIGKILL included), nobody renews: the elements expire, the rules stop matching and
//! the traffic is normal again within the TTL, with no agent involved. The now inert
//! table is removed by the next agent from its journal.
//!
//! The `nft` CLI is driven with scripts on stdin rather than netlink messages built by
//! hand: a script is applied as one atomic transaction, it is the interface nftables
//! documents and keeps stable, and it keeps the generated rules readable in logs and
//! tests. `nft` runs as a child of a thread that has entered the target's namespace.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{Direction, NetworkAction, NetworkFault, Peer};

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;
use crate::netns::{Netns, NetnsRef};

/// Prefix of every table the agent creates; anything else is never touched.
pub const TABLE_PREFIX: &str = "faultline_";
/// Chain priority: before the usual filter chains, so a fault is not bypassed by them.
const PRIORITY: i32 = -10;

/// Runs `nft -f -` with `script` inside `netns`. Returns stdout.
pub fn run_script(netns: &Netns, script: &str) -> Result<String, FaultError> {
    run(netns, &["-f", "-"], Some(script))
}

/// Runs `nft ARGS` inside `netns`, with `stdin` when given. Returns stdout.
pub fn run(netns: &Netns, args: &[&str], stdin: Option<&str>) -> Result<String, FaultError> {
    let what = format!("nft {}", args.join(" "));
    let out = netns
        .run(|| -> std::io::Result<std::process::Output> {
            let mut child = Command::new("nft")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(text) = stdin {
                child
                    .stdin
                    .take()
                    .expect("stdin is piped")
                    .write_all(text.as_bytes())?;
            }
            drop(child.stdin.take());
            child.wait_with_output()
        })
        .map_err(|e| FaultError::io(&what, std::io::Error::other(e.to_string())))?
        .map_err(|e| FaultError::io(&what, e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(FaultError::io(
            what,
            std::io::Error::other(format!("{}: {}", out.status, err.trim())),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The table name for a fault id: `faultline_` + the id with anything but ASCII letters,
/// digits and `_` replaced, + a checksum of the id so two ids never share a table.
pub fn table_name(fault_id: &str) -> String {
    let clean: String = fault_id
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "{TABLE_PREFIX}{clean}_{:08x}",
        crc32fast::hash(fault_id.as_bytes())
    )
}

/// Tables in `netns` that this agent made.
pub fn list_tables(netns: &Netns) -> Result<Vec<String>, FaultError> {
    let out = run(netns, &["list", "tables"], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|t| t.starts_with(TABLE_PREFIX))
        .map(|t| t.trim().to_string())
        .collect())
}

/// Deletes a table; one that is already gone is not an error.
pub fn delete_table(netns: &Netns, table: &str) -> Result<(), FaultError> {
    match run_script(netns, &format!("delete table inet {table}\n")) {
        Ok(_) => Ok(()),
        Err(FaultError::Io { source, .. })
            if source.to_string().contains("No such file or directory") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes a table left behind by a previous agent, if its namespace still exists.
/// Returns whether a namespace was found.
pub fn delete_leftover(netns: &NetnsRef, table: &str) -> Result<bool, FaultError> {
    match Netns::find(netns) {
        Some(ns) => delete_table(&ns, table).map(|()| true),
        None => Ok(false),
    }
}

/// The verdict of the fault's rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Drop a share of packets: `numgen random mod 10000 < basis_points drop`.
    Loss {
        /// Dropped share in 1/100 of a percent (so `0.5%` is exact).
        basis_points: u32,
    },
    /// Drop everything.
    Partition,
    /// TCP gets an RST, everything else an ICMP unreachable.
    Reset,
}

/// The fault's peers, split by family. Empty means "every address".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    v4: Vec<String>,
    v6: Vec<String>,
}

impl Peers {
    /// From the fault's peers; service names must have been resolved to CIDRs.
    pub fn from_spec(peers: &[Peer]) -> Result<Self, FaultError> {
        let mut out = Peers::default();
        for p in peers {
            match p {
                Peer::Cidr { addr, prefix } => match addr {
                    std::net::IpAddr::V4(a) => out.v4.push(format!("{a}/{prefix}")),
                    std::net::IpAddr::V6(a) => out.v6.push(format!("{a}/{prefix}")),
                },
                Peer::Service(s) => {
                    return Err(FaultError::Invalid(format!(
                        "peer `{s}` is a service name; the controller resolves peers to addresses before they reach a node agent"
                    )));
                }
            }
        }
        if peers.is_empty() {
            out.v4.push("0.0.0.0/0".into());
            out.v6.push("::/0".into());
        }
        Ok(out)
    }

    /// Script lines (re)filling only the `peers4` set of `table` (written with its family,
    /// e.g. `ip faultline_x`) with elements timing out after `ttl`.
    pub fn refill_v4(&self, table: &str, ttl: Duration) -> String {
        let ms = ttl.as_millis().max(1);
        let mut s = format!("flush set {table} peers4\n");
        if !self.v4.is_empty() {
            let list: Vec<String> = self
                .v4
                .iter()
                .map(|e| format!("{e} timeout {ms}ms"))
                .collect();
            s.push_str(&format!(
                "add element {table} peers4 {{ {} }}\n",
                list.join(", ")
            ));
        }
        s
    }

    /// Script lines (re)filling the lease sets of `table` with elements timing out after `ttl`.
    fn refill(&self, table: &str, ttl: Duration) -> String {
        let ms = ttl.as_millis().max(1);
        let mut s = String::new();
        for (set, elems) in [("peers4", &self.v4), ("peers6", &self.v6)] {
            s.push_str(&format!("flush set inet {table} {set}\n"));
            if !elems.is_empty() {
                let list: Vec<String> = elems
                    .iter()
                    .map(|e| format!("{e} timeout {ms}ms"))
                    .collect();
                s.push_str(&format!(
                    "add element inet {table} {set} {{ {} }}\n",
                    list.join(", ")
                ));
            }
        }
        s
    }
}

/// The rules of one fault, ready to be turned into a script.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Table name.
    pub table: String,
    /// What matching packets get.
    pub verdict: Verdict,
    /// Packets arriving at the target.
    pub ingress: bool,
    /// Packets the target sends.
    pub egress: bool,
    /// Peers that narrow the fault.
    pub peers: Peers,
    /// Target ports that narrow the fault (empty: all).
    pub ports: Vec<u16>,
}

impl RuleSpec {
    fn verdicts(&self) -> Vec<String> {
        match self.verdict {
            Verdict::Loss { basis_points } => {
                vec![format!(
                    "numgen random mod 10000 < {basis_points} counter drop"
                )]
            }
            Verdict::Partition => vec!["counter drop".into()],
            Verdict::Reset => vec![
                "meta l4proto tcp counter reject with tcp reset".into(),
                "counter reject".into(),
            ],
        }
    }

    /// Rule lines of one chain: `ingress` matches peers as sources and ports as
    /// destinations; egress matches peers as destinations and ports on either side
    /// (the target's replies come from its port, its own calls go to the peer's).
    fn chain_rules(&self, ingress: bool) -> Vec<String> {
        let ports = if self.ports.is_empty() {
            vec![String::new()]
        } else {
            let list: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            let set = format!("{{ {} }}", list.join(", "));
            let proto = "meta l4proto { tcp, udp } ";
            if ingress {
                vec![format!("{proto}th dport {set} ")]
            } else {
                vec![
                    format!("{proto}th sport {set} "),
                    format!("{proto}th dport {set} "),
                ]
            }
        };
        let (saddr, daddr) = ("saddr", "daddr");
        let side = if ingress { saddr } else { daddr };
        let mut out = Vec::new();
        for (fam, set) in [("ip", "peers4"), ("ip6", "peers6")] {
            for p in &ports {
                for v in self.verdicts() {
                    out.push(format!("{fam} {side} @{set} {p}{v}"));
                }
            }
        }
        out
    }

    /// The whole table as one script, with lease elements timing out after `ttl`.
    pub fn script(&self, ttl: Duration) -> String {
        let t = &self.table;
        let mut s = format!("table inet {t} {{\n");
        s.push_str("  set peers4 { type ipv4_addr; flags interval, timeout; }\n");
        s.push_str("  set peers6 { type ipv6_addr; flags interval, timeout; }\n");
        for (chain, hook, iface, ingress, on) in [
            ("ingress", "input", "iifname", true, self.ingress),
            ("egress", "output", "oifname", false, self.egress),
        ] {
            if !on {
                continue;
            }
            s.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {hook} priority {PRIORITY}; policy accept;\n    {iface} \"lo\" return\n"
            ));
            for r in self.chain_rules(ingress) {
                s.push_str(&format!("    {r}\n"));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        s.push_str(&self.peers.refill(t, ttl));
        s
    }
}

/// A loss, partition or reset fault as an nftables table in the target's namespace.
#[derive(Debug, Clone)]
pub struct NftFault {
    spec: RuleSpec,
    ttl: Duration,
}

impl NftFault {
    /// Builds the fault for `fault_id` with a lease of `ttl`. Latency and bandwidth are
    /// not nftables faults.
    pub fn new(fault_id: &str, fault: &NetworkFault, ttl: Duration) -> Result<Self, FaultError> {
        let verdict = match &fault.action {
            NetworkAction::Loss(l) => {
                if l.correlation.is_some_and(|c| c.fraction() > 0.0) {
                    return Err(FaultError::Unsupported(
                        "loss correlation is not available with nftables (numgen draws independently); use the proxy backend".into(),
                    ));
                }
                Verdict::Loss {
                    basis_points: (l.percent.fraction() * 10_000.0)
                        .round()
                        .clamp(0.0, 10_000.0) as u32,
                }
            }
            NetworkAction::Partition(_) => Verdict::Partition,
            NetworkAction::Reset(_) => Verdict::Reset,
            other => {
                return Err(FaultError::Unsupported(format!(
                    "{} is not an nftables fault",
                    action_name(other)
                )));
            }
        };
        let (ingress, egress) = match fault.direction {
            Direction::Ingress => (true, false),
            Direction::Egress => (false, true),
            Direction::Both => (true, true),
        };
        Ok(Self {
            spec: RuleSpec {
                table: table_name(fault_id),
                verdict,
                ingress,
                egress,
                peers: Peers::from_spec(&fault.peers)?,
                ports: fault.ports.clone(),
            },
            ttl,
        })
    }

    /// The rules it installs.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }
}

/// Name of a network action as written in experiment files.
pub fn action_name(a: &NetworkAction) -> &'static str {
    match a {
        NetworkAction::Latency(_) => "latency",
        NetworkAction::Loss(_) => "loss",
        NetworkAction::Bandwidth(_) => "bandwidth",
        NetworkAction::Reset(_) => "reset",
        NetworkAction::Partition(_) => "partition",
    }
}

/// The installed table; deleting it is the revert (also on drop).
#[derive(Debug)]
pub struct NftHandle {
    netns: Netns,
    spec: RuleSpec,
    deleted: bool,
    renewals: u64,
}

impl NftHandle {
    /// Packets the fault's rules matched so far, summed from the rules' counters.
    fn matched_packets(&self) -> Option<u64> {
        let out = run(
            &self.netns,
            &["list", "table", "inet", &self.spec.table],
            None,
        )
        .ok()?;
        Some(
            out.split("packets ")
                .skip(1)
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum(),
        )
    }

    fn effect(&self, matched: Option<u64>) -> ObservedEffect {
        let mut e = ObservedEffect::default();
        if let Some(m) = matched {
            e.metrics.insert("matched_packets".into(), m as f64);
        }
        e.metrics
            .insert("lease_refreshes".into(), self.renewals as f64);
        let what = match self.spec.verdict {
            Verdict::Loss { basis_points } => {
                format!(
                    "dropping {:.2}% of packets",
                    f64::from(basis_points) / 100.0
                )
            }
            Verdict::Partition => "dropping every packet".into(),
            Verdict::Reset => "rejecting with TCP reset".into(),
        };
        e.summary = format!(
            "nftables table {} in {}: {what}; {} matching packets",
            self.spec.table,
            self.netns.path().display(),
            matched.map_or("unknown".into(), |m| m.to_string())
        );
        e
    }
}

impl Drop for NftHandle {
    fn drop(&mut self) {
        if !self.deleted
            && let Err(e) = delete_table(&self.netns, &self.spec.table)
        {
            tracing::error!(table = %self.spec.table, error = %e, "could not delete an nft table");
        }
    }
}

impl Fault for NftFault {
    type Handle = NftHandle;

    fn backend(&self) -> &'static str {
        "nftables"
    }

    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        let netns = crate::target::netns(target)?;
        Ok(RevertRecord::NftTable {
            netns: netns.to_ref(),
            table: self.spec.table.clone(),
        })
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        crate::target::netns(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<NftHandle, FaultError> {
        let netns = crate::target::netns(target)?;
        // A table left by an earlier attempt with the same id is replaced, not merged.
        delete_table(&netns, &self.spec.table)?;
        let mut handle = NftHandle {
            netns,
            spec: self.spec.clone(),
            deleted: true,
            renewals: 0,
        };
        run_script(&handle.netns, &self.spec.script(self.ttl))?;
        handle.deleted = false;
        Ok(handle)
    }

    fn renew(&self, handle: &mut NftHandle, ttl: Duration) -> Result<(), FaultError> {
        run_script(
            &handle.netns,
            &handle.spec.peers.refill(&handle.spec.table, ttl),
        )?;
        handle.renewals += 1;
        Ok(())
    }

    fn observe(&self, handle: &NftHandle) -> ObservedEffect {
        handle.effect(handle.matched_packets())
    }

    fn revert(&self, mut handle: NftHandle) -> Result<ObservedEffect, FaultError> {
        let effect = handle.effect(handle.matched_packets());
        delete_table(&handle.netns, &handle.spec.table)?;
        handle.deleted = true;
        Ok(effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_spec::{Empty, Loss, Percent};

    fn fault(
        action: NetworkAction,
        direction: Direction,
        peers: &[&str],
        ports: &[u16],
    ) -> NetworkFault {
        NetworkFault {
            action,
            direction,
            peers: peers.iter().map(|p| Peer::parse(p).unwrap()).collect(),
            ports: ports.to_vec(),
            backend: Default::default(),
        }
    }

    #[test]
    fn table_names_are_valid_identifiers_and_distinct_per_id() {
        let a = table_name("exp/payments-loss:1");
        let b = table_name("exp/payments-loss_1");
        assert!(a.starts_with(TABLE_PREFIX));
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn loss_rules_match_through_the_lease_sets_with_the_ttl_as_timeout() {
        let f = NftFault::new(
            "l",
            &fault(
                NetworkAction::Loss(Loss {
                    percent: Percent::from_fraction(0.3).unwrap(),
                    correlation: None,
                }),
                Direction::Ingress,
                &["10.1.0.0/16"],
                &[8080],
            ),
            Duration::from_secs(15),
        )
        .unwrap();
        let s = f.spec().script(Duration::from_secs(15));
        assert!(s.contains("flags interval, timeout"), "{s}");
        assert!(
            s.contains("ip saddr @peers4 meta l4proto { tcp, udp } th dport { 8080 } numgen random mod 10000 < 3000 counter drop"),
            "{s}"
        );
        assert!(s.contains("10.1.0.0/16 timeout 15000ms"), "{s}");
        assert!(!s.contains("hook output"), "ingress only: {s}");
        // No IPv6 peers: the v6 set stays empty, so its rules never match.
        assert!(
            !s.contains("add element inet") || !s.contains("peers6 {  "),
            "{s}"
        );
    }

    #[test]
    fn reset_answers_tcp_with_rst_in_both_directions() {
        let f = NftFault::new(
            "r",
            &fault(NetworkAction::Reset(Empty {}), Direction::Both, &[], &[]),
            Duration::from_secs(5),
        )
        .unwrap();
        let s = f.spec().script(Duration::from_secs(5));
        assert!(
            s.contains("ip saddr @peers4 meta l4proto tcp counter reject with tcp reset"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr @peers4 meta l4proto tcp counter reject with tcp reset"),
            "{s}"
        );
        assert!(s.contains("0.0.0.0/0 timeout 5000ms") && s.contains("::/0 timeout 5000ms"));
    }

    #[test]
    fn service_peers_and_latency_are_refused_with_reasons() {
        let e = NftFault::new(
            "p",
            &fault(
                NetworkAction::Partition(Empty {}),
                Direction::Ingress,
                &["orders"],
                &[],
            ),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("service name"), "{e}");
    }
}
