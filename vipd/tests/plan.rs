//! `vipd plan` from the command line (no privileges needed).

use std::process::Command;

fn vipd_plan(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .arg("plan")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn table_shows_the_three_on_two_imbalance() {
    let (ok, out, err) = vipd_plan(&["--nodes", "2", "--vips", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("3 VIPs on 2 nodes"), "{out}");
    assert!(
        out.contains("worst case load multiplier: 3.00 (n2 when n1 fails)"),
        "{out}"
    );
}

#[test]
fn json_lists_every_scenario_with_weights() {
    let (ok, out, err) = vipd_plan(&[
        "--node",
        "1:1,2:1,3:2",
        "--vip",
        "192.0.2.201,192.0.2.202,2001:db8::1",
        "-k",
        "2",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["vips"], 3);
    assert_eq!(v["nodes"][2]["weight"], 2);
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 3 + 3);
    let now: u64 = v["now"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(now, 3);
}

#[test]
fn impossible_plans_are_clear_errors() {
    let (ok, _, err) = vipd_plan(&["--nodes", "2", "--vips", "3", "-k", "2"]);
    assert!(!ok);
    assert!(
        err.contains("must be less than the number of nodes"),
        "{err}"
    );
    let (ok, _, err) = vipd_plan(&["--node", "1:0", "--vips", "3"]);
    assert!(!ok);
    assert!(err.contains("weights are whole numbers"), "{err}");
}
