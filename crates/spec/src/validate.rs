//! `validate()`: raw documents into the checked model, collecting every problem.
//!
//! Every rule here works on raw values and a field path only, never on source
//! positions, so the same checks serve experiment files and agent requests
//! ([`validate_fault_kind`] is the one fault validator for both).

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use crate::diagnostic::{Diagnostic, Diagnostics, Path, Problems, all_of, one_of};
use crate::model::{
    self, API_VERSION, AbortCondition, CpuFault, Experiment, Fault, FaultKind, HttpAbort,
    HttpDelay, HttpFault, KIND, LoadRequest, LoadTarget, NetworkAction, NetworkFault, Peer,
    PodSelector, Recovery, Schedule, SelectionMode, ServiceTarget, Slo, SloKind, SloSource,
    SteadyState, Target,
};
use crate::raw;
use crate::units::{Bandwidth, ByteSize, Duration, Percent, Rate, UnitError};

/// Facts about the environment that some rules need; the spec crate does no I/O, so
/// the caller supplies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// CPUs this host can give (`std::thread::available_parallelism`). When set, a CPU
    /// fault asking for more (`load × workers`) is rejected.
    pub host_cpus: Option<usize>,
    /// The services an experiment may name (fault targets, the load target, SLO and
    /// abort services), when the environment's set is known: the reference fleet's in
    /// local and compose modes. `None` in Kubernetes, where a service is whatever
    /// `app.kubernetes.io/name` the cluster runs, so only the run can tell.
    pub services: Option<Vec<String>>,
}

/// The highest load rate, 100,000 requests/s: several times what one open-loop
/// generator paces on a small host (docs/performance.md), so anything above it is a
/// typo or an overflow, not a plan.
pub const MAX_LOAD_RATE: f64 = 100_000.0;

/// Default evaluation window of SLOs and abort conditions.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default load connections.
pub const DEFAULT_CONNECTIONS: u32 = 16;
/// Most connections a load may open (`load.maxConnections`).
pub const MAX_LOAD_CONNECTIONS: u32 = 10_000;
/// Cap of the default `load.maxConnections`: keeps a default run within the usual
/// 1024 open-file soft limit, with room for everything else the process holds.
pub const DEFAULT_MAX_CONNECTIONS_CAP: u32 = 512;

/// The default `load.maxConnections`: `max(connections, min(ceil(rate × timeout), 512))`.
///
/// A request is abandoned at its timeout, so the open model never has more than
/// `rate × timeout` requests in flight: that many connections mean no request ever
/// waits inside the generator for one. The cap bounds file descriptors on very fast
/// schedules, where an explicit `maxConnections` says what the operator wants.
pub fn default_max_connections(connections: u32, rate: Rate, timeout: Duration) -> u32 {
    let in_flight = (rate.as_per_second() * timeout.0.as_secs_f64()).ceil();
    let in_flight = if in_flight.is_finite() && in_flight >= 1.0 {
        in_flight.min(f64::from(DEFAULT_MAX_CONNECTIONS_CAP)) as u32
    } else {
        1
    };
    connections
        .max(in_flight)
        .min(MAX_LOAD_CONNECTIONS.max(connections))
}
/// Default per-request timeout of the load generator.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// True for a DNS-1123 label: 1-63 lower case letters, digits and `-`, starting and
/// ending with a letter or digit. Kubernetes requires it of names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn name_rule(p: &mut Problems, path: &Path, what: &str, name: &str) {
    if !is_dns_label(name) {
        p.push(
            path,
            format!(
                "{what} `{name}` is not a valid name: use 1-63 lower case letters, digits and `-`, starting and ending with a letter or digit"
            ),
        );
    }
}

fn unit<T: FromStr<Err = UnitError>>(p: &mut Problems, path: &Path, text: &str) -> Option<T> {
    match text.parse::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(path, e.message);
            None
        }
    }
}

fn percent(p: &mut Problems, path: &Path, text: &str) -> Option<Percent> {
    match text.parse::<Percent>() {
        Ok(v) => Some(v),
        Err(e) => {
            let mut message = e.message;
            // `max: 2` is a fraction (200%); the author almost surely meant `2%`.
            if let Ok(n) = text.trim().parse::<f64>() {
                if n > 1.0 && n <= 100.0 {
                    message.push_str(&format!(
                        " (a bare number is a fraction of 1; did you mean `{n}%`?)"
                    ));
                }
            }
            p.push(path, message);
            None
        }
    }
}

fn positive_duration(p: &mut Problems, path: &Path, text: &str) -> Option<Duration> {
    let d: Duration = unit(p, path, text)?;
    if d == Duration::ZERO {
        p.push(
            path,
            format!("expected a duration above zero, found `{text}`"),
        );
        return None;
    }
    Some(d)
}

fn opt_duration(
    p: &mut Problems,
    path: &Path,
    text: Option<&raw::DurationText>,
) -> Option<Duration> {
    match text {
        None => Some(Duration::ZERO),
        Some(t) => unit(p, path, t.as_str()),
    }
}

/// Names of the fields set among `fields`, for "exactly one of" rules.
fn set_fields<'a>(fields: &[(&'a str, bool)]) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect()
}

/// Checks that exactly one of `fields` is set; returns its name.
fn exactly_one<'a>(
    p: &mut Problems,
    path: &Path,
    what: &str,
    fields: &[(&'a str, bool)],
) -> Option<&'a str> {
    let set = set_fields(fields);
    let all: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    match set.as_slice() {
        [one] => Some(one),
        [] => {
            p.push(
                path,
                format!("{what} needs exactly one of {}, found none", one_of(&all)),
            );
            None
        }
        [_, rest @ ..] => {
            p.push(
                &path.key(rest[0]),
                format!(
                    "{what} needs exactly one of {}, found {}; split them into separate entries",
                    one_of(&all),
                    all_of(&set)
                ),
            );
            None
        }
    }
}

