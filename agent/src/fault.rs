//! The fault abstraction: one fault kind applied to one target.
//!
//! A [`Fault`] knows how to apply itself to a single [`ResolvedTarget`] and how to undo
//! that. Choosing and looping over targets belongs to the controller; the agent only
//! ever sees one target per call. Every applied fault reports what it measurably did
//! through [`ObservedEffect`], which the controller keeps as evidence.

use faultline_spec::wire::{ObservedEffect, ResolvedTarget};

use crate::journal::RevertRecord;

/// Why a fault could not be built, applied or reverted.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The request is well-formed but this fault cannot act on the target as asked.
    #[error("invalid fault: {0}")]
    Invalid(String),
    /// This agent has no backend for the requested fault or backend.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The target does not exist (any more).
    #[error("target not found: {0}")]
    TargetNotFound(String),
    /// The target is one the agent never touches ([`crate::protect`]).
    #[error("protected target: {0}")]
    Protected(String),
    /// The host refused the change.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl FaultError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        FaultError::Io {
            what: what.into(),
            source,
        }
    }
}

/// One kind of fault, ready to be applied to one target.
///
/// `apply` returns a handle that owns the injected change; `revert` consumes it. A handle
/// that is dropped without `revert` undoes its change in `Drop` as well (guard types), so
/// an error path or a panic never leaves a fault behind inside a live agent.
pub trait Fault: Send + Sync + 'static {
    /// Owns the applied change.
    type Handle: Send + Sync + 'static;

    /// Backend name reported in the fault state (`proxy`, `burner`, `memory`, `signal`).
    fn backend(&self) -> &'static str;

    /// What the journal must hold to undo this fault after the agent died, computed before
    /// `apply` so it can be fsynced first. Faults that die with the agent return
    /// [`RevertRecord::DiesWithAgent`].
    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError>;

    /// Checks, without changing anything, that [`Fault::apply`] would accept `target`:
    /// every check `apply` makes before it touches the host. The dry run relies on it
    /// (`POST /v1/faults?dryRun=true`), so a check `apply` makes must live here too.
    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        let _ = target;
        Ok(())
    }

    /// Applies the fault to one target.
    fn apply(&self, target: &ResolvedTarget) -> Result<Self::Handle, FaultError>;

    /// What the fault has measurably done so far.
    fn observe(&self, handle: &Self::Handle) -> ObservedEffect;

    /// The lease was renewed to `ttl` from now. Faults whose expiry the kernel enforces
    /// (nftables set elements with a timeout) refresh it here; the rest need nothing.
    fn renew(&self, handle: &mut Self::Handle, ttl: std::time::Duration) -> Result<(), FaultError> {
        let _ = (handle, ttl);
        Ok(())
    }

    /// Undoes the fault and returns its final observed effect.
    fn revert(&self, handle: Self::Handle) -> Result<ObservedEffect, FaultError>;
}

/// An applied fault with its type erased, as the agent stores it.
pub trait ActiveFault: Send + Sync {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// What the fault has measurably done so far.
    fn observe(&self) -> ObservedEffect;
    /// Undoes the fault; a second call is a no-op returning the last effect.
    fn revert(&mut self) -> Result<ObservedEffect, FaultError>;
    /// See [`Fault::renew`].
    fn renew(&mut self, ttl: std::time::Duration) -> Result<(), FaultError>;
}

/// Pairs a fault with its handle; implements [`ActiveFault`].
pub struct Applied<F: Fault> {
    fault: F,
    handle: Option<F::Handle>,
    last: ObservedEffect,
}

impl<F: Fault> Applied<F> {
    /// Applies `fault` to `target` and keeps the handle.
    pub fn apply(fault: F, target: &ResolvedTarget) -> Result<Self, FaultError> {
        let handle = fault.apply(target)?;
        Ok(Self {
            fault,
            handle: Some(handle),
            last: ObservedEffect::default(),
        })
    }
}

impl<F: Fault> ActiveFault for Applied<F> {
    fn backend(&self) -> &'static str {
        self.fault.backend()
    }

    fn observe(&self) -> ObservedEffect {
        match &self.handle {
            Some(h) => self.fault.observe(h),
            None => self.last.clone(),
        }
    }

    fn renew(&mut self, ttl: std::time::Duration) -> Result<(), FaultError> {
        match &mut self.handle {
            Some(h) => self.fault.renew(h, ttl),
            None => Ok(()),
        }
    }

    fn revert(&mut self) -> Result<ObservedEffect, FaultError> {
        match self.handle.take() {
            Some(h) => {
                self.last = self.fault.revert(h)?;
                Ok(self.last.clone())
            }
            None => Ok(self.last.clone()),
        }
    }
}

/// A fault built from a request, not yet applied, with its type erased.
pub trait PreparedFault: Send {
    /// Backend name.
    fn backend(&self) -> &'static str;
    /// See [`Fault::revert_record`].
    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError>;
    /// See [`Fault::check`].
    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError>;
    /// Applies the fault to one target.
    fn apply(self: Box<Self>, target: &ResolvedTarget) -> Result<Box<dyn ActiveFault>, FaultError>;
}

impl<F: Fault> PreparedFault for F {
    fn backend(&self) -> &'static str {
        Fault::backend(self)
    }

    fn revert_record(&self, target: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Fault::revert_record(self, target)
    }

    fn check(&self, target: &ResolvedTarget) -> Result<(), FaultError> {
        Fault::check(self, target)
    }

    fn apply(self: Box<Self>, target: &ResolvedTarget) -> Result<Box<dyn ActiveFault>, FaultError> {
        Ok(Box::new(Applied::apply(*self, target)?))
    }
}

/// Builds the fault for a request, choosing the backend by the target's form and by
/// what this host can do:
/// - a target that names proxies (local mode) gets the userspace proxy;
/// - a node target (`pid` or `containerId`) gets the privileged backends: nftables for
///   loss, partition and reset, tc for bandwidth, netem or else the redirect proxy for
///   latency, the target's cgroup for CPU and memory, the Docker API for containers.
///
/// An explicit backend the host lacks fails here, before anything is injected.
pub fn build(
    request: &faultline_spec::wire::FaultRequest,
    ctx: &crate::backend::Context,
) -> Result<Box<dyn PreparedFault>, FaultError> {
    crate::backend::build(request, ctx)
}
