//! `cargo xtask sim`: runs the pool's deterministic simulator (`vipd-sim`, release build)
//! over many seeds and writes bench/results/<date>-sim.{json,md}; fails on any violation
//! (the first failing seed is shrunk and its trace shown).

use std::{fmt::Write as _, process::Command};

use anyhow::Context as _;

use crate::bench::{Machine, write_results};

/// What to run.
#[derive(clap::Args)]
pub struct Args {
    /// Seeds to run.
    #[arg(long, default_value_t = 10_000)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Nodes per run (each seed draws a count).
    #[arg(long, default_value = "2..7")]
    pub nodes: String,
    /// Faults per run.
    #[arg(long, default_value = "1..6")]
    pub faults: String,
    /// Virtual seconds the faults fall in (the network then heals and stays quiet).
    #[arg(long, default_value_t = 150)]
    pub run_secs: u64,
    /// Replay one seed with its whole trace.
    #[arg(long)]
    pub replay: Option<u64>,
}

/// Runs the simulator.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let sim = crate::demo::build_vipd()?.with_file_name("vipd-sim");
    let mut cmd = Command::new(&sim);
    cmd.args(["--nodes", &a.nodes, "--faults", &a.faults])
        .args(["--run-secs", &a.run_secs.to_string()]);
    if let Some(seed) = a.replay {
        let status = cmd.args(["--replay", &seed.to_string()]).status()?;
        anyhow::ensure!(status.success(), "vipd-sim failed ({status})");
        return Ok(());
    }
    let out = cmd
        .args([
            "--seeds",
            &a.seeds.to_string(),
            "--first",
            &a.first.to_string(),
        ])
        .arg("--stop-on-failure")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", sim.display()))?;
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading vipd-sim's summary")?;
    let violations = result["violations"].as_u64().unwrap_or(u64::MAX);
    let machine = Machine::here();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Deterministic simulation of the pool (`cargo xtask sim --seeds {} --first {} --nodes \
         {} --faults {} --run-secs {}`): {} seeds, {} virtual seconds, {} steps in {:.0} s \
         of wall time, **{violations} violations**.\n",
        a.seeds,
        a.first,
        a.nodes,
        a.faults,
        a.run_secs,
        result["seeds"],
        result["virtual_secs"],
        result["steps"],
        result["wall_secs"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(md, "Machine: {}.", machine.line());
    if violations > 0 {
        let _ = writeln!(md, "\nFailing seeds: {}", result["failing_seeds"]);
    }
    println!("{md}");
    let json = serde_json::json!({ "machine": machine, "result": result });
    let (j, m) = write_results("sim", &json, &md)?;
    println!("wrote {} and {}", j.display(), m.display());
    anyhow::ensure!(violations == 0, "{violations} seeds broke an invariant");
    Ok(())
}
