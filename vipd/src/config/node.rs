//! This node: who it is, where it runs, where it keeps state and pins, how its XDP program
//! is attached and its fast path scheduled (`[node]`, `[xdp]`, `[fastpath]`), checked.

use std::path::PathBuf;

use super::file::{AttachMode, FastPathSection, File, XdpSection};

/// The fast path's SCHED_FIFO priority unless configured (below threaded interrupt
/// handlers, which default to 50, so the NIC is still served first).
pub const DEFAULT_RT_PRIORITY: u8 = 40;
/// Where a node keeps state across restarts unless configured (`[node] state_dir`; the
/// systemd unit's StateDirectory).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vipd";

/// This node, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Node id, 1 or more.
    pub id: u32,
    /// The cluster interface (the pool's, and VRRP groups' unless they name another).
    pub interface: String,
    /// Instance name (pins, control socket, state files).
    pub instance: String,
    /// State kept across restarts.
    pub state_dir: PathBuf,
    /// Where maps are pinned: `<pin_root>/<instance>`.
    pub pin_root: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// SCHED_FIFO priority of the fast paths (0: normal scheduling).
    pub rt_priority: u8,
    /// Shadow heartbeat senders on the other CPUs.
    pub shadow_senders: bool,
}

impl Node {
    /// Checks `[node]` (but its weight, the pool's), `[xdp]` and `[fastpath]`, and fills in
    /// defaults.
    pub fn check(f: &File) -> Result<Self, String> {
        let id = f.node.id.ok_or("no node id: set [node] id or --node-id")?;
        if id == 0 {
            return Err("the node id must be 1 or more".into());
        }
        let interface = f
            .node
            .interface
            .clone()
            .ok_or("no interface: set [node] interface or --interface")?;
        let rt_priority = f.fastpath.rt_priority.unwrap_or(DEFAULT_RT_PRIORITY);
        if rt_priority > 99 {
            return Err(format!(
                "fastpath.rt_priority must be 0 (normal scheduling) to 99 (it is {rt_priority})"
            ));
        }
        let instance = f
            .node
            .instance
            .clone()
            .unwrap_or_else(|| format!("{interface}-{id}"));
        if instance.is_empty() || instance.contains('/') || instance.starts_with('.') {
            return Err(format!("instance {instance:?} must be a plain file name"));
        }
        Ok(Node {
            id,
            interface,
            instance,
            state_dir: f
                .node
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            pin_root: f
                .xdp
                .pin_root
                .clone()
                .unwrap_or_else(|| vipd_common::maps::DEFAULT_PIN_ROOT.into()),
            xdp_mode: f.xdp.mode.unwrap_or(AttachMode::Auto),
            rt_priority,
            shadow_senders: f.fastpath.shadow_senders.unwrap_or(true),
        })
    }

    /// Writes the node's keys, every one filled in, into `f`.
    pub fn write(&self, f: &mut File) {
        f.node.id = Some(self.id);
        f.node.interface = Some(self.interface.clone());
        f.node.instance = Some(self.instance.clone());
        f.node.state_dir = Some(self.state_dir.clone());
        f.xdp = XdpSection {
            mode: Some(self.xdp_mode),
            pin_root: Some(self.pin_root.clone()),
        };
        f.fastpath = FastPathSection {
            rt_priority: Some(self.rt_priority),
            shadow_senders: Some(self.shadow_senders),
        };
    }

    /// What a reload to `new` cannot change without a restart, if anything.
    pub fn needs_restart(&self, new: &Node) -> Option<&'static str> {
        if self.interface != new.interface {
            Some("the interface")
        } else if self.id != new.id {
            Some("the node id")
        } else if self.instance != new.instance || self.pin_root != new.pin_root {
            Some("the instance or pin root")
        } else if self.xdp_mode != new.xdp_mode {
            Some("the XDP mode")
        } else if self.rt_priority != new.rt_priority || self.shadow_senders != new.shadow_senders {
            Some("the fast path's rt_priority or shadow_senders")
        } else {
            None
        }
    }

    /// How the fast paths' threads are scheduled.
    pub fn fast_path_priority(&self) -> crate::fastpath::Priority {
        match self.rt_priority {
            0 => crate::fastpath::Priority::Normal,
            p => crate::fastpath::Priority::RealTime(p),
        }
    }

    /// Where the last incarnation of this instance is kept.
    pub fn incarnation_file(&self) -> PathBuf {
        self.state_dir
            .join(format!("{}.incarnation", self.instance))
    }

    /// The mark of a drained node ([`crate::drain`]).
    pub fn drain_file(&self) -> PathBuf {
        self.state_dir.join(format!("{}.drained", self.instance))
    }

    /// Where VRRP groups save the original values of the ARP sysctls they change.
    pub fn sysctl_file(&self) -> PathBuf {
        self.state_dir.join(format!("{}.sysctl", self.instance))
    }

    /// Per-instance pin directory.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.instance)
    }
}