/// Validates one experiment document. Parts that deserialization already dropped
/// (`Recover(None)`) were reported there; rules that need the whole picture (SLO
/// references) are skipped when such a part is missing, rather than giving
/// misleading follow-up errors.
pub(crate) fn experiment(
    doc: &raw::ExperimentDocument,
    opts: &ValidateOptions,
    p: &mut Problems,
) -> Option<Experiment> {
    let root = Path::root();
    if doc.api_version != API_VERSION {
        p.push(
            &root.key("apiVersion"),
            format!("expected `{API_VERSION}`, found `{}`", doc.api_version),
        );
    }
    if doc.kind != KIND {
        p.push(
            &root.key("kind"),
            format!("expected `{KIND}`, found `{}`", doc.kind),
        );
    }
    let metadata = doc.metadata.get();
    if let Some(m) = metadata {
        name_rule(
            p,
            &root.key("metadata").key("name"),
            "experiment name",
            &m.name,
        );
    }
    let spec = spec(doc.spec.get()?, opts, p, &root.key("spec"));
    let metadata = metadata?;
    Some(Experiment {
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        labels: metadata.labels.clone(),
        spec: spec?,
    })
}

fn spec(
    s: &raw::ExperimentSpec,
    opts: &ValidateOptions,
    p: &mut Problems,
    path: &Path,
) -> Option<model::ExperimentSpec> {
    let before = p.0.len();
    if let Some(known) = &opts.services {
        unknown_services(s, known, p, path);
    }
    let duration = positive_duration(p, &path.key("duration"), s.duration.as_str());

    let schedule = schedule(s, p, path);
    let load = s.load.as_ref().map(|l| {
        l.get()
            .and_then(|l| load(l, duration, p, &path.key("load")))
    });

    // SLOs first: steady state and the cross-field rules refer to them.
    let mut slo_names = HashSet::new();
    let mut slos = Vec::new();
    let mut slos_complete = true;
    for (i, slo) in s.slos.iter().enumerate() {
        let ipath = path.key("slos").index(i);
        let Some(slo) = slo.get() else {
            slos_complete = false;
            continue;
        };
        if !slo_names.insert(slo.name.as_str()) {
            p.push(
                &ipath.key("name"),
                format!(
                    "SLO name `{}` is used twice: SLO names must be unique",
                    slo.name
                ),
            );
        }
        name_rule(p, &ipath.key("name"), "SLO name", &slo.name);
        let kind = slo_kind(
            &SloFields {
                error_rate: slo.error_rate.as_ref(),
                latency: slo.latency.as_ref(),
                throughput: slo.throughput.as_ref(),
                promql: slo.promql.as_deref(),
                max: slo.max,
                min: slo.min,
                source: slo.source,
            },
            p,
            &ipath,
            "an SLO",
        );
        let window = window(slo.window.as_ref(), duration, p, &ipath);
        if let (Some(kind), Some(window)) = (kind, window) {
            slos.push(Slo {
                name: slo.name.clone(),
                window,
                source: slo.source.unwrap_or_default(),
                kind,
            });
        }
    }

    let mut fault_names = HashSet::new();
    let mut faults = Vec::new();
    for (i, fault) in s.faults.iter().enumerate() {
        let ipath = path.key("faults").index(i);
        let Some(f) = fault.get() else { continue };
        if !fault_names.insert(f.name.as_str()) {
            p.push(
                &ipath.key("name"),
                format!(
                    "fault name `{}` is used twice: fault names must be unique",
                    f.name
                ),
            );
        }
        if let Some(checked) = fault_entry(f, duration, opts, p, &ipath) {
            faults.push(checked);
        }
    }

    let steady_state = s.steady_state.as_ref().map(|ss| {
        ss.get().and_then(|ss| {
            let spath = path.key("steadyState");
            let window = positive_duration(p, &spath.key("window"), ss.window.as_str());
            for (i, name) in ss.slos.iter().enumerate() {
                if slos_complete && !slo_names.contains(name.as_str()) {
                    let known: Vec<&str> = s.slos.iter().filter_map(|s| s.get()).map(|s| s.name.as_str()).collect();
                    let hint = crate::diagnostic::did_you_mean(name, known.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    p.push(
                        &spath.key("slos").index(i),
                        format!(
                            "SLO `{name}` is not defined in spec.slos{hint}; defined SLOs: {}",
                            if known.is_empty() { "none".to_owned() } else { one_of(&known) }
                        ),
                    );
                }
            }
            if ss.slos.is_empty() {
                p.push(&spath.key("slos"), "list at least one SLO from spec.slos to check before faults start");
            }
            // The steady state is observed before the first fault starts.
            if let (Some(window), Some(first)) = (window, faults.iter().map(|f| f.after).min()) {
                if window > first {
                    p.push(
                        &spath.key("window"),
                        format!(
                            "the steady state window ({window}) must fit before the first fault starts (at {first})"
                        ),
                    );
                }
            }
            Some(SteadyState {
                window: window?,
                slos: ss.slos.clone(),
            })
        })
    });

    let mut abort = Vec::new();
    for (i, a) in s.abort.iter().enumerate() {
        let ipath = path.key("abort").index(i);
        let Some(a) = a.get() else { continue };
        let kind = slo_kind(
            &SloFields {
                error_rate: a.error_rate.as_ref(),
                latency: a.latency.as_ref(),
                throughput: a.throughput.as_ref(),
                promql: a.promql.as_deref(),
                max: a.max,
                min: a.min,
                source: a.source,
            },
            p,
            &ipath,
            "an abort condition",
        );
        let window = window(a.window.as_ref(), duration, p, &ipath);
        let for_duration = unit::<Duration>(p, &ipath.key("for"), a.for_duration.as_str());
        if let (Some(kind), Some(window), Some(for_duration)) = (kind, window, for_duration) {
            abort.push(AbortCondition {
                window,
                source: a.source.unwrap_or_default(),
                kind,
                for_duration,
            });
        }
    }

    let recovery = s.recovery.as_ref().map(|r| {
        r.get().and_then(|r| {
            let rpath = path.key("recovery").key("within");
            let within = positive_duration(p, &rpath, r.within.as_str())?;
            let nothing_to_recover_from = s.faults.is_empty()
                && s
                    .load
                    .as_ref()
                    .is_none_or(|l| l.get().is_some_and(|l| l.surges.is_empty()));
            if nothing_to_recover_from {
                p.push(
                    &path.key("recovery"),
                    "recovery is judged from the end of the last fault or load surge, and this experiment has neither: add one, or remove `recovery`",
                );
                return None;
            }
            let surges = match &load {
                Some(Some(l)) => l.surges.as_slice(),
                _ => &[],
            };
            if let (Some(total), Some(last_end)) =
                (duration, model::disturbance_end(&faults, surges))
                && last_end + within.std() > total.std()
            {
                p.push(
                    &rpath,
                    format!(
                        "recovery must be observable inside the run: the last fault or surge ends at {}, plus {within} is past the experiment duration {total}",
                        Duration(last_end)
                    ),
                );
            }
            Some(Recovery { within })
        })
    });

    let replicas = replicas(s.replicas.as_ref(), p, &path.key("replicas"));

    if p.0.len() != before {
        return None;
    }
    // A part that is present but broken (`Some(None)`) makes the whole spec invalid.
    let load = match load {
        None => None,
        Some(l) => Some(l?),
    };
    let steady_state = match steady_state {
        None => None,
        Some(s) => Some(s?),
    };
    let recovery = match recovery {
        None => None,
        Some(r) => Some(r?),
    };
    Some(model::ExperimentSpec {
        description: s.description.clone(),
        duration: duration?,
        schedule,
        load,
        steady_state,
        faults,
        slos,
        abort,
        recovery,
        replicas,
    })
}

/// An evaluation window: above zero and, since it is filled with measurements from
/// this run, no longer than the run (the default is capped to it).
fn window(
    text: Option<&raw::DurationText>,
    run: Option<Duration>,
    p: &mut Problems,
    path: &Path,
) -> Option<Duration> {
    match text {
        None => Some(run.map_or(DEFAULT_WINDOW, |run| DEFAULT_WINDOW.min(run))),
        Some(t) => {
            let w = positive_duration(p, &path.key("window"), t.as_str())?;
            if let Some(run) = run {
                if w > run {
                    p.push(
                        &path.key("window"),
                        format!("the window ({w}) is longer than the whole experiment ({run}): it could never fill"),
                    );
                    return None;
                }
            }
            Some(w)
        }
    }
}

fn schedule(s: &raw::ExperimentSpec, p: &mut Problems, path: &Path) -> Option<Schedule> {
    let Some(cron_text) = &s.schedule else {
        if s.time_zone.is_some() {
            p.push(
                &path.key("timeZone"),
                "`timeZone` only applies to a `schedule`, and there is none",
            );
        }
        if s.concurrency_policy.is_some() {
            p.push(
                &path.key("concurrencyPolicy"),
                "`concurrencyPolicy` only applies to a `schedule`, and there is none",
            );
        }
        return None;
    };
    let mut ok = true;
    let fields = cron_text.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        p.push(
            &path.key("schedule"),
            format!(
                "expected a cron expression with seconds, `sec min hour day-of-month month day-of-week [year]` (6 or 7 fields) like `0 0 2 * * *`, found {fields} fields in `{cron_text}`"
            ),
        );
        ok = false;
    } else if let Err(e) = cron::Schedule::from_str(cron_text) {
        // The cron crate draws a caret under the expression; keep only its explanation
        // so every diagnostic stays on one line.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && *l != "^")
            .unwrap_or("not a valid cron expression");
        p.push(
            &path.key("schedule"),
            format!("invalid cron expression `{cron_text}`: {reason}"),
        );
        ok = false;
    }
    if let Some(tz) = &s.time_zone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            let hint = crate::diagnostic::did_you_mean(
                tz,
                chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()),
            )
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
            p.push(
                &path.key("timeZone"),
                format!("unknown time zone `{tz}`{hint}: expected an IANA name like `Europe/Paris` or `UTC`"),
            );
            ok = false;
        }
    }
    ok.then(|| Schedule {
        cron: cron_text.clone(),
        time_zone: s.time_zone.clone(),
        concurrency_policy: s.concurrency_policy.unwrap_or_default(),
    })
}

