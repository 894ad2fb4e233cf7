//! Time, passed in explicitly.
//!
//! Every time-dependent rule (expiry, grace windows, secret rotation) takes "now" from a
//! [`Clock`], so unit tests can pin it and production uses the system clock. Tessera works in
//! whole Unix seconds: that is the resolution of `exp`/`iat` and of Moov's `expires_in`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds.
pub type UnixTime = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current Unix time in seconds.
    fn now(&self) -> UnixTime;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock stopped at a given instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub UnixTime);

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0
    }
}
