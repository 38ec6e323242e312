//! The effect gate: did each fault bite, and how close did it come to what was asked?
//!
//! A verdict is only earned when the faults measurably happened. Each fault application
//! is judged from the figures its agent measured ([`ObservedEffect::metrics`]), by a
//! rule per fault kind and backend (the table in `docs/running.md`). A required fault
//! that did not bite, or bit further from the asked effect than its tolerance allows,
//! makes a run whose SLOs all held `inconclusive` instead of `pass`.

use faultline_spec::wire::ObservedEffect;
use faultline_spec::{ContainerAction, Fault, FaultKind, HttpFault, NetworkAction, Signal};
use serde::{Deserialize, Serialize};

use crate::report::{FaultApplication, FaultStatus};

/// Fewest delayed chunks over which a mean added delay is judged; fewer means the
/// traffic barely went through the fault.
pub const MIN_DELAYED_CHUNKS: f64 = 20.0;

/// The two-sided 99.9% normal quantile: an HTTP fault's abort or delay share is off only
/// when it lies outside `p ± Z·sqrt(p(1-p)/n)` (plus the tolerance), so a fault working
/// as asked is called off about once in a thousand judgements.
pub const BINOMIAL_Z: f64 = 3.29;

/// How one fault application measured against what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EffectVerdict {
    /// It bit, as close to the asked effect as the tolerance allows (or as close as
    /// the backend can tell: the rule says what was checked).
    Held,
    /// It bit, but further from the asked effect than the tolerance allows.
    Short,
    /// It had no measurable effect.
    None,
    /// The agent reported none of the figures the rule reads.
    Unmeasured,
}

impl EffectVerdict {
    /// `held`, `short`, `none`, `unmeasured`.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectVerdict::Held => "held",
            EffectVerdict::Short => "short",
            EffectVerdict::None => "none",
            EffectVerdict::Unmeasured => "unmeasured",
        }
    }

    /// Whether the fault earned its part of a verdict.
    pub fn bit(self) -> bool {
        self == EffectVerdict::Held
    }
}

/// The effect gate's judgement of one fault application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectCheck {
    /// How it measured.
    pub verdict: EffectVerdict,
    /// Whether a miss makes the run inconclusive (`effect.required`).
    pub required: bool,
    /// What was asked, e.g. `mean added delay 100ms`.
    pub asked: String,
    /// What was measured, e.g. `mean added delay 101.2 ms over 5120 chunks`.
    pub measured: String,
    /// The rule applied, e.g. `90-110 ms over at least 20 chunks (tolerance 10%)`.
    pub rule: String,
}

impl EffectCheck {
    /// Whether this check stands between the run and a pass.
    pub fn blocks(&self) -> bool {
        self.required && !self.verdict.bit()
    }

    /// One line for verdict reasons: ``fault `x` (target): asked ..., measured ...``.
    pub fn describe(&self, fault: &str, target: &str) -> String {
        format!(
            "fault `{fault}` on {target} {}: asked {}, measured {} (rule: {})",
            match self.verdict {
                EffectVerdict::Held => "held",
                EffectVerdict::Short => "fell short",
                EffectVerdict::None => "did not bite",
                EffectVerdict::Unmeasured => "was not measured",
            },
            self.asked,
            self.measured,
            self.rule
        )
    }
}

