//! What `chaos run` will do with each experiment, decided before any environment
//! starts: run it, skip it because this mode cannot run it (with the reason), or refuse
//! the whole suite because an experiment is invalid input for this mode.

use faultline_controller::report::RunMode;
use faultline_controller::run::RunError;
use faultline_controller::slo::eval;
use faultline_spec::{Experiment, FaultKind, SloKind, Target};

use super::local;
use crate::commands::files::Loaded;
use crate::exit::InvalidInput;

/// One experiment of the suite and what will happen to it.
#[derive(Debug)]
pub struct Planned {
    /// The experiment and its file.
    pub loaded: Loaded,
    /// Why it will not run in this mode, if it will not.
    pub skip: Option<String>,
}

/// Plans every experiment: the mode's limitations become skip reasons, and an experiment
/// that will run must pass the mode's input checks ([`local::check`] in local mode). Every
/// problem of every experiment is reported at once, and then nothing runs. (Unique names
/// are checked when the files are read, by `chaos validate` too.)
pub fn plan(
    experiments: Vec<Loaded>,
    mode: RunMode,
    prometheus: bool,
) -> Result<Vec<Planned>, InvalidInput> {
    let mut problems = Vec::new();
    let mut planned = Vec::with_capacity(experiments.len());
    for loaded in experiments {
        let skip = skip_reason(&loaded.experiment, mode, prometheus);
        if skip.is_none()
            && mode == RunMode::Local
            && let Err(RunError::InvalidInput(p) | RunError::Infrastructure(p)) =
                local::check(&loaded.experiment)
        {
            problems.push(format!(
                "{}: experiment `{}`: {p}",
                loaded.file, loaded.experiment.name
            ));
        }
        planned.push(Planned { loaded, skip });
    }
    if problems.is_empty() {
        Ok(planned)
    } else {
        Err(InvalidInput(format!(
            "nothing ran:\n{}",
            problems.join("\n")
        )))
    }
}