fn load(
    l: &raw::Load,
    run: Option<Duration>,
    p: &mut Problems,
    path: &Path,
) -> Option<model::Load> {
    let before = p.0.len();
    let target = if let Some(rest) = l
        .target
        .strip_prefix("http://")
        .or_else(|| l.target.strip_prefix("https://"))
    {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        if host.is_empty() {
            p.push(
                &path.key("target"),
                format!("URL `{}` has no host", l.target),
            );
        }
        LoadTarget::Url(l.target.clone())
    } else {
        if !is_dns_label(&l.target) {
            p.push(
                &path.key("target"),
                format!(
                    "expected a service name (lower case letters, digits and `-`) or an `http://` URL, found `{}`",
                    l.target
                ),
            );
        }
        LoadTarget::Service(l.target.clone())
    };
    let rate = load_rate(p, &path.key("rate"), &l.rate);
    let surges = surges(&l.surges, run, p, &path.key("surges"));
    let connections = l.connections.unwrap_or(DEFAULT_CONNECTIONS);
    if connections == 0 {
        p.push(
            &path.key("connections"),
            "expected at least 1 connection, found 0",
        );
    } else if connections > MAX_LOAD_CONNECTIONS {
        p.push(
            &path.key("connections"),
            format!("expected at most {MAX_LOAD_CONNECTIONS} connections, found {connections}"),
        );
    }
    if let Some(max) = l.max_connections {
        if max > MAX_LOAD_CONNECTIONS {
            p.push(
                &path.key("maxConnections"),
                format!("expected at most {MAX_LOAD_CONNECTIONS}, found {max}"),
            );
        } else if max < connections {
            p.push(
                &path.key("maxConnections"),
                format!(
                    "expected at least `connections` ({connections}), found {max}: the generator never closes the connections it opens up front"
                ),
            );
        }
    }
    let timeout = match &l.timeout {
        None => Some(DEFAULT_REQUEST_TIMEOUT),
        Some(t) => positive_duration(p, &path.key("timeout"), t.as_str()),
    };
    if l.requests.is_empty() {
        p.push(
            &path.key("requests"),
            "list at least one request, e.g. `{method: GET, path: /}`",
        );
    }
    let mut requests = Vec::new();
    for (i, r) in l.requests.iter().enumerate() {
        let rpath = path.key("requests").index(i);
        let method = r.method.clone().unwrap_or_else(|| "GET".into());
        if !HTTP_METHODS.contains(&method.as_str()) {
            p.push(
                &rpath.key("method"),
                format!(
                    "unknown HTTP method `{method}`: expected {}",
                    one_of(HTTP_METHODS)
                ),
            );
        }
        if !r.path.starts_with('/') {
            p.push(
                &rpath.key("path"),
                format!("expected a path starting with `/`, found `{}`", r.path),
            );
        }
        for name in r.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                p.push(
                    &rpath.key("headers").key(name),
                    format!("`{name}` is not a valid HTTP header name"),
                );
            }
        }
        let weight = r.weight.unwrap_or(1);
        if weight == 0 {
            p.push(
                &rpath.key("weight"),
                "expected a weight of at least 1, found 0",
            );
        }
        requests.push(LoadRequest {
            method,
            path: r.path.clone(),
            body: r.body.clone(),
            headers: r.headers.clone(),
            weight,
        });
    }
    if p.0.len() != before {
        return None;
    }
    let (rate, timeout, surges) = (rate?, timeout?, surges?);
    // Sized for the busiest stretch: a surge needs as many requests in flight as it brings.
    let peak = surges
        .iter()
        .map(|s| s.rate)
        .fold(rate, |a, b| if b > a { b } else { a });
    Some(model::Load {
        target,
        rate,
        connections,
        max_connections: l
            .max_connections
            .unwrap_or_else(|| default_max_connections(connections, peak, timeout)),
        timeout,
        requests,
        surges,
    })
}

