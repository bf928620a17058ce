//! `scripts/install.sh` stages the binary, the systemd unit and the example configuration.

use std::{path::Path, process::Command};

#[test]
fn install_script_stages_binary_unit_and_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dest = std::env::temp_dir().join(format!("vipd-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let run = || {
        Command::new("bash")
            .arg(root.join("scripts/install.sh"))
            .env("DESTDIR", &dest)
            .env("VIPD_BIN", env!("CARGO_BIN_EXE_vipd"))
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/vipd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/vipd run --config /etc/vipd/vipd.toml"));
    assert!(unit.contains("CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_NET_RAW CAP_PERFMON"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // A private heartbeat key was made for the example configuration.
    use std::os::unix::fs::PermissionsExt as _;
    let key = dest.join("etc/vipd/auth.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key_text = std::fs::read_to_string(&key).unwrap();
    // The staged binary runs and accepts the staged configuration (with the staged key).
    let check = Command::new(dest.join("usr/local/sbin/vipd"))
        .args(["check-config", "--config"])
        .arg(dest.join("etc/vipd/vipd.toml"))
        .arg("--auth-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A second run keeps the (possibly edited) configuration.
    std::fs::write(dest.join("etc/vipd/vipd.toml"), "# edited\n").unwrap();
    assert!(run().status.success());
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/vipd/vipd.toml")).unwrap(),
        "# edited\n"
    );
    assert!(dest.join("etc/vipd/vipd.toml.example").exists());
    // …and the key: a new one would split the cluster.
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_text);
    std::fs::remove_dir_all(&dest).unwrap();
}

/// `cargo xtask dist` packs this build into a `.deb` (unit on /usr/sbin/vipd, the example
/// configuration as a conffile, man pages, completions) and `--check` runs what it unpacks
/// with only the system's directories on PATH (no cargo, no rustc, no bpf-linker).
#[test]
fn the_package_unpacks_and_runs_without_build_tools() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::env::temp_dir().join(format!("vipd-dist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "dist",
            "--check",
        ])
        .arg("--vipd")
        .arg(env!("CARGO_BIN_EXE_vipd"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("checked:"));
}
