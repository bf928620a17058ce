//! Notification hooks (keepalived's `notify`, made simple): a program run on every VIP
//! acquired/released/conflict and node state change, with the details in `VIPD_*` environment
//! variables. Hooks never delay a takeover: events queue to a dispatcher task that runs at
//! most [`MAX_RUNNING`] hooks at once, the events of one VIP (or of the node, or of one
//! VRRP group) one after the other in the order they happened, each in its own process
//! group killed whole after the timeout. A stop waits, bounded, for the last ones.
//!
//! Nothing here grows with what packets cause: at most two events wait per key besides
//! the one running (one taken by the dispatcher, one in its inbox; a newer event replaces
//! the one in the inbox — a hook learns the latest state, not every flap), and every event
//! replaced is counted (`vipd_hook_events_coalesced_total`).

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
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

/// Events that must stay in order share a key: a VIP's, the node's, a VRRP group's; a
/// VIP's conflicts have their own (a conflict never replaces an acquire or release).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Vip(IpAddr),
    Conflict(IpAddr),
    Node,
    Vrrp(u8),
}

impl Event {
    fn key(&self) -> Key {
        match (self.vip, self.vrid) {
            (Some(vip), _) if self.mac.is_some() => Key::Conflict(vip),
            (Some(vip), _) => Key::Vip(vip),
            (None, Some(vrid)) => Key::Vrrp(vrid),
            (None, None) => Key::Node,
        }
    }
}

enum Message {
    /// Events wait in the inbox.
    Wake,
    /// Run what is queued, wait for everything, then answer.
    Finish(oneshot::Sender<()>),
}

/// The way to the dispatcher: the events it has not taken yet, at most one per key (a
/// newer one replaces it), and a channel that wakes it or asks it to finish.
#[derive(Clone, Debug)]
struct Queue {
    inbox: Arc<Mutex<BTreeMap<Key, Event>>>,
    wake: mpsc::Sender<Message>,
}

/// Fires hook commands (cheap to clone: every clone feeds the same dispatcher).
#[derive(Clone, Debug)]
pub struct Hooks {
    settings: Arc<Settings>,
    queue: Option<Queue>,
    /// Events replaced by a newer one of their key before they ran.
    coalesced: Counter,
}

impl Hooks {
    /// Hooks running `command` (none: off), each killed after `timeout`, counting the
    /// events they coalesce in `coalesced`; spawns the dispatcher on the current tokio
    /// runtime when there is a command.
    pub fn new(
        command: Option<Vec<String>>,
        timeout: Duration,
        (node_id, instance, interface): (u32, &str, &str),
        coalesced: Counter,
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
            let (wake, rx) = mpsc::channel(1);
            let queue = Queue {
                inbox: Arc::default(),
                wake,
            };
            tokio::spawn(dispatch(queue.inbox.clone(), rx, coalesced.clone()));
            queue
        });
        Self {
            settings,
            queue,
            coalesced,
        }
    }

    /// The same dispatcher with `new`'s settings for the events from now on (a reload):
    /// events of one VIP stay in order across it.
    pub fn reconfigured(&self, new: Hooks) -> Hooks {
        match (&self.queue, new.settings.command.is_some()) {
            (Some(queue), true) => Hooks {
                settings: new.settings,
                queue: Some(queue.clone()),
                coalesced: self.coalesced.clone(),
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
            coalesced: self.coalesced.clone(),
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
        let sent = tokio::time::timeout(limit, queue.wake.send(Message::Finish(tx))).await;
        if matches!(sent, Ok(Ok(()))) && tokio::time::timeout(limit, rx).await.is_err() {
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
            let event = Event {
                name,
                vip,
                state: state.map(str::to_string),
                vrid,
                mac: mac.map(str::to_string),
                settings: Arc::clone(&self.settings),
            };
            let key = event.key();
            let replaced = queue
                .inbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, event);
            if replaced.is_some() {
                self.coalesced.inc();
            }
            // Full: a wake-up is on its way already.
            let _ = queue.wake.try_send(Message::Wake);
        }
    }
}

