//! `cargo xtask bench …`: benchmarks that print figures and write them to
//! `bench/results/<date>-<name>.json` and `.md`. Tests never assert timings; these measure.

pub mod cpu;
pub mod failover;
pub mod probe;
pub mod starvation;

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::Context as _;
use serde::Serialize;

use crate::workspace_root;

/// The machine a result was measured on.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
}

impl Machine {
    /// Reads this machine's description.
    pub fn here() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
        }
    }

    /// One line for reports.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), kernel {}",
            self.cores, self.cpu, self.kernel
        )
    }
}

/// Runs `vipd <args>` (release build) and parses its JSON output.
/// Runs `vipd-bench` (measurements of vipd's own code, beside the product binary) and
/// reads its JSON.
fn vipd_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let vipd = crate::demo::build_vipd()?.with_file_name("vipd-bench");
    let out = Command::new(&vipd)
        .args(args)
        .output()
        .with_context(|| format!("running {}", vipd.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "vipd-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `cargo xtask bench xdp`.
pub fn xdp(repeat: u32, quick: bool) -> anyhow::Result<()> {
    let machine = Machine::here();
    let result = vipd_json(&["xdp", "--repeat", &repeat.to_string()])?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "XDP program cost per packet (BPF_PROG_TEST_RUN, {repeat} runs per frame)."
    );
    let _ = writeln!(md, "Machine: {}.\n", machine.line());
    let _ = writeln!(md, "| frame | verdict | ns/packet |\n|---|---|---|");
    for f in result["frames"].as_array().into_iter().flatten() {
        let verdict = match f["verdict"].as_u64() {
            Some(1) => "XDP_DROP",
            Some(2) => "XDP_PASS",
            _ => "?",
        };
        let _ = writeln!(
            md,
            "| {} | {verdict} | {} |",
            f["frame"].as_str().unwrap_or("?"),
            f["ns_per_packet"]
        );
    }
    println!("{md}");
    let json = serde_json::json!({ "machine": machine, "result": result });
    let (j, m) = write_results(if quick { "xdp-smoke" } else { "xdp" }, &json, &md)?;
    println!("wrote {} and {}", j.display(), m.display());
    Ok(())
}

/// `cargo xtask fuzz-xdp`: fails when the program and its host reference disagree.
pub fn fuzz_xdp(frames: u64, seed: u64) -> anyhow::Result<()> {
    let machine = Machine::here();
    let result = vipd_json(&[
        "fuzz-xdp",
        "--frames",
        &frames.to_string(),
        "--seed",
        &seed.to_string(),
    ])?;
    let differences = result["differences"].as_u64().unwrap_or(u64::MAX);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Differential fuzzing of the XDP program (BPF_PROG_TEST_RUN) against its host \
         reference: {} frames, seed {seed}, {:.0} s, **{differences} differences**.",
        result["frames"],
        result["seconds"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(md, "Machine: {}.\n", machine.line());
    let _ = writeln!(
        md,
        "Configurations: {}. Verdicts: {} dropped, {} passed; {} peer events.\n",
        result["setups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        result["dropped"],
        result["passed"],
        result["events"]
    );
    let _ = writeln!(md, "| counter | frames |\n|---|---|");
    for (name, n) in result["counters"].as_object().into_iter().flatten() {
        let _ = writeln!(md, "| {name} | {n} |");
    }
    for d in result["first"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "\n- {}", d.as_str().unwrap_or("?"));
    }
    println!("{md}");
    let json = serde_json::json!({ "machine": machine, "result": result });
    let (j, m) = write_results("fuzz-xdp", &json, &md)?;
    println!("wrote {} and {}", j.display(), m.display());
    anyhow::ensure!(
        differences == 0,
        "the XDP program and its host reference disagree on {differences} frames"
    );
    Ok(())
}

/// `cargo xtask bench cpu`.
pub fn cpu(quick: bool) -> anyhow::Result<()> {
    let machine = Machine::here();
    let window = std::time::Duration::from_secs(if quick { 1 } else { 10 });
    let vipd = crate::demo::build_vipd()?;
    let results = cpu::run(window, &vipd)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Userspace cost of one node while 8 peers send adverts to it ({} s window).",
        window.as_secs()
    );
    let _ = writeln!(md, "Machine: {}.\n", machine.line());
    let _ = writeln!(
        md,
        "| daemon | adverts received/s | CPU (ms per s) | wake-ups/s |\n|---|---|---|---|"
    );
    for r in &results {
        let name = match r.daemon {
            cpu::Daemon::Vipd => {
                "vipd (peers at 1 ms, parsed in XDP; node at its defaults, 2 ms heartbeats)"
            }
            cpu::Daemon::Keepalived => "keepalived (VRRPv3, advert_int 0.01)",
            cpu::Daemon::VipdVrrp => "vipd VRRP mode (backup of the same keepalived masters)",
        };
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.2} | {:.0} |",
            r.adverts_per_second, r.cpu_ms_per_s, r.wakeups_per_s
        );
    }
    let _ = writeln!(
        md,
        "\nvipd's wake-ups are its own heartbeat slots (and its shadow senders' checks) and its peers'\ndeadlines: the 8,000 heartbeats/s"
    );
    let _ = writeln!(
        md,
        "it receives are recorded by the XDP program and never reach userspace. keepalived wakes per advert."
    );
    let _ = writeln!(
        md,
        "In VRRP mode a Backup wakes only on a change or when its Master_Down_Timer is due (then it re-arms"
    );
    let _ = writeln!(md, "from the kernel's last-heard time), not per advert.");
    println!("{md}");
    let json = serde_json::json!({ "machine": machine, "results": results });
    let (j, m) = write_results(if quick { "cpu-smoke" } else { "cpu" }, &json, &md)?;
    println!("wrote {} and {}", j.display(), m.display());
    Ok(())
}

