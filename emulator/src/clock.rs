//! The only place the emulator reads time.
//!
//! Every request reads the clock once, at arrival, and passes the values down, so one call sees one
//! consistent "now" (a token created and listed in the same call can never disagree about expiry).
//! Nothing else in the crate may call `SystemTime::now()` or `Instant::now()`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One reading of the clock: wall-clock time for timestamps, monotonic time for rate windows.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Milliseconds since the Unix epoch.
    pub epoch_ms: i64,
    /// Monotonic instant, for measuring intervals (the requests-per-second cap).
    pub instant: Instant,
}

impl Now {
    /// Whole seconds since the Unix epoch: the unit of every AMG timestamp.
    pub fn epoch_secs(&self) -> i64 {
        self.epoch_ms.div_euclid(1000)
    }
}

/// Reads the clock `offset_ms` ahead of (or, negative, behind) the host's: AMG keeps its own
/// time, and the emulator can show a client whose clock is off (`EmulatorConfig::with_clock_offset`).
pub fn now_offset(offset_ms: i64) -> Now {
    let mut n = now();
    n.epoch_ms += offset_ms;
    n
}

/// Reads the clock.
pub fn now() -> Now {
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Now {
        epoch_ms,
        instant: Instant::now(),
    }
}