/// The events of one key: the one waiting (a newer one replaces it), and whether one is
/// running or the key is in line.
#[derive(Default)]
struct Lane {
    waiting: Option<Event>,
    busy: bool,
    in_line: bool,
}

/// Runs queued events: at most [`MAX_RUNNING`] at once, one at a time per key, in order,
/// at most one waiting per key (counting those replaced in `coalesced`).
async fn dispatch(
    inbox: Arc<Mutex<BTreeMap<Key, Event>>>,
    mut rx: mpsc::Receiver<Message>,
    coalesced: Counter,
) {
    let take = || std::mem::take(&mut *inbox.lock().unwrap_or_else(|e| e.into_inner()));
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
            if let Some(event) = lane.waiting.take() {
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
            message = rx.recv(), if open => {
                let events = take();
                for (key, event) in events {
                    let lane = lanes.entry(key).or_default();
                    if lane.waiting.replace(event).is_some() {
                        coalesced.inc();
                    }
                    if !lane.busy && !lane.in_line {
                        lane.in_line = true;
                        line.push_back(key);
                    }
                }
                match message {
                    Some(Message::Wake) => {}
                    Some(Message::Finish(done)) => finishing.push(done),
                    None => open = false,
                }
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                // (A hook task cannot panic; its lane would stay busy if it did.)
                let Ok(key) = done else { continue };
                let lane = lanes.entry(key).or_default();
                lane.busy = false;
                if lane.waiting.is_none() {
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
        Hooks::new(
            Some(command),
            timeout,
            (1, "test", "eth0"),
            Counter::default(),
        )
    }

    fn temp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vipd-hooks-{tag}-{}", std::process::id()))
    }

    #[tokio::test]
    async fn events_of_a_vip_run_in_order_latest_last_and_never_too_many_at_once() {
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
        let rounds = ["vip_acquired", "vip_released", "vip_acquired"];
        for round in 0..rounds.len() {
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
        let (mut now, mut most) = (0i32, 0i32);
        for l in &lines {
            now += if l.starts_with("start") { 1 } else { -1 };
            most = most.max(now);
        }
        assert_eq!(now, 0, "every hook ran to its end");
        assert!(most as usize <= MAX_RUNNING, "{most} at once");
        let mut ran = 0;
        for vip in &vips {
            let starts: Vec<&str> = lines
                .iter()
                .filter(|l| l.ends_with(&format!(" {vip}")) && l.starts_with("start"))
                .map(|l| l.split(' ').nth(1).unwrap())
                .collect();
            ran += starts.len();
            // In order (a subsequence of what happened), and the latest always runs.
            let mut rest = rounds.iter();
            assert!(
                starts.iter().all(|e| rest.any(|r| r == e)),
                "{vip}: {starts:?}"
            );
            assert_eq!(starts.last(), Some(&"vip_acquired"), "{vip}: {starts:?}");
        }
        assert_eq!(
            ran as u64 + h.coalesced.get(),
            (rounds.len() * vips.len()) as u64
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_flood_of_conflicts_runs_two_hooks_and_counts_the_rest() {
        let dir = temp("flood");
        let log = dir.join("log");
        let script = format!("echo \"$VIPD_EVENT $VIPD_MAC\" >> {}", log.display());
        let h = hooks(&dir, &script, Duration::from_secs(10));
        let vip = IpAddr::from([192, 0, 2, 1]);
        for i in 0..20_000u32 {
            h.vip_conflict(
                vip,
                &format!("02:00:00:00:{:02x}:{:02x}", i >> 8 & 0xff, i & 0xff),
            );
            if i % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        h.vip_released(vip);
        h.finish(Duration::from_secs(30)).await;
        let text = std::fs::read_to_string(&log).unwrap();
        let conflicts = text
            .lines()
            .filter(|l| l.starts_with("vip_conflict"))
            .count();
        assert!(
            conflicts <= 1 + 20_000 / 1000 + 1,
            "{conflicts} conflict hooks ran"
        );
        assert!(
            text.contains("vip_released"),
            "a conflict replaced the release"
        );
        assert_eq!(conflicts as u64 + h.coalesced.get(), 20_000);
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