/// A located error at `path.duration` unless `[after, after + duration)` ends inside the
/// experiment's `run`.
fn inside_run(
    p: &mut Problems,
    path: &Path,
    what: &str,
    after: Duration,
    duration: Duration,
    run: Duration,
) {
    let end = Duration(after.std() + duration.std());
    if end > run {
        p.push(
            &path.key("duration"),
            format!(
                "the {what} must lie inside the experiment: it starts at {after} and lasts {duration}, ending at {end}, after the experiment's duration {run}"
            ),
        );
    }
}

fn load_rate(p: &mut Problems, path: &Path, text: &raw::RateText) -> Option<Rate> {
    unit::<Rate>(p, path, text.as_str()).filter(|r| {
        let ok = r.as_per_second() <= MAX_LOAD_RATE;
        if !ok {
            p.push(
                path,
                format!(
                    "expected at most {MAX_LOAD_RATE}/s, found `{}`: one load generator cannot pace more",
                    text.as_str()
                ),
            );
        }
        ok
    })
}

/// `load.surges`: each inside the run, none overlapping another.
fn surges(
    list: &[raw::Surge],
    run: Option<Duration>,
    p: &mut Problems,
    path: &Path,
) -> Option<Vec<model::Surge>> {
    let before = p.0.len();
    let mut out: Vec<(usize, model::Surge)> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let spath = path.index(i);
        let after = unit::<Duration>(p, &spath.key("after"), s.after.as_str());
        let duration = positive_duration(p, &spath.key("duration"), s.duration.as_str());
        let rate = load_rate(p, &spath.key("rate"), &s.rate);
        let (Some(after), Some(duration), Some(rate)) = (after, duration, rate) else {
            continue;
        };
        if let Some(run) = run {
            inside_run(p, &spath, "surge", after, duration, run);
        }
        out.push((
            i,
            model::Surge {
                after,
                duration,
                rate,
            },
        ));
    }
    out.sort_by_key(|(_, s)| s.after);
    for pair in out.windows(2) {
        let ((_, a), (j, b)) = (&pair[0], &pair[1]);
        let a_end = Duration(a.after.std() + a.duration.std());
        if b.after < a_end {
            p.push(
                &path.index(*j).key("after"),
                format!(
                    "surges may not overlap: this one starts at {}, before the one starting at {} ends at {a_end}",
                    b.after, a.after
                ),
            );
        }
    }
    (p.0.len() == before).then(|| out.into_iter().map(|(_, s)| s).collect())
}

fn fault_entry(
    f: &raw::Fault,
    run: Option<Duration>,
    opts: &ValidateOptions,
    p: &mut Problems,
    path: &Path,
) -> Option<Fault> {
    name_rule(p, &path.key("name"), "fault name", &f.name);
    let target = target(&f.target, p, &path.key("target"));
    let after = opt_duration(p, &path.key("after"), f.after.as_ref());
    let duration = positive_duration(p, &path.key("duration"), f.duration.as_str());
    if let (Some(run), Some(after), Some(duration)) = (run, after, duration) {
        inside_run(p, path, "fault", after, duration, run);
    }
    let kind = validate_fault_kind(&f.kind(), opts, p, path);
    let effect = effect_rule(f.effect.as_ref(), p, &path.key("effect"));
    Some(Fault {
        name: f.name.clone(),
        target: target?,
        after: after?,
        duration: duration?,
        kind: kind?,
        effect: effect?,
    })
}

fn effect_rule(
    e: Option<&raw::EffectRule>,
    p: &mut Problems,
    path: &Path,
) -> Option<model::EffectRule> {
    let default = model::EffectRule::default();
    let Some(e) = e else {
        return Some(default);
    };
    let tolerance = opt_percent(p, &path.key("tolerance"), e.tolerance.as_ref())?;
    Some(model::EffectRule {
        tolerance: tolerance.unwrap_or(default.tolerance),
        required: e.required.unwrap_or(default.required),
    })
}

