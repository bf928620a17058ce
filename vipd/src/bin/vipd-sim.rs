//! `vipd-sim`: the pool's deterministic simulator (`cargo xtask sim` runs it). Runs seeds,
//! prints a summary as JSON; a failing seed is shrunk and its schedule and trace printed.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use clap::Parser;
use vipd::sim::{Options, Scenario};

#[derive(Parser)]
#[command(name = "vipd-sim", about = "Deterministic simulation of vipd's pool")]
struct Cli {
    /// Seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Nodes per run, e.g. 2..7 (each seed draws a count).
    #[arg(long, default_value = "2..7")]
    nodes: String,
    /// Faults per run, e.g. 1..6.
    #[arg(long, default_value = "1..6")]
    faults: String,
    /// Virtual seconds the faults fall in (a quiet time follows).
    #[arg(long, default_value_t = 150)]
    run_secs: u64,
    /// Replay one seed with its trace.
    #[arg(long)]
    replay: Option<u64>,
    /// Stop at the first failing seed (shrunk and shown).
    #[arg(long)]
    stop_on_failure: bool,
    /// Shrink every failing seed and print its faults on one line.
    #[arg(long)]
    shrink: bool,
    /// Threads running seeds side by side (0: one per CPU). Each seed runs alone on one
    /// thread, so the results do not depend on it.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
}

/// What one thread's seeds did.
#[derive(Default)]
struct Runs {
    virtual_ns: u64,
    steps: u64,
    failing: Vec<u64>,
}

fn range(s: &str) -> anyhow::Result<(usize, usize)> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or_else(|| anyhow::anyhow!("expected LO..HI, got {s:?}"))?;
    let (lo, hi) = (lo.parse()?, hi.parse()?);
    anyhow::ensure!(lo <= hi && lo >= 1, "bad range {s:?}");
    Ok((lo, hi))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = Options {
        nodes: range(&cli.nodes)?,
        faults: range(&cli.faults)?,
        run_ms: cli.run_secs * 1000,
        ..Options::default()
    };
    anyhow::ensure!(options.nodes.0 >= 2, "at least 2 nodes");
    if let Some(seed) = cli.replay {
        let scenario = Scenario::draw(seed, &options);
        show(&scenario, true);
        return Ok(());
    }
    let started = Instant::now();
    let jobs = match cli.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    } as u64;
    let stop = AtomicBool::new(false);
    let runs: Vec<Runs> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|k| {
                let (options, stop) = (&options, &stop);
                let (first, seeds, cli) = (cli.first, cli.seeds, &cli);
                scope.spawn(move || {
                    let mut runs = Runs::default();
                    for seed in (first + k..first + seeds).step_by(jobs as usize) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let scenario = Scenario::draw(seed, options);
                        let out = scenario.run(false);
                        runs.virtual_ns += out.virtual_ns;
                        runs.steps += out.steps;
                        if let Some(v) = out.violation {
                            eprintln!("seed {seed}: {v}");
                            if cli.shrink {
                                let small = scenario.shrink();
                                let kinds: Vec<String> =
                                    small.faults.iter().map(|f| f.to_string()).collect();
                                eprintln!(
                                    "  shrunk ({} nodes, longer dead interval on {:?}): {}",
                                    small.params.nodes,
                                    small.params.longer_dead,
                                    kinds.join(" | ")
                                );
                            }
                            runs.failing.push(seed);
                            if cli.stop_on_failure {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    runs
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a simulator thread panicked"))
            .collect()
    });
    let virtual_ns: u64 = runs.iter().map(|r| r.virtual_ns).sum();
    let steps: u64 = runs.iter().map(|r| r.steps).sum();
    let mut failing: Vec<u64> = runs.into_iter().flat_map(|r| r.failing).collect();
    failing.sort_unstable();
    if cli.stop_on_failure
        && let Some(&seed) = failing.first()
    {
        show(&Scenario::draw(seed, &options).shrink(), false);
    }
    let summary = serde_json::json!({
        "seeds": cli.seeds,
        "first": cli.first,
        "nodes": cli.nodes,
        "faults": cli.faults,
        "run_secs": cli.run_secs,
        "virtual_secs": virtual_ns / 1_000_000_000,
        "steps": steps,
        "wall_secs": started.elapsed().as_secs_f64(),
        "violations": failing.len(),
        "failing_seeds": failing.iter().take(50).collect::<Vec<_>>(),
    });
    println!("{summary}");
    if !failing.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints a scenario, runs it traced and prints what broke, with the trace's end.
fn show(scenario: &Scenario, whole: bool) {
    eprintln!(
        "seed {}: {} nodes, {} VIPs, faults:",
        scenario.seed, scenario.params.nodes, scenario.params.vips
    );
    if !scenario.params.longer_dead.is_empty() {
        eprintln!(
            "  a rolling change of the dead interval: n{:?} on {} ms, the others on {} ms",
            scenario
                .params
                .longer_dead
                .iter()
                .map(|i| i + 1)
                .collect::<Vec<_>>(),
            scenario.params.dead_ms * vipd::sim::LONGER_DEAD,
            scenario.params.dead_ms
        );
    }
    for f in &scenario.faults {
        eprintln!("  {f}");
    }
    let out = scenario.run(true);
    let skip = if whole {
        0
    } else {
        out.trace.len().saturating_sub(60)
    };
    for line in &out.trace[skip..] {
        eprintln!("  {line}");
    }
    match out.violation {
        Some(v) => eprintln!("VIOLATION {v}"),
        None => eprintln!("no violation"),
    }
}
