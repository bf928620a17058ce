//! Configuration: the TOML file (`/etc/vipd/vipd.toml` by default), command-line flags
//! that override it, and the validated [`Config`] the daemon runs with.
//!
//! Unknown keys are errors that name the key's path (`heartbeat.intervall`), and
//! `vipd check-config` prints the effective configuration in the same format, so its output
//! is itself a valid configuration file.
//!
//! A [`Config`] has one part per concern, each checked by its own module: the [`Node`]
//! (who and where), what is [`Common`] to both kinds of VIPs (announcements, health
//! checks, hooks, metrics), the [`Pool`] (its VIPs and heartbeats; empty on a node that
//! runs only VRRP groups) and the [`Vrrp`] groups.

mod common;
mod file;
mod health;
mod node;
mod pool;
#[cfg(test)]
mod tests;
mod vrrp;

use std::time::Duration;

pub use common::Common;
pub use file::{AttachMode, AuthMode, Dur, File};
pub use health::{Check, CheckKind, CheckType};
pub use node::Node;
pub use pool::{MAX_DEAD_INTERVAL, MAX_VIPS, Pool};
pub use vrrp::Vrrp;

use crate::vip::Vip;

/// Where the configuration file is read from when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/vipd/vipd.toml";

/// A validated configuration for one daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// This node.
    pub node: Node,
    /// What the pool and the VRRP groups share.
    pub common: Common,
    /// The pool (no VIPs: this node runs none).
    pub pool: Pool,
    /// VRRP groups (none: this node runs only a pool).
    pub vrrp: Vec<Vrrp>,
}

impl Config {
    /// Validates a merged file (flags already applied) and fills in defaults.
    pub fn from_file(f: File) -> Result<Self, String> {
        let node = Node::check(&f)?;
        let common = Common::check(&f)?;
        let pool = Pool::check(&f)?;
        let mut vrrp = f.vrrp;
        vrrp::check_groups(&mut vrrp, &node.interface)?;
        if !pool.enabled() && vrrp.is_empty() {
            return Err(
                "no VIPs: set [pool] vips or --vip, or declare [[vrrp]] groups or --vrrp".into(),
            );
        }
        if let Some(v) = pool
            .vips
            .iter()
            .find(|v| vrrp.iter().any(|g| g.vips.iter().any(|w| w.addr == v.addr)))
        {
            return Err(format!(
                "{} is both in the pool and in a VRRP group: one address, one owner",
                v.addr
            ));
        }
        Ok(Config {
            node,
            common,
            pool,
            vrrp,
        })
    }

    /// The effective configuration as a file (every key filled in).
    pub fn to_file(&self) -> File {
        let mut f = File::default();
        self.node.write(&mut f);
        self.pool.write(&mut f);
        self.common.write(&mut f);
        f.vrrp = self.vrrp.clone();
        f
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.to_file())
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Whether this node runs a pool (it may run VRRP groups as well).
    pub fn has_pool(&self) -> bool {
        self.pool.enabled()
    }

    /// Every VRRP group's VIPs.
    pub fn vrrp_vips(&self) -> Vec<Vip> {
        self.vrrp
            .iter()
            .flat_map(|g| g.vips.iter().copied())
            .collect()
    }

    /// What a reload to `new` cannot change without a restart, if anything. (VRRP groups
    /// change on a reload; only their interfaces are fixed, which the daemon checks.)
    pub fn needs_restart(&self, new: &Config) -> Option<&'static str> {
        self.node
            .needs_restart(&new.node)
            .or_else(|| self.common.needs_restart(&new.common))
            .or_else(|| self.pool.needs_restart(&new.pool))
            .or_else(|| {
                (self.vrrp.is_empty() != new.vrrp.is_empty())
                    .then_some("whether this node runs VRRP groups")
            })
    }
}

/// Bounds on duration keys that keep timer arithmetic far from overflow.
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A duration key bounded so that timer arithmetic stays far from overflow.
fn at_most(what: &str, d: Option<Dur>, max: Duration) -> Result<(), String> {
    match d {
        Some(d) if d.0 > max => Err(format!("{what} must be at most {}", Dur(max))),
        _ => Ok(()),
    }
}