fn target(t: &raw::Target, p: &mut Problems, path: &Path) -> Option<Target> {
    let form = exactly_one(
        p,
        path,
        "a target",
        &[
            ("service", t.service.is_some()),
            ("labels", t.labels.is_some()),
            ("pid", t.pid.is_some()),
            ("container", t.container.is_some()),
        ],
    );
    if form != Some("labels") && t.namespace.is_some() {
        p.push(
            &path.key("namespace"),
            "`namespace` only applies to a `labels` target (Kubernetes pod selection)",
        );
    }
    if matches!(form, Some("pid" | "container")) {
        for (name, set) in [("mode", t.mode.is_some()), ("seed", t.seed.is_some())] {
            if set {
                p.push(
                    &path.key(name),
                    format!(
                        "`{name}` chooses among replicas, so it applies to a `service` or `labels` target only"
                    ),
                );
            }
        }
    }
    match form? {
        "service" => {
            let s = t.service.as_ref()?;
            if !is_dns_label(s) {
                p.push(
                    &path.key("service"),
                    format!(
                        "expected a service name (lower case letters, digits and `-`), found `{s}`"
                    ),
                );
                return None;
            }
            Some(Target::Service(ServiceTarget {
                name: s.clone(),
                mode: selection_mode(t.mode.as_ref(), SelectionMode::All, p, path)?,
                seed: t.seed,
            }))
        }
        "pid" => {
            let pid = t.pid?;
            if pid == 0 {
                p.push(
                    &path.key("pid"),
                    "expected a process id of at least 1, found 0",
                );
                return None;
            }
            Some(Target::Pid(pid))
        }
        "container" => {
            let c = t.container.as_ref()?;
            if c.is_empty() {
                p.push(
                    &path.key("container"),
                    "expected a container name or id, found an empty string",
                );
                return None;
            }
            Some(Target::Container(c.clone()))
        }
        _ => {
            let labels: BTreeMap<String, String> = t.labels.clone()?;
            if labels.is_empty() {
                p.push(
                    &path.key("labels"),
                    "a label selector needs at least one label, e.g. `{app: payments}`",
                );
                return None;
            }
            let mode = selection_mode(t.mode.as_ref(), SelectionMode::One, p, path);
            if let Some(ns) = &t.namespace {
                name_rule(p, &path.key("namespace"), "namespace", ns);
            }
            Some(Target::Pods(PodSelector {
                namespace: t.namespace.clone(),
                labels,
                mode: mode?,
                seed: t.seed,
            }))
        }
    }
}

/// The most replicas of one service an experiment may ask for: each is a process (or
/// container) of its own, and local mode runs them all on one machine.
pub const MAX_REPLICAS: u32 = 8;

/// `spec.replicas`: service names with 1 to [`MAX_REPLICAS`] replicas each.
fn replicas(
    r: Option<&BTreeMap<String, u32>>,
    p: &mut Problems,
    path: &Path,
) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (service, n) in r.into_iter().flatten() {
        let at = path.key(service);
        if !is_dns_label(service) {
            p.push(
                &at,
                format!(
                    "expected a service name (lower case letters, digits and `-`), found `{service}`"
                ),
            );
        } else if !(1..=MAX_REPLICAS).contains(n) {
            p.push(
                &at,
                format!("expected 1 to {MAX_REPLICAS} replicas, found {n}"),
            );
        } else {
            out.insert(service.clone(), *n);
        }
    }
    out
}

/// A target's `mode`: how many replicas (or matching pods) are hit; `default` when absent.
fn selection_mode(
    mode: Option<&raw::SelectionMode>,
    default: SelectionMode,
    p: &mut Problems,
    path: &Path,
) -> Option<SelectionMode> {
    match mode {
        None => Some(default),
        Some(raw::SelectionMode::One) => Some(SelectionMode::One),
        Some(raw::SelectionMode::All) => Some(SelectionMode::All),
        Some(raw::SelectionMode::Fixed(n)) => {
            if *n == 0 {
                p.push(
                    &path.key("mode").key("fixed"),
                    "expected at least 1 replica, found 0",
                );
                None
            } else {
                Some(SelectionMode::Fixed(*n))
            }
        }
        Some(raw::SelectionMode::Percent(pc)) => {
            let mpath = path.key("mode").key("percent");
            percent(p, &mpath, pc.as_str()).and_then(|v| {
                if v.fraction() == 0.0 {
                    p.push(&mpath, "expected a share above 0%, found 0%");
                    None
                } else {
                    Some(SelectionMode::Percent(v))
                }
            })
        }
    }
}

/// Validates a fault kind: exactly one kind, every value in range. `path` is where
/// the kind fields live (`spec.faults[1]` in files, `fault` in agent requests).
pub(crate) fn validate_fault_kind(
    k: &raw::FaultKindSpec,
    opts: &ValidateOptions,
    p: &mut Problems,
    path: &Path,
) -> Option<FaultKind> {
    let kind = exactly_one(
        p,
        path,
        "a fault",
        &[
            ("network", k.network.is_some()),
            ("cpu", k.cpu.is_some()),
            ("memory", k.memory.is_some()),
            ("process", k.process.is_some()),
            ("container", k.container.is_some()),
            ("http", k.http.is_some()),
        ],
    )?;
    let kpath = path.key(kind);
    match kind {
        "network" => network(k.network.as_ref()?, p, &kpath).map(FaultKind::Network),
        "cpu" => cpu(k.cpu.as_ref()?, opts, p, &kpath).map(FaultKind::Cpu),
        "memory" => {
            let m = k.memory.as_ref()?;
            let size = unit::<ByteSize>(p, &kpath.key("size"), m.size.as_str())?;
            if size.bytes() == 0 {
                p.push(&kpath.key("size"), "expected a size above zero, found `0B`");
                return None;
            }
            Some(FaultKind::Memory(model::MemoryFault { size }))
        }
        "process" => Some(FaultKind::Process(model::ProcessFault {
            signal: k.process.as_ref()?.signal,
        })),
        "container" => Some(FaultKind::Container(model::ContainerFault {
            action: k.container.as_ref()?.action,
        })),
        _ => http(k.http.as_ref()?, p, &kpath).map(FaultKind::Http),
    }
}

