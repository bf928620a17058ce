//! Helpers the namespace tests share: starting a node, its status and XDP counters, the
//! VIPs it holds.
#![allow(dead_code)] // Each test file uses some of them.

use std::{path::Path, process::Command, time::Duration};

use vipd_lab::lab::{Host, Lab};

/// The vipd binary under test.
pub const VIPD: &str = env!("CARGO_BIN_EXE_vipd");

/// `vipd status --json` of the instance the lab runs on `host`.
pub fn status(lab: &Lab, host: &Host) -> anyhow::Result<serde_json::Value> {
    status_of(&format!("{}-{}", lab.prefix(), host.name))
}

/// `vipd status --json` of `instance`.
pub fn status_of(instance: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(VIPD)
        .args(["status", "--json", "--instance", instance])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "vipd status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// An XDP counter of a status (every counter is always there: a missing one is a bug).
pub fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in the status: {status:#}"))
}

/// How many of `vips` `host` has on eth0.
pub fn held(lab: &Lab, host: &Host, vips: &[&str]) -> usize {
    vips.iter()
        .filter(|v| lab.has_address(host, v).unwrap_or(false))
        .count()
}

/// How long a node may take to start (CI machines are slow).
pub const START: Duration = Duration::from_secs(20);

/// Starts `vipd run` as node `id` on `host`'s eth0 with `args` (log `<host>-vipd`; the
/// lab's key unless `args` say otherwise) and waits until its start-up line, which must
/// also hold `also`.
pub fn start_node(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    args: &[&str],
    also: &[&str],
) -> anyhow::Result<usize> {
    let log = format!("{}-vipd", host.name);
    let p = lab.spawn_vipd(host, id, &log, Path::new(VIPD), args)?;
    let needles: Vec<&str> = std::iter::once("vipd started")
        .chain(also.iter().copied())
        .collect();
    lab.proc(p).wait_for_line(&needles, START)?;
    Ok(p)
}

/// Stops a process with SIGTERM; it must exit 0 within 20 s.
pub fn stop(lab: &mut Lab, p: usize) -> anyhow::Result<()> {
    lab.proc(p).signal(libc::SIGTERM)?;
    let ok = lab.proc(p).wait_exit(Duration::from_secs(20))?;
    anyhow::ensure!(ok, "exited with an error:\n{}", lab.proc(p).output());
    Ok(())
}
