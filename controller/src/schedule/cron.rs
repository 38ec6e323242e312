//! Cron fire times and the clock they are measured on.
//!
//! Fire times are computed with the `cron` crate (the one `tokio-cron-scheduler` uses
//! internally) and waited for with `tokio::time`, so that tests drive the scheduler on
//! paused tokio time. `tokio-cron-scheduler` reads the wall clock (`chrono::Utc::now()`)
//! inside its own ticker and cannot be driven by paused time; see docs/kubernetes.md.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::ScheduleError;

/// A parsed cron expression (with seconds) read in an IANA time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    tz: Tz,
}

impl CronSchedule {
    /// Parse `expr` (`sec min hour dom month dow [year]`) in `time_zone` (UTC when `None`).
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let schedule = cron::Schedule::from_str(expr).map_err(|e| ScheduleError::Cron {
            expr: expr.to_owned(),
            message: e.to_string(),
        })?;
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => {
                Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_owned()))?
            }
        };
        Ok(Self { schedule, tz })
    }

    /// The first fire time strictly after `after`, or `None` when the schedule has no
    /// future fire time (a past year).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.schedule
            .after(&local)
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }
}

/// The scheduler's notion of "now" on the wall clock.
///
/// `System` reads `Utc::now()`. `Anchored` derives wall time from tokio's monotonic
/// clock (`anchor + (Instant::now() - started)`), so it advances exactly as tokio time
/// does: under `tokio::time::pause()` a test decides when 02:00 arrives.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The real wall clock.
    System,
    /// Wall time derived from tokio time, starting at `wall` when tokio time was `at`.
    Anchored {
        /// Wall time at the anchor.
        wall: DateTime<Utc>,
        /// Tokio time at the anchor.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `wall` now and then advances with tokio time.
    pub fn anchored(wall: DateTime<Utc>) -> Self {
        Clock::Anchored {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    /// The current wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Anchored { wall, at } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
                *wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
            }
        }
    }

    /// Sleep until the wall clock reaches `deadline`. Sleeps in slices of at most a
    /// minute and re-reads the clock, so a wall-clock jump (NTP, suspend) is noticed.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) {
        const SLICE: std::time::Duration = std::time::Duration::from_secs(60);
        loop {
            let now = self.now();
            if now >= deadline {
                return;
            }
            let left = (deadline - now).to_std().unwrap_or_default();
            tokio::time::sleep(left.min(SLICE)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn nightly_schedule_fires_at_two_in_its_time_zone() {
        let utc = CronSchedule::parse("0 0 2 * * *", None).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        assert_eq!(
            utc.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 11, 2, 0, 0).unwrap())
        );
        // Berlin is UTC+1 in January: 02:00 local is 01:00 UTC.
        let berlin = CronSchedule::parse("0 0 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            berlin.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 11, 1, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_cron_and_unknown_time_zone_are_clear_errors() {
        let e = CronSchedule::parse("every night", None).unwrap_err();
        assert!(e.to_string().contains("every night"), "{e}");
        let e = CronSchedule::parse("0 0 2 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn anchored_clock_advances_with_paused_tokio_time() {
        let start = Utc.with_ymd_and_hms(2026, 1, 10, 1, 59, 0).unwrap();
        let clock = Clock::anchored(start);
        let target = Utc.with_ymd_and_hms(2026, 1, 10, 2, 0, 0).unwrap();
        clock.sleep_until(target).await;
        assert_eq!(clock.now(), target);
    }
}
