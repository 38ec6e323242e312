//! `faultline-agent`: the node agent.
//!
//! The agent injects faults into one node's targets and guarantees they do not outlive
//! their lease, nor the agent itself:
//! - every fault holds a lease ([`Agent::renew`]); an expired lease is reverted at once;
//! - anything that would survive the agent's death is written to a [`journal`] and
//!   fsynced *before* it is applied, and reverted when the agent starts again;
//! - proxies and stress workers are threads and tasks of the agent, so they die with it.
//!
//! The [`Agent`] is a library first: the controller's local mode embeds it in-process,
//! and `chaos agent` serves the same object over HTTP ([`api`]).

pub mod agent;
pub mod api;
pub mod backend;
pub mod capabilities;
pub mod cgroup;
pub mod docker;
pub mod fault;
pub mod journal;
pub mod metrics;
pub mod netns;
pub mod nft;
pub mod openapi;
pub mod process;
pub mod protect;
pub mod proxy;
pub mod redirect;
pub mod stress;
pub mod target;
pub mod tc;
pub mod tls;
pub mod watchdog;

pub use agent::{Agent, AgentConfig, AgentError, ApplyOutcome, RecoveryReport};
pub use fault::{ActiveFault, Fault, FaultError};
