//! Notification hooks (keepalived's `notify`, made simple): a program run on every VIP
//! acquired/released/conflict and node state change, with the details in `VIPD_*` environment
//! variables. Hooks never delay a takeover: events queue to a dispatcher task that runs at
//! most [`MAX_RUNNING`] hooks at once, the events of one VIP (or of the node, or of one
//! VRRP group) one after the other in the order they happened, each in its own process
//! group killed whole after the timeout. A stop waits, bounded, for the last ones.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use tracing::{debug, warn};

/// Hooks running at once; more wait their turn (10,000 VIPs moving make a queue, not
/// 10,000 processes).
pub const MAX_RUNNING: usize = 8;

/// What the hooks run and with what: replaced by a reload for the events after it.
#[derive(Debug)]
struct Settings {
    command: Option<Vec<String>>,
    timeout: Duration,
    env: Vec<(&'static str, String)>,
}

/// One event for a hook.
#[derive(Debug)]
struct Event {
    name: &'static str,
    vip: Option<IpAddr>,
    state: Option<String>,
    vrid: Option<u8>,
    /// The claimer's MAC (`vip_conflict`).
    mac: Option<String>,
    settings: Arc<Settings>,
}

/// Events that must stay in order share a key: a VIP's, the node's, a VRRP group's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Vip(IpAddr),
    Node,
    Vrrp(u8),
}

impl Event {
    fn key(&self) -> Key {
        match (self.vip, self.vrid) {
            (Some(vip), _) => Key::Vip(vip),
            (None, Some(vrid)) => Key::Vrrp(vrid),
            (None, None) => Key::Node,
        }
    }
}

enum Message {
    Event(Event),
    /// Run what is queued, wait for everything, then answer.
    Finish(oneshot::Sender<()>),
}

/// Fires hook commands (cheap to clone: every clone feeds the same dispatcher).
#[derive(Clone, Debug)]
pub struct Hooks {
    settings: Arc<Settings>,
    queue: Option<mpsc::UnboundedSender<Message>>,
}

impl Hooks {
    /// Hooks running `command` (none: off), each killed after `timeout`; spawns the
    /// dispatcher on the current tokio runtime when there is a command.
    pub fn new(
        command: Option<Vec<String>>,
        timeout: Duration,
        node_id: u32,
        instance: &str,
        interface: &str,
    ) -> Self {
        let settings = Arc::new(Settings {
            command,
            timeout,
            env: vec![
                ("VIPD_NODE_ID", node_id.to_string()),
                ("VIPD_INSTANCE", instance.to_string()),
                ("VIPD_INTERFACE", interface.to_string()),
            ],
        });
        let queue = settings.command.is_some().then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(rx));
            tx
        });
        Self { settings, queue }
    }

    /// The same dispatcher with `new`'s settings for the events from now on (a reload):
    /// events of one VIP stay in order across it.
    pub fn reconfigured(&self, new: Hooks) -> Hooks {
        match (&self.queue, new.settings.command.is_some()) {
            (Some(queue), true) => Hooks {
                settings: new.settings,
                queue: Some(queue.clone()),
            },
            _ => new,
        }
    }

    /// The same dispatcher, with `VIPD_INTERFACE` set to `interface` (a VRRP group's own,
    /// where it differs from the node's).
    pub fn on_interface(&self, interface: &str) -> Hooks {
        let mut settings = Settings {
            command: self.settings.command.clone(),
            timeout: self.settings.timeout,
            env: self.settings.env.clone(),
        };
        for (name, value) in &mut settings.env {
            if *name == "VIPD_INTERFACE" {
                *value = interface.to_string();
            }
        }
        Hooks {
            settings: Arc::new(settings),
            queue: self.queue.clone(),
        }
    }

    /// Reports that this node acquired a VIP.
    pub fn vip_acquired(&self, vip: IpAddr) {
        self.fire("vip_acquired", Some(vip), None, None, None);
    }

    /// Reports that this node released a VIP.
    pub fn vip_released(&self, vip: IpAddr) {
        self.fire("vip_released", Some(vip), None, None, None);
    }

    /// Reports that another host (its MAC in `VIPD_MAC`) claims a VIP this node holds.
    pub fn vip_conflict(&self, vip: IpAddr, mac: &str) {
        self.fire("vip_conflict", Some(vip), None, None, Some(mac));
    }

    /// Reports this node's new state (`active`, `holding-down`, `withdrawn`, `fault`,
    /// `stopping`).
    pub fn node_state(&self, state: &str) {
        self.fire("node_state", None, Some(state), None, None);
    }

    /// Reports a VRRP group's new state (`initialize`, `backup`, `master`), with its VRID
    /// in `VIPD_VRID`.
    pub fn vrrp_state(&self, vrid: u8, state: &str) {
        self.fire("vrrp_state", None, Some(state), Some(vrid), None);
    }

    /// Waits until every event reported so far has had its hook run, at most `limit`
    /// (then the rest are abandoned and the running ones killed): the last
    /// `vip_released` hooks of a stop still run.
    pub async fn finish(&self, limit: Duration) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if queue.send(Message::Finish(tx)).is_ok() && tokio::time::timeout(limit, rx).await.is_err()
        {
            warn!(?limit, "hooks still running at exit: killed");
        }
    }

    fn fire(
        &self,
        name: &'static str,
        vip: Option<IpAddr>,
        state: Option<&str>,
        vrid: Option<u8>,
        mac: Option<&str>,
    ) {
        if let Some(queue) = &self.queue {
            let _ = queue.send(Message::Event(Event {
                name,
                vip,
                state: state.map(str::to_string),
                vrid,
                mac: mac.map(str::to_string),
                settings: Arc::clone(&self.settings),
            }));
        }
    }
}

