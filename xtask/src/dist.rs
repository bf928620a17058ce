//! `cargo xtask dist`: a Debian package for real nodes, which need no Rust toolchain or
//! bpf-linker (the XDP program is inside the binary): the binary, the systemd unit, the
//! example configuration, man pages and shell completions, staged under `target/dist` and
//! packed by `dpkg-deb`. `--check` unpacks it and runs it from there with no build tool on
//! `PATH`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::{demo::build_vipd, workspace_root};

/// Where the packaged binary runs from, as the unit names it.
const SBIN: &str = "/usr/sbin/vipd";
/// `PATH` for running what was packed: the system's directories, no cargo or rustc.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds (or takes `vipd`), stages and packs the package into `out` (default
/// `target/dist`); with `check`, unpacks and runs it. Returns the `.deb`'s path.
pub fn run(vipd: Option<PathBuf>, out: Option<PathBuf>, check: bool) -> anyhow::Result<PathBuf> {
    let bin = match vipd {
        Some(b) => b,
        None => build_vipd()?,
    };
    let out = out.unwrap_or_else(|| workspace_root().join("target/dist"));
    let version = version_of(&bin)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let name = format!("vipd_{version}_{arch}");
    let stage = out.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    stage_files(&bin, &stage)?;
    write_control(&bin, &stage, &version, &arch)?;
    let deb = out.join(format!("{name}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .status()
        .context("running dpkg-deb (Debian's dpkg)")?;
    ensure!(status.success(), "dpkg-deb failed ({status})");
    println!("{}", deb.display());
    if check {
        check_package(&deb)?;
        println!("checked: it unpacks and runs with PATH={SYSTEM_PATH}");
    }
    Ok(deb)
}

/// The binary's version (`vipd --version` prints `vipd X.Y.Z`).
fn version_of(bin: &Path) -> anyhow::Result<String> {
    let line = output(Command::new(bin).arg("--version"))?;
    line.strip_prefix("vipd ")
        .map(str::to_string)
        .with_context(|| format!("unexpected `vipd --version`: {line:?}"))
}

/// The files, as installed.
fn stage_files(bin: &Path, stage: &Path) -> anyhow::Result<()> {
    let root = workspace_root();
    let put = |rel: &str, bytes: &[u8], mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = stage.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let binary = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    put(&SBIN[1..], &binary, 0o755)?;
    put(
        "lib/systemd/system/vipd.service",
        unit(&root)?.as_bytes(),
        0o644,
    )?;
    let example = std::fs::read(root.join("dist/vipd.toml"))?;
    put("etc/vipd/vipd.toml", &example, 0o644)?;
    put(
        "usr/share/doc/vipd/copyright",
        format!(
            "vipd — virtual IP failover with XDP heartbeats.\nLicense: {}\n",
            env!("CARGO_PKG_LICENSE")
        )
        .as_bytes(),
        0o644,
    )?;
    // Man pages, gzipped as Debian installs them.
    let man = stage.join("usr/share/man/man8");
    let status = Command::new(bin).arg("man").arg(&man).status()?;
    ensure!(status.success(), "`vipd man` failed ({status})");
    for page in std::fs::read_dir(&man)? {
        let status = Command::new("gzip").arg("-9n").arg(page?.path()).status()?;
        ensure!(status.success(), "gzip failed ({status})");
    }
    for (shell, rel) in [
        ("bash", "usr/share/bash-completion/completions/vipd"),
        ("zsh", "usr/share/zsh/vendor-completions/_vipd"),
        ("fish", "usr/share/fish/vendor_completions.d/vipd.fish"),
    ] {
        let script = Command::new(bin).args(["completions", shell]).output()?;
        ensure!(script.status.success(), "`vipd completions {shell}` failed");
        put(rel, &script.stdout, 0o644)?;
    }
    Ok(())
}

/// `dist/vipd.service` with the packaged binary's path (the file names the path
/// `scripts/install.sh` installs to).
fn unit(root: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root.join("dist/vipd.service"))?;
    const SOURCE: &str = "/usr/local/sbin/vipd";
    ensure!(
        text.contains(SOURCE),
        "dist/vipd.service no longer runs {SOURCE}: update xtask/src/dist.rs"
    );
    Ok(text
        .replace(
            "Installed by scripts/install.sh",
            "Installed by the vipd package",
        )
        .replace(SOURCE, SBIN))
}

/// `DEBIAN/`: control, conffiles and the maintainer scripts.
fn write_control(bin: &Path, stage: &Path, version: &str, arch: &str) -> anyhow::Result<()> {
    let glibc = min_glibc(bin)?;
    let size_kib = output(Command::new("du").args(["-sk"]).arg(stage))?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let control = format!(
        "Package: vipd\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: vipd developers <vipd@example.org>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6 (>= {glibc}), libgcc-s1\n\
         Recommends: nftables\n\
         Section: net\n\
         Priority: optional\n\
         Description: virtual IP failover for round-robin DNS, heartbeats parsed in XDP\n \
         Every node holds some of the virtual IPs a DNS name resolves to; when a node\n \
         fails, the others take its VIPs within milliseconds and give them back,\n \
         balanced, when it returns. Also VRRPv2/v3 (keepalived and FRR interoperable).\n"
    );
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(debian.join("control"), control)?;
    std::fs::write(debian.join("conffiles"), "/etc/vipd/vipd.toml\n")?;
    for (name, script) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        use std::os::unix::fs::PermissionsExt as _;
        let path = debian.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The newest glibc symbol version the binary needs (the `libc6` dependency).
fn min_glibc(bin: &Path) -> anyhow::Result<String> {
    let symbols = output(Command::new("objdump").arg("-T").arg(bin))?;
    let mut versions: Vec<Vec<u32>> = symbols
        .split_whitespace()
        .filter_map(|w| w.trim_matches(['(', ')']).strip_prefix("GLIBC_"))
        .filter_map(|v| v.split('.').map(|n| n.parse().ok()).collect())
        .collect();
    versions.sort();
    let newest = versions
        .last()
        .context("no GLIBC_ symbol versions in the binary")?;
    Ok(newest
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// Not enabled or started on install: the example configuration names example VIPs and
/// an interface to be edited first. Not restarted on upgrade either: a restart moves this
/// node's VIPs to its peers and back (until restarts keep them in place).
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if [ ! -e /etc/vipd/auth.key ]; then
        vipd keygen /etc/vipd/auth.key
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
    if [ -n "$2" ]; then
        echo "vipd: upgraded from $2; the running daemon is the old one until 'systemctl restart vipd'"
    else
        echo "vipd: edit /etc/vipd/vipd.toml, check it with 'vipd check-config', then 'systemctl enable --now vipd'"
    fi
fi
"#;

/// A removal stops the daemon gracefully (LEAVING: the peers take its VIPs at once).
const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop vipd || true
    systemctl disable vipd >/dev/null 2>&1 || true
fi
"#;

/// A purge removes the key and the state (the last incarnation).
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -f /etc/vipd/auth.key
    rmdir /etc/vipd 2>/dev/null || true
    rm -rf /var/lib/vipd
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"#;

/// Unpacks `deb` into a temporary directory and runs what it installs there with only the
/// system's directories on `PATH`: the binary, `check-config` on the packed example
/// configuration, the man pages and completions present, the maintainer scripts valid sh.
fn check_package(deb: &Path) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vipd-dist-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = check_unpacked(deb, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn check_unpacked(deb: &Path, dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(dir)
        .status()?;
    ensure!(status.success(), "dpkg-deb -R failed ({status})");
    let vipd = dir.join(&SBIN[1..]);
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(&vipd)
            .args(args)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .output()
    };
    let version = run(&["--version".as_ref()])?;
    ensure!(version.status.success(), "the packed vipd does not run");
    let key = dir.join("auth.key");
    let made = run(&["keygen".as_ref(), key.as_os_str()])?;
    ensure!(made.status.success(), "vipd keygen failed");
    let config = dir.join("etc/vipd/vipd.toml");
    let checked = run(&[
        "check-config".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--auth-key-file".as_ref(),
        key.as_os_str(),
    ])?;
    if !checked.status.success() {
        bail!(
            "check-config of the packed example failed: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let unit = std::fs::read_to_string(dir.join("lib/systemd/system/vipd.service"))?;
    ensure!(
        unit.contains(&format!("ExecStart={SBIN} run")),
        "the unit does not run {SBIN}"
    );
    for rel in [
        "usr/share/man/man8/vipd.8.gz",
        "usr/share/man/man8/vipd-run.8.gz",
        "usr/share/bash-completion/completions/vipd",
        "usr/share/zsh/vendor-completions/_vipd",
        "usr/share/fish/vendor_completions.d/vipd.fish",
    ] {
        ensure!(dir.join(rel).is_file(), "{rel} is missing");
    }
    for script in ["postinst", "prerm", "postrm"] {
        let status = Command::new("sh")
            .arg("-n")
            .arg(dir.join("DEBIAN").join(script))
            .status()?;
        ensure!(status.success(), "DEBIAN/{script} is not valid sh");
    }
    Ok(())
}

/// A command's standard output, trimmed; fails with its standard error.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
