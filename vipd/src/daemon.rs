//! The daemon: one shell around a pool ([`pool::slow`]), VRRP groups ([`vrrp::slow`]) or
//! both. The shell owns what a node has once — the XDP program on every interface used,
//! the control socket, metrics, hooks, health checks, held VIPs' announcements, the ARP/NDP
//! watch, signals — and hands each event to the engine it concerns. Each engine keeps its
//! own fast path on its own real-time thread, so neither ever waits behind the other.

use std::{
    collections::BTreeMap,
    future::pending,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{sync::mpsc::UnboundedSender, task::JoinHandle};
use tracing::{info, warn};
use vipd_common::{
    auth,
    maps::{ClaimNotice, XdpConfig},
};

use crate::{
    cli::RunArgs,
    clock::monotonic_ns,
    config::Config,
    conflict::{self, notice_vip},
    control::{self, CheckStatus, Status},
    drain, health,
    holder::Announcements,
    hooks::Hooks,
    metrics::Metrics,
    netlink::{AddressWatch, CarrierWatch, Link},
    nft::Notrack,
    notify::Notifier,
    pool,
    runtime::{
        Signal, Signals, Stop, answer, check_privileges, claim_interface, clean_up, counters_text,
        hooks_of, read_request, remove_leftovers, serve_metrics,
    },
    vrrp,
    xdp::{self, LoadedXdp},
};

/// A period long enough to mean "never".
const DAY: Duration = Duration::from_secs(86_400);

/// What both engines' slow paths share.
pub struct Shell {
    /// The running configuration.
    pub cfg: Config,
    /// Where a reload reads the configuration from.
    pub args: RunArgs,
    /// The XDP program (one for every interface), its maps.
    pub loaded: LoadedXdp,
    pub hooks: Hooks,
    pub metrics: Arc<Metrics>,
    /// Held VIPs (as reported), their announcements repeated.
    pub held: Announcements,
    /// The ARP/NDP watch: other hosts claiming held VIPs.
    pub watch: conflict::Watch,
    /// Heartbeats and adverts exempt from connection tracking (removed on drop).
    pub notrack: Notrack,
    pub health: health::Tracker,
    /// Drained by `vipd drain` (kept across restarts): out of the pool and the groups.
    pub drained: bool,
    /// Results of other generations of checks (before a reload) are ignored.
    health_generation: u64,
    health_tasks: Vec<JoinHandle<()>>,
    health_tx: UnboundedSender<(u64, usize, bool)>,
}

impl Shell {
    /// Whether this node may hold VIPs: every health check passing, and not drained.
    pub fn runnable(&self) -> bool {
        self.health.healthy() && !self.drained
    }

    /// Takes the shared part of a reloaded configuration: hooks, announcement schedule,
    /// health checks (restarted if they changed, their states carried over), the XDP
    /// program's configuration.
    fn reconfigure(&mut self, new: Config) {
        self.hooks = self.hooks.reconfigured(hooks_of(&new, &self.metrics));
        self.held.reconfigure(
            new.common.announce_burst,
            new.common.announce_repeats.clone(),
        );
        if new.common.checks != self.cfg.common.checks {
            self.health = self
                .health
                .carry_over(&self.cfg.common.checks, &new.common.checks);
            self.health_generation += 1;
            self.health_tasks.iter().for_each(JoinHandle::abort);
            self.health_tasks = health::spawn(
                &new.common.checks,
                self.health_generation,
                self.health_tx.clone(),
            );
        }
        if let Err(e) = self.loaded.set_config(xdp_config(&new)) {
            warn!("reload: {e:#}");
        }
        self.cfg = new;
    }
}

/// What the XDP program is told: the pool's heartbeat settings (none without a pool).
pub fn xdp_config(cfg: &Config) -> XdpConfig {
    let words = |k: Option<auth::Key>| k.map_or([0; 2], |k| [k.k0, k.k1]);
    let base = XdpConfig {
        node_id: cfg.node.id,
        dead_ns: u64::MAX,
        ..XdpConfig::default()
    };
    if !cfg.has_pool() {
        return base;
    }
    XdpConfig {
        cluster_id: cfg.pool.cluster_id,
        dead_ns: cfg.pool.dead_interval.as_nanos() as u64,
        port: cfg.pool.port,
        heartbeats: 1,
        auth: u8::from(cfg.pool.auth_key.is_some()) + u8::from(cfg.pool.auth_next_key.is_some()),
        peer_filter: u8::from(!cfg.pool.peers.is_empty()),
        auth_key: words(cfg.pool.auth_key),
        auth_next_key: words(cfg.pool.auth_next_key),
        ..base
    }
}

/// The interfaces this node runs on: the pool's first (if it has one), then the VRRP
/// groups', each once.
fn interfaces(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if cfg.has_pool() {
        names.push(cfg.node.interface.clone());
    }
    let mut groups: Vec<String> = cfg.vrrp.iter().map(|g| g.interface().to_string()).collect();
    groups.sort();
    groups.dedup();
    groups.retain(|n| !names.contains(n));
    names.extend(groups);
    names
}

/// Waits for the next message of an engine's fast path, or forever without the engine.
async fn next_of<R>(reports: &mut Option<tokio::sync::mpsc::Receiver<R>>) -> Option<R> {
    match reports {
        Some(r) => r.recv().await,
        None => pending().await,
    }
}

/// Runs until SIGTERM or SIGINT, then stops each engine cleanly (LEAVING, priority-0
/// adverts, VIPs released). SIGHUP reloads the configuration from `args`. Host changes are
/// undone however it ends.
pub async fn run(cfg: Config, args: RunArgs) -> anyhow::Result<()> {
    check_privileges()?;
    // First: a second daemon of the same instance must stop before it touches anything.
    let control = control::bind(&cfg.node.instance)?;
    // Then: one daemon per interface, every interface claimed before anything on the host
    // changes (leftover VIPs, macvlans, sysctls).
    let names = interfaces(&cfg);
    let mut links = BTreeMap::new();
    let mut _claims = Vec::new();
    for name in &names {
        let link = Link::open(name).await?;
        _claims.push(claim_interface(&link.name, link.index)?);
        links.insert(name.clone(), link);
    }
    let all: Vec<_> = cfg
        .pool
        .vips
        .iter()
        .copied()
        .chain(cfg.vrrp_vips())
        .collect();
    for link in links.values() {
        remove_leftovers(link, &all, &cfg.node.pin_dir()).await?;
    }
    let groups = match cfg.vrrp.is_empty() {
        true => None,
        false => Some(vrrp::slow::prepare(&cfg, &links).await?),
    };
    let (mut loaded, rings) = xdp::load(&xdp::XdpSettings {
        interface: &names[0],
        also: &names[1..],
        mode: cfg.node.xdp_mode,
        pin_dir: &cfg.node.pin_dir(),
        config: xdp_config(&cfg),
    })?;
    // ARP/NDP from these is this node's own (and the groups' virtual MACs, below).
    for link in links.values() {
        loaded.add_own_mac(link.mac)?;
    }
    let metrics = Arc::new(Metrics::new());
    let (health_tx, mut health_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sh = Shell {
        hooks: hooks_of(&cfg, &metrics),
        health: health::Tracker::new(&cfg.common.checks),
        drained: drain::is_marked(&cfg.node.drain_file()),
        health_generation: 0,
        health_tasks: health::spawn(&cfg.common.checks, 0, health_tx.clone()),
        health_tx,
        held: Announcements::new(
            Arc::clone(&metrics),
            cfg.common.announce_burst,
            cfg.common.announce_repeats.clone(),
        ),
        watch: conflict::Watch::new(rings.claims)?,
        notrack: Notrack::install(
            &cfg.node.instance,
            cfg.has_pool().then_some(cfg.pool.port),
            !cfg.vrrp.is_empty(),
        ),
        metrics,
        loaded,
        cfg,
        args,
    };
    // The groups first: they only start (out of Initialize) once the daemon runs, so a
    // pool that fails to start leaves nothing taken.
    let (mut vrrp, mut vrrp_reports, vrrp_thread) = match groups {
        Some(groups) => {
            let (v, r, t) = vrrp::slow::start(&mut sh, groups, rings.vrrp).await?;
            (Some(v), Some(r), Some(t))
        }
        None => (None, None, None),
    };
    let (mut pool, mut pool_reports, pool_thread) = match sh.cfg.has_pool() {
        true => {
            let link = links[&sh.cfg.node.interface].clone();
            let (p, r, t) = pool::slow::start(&mut sh, &link, rings.events)?;
            (Some(p), Some(r), Some(t))
        }
        false => (None, None, None),
    };
    let fast_paths: Vec<_> = pool
        .iter()
        .map(|p| p.fast_path())
        .chain(vrrp.iter().map(|v| v.fast_path()))
        .collect();
    serve_metrics(
        sh.cfg.common.metrics,
        &sh.metrics,
        &sh.loaded.counters,
        fast_paths,
    )
    .await?;
    let indices: Vec<u32> = pool
        .iter()
        .map(|p| p.ifindex())
        .chain(vrrp.iter().flat_map(|v| v.ifindices()))
        .collect();
    let mut carrier = CarrierWatch::open_many(&indices)?;
    let mut gone = AddressWatch::open()?;
    let mut signals = Signals::install()?;
    let mut refresh = refresh_timer(sh.cfg.common.announce_refresh);
    // Often enough to judge a claim again soon after its grace (conflict::GRACE_NS).
    let mut housekeeping = tokio::time::interval(Duration::from_millis(125));
    let notifier = Notifier::from_env();
    let mut watchdog = tokio::time::interval(notifier.watchdog_period());
    notifier.ready();
    if let Some(v) = vrrp.as_mut() {
        v.start_groups(&sh).await;
    }
    let mut buf = vec![0u8; crate::heartbeat::MAX_DATAGRAM];
    let (requests_tx, mut requests_rx) = tokio::sync::mpsc::unbounded_channel();
    if sh.drained {
        warn!(
            "this node is drained (`vipd drain`): it holds no VIP and joins no VRRP group              until `vipd undrain`"
        );
        sh.metrics.drained.set(1);
    }

    let stop_reason = loop {
        tokio::select! {
            biased;
            signal = signals.next() => match signal {
                Signal::Stop(why) => break Stop::Asked(why),
                Signal::Reload => {
                    if reload(&mut sh, pool.as_mut(), vrrp.as_mut(), &mut vrrp_reports).await {
                        refresh = refresh_timer(sh.cfg.common.announce_refresh);
                    }
                }
            },
            _ = watchdog.tick() => {
                let wakeups: Vec<u64> = pool
                    .iter()
                    .map(|p| p.fast_path())
                    .chain(vrrp.iter().map(|v| v.fast_path()))
                    .map(|(shared, _)| shared.stats.wakeups.load(Ordering::Relaxed))
                    .collect();
                notifier.watchdog(&wakeups, || {
                    pool.iter().for_each(|p| p.fast.wake());
                    vrrp.iter().for_each(|v| v.fast.wake());
                });
            }
            report = next_of(&mut pool_reports) => match (report, pool.as_mut()) {
                (Some(r), Some(p)) => p.on_report(&mut sh, r),
                _ => break Stop::Failed("the pool's fast path ended"),
            },
            report = next_of(&mut vrrp_reports) => match (report, vrrp.as_mut()) {
                (Some(r), Some(v)) => v.on_report(&mut sh, r),
                _ => break Stop::Failed("the VRRP fast path ended"),
            },
            change = carrier.next_change() => {
                let Some((index, up)) = change else {
                    break Stop::Failed("the kernel closed the link notification socket");
                };
                if let Some(p) = pool.as_mut() {
                    p.on_carrier(&sh, index, up);
                }
                if let Some(v) = vrrp.as_mut() {
                    v.on_carrier(&sh, index, up).await;
                }
            }
            removed = gone.next() => match removed {
                Some(what) => {
                    if let Some(p) = pool.as_mut() {
                        p.on_address_gone(&what);
                    }
                    if let Some(v) = vrrp.as_mut() {
                        v.on_address_gone(&sh, &what).await;
                    }
                }
                None => break Stop::Failed("the kernel closed the address notification socket"),
            },
            Some((generation, check, passed)) = health_rx.recv() => {
                if generation == sh.health_generation {
                    on_check(&mut sh, pool.as_mut(), vrrp.as_mut(), check, passed).await;
                }
            }
            accepted = control.accept() => {
                if let Ok((stream, _)) = accepted {
                    // The request is read on the side: a slow client holds nothing up.
                    let requests = requests_tx.clone();
                    tokio::spawn(async move {
                        let _ = requests.send(read_request(stream).await);
                    });
                }
            }
            Some((request, stream)) = requests_rx.recv() => {
                if let Some(drained) = request.drained() {
                    set_drained(&mut sh, pool.as_mut(), vrrp.as_mut(), drained).await;
                }
                answer_status(&sh, pool.as_ref(), vrrp.as_ref(), stream);
            }
            _ = refresh.tick() => {
                sh.held.refresh();
                if let Some(p) = pool.as_mut() {
                    p.retry_restore();
                }
            }
            claims = sh.watch.ring.next() => match claims {
                Ok(notices) => on_claims(&mut sh, pool.as_mut(), vrrp.as_mut(), &notices),
                Err(e) => {
                    warn!("polling the XDP claim ring: {e}");
                    break Stop::Failed("the XDP claim ring could not be polled");
                }
            },
            _ = housekeeping.tick() => {
                sh.watch.expire(monotonic_ns(), &sh.metrics);
                if let Some(p) = pool.as_mut() {
                    p.recheck_claims(&mut sh);
                }
            }
            // Last, one datagram a turn: a flood on the heartbeat port (which the XDP
            // program drops unless it recorded it) never keeps anything above waiting.
            received = async {
                match pool.as_ref() {
                    Some(p) => p.receiver.recv(&mut buf).await,
                    None => pending().await,
                }
            } => match (received, pool.as_mut()) {
                (Ok((n, from)), Some(p)) => p.on_datagram(&sh, &buf[..n], from),
                (Err(e), _) => tracing::debug!("receiving heartbeats: {e}"),
                _ => {}
            },
        }
    };

    info!(
        reason = stop_reason.reason(),
        "stopping: LEAVING, priority-0 adverts, releasing VIPs"
    );
    notifier.stopping();
    sh.hooks.node_state("stopping");
    // Both fast paths wind down at once; then each is waited for.
    pool.iter().for_each(|p| p.fast.stop());
    vrrp.iter().for_each(|v| v.fast.stop());
    if let (Some(p), Some(reports), Some(thread)) = (pool, pool_reports.as_mut(), pool_thread) {
        p.stop(&mut sh, reports, thread).await;
    }
    if let (Some(v), Some(reports), Some(thread)) = (vrrp, vrrp_reports.as_mut(), vrrp_thread) {
        v.stop(&mut sh, reports, thread).await;
    }
    info!(
        xdp_mode = sh.loaded.mode,
        counters = counters_text(&sh.loaded),
        "stopped"
    );
    sh.health_tasks.iter().for_each(JoinHandle::abort);
    clean_up(&sh.loaded.pin_dir, &sh.cfg.node.instance, &sh.hooks).await;
    stop_reason.outcome()
}

fn refresh_timer(every: Option<Duration>) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every.unwrap_or(DAY));
    t.reset();
    t
}