/// The events of one key: queued, and whether one is running or the key is in line.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Event>,
    busy: bool,
    in_line: bool,
}

/// Runs queued events: at most [`MAX_RUNNING`] at once, one at a time per key, in order.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut lanes: BTreeMap<Key, Lane> = BTreeMap::new();
    // Keys with a queued event and none running, in the order they got one.
    let mut line: VecDeque<Key> = VecDeque::new();
    let mut running: JoinSet<Key> = JoinSet::new();
    let mut finishing: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    loop {
        while running.len() < MAX_RUNNING
            && let Some(key) = line.pop_front()
        {
            let lane = lanes.entry(key).or_default();
            lane.in_line = false;
            if let Some(event) = lane.queue.pop_front() {
                lane.busy = true;
                running.spawn(async move {
                    run(event).await;
                    key
                });
            }
        }
        if running.is_empty() && line.is_empty() {
            for done in finishing.drain(..) {
                let _ = done.send(());
            }
            if !open {
                return;
            }
        }
        tokio::select! {
            message = rx.recv(), if open => match message {
                Some(Message::Event(event)) => {
                    let key = event.key();
                    let lane = lanes.entry(key).or_default();
                    lane.queue.push_back(event);
                    if !lane.busy && !lane.in_line {
                        lane.in_line = true;
                        line.push_back(key);
                    }
                }
                Some(Message::Finish(done)) => finishing.push(done),
                None => open = false,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                // (A hook task cannot panic; its lane would stay busy if it did.)
                let Ok(key) = done else { continue };
                let lane = lanes.entry(key).or_default();
                lane.busy = false;
                if lane.queue.is_empty() {
                    lanes.remove(&key);
                } else {
                    lane.in_line = true;
                    line.push_back(key);
                }
            }
        }
    }
}

