//! Health checks (keepalived's `track_script`, made simple): commands, TCP connects and
//! HTTP GETs run on an interval with a timeout; `fall` failures in a row fail a check,
//! `rise` successes in a row bring it back. The node is healthy while every check is.

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc::UnboundedSender,
    task::JoinHandle,
};

use crate::config::{Check, CheckKind};

// Checks are validated with the configuration; an invalid one never gets here.

/// Starts one task per check; each sends `(generation, index, passed)` after every probe
/// (the generation tells results of checks replaced by a reload from current ones).
pub fn spawn(
    checks: &[Check],
    generation: u64,
    tx: UnboundedSender<(u64, usize, bool)>,
) -> Vec<JoinHandle<()>> {
    checks
        .iter()
        .cloned()
        .enumerate()
        .filter_map(|(i, check)| Some((i, check.probe().ok()?, check)))
        .map(|(i, kind, check)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(check.interval.0);
                loop {
                    every.tick().await;
                    let passed = tokio::time::timeout(check.timeout.0, probe(&kind))
                        .await
                        .unwrap_or(false);
                    if tx.send((generation, i, passed)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

async fn probe(kind: &CheckKind) -> bool {
    match kind {
        CheckKind::Command(command) => tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .is_ok_and(|s| s.success()),
        CheckKind::Tcp(address) => TcpStream::connect(address).await.is_ok(),
        CheckKind::Http {
            address,
            path,
            status,
        } => http_status(*address, path).await == Some(*status),
    }
}

/// The status code of `GET path` (HTTP/1.0, so the server closes the connection).
async fn http_status(address: std::net::SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(address).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: vipd\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).await.ok()?;
    parse_status_line(&head[..n])
}

fn parse_status_line(b: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(b).ok()?.lines().next()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// The pass/fail state of a set of checks.
#[derive(Debug)]
pub struct Tracker {
    checks: Vec<CheckState>,
}

#[derive(Clone, Copy, Debug)]
struct CheckState {
    rise: u32,
    fall: u32,
    /// None until the first result, which decides the initial state.
    healthy: Option<bool>,
    /// What counts until the first result: false at start-up (no VIPs before every
    /// check has passed once), true for a check a reload added (a running node is not
    /// withdrawn for a check that has not failed yet).
    assumed: bool,
    run: u32,
}

impl Tracker {
    /// A tracker for `checks`.
    pub fn new(checks: &[Check]) -> Self {
        Self {
            checks: checks
                .iter()
                .map(|c| CheckState {
                    rise: c.rise,
                    fall: c.fall,
                    healthy: None,
                    assumed: false,
                    run: 0,
                })
                .collect(),
        }
    }

    /// A tracker for `new` checks after a reload from `old`, so a reload does not withdraw
    /// a healthy node by itself: a check of the same definition keeps its state, one of
    /// the same name but other settings keeps whether it was passing, and a new check
    /// counts as passing until its first result.
    pub fn carry_over(&self, old: &[Check], new: &[Check]) -> Self {
        let mut t = Self::new(new);
        for (i, check) in new.iter().enumerate() {
            let c = &mut t.checks[i];
            if let Some(j) = old.iter().position(|o| o == check) {
                *c = self.checks[j];
            } else if let Some(j) = old.iter().position(|o| o.name == check.name) {
                c.healthy = self.checks[j].healthy;
                c.assumed = self.checks[j].assumed;
            } else {
                c.assumed = true;
            }
        }
        t
    }

    /// Records a probe result; returns the check's new state if it changed.
    pub fn record(&mut self, index: usize, passed: bool) -> Option<bool> {
        let c = self.checks.get_mut(index)?;
        match c.healthy {
            None => {
                c.healthy = Some(passed);
                c.run = 0;
                Some(passed)
            }
            Some(h) if h == passed => {
                c.run = 0;
                None
            }
            Some(_) => {
                c.run += 1;
                let needed = if passed { c.rise } else { c.fall };
                (c.run >= needed).then(|| {
                    c.healthy = Some(passed);
                    c.run = 0;
                    passed
                })
            }
        }
    }

    /// Whether every check is healthy (or, before its first result, assumed so); true with
    /// no checks.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.healthy.unwrap_or(c.assumed))
    }

    /// Each check's state: healthy, and how many results in a row point the other way.
    pub fn states(&self) -> Vec<(Option<bool>, u32)> {
        self.checks.iter().map(|c| (c.healthy, c.run)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Dur;

    fn check(rise: u32, fall: u32) -> Check {
        Check {
            name: "t".into(),
            kind: crate::config::CheckType::Tcp,
            command: None,
            address: Some("192.0.2.1:80".parse().unwrap()),
            path: None,
            status: None,
            interval: Dur(Duration::from_secs(1)),
            timeout: Dur(Duration::from_secs(1)),
            rise,
            fall,
        }
    }

    #[test]
    fn first_result_decides_then_rise_and_fall_count() {
        let mut t = Tracker::new(&[check(2, 3)]);
        assert!(!t.healthy(), "unknown until the first result");
        assert_eq!(t.record(0, true), Some(true));
        assert!(t.healthy());
        assert_eq!(t.record(0, false), None);
        assert_eq!(t.record(0, false), None);
        assert_eq!(t.record(0, true), None, "a success resets the failure run");
        assert_eq!(t.record(0, false), None);
        assert_eq!(t.record(0, false), None);
        assert_eq!(t.record(0, false), Some(false), "third failure in a row");
        assert!(!t.healthy());
        assert_eq!(t.record(0, true), None);
        assert_eq!(t.record(0, true), Some(true), "second success in a row");
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_checks() {
        let (a, b) = (
            check(1, 1),
            Check {
                name: "other".into(),
                ..check(1, 1)
            },
        );
        let mut t = Tracker::new(std::slice::from_ref(&a));
        t.record(0, true);
        let t2 = t.carry_over(std::slice::from_ref(&a), &[b.clone(), a.clone()]);
        assert_eq!(t2.states(), vec![(None, 0), (Some(true), 0)]);
        assert!(
            t2.healthy(),
            "a check added by a reload passes until it reports"
        );
        let mut t3 = t2.carry_over(&[b.clone(), a.clone()], std::slice::from_ref(&b));
        assert!(t3.healthy());
        assert_eq!(t3.record(0, false), Some(false), "its first result decides");
        assert!(!t3.healthy());
        // The same name with other settings keeps whether it was passing.
        let slower = Check {
            rise: 5,
            ..b.clone()
        };
        let t4 = t3.carry_over(std::slice::from_ref(&b), std::slice::from_ref(&slower));
        assert_eq!(t4.states(), vec![(Some(false), 0)]);
        assert!(!t4.healthy());
    }

    #[test]
    fn all_checks_must_pass() {
        let mut t = Tracker::new(&[check(1, 1), check(1, 1)]);
        t.record(0, true);
        assert!(!t.healthy());
        t.record(1, true);
        assert!(t.healthy());
        t.record(1, false);
        assert!(!t.healthy());
    }

    #[test]
    fn http_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }
}