/// A health check result: a change of verdict goes to both engines.
async fn on_check(
    sh: &mut Shell,
    pool: Option<&mut pool::slow::Pool>,
    vrrp: Option<&mut vrrp::slow::Groups>,
    index: usize,
    passed: bool,
) {
    let Some(now_healthy) = sh.health.record(index, passed) else {
        return;
    };
    let name = sh
        .cfg
        .common
        .checks
        .get(index)
        .map_or("?", |c| c.name.as_str());
    if now_healthy {
        info!(check = name, "health check passing");
    } else {
        warn!(
            check = name,
            "health check failing: releasing the pool's VIPs and leaving every VRRP group"
        );
    }
    if let Some(p) = pool {
        p.on_health(sh.runnable());
    }
    if let Some(v) = vrrp {
        let reason = match now_healthy {
            true => "check_passed",
            false => "check_failed",
        };
        v.apply_runnable(sh, reason).await;
    }
}

/// `vipd drain` / `vipd undrain`: marks the node (so a restart keeps it), then tells both
/// engines, as a health verdict (the pool's VIPs go to the peers, the groups stop).
async fn set_drained(
    sh: &mut Shell,
    pool: Option<&mut pool::slow::Pool>,
    vrrp: Option<&mut vrrp::slow::Groups>,
    drained: bool,
) {
    if let Err(e) = drain::mark(&sh.cfg.node.drain_file(), drained) {
        warn!(
            file = %sh.cfg.node.drain_file().display(),
            "cannot record the drain mark ({e}): a restart will not keep it"
        );
    }
    if sh.drained == drained {
        return;
    }
    sh.drained = drained;
    sh.metrics.drained.set(i64::from(drained));
    if drained {
        warn!("drained: giving this node's VIPs to its peers and leaving every VRRP group");
    } else {
        info!("undrained: this node takes its share again");
    }
    if let Some(p) = pool {
        p.on_health(sh.runnable());
    }
    if let Some(v) = vrrp {
        let reason = if drained { "drained" } else { "undrained" };
        v.apply_runnable(sh, reason).await;
    }
}

