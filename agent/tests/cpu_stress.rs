//! Issue 6 acceptance: CPU stress at 80% on one worker for 3 s measures 77-83% from the
//! kernel's per-thread accounting. In its own test binary so no other test competes for
//! the CPU while it runs; real time is inherent (CPU is burned against the wall clock).

mod common;

use std::time::{Duration, Instant};

use faultline_agent::Fault;
use faultline_agent::stress::cpu::{CpuStress, thread_cpu_seconds};
use faultline_spec::wire::ResolvedTarget;
use faultline_spec::{CpuFault, Percent};

fn fault(load: f64, workers: Option<u32>) -> CpuFault {
    CpuFault {
        load: Percent::from_fraction(load).unwrap(),
        workers,
    }
}

/// Issue 6: `load: 80%` for 3 s on one worker measures 77-83% from /proc accounting.
/// Real time is inherent: CPU is burned against the wall clock.
#[test]
fn cpu_stress_at_80_percent_for_3s_measures_77_to_83_percent_from_proc() {
    // The burner can only reach 80% of a CPU if the host can give it that much. Under
    // CI=true the test always runs (CI has the machine to itself); elsewhere a host too
    // busy to give one thread 90% of a CPU makes the figure meaningless, so it says so.
    if common::host_too_busy("the 80% figure") {
        return;
    }
    let stress = CpuStress::new(&fault(0.8, Some(1))).unwrap();
    let me = ResolvedTarget {
        name: "self".into(),
        pid: Some(std::process::id()),
        ..Default::default()
    };
    let handle = stress.apply(&me).unwrap();
    let tid = handle.thread_ids()[0];
    let start_wall = Instant::now();
    let start_cpu = thread_cpu_seconds(tid).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = thread_cpu_seconds(tid).unwrap() - start_cpu;
    let wall = start_wall.elapsed().as_secs_f64();
    let effect = stress.revert(handle).unwrap();
    let utilization = cpu / wall;
    // Time the burner was runnable but waited for a CPU: a busy host, not the duty cycle.
    let waited = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or("an unknown time".to_string(), |ns| {
            format!("{:.2} s", ns / 1e9)
        });
    eprintln!(
        "measured {:.1}% from /proc; {}",
        utilization * 100.0,
        effect.summary
    );
    assert!(
        (0.77..=0.83).contains(&utilization),
        "measured {:.1}% from /proc/self/task/{tid}/stat, expected 77-83% \
         (the burner waited {waited} for a CPU: is the host busy?)",
        utilization * 100.0
    );
    let reported = effect.metrics["utilization"];
    assert!((0.77..=0.83).contains(&reported), "{}", effect.summary);
}
