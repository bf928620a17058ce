//! What the pool and the VRRP groups share: announcements, health checks, hooks and
//! metrics (`[announce]`, `[[check]]`, `[hooks]`, `[metrics]`), checked.

use std::{net::SocketAddr, time::Duration};

use super::{
    DAY, HOUR,
    file::{AnnounceSection, Dur, File, HooksSection, MetricsSection},
    health::{Check, check_health_checks},
};

/// The settings both the pool and the VRRP groups use, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    /// Announcements at takeover.
    pub announce_burst: u16,
    /// Repeats after a takeover.
    pub announce_repeats: Vec<Duration>,
    /// Periodic re-announcement (None: off).
    pub announce_refresh: Option<Duration>,
    /// Health checks.
    pub checks: Vec<Check>,
    /// Hook command.
    pub hook: Option<Vec<String>>,
    /// Hook timeout.
    pub hook_timeout: Duration,
    /// Prometheus listen address.
    pub metrics: Option<SocketAddr>,
}

impl Common {
    /// Checks `[announce]`, `[[check]]`, `[hooks]` and `[metrics]`, and fills in defaults.
    pub fn check(f: &File) -> Result<Self, String> {
        let a = &f.announce;
        super::at_most("announce.refresh", a.refresh, DAY)?;
        for r in a.repeats.iter().flatten() {
            super::at_most("announce.repeats", Some(*r), HOUR)?;
        }
        super::at_most("hooks.timeout", f.hooks.timeout, HOUR)?;
        for c in &f.checks {
            super::at_most("check interval", Some(c.interval), HOUR)?;
            super::at_most("check timeout", Some(c.timeout), HOUR)?;
        }
        let burst = a.burst.unwrap_or(3);
        if !(1..=100).contains(&burst) {
            return Err("the announce burst must be 1 to 100".into());
        }
        check_health_checks(&f.checks)?;
        if f.hooks.command.as_ref().is_some_and(Vec::is_empty) {
            return Err("hooks.command is empty".into());
        }
        Ok(Common {
            announce_burst: burst,
            announce_repeats: a.repeats.as_ref().map_or_else(
                || {
                    vec![
                        Duration::from_millis(50),
                        Duration::from_millis(250),
                        Duration::from_secs(1),
                    ]
                },
                |r| r.iter().map(|d| d.0).collect(),
            ),
            announce_refresh: Some(a.refresh.map_or(Duration::from_secs(60), |d| d.0))
                .filter(|d| !d.is_zero()),
            checks: f.checks.clone(),
            hook: f.hooks.command.clone(),
            hook_timeout: f.hooks.timeout.map_or(Duration::from_secs(10), |d| d.0),
            metrics: f.metrics.listen,
        })
    }

    /// Writes these keys, every one filled in, into `f`.
    pub fn write(&self, f: &mut File) {
        f.announce = AnnounceSection {
            burst: Some(self.announce_burst),
            repeats: Some(self.announce_repeats.iter().map(|d| Dur(*d)).collect()),
            refresh: Some(Dur(self.announce_refresh.unwrap_or_default())),
        };
        f.checks = self.checks.clone();
        f.hooks = HooksSection {
            command: self.hook.clone(),
            timeout: Some(Dur(self.hook_timeout)),
        };
        f.metrics = MetricsSection {
            listen: self.metrics,
        };
    }

    /// What a reload to `new` cannot change without a restart, if anything.
    pub fn needs_restart(&self, new: &Common) -> Option<&'static str> {
        (self.metrics != new.metrics).then_some("the metrics address")
    }
}
