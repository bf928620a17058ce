//! `[[check]]`: the health checks that withdraw a failing node.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::file::Dur;

/// One `[[check]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// A name for logs and status.
    pub name: String,
    /// `command` (exit 0), `tcp` (connect) or `http` (GET answered with `status`).
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// For `command`: the program and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// For `tcp` and `http`: where to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// For `http`: the request path [default: /].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `http`: the expected status [default: 200].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time between checks.
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    /// A check not done within this fails.
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    /// Successes in a row that make a failed check healthy again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failures in a row that make a healthy check fail.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// The `type` of a check.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// A program that must exit 0.
    Command,
    /// A TCP connection that must be accepted.
    Tcp,
    /// An HTTP GET that must answer with the expected status.
    Http,
}

/// What a check does, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Run argv; pass on exit 0.
    Command(Vec<String>),
    /// Connect; pass if accepted.
    Tcp(SocketAddr),
    /// GET path; pass on the status.
    Http {
        address: SocketAddr,
        path: String,
        status: u16,
    },
}

impl Check {
    /// The validated kind, or what is missing.
    pub fn probe(&self) -> Result<CheckKind, String> {
        let missing =
            |what: &str| format!("check {:?} of type {:?} needs {what}", self.name, self.kind);
        Ok(match self.kind {
            CheckType::Command => match &self.command {
                Some(c) if !c.is_empty() => CheckKind::Command(c.clone()),
                _ => return Err(missing("a non-empty command")),
            },
            CheckType::Tcp => CheckKind::Tcp(self.address.ok_or_else(|| missing("an address"))?),
            CheckType::Http => CheckKind::Http {
                address: self.address.ok_or_else(|| missing("an address"))?,
                path: self.path.clone().unwrap_or_else(|| "/".into()),
                status: self.status.unwrap_or(200),
            },
        })
    }
}

fn default_check_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_check_timeout() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}

/// Each `[[check]]`: positive rise, fall, interval and timeout, and a probe that parses.
pub(super) fn check_health_checks(checks: &[Check]) -> Result<(), String> {
    for c in checks {
        if c.rise == 0 || c.fall == 0 || c.interval.0.is_zero() || c.timeout.0.is_zero() {
            return Err(format!(
                "check {:?}: rise, fall, interval and timeout must be more than zero",
                c.name
            ));
        }
        c.probe()?;
    }
    Ok(())
}
