//! vipd: failover of virtual IPs for round-robin DNS, with heartbeats parsed in XDP.

use clap::Parser as _;
use vipd::{
    auth,
    cli::{Cli, Command},
    commands, control,
};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run(args),
        Command::CheckConfig(args) => commands::check_config(&args),
        Command::Status(args) => control::print_status(&args),
        Command::Zone(args) => commands::print_zone(&args),
        Command::Plan(args) => commands::print_plan(args),
        Command::Keygen { path } => auth::keygen(path.as_deref()),
        Command::Drain(args) => control::drain(&args, true),
        Command::Undrain(args) => control::drain(&args, false),
        Command::Completions { shell } => {
            commands::print_completions(shell);
            Ok(())
        }
        Command::Man { dir } => commands::write_man_pages(&dir),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vipd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
