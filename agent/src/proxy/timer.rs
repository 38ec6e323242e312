//! Release times with sub-millisecond precision.
//!
//! Tokio's timer fires on a 1 ms grid and rounds deadlines up, so a delayed chunk would
//! leave anywhere up to ~1.5 ms late, and the error would move as the load moves. A pump
//! therefore sleeps on tokio's timer until [`COARSE_MARGIN`] before the release time and
//! hands the rest to one timer thread per process, which waits on a condition variable
//! (a futex with a high-resolution kernel timeout) and wakes the pump at the deadline.
//!
//! When the tokio clock is paused (tests that advance time by hand), the whole wait stays
//! on tokio's clock: the timer thread only knows real time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long before the release time the coarse tokio sleep ends.
const COARSE_MARGIN: Duration = Duration::from_millis(2);

/// Waits until `release`, to within the kernel's timer slack (~50 µs) on a live clock.
pub(crate) async fn sleep_until(release: Instant) {
    let coarse = release.checked_sub(COARSE_MARGIN).unwrap_or(release);
    if coarse > Instant::now() {
        tokio::time::sleep_until(coarse).await;
    }
    if clock_is_paused() {
        tokio::time::sleep_until(release).await;
        return;
    }
    let now = Instant::now();
    if release <= now {
        return;
    }
    let (tx, rx) = oneshot::channel();
    timer().add(release.into_std(), tx);
    // A dropped sender (the timer thread is gone) ends the wait early; never hangs.
    let _ = rx.await;
}

/// Whether tokio's clock is paused or advanced by hand: it then drifts from real time.
fn clock_is_paused() -> bool {
    let tokio_now = Instant::now().into_std();
    let real_now = std::time::Instant::now();
    let drift = if tokio_now > real_now {
        tokio_now - real_now
    } else {
        real_now - tokio_now
    };
    drift > Duration::from_millis(1)
}

type Entry = Reverse<(std::time::Instant, u64)>;

struct Timer {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    senders: std::collections::HashMap<u64, oneshot::Sender<()>>,
    next_id: u64,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("proxy-timer".into())
            .spawn(move || timer.run())
            .expect("spawn the proxy timer thread");
        timer
    })
}

impl Timer {
    fn add(&self, at: std::time::Instant, tx: oneshot::Sender<()>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = s.next_id;
        s.next_id += 1;
        let earliest = s.heap.peek().is_none_or(|Reverse((first, _))| at < *first);
        s.heap.push(Reverse((at, id)));
        s.senders.insert(id, tx);
        drop(s);
        if earliest {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = std::time::Instant::now();
            while let Some(Reverse((at, id))) = s.heap.peek().copied() {
                if at > now {
                    break;
                }
                s.heap.pop();
                if let Some(tx) = s.senders.remove(&id) {
                    let _ = tx.send(());
                }
            }
            s = match s.heap.peek() {
                Some(Reverse((at, _))) => {
                    let wait = at.saturating_duration_since(now);
                    self.wake
                        .wait_timeout(s, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_waits_on_tokio_time_alone() {
        let start = Instant::now();
        sleep_until(start + Duration::from_millis(100)).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
    }

    #[tokio::test]
    async fn no_wait_ends_before_its_deadline() {
        let start = Instant::now();
        let mut waits = Vec::new();
        for ms in [9u64, 3, 6] {
            let at = start + Duration::from_millis(ms);
            waits.push(tokio::spawn(async move {
                sleep_until(at).await;
                (ms, Instant::now() >= at)
            }));
        }
        for w in waits {
            let (ms, on_time) = w.await.unwrap();
            assert!(on_time, "the {ms} ms wait ended early");
        }
    }
}
