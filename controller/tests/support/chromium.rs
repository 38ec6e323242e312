//! Finding headless Chromium for the HTML report tests, shared with the CLI's tests
//! (`#[path]`-included there), so both skip and fail under the same rule.

use std::process::{Command, Stdio};

/// The first Chromium on PATH that answers `--version`, or `None` after printing that
/// `skipped` (what the test leaves undone) when there is none. Under `CI=true` a missing
/// Chromium fails the test instead.
pub fn chromium_or_skip(skipped: &str) -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|bin| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if found.is_none() {
        faultline_testkit::skip(format_args!(
            "chromium not found (apt-get install -y chromium); {skipped}"
        ));
    }
    found
}