/// Runs one hook in its own process group; after the timeout the whole group is killed
/// (a hook's own children included).
async fn run(event: Event) {
    let Some(argv) = event.settings.command.as_ref() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(event.settings.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("VIPD_EVENT", event.name)
        .env(
            "VIPD_VIP",
            event.vip.map(|v| v.to_string()).unwrap_or_default(),
        )
        .env("VIPD_STATE", event.state.as_deref().unwrap_or_default())
        .env(
            "VIPD_VRID",
            event.vrid.map(|v| v.to_string()).unwrap_or_default(),
        )
        .env("VIPD_MAC", event.mac.as_deref().unwrap_or_default())
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let (name, timeout) = (event.name, event.settings.timeout);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return warn!(event = name, program = %argv[0], "hook did not start: {e}"),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => debug!(event = name, "hook done"),
        Ok(Ok(status)) => warn!(event = name, program = %argv[0], %status, "hook failed"),
        Ok(Err(e)) => warn!(event = name, program = %argv[0], "waiting for hook: {e}"),
        Err(_) => {
            warn!(event = name, program = %argv[0], ?timeout, "hook timed out: its process group killed");
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on the process group this child leads.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(dir: &std::path::Path, script: &str, timeout: Duration) -> Hooks {
        let command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let _ = std::fs::create_dir_all(dir);
        Hooks::new(Some(command), timeout, 1, "test", "eth0")
    }

    fn temp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vipd-hooks-{tag}-{}", std::process::id()))
    }

    #[tokio::test]
    async fn events_of_a_vip_run_in_order_and_never_too_many_at_once() {
        let dir = temp("order");
        let log = dir.join("log");
        // Each hook logs its start and end; some take a while.
        let script = format!(
            "echo \"start $VIPD_EVENT $VIPD_VIP\" >> {log}; sleep 0.0$(($$ % 3)); \
             echo \"end $VIPD_EVENT $VIPD_VIP\" >> {log}",
            log = log.display()
        );
        let h = hooks(&dir, &script, Duration::from_secs(10));
        let vips: Vec<IpAddr> = (1..=20u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        for round in 0..3 {
            for vip in &vips {
                if round % 2 == 0 {
                    h.vip_acquired(*vip);
                } else {
                    h.vip_released(*vip);
                }
            }
        }
        h.finish(Duration::from_secs(60)).await;
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 * 3 * vips.len(), "every hook ran to its end");
        let (mut now, mut most) = (0i32, 0i32);
        for l in &lines {
            now += if l.starts_with("start") { 1 } else { -1 };
            most = most.max(now);
        }
        assert!(most as usize <= MAX_RUNNING, "{most} at once");
        for vip in &vips {
            let own: Vec<&str> = lines
                .iter()
                .filter(|l| l.ends_with(&format!(" {vip}")))
                .copied()
                .collect();
            let expected: Vec<String> = ["vip_acquired", "vip_released", "vip_acquired"]
                .iter()
                .flat_map(|e| [format!("start {e} {vip}"), format!("end {e} {vip}")])
                .collect();
            assert_eq!(own, expected, "{vip}'s events out of order");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_groups_events_name_its_interface() {
        let dir = temp("interface");
        let log = dir.join("log");
        let script = format!(
            "echo \"$VIPD_EVENT $VIPD_VRID $VIPD_INTERFACE\" >> {}",
            log.display()
        );
        let h = hooks(&dir, &script, Duration::from_secs(10));
        h.on_interface("eth1").vrrp_state(52, "master");
        h.node_state("active");
        h.finish(Duration::from_secs(10)).await;
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        assert_eq!(lines, ["node_state  eth0", "vrrp_state 52 eth1"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_hook_that_times_out_is_killed_with_its_children() {
        let dir = temp("kill");
        let pid_file = dir.join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let h = hooks(&dir, &script, Duration::from_millis(300));
        h.node_state("stopping");
        h.finish(Duration::from_secs(10)).await;
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The orphaned sleep was in the hook's process group: killed too (SIGKILL lands
        // asynchronously; a zombie at most until it is reaped). Bounded wait.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
        };
        let mut tries = 0;
        while alive() && tries < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tries += 1;
        }
        assert!(!alive(), "the hook's child {pid} survived");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