/// Notices of the ARP/NDP watch, each to the engine that holds the VIP claimed.
fn on_claims(
    sh: &mut Shell,
    pool: Option<&mut pool::slow::Pool>,
    vrrp: Option<&mut vrrp::slow::Groups>,
    notices: &[ClaimNotice],
) {
    let (ours, theirs): (Vec<ClaimNotice>, Vec<ClaimNotice>) = notices
        .iter()
        .partition(|n| sh.cfg.pool.vips.iter().any(|v| v.addr == notice_vip(n)));
    if let Some(p) = pool
        && !ours.is_empty()
    {
        p.on_claims(sh, &ours);
    }
    if let Some(v) = vrrp
        && !theirs.is_empty()
    {
        v.on_claims(sh, &theirs);
    }
}

/// SIGHUP: re-reads the configuration; applies it if every engine can, else keeps the
/// running one and says why. Returns whether it was applied.
async fn reload(
    sh: &mut Shell,
    pool: Option<&mut pool::slow::Pool>,
    vrrp: Option<&mut vrrp::slow::Groups>,
    vrrp_reports: &mut Option<tokio::sync::mpsc::Receiver<vrrp::fast::Report>>,
) -> bool {
    let new = match sh.args.load() {
        Ok(new) => new,
        Err(e) => {
            warn!("reload rejected, keeping the running configuration: {e}");
            return false;
        }
    };
    let changes = match (sh.cfg.needs_restart(&new), vrrp.as_ref()) {
        (Some(what), _) => Err(anyhow::anyhow!("changing {what} needs a restart")),
        (None, Some(v)) => v.plan_reload(&new).await,
        (None, None) => Ok(Vec::new()),
    };
    let changes = match changes {
        Ok(changes) => changes,
        Err(e) => {
            warn!("reload rejected, keeping the running configuration: {e:#}");
            return false;
        }
    };
    if new == sh.cfg {
        info!("reload: configuration unchanged");
        return false;
    }
    let mut pool = pool;
    if let Some(p) = pool.as_deref_mut()
        && let Err(e) = p.reload(sh, &new)
    {
        warn!("reload not applied, keeping the running configuration: {e:#}");
        return false;
    }
    sh.reconfigure(new);
    if let Some(p) = pool {
        p.reloaded(sh);
    }
    if let (Some(v), Some(reports)) = (vrrp, vrrp_reports.as_mut()) {
        v.reload(sh, changes, reports).await;
    }
    info!("configuration reloaded");
    true
}

