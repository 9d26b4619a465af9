//! What time and randomness a plugin sees. There is no real clock inside a
//! plugin: WASI's wall and monotonic clocks both read the host's `now-ms`
//! of the call in progress, and its random sources are seeded per instance
//! from the plugin's hash. So the same plugin, given the same batches, gives
//! the same verdicts in `vigil policy check`, in tests, and in a replay.
//!
//! Also the one Unix-time helper the host uses for what it reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::SeedableRng;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Milliseconds since the Unix epoch of `at` (0 before the epoch).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}

/// The host's `now-ms` of the call in progress, shared by a sandbox and the
/// clocks of its instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallClock(Arc<AtomicU64>);

impl CallClock {
    /// Sets the time the next guest call sees.
    pub(crate) fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `wasi:clocks/wall-clock`: `now-ms` after the Unix epoch.
pub(crate) struct PluginWallClock(pub(crate) CallClock);

impl HostWallClock for PluginWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

/// `wasi:clocks/monotonic-clock`: `now-ms`, in nanoseconds.
pub(crate) struct PluginMonotonicClock(pub(crate) CallClock);

impl HostMonotonicClock for PluginMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.now_ms().saturating_mul(1_000_000)
    }
}

/// The seed of an instance's random sources: from the plugin's hash and how
/// many instances of it came before (a restart after a fault gets the next).
pub(crate) fn instance_seed(sha256_hex: &str, instance: u64) -> u64 {
    let prefix = sha256_hex.get(..16).unwrap_or("0");
    u64::from_str_radix(prefix, 16).unwrap_or(0) ^ instance.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A generator for one of an instance's random sources.
pub(crate) fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_by_instance_and_repeat_for_the_same_one() {
        let sha = "0123456789abcdef0123456789abcdef";
        assert_eq!(instance_seed(sha, 0), instance_seed(sha, 0));
        assert_ne!(instance_seed(sha, 0), instance_seed(sha, 1));
    }

    #[test]
    fn the_plugin_clocks_read_the_call_time() {
        let clock = CallClock::default();
        clock.set(1_500);
        assert_eq!(
            PluginWallClock(clock.clone()).now(),
            Duration::from_millis(1_500)
        );
        assert_eq!(PluginMonotonicClock(clock).now(), 1_500_000_000);
    }
}
