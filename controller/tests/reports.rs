//! Every report rendering, checked on a realistic run: JSON round-trips, JUnit XML
//! is well-formed and names the failing SLO with its measured value, the terminal
//! summary honours NO_COLOR, and the HTML renders in headless Chromium with its SVG
//! charts visible.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use faultline_controller::report::html::to_html;
use faultline_controller::report::json::{from_json, to_json};
use faultline_controller::report::junit::to_junit;
use faultline_controller::report::terminal::summary;
use faultline_controller::report::{Outcome, exit_code};
use quick_xml::events::Event;
use support::chromium::chromium_or_skip;
use support::sample_report;

#[test]
fn json_report_round_trips_and_keeps_every_measurement() -> Result<()> {
    let report = sample_report();
    let text = to_json(&report)?;
    // Floats survive exactly (serde_json's float_roundtrip), so a saved report is the evidence.
    assert!(from_json(&text)? == report, "JSON does not round-trip");
    let value: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(value["verdict"]["outcome"], "fail");
    assert_eq!(
        value["slos"][0]["samples"].as_array().map(Vec::len),
        Some(60)
    );
    assert_eq!(value["slos"][0]["verdict"], "fail");
    assert!(
        value["slos"][0]["query"]
            .as_str()
            .unwrap_or("")
            .contains(r#"code=~"5..""#)
    );
    // Missing client measurements are null values with status noData, not zeros.
    let gap = &value["slos"][2]["samples"][29];
    assert!(gap["value"].is_null());
    assert_eq!(gap["status"], "noData");
    assert_eq!(value["slos"][2]["verdict"], "noData");
    assert_eq!(
        value["faults"][0]["effect"]["metrics"]["delayed_chunks"],
        5912.0
    );
    let future = text.replacen("\"schemaVersion\": 1", "\"schemaVersion\": 99", 1);
    assert!(from_json(&future).is_err());
    Ok(())
}

#[test]
fn junit_is_well_formed_with_one_testcase_per_slo_and_fault_and_failures_carry_values() -> Result<()>
{
    let report = sample_report();
    let xml = to_junit(&report)?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut testcases = Vec::new();
    let mut failures = Vec::new();
    let mut errors = Vec::new();
    let mut current = String::new();
    loop {
        match reader
            .read_event()
            .context("junit must be well-formed XML")?
        {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| -> Result<String> {
                    Ok(match e.try_get_attribute(name)? {
                        Some(a) => a.unescape_value()?.into_owned(),
                        None => String::new(),
                    })
                };
                match e.name().as_ref() {
                    b"testcase" => {
                        current = attr("name")?;
                        testcases.push((attr("classname")?, current.clone()));
                    }
                    b"failure" => failures.push((current.clone(), attr("message")?)),
                    b"error" => errors.push((current.clone(), attr("message")?)),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!(testcases.len(), report.slos.len() + report.faults.len());
    assert!(
        testcases
            .iter()
            .any(|(_, n)| n == "notifications-5xx <raw> & \"quoted\"")
    );
    let failed: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(failed, vec!["gateway-errors", "client-throughput"]);
    let (_, message) = &failures[0];
    assert!(
        message.contains("measured 2.280%") && message.contains("<= 0.500%"),
        "{message}"
    );
    assert!(failures[1].1.contains("no data"), "{}", failures[1].1);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .1
            .contains("</sys/fs/cgroup> not writable & \"EPERM\"")
    );
    Ok(())
}

#[test]
fn terminal_summary_honours_no_color_and_names_the_failure() {
    let report = sample_report();
    let plain = summary(&report, false);
    assert!(!plain.contains('\x1b'), "{plain}");
    assert!(plain.contains("gateway-errors"));
    assert!(plain.contains("FAIL"));
    assert!(plain.contains("NO DATA"));
    assert!(plain.contains("Verdict: FAIL"));
    assert!(plain.contains("(exit 1)"));
    assert!(summary(&report, true).contains("\x1b[1;31mFAIL"));
    assert_eq!(exit_code(Outcome::Fail), 1);
}

#[test]
fn html_is_self_contained_with_one_chart_per_slo_and_shaded_fault_windows() -> Result<()> {
    let report = sample_report();
    let html = to_html(&report)?;
    assert_eq!(
        html.matches("<svg class=\"sli-chart\"").count(),
        report.slos.len()
    );
    // The applied fault is shaded on every chart (the reactions' too); the one that
    // failed to apply is not.
    assert_eq!(
        html.matches("class=\"fault-window\"").count(),
        report.slos.len() + 1
    );
    assert!(html.matches("class=\"threshold\"").count() >= report.slos.len());
    assert!(html.contains("class=\"violation\""));
    assert!(html.contains("class=\"nodata\""));
    for external in ["<script", "<link", "src=", "url(", "@import", "https://"] {
        assert!(!html.contains(external), "external asset marker {external}");
    }
    assert!(!html.contains("<raw>"), "markup in names is escaped");
    Ok(())
}

/// Runs chromium with a hard time limit, returning stdout.
fn run_chromium(bin: &str, args: &[String], limit: Duration) -> Result<Vec<u8>> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let out = reader.join().unwrap_or_default();
            if !status.success() {
                bail!("{bin} exited with {status}");
            }
            return Ok(out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{bin} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chromium_args(profile: &Path, extra: &[String], page: &str) -> Vec<String> {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        "--hide-scrollbars".to_string(),
        "--no-first-run".to_string(),
        format!("--user-data-dir={}", profile.display()),
    ];
    args.extend_from_slice(extra);
    args.push(page.to_string());
    args
}

#[test]
fn html_report_renders_in_headless_chromium_with_visible_charts() -> Result<()> {
    let Some(bin) = chromium_or_skip("HTML render test not run") else {
        return Ok(());
    };
    let report = sample_report();
    let dir = tempfile::tempdir()?;
    let page = dir.path().join("report.html");
    std::fs::write(&page, to_html(&report)?)?;
    let url = format!("file://{}", page.display());
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = out_dir.join("faultline-report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let (width, height) = (1200u32, 2400u32);

    run_chromium(
        bin,
        &chromium_args(
            &dir.path().join("profile-a"),
            &[
                format!("--screenshot={}", shot.display()),
                format!("--window-size={width},{height}"),
            ],
            &url,
        ),
        Duration::from_secs(60),
    )?;
    eprintln!("SCREENSHOT {}", shot.display());

    // The PNG is a real, non-uniform image of the page size.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot)?));
    let mut png = decoder.read_info()?;
    let mut buf = vec![0; png.output_buffer_size().context("png size")?];
    let info = png.next_frame(&mut buf)?;
    assert_eq!((info.width, info.height), (width, height));
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        distinct.len() > 50,
        "page looks uniform: {} colours",
        distinct.len()
    );
    let near = |p: &[u8], rgb: [u8; 3]| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 4);
    // Fault-window shading (#f5a623 at 22% over the plot background) only exists in
    // the charts, so seeing it proves the SVG charts were painted.
    let shaded = pixels.iter().filter(|p| near(p, [250, 233, 205])).count();
    assert!(
        shaded > 10_000,
        "fault windows not visible: {shaded} shaded pixels"
    );
    // The FAIL badge's red.
    let red = pixels.iter().filter(|p| near(p, [214, 69, 69])).count();
    assert!(red > 200, "verdict badge not visible: {red} red pixels");
    // The fleet's reactions: the degradation band's purple and the half-open breaker's
    // amber are drawn nowhere else on this page.
    let purple = pixels.iter().filter(|p| near(p, [142, 68, 173])).count();
    assert!(
        purple > 1_000,
        "degradation lane not visible: {purple} purple pixels"
    );
    let amber = pixels.iter().filter(|p| near(p, [246, 173, 85])).count();
    assert!(
        amber > 100,
        "half-open breaker not visible: {amber} amber pixels"
    );

    // The browser's DOM holds one parsed SVG chart per SLO, each with a drawn series.
    let dom = String::from_utf8(run_chromium(
        bin,
        &chromium_args(
            &dir.path().join("profile-b"),
            &["--dump-dom".to_string()],
            &url,
        ),
        Duration::from_secs(60),
    )?)?;
    assert_eq!(
        dom.matches("<svg class=\"sli-chart\"").count(),
        report.slos.len()
    );
    assert!(dom.matches("<polyline class=\"sli\"").count() >= report.slos.len());
    // One lane per reaction, on an axis with the fault windows shaded.
    assert_eq!(dom.matches("<svg class=\"reactions-chart\"").count(), 1);
    assert_eq!(
        dom.matches("<g class=\"reaction\"").count(),
        report.reactions.len()
    );
    assert!(
        dom.contains("breaker orders→notifications: open +12s"),
        "{dom}"
    );
    Ok(())
}

#[test]
fn junit_of_an_aborted_run_adds_a_failing_run_testcase() -> Result<()> {
    let mut report = sample_report();
    report.verdict = faultline_controller::report::Verdict {
        outcome: Outcome::Aborted,
        reason: "abort: error rate of gateway <= 20.000% held for 5s & <stopped>".into(),
    };
    let xml = to_junit(&report)?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut in_run = false;
    let mut run_failure = None;
    loop {
        match reader.read_event()? {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                if e.name().as_ref() == b"testcase" {
                    in_run = e
                        .try_get_attribute("name")?
                        .is_some_and(|a| a.value.as_ref() == b"run");
                } else if in_run && e.name().as_ref() == b"failure" {
                    run_failure = e
                        .try_get_attribute("message")?
                        .map(|a| a.unescape_value().map(|v| v.into_owned()))
                        .transpose()?;
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        run_failure.as_deref(),
        Some("abort: error rate of gateway <= 20.000% held for 5s & <stopped>")
    );
    assert_eq!(exit_code(report.verdict.outcome), 1);
    Ok(())
}
