//! CPU and memory stress. Both run inside the agent process (threads and heap), so they
//! die with it; the privileged backend that joins the target's cgroup plugs in later.

pub mod cpu;
pub mod memory;
