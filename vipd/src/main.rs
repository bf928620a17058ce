//! vipd: failover of virtual IPs for round-robin DNS, with heartbeats parsed in XDP.

mod announce;
mod auth;
mod cli;
mod clock;
mod config;
mod control;
mod fastpath;
mod health;
mod heartbeat;
mod hooks;
mod ifaddr;
mod metrics;
mod netlink;
mod pool;
mod runtime;
mod vip;
mod vrrp;
mod xdp;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::{
    cli::{Cli, Command, PlanArgs, RunArgs, ZoneArgs},
    config::{File, MAX_VIPS},
    pool::{placement, plan},
};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Status(args) => control::print_status(&args),
        Command::Zone(args) => print_zone(&args),
        Command::Plan(args) => print_plan(args),
        Command::Keygen { path } => auth::keygen(path.as_deref()),
        Command::BenchPlacement {
            nodes,
            vips,
            repeat,
        } => bench_placement(nodes, vips, repeat),
        Command::BenchXdp { repeat } => bench_xdp(repeat),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vipd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("VIPD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(clock::MonotonicTimer);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let cfg = args
        .load()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the tokio runtime: {e}"))?;
    if cfg.vrrp.is_empty() {
        rt.block_on(pool::run::run(cfg, args))
    } else {
        rt.block_on(vrrp::run::run(cfg, args))
    }
}

fn check_config(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = args
        .load()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let source = args.config_path().map_or("flags only".into(), |p| {
        format!("{} and flags", p.display())
    });
    println!("# vipd: the configuration is valid. Effective configuration ({source}):");
    print!("{}", cfg.to_toml());
    Ok(())
}

fn print_zone(args: &ZoneArgs) -> anyhow::Result<()> {
    let vips = if args.vips.is_empty() {
        let path = args
            .config
            .clone()
            .unwrap_or_else(|| config::DEFAULT_CONFIG.into());
        let file = File::load(&path).map_err(|e| anyhow::anyhow!(e))?;
        file.pool.vips.unwrap_or_default()
    } else {
        args.vips.clone()
    };
    anyhow::ensure!(
        !vips.is_empty(),
        "no VIPs: give --vip or a configuration with [pool] vips"
    );
    let mut vips = vips;
    vips.sort();
    println!("; round-robin records for the vipd pool: publish VIPs, never node addresses");
    for v in vips {
        let kind = if v.addr.is_ipv4() { "A" } else { "AAAA" };
        println!("{}\t{}\tIN\t{kind}\t{}", args.name, args.ttl, v.addr);
    }
    Ok(())
}

fn print_plan(args: PlanArgs) -> anyhow::Result<()> {
    let members = match args.nodes {
        Some(n) => (1..=n)
            .map(|id| placement::Member { id, weight: 1 })
            .collect(),
        None => args.node,
    };
    let pool: Vec<std::net::IpAddr> = match args.vips {
        Some(n) if n > MAX_VIPS => anyhow::bail!("at most {MAX_VIPS} VIPs per pool"),
        // Placeholders: only the order of a pool matters to placement.
        Some(n) => (0..n as u32)
            .map(|i| std::net::Ipv4Addr::from(i).into())
            .collect(),
        None => args.vip.iter().map(|v| v.addr).collect(),
    };
    let plan = plan::plan(&pool, &members, args.failures, !args.no_preempt)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan.json())?);
    } else {
        print!("{}", plan.table());
    }
    Ok(())
}

/// Times placement of `vips` over `nodes` (fresh, after a leave, after a join) and counts
/// the VIPs moved against the minimum; prints JSON.
fn bench_placement(nodes: u32, vips: u32, repeat: u32) -> anyhow::Result<()> {
    use std::{collections::BTreeMap, time::Instant};
    anyhow::ensure!(
        nodes >= 2 && vips >= 1 && repeat >= 1,
        "need 2+ nodes, 1+ VIPs, 1+ repeats"
    );
    let pool: Vec<std::net::IpAddr> = (0..vips)
        .map(|i| std::net::Ipv4Addr::from(i).into())
        .collect();
    let members: Vec<placement::Member> = (1..=nodes)
        .map(|id| placement::Member { id, weight: 1 })
        .collect();
    let time = |f: &dyn Fn() -> BTreeMap<std::net::IpAddr, u32>| {
        let mut best = f64::MAX;
        let mut out = BTreeMap::new();
        for _ in 0..repeat {
            let t = Instant::now();
            out = f();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        (best, out)
    };
    let (fresh_ms, fresh) = time(&|| placement::place(&pool, &members, &BTreeMap::new(), true));
    let survivors = &members[1..];
    let (leave_ms, after_leave) = time(&|| placement::place(&pool, survivors, &fresh, true));
    let (join_ms, after_join) = time(&|| placement::place(&pool, &members, &after_leave, true));
    let moved =
        |a: &BTreeMap<_, u32>, b: &BTreeMap<_, u32>| a.iter().filter(|(k, v)| b[*k] != **v).count();
    let leaver_held = fresh.values().filter(|&&n| n == 1).count();
    let joiner_floor = (u64::from(vips) / u64::from(nodes)) as usize;
    let report = serde_json::json!({
        "nodes": nodes,
        "vips": vips,
        "fresh_ms": fresh_ms,
        "leave_ms": leave_ms,
        "join_ms": join_ms,
        "moved_on_leave": moved(&fresh, &after_leave),
        "minimum_on_leave": leaver_held,
        "moved_on_join": moved(&after_leave, &after_join),
        "minimum_on_join": joiner_floor,
    });
    println!("{report}");
    Ok(())
}

/// Prints the XDP program's per-packet cost as JSON.
fn bench_xdp(repeat: u32) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = xdp::bench(repeat)?
        .into_iter()
        .map(|(frame, verdict, ns)| serde_json::json!({"frame": frame, "verdict": verdict, "ns_per_packet": ns}))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "repeat": repeat, "frames": rows })
    );
    Ok(())
}
