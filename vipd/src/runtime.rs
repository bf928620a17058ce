//! What both modes' slow paths share: privilege checks, clearing a crashed run's VIPs,
//! signals, the metrics endpoint, answering `vipd status`, and stopping the fast path.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, PerCpuArray};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    signal::unix::{Signal as UnixSignal, SignalKind, signal},
};
use tracing::warn;

use crate::{
    config::Config,
    control::{self, Request, Status},
    fastpath::channel::Shared,
    hooks::Hooks,
    metrics::{self, Metrics},
    netlink::Link,
    vip::Vip,
    xdp::{self, LoadedXdp},
};

/// What a signal asks.
pub enum Signal {
    /// SIGTERM or SIGINT: stop (the name, for the log).
    Stop(&'static str),
    /// SIGHUP: reload the configuration.
    Reload,
}

/// Why a daemon's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A signal asked for it (its name).
    Asked(&'static str),
    /// Something the daemon cannot run without failed (the fast path ended, the kernel
    /// closed a notification socket): it still stops cleanly, then exits non-zero so that
    /// the service manager (`Restart=on-failure`) starts it again.
    Failed(&'static str),
}

impl Stop {
    /// For the log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Asked(why) | Self::Failed(why) => why,
        }
    }

    /// The daemon's result: an error after a failure.
    pub fn outcome(self) -> anyhow::Result<()> {
        match self {
            Self::Asked(_) => Ok(()),
            Self::Failed(why) => bail!("stopped after an internal failure: {why}"),
        }
    }
}

/// The signals the daemon answers.
pub struct Signals {
    term: UnixSignal,
    int: UnixSignal,
    hup: UnixSignal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing a SIGHUP handler")?,
        })
    }

    /// The next signal (cancel-safe).
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            biased;
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Serves Prometheus metrics on `addr` (if set), bringing the XDP counters and the fast
/// paths' figures (`fast_paths`: each one's shared state and whether it runs real-time)
/// up to date at each scrape.
pub async fn serve_metrics(
    addr: Option<SocketAddr>,
    metrics: &Arc<Metrics>,
    counters: &Arc<Mutex<PerCpuArray<MapData, u64>>>,
    fast_paths: Vec<(Arc<Shared>, bool)>,
) -> anyhow::Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    let counters = Arc::clone(counters);
    let m = Arc::clone(metrics);
    metrics::serve(addr, Arc::clone(metrics), move || {
        m.sync_xdp(&xdp::sum_counters(&counters));
        let realtime = fast_paths.iter().all(|(_, rt)| *rt);
        let mut totals = [0u64; 3];
        for (shared, _) in &fast_paths {
            totals[0] += shared.stats.sent.load(Ordering::Relaxed);
            totals[1] += shared.stats.late.load(Ordering::Relaxed);
            totals[2] += shared.reports_dropped.load(Ordering::Relaxed);
        }
        m.sync_fast_path(realtime, totals);
    })
    .await
    .with_context(|| format!("serving metrics on {addr}"))?;
    Ok(())
}

/// Waits for a stopping fast path ([`SlowEnd::stop`]), handing each report it still sends
/// (its last releases) to `on_report`.
pub async fn join_fast_path<R>(
    reports: &mut tokio::sync::mpsc::Receiver<R>,
    thread: JoinHandle<()>,
    mut on_report: impl FnMut(R),
) {
    // The fast path drops its sender when it ends.
    while let Some(r) = reports.recv().await {
        on_report(r);
    }
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// The XDP counters as `name=value` words, for the last log line.
pub fn counters_text(loaded: &LoadedXdp) -> String {
    let words: Vec<String> = loaded
        .counters()
        .iter()
        .map(|(c, v)| format!("{}={v}", c.name()))
        .collect();
    words.join(" ")
}

/// Reads a control connection's request (bounded in size and time).
pub async fn read_request(mut stream: tokio::net::UnixStream) -> (Request, tokio::net::UnixStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let request = match buf[..n].trim_ascii() {
        b"drain" => Request::Drain,
        b"undrain" => Request::Undrain,
        _ => Request::Status,
    };
    (request, stream)
}

/// Answers one control connection with the status, as JSON.
pub async fn answer(mut stream: tokio::net::UnixStream, status: Status) {
    if let Ok(json) = serde_json::to_vec(&status) {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&json)).await;
    }
}

/// This daemon's claim on an interface, held while it runs (see [`claim_interface`]).
pub struct InterfaceClaim(#[allow(dead_code)] std::os::unix::net::UnixDatagram);

/// Claims the interface `index` (`name`) for this daemon: a second vipd on it, whatever its
/// instance name, refuses here, before it changes anything on the host. The claim is an
/// abstract Unix socket named after the interface index: scoped to the network namespace
/// like the index, released by the kernel when the process ends however it ends, nothing
/// left to clean up.
pub fn claim_interface(name: &str, index: u32) -> anyhow::Result<InterfaceClaim> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!("vipd/ifindex/{index}"))
        .context("naming the interface claim")?;
    match std::os::unix::net::UnixDatagram::bind_addr(&addr) {
        Ok(socket) => Ok(InterfaceClaim(socket)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "another vipd runs on {name}: refusing to start (one daemon per interface; \
             `vipd status` lists what runs here). Nothing was changed."
        ),
        Err(e) => Err(e).with_context(|| format!("claiming {name} for this daemon")),
    }
}

/// Removes VIPs that a crashed earlier run of this instance left behind: those of this
/// configuration, and those the earlier run recorded as held in its pinned map
/// (`pin_dir`), which a changed configuration may no longer list. Refuses to touch an
/// address of this configuration that is configured with another prefix (it is
/// somebody's real address).
pub async fn remove_leftovers(
    link: &Link,
    vips: &[Vip],
    pin_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let present = link.addresses().await?;
    let earlier = crate::xdp::pinned_held(pin_dir).unwrap_or_default();
    for &(addr, len) in &present {
        let vip = Vip {
            addr,
            prefix_len: len,
        };
        match vips.iter().find(|v| v.addr == addr) {
            Some(v) if v.prefix_len != len => bail!(
                "{addr}/{len} is already configured on {} and is not one of our VIPs \
                 (VIPs are added as /{}): remove it or fix the VIP list",
                link.name,
                v.prefix_len
            ),
            Some(_) => {}
            None if earlier.contains(&addr) => {}
            None => continue,
        }
        link.remove(&vip).await?;
        warn!(vip = %vip, "removed a VIP left on {} by an earlier run", link.name);
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

/// The hooks of `cfg`, counting what they coalesce in `metrics`.
pub fn hooks_of(cfg: &Config, metrics: &Metrics) -> Hooks {
    Hooks::new(
        cfg.common.hook.clone(),
        cfg.common.hook_timeout,
        (cfg.node.id, &cfg.node.instance, &cfg.node.interface),
        metrics.hook_events_coalesced.clone(),
    )
}

/// How long a stop waits for the hooks of its last events (the unit stops vipd after 10 s).
const HOOKS_AT_EXIT: Duration = Duration::from_secs(5);

/// The last steps of a clean stop: the pins and the control socket go, and the hooks of
/// the last events (`vip_released`, `stopping`) run to their end, for at most 5 s.
pub async fn clean_up(pin_dir: &std::path::Path, instance: &str, hooks: &Hooks) {
    xdp::remove_pins(pin_dir);
    let _ = std::fs::remove_file(control::socket_path(instance));
    hooks.finish(HOOKS_AT_EXIT).await;
}