/// Judges one application of `fault`. `None` when it was never applied (failed or
/// skipped): those outcomes speak for themselves.
pub fn judge(fault: &Fault, app: &FaultApplication) -> Option<EffectCheck> {
    if matches!(
        app.status,
        FaultStatus::Failed | FaultStatus::Refused | FaultStatus::Skipped
    ) {
        return None;
    }
    let backend = app.backend.as_deref().unwrap_or("");
    let m = Metrics(&app.effect);
    let tol = fault.effect.tolerance.fraction();
    let (verdict, asked, measured, rule) = match &fault.kind {
        FaultKind::Network(n) => network(&n.action, backend, &m, tol),
        FaultKind::Cpu(c) => {
            let asked = c.load.fraction() * f64::from(c.workers.unwrap_or(1));
            cpu(asked, &m, tol)
        }
        FaultKind::Memory(mem) => {
            let asked = mem.size.0 as f64;
            let r = format!("at least {:.0}% of the size held", (1.0 - tol) * 100.0);
            let a = format!("{} held", mem.size);
            match m.get("bytes_held") {
                None => unmeasured(a, r),
                Some(h) => (
                    at_least(h, asked * (1.0 - tol)),
                    a,
                    format!("{:.1} MiB held", h / f64::from(1u32 << 20)),
                    r,
                ),
            }
        }
        FaultKind::Process(p) if backend == "kubernetes-api" => {
            let rule = "the Kubernetes API deleted the pod (grace 0)".to_string();
            let asked = format!("pod {} killed", app.target.name);
            match m.get("delivered") {
                None => unmeasured(asked, rule),
                Some(d) => (
                    counted(d),
                    asked,
                    if d >= 1.0 { "deleted" } else { "not deleted" }.into(),
                    rule,
                ),
            }
        }
        FaultKind::Process(p) => process(p.signal, app.target.pid, &m),
        FaultKind::Container(c) => container(c.action, &m),
        FaultKind::Http(h) => http(h, &m, tol),
    };
    Some(EffectCheck {
        verdict,
        required: fault.effect.required,
        asked,
        measured,
        rule,
    })
}

type Judged = (EffectVerdict, String, String, String);

struct Metrics<'a>(&'a ObservedEffect);

impl Metrics<'_> {
    fn get(&self, name: &str) -> Option<f64> {
        self.0.metrics.get(name).copied().filter(|v| v.is_finite())
    }

    /// A counter the backend leaves out while it is zero.
    fn count(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(0.0)
    }
}

fn unmeasured(asked: String, rule: String) -> Judged {
    (
        EffectVerdict::Unmeasured,
        asked,
        "nothing the rule reads".into(),
        rule,
    )
}

/// `Held` when a counter moved at all, else `None`.
fn counted(n: f64) -> EffectVerdict {
    if n >= 1.0 {
        EffectVerdict::Held
    } else {
        EffectVerdict::None
    }
}

/// `Held` at or above `floor`, `None` at zero, else `Short`.
fn at_least(v: f64, floor: f64) -> EffectVerdict {
    if v >= floor {
        EffectVerdict::Held
    } else if v <= 0.0 {
        EffectVerdict::None
    } else {
        EffectVerdict::Short
    }
}

fn ms(d: faultline_spec::Duration) -> f64 {
    d.0.as_secs_f64() * 1000.0
}

/// A mean added delay over enough delayed chunks, within `±tol` of `asked_ms`.
/// Judges the mean added delay over the `delayed_chunks` released. `still_held` were
/// chosen for a delay but not yet released when the fault ended (a delay longer than
/// what was left of it): they were delayed at least that long, so with fewer than
/// [`MIN_DELAYED_CHUNKS`] released the mean is not judged, though what was released
/// must still be on size.
fn mean_delay(
    m: &Metrics,
    asked_ms: f64,
    tol: f64,
    what: &str,
    still_held: f64,
) -> (EffectVerdict, String, String) {
    let n = m.count("delayed_chunks");
    let mean = m.count("mean_added_delay_ms");
    let (lo, hi) = (asked_ms * (1.0 - tol), asked_ms * (1.0 + tol));
    let off = n > 0.0 && (mean < lo || mean > hi);
    let verdict = if n == 0.0 && still_held == 0.0 {
        EffectVerdict::None
    } else if off || (n < MIN_DELAYED_CHUNKS && still_held == 0.0) {
        EffectVerdict::Short
    } else {
        EffectVerdict::Held
    };
    let held = if still_held > 0.0 {
        format!(
            ", {still_held:.0} still held when the fault ended (the mean is judged on at least {MIN_DELAYED_CHUNKS:.0} released)"
        )
    } else {
        String::new()
    };
    (
        verdict,
        format!("mean added delay {mean:.1} ms over {n:.0} {what}{held}"),
        format!(
            "mean {lo:.1}-{hi:.1} ms over at least {MIN_DELAYED_CHUNKS:.0} {what} (tolerance {:.0}%)",
            tol * 100.0
        ),
    )
}

