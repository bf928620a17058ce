//! Notification hooks (keepalived's `notify`, made simple): a program run on every VIP
//! acquired/released and node state change, with the details in `VIPD_*` environment
//! variables. Hooks run in the background with a timeout: a slow or failing hook never
//! delays a takeover.

use std::{net::IpAddr, process::Stdio, time::Duration};

use tracing::{debug, warn};

/// Fires hook commands.
#[derive(Clone, Debug)]
pub struct Hooks {
    command: Option<Vec<String>>,
    timeout: Duration,
    env: Vec<(&'static str, String)>,
}

impl Hooks {
    /// Hooks running `command` (none: off), killed after `timeout`.
    pub fn new(
        command: Option<Vec<String>>,
        timeout: Duration,
        node_id: u32,
        instance: &str,
        interface: &str,
    ) -> Self {
        let env = vec![
            ("VIPD_NODE_ID", node_id.to_string()),
            ("VIPD_INSTANCE", instance.to_string()),
            ("VIPD_INTERFACE", interface.to_string()),
        ];
        Self {
            command,
            timeout,
            env,
        }
    }

    /// Reports that this node acquired a VIP.
    pub fn vip_acquired(&self, vip: IpAddr) {
        self.fire("vip_acquired", Some(vip), None);
    }

    /// Reports that this node released a VIP.
    pub fn vip_released(&self, vip: IpAddr) {
        self.fire("vip_released", Some(vip), None);
    }

    /// Reports this node's new state (`active`, `holding-down`, `withdrawn`, `fault`,
    /// `stopping`).
    pub fn node_state(&self, state: &str) {
        self.fire("node_state", None, Some(state));
    }

    /// Reports a VRRP group's new state (`initialize`, `backup`, `master`), with its VRID
    /// in `VIPD_VRID`.
    pub fn vrrp_state(&self, vrid: u8, state: &str) {
        self.fire_with("vrrp_state", None, Some(state), Some(vrid));
    }

    fn fire(&self, event: &'static str, vip: Option<IpAddr>, state: Option<&str>) {
        self.fire_with(event, vip, state, None);
    }

    fn fire_with(
        &self,
        event: &'static str,
        vip: Option<IpAddr>,
        state: Option<&str>,
        vrid: Option<u8>,
    ) {
        let Some(argv) = self.command.clone() else {
            return;
        };
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("VIPD_EVENT", event)
            .env("VIPD_VIP", vip.map(|v| v.to_string()).unwrap_or_default())
            .env("VIPD_STATE", state.unwrap_or_default())
            .env("VIPD_VRID", vrid.map(|v| v.to_string()).unwrap_or_default())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let timeout = self.timeout;
        tokio::spawn(async move {
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => return warn!(event, program = %argv[0], "hook did not start: {e}"),
            };
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => debug!(event, "hook done"),
                Ok(Ok(status)) => warn!(event, program = %argv[0], %status, "hook failed"),
                Ok(Err(e)) => warn!(event, program = %argv[0], "waiting for hook: {e}"),
                Err(_) => {
                    warn!(event, program = %argv[0], ?timeout, "hook timed out: killed");
                    let _ = child.kill().await;
                }
            }
        });
    }
}
