//! The CLI's commands other than `status` and `keygen`: run the daemon, check a
//! configuration, print a zone or a capacity plan, completions and man pages.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;
use tracing_subscriber::EnvFilter;

use crate::{
    cli::{Cli, PlanArgs, RunArgs, ZoneArgs},
    clock,
    config::{self, File, MAX_VIPS},
    daemon,
    pool::{placement, plan},
};

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("VIPD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Diagnostics go to stderr (stdout stays for what commands print).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(clock::MonotonicTimer)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// `vipd run`: the daemon, with a pool, VRRP groups or both.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let cfg = args
        .load()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the tokio runtime: {e}"))?;
    rt.block_on(daemon::run(cfg, args))
}

/// `vipd check-config`: validates and prints the effective configuration.
pub fn check_config(args: &RunArgs) -> anyhow::Result<()> {
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

/// `vipd zone`: round-robin DNS records for the pool.
pub fn print_zone(args: &ZoneArgs) -> anyhow::Result<()> {
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

/// `vipd plan`: each node's share after failures.
pub fn print_plan(args: PlanArgs) -> anyhow::Result<()> {
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

/// `vipd completions SHELL`: the completion script, on stdout.
pub fn print_completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "vipd", &mut std::io::stdout());
}

/// `vipd man DIR`: `vipd.8`, and `vipd-<subcommand>.8` for each visible subcommand.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let top = Cli::command();
    let subs = top.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| {
        c.clone()
            .display_name(format!("vipd-{}", c.get_name()))
            .bin_name(format!("vipd {}", c.get_name()))
            .version(env!("CARGO_PKG_VERSION"))
    });
    for cmd in std::iter::once(top.clone()).chain(subs) {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
        let path = dir.join(format!("{name}.8"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut page)
            .context("rendering a man page")?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