fn network(action: &NetworkAction, backend: &str, m: &Metrics, tol: f64) -> Judged {
    let proxy = matches!(backend, "proxy" | "redirect");
    let asked = match action {
        NetworkAction::Latency(l) => format!("added delay {} (jitter {})", l.delay, l.jitter),
        NetworkAction::Loss(l) => format!("{} of packets lost", l.percent),
        NetworkAction::Bandwidth(b) => format!("traffic capped at {}", b.rate),
        NetworkAction::Reset(_) => "connections reset".into(),
        NetworkAction::Partition(_) => "no traffic through".into(),
    };
    match (action, backend) {
        (NetworkAction::Latency(l), _) if proxy => {
            let (v, measured, rule) = mean_delay(m, ms(l.delay), tol, "delayed chunks", 0.0);
            (v, asked, measured, rule)
        }
        (NetworkAction::Loss(_) | NetworkAction::Reset(_) | NetworkAction::Partition(_), _)
            if proxy =>
        {
            // One proxy counter each; the fault bit when it moved.
            let (metric, what, rule) = match action {
                NetworkAction::Loss(_) => (
                    "stalled_chunks",
                    "chunks stalled as lost",
                    "at least one chunk lost (the proxy does not count the chunks it passed, so the share is not judged)",
                ),
                NetworkAction::Reset(_) => (
                    "reset_connections",
                    "connections reset",
                    "at least one connection reset",
                ),
                _ => (
                    "held_streams",
                    "connection directions held",
                    "at least one connection held",
                ),
            };
            let n = m.count(metric);
            (counted(n), asked, format!("{n:.0} {what}"), rule.into())
        }
        (NetworkAction::Bandwidth(_), _) if proxy => {
            let held = m.count("delayed_chunks");
            let paced = m.count("paced_bytes");
            (
                counted(held),
                asked,
                format!("{paced:.0} bytes paced, {held:.0} chunks held back to the cap"),
                "the cap held traffic back at least once (the pacer sends held-back bytes at exactly the cap)".into(),
            )
        }
        (
            NetworkAction::Loss(_) | NetworkAction::Reset(_) | NetworkAction::Partition(_),
            "nftables",
        ) => {
            let rule = "at least one packet dropped or rejected by the fault's rules".to_string();
            match m.get("matched_packets") {
                None => unmeasured(asked, rule),
                Some(n) => (
                    counted(n),
                    asked,
                    format!("{n:.0} packets dropped or rejected"),
                    rule,
                ),
            }
        }
        (NetworkAction::Bandwidth(_), "tc" | "netem") => {
            let rule = "the htb class held traffic back at least once (overlimits)".to_string();
            match m.get("overlimits") {
                None => unmeasured(asked, rule),
                Some(n) => (
                    counted(n),
                    asked,
                    format!(
                        "{:.0} bytes through the cap, held back {n:.0} times",
                        m.count("shaped_bytes")
                    ),
                    rule,
                ),
            }
        }
        (_, "tc" | "netem") => {
            let rule =
                "traffic went through the netem qdisc (netem does not report the delay or drops it added)".to_string();
            match m.get("shaped_bytes") {
                None => unmeasured(asked, rule),
                Some(n) => (
                    counted(n),
                    asked,
                    format!("{n:.0} bytes through netem"),
                    rule,
                ),
            }
        }
        _ => unmeasured(asked, format!("no rule for backend `{backend}`")),
    }
}