/// Why `mode` cannot run the experiment, or `None` when it can. The one place mode
/// limitations are decided: container targets and container faults need compose, pod
/// selectors need Kubernetes, raw `promql` SLOs and abort conditions outside the
/// embedded engine's subset need a Prometheus server (local mode has one only with
/// `--prometheus`). Each distinct need is named once, with the first item that has it.
pub fn skip_reason(experiment: &Experiment, mode: RunMode, prometheus: bool) -> Option<String> {
    let mut needs: Vec<(&str, String)> = Vec::new();
    let mut need = |what: &'static str, why: String| {
        if !needs.iter().any(|(w, _)| *w == what) {
            needs.push((what, why));
        }
    };
    for f in &experiment.spec.faults {
        if matches!(f.target, Target::Pods(_)) && mode != RunMode::Kubernetes {
            need(
                "needs Kubernetes",
                format!("fault `{}` selects pods", f.name),
            );
        }
        if mode == RunMode::Local {
            if matches!(f.target, Target::Container(_)) {
                need(
                    "needs --env compose",
                    format!("fault `{}` targets a container", f.name),
                );
            }
            if matches!(f.kind, FaultKind::Container(_)) {
                need(
                    "needs --env compose",
                    format!("fault `{}` is a container fault", f.name),
                );
            }
        }
    }
    if mode == RunMode::Compose
        && let Some((service, n)) = experiment.spec.replicas.iter().find(|(_, n)| **n > 1)
    {
        need(
            "needs local mode or Kubernetes",
            format!(
                "spec.replicas asks for {n} replicas of {service}, and the compose stack runs one container per service"
            ),
        );
    }
    if mode == RunMode::Local && !prometheus {
        // Local mode judges raw PromQL on the embedded engine, which takes a subset.
        let slos = experiment
            .spec
            .slos
            .iter()
            .map(|s| (format!("SLO `{}`", s.name), &s.kind));
        let aborts = experiment
            .spec
            .abort
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("abort condition {}", i + 1), &a.kind));
        if let Some((what, why)) = slos.chain(aborts).find_map(|(what, kind)| match kind {
            SloKind::Promql { expr, .. } => eval::check(expr).err().map(|why| (what, why)),
            _ => None,
        }) {
            need(
                "needs a Prometheus server (--prometheus or --env compose)",
                format!("{what}: {why}"),
            );
        }
    }
    if needs.is_empty() {
        return None;
    }
    Some(
        needs
            .into_iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An experiment of 30 s named `x` with `spec` (indented two spaces) after its
    /// duration.
    pub(in crate::commands::run) fn experiment(spec: &str) -> Experiment {
        let text = format!(
            "apiVersion: faultline.dev/v1alpha1\nkind: Experiment\nmetadata: {{name: x}}\nspec:\n  duration: 30s\n{spec}"
        );
        faultline_spec::parse_str(&text, "x.yaml", &Default::default())
            .unwrap_or_else(|d| panic!("{d:?}"))
            .remove(0)
    }

    const SLO: &str = "  slos:\n    - {name: errors, errorRate: {service: gateway, max: 1%}}\n";

    fn with_fault(target: &str, fault: &str) -> Experiment {
        experiment(&format!(
            "{SLO}  faults:\n    - name: f\n      target: {target}\n      {fault}\n      after: 5s\n      duration: 10s\n"
        ))
    }

    #[test]
    fn local_mode_skips_container_targets_pod_selectors_and_promql_outside_the_subset() {
        let container = with_fault("{container: fleet-payments}", "container: {action: pause}");
        let reason = skip_reason(&container, RunMode::Local, false).unwrap();
        assert!(reason.starts_with("needs --env compose"), "{reason}");

        let pods = with_fault("{labels: {app: payments}}", "process: {signal: SIGKILL}");
        let reason = skip_reason(&pods, RunMode::Local, false).unwrap();
        assert!(reason.starts_with("needs Kubernetes"), "{reason}");

        let subset = experiment("  slos:\n    - {name: up, promql: 'sum(up)', min: 1}\n");
        assert_eq!(skip_reason(&subset, RunMode::Local, false), None);
        let promql = experiment("  slos:\n    - {name: up, promql: 'topk(1, up)', min: 1}\n");
        let reason = skip_reason(&promql, RunMode::Local, false).unwrap();
        assert!(reason.contains("needs a Prometheus server"), "{reason}");
        assert!(
            reason.contains("SLO `up`: the aggregation `topk`"),
            "{reason}"
        );
        assert_eq!(skip_reason(&promql, RunMode::Local, true), None);
    }

    #[test]
    fn compose_mode_skips_only_pod_selectors() {
        let container = with_fault("{container: fleet-payments}", "container: {action: pause}");
        assert_eq!(skip_reason(&container, RunMode::Compose, false), None);
        let pods = with_fault("{labels: {app: payments}}", "process: {signal: SIGKILL}");
        assert!(skip_reason(&pods, RunMode::Compose, false).is_some());
        assert_eq!(skip_reason(&pods, RunMode::Kubernetes, false), None);
    }

    #[test]
    fn local_experiments_on_fleet_services_are_not_skipped() {
        let local = with_fault("{service: payments}", "process: {signal: SIGSTOP}");
        assert_eq!(skip_reason(&local, RunMode::Local, false), None);
    }

    #[test]
    fn unknown_services_are_invalid_input_not_skips() {
        let loaded = |name: &str, target: &str| Loaded {
            experiment: {
                let mut e = with_fault(target, "process: {signal: SIGSTOP}");
                e.name = name.into();
                e
            },
            file: format!("{name}.yaml"),
        };
        let err = plan(
            vec![loaded("a", "{service: billing}")],
            RunMode::Local,
            false,
        )
        .unwrap_err();
        assert!(err.0.contains("billing"), "{}", err.0);
        let ok = plan(
            vec![loaded("a", "{container: billing}")],
            RunMode::Local,
            false,
        )
        .unwrap();
        assert!(ok[0].skip.is_some());
    }
}
