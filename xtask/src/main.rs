//! `cargo xtask <task>`: developer tasks for vipd.
//!
//! - `build-ebpf`: builds the XDP object on its own and prints its path.
//! - `demo`: a two-node cluster and a client in network namespaces; shows a takeover.

mod bench;
mod demo;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for vipd")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the XDP program (vipd-ebpf) for bpfel-unknown-none and print the object's path,
    /// for `llvm-objdump -S` or `bpftool prog load`. (`cargo build` embeds it anyway.)
    BuildEbpf,
    /// Run a local cluster in network namespaces (two vipd nodes, a client), kill a node,
    /// show the takeover with its timeline, bring it back, stop one gracefully, tear down.
    /// Needs root and ./scripts/setup.sh.
    Demo,
    /// Benchmarks: print figures and write bench/results/<date>-<name>.{json,md}.
    Bench {
        #[command(subcommand)]
        which: BenchTask,
    },
    /// (Used by the failover benchmark.) Answer UDP requests to an address with a name.
    #[command(hide = true)]
    Echo {
        #[arg(long)]
        bind: std::net::SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// (Used by the failover benchmark.) Probe an address at a fixed rate; write a report.
    #[command(hide = true)]
    Probe {
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        #[arg(long)]
        duration_ms: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchTask {
    /// Client-visible outage across a hard failure of the VIP's owner (needs root).
    Failover {
        /// Failovers per system.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// A smoke run: one failover of vipd at its defaults.
        #[arg(long)]
        quick: bool,
        /// Probe requests per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        /// Only redraw the table and plot from an earlier result file.
        #[arg(long)]
        replot: Option<PathBuf>,
    },
    /// Per-packet cost of the XDP program via BPF_PROG_TEST_RUN (needs root).
    Xdp {
        /// Runs per frame kind.
        #[arg(long, default_value_t = 10_000_000)]
        repeat: u32,
        /// A smoke run (10,000 runs per frame).
        #[arg(long)]
        quick: bool,
    },
    /// Userspace CPU and wake-ups of one node with 8 peers sending adverts: vipd vs
    /// keepalived (needs root).
    Cpu {
        /// A smoke run (1 s window).
        #[arg(long)]
        quick: bool,
    },
    /// Placement of 10,000 VIPs over 64 nodes: time, and VIPs moved on a leave and a join.
    Placement {
        /// A smoke run (1,000 VIPs over 16 nodes).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let task = Cli::parse().task;
    if matches!(task, Task::Demo | Task::Bench { .. }) {
        // Ctrl-C unwinds the lab (namespaces, processes, pins) instead of leaking it.
        xtask::lab::handle_interrupts();
    }
    match task {
        Task::BuildEbpf => {
            let object = build_ebpf()?;
            println!("{}", object.display());
            Ok(())
        }
        Task::Demo => demo::run(),
        Task::Bench {
            which: BenchTask::Failover {
                replot: Some(path), ..
            },
        } => replot_failover(&path),
        Task::Bench {
            which:
                BenchTask::Failover {
                    runs,
                    quick,
                    rate,
                    replot: None,
                },
        } => bench_failover(runs, quick, rate),
        Task::Bench {
            which: BenchTask::Xdp { repeat, quick },
        } => bench::xdp(if quick { 10_000 } else { repeat }, quick),
        Task::Bench {
            which: BenchTask::Placement { quick },
        } => bench::placement(quick),
        Task::Bench {
            which: BenchTask::Cpu { quick },
        } => bench::cpu(quick),
        Task::Echo {
            bind,
            name,
            max_seconds,
        } => bench::probe::echo(bind, &name, std::time::Duration::from_secs(max_seconds)),
        Task::Probe {
            target,
            rate,
            duration_ms,
            out,
        } => {
            let report =
                bench::probe::probe(target, rate, std::time::Duration::from_millis(duration_ms))?;
            std::fs::write(&out, serde_json::to_string(&report)?)?;
            Ok(())
        }
    }
}

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .into()
}

/// Builds vipd-ebpf the way `vipd/build.rs` (aya-build) does, into target/ebpf.
fn build_ebpf() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    let arch = std::env::consts::ARCH;
    let status = Command::new("rustup")
        .current_dir(&root)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "vipd-ebpf",
            "--bins",
        ])
        .args([
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running rustup (did you run ./scripts/setup.sh?)")?;
    if !status.success() {
        bail!("building vipd-ebpf failed ({status}); ./scripts/setup.sh installs what it needs");
    }
    Ok(target_dir.join("bpfel-unknown-none/release/vipd"))
}

fn bench_failover(runs: usize, quick: bool, rate: u32) -> anyhow::Result<()> {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the failover benchmark needs root (network namespaces, XDP): run it with sudo");
    }
    let vipd = demo::build_vipd()?;
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let machine = bench::Machine::here();
    let (systems, runs) = if quick {
        (
            vec![
                bench::failover::System::VipdDefault,
                bench::failover::System::VrrpFast,
            ],
            1,
        )
    } else {
        (bench::failover::System::ALL.to_vec(), runs)
    };
    let mut all = Vec::new();
    let mut failures = serde_json::Map::new();
    for system in systems {
        println!("==> {} × {runs}", system.name());
        // One system failing (say, one that never settles) must not lose the others.
        match bench::failover::run(system, runs, rate, &vipd, &xtask) {
            Ok(r) => all.extend(r),
            Err(e) => {
                println!("  {} failed: {e:#}", system.name());
                failures.insert(system.name().into(), format!("{e:#}").into());
            }
        }
    }
    let table = bench::failover_table(&all, &machine);
    println!("\n{table}");
    let json =
        serde_json::json!({ "machine": machine, "rate": rate, "runs": all, "failed": failures });
    let (j, m) = bench::write_results(
        if quick { "failover-smoke" } else { "failover" },
        &json,
        &table,
    )?;
    let svg = j.with_extension("svg");
    bench::failover_plot(&all, &svg)?;
    println!(
        "wrote {}, {} and {}",
        j.display(),
        m.display(),
        svg.display()
    );
    Ok(())
}

/// Redraws the failover table (`.md`) and plot (`.svg`) beside an earlier `.json` result.
fn replot_failover(path: &std::path::Path) -> anyhow::Result<()> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let runs: Vec<bench::failover::Run> = serde_json::from_value(json["runs"].clone())?;
    let machine = bench::Machine::here();
    let table = bench::failover_table(&runs, &machine);
    println!("{table}");
    std::fs::write(path.with_extension("md"), &table)?;
    bench::failover_plot(&runs, &path.with_extension("svg"))?;
    Ok(())
}
