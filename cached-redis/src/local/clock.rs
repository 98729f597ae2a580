//! The clock a near hit reads: nanoseconds since the cache was made, as one integer.
//!
//! `Instant::now()` and then a difference of two `Instant`s cost a near hit about a hundred
//! instructions (a `timespec` subtraction with its checks, then the conversion). On Linux the
//! clock is read here as `CLOCK_MONOTONIC` (the clock `Instant` reads there) and turned into
//! nanoseconds with a multiply and an add. Elsewhere it is `Instant`'s.

use std::time::{Duration, Instant};

/// A monotonic clock counted from when it was made.
pub(crate) struct Clock {
    base: Instant,
    /// `base` on the raw clock, read just before `base`: [`Clock::now`] reads a few
    /// nanoseconds late, never early, so a copy's age and the tracking connection's silence
    /// are never understated.
    #[cfg(target_os = "linux")]
    base_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        #[cfg(target_os = "linux")]
        let base_ns = monotonic_ns();
        Clock {
            base: Instant::now(),
            #[cfg(target_os = "linux")]
            base_ns,
        }
    }

    /// Nanoseconds since this clock was made.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(target_os = "linux")]
        return monotonic_ns().saturating_sub(self.base_ns);
        #[cfg(not(target_os = "linux"))]
        return self.at(Instant::now());
    }

    /// `at` as nanoseconds since this clock was made (0 for a moment before it).
    pub(crate) fn at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.base))
    }
}

/// `duration` in nanoseconds, saturating: in u64 (585 years), not `as_nanos`'s u128.
#[inline]
pub(crate) fn nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

#[cfg(target_os = "linux")]
#[inline]
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec`; CLOCK_MONOTONIC exists on every Linux,
    // and the call writes nothing else.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    debug_assert_eq!(read, 0, "CLOCK_MONOTONIC is always readable");
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_never_before_the_instant_read_just_before_it() {
        let clock = Clock::new();
        for _ in 0..1_000 {
            let instant = Instant::now();
            let now = clock.now();
            assert!(now >= clock.at(instant), "{now} < {}", clock.at(instant));
        }
    }

    #[test]
    fn now_follows_the_instants_it_is_compared_with() {
        let clock = Clock::new();
        let later = Instant::now() + Duration::from_millis(20);
        std::thread::sleep(Duration::from_millis(25));
        let now = clock.now();
        assert!(now >= clock.at(later));
        assert!(now < clock.at(later) + Duration::from_secs(5).as_nanos() as u64);
        assert_eq!(clock.at(clock.base - Duration::from_secs(1)), 0);
    }
}
