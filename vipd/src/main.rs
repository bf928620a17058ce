//! vipd: failover of virtual IPs for round-robin DNS, with heartbeats parsed in XDP.

mod announce;
mod cli;
mod clock;
mod daemon;
mod heartbeat;
mod membership;
mod netlink;
mod placement;
mod plan;
mod vip;
mod xdp;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, Config, MAX_VIPS, PlanArgs};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("VIPD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_timer(clock::MonotonicTimer)
        .with_ansi(false)
        .init();
    let result = match cli.command {
        Command::Run(args) => match Config::try_from(args) {
            Ok(cfg) => run(cfg),
            Err(e) => Err(anyhow::anyhow!("invalid configuration: {e}")),
        },
        Command::Plan(args) => print_plan(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vipd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the tokio runtime: {e}"))?;
    rt.block_on(daemon::run(cfg))
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
