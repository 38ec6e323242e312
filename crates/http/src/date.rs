//! A cached IMF-fixdate `Date` header value, refreshed once per second per thread.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) const DATE_LEN: usize = 29;

thread_local! {
    /// The formatted date and the monotonic instant at which its second ends.
    static CACHE: Cell<(Option<Instant>, [u8; DATE_LEN])> = const { Cell::new((None, [0; DATE_LEN])) };
}

/// The current date, formatted, given a monotonic `now` the caller has already read (the
/// server reads one clock per batch of requests and uses it for its timeouts too). The wall
/// clock is read only when the cached second is over, so a clock step shows within a second.
pub(crate) fn at(now: Instant) -> [u8; DATE_LEN] {
    CACHE.with(|c| {
        let (refresh_at, cached) = c.get();
        if refresh_at.is_some_and(|r| now < r) {
            return cached;
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let fresh = format(wall.as_secs());
        let rest_of_second = Duration::from_nanos(1_000_000_000 - u64::from(wall.subsec_nanos()));
        c.set((Some(now + rest_of_second), fresh));
        fresh
    })
}

fn two(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Formats Unix seconds as IMF-fixdate (RFC 9110 section 5.6.7).
pub(crate) fn format(secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), shifted so the era starts in March.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u64;

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[month - 1]);
    two(&mut out[12..14], year / 100 % 100);
    two(&mut out[14..16], year % 100);
    two(&mut out[17..19], rem / 3600);
    two(&mut out[20..22], rem / 60 % 60);
    two(&mut out[23..25], rem % 60);
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tokio::time::Instant;

    #[test]
    fn cached_date_is_the_wall_clock_second_and_refreshes_when_it_ends() {
        let wall = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let before = wall();
        let t = Instant::now();
        let d = super::at(t);
        assert!(d == super::format(before) || d == super::format(wall()));
        let (refresh_at, _) = super::CACHE.with(std::cell::Cell::get);
        let refresh_at = refresh_at.unwrap();
        assert!(refresh_at > t && refresh_at <= t + Duration::from_secs(1));
        assert_eq!(super::at(t), d, "same instant, same cached value");
        // An instant past the cached second's end reads the wall clock again.
        let later = refresh_at + Duration::from_secs(2);
        super::at(later);
        let (next, _) = super::CACHE.with(std::cell::Cell::get);
        let next = next.unwrap();
        assert!(next > later && next <= later + Duration::from_secs(1));
    }

    #[test]
    fn formats_known_instants_as_imf_fixdate() {
        assert_eq!(&super::format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &super::format(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            &super::format(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            &super::format(4_102_444_799),
            b"Thu, 31 Dec 2099 23:59:59 GMT"
        );
    }
}
