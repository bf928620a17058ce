//! `vipd-bench`: measurements that `cargo xtask bench` runs against vipd's own code,
//! kept out of the product binary. Each prints JSON.

use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use clap::{Parser, Subcommand};
use vipd::{pool::placement, xdp};

#[derive(Parser)]
#[command(
    name = "vipd-bench",
    about = "Benchmarks of vipd's own code (JSON output)"
)]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Per-packet cost of the XDP program (BPF_PROG_TEST_RUN; needs root).
    Xdp {
        /// Runs per frame kind.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
    /// Differential fuzzing of the XDP program against its host reference (needs root).
    FuzzXdp {
        /// Frames to run.
        #[arg(long, default_value_t = 100_000)]
        frames: u64,
        /// Seed of the frame generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Placement of a large pool: from nothing, after a leave, after a join.
    Placement {
        /// Nodes.
        #[arg(long, default_value_t = 64)]
        nodes: u32,
        /// VIPs.
        #[arg(long, default_value_t = 10_000)]
        vips: u32,
        /// Repetitions of each measurement.
        #[arg(long, default_value_t = 20)]
        repeat: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().which {
        Which::Xdp { repeat } => bench_xdp(repeat),
        Which::FuzzXdp { frames, seed } => {
            let started = Instant::now();
            let report = vipd::fuzz::run(frames, seed)?;
            let mut json = serde_json::to_value(&report)?;
            json["seed"] = seed.into();
            json["seconds"] = started.elapsed().as_secs_f64().into();
            println!("{json}");
            Ok(())
        }
        Which::Placement {
            nodes,
            vips,
            repeat,
        } => bench_placement(nodes, vips, repeat),
    }
}

/// Times placement of `vips` over `nodes` (fresh, after a leave, after a join) and counts
/// the VIPs moved against the minimum; prints JSON.
fn bench_placement(nodes: u32, vips: u32, repeat: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        nodes >= 2 && vips >= 1 && repeat >= 1,
        "need 2+ nodes, 1+ VIPs, 1+ repeats"
    );
    let pool: Vec<IpAddr> = (0..vips)
        .map(|i| std::net::Ipv4Addr::from(i).into())
        .collect();
    let members: Vec<placement::Member> = (1..=nodes)
        .map(|id| placement::Member { id, weight: 1 })
        .collect();
    let time = |f: &dyn Fn() -> BTreeMap<IpAddr, u32>| {
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
