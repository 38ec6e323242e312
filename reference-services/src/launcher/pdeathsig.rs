//! `PR_SET_PDEATHSIG` for fleet children, the one place this crate needs `unsafe`.
#![allow(unsafe_code)]

use tokio::process::Command;

/// Makes the kernel SIGKILL the child when the thread that spawned it exits, so no fleet
/// process outlives the launcher, even after the launcher is SIGKILLed. Spawn from a
/// long-lived thread (a tokio worker or the main thread), not from `spawn_blocking`.
pub(super) fn kill_child_when_parent_exits(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing and touches no
    // lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl; then nobody will signal us.
            if std::os::unix::process::parent_id() != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}
