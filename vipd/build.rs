//! Builds the XDP program (vipd-ebpf) for the BPF target with aya-build, so a plain
//! `cargo build` produces a daemon with the program embedded.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("vipd has no parent directory"))?
        .join("vipd-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    let package = Package {
        name: "vipd-ebpf",
        root_dir: root,
        ..Package::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