fn network(n: &raw::NetworkFault, p: &mut Problems, path: &Path) -> Option<NetworkFault> {
    let action = exactly_one(
        p,
        path,
        "a network fault",
        &[
            ("latency", n.latency.is_some()),
            ("loss", n.loss.is_some()),
            ("bandwidth", n.bandwidth.is_some()),
            ("reset", n.reset.is_some()),
            ("partition", n.partition.is_some()),
        ],
    );
    let mut peers = Vec::new();
    let mut peers_ok = true;
    for (i, peer) in n.peers.iter().enumerate() {
        match Peer::parse(peer) {
            Ok(peer) => peers.push(peer),
            Err(e) => {
                p.push(&path.key("peers").index(i), e);
                peers_ok = false;
            }
        }
    }
    for (i, port) in n.ports.iter().enumerate() {
        if *port == 0 {
            p.push(
                &path.key("ports").index(i),
                "expected a port between 1 and 65535, found 0",
            );
            peers_ok = false;
        }
    }
    let action = match action? {
        "latency" => {
            let l = n.latency.as_ref()?;
            let lpath = path.key("latency");
            let delay = unit::<Duration>(p, &lpath.key("delay"), l.delay.as_str());
            let jitter = opt_duration(p, &lpath.key("jitter"), l.jitter.as_ref());
            if let (Some(delay), Some(jitter)) = (delay, jitter) {
                if jitter > delay {
                    p.push(
                        &lpath.key("jitter"),
                        format!("jitter ({jitter}) must not exceed the delay ({delay}): the delay would go negative"),
                    );
                    return None;
                }
            }
            let correlation = opt_percent(p, &lpath.key("correlation"), l.correlation.as_ref())?;
            NetworkAction::Latency(model::Latency {
                delay: delay?,
                jitter: jitter?,
                correlation,
                distribution: l.distribution.unwrap_or_default(),
            })
        }
        "loss" => {
            let l = n.loss.as_ref()?;
            let lpath = path.key("loss");
            let percent = percent(p, &lpath.key("percent"), l.percent.as_str());
            let correlation = opt_percent(p, &lpath.key("correlation"), l.correlation.as_ref());
            NetworkAction::Loss(model::Loss {
                percent: percent?,
                correlation: correlation?,
            })
        }
        "bandwidth" => {
            let b = n.bandwidth.as_ref()?;
            let rate = unit::<Bandwidth>(p, &path.key("bandwidth").key("rate"), b.rate.as_str())?;
            NetworkAction::Bandwidth(model::BandwidthLimit { rate })
        }
        "reset" => NetworkAction::Reset(model::Empty {}),
        _ => NetworkAction::Partition(model::Empty {}),
    };
    if !peers_ok {
        return None;
    }
    Some(NetworkFault {
        action,
        direction: n.direction.unwrap_or_default(),
        peers,
        ports: n.ports.clone(),
        backend: n.backend.unwrap_or_default(),
    })
}

fn opt_percent(
    p: &mut Problems,
    path: &Path,
    text: Option<&raw::PercentText>,
) -> Option<Option<Percent>> {
    match text {
        None => Some(None),
        Some(t) => percent(p, path, t.as_str()).map(Some),
    }
}

fn cpu(
    c: &raw::CpuFault,
    opts: &ValidateOptions,
    p: &mut Problems,
    path: &Path,
) -> Option<CpuFault> {
    let load = percent(p, &path.key("load"), c.load.as_str())?;
    if load.fraction() == 0.0 {
        p.push(&path.key("load"), "expected a CPU load above 0%, found 0%");
        return None;
    }
    if c.workers == Some(0) {
        p.push(&path.key("workers"), "expected at least 1 worker, found 0");
        return None;
    }
    if let Some(cpus) = opts.host_cpus {
        let workers = c.workers.unwrap_or(1);
        let needed = load.fraction() * f64::from(workers);
        if needed > cpus as f64 + 1e-9 {
            p.push(
                &path.key("workers"),
                format!(
                    "cpu load {load} on {workers} workers needs {needed:.2} CPUs, but this host can give {cpus}"
                ),
            );
            return None;
        }
    }
    Some(CpuFault {
        load,
        workers: c.workers,
    })
}

fn http(h: &raw::HttpFault, p: &mut Problems, path: &Path) -> Option<HttpFault> {
    let before = p.0.len();
    if h.abort.is_none() && h.delay.is_none() {
        p.push(path, "an http fault needs `abort`, `delay` or both");
    }
    let abort = h.abort.as_ref().and_then(|a| {
        let apath = path.key("abort");
        if !(400..=599).contains(&a.status) {
            p.push(
                &apath.key("status"),
                format!(
                    "expected an error status between 400 and 599, found {}",
                    a.status
                ),
            );
        }
        let percent = percent(p, &apath.key("percent"), a.percent.as_str())?;
        Some(HttpAbort {
            status: a.status,
            percent,
        })
    });
    let delay = h.delay.as_ref().and_then(|d| {
        let dpath = path.key("delay");
        let delay = unit::<Duration>(p, &dpath.key("delay"), d.delay.as_str());
        let jitter = opt_duration(p, &dpath.key("jitter"), d.jitter.as_ref());
        if let (Some(delay), Some(jitter)) = (delay, jitter) {
            if jitter > delay {
                p.push(
                    &dpath.key("jitter"),
                    format!("jitter ({jitter}) must not exceed the delay ({delay}): the delay would go negative"),
                );
            }
        }
        let percent = opt_percent(p, &dpath.key("percent"), d.percent.as_ref());
        Some(HttpDelay {
            delay: delay?,
            jitter: jitter?,
            percent: percent?,
        })
    });
    for (i, path_prefix) in h.paths.iter().enumerate() {
        if !path_prefix.starts_with('/') {
            p.push(
                &path.key("paths").index(i),
                format!("expected a path prefix starting with `/`, found `{path_prefix}`"),
            );
        }
    }
    for (i, m) in h.methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&m.as_str()) {
            p.push(
                &path.key("methods").index(i),
                format!(
                    "unknown HTTP method `{m}`: expected {}",
                    one_of(HTTP_METHODS)
                ),
            );
        }
    }
    if p.0.len() != before {
        return None;
    }
    Some(HttpFault {
        abort,
        delay,
        paths: h.paths.clone(),
        methods: h.methods.clone(),
    })
}

struct SloFields<'a> {
    error_rate: Option<&'a raw::ErrorRate>,
    latency: Option<&'a raw::LatencySlo>,
    throughput: Option<&'a raw::Throughput>,
    promql: Option<&'a str>,
    max: Option<f64>,
    min: Option<f64>,
    source: Option<SloSource>,
}

