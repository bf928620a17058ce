//! Bad input gets a clear error and a non-zero exit: never a panic, never a hang.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use vipd_lab::lab::{Lab, require_root};

const VIPD: &str = env!("CARGO_BIN_EXE_vipd");

fn assert_clean_failure(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn vipd(args: &[&str]) -> Output {
    Command::new(VIPD)
        .args(args)
        .output()
        .expect("running vipd")
}

#[test]
fn malformed_cli_values_are_usage_errors() {
    let base = ["run", "-i", "eth0", "--vip", "192.0.2.1"];
    let with = |extra: &[&str]| vipd(&[&base[..], extra].concat());
    assert_clean_failure(&with(&["-n", "0"]), 2, "--node-id");
    assert_clean_failure(&with(&["-n", "1", "--interval", "fast"]), 2, "--interval");
    assert_clean_failure(
        &with(&["-n", "1", "--vip", "300.1.1.1"]),
        2,
        "not an IPv4 or IPv6",
    );
    // The VIPs may come from the configuration file, so their absence is a configuration
    // error rather than a usage error.
    assert_clean_failure(
        &vipd(&["run", "--config", "/dev/null", "-i", "eth0", "-n", "1"]),
        1,
        "no VIPs: set [pool] vips or --vip",
    );
    assert_clean_failure(
        &vipd(&["run", "--config", "/nonexistent/vipd.toml"]),
        1,
        "/nonexistent/vipd.toml",
    );
    assert_clean_failure(
        &with(&["-n", "1", "--interval", "100ms", "--dead-interval", "100ms"]),
        1,
        "must be longer than the heartbeat interval",
    );
    // A pool without a key, unless it says it runs without one.
    assert_clean_failure(&with(&["-n", "1"]), 1, "vipd keygen /etc/vipd/auth.key");
    assert_clean_failure(
        &with(&["-n", "1", "--insecure", "--auth-key-file", "/k"]),
        2,
        "--insecure",
    );
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn runtime_errors_are_clear() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("ve")?;
    let host = lab.add_host("h", "192.0.2.11/24", "02:00:00:00:00:0b")?;
    let instance = format!("{}-h", lab.prefix());
    let run = |lab: &mut Lab, name: &str, args: &[&str]| -> anyhow::Result<String> {
        let mut full = vec!["run", "-n", "1", "--instance", &instance, "--insecure"];
        full.extend_from_slice(args);
        let p = lab.spawn(&host, name, Path::new(VIPD), &full)?;
        assert!(
            !lab.proc(p).wait_exit(Duration::from_secs(10))?,
            "must fail"
        );
        Ok(lab.proc(p).output())
    };

    let out = run(
        &mut lab,
        "nosuch",
        &["-i", "nosuch0", "--vip", "192.0.2.201"],
    )?;
    assert!(out.contains("no interface named \"nosuch0\""), "{out}");
    // A start that failed leaves no control socket behind.
    let socket = Path::new("/run/vipd").join(format!("{instance}.sock"));
    assert!(!socket.exists(), "{} left behind", socket.display());

    // A VIP that is somebody's real address (other prefix) is refused, not removed.
    lab.ip(
        &host.netns,
        &["addr", "add", "192.0.2.201/24", "dev", "eth0"],
    )?;
    let out = run(
        &mut lab,
        "conflict",
        &["-i", "eth0", "--vip", "192.0.2.201"],
    )?;
    assert!(
        out.contains("192.0.2.201/24 is already configured on eth0"),
        "{out}"
    );
    assert!(
        lab.has_address(&host, "192.0.2.201")?,
        "the real address is left alone"
    );

    // Without privileges (as nobody, with no capabilities).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .args([
            VIPD,
            "run",
            "-i",
            "lo",
            "-n",
            "1",
            "--vip",
            "192.0.2.201",
            "--insecure",
        ])
        .output()?;
    assert_clean_failure(
        &out,
        1,
        "missing privileges: CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF",
    );
    Ok(())
}

/// A second vipd on an interface (another instance name, pool or VRRP mode) refuses to
/// start before it touches anything: the running daemon keeps its VIPs and its control
/// socket.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_second_daemon_on_an_interface_changes_nothing() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("vt")?;
    let host = lab.add_host("h", "192.0.2.11/24", "02:00:00:00:00:0b")?;
    let vips = ["192.0.2.201", "192.0.2.202"];
    let mut args = vec!["--interval", "20ms", "--hold-down", "200ms"];
    for v in vips {
        args.extend(["--vip", v]);
    }
    let first = lab.spawn_vipd(&host, 1, "first", Path::new(VIPD), &args)?;
    lab.proc(first)
        .wait_for_line(&["vipd started"], Duration::from_secs(20))?;
    vipd_lab::lab::wait_until("both VIPs held", Duration::from_secs(20), || {
        Ok(lab.has_address(&host, vips[0])? && lab.has_address(&host, vips[1])?)
    })?;

    let other = format!("{}-other", lab.prefix());
    for (name, mode) in [
        ("second-pool", vec!["--vip", vips[0], "--vip", vips[1]]),
        (
            "second-vrrp",
            vec!["--vrrp", "51,priority=100,vip=192.0.2.201/32"],
        ),
    ] {
        let mut full = vec![
            "run",
            "-i",
            "eth0",
            "-n",
            "2",
            "--instance",
            &other,
            "--insecure",
        ];
        full.extend(mode);
        let p = lab.spawn(&host, name, Path::new(VIPD), &full)?;
        assert!(
            !lab.proc(p).wait_exit(Duration::from_secs(10))?,
            "{name} must fail"
        );
        let out = lab.proc(p).output();
        assert!(out.contains("another vipd runs on eth0"), "{out}");
        assert!(!out.contains("removed a VIP"), "{out}");
        for v in vips {
            assert!(lab.has_address(&host, v)?, "{name} removed {v}:\n{out}");
        }
    }
    assert!(
        lab.proc(first).child.try_wait()?.is_none(),
        "the first still runs"
    );
    let status = Command::new(VIPD)
        .args([
            "status",
            "--json",
            "--instance",
            &format!("{}-h", lab.prefix()),
        ])
        .output()?;
    assert!(
        status.status.success(),
        "the first's control socket answers"
    );
    Ok(())
}
