//! Bandwidth caps with tc in the target's network namespace: an htb qdisc on each of
//! the namespace's interfaces for egress, and for ingress an `ifb` device that the
//! interfaces' ingress traffic is redirected to (`mirred`), shaped by htb there.
//!
//! Matching traffic (peers and ports, by u32 filters) goes to a class capped at the
//! asked rate; everything else to an uncapped default class. Unlike nftables rules, tc
//! has no kernel timeout: after a crash the qdiscs and the ifb device stay until the next
//! agent removes them from its journal (see docs/agent.md).

use std::process::Command;

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{Direction, NetworkAction, NetworkFault};
use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;
use crate::netns::{Netns, NetnsRef};

/// Runs `prog args` inside `netns`; `Err` carries its stderr.
pub fn run(netns: &Netns, prog: &str, args: &[&str]) -> Result<String, FaultError> {
    let what = format!("{prog} {}", args.join(" "));
    let out = netns
        .run(|| Command::new(prog).args(args).output())
        .map_err(|e| FaultError::io(&what, std::io::Error::other(e.to_string())))?
        .map_err(|e| FaultError::io(&what, e))?;
    if !out.status.success() {
        return Err(FaultError::io(
            what,
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What was changed, so it can be undone now or by a later agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shaping {
    /// Interfaces whose root qdisc is the fault's htb.
    pub egress_devices: Vec<String>,
    /// Interfaces with an ingress qdisc redirecting to the ifb device.
    pub ingress_devices: Vec<String>,
    /// The ifb device, when ingress is shaped.
    pub ifb: Option<String>,
}

impl Shaping {
    /// Removes everything; missing pieces are fine (already gone). Returns the errors.
    pub fn undo(&self, netns: &Netns) -> Vec<String> {
        let mut errors = Vec::new();
        let mut quiet = |prog: &str, args: &[&str]| {
            if let Err(e) = run(netns, prog, args) {
                let msg = e.to_string();
                if !(msg.contains("Cannot find device")
                    || msg.contains("No such file")
                    || msg.contains("Invalid handle")
                    || msg.contains("Cannot delete qdisc with handle of zero"))
                {
                    errors.push(msg);
                }
            }
        };
        for d in &self.egress_devices {
            quiet("tc", &["qdisc", "del", "dev", d, "root"]);
        }
        for d in &self.ingress_devices {
            quiet("tc", &["qdisc", "del", "dev", d, "ingress"]);
        }
        if let Some(ifb) = &self.ifb {
            quiet("ip", &["link", "del", ifb]);
        }
        errors
    }
}

/// Removes shaping left by a previous agent, if its namespace still exists.
pub fn undo_leftover(netns: &NetnsRef, shaping: &Shaping) -> Result<bool, FaultError> {
    let Some(ns) = Netns::find(netns) else {
        return Ok(false);
    };
    let errors = shaping.undo(&ns);
    if errors.is_empty() {
        Ok(true)
    } else {
        Err(FaultError::io(
            "remove tc shaping",
            std::io::Error::other(errors.join("; ")),
        ))
    }
}

/// `bandwidth: {rate}` as tc shaping, or `latency` as a netem qdisc under the same htb
/// tree (where the kernel has `sch_netem`): matching traffic goes to class 1:1, capped at
/// the rate, or uncapped with a netem leaf that delays it.
#[derive(Debug, Clone)]
pub struct TcBandwidth {
    bits_per_second: u64,
    /// `tc ... netem` arguments when this is a netem latency fault.
    netem: Option<Vec<String>>,
    ingress: bool,
    egress: bool,
    peers: Vec<(std::net::Ipv4Addr, u8)>,
    ports: Vec<u16>,
    ifb: String,
}

impl TcBandwidth {
    /// Builds the fault for `fault_id`.
    pub fn new(fault_id: &str, fault: &NetworkFault) -> Result<Self, FaultError> {
        let NetworkAction::Bandwidth(b) = &fault.action else {
            return Err(FaultError::Unsupported("tc shapes bandwidth only".into()));
        };
        let mut peers = Vec::new();
        for p in &fault.peers {
            match p {
                faultline_spec::Peer::Cidr {
                    addr: std::net::IpAddr::V4(a),
                    prefix,
                } => peers.push((*a, *prefix)),
                other => {
                    return Err(FaultError::Unsupported(format!(
                        "tc bandwidth narrows by IPv4 peers only, not {other:?}"
                    )));
                }
            }
        }
        let (ingress, egress) = match fault.direction {
            Direction::Ingress => (true, false),
            Direction::Egress => (false, true),
            Direction::Both => (true, true),
        };
        Ok(Self {
            bits_per_second: b.rate.bits_per_second().max(8),
            netem: None,
            ingress,
            egress,
            peers,
            ports: fault.ports.clone(),
            // Interface names are at most 15 bytes.
            ifb: format!("flifb{:08x}", crc32fast::hash(fault_id.as_bytes())),
        })
    }

    /// A latency fault as netem (`delay D J C% [distribution normal]`) under the htb tree.
    pub fn netem(fault_id: &str, fault: &NetworkFault) -> Result<Self, FaultError> {
        let NetworkAction::Latency(l) = &fault.action else {
            return Err(FaultError::Unsupported(
                "netem carries latency only here".into(),
            ));
        };
        let as_bw = NetworkFault {
            action: NetworkAction::Bandwidth(faultline_spec::BandwidthLimit {
                rate: faultline_spec::Bandwidth(100_000_000_000),
            }),
            ..fault.clone()
        };
        let mut t = Self::new(fault_id, &as_bw)?;
        let us = |d: std::time::Duration| format!("{}us", d.as_micros());
        let mut args = vec!["delay".to_string(), us(l.delay.std())];
        if !l.jitter.std().is_zero() {
            args.push(us(l.jitter.std()));
            if let Some(c) = l.correlation {
                args.push(format!("{}%", c.fraction() * 100.0));
            }
            if l.distribution == faultline_spec::JitterDistribution::Normal {
                args.extend(["distribution".into(), "normal".into()]);
            }
        }
        t.netem = Some(args);
        Ok(t)
    }

    /// u32 filter matches: `peer_field` is `src` or `dst`, `port_field` `sport`/`dport`.
    fn matches(&self, peer_field: &str, port_fields: &[&str]) -> Vec<Vec<String>> {
        let peers: Vec<Option<String>> = if self.peers.is_empty() {
            vec![None]
        } else {
            self.peers
                .iter()
                .map(|(a, p)| Some(format!("{a}/{p}")))
                .collect()
        };
        let mut ports: Vec<Option<(String, u16)>> = Vec::new();
        if self.ports.is_empty() {
            ports.push(None);
        } else {
            for f in port_fields {
                for p in &self.ports {
                    ports.push(Some((f.to_string(), *p)));
                }
            }
        }
        let mut out = Vec::new();
        for peer in &peers {
            for port in &ports {
                let mut m = Vec::new();
                if let Some(peer) = peer {
                    m.extend(["match", "ip", peer_field, peer.as_str()].map(String::from));
                }
                if let Some((field, p)) = port {
                    m.extend([
                        "match".into(),
                        "ip".into(),
                        field.clone(),
                        p.to_string(),
                        "0xffff".into(),
                    ]);
                }
                if m.is_empty() {
                    m.extend(["match", "u32", "0", "0"].map(String::from));
                }
                out.push(m);
            }
        }
        out
    }

    /// Adds the htb root on `dev`. `tc qdisc add` fails on a device that already has a
    /// root qdisc of its own, so the agent never takes over (nor later deletes) one it
    /// did not create.
    fn add_root(&self, netns: &Netns, dev: &str) -> Result<(), FaultError> {
        run(
            netns,
            "tc",
            &[
                "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "2",
            ],
        )
        .map(drop)
    }

    /// Classes and filters under the htb root added by [`Self::add_root`].
    fn shape(
        &self,
        netns: &Netns,
        dev: &str,
        peer_field: &str,
        port_fields: &[&str],
    ) -> Result<(), FaultError> {
        let rate = format!("{}bit", self.bits_per_second);
        run(
            netns,
            "tc",
            &[
                "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
                "ceil", &rate,
            ],
        )?;
        run(
            netns,
            "tc",
            &[
                "class", "add", "dev", dev, "parent", "1:", "classid", "1:2", "htb", "rate",
                "100gbit",
            ],
        )?;
        if let Some(args) = &self.netem {
            let mut a = vec![
                "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "netem",
            ];
            a.extend(args.iter().map(String::as_str));
            run(netns, "tc", &a)?;
        }
        for m in self.matches(peer_field, port_fields) {
            let mut args = vec![
                "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            ];
            args.extend(m.iter().map(String::as_str));
            args.extend(["flowid", "1:1"]);
            run(netns, "tc", &args)?;
        }
        Ok(())
    }
}

/// Devices of a namespace that carry traffic: everything but loopback and ifb devices.
fn devices(netns: &Netns) -> Result<Vec<String>, FaultError> {
    let out = run(netns, "ip", &["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n != "lo" && !n.starts_with("flifb") && !n.starts_with("ifb"))
        .collect())
}

/// A shaping class's counters from `tc -s class show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClassStats {
    sent_bytes: u64,
    overlimits: u64,
}

impl ClassStats {
    /// Reads ` Sent 12345 bytes 100 pkt (dropped 0, overlimits 25 requeues 0)`.
    fn parse(out: &str) -> Self {
        let after = |key: &str| {
            out.split(key)
                .nth(1)
                .and_then(|s| {
                    s.split([' ', ',', ')'])
                        .find(|w| !w.is_empty())?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        Self {
            sent_bytes: after("Sent "),
            overlimits: after("overlimits "),
        }
    }
}

/// The applied shaping; undoing it is the revert (also on drop).
#[derive(Debug)]
pub struct TcHandle {
    netns: Netns,
    shaping: Shaping,
    bits_per_second: u64,
    undone: bool,
}

impl TcHandle {
    /// Bytes sent through the capped class and how often it held traffic back
    /// (`overlimits`), summed over the shaped devices.
    fn class_stats(&self) -> ClassStats {
        let devs = self
            .shaping
            .egress_devices
            .iter()
            .chain(self.shaping.ifb.iter());
        let mut total = ClassStats::default();
        for d in devs {
            if let Ok(out) = run(
                &self.netns,
                "tc",
                &["-s", "class", "show", "dev", d, "classid", "1:1"],
            ) {
                let s = ClassStats::parse(&out);
                total.sent_bytes += s.sent_bytes;
                total.overlimits += s.overlimits;
            }
        }
        total
    }

    fn effect(&self, stats: ClassStats) -> ObservedEffect {
        let shaped = stats.sent_bytes;
        let mut e = ObservedEffect::default();
        e.metrics.insert("shaped_bytes".into(), shaped as f64);
        e.metrics
            .insert("overlimits".into(), stats.overlimits as f64);
        e.metrics
            .insert("rate_bits_per_second".into(), self.bits_per_second as f64);
        e.summary = format!(
            "htb at {} bit/s on {:?}{}; {shaped} bytes through the capped class, held back {} times",
            self.bits_per_second,
            self.shaping.egress_devices,
            self.shaping
                .ifb
                .as_ref()
                .map_or(String::new(), |i| format!(", ingress via {i}")),
            stats.overlimits
        );
        e
    }
}

impl Drop for TcHandle {
    fn drop(&mut self) {
        if !self.undone {
            for e in self.shaping.undo(&self.netns) {
                tracing::error!(error = %e, "could not remove tc shaping");
            }
        }
    }
}

/// The target's network namespace and the interfaces (besides loopback) to shape.
fn shaped_devices(target: &ResolvedTarget) -> Result<(Netns, Vec<String>), FaultError> {
    let netns = crate::target::netns(target)?;
    let devs = devices(&netns)?;
    if devs.is_empty() {
        return Err(FaultError::Invalid(
            "the target's namespace has no interface besides loopback".into(),
        ));
    }
    Ok((netns, devs))
}

impl Fault for TcBandwidth {
    type Handle = TcHandle;

    fn backend(&self) -> &'static str {
        if self.netem.is_some() { "netem" } else { "tc" }
    }

    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        let netns = crate::target::netns(target)?;
        let devs = devices(&netns)?;
        Ok(RevertRecord::TcShaping {
            netns: netns.to_ref(),
            shaping: Shaping {
                egress_devices: if self.egress {
                    devs.clone()
                } else {
                    Vec::new()
                },
                ingress_devices: if self.ingress { devs } else { Vec::new() },
                ifb: self.ingress.then(|| self.ifb.clone()),
            },
        })
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        shaped_devices(target).map(drop)
    }

    fn apply(&self, target: &ResolvedTarget) -> Result<TcHandle, FaultError> {
        let (netns, devs) = shaped_devices(target)?;
        // The guard is built first and grows with every change, so a failure half-way
        // undoes exactly what was done.
        let mut handle = TcHandle {
            netns,
            shaping: Shaping {
                egress_devices: Vec::new(),
                ingress_devices: Vec::new(),
                ifb: None,
            },
            bits_per_second: self.bits_per_second,
            undone: false,
        };
        if self.egress {
            for d in &devs {
                // Recorded only once it is ours: a failure below undoes exactly this.
                self.add_root(&handle.netns, d)?;
                handle.shaping.egress_devices.push(d.clone());
                self.shape(&handle.netns, d, "dst", &["sport", "dport"])?;
            }
        }
        if self.ingress {
            let ifb = self.ifb.clone();
            run(&handle.netns, "ip", &["link", "add", &ifb, "type", "ifb"])?;
            handle.shaping.ifb = Some(ifb.clone());
            run(&handle.netns, "ip", &["link", "set", &ifb, "up"])?;
            self.add_root(&handle.netns, &ifb)?;
            self.shape(&handle.netns, &ifb, "src", &["dport", "sport"])?;
            for d in &devs {
                run(
                    &handle.netns,
                    "tc",
                    &["qdisc", "add", "dev", d, "handle", "ffff:", "ingress"],
                )?;
                handle.shaping.ingress_devices.push(d.clone());
                run(
                    &handle.netns,
                    "tc",
                    &[
                        "filter", "add", "dev", d, "parent", "ffff:", "protocol", "all", "u32",
                        "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                        &ifb,
                    ],
                )?;
            }
        }
        Ok(handle)
    }

    fn observe(&self, handle: &TcHandle) -> ObservedEffect {
        handle.effect(handle.class_stats())
    }

    fn revert(&self, mut handle: TcHandle) -> Result<ObservedEffect, FaultError> {
        let effect = handle.effect(handle.class_stats());
        let errors = handle.shaping.undo(&handle.netns);
        handle.undone = true;
        if !errors.is_empty() {
            return Err(FaultError::io(
                "remove tc shaping",
                std::io::Error::other(errors.join("; ")),
            ));
        }
        Ok(effect)
    }
}

#[cfg(test)]
mod tests {
    use super::ClassStats;

    #[test]
    fn class_stats_read_sent_bytes_and_overlimits() {
        let out = "class htb 1:1 root prio 0 rate 1Mbit ceil 1Mbit burst 1600b cburst 1600b \n Sent 123456 bytes 90 pkt (dropped 0, overlimits 37 requeues 0) \n backlog 0b 0p requeues 0\n";
        assert_eq!(
            ClassStats::parse(out),
            ClassStats {
                sent_bytes: 123456,
                overlimits: 37
            }
        );
        assert_eq!(ClassStats::parse(""), ClassStats::default());
    }
}
