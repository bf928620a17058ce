//! `cargo xtask <task>`: developer tasks for vipd.
//!
//! - `build-ebpf`: builds the XDP object on its own and prints its path.
//! - `demo`: a two-node cluster and a client in network namespaces; shows a takeover.

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => {
            let object = build_ebpf()?;
            println!("{}", object.display());
            Ok(())
        }
        Task::Demo => demo::run(),
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
