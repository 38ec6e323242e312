//! Time as nanoseconds since a fixed origin, read through tokio so paused-time tests drive it.

use tokio::time::Instant;

/// A monotonic clock that measures nanoseconds from its creation.
///
/// Two sources:
/// - [`Clock::tokio`] reads `tokio::time::Instant`, so `tokio::time::pause()` and `advance()`
///   control it in tests. Policies whose timing people test on paused time use it by default
///   (breaker, retry backoff, degradation controller).
/// - [`Clock::fast`] reads the CPU's time-stamp counter through `quanta` (as `governor` does),
///   a few nanoseconds instead of a `clock_gettime` call. The per-request rate paths (rate
///   limiter, retry budget, balancer) use it by default; hand them `Clock::tokio()` to test
///   them on paused time.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Tokio { origin: Instant },
    Fast { clock: quanta::Clock, origin: u64 },
}

impl Clock {
    /// A tokio-time clock whose zero is now.
    pub fn tokio() -> Self {
        Clock {
            source: Source::Tokio {
                origin: Instant::now(),
            },
        }
    }

    /// A TSC clock whose zero is now (ignores tokio's paused time).
    pub fn fast() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Clock {
            source: Source::Fast { clock, origin },
        }
    }

    /// Nanoseconds since the origin; saturates after ~584 years.
    #[inline]
    pub fn now_nanos(&self) -> u64 {
        match &self.source {
            Source::Tokio { origin } => {
                u64::try_from(Instant::now().saturating_duration_since(*origin).as_nanos())
                    .unwrap_or(u64::MAX)
            }
            Source::Fast { clock, origin } => clock.delta_as_nanos(*origin, clock.raw()),
        }
    }
}

impl Default for Clock {
    /// [`Clock::tokio`].
    fn default() -> Self {
        Self::tokio()
    }
}

/// A tiny lock-free pseudo-random source (SplitMix64 over an atomic counter).
///
/// Jitter and p2c only need cheap, well-spread numbers, not cryptographic ones; an atomic counter
/// lets one shared policy hand out numbers from many tasks without a lock or a thread-local, and
/// a fixed seed makes tests reproducible.
#[derive(Debug)]
pub struct Rng {
    state: std::sync::atomic::AtomicU64,
}

impl Rng {
    /// A generator started from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Rng {
            state: std::sync::atomic::AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the address of a stack value and the time, different per process.
    pub fn from_entropy() -> Self {
        let marker = 0u8;
        let addr = &marker as *const u8 as u64;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::seeded(addr ^ t.rotate_left(17))
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]` (inclusive); returns `lo` if `hi <= lo`.
    #[inline]
    pub fn between(&self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift maps 64 random bits onto the span with negligible bias.
        lo + ((u128::from(self.next_u64()) * u128::from(span + 1)) >> 64) as u64
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::from_entropy()
    }
}
