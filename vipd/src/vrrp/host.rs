//! What VRRP mode changes on the host besides addresses: an nftables table for groups with
//! `accept = false`, a macvlan per group with a virtual MAC, and two ARP sysctls on each
//! interface carrying an IPv4 virtual MAC.
//!
//! [`HostChanges`] undoes all of it when dropped, after a clean stop and after a failed
//! start alike. The sysctls' original values are also saved in the state directory
//! (`/var/lib/vipd/<instance>.sysctl`, kept across stops and crashes, unlike `/run/vipd`
//! which the unit removes), so a start after a crash restores the originals, not the values
//! the crashed run set.

use std::{net::IpAddr, path::PathBuf, process::Command};

use anyhow::Context as _;
use tracing::{debug, info, warn};

use crate::{config::Vrrp, nft};

/// Set on an interface whose IPv4 VIPs live on a virtual-MAC macvlan: it must neither
/// answer ARP for them nor use them as the sender of its own ARP requests, or clients
/// would learn its real MAC for a VIP.
const ARP_SETTINGS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

/// The host changes of one daemon, undone on drop.
pub struct HostChanges {
    instance: String,
    /// Where the sysctls' original values are saved.
    saved_path: PathBuf,
    nft_table: Option<String>,
    macvlans: Vec<String>,
    /// (sysctl path, original value).
    sysctls: Vec<(String, String)>,
}

impl HostChanges {
    /// Nothing changed yet. Sysctls an earlier run of this instance changed and did not
    /// restore (it crashed) get their saved original values back first.
    pub fn new(instance: &str, saved_path: PathBuf) -> Self {
        let host = Self {
            instance: instance.into(),
            saved_path,
            nft_table: None,
            macvlans: Vec::new(),
            sysctls: Vec::new(),
        };
        for (path, value) in host.saved() {
            match std::fs::write(&path, &value) {
                Ok(()) => info!("{path} = {value}: restored after an earlier run"),
                Err(e) => warn!("restoring {path} to {value} after an earlier run: {e}"),
            }
        }
        let _ = std::fs::remove_file(host.saved_path());
        host
    }

    fn saved_path(&self) -> &std::path::Path {
        &self.saved_path
    }

    /// Originals saved by an earlier run of this instance that did not stop cleanly.
    fn saved(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.saved_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect()
    }

    /// Applies [`ARP_SETTINGS`] to `interface` (once), remembering the originals.
    pub fn arp_settings(&mut self, interface: &str) -> anyhow::Result<()> {
        for (key, value) in ARP_SETTINGS {
            let path = format!("/proc/sys/net/ipv4/conf/{interface}/{key}");
            if self.sysctls.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let original = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {path}"))?
                .trim()
                .to_string();
            self.sysctls.push((path.clone(), original.clone()));
            self.save()?;
            std::fs::write(&path, value)
                .with_context(|| format!("setting {path} to {value} (virtual MAC)"))?;
            info!("{path} = {value} while vipd runs (was {original})");
        }
        Ok(())
    }

    /// Gives the interfaces not in `keep` (no IPv4 virtual-MAC group left on them after a
    /// reload) their original [`ARP_SETTINGS`] back at once.
    pub fn keep_arp_settings(&mut self, keep: &[&str]) {
        let on = |path: &str, interface: &str| {
            path.starts_with(&format!("/proc/sys/net/ipv4/conf/{interface}/"))
        };
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sysctls)
            .into_iter()
            .partition(|(path, _)| keep.iter().any(|i| on(path, i)));
        self.sysctls = kept;
        if gone.is_empty() {
            return;
        }
        for (path, value) in gone {
            match std::fs::write(&path, &value) {
                Ok(()) => info!("{path} = {value}: restored (no virtual-MAC group left there)"),
                Err(e) => warn!("restoring {path} to {value}: {e}"),
            }
        }
        if let Err(e) = self.save() {
            warn!("{e:#}");
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        let text: String = self
            .sysctls
            .iter()
            .map(|(p, v)| format!("{p} {v}\n"))
            .collect();
        if let Some(dir) = self.saved_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
        }
        std::fs::write(self.saved_path(), text)
            .with_context(|| format!("saving sysctls to {}", self.saved_path().display()))
    }

    /// Records a macvlan this daemon made, to delete it on drop.
    pub fn macvlan(&mut self, name: &str) {
        self.macvlans.push(name.into());
    }

    /// Deletes a macvlan recorded with [`Self::macvlan`] now (its group stopped for good).
    pub fn remove_macvlan(&mut self, name: &str) {
        self.macvlans.retain(|m| m != name);
        delete_link(name);
    }

    /// Installs the drop rules for groups with `accept = false` (not the owner's) in
    /// place of earlier ones (a leftover table, or the rules before a reload), in one
    /// transaction: there is no moment without rules.
    pub fn accept_rules(&mut self, groups: &[Vrrp]) -> anyhow::Result<()> {
        let table = nft::table_name(None, &self.instance);
        let rules: Vec<String> = groups
            .iter()
            .filter(|g| !g.accept && g.priority != 255)
            .flat_map(|g| g.vips.iter().map(|v| v.addr))
            .map(|a| match a {
                IpAddr::V4(a) => format!("ip daddr {a} drop"),
                IpAddr::V6(a) => format!(
                    "ip6 daddr {a} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n    ip6 daddr {a} drop"
                ),
            })
            .collect();
        if rules.is_empty() {
            nft::remove_table(&table);
            self.nft_table = None;
            return Ok(());
        }
        nft::replace_table(
            &table,
            &format!(
                "  chain input {{\n    type filter hook input priority 0; policy accept;\n    {}\n  }}\n",
                rules.join("\n    ")
            ),
        )
        .context("installing the accept = false rules")?;
        self.nft_table = Some(table);
        Ok(())
    }
}

impl Drop for HostChanges {
    fn drop(&mut self) {
        if let Some(table) = self.nft_table.take() {
            nft::remove_table(&table);
        }
        for name in self.macvlans.drain(..) {
            delete_link(&name);
        }
        for (path, value) in self.sysctls.drain(..) {
            if let Err(e) = std::fs::write(&path, &value) {
                warn!("restoring {path} to {value}: {e}");
            }
        }
        let _ = std::fs::remove_file(self.saved_path());
    }
}

fn delete_link(name: &str) {
    let ok = nft::run_bounded(Command::new("ip").args(["link", "del", name]), b"")
        .is_ok_and(|o| o.status.success());
    if !ok {
        debug!("removing the virtual MAC interface {name} failed (already gone?)");
    }
}

/// Turns off IPv6 address generation on a fresh macvlan: every router of a group has the
/// same virtual MAC, so they would all make the same link-local address and send DAD, MLD
/// and router solicitations from the virtual MAC, pulling switches' entries for it away
/// from the Master.
pub fn no_ipv6_autoconf(name: &str) -> std::io::Result<()> {
    match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "1") {
        // IPv6 is off on this host: nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
