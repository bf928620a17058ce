//! Start-up and control-socket pieces both modes share: privilege checks, clearing a
//! crashed run's VIPs, answering `vipd status`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::warn;

use crate::{control::Status, netlink::Link, vip::Vip};

/// Answers one control connection with the status, as JSON.
pub async fn answer(mut stream: tokio::net::UnixStream, status: Status) {
    let mut request = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
    if let Ok(json) = serde_json::to_vec(&status) {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&json)).await;
    }
}

/// Removes VIPs of this pool that a crashed earlier run left behind; refuses to touch an
/// address that is configured with another prefix (it is somebody's real address).
pub async fn remove_leftovers(link: &Link, vips: &[Vip]) -> anyhow::Result<()> {
    let present = link.addresses().await?;
    for vip in vips {
        for &(addr, len) in present.iter().filter(|(a, _)| *a == vip.addr) {
            if len != vip.prefix_len {
                bail!(
                    "{addr}/{len} is already configured on {} and is not one of our VIPs \
                     (VIPs are added as /{}): remove it or fix the VIP list",
                    link.name,
                    vip.prefix_len
                );
            }
            link.remove(vip).await?;
            warn!(vip = %vip, "removed a VIP left on {} by an earlier run", link.name);
        }
    }
    Ok(())
}

/// Fails with a clear message unless we hold the capabilities vipd needs.
pub fn check_privileges() -> anyhow::Result<()> {
    const NEEDED: [(u32, &str); 3] = [(12, "CAP_NET_ADMIN"), (13, "CAP_NET_RAW"), (39, "CAP_BPF")];
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")?;
    let sys_admin = eff & (1 << 21) != 0;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, name)| eff & (1 << bit) == 0 && !(*name == "CAP_BPF" && sys_admin))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing privileges: {} (run vipd as root, or grant CAP_BPF, CAP_NET_ADMIN and \
             CAP_NET_RAW)",
            missing.join(", ")
        );
    }
    Ok(())
}