/// Answers a control connection: the shared part, then each engine's, asked of its fast
/// path.
fn answer_status(
    sh: &Shell,
    pool: Option<&pool::slow::Pool>,
    vrrp: Option<&vrrp::slow::Groups>,
    stream: tokio::net::UnixStream,
) {
    let mut base = Status {
        node_id: sh.cfg.node.id,
        instance: sh.cfg.node.instance.clone(),
        interface: interfaces(&sh.cfg).join(","),
        xdp_mode: sh.loaded.mode.into(),
        checks: sh
            .cfg
            .common
            .checks
            .iter()
            .zip(sh.health.states())
            .map(|(c, (healthy, _))| CheckStatus {
                name: c.name.clone(),
                healthy,
            })
            .collect(),
        counters: sh
            .loaded
            .counters()
            .iter()
            .map(|(c, v)| (c.name().to_string(), *v))
            .collect(),
        conflicts: sh.watch.status(monotonic_ns()),
        conntrack: sh.notrack.describe(),
        drained: sh.drained,
        ..Status::default()
    };
    // The groups first: with a pool as well, the pool's state and fast path are the node's.
    let groups = vrrp.map(|v| v.status(sh, &mut base));
    let pool = pool.map(|p| p.status(sh, &mut base));
    tokio::spawn(async move {
        if let Some(g) = groups {
            g.fill(&mut base).await;
        }
        if let Some(p) = pool {
            p.fill(&mut base).await;
        }
        answer(stream, base).await;
    });
}