/// `cargo xtask bench placement`.
pub fn placement(quick: bool) -> anyhow::Result<()> {
    let machine = Machine::here();
    let (nodes, vips) = if quick {
        ("16", "1000")
    } else {
        ("64", "10000")
    };
    let r = vipd_json(&["placement", "--nodes", nodes, "--vips", vips])?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Placement of {vips} VIPs over {nodes} nodes (best of 20). Machine: {}.\n",
        machine.line()
    );
    let _ = writeln!(
        md,
        "| step | time (ms) | VIPs moved | minimum |\n|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| from nothing | {:.3} | - | - |",
        r["fresh_ms"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        md,
        "| one node leaves | {:.3} | {} | {} |",
        r["leave_ms"].as_f64().unwrap_or(f64::NAN),
        r["moved_on_leave"],
        r["minimum_on_leave"]
    );
    let _ = writeln!(
        md,
        "| it joins again | {:.3} | {} | {} |",
        r["join_ms"].as_f64().unwrap_or(f64::NAN),
        r["moved_on_join"],
        r["minimum_on_join"]
    );
    println!("{md}");
    anyhow::ensure!(
        r["moved_on_leave"] == r["minimum_on_leave"] && r["moved_on_join"] == r["minimum_on_join"],
        "placement moved more VIPs than the minimum"
    );
    let json = serde_json::json!({ "machine": machine, "result": r });
    let (j, m) = write_results(
        if quick {
            "placement-smoke"
        } else {
            "placement"
        },
        &json,
        &md,
    )?;
    println!("wrote {} and {}", j.display(), m.display());
    Ok(())
}

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Writes `bench/results/<date>-<name>.json` and `.md`; returns their paths.
pub fn write_results(
    name: &str,
    json: &serde_json::Value,
    markdown: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let json_path = dir.join(format!("{date}-{name}.json"));
    let md_path = dir.join(format!("{date}-{name}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(json)?)?;
    std::fs::write(&md_path, markdown)?;
    Ok((json_path, md_path))
}

/// Formats a µs figure as ms with 3 decimals.
pub fn ms(us: Option<f64>) -> String {
    us.map_or("-".into(), |u| format!("{:.3}", u / 1e3))
}

/// Draws the outage of every run, per system (log scale), as an SVG at `path`.
pub fn failover_plot(runs: &[failover::Run], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let max_runs = failover::System::ALL
        .iter()
        .map(|s| runs.iter().filter(|r| r.system == *s).count())
        .max()
        .unwrap_or(1)
        .max(1);
    let outages: Vec<f64> = runs
        .iter()
        .map(|r| r.probe.longest_unanswered_us / 1e3)
        .collect();
    // Headroom above the data for the legend.
    let top = outages.iter().copied().fold(1.0, f64::max) * 40.0;
    let bottom = outages.iter().copied().fold(top, f64::min).max(0.01) / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Client-visible outage per failover (ms, log scale)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..max_runs, (bottom..top).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("run")
        .y_desc("outage (ms)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, system) in failover::System::ALL.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(usize, f64)> = runs
            .iter()
            .filter(|r| r.system == *system)
            .enumerate()
            .map(|(n, r)| (n, r.probe.longest_unanswered_us / 1e3))
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(failover::label(runs, *system))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The failover table: one row per system, p50/p90/p99/max outage and the ratio to vipd.
pub fn failover_table(runs: &[failover::Run], machine: &Machine) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Client-visible outage across a hard failure of the VIP's owner (link cut + SIGKILL), in ms:\n\
         the longest run of consecutive unanswered requests of a probe sending 10,000 per second.\n\
         lost = requests never answered; dup = requests answered twice (two owners on the wire)."
    );
    let _ = writeln!(
        t,
        "Machine: {}. Ratios are to vipd (default), measured in the same run.\n",
        machine.line()
    );
    let _ = writeln!(
        t,
        "| system | runs | p50 | p90 | p99 | max | p50 ratio | detection p50 | takeover p50 | lost p50 | dup p50 |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    let stats = |system: failover::System| {
        let mut outages: Vec<f64> = runs
            .iter()
            .filter(|r| r.system == system)
            .map(|r| r.probe.longest_unanswered_us)
            .collect();
        outages.sort_by(f64::total_cmp);
        outages
    };
    let reference = quantile(&stats(failover::System::VipdDefault), 0.5);
    for system in failover::System::ALL {
        let of: Vec<&failover::Run> = runs.iter().filter(|r| r.system == system).collect();
        if of.is_empty() {
            continue;
        }
        let outages = stats(system);
        let sorted = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v
        };
        let det = sorted(of.iter().filter_map(|r| r.detection_us).collect());
        let tko = sorted(of.iter().filter_map(|r| r.takeover_us).collect());
        let lost = sorted(of.iter().map(|r| r.probe.lost as f64).collect());
        let dups = sorted(of.iter().map(|r| r.probe.duplicates as f64).collect());
        let p50 = quantile(&outages, 0.5);
        let ratio = match (p50, reference) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {ratio} | {} | {} | {} | {} |",
            failover::label(runs, system),
            of.len(),
            ms(p50),
            ms(quantile(&outages, 0.9)),
            ms(quantile(&outages, 0.99)),
            ms(outages.last().copied()),
            ms(quantile(&det, 0.5)),
            ms(quantile(&tko, 0.5)),
            quantile(&lost, 0.5).map_or("-".into(), |l| format!("{l:.0}")),
            quantile(&dups, 0.5).map_or("-".into(), |l| format!("{l:.0}")),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
