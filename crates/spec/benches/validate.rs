//! Parsing and validating a generated file of 1,000 experiments: the figure in
//! docs/performance.md ("## Experiment validation").

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faultline_spec::{ValidateOptions, parse_str};

/// Builds one YAML stream of `n` experiments, each shaped like quickstart.yaml
/// (load, steady state, three faults, three SLOs, an abort condition, recovery).
fn generated_file(n: usize) -> String {
    let template = include_str!("../../../experiments/quickstart.yaml");
    let mut out = String::with_capacity(template.len() * n);
    for i in 0..n {
        out.push_str("---\n");
        out.push_str(&template.replace(
            "name: payments-latency-cpu",
            &format!("name: payments-latency-cpu-{i}"),
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let source = generated_file(1000);
    let opts = ValidateOptions {
        host_cpus: Some(2),
        ..Default::default()
    };
    // Fail loudly rather than benchmark the error path.
    let parsed = parse_str(&source, "generated.yaml", &opts).expect("generated file is valid");
    assert_eq!(parsed.len(), 1000);

    let mut group = c.benchmark_group("experiment_validation");
    group.throughput(Throughput::Bytes(source.len() as u64));
    group.sample_size(20);
    group.bench_function("parse_and_validate_1000_experiments", |b| {
        b.iter(|| parse_str(&source, "generated.yaml", &opts).map(|e| e.len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
