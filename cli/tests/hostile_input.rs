//! Hostile experiment files (alias bombs, deep nesting, a huge file) are refused with a
//! located error, quickly and in bounded memory, by every path that reads experiments:
//! `chaos validate`, `chaos run` and the controller's directory source. One test in its
//! own binary, so every child this process waits for is one of its own and the peak
//! resident size `RUSAGE_CHILDREN` reports is theirs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

fn chaos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
}

/// A "billion laughs" file: each level a list of ten aliases of the one before, so
/// level n expands to 10^n values.
fn laughs(levels: usize) -> String {
    let mut s = String::from("a0: &a0 [lol]\n");
    for i in 1..=levels {
        let prev = format!("*a{}", i - 1);
        s += &format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", "));
    }
    s
}

/// The hostile files, each with the `line:col` and the words its error must carry.
fn hostile_files(dir: &Path) -> Vec<(PathBuf, &'static str, &'static str)> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let huge = dir.join("huge.yaml");
    // 100 MB, sparse: the reader must refuse it without reading it.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    vec![
        (write("laughs-8.yaml", laughs(8)), "7:", "alias bomb"),
        (write("laughs-20.yaml", laughs(20)), "7:", "alias bomb"),
        (
            write("deep.yaml", "- ".repeat(50_000) + "x\n"),
            "1:129",
            "deeper than 64",
        ),
        (huge, "1:1", "larger than 4 MiB"),
    ]
}

#[test]
fn hostile_files_are_refused_fast_and_in_bounded_memory_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let files = hostile_files(dir.path());
    for (path, at, words) in &files {
        let shown = path.display().to_string();
        for command in [&["validate"][..], &["run", "--no-progress"][..]] {
            let start = Instant::now();
            let out = chaos().args(command).arg(path).output().unwrap();
            let took = start.elapsed();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "{command:?} {shown}: exit {:?} in {took:?}",
                out.status.code()
            );
            assert_eq!(out.status.code(), Some(2), "{command:?} {shown}:\n{text}");
            assert!(
                text.contains(&format!("{shown}:{at}")),
                "{command:?} names the place {shown}:{at}:\n{text}"
            );
            assert!(text.contains(words), "{command:?} {shown}:\n{text}");
        }
    }

    // The controller reads the same directory unattended: it must log each file as
    // refused and keep running.
    let state = tempfile::tempdir().unwrap();
    let mut controller = chaos()
        .args(["controller", "--log-format", "json", "--metrics-addr"])
        .arg("127.0.0.1:0")
        .arg("--experiments")
        .arg(dir.path())
        .arg("--history-dir")
        .arg(state.path().join("history"))
        .arg("--work-dir")
        .arg(state.path().join("runs"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut refused: Vec<String> = Vec::new();
    let mut log = String::new();
    let mut lines = BufReader::new(controller.stderr.take().unwrap()).lines();
    while refused.len() < files.len() && start.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        log += &line;
        log.push('\n');
        for (path, _, words) in &files {
            let name = path.display().to_string();
            if line.contains("not reloaded")
                && line.contains(&name)
                && line.contains(words)
                && !refused.contains(&name)
            {
                refused.push(name);
            }
        }
    }
    let took = start.elapsed();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    controller.wait().unwrap();
    eprintln!("controller refused {} files in {took:?}", refused.len());
    assert_eq!(
        refused.len(),
        files.len(),
        "refused {refused:?}; log:\n{log}"
    );

    // ru_maxrss: the largest peak resident size of any child waited for, in KiB.
    let peak_kib = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    eprintln!("largest child peak RSS: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 100 * 1024, "a reader peaked at {peak_kib} KiB");
}
