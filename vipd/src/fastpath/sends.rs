//! Failing sends, said once per episode rather than once per packet: a node whose
//! firewall or full conntrack table refuses one heartbeat in twenty would otherwise log
//! two lines per refusal. An episode starts at the first failure (said with its error),
//! is summed up at most once a [`SUMMARY_NS`] while failures go on, and ends once sends
//! have worked for [`QUIET_NS`] (said with how many failed). Pure: both modes' fast paths
//! feed it their send results and report what it returns.

/// An episode ends after this long without a failure (ns).
pub const QUIET_NS: u64 = 5_000_000_000;

/// While failures go on, they are summed up at most this often (ns).
pub const SUMMARY_NS: u64 = 60_000_000_000;

/// What to say about the sends, when there is something to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendNotice {
    /// Sends started failing: the first error.
    Failing(String),
    /// Failures went on: how many of the sends since the last notice failed, and the
    /// last error.
    Still {
        failed: u64,
        sent: u64,
        error: String,
    },
    /// Sends have worked for [`QUIET_NS`]: how many of the episode's sends failed.
    Recovered { failed: u64, sent: u64 },
}

/// The send results of one sender (a pool's heartbeats, a VRRP group's adverts).
#[derive(Clone, Debug, Default)]
pub struct SendWatch {
    episode: Option<Episode>,
}

#[derive(Clone, Debug)]
struct Episode {
    last_failure: u64,
    last_said: u64,
    failed: u64,
    sent: u64,
    /// Since the last notice.
    window_failed: u64,
    window_sent: u64,
}

impl SendWatch {
    /// One send's result at `now`; what to say, if anything.
    pub fn sent(&mut self, now: u64, result: Result<(), &str>) -> Option<SendNotice> {
        match (result, self.episode.as_mut()) {
            (Err(error), None) => {
                self.episode = Some(Episode {
                    last_failure: now,
                    last_said: now,
                    failed: 1,
                    sent: 1,
                    window_failed: 0,
                    window_sent: 0,
                });
                Some(SendNotice::Failing(error.to_owned()))
            }
            (Err(error), Some(e)) => {
                e.last_failure = now;
                e.failed += 1;
                e.sent += 1;
                e.window_failed += 1;
                e.window_sent += 1;
                if now.saturating_sub(e.last_said) < SUMMARY_NS {
                    return None;
                }
                let notice = SendNotice::Still {
                    failed: e.window_failed,
                    sent: e.window_sent,
                    error: error.to_owned(),
                };
                e.last_said = now;
                e.window_failed = 0;
                e.window_sent = 0;
                Some(notice)
            }
            (Ok(()), Some(e)) => {
                e.sent += 1;
                e.window_sent += 1;
                if now.saturating_sub(e.last_failure) < QUIET_NS {
                    return None;
                }
                let notice = SendNotice::Recovered {
                    failed: e.failed,
                    sent: e.sent,
                };
                self.episode = None;
                Some(notice)
            }
            (Ok(()), None) => None,
        }
    }

    /// Whether an episode of failures is open.
    pub fn failing(&self) -> bool {
        self.episode.is_some()
    }
}

impl std::fmt::Display for SendNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendNotice::Failing(e) => write!(
                f,
                "fails: {e} (said once; a summary follows at most once a minute)"
            ),
            SendNotice::Still {
                failed,
                sent,
                error,
            } => write!(
                f,
                "still fails: {failed} of {sent} since the last notice ({error})"
            ),
            SendNotice::Recovered { failed, sent } => write!(
                f,
                "works again: {failed} of {sent} failed, none for {} s",
                QUIET_NS / 1_000_000_000
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn one_failure_in_twenty_is_said_once_a_minute_not_per_packet() {
        let mut w = SendWatch::default();
        let mut said = Vec::new();
        // Ten minutes of 10 ms sends, every 20th refused.
        for i in 0..60_000u64 {
            let result = if i % 20 == 19 { Err("EPERM") } else { Ok(()) };
            said.extend(w.sent(i * 10 * MS, result));
        }
        assert!(matches!(said[0], SendNotice::Failing(_)));
        assert!(said.len() <= 11, "{} notices", said.len());
        assert!(
            said[1..]
                .iter()
                .all(|n| matches!(n, SendNotice::Still { .. }))
        );
        assert!(w.failing());
    }

    #[test]
    fn an_episode_ends_after_quiet_sends_with_its_count() {
        let mut w = SendWatch::default();
        assert_eq!(w.sent(0, Ok(())), None);
        assert_eq!(w.sent(MS, Err("x")), Some(SendNotice::Failing("x".into())));
        assert_eq!(w.sent(2 * MS, Err("x")), None);
        assert_eq!(w.sent(3 * MS, Ok(())), None);
        assert_eq!(
            w.sent(2 * MS + QUIET_NS, Ok(())),
            Some(SendNotice::Recovered { failed: 2, sent: 4 })
        );
        assert!(!w.failing());
    }
}
