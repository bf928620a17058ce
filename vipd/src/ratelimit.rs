//! Rate limits for log lines that packets from the wire can trigger: at most a burst of
//! lines per key (a peer, a source) per window, the rest counted and reported with the
//! next line, so a flood cannot fill a disk or drown the journal. Pure, with the time
//! passed in.

use std::collections::BTreeMap;

/// Lines allowed per key and window.
#[derive(Debug)]
pub struct LogLimit<K> {
    window_ns: u64,
    burst: u32,
    keys: BTreeMap<K, Window>,
    /// Keys tracked at most; past that, every new key shares one window.
    max_keys: usize,
    overflow: Window,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start_ns: u64,
    lines: u32,
    suppressed: u64,
}

impl Window {
    fn allow(&mut self, now_ns: u64, window_ns: u64, burst: u32) -> Option<u64> {
        if self.lines == 0 || now_ns.saturating_sub(self.start_ns) >= window_ns {
            self.start_ns = now_ns;
            self.lines = 0;
        }
        if self.lines < burst {
            self.lines += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl<K: Ord + Copy> LogLimit<K> {
    /// At most `burst` lines per key every `window_ns`, for up to `max_keys` keys.
    pub fn new(window_ns: u64, burst: u32, max_keys: usize) -> Self {
        Self {
            window_ns,
            burst,
            keys: BTreeMap::new(),
            max_keys,
            overflow: Window::default(),
        }
    }

    /// One line per peer a second, two in a row allowed (a join and a leave).
    pub fn per_peer() -> Self {
        Self::new(1_000_000_000, 2, 256)
    }

    /// Whether a line for `key` may be logged at `now_ns`: `Some(n)` with the number of
    /// lines suppressed for it since the last one logged, or `None` (counted).
    pub fn allow(&mut self, key: K, now_ns: u64) -> Option<u64> {
        let (window_ns, burst) = (self.window_ns, self.burst);
        if !self.keys.contains_key(&key) && self.keys.len() >= self.max_keys {
            // Forget keys whose window is over; if all are busy, share the overflow window.
            self.keys
                .retain(|_, w| now_ns.saturating_sub(w.start_ns) < window_ns || w.suppressed > 0);
            if self.keys.len() >= self.max_keys {
                return self.overflow.allow(now_ns, window_ns, burst);
            }
        }
        self.keys
            .entry(key)
            .or_default()
            .allow(now_ns, window_ns, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_per_window_then_the_count_of_what_was_suppressed() {
        let mut l = LogLimit::new(S, 2, 8);
        assert_eq!(l.allow(7u32, 0), Some(0));
        assert_eq!(l.allow(7, 1), Some(0));
        for t in 2..1000 {
            assert_eq!(l.allow(7, t), None);
        }
        // Another key has its own budget.
        assert_eq!(l.allow(8, 5), Some(0));
        // The next window reports the 998 suppressed lines once.
        assert_eq!(l.allow(7, S), Some(998));
        assert_eq!(l.allow(7, S + 1), Some(0));
        assert_eq!(l.allow(7, S + 2), None);
    }

    #[test]
    fn many_keys_share_one_bounded_budget() {
        let mut l = LogLimit::new(S, 1, 4);
        let allowed = (0..100_000u32)
            .filter(|k| l.allow(*k, 10).is_some())
            .count();
        // Four keys of their own, and one line for all the others.
        assert_eq!(allowed, 5);
        assert!(l.keys.len() <= 4);
        // Later, old keys make room again.
        assert_eq!(l.allow(200_000, 10 + S), Some(0));
    }
}
