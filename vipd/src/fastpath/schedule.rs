//! When the fast path wakes: pure arithmetic on CLOCK_MONOTONIC nanoseconds, tested with
//! a fake clock.

/// Something that happens every `period` at absolute times `start + k × period`.
///
/// Sending is tied to the slots, not to when the last send happened, so a late wake-up
/// does not push every later heartbeat back (no drift); slots missed while the thread
/// could not run are skipped, not sent in a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periodic {
    next: u64,
    period: u64,
}

impl Periodic {
    /// First due at `start`, then every `period` (at least 1 ns).
    pub fn new(start: u64, period: u64) -> Self {
        Self {
            next: start,
            period: period.max(1),
        }
    }

    /// When it is next due.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether it is due at `now`.
    pub fn due(&self, now: u64) -> bool {
        now >= self.next
    }

    /// Marks the due slot as served at `now`: the next is the first slot after `now`.
    /// Returns how late this one was served (ns after its slot).
    pub fn advance(&mut self, now: u64) -> u64 {
        let late = now.saturating_sub(self.next);
        if now >= self.next {
            let missed = (now - self.next) / self.period;
            self.next += (missed + 1) * self.period;
        }
        late
    }
}

/// The earliest of some optional instants.
pub fn earliest(at: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    at.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn slots_are_absolute_and_do_not_drift() {
        let mut p = Periodic::new(10 * MS, MS);
        assert!(!p.due(10 * MS - 1));
        assert!(p.due(10 * MS));
        // Served 300 µs late: the next slot is still 11 ms, not 11.3 ms.
        assert_eq!(p.advance(10 * MS + 300_000), 300_000);
        assert_eq!(p.next(), 11 * MS);
        assert_eq!(p.advance(11 * MS), 0);
        assert_eq!(p.next(), 12 * MS);
    }

    #[test]
    fn missed_slots_are_skipped_not_bursted() {
        let mut p = Periodic::new(10 * MS, MS);
        // The thread could not run for 3.5 ms: one send now, the next at the next slot.
        assert_eq!(p.advance(13 * MS + 500_000), 3 * MS + 500_000);
        assert_eq!(p.next(), 14 * MS);
        assert!(!p.due(13 * MS + 600_000));
    }

    #[test]
    fn earliest_ignores_absent_instants() {
        assert_eq!(earliest([None, Some(5), Some(3), None]), Some(3));
        assert_eq!(earliest([None::<u64>, None]), None);
    }
}
