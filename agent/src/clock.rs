//! Kernel timestamps (`bpf_ktime_get_boot_ns`) to wall-clock time.

use std::time::{Duration, SystemTime};

use nix::time::{ClockId, clock_gettime};

/// Converts boot-time nanoseconds to `SystemTime`.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// Wall time at boot-time zero.
    epoch: SystemTime,
}

impl BootClock {
    pub fn new() -> Self {
        let boot = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .map(Duration::from)
            .unwrap_or_default();
        let now = SystemTime::now();
        Self {
            epoch: now.checked_sub(boot).unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.epoch + Duration::from_nanos(boot_ns)
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_in_boot_time_is_now_in_wall_time() {
        let clock = BootClock::new();
        let boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).expect("boottime"));
        let wall = clock.wall(boot.as_nanos() as u64);
        let skew = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