/// CPU: the burners at `1 - tol` of the asked CPUs, or the target's cgroup at `1 - tol`
/// of its quota when the quota is what stopped them.
fn cpu(asked: f64, m: &Metrics, tol: f64) -> Judged {
    let a = format!("{:.0}% of a CPU burned", asked * 100.0);
    let floor = asked * (1.0 - tol);
    let rule = format!(
        "at least {:.0}% of a CPU (tolerance {:.0}%), or the target's cgroup at {:.0}% of its CPU quota",
        floor * 100.0,
        tol * 100.0,
        (1.0 - tol) * 100.0
    );
    let (Some(util), Some(workers)) = (m.get("utilization"), m.get("workers")) else {
        return unmeasured(a, rule);
    };
    let burned = util * workers;
    let mut measured = format!("{:.1}% of a CPU burned", burned * 100.0);
    let mut verdict = at_least(burned, floor);
    if verdict != EffectVerdict::Held
        && let (Some(quota), Some(usage)) = (m.get("cgroup_cpu_quota"), m.get("cgroup_cpu_usage"))
    {
        measured.push_str(&format!(
            "; target cgroup at {:.0}% of a CPU against a quota of {:.0}%",
            usage * 100.0,
            quota * 100.0
        ));
        if usage >= quota * (1.0 - tol) {
            verdict = EffectVerdict::Held;
            measured.push_str(" (the quota capped the burners: the most this target allows)");
        }
    }
    (verdict, a, measured, rule)
}

fn process(signal: Signal, target_pid: Option<u32>, m: &Metrics) -> Judged {
    let name = match signal {
        Signal::Kill => "SIGKILL",
        Signal::Term => "SIGTERM",
        Signal::Stop => "SIGSTOP",
    };
    let asked = match target_pid {
        Some(p) => format!("{name} to pid {p}"),
        None => format!("{name} to the target"),
    };
    let stop = signal == Signal::Stop;
    let rule = if stop {
        "delivered to the target's pid, which then showed state T (stopped)"
    } else {
        "delivered to the target's pid"
    }
    .to_string();
    let Some(delivered) = m.get("delivered") else {
        return unmeasured(asked, rule);
    };
    let pid = m.get("pid");
    let right_pid = match (pid, target_pid) {
        (Some(got), Some(want)) => got == f64::from(want),
        _ => true,
    };
    let stopped = m.count("stopped") >= 1.0;
    let verdict = if delivered < 1.0 {
        EffectVerdict::None
    } else if !right_pid || (stop && !stopped) {
        EffectVerdict::Short
    } else {
        EffectVerdict::Held
    };
    let mut measured = format!(
        "{} to pid {}",
        if delivered >= 1.0 {
            "delivered"
        } else {
            "not delivered"
        },
        pid.map_or("?".into(), |p| format!("{p:.0}"))
    );
    if stop {
        measured.push_str(if stopped {
            ", stopped"
        } else {
            ", did not stop"
        });
    }
    (verdict, asked, measured, rule)
}

fn container(action: ContainerAction, m: &Metrics) -> Judged {
    let (asked, rule) = match action {
        ContainerAction::Kill => (
            "container killed",
            "not running right after the kill, or running again under a new main process",
        ),
        ContainerAction::Pause => ("container paused", "state `paused` right after the pause"),
        ContainerAction::Restart => (
            "container restarted",
            "a new main process right after the restart",
        ),
    };
    match m.get("took_effect") {
        None => unmeasured(asked.into(), rule.into()),
        Some(t) => (
            counted(t),
            asked.into(),
            if t >= 1.0 { "it did" } else { "it did not" }.into(),
            rule.into(),
        ),
    }
}

/// Whether `k` of `n` is consistent with a share `p`: inside the 99.9% binomial bound
/// widened by `tol` of `p`. Returns the bound's half-width too.
fn share_consistent(k: f64, n: f64, p: f64, tol: f64) -> (bool, f64) {
    let half = BINOMIAL_Z * (p * (1.0 - p) / n).sqrt() + tol * p;
    ((k / n - p).abs() <= half, half)
}

