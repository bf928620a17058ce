//! vipd: failover of virtual IPs for round-robin DNS, with heartbeats parsed in XDP.

mod announce;
mod cli;
mod clock;
mod daemon;
mod heartbeat;
mod membership;
mod netlink;
mod placement;
mod vip;
mod xdp;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, Config};

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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
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