/// Reports every service name in `s` that is not one of `known`, with the closest
/// known name when there is one.
fn unknown_services(s: &raw::ExperimentSpec, known: &[String], p: &mut Problems, path: &Path) {
    let mut named: Vec<(Path, &str)> = Vec::new();
    if let Some(l) = s.load.as_ref().and_then(|l| l.get())
        && !l.target.contains("://")
    {
        named.push((path.key("load").key("target"), &l.target));
    }
    for service in s.replicas.iter().flat_map(|r| r.keys()) {
        named.push((path.key("replicas").key(service), service));
    }
    for (i, f) in s.faults.iter().enumerate() {
        let Some(f) = f.get() else { continue };
        let fpath = path.key("faults").index(i);
        if let Some(service) = f.target.service.as_deref() {
            named.push((fpath.key("target").key("service"), service));
        }
        // Partition and other network peers name services too (CIDRs aside).
        for (j, peer) in f.network.iter().flat_map(|n| n.peers.iter().enumerate()) {
            if is_dns_label(peer) {
                let at = fpath.key("network").key("peers").index(j);
                named.push((at, peer));
            }
        }
    }
    let slo_kinds = s
        .slos
        .iter()
        .filter_map(|s| s.get())
        .map(|s| (&s.error_rate, &s.latency, &s.throughput));
    let abort_kinds = s
        .abort
        .iter()
        .filter_map(|a| a.get())
        .map(|a| (&a.error_rate, &a.latency, &a.throughput));
    for (section, kinds) in [
        ("slos", slo_kinds.collect::<Vec<_>>()),
        ("abort", abort_kinds.collect()),
    ] {
        for (i, (error_rate, latency, throughput)) in kinds.into_iter().enumerate() {
            let at = |kind: &str| path.key(section).index(i).key(kind).key("service");
            if let Some(e) = error_rate {
                named.push((at("errorRate"), &e.service));
            }
            if let Some(l) = latency {
                named.push((at("latency"), &l.service));
            }
            if let Some(t) = throughput {
                named.push((at("throughput"), &t.service));
            }
        }
    }
    for (at, name) in named {
        if known.iter().any(|k| k == name) {
            continue;
        }
        let hint = crate::diagnostic::did_you_mean(name, known.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        p.push(
            &at,
            format!(
                "unknown service `{name}`{hint}: this environment runs {}",
                all_of(&names)
            ),
        );
    }
}

fn service_rule(p: &mut Problems, path: &Path, service: &str) -> bool {
    if is_dns_label(service) {
        true
    } else {
        p.push(
            path,
            format!(
                "expected a service name (lower case letters, digits and `-`), found `{service}`"
            ),
        );
        false
    }
}

fn slo_kind(f: &SloFields<'_>, p: &mut Problems, path: &Path, what: &str) -> Option<SloKind> {
    let kind = exactly_one(
        p,
        path,
        what,
        &[
            ("errorRate", f.error_rate.is_some()),
            ("latency", f.latency.is_some()),
            ("throughput", f.throughput.is_some()),
            ("promql", f.promql.is_some()),
        ],
    )?;
    if kind != "promql" {
        for (name, set) in [("max", f.max.is_some()), ("min", f.min.is_some())] {
            if set {
                p.push(
                    &path.key(name),
                    format!("a top-level `{name}` belongs to `promql`; for `{kind}` put the threshold inside it, e.g. `{kind}: {{service: gateway, ...}}`"),
                );
            }
        }
    }
    let kpath = path.key(kind);
    match kind {
        "errorRate" => {
            let e = f.error_rate?;
            let ok = service_rule(p, &kpath.key("service"), &e.service);
            let max = percent(p, &kpath.key("max"), e.max.as_str())?;
            if let Some(route) = &e.route {
                if !route.starts_with('/') {
                    p.push(
                        &kpath.key("route"),
                        format!("expected a route template starting with `/`, found `{route}`"),
                    );
                    return None;
                }
            }
            ok.then(|| SloKind::ErrorRate {
                service: e.service.clone(),
                max,
                route: e.route.clone(),
            })
        }
        "latency" => {
            let l = f.latency?;
            let ok = service_rule(p, &kpath.key("service"), &l.service);
            let q = l.quantile;
            let q_ok = q > 0.0 && q < 1.0;
            if !q_ok {
                p.push(
                    &kpath.key("quantile"),
                    format!("expected a quantile strictly between 0 and 1 (e.g. 0.99 for P99), found {q}"),
                );
            }
            let max = positive_duration(p, &kpath.key("max"), l.max.as_str())?;
            (ok && q_ok).then(|| SloKind::Latency {
                service: l.service.clone(),
                quantile: q,
                max,
            })
        }
        "throughput" => {
            let t = f.throughput?;
            let ok = service_rule(p, &kpath.key("service"), &t.service);
            let min = unit::<Rate>(p, &kpath.key("min"), t.min.as_str())?;
            ok.then(|| SloKind::Throughput {
                service: t.service.clone(),
                min,
            })
        }
        _ => {
            let expr = f.promql?;
            let mut ok = true;
            if expr.trim().is_empty() {
                p.push(
                    &kpath,
                    "expected a PromQL expression, found an empty string",
                );
                ok = false;
            } else if let Err(why) = crate::promql::parse(expr) {
                p.push(&kpath, why);
                ok = false;
            }
            if f.max.is_none() && f.min.is_none() {
                p.push(
                    path,
                    "a `promql` SLO needs a bound: add `max`, `min` or both next to `promql`",
                );
                ok = false;
            }
            for (name, v) in [("max", f.max), ("min", f.min)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    p.push(
                        &path.key(name),
                        format!("expected a finite number for `{name}`"),
                    );
                    ok = false;
                }
            }
            if let (Some(max), Some(min)) = (f.max, f.min) {
                if min > max {
                    p.push(
                        &path.key("min"),
                        format!("`min` ({min}) is above `max` ({max}): nothing could pass"),
                    );
                    ok = false;
                }
            }
            if f.source == Some(SloSource::Client) {
                p.push(
                    &path.key("source"),
                    "`source: client` judges the load generator's own measurements and works with `errorRate`, `latency` and `throughput`, not `promql`",
                );
                ok = false;
            }
            ok.then(|| SloKind::Promql {
                expr: expr.to_owned(),
                max: f.max,
                min: f.min,
            })
        }
    }
}