fn http(h: &HttpFault, m: &Metrics, tol: f64) -> Judged {
    let mut asked = Vec::new();
    if let Some(a) = &h.abort {
        asked.push(format!(
            "{} of matching requests answered {}",
            a.percent, a.status
        ));
    }
    if let Some(d) = &h.delay {
        asked.push(format!(
            "{} of the rest delayed by {}",
            d.percent.map_or("100%".into(), |p| p.to_string()),
            d.delay
        ));
    }
    let asked = asked.join(", ");
    let Some(n) = m.get("matched_requests") else {
        return unmeasured(asked, "matching requests counted".into());
    };
    if n < 1.0 {
        let scope = if h.paths.is_empty() && h.methods.is_empty() {
            String::new()
        } else {
            format!(" (paths {:?}, methods {:?})", h.paths, h.methods)
        };
        return (
            EffectVerdict::None,
            asked,
            format!("no request matched{scope}"),
            "at least one matching request".into(),
        );
    }
    let mut verdicts = Vec::new();
    let mut measured = vec![format!("{n:.0} matching requests")];
    let mut rules = Vec::new();
    let aborted = m.count("aborted_requests");
    if let Some(a) = &h.abort {
        let p = a.percent.fraction();
        let (ok, half) = share_consistent(aborted, n, p, tol);
        verdicts.push(if aborted < 1.0 && p > 0.0 {
            EffectVerdict::None
        } else if ok {
            EffectVerdict::Held
        } else {
            EffectVerdict::Short
        });
        measured.push(format!(
            "{aborted:.0} aborted ({:.1}%)",
            aborted / n * 100.0
        ));
        rules.push(format!(
            "aborted share {:.1}% ± {:.1} pts",
            p * 100.0,
            half * 100.0
        ));
    }
    if let Some(d) = &h.delay {
        let rest = n - aborted;
        let delayed = m.count("delayed_requests");
        let q = d.percent.map_or(1.0, |p| p.fraction());
        measured.push(format!("{delayed:.0} delayed"));
        if rest >= 1.0 {
            let (ok, half) = share_consistent(delayed, rest, q, tol);
            let still_held = (delayed - m.count("delayed_chunks")).max(0.0);
            let (mean_v, mean_text, mean_rule) =
                mean_delay(m, ms(d.delay), tol, "delayed requests", still_held);
            verdicts.push(if delayed < 1.0 && q > 0.0 {
                EffectVerdict::None
            } else if !ok {
                EffectVerdict::Short
            } else {
                mean_v
            });
            measured.push(mean_text);
            rules.push(format!(
                "delayed share {:.1}% ± {:.1} pts of the requests not aborted; {mean_rule}",
                q * 100.0,
                half * 100.0
            ));
        }
    }
    // The worst part decides: no effect at all, then an effect off its asked size.
    let verdict = [EffectVerdict::None, EffectVerdict::Short]
        .into_iter()
        .find(|v| verdicts.contains(v))
        .unwrap_or(EffectVerdict::Held);
    rules.push("99.9% binomial bounds".into());
    (verdict, asked, measured.join(", "), rules.join("; "))
}

/// Judges every application against its fault in `faults` (matched by name).
pub fn judge_all(faults: &[Fault], apps: &mut [FaultApplication]) {
    for app in apps {
        app.effect_check = faults
            .iter()
            .find(|f| f.name == app.name)
            .and_then(|f| judge(f, app));
    }
}

/// The applications whose missed effect stands between the run and a pass, described.
pub fn blocking(faults: &[FaultApplication]) -> Vec<String> {
    faults
        .iter()
        .filter_map(|a| {
            a.effect_check
                .as_ref()
                .filter(|c| c.blocks())
                .map(|c| c.describe(&a.name, &a.target.name))
        })
        .collect()
}

#[cfg(test)]
mod tests;
