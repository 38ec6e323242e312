//! Memory stress: allocate and touch the asked size, release it on revert.
//!
//! Every page is written, so the memory is resident, not merely reserved. The agent
//! refuses sizes above `MemAvailable`, so a typo cannot push the host into the OOM
//! killer. Growth of the agent's resident set is measured from `/proc/self/statm`.

use faultline_spec::MemoryFault;
use faultline_spec::wire::{ObservedEffect, ResolvedTarget};

use crate::fault::{Fault, FaultError};
use crate::journal::RevertRecord;

/// Resident bytes of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `memory: {size}` held by the agent.
#[derive(Debug, Clone)]
pub struct MemoryStress {
    size: u64,
}

impl MemoryStress {
    /// Checks the size is above zero.
    pub fn new(fault: &MemoryFault) -> Result<Self, FaultError> {
        let size = fault.size.bytes();
        if size == 0 {
            return Err(FaultError::Invalid("memory size must be above 0".into()));
        }
        Ok(Self { size })
    }
}

/// The held memory; dropping it releases the memory.
#[derive(Debug)]
pub struct MemoryHandle {
    block: Vec<u8>,
    rss_growth: u64,
}

impl MemoryHandle {
    fn effect(&self) -> ObservedEffect {
        let mut effect = ObservedEffect::default();
        let held = self.block.len() as u64;
        effect.metrics.insert("bytes_held".into(), held as f64);
        effect
            .metrics
            .insert("rss_growth_bytes".into(), self.rss_growth as f64);
        effect.summary = format!(
            "holding {} MiB, resident set grew by {} MiB",
            held >> 20,
            self.rss_growth >> 20
        );
        effect
    }
}

/// Refuses to hold more memory than the host has available (`MemAvailable`).
pub fn check_available(size: u64) -> Result<(), FaultError> {
    match available_bytes() {
        Some(avail) if size > avail => Err(FaultError::Invalid(format!(
            "memory size {} MiB exceeds MemAvailable {} MiB",
            size >> 20,
            avail >> 20
        ))),
        _ => Ok(()),
    }
}

impl Fault for MemoryStress {
    type Handle = MemoryHandle;

    fn backend(&self) -> &'static str {
        "memory"
    }

    fn revert_record(&self, _: &ResolvedTarget) -> Result<RevertRecord, FaultError> {
        Ok(RevertRecord::DiesWithAgent)
    }

    fn check(&self, _target: &ResolvedTarget) -> Result<(), FaultError> {
        check_available(self.size)
    }

    fn apply(&self, _target: &ResolvedTarget) -> Result<MemoryHandle, FaultError> {
        check_available(self.size)?;
        let len = usize::try_from(self.size)
            .map_err(|_| FaultError::Invalid("memory size does not fit this host".into()))?;
        let before = resident_bytes().unwrap_or(0);
        let mut block = Vec::new();
        block.try_reserve_exact(len).map_err(|e| {
            FaultError::io(
                "allocate stress memory",
                std::io::Error::other(e.to_string()),
            )
        })?;
        // Writing a non-zero byte everywhere makes every page resident.
        block.resize(len, 0xA5);
        let after = resident_bytes().unwrap_or(0);
        Ok(MemoryHandle {
            block,
            rss_growth: after.saturating_sub(before),
        })
    }

    fn observe(&self, handle: &MemoryHandle) -> ObservedEffect {
        handle.effect()
    }

    fn revert(&self, handle: MemoryHandle) -> Result<ObservedEffect, FaultError> {
        let effect = handle.effect();
        drop(handle);
        Ok(effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_spec::ByteSize;

    #[test]
    fn memory_stress_makes_the_size_resident_and_releases_it() {
        let stress = MemoryStress::new(&MemoryFault {
            size: ByteSize(64 << 20),
        })
        .unwrap();
        let handle = stress.apply(&ResolvedTarget::default()).unwrap();
        let effect = stress.observe(&handle);
        assert_eq!(effect.metrics["bytes_held"], (64u64 << 20) as f64);
        // The resident set grew by (nearly) the whole block: the pages were touched.
        assert!(
            effect.metrics["rss_growth_bytes"] >= (60u64 << 20) as f64,
            "{}",
            effect.summary
        );
        let before = resident_bytes().unwrap();
        stress.revert(handle).unwrap();
        let after = resident_bytes().unwrap();
        assert!(
            before - after >= 60 << 20,
            "released {} bytes",
            before - after
        );
    }

    #[test]
    fn more_than_available_memory_is_refused() {
        let stress = MemoryStress::new(&MemoryFault {
            size: ByteSize(u64::MAX / 2),
        })
        .unwrap();
        assert!(matches!(
            stress.apply(&ResolvedTarget::default()),
            Err(FaultError::Invalid(_))
        ));
    }
}
