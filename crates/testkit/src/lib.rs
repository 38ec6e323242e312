//! Test-only helpers shared by the integration tests of several crates (a dev-dependency only).
//!
//! The one rule for a test whose prerequisite (root, a binary, a daemon, an idle host) is
//! missing: on a developer's machine it says so and skips; under `CI=true` it fails loudly,
//! because CI installs every prerequisite and a skip there would hide a broken setup.

use std::fmt::Display;

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a missing prerequisite: panics with `why` under `CI=true`; otherwise prints
/// `SKIPPED: why` and returns `false`, for `if !ready { return skip(..) }`-style guards.
///
/// # Panics
///
/// Under `CI=true`, always.
pub fn skip(why: impl Display) -> bool {
    assert!(!under_ci(), "missing prerequisite under CI=true: {why}");
    eprintln!("SKIPPED: {why}");
    false
}
