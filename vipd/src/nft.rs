//! nftables tables vipd owns, one per purpose and instance, each replaced in one
//! transaction (there is no moment without its rules) and removed on drop: the conntrack
//! exemption of heartbeats and adverts ([`Notrack`]) and VRRP mode's `accept = false`
//! rules (`vrrp::host`). Also [`run_bounded`], how vipd runs `nft` and `ip`: a hung tool
//! must not hang the daemon.

use std::{
    io::{self, Write as _},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tracing::warn;

/// How long `nft` or `ip` may run before it is killed (they take milliseconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `cmd` with `input` on its stdin (stdout discarded, stderr kept), killed after
/// [`COMMAND_TIMEOUT`].
pub fn run_bounded(cmd: &mut Command, input: &[u8]) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("killed after {COMMAND_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait_with_output()
}

/// The table of an instance for `purpose`: `vipd_<instance>` (`accept = false`, the name
/// it always had) or `vipd_<purpose>_<instance>`, other characters as `_`.
pub fn table_name(purpose: Option<&str>, instance: &str) -> String {
    let clean: String = instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match purpose {
        Some(p) => format!("vipd_{p}_{clean}"),
        None => format!("vipd_{clean}"),
    }
}

/// Replaces `table` (inet family) by one with `chains` (nft syntax), in one transaction.
pub fn replace_table(table: &str, chains: &str) -> anyhow::Result<()> {
    // Creating the table first makes the delete succeed whether or not it existed.
    run(&format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n{chains}}}\n"
    ))
}

/// Removes `table` if it exists (a warning if that fails).
pub fn remove_table(table: &str) {
    let exists = run_bounded(
        Command::new("nft").args(["list", "table", "inet", table]),
        b"",
    )
    .is_ok_and(|o| o.status.success());
    if exists && let Err(e) = run(&format!("delete table inet {table}\n")) {
        warn!("removing the nftables table {table}: {e}");
    }
}

fn run(script: &str) -> anyhow::Result<()> {
    let out = run_bounded(Command::new("nft").args(["-f", "-"]), script.as_bytes())
        .context("running nft (is nftables installed?)")?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// IP protocol number of VRRP.
const IPPROTO_VRRP: u8 = 112;

/// The rules that keep vipd's own traffic out of connection tracking: heartbeats (UDP to
/// `port`, both ways) and VRRP adverts, at the raw priority, so a full conntrack table (a
/// busy web node's) or a `ct state new drop` firewall cannot silence a node.
pub fn notrack_chains(port: Option<u16>, vrrp: bool) -> String {
    let mut rules = Vec::new();
    if let Some(port) = port {
        rules.push(format!("udp dport {port} notrack"));
    }
    if vrrp {
        rules.push(format!("meta l4proto {IPPROTO_VRRP} notrack"));
    }
    let body = rules.join("\n    ");
    ["prerouting", "output"]
        .iter()
        .map(|hook| {
            format!(
                "  chain {hook} {{\n    type filter hook {hook} priority raw; policy accept;\n    {body}\n  }}\n"
            )
        })
        .collect()
}

/// vipd's traffic exempt from connection tracking while this lives (see
/// [`notrack_chains`]); the table goes when it is dropped.
pub struct Notrack {
    /// The table, if it was installed; else why not.
    installed: Result<String, String>,
}

impl Notrack {
    /// Installs the exemption for `instance`'s heartbeats on `port` and its VRRP adverts;
    /// a failure (no nftables) is said and kept for `vipd status`, never fatal.
    pub fn install(instance: &str, port: Option<u16>, vrrp: bool) -> Self {
        let table = table_name(Some("notrack"), instance);
        let installed = match replace_table(&table, &notrack_chains(port, vrrp)) {
            Ok(()) => Ok(table),
            Err(e) => {
                warn!(
                    "heartbeats stay under connection tracking (a full conntrack table would \
                     silence this node): {e:#}"
                );
                Err(format!("{e:#}"))
            }
        };
        Self { installed }
    }

    /// For `vipd status` and the start-up line.
    pub fn describe(&self) -> String {
        match &self.installed {
            Ok(table) => format!("exempt (nftables table inet {table})"),
            Err(e) => format!("tracked ({e})"),
        }
    }
}

impl Drop for Notrack {
    fn drop(&mut self) {
        if let Ok(table) = &self.installed {
            remove_table(table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rules() {
        assert_eq!(table_name(None, "a-b"), "vipd_a_b");
        assert_eq!(table_name(Some("notrack"), "x"), "vipd_notrack_x");
        let chains = notrack_chains(Some(7846), true);
        assert!(chains.contains("hook prerouting priority raw"));
        assert!(chains.contains("hook output priority raw"));
        assert_eq!(chains.matches("udp dport 7846 notrack").count(), 2);
        assert_eq!(chains.matches("meta l4proto 112 notrack").count(), 2);
        assert!(!notrack_chains(None, true).contains("udp"));
    }
}