/// Turns problems found without a source text (objects from the Kubernetes API or
/// built in code) into diagnostics: no file position, line and column 0.
fn unplaced(problems: Problems) -> Diagnostics {
    let mut d = Diagnostics(
        problems
            .0
            .into_iter()
            .map(|p| Diagnostic {
                file: String::new(),
                line: 0,
                column: 0,
                path: p.path,
                message: p.message,
            })
            .collect(),
    );
    d.sort();
    d
}

/// The problem reported when a part is absent because it could not be deserialized
/// and nothing else explains it (only possible for values built in code).
const INCOMPLETE: &str = "this part of the document could not be read";

impl raw::ExperimentDocument {
    /// Validates a document that did not come from a file, e.g. a custom resource read
    /// from the Kubernetes API. Diagnostics carry field paths but no position
    /// (line and column 0). Files go through [`crate::parse_str`] instead.
    pub fn validate(&self, opts: &ValidateOptions) -> Result<Experiment, Diagnostics> {
        let mut p = Problems::default();
        match experiment(self, opts, &mut p) {
            Some(e) if p.0.is_empty() => Ok(e),
            _ => {
                if p.0.is_empty() {
                    p.push(&Path::root(), INCOMPLETE);
                }
                Err(unplaced(p))
            }
        }
    }
}

impl raw::ExperimentSpec {
    /// Validates a spec on its own (the Kubernetes operator's view of a custom
    /// resource); paths start at `spec`.
    pub fn validate(&self, opts: &ValidateOptions) -> Result<model::ExperimentSpec, Diagnostics> {
        let mut p = Problems::default();
        let root = Path::root().key("spec");
        match spec(self, opts, &mut p, &root) {
            Some(s) if p.0.is_empty() => Ok(s),
            _ => {
                if p.0.is_empty() {
                    p.push(&root, INCOMPLETE);
                }
                Err(unplaced(p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_from_the_kubernetes_api_validate_without_positions() {
        let json = serde_json::json!({
            "duration": "30s",
            "faults": [{"name": "f", "target": {"service": "payments"}, "after": "20s",
                        "duration": "20s", "cpu": {"load": "50%"}}]
        });
        let spec: raw::ExperimentSpec = serde_json::from_value(json).unwrap();
        let d = spec.validate(&ValidateOptions::default()).unwrap_err();
        assert_eq!(d.len(), 1);
        let d = d.iter().next().unwrap();
        assert_eq!((d.line, d.path.as_str()), (0, "spec.faults[0].duration"));
        assert!(
            d.to_string()
                .starts_with("spec.faults[0].duration: the fault must lie inside"),
            "{d}"
        );
    }

    #[test]
    fn recovery_needs_a_fault_or_surge_to_recover_from() {
        let with = |surges: serde_json::Value, within: &str| {
            let json = serde_json::json!({
                "duration": "30s",
                "load": {"target": "gateway", "rate": "100/s", "requests": [{"path": "/"}],
                         "surges": surges},
                "recovery": {"within": within},
            });
            let spec: raw::ExperimentSpec = serde_json::from_value(json).unwrap();
            spec.validate(&ValidateOptions::default())
                .map_err(|d| d.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        };
        let nothing = with(serde_json::json!([]), "5s").unwrap_err();
        assert_eq!(nothing.len(), 1, "{nothing:?}");
        assert!(
            nothing[0].starts_with("spec.recovery: recovery is judged from the end of the last fault or load surge, and this experiment has neither"),
            "{nothing:?}"
        );
        let surge = serde_json::json!([{"after": "5s", "duration": "15s", "rate": "500/s"}]);
        assert!(with(surge.clone(), "10s").is_ok());
        // The surge ends at 20 s: 20 s + 11 s is past the run's 30 s.
        let late = with(surge, "11s").unwrap_err();
        assert!(
            late[0].starts_with("spec.recovery.within: recovery must be observable inside the run: the last fault or surge ends at 20s"),
            "{late:?}"
        );
    }

    #[test]
    fn surges_must_lie_inside_the_run_and_not_overlap() {
        let with = |surges: serde_json::Value| {
            let json = serde_json::json!({
                "duration": "30s",
                "load": {"target": "gateway", "rate": "100/s", "requests": [{"path": "/"}],
                         "surges": surges},
            });
            let spec: raw::ExperimentSpec = serde_json::from_value(json).unwrap();
            spec.validate(&ValidateOptions::default())
        };
        let ok = with(serde_json::json!([
            {"after": "20s", "duration": "10s", "rate": "50/s"},
            {"after": "5s", "duration": "5s", "rate": "2500/s"},
        ]))
        .unwrap();
        let load = ok.load.unwrap();
        // Kept in time order, and the default connections sized for the busiest stretch.
        assert_eq!(load.surges[0].rate.as_per_second(), 2500.0);
        assert_eq!(load.max_connections, 512);
        let problems = |surges| {
            with(surges)
                .unwrap_err()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        };
        let late =
            problems(serde_json::json!([{"after": "25s", "duration": "10s", "rate": "9/s"}]));
        assert!(
            late[0].starts_with("spec.load.surges[0].duration: the surge must lie inside"),
            "{late:?}"
        );
        let overlap = problems(serde_json::json!([
            {"after": "5s", "duration": "10s", "rate": "9/s"},
            {"after": "10s", "duration": "1s", "rate": "9/s"},
        ]));
        assert!(
            overlap[0].starts_with("spec.load.surges[1].after: surges may not overlap"),
            "{overlap:?}"
        );
        let absurd =
            problems(serde_json::json!([{"after": "1s", "duration": "1s", "rate": "9999999/s"}]));
        assert!(
            absurd[0].starts_with("spec.load.surges[0].rate: expected at most"),
            "{absurd:?}"
        );
    }

    #[test]
    fn serde_json_still_rejects_broken_parts_instead_of_dropping_them() {
        // `Recover` only swallows errors our own deserializer recorded.
        let json = serde_json::json!({"duration": "30s", "faults": [{"name": 1}]});
        assert!(serde_json::from_value::<raw::ExperimentSpec>(json).is_err());
    }
}
