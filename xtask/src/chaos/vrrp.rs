//! VRRP mode under chaos: vipd (priority 200) and keepalived (priority 100) as the two
//! routers of one VRRPv3 group (100 ms adverts, one VIP), a client and an intruder. The
//! steady state: vipd is Master, the VIP on it alone, the client reaching it at vipd's MAC,
//! both daemons running. Faults hit vipd (hard kill, graceful stop, freeze, link flaps,
//! loss, the VIP removed from outside), keepalived (hard kill and restart) and the segment
//! (the intruder claiming the VIP).

use std::{path::PathBuf, time::Duration};

use serde::Serialize;
use vipd_lab::lab::{Host, Lab};

use super::{CONVERGE, Cluster, Rng, claim, converge, flap, lossy, tail};

const VRID: u8 = 51;
const VIP: &str = "192.0.2.200";
const VIP_CIDR: &str = "192.0.2.200/24";

/// The faults injected, one per cycle, drawn at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// vipd's link cut and SIGKILL; keepalived takes over; the link back, vipd restarted.
    VipdKill,
    /// vipd stopped (priority 0: keepalived takes over at once), then restarted.
    VipdStop,
    /// vipd SIGSTOPped until keepalived has taken over, then SIGCONT.
    VipdFreeze,
    /// keepalived (the Backup) SIGKILLed and restarted.
    KeepalivedKill,
    /// vipd's link down and up three times in a row.
    LinkFlap,
    /// 10 % loss and 2±1 ms jitter on vipd's link for a second (tc netem).
    LossyLink,
    /// The VIP removed from vipd's interface from outside.
    VipRemoved,
    /// The intruder announces the VIP as its own (gratuitous ARPs from a new MAC).
    ForeignClaim,
}

const FAULTS: [Fault; 8] = [
    Fault::VipdKill,
    Fault::VipdStop,
    Fault::VipdFreeze,
    Fault::KeepalivedKill,
    Fault::LinkFlap,
    Fault::LossyLink,
    Fault::VipRemoved,
    Fault::ForeignClaim,
];

/// The routers under test.
pub struct Routers {
    lab: Lab,
    vipd: PathBuf,
    /// vipd's host.
    v: Host,
    /// keepalived's host.
    k: Host,
    client: Host,
    intruder: Host,
    vipd_proc: usize,
    keepalived_proc: usize,
    /// Daemons (re)started, for log names.
    starts: usize,
    /// Claims made, for a new MAC each.
    claims: u32,
}

impl Routers {
    /// Builds the lab and starts both routers; returns once vipd is Master.
    pub fn start() -> anyhow::Result<Self> {
        let vipd = crate::demo::build_vipd()?;
        let mut lab = Lab::new("chaosvrrp")?;
        let k = lab.add_host("k", "192.0.2.11/24", "02:00:00:00:00:0b")?;
        let v = lab.add_host("v", "192.0.2.12/24", "02:00:00:00:00:0c")?;
        let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
        let intruder = lab.add_host("intruder", "192.0.2.66/24", "02:00:00:00:00:42")?;
        let mut r = Routers {
            lab,
            vipd,
            v,
            k,
            client,
            intruder,
            vipd_proc: 0,
            keepalived_proc: 0,
            starts: 0,
            claims: 0,
        };
        r.start_keepalived()?;
        r.start_vipd()?;
        converge(&mut r)?.map_err(|(kind, detail)| {
            anyhow::anyhow!("never converged at start: {kind}: {detail}")
        })?;
        Ok(r)
    }

    fn start_vipd(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let spec = format!("{VRID},priority=200,vip={VIP_CIDR},interval=100ms");
        let log = format!("vipd-{}", self.starts);
        let v = self.v.clone();
        let p = self
            .lab
            .spawn_vipd(&v, 1, &log, &self.vipd, &["--vrrp", &spec])?;
        self.lab
            .proc(p)
            .wait_for_line(&["vipd started: VRRP groups"], CONVERGE)?;
        self.vipd_proc = p;
        Ok(())
    }

    fn start_keepalived(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let conf = format!(
            "global_defs {{\n    vrrp_version 3\n    router_id k\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    \
             virtual_router_id {VRID}\n    priority 100\n    advert_int 0.1\n    \
             virtual_ipaddress {{\n        {VIP_CIDR} dev eth0\n    }}\n}}\n"
        );
        let log = format!("keepalived-{}", self.starts);
        let k = self.k.clone();
        let p = self.lab.spawn_keepalived(&k, &log, &conf)?;
        self.lab
            .proc(p)
            .wait_for_line(&["Startup complete"], CONVERGE)?;
        self.keepalived_proc = p;
        Ok(())
    }

    /// Waits (bounded) until keepalived holds the VIP.
    fn wait_keepalived_holds(&self) -> anyhow::Result<()> {
        vipd_lab::lab::wait_until("keepalived to take over", CONVERGE, || {
            self.lab.has_address(&self.k, VIP)
        })
    }
}

impl Cluster for Routers {
    type Fault = Fault;

    fn faults(&self) -> &'static [Fault] {
        &FAULTS
    }

    fn inject(&mut self, fault: Fault, _rng: &mut Rng) -> anyhow::Result<(String, Option<String>)> {
        let (v, p) = (self.v.clone(), self.vipd_proc);
        let target = match fault {
            Fault::KeepalivedKill => "keepalived",
            Fault::ForeignClaim => "the segment",
            _ => "vipd",
        };
        match fault {
            Fault::VipdKill => {
                self.lab.set_link(&v, false)?;
                self.lab.proc(p).signal(libc::SIGKILL)?;
                self.lab.proc(p).wait_exit(Duration::from_secs(10))?;
                self.wait_keepalived_holds()?;
                self.lab.set_link(&v, true)?;
                self.start_vipd()?;
            }
            Fault::VipdStop => {
                self.lab.proc(p).signal(libc::SIGTERM)?;
                if !self.lab.proc(p).wait_exit(Duration::from_secs(10))? {
                    return Ok((
                        target.into(),
                        Some("a graceful stop exited non-zero".into()),
                    ));
                }
                self.wait_keepalived_holds()?;
                self.start_vipd()?;
            }
            Fault::VipdFreeze => {
                self.lab.proc(p).signal(libc::SIGSTOP)?;
                let taken = self.wait_keepalived_holds();
                self.lab.proc(p).signal(libc::SIGCONT)?;
                taken?;
            }
            Fault::KeepalivedKill => {
                let q = self.keepalived_proc;
                self.lab.proc(q).signal(libc::SIGKILL)?;
                self.lab.proc(q).wait_exit(Duration::from_secs(10))?;
                self.start_keepalived()?;
            }
            Fault::LinkFlap => flap(&self.lab, &v)?,
            Fault::LossyLink => lossy(&self.lab, &v)?,
            Fault::VipRemoved => {
                if self.lab.has_address(&v, VIP)? {
                    self.lab
                        .ip(&v.netns, &["addr", "del", VIP_CIDR, "dev", "eth0"])?;
                }
            }
            Fault::ForeignClaim => {
                self.claims += 1;
                claim(&self.lab, &self.intruder, VIP, self.claims)?;
            }
        }
        Ok((target.into(), None))
    }

    fn broken(&mut self) -> anyhow::Result<Option<(&'static str, String)>> {
        for (name, p) in [
            ("vipd", self.vipd_proc),
            ("keepalived", self.keepalived_proc),
        ] {
            if self.lab.proc(p).child.try_wait()?.is_some() {
                return Ok(Some((
                    "daemon_exited",
                    format!("{name} exited:\n{}", tail(&self.lab.proc(p).output())),
                )));
            }
        }
        let on_v = self.lab.has_address(&self.v, VIP)?;
        let on_k = self.lab.has_address(&self.k, VIP)?;
        match (on_v, on_k) {
            (true, false) => {}
            (false, false) => return Ok(Some(("not_one_owner", "the VIP is on nobody".into()))),
            (true, true) => return Ok(Some(("not_one_owner", "the VIP is on both".into()))),
            // The steady state: the higher priority (vipd, preempting) is Master.
            (false, true) => return Ok(Some(("not_master", "keepalived holds the VIP".into()))),
        }
        let mac = self.lab.neighbour_mac(&self.client, VIP)?;
        if mac.as_ref().is_some_and(|m| *m != self.v.mac) {
            return Ok(Some((
                "client_wrong_mac",
                format!("the client has {mac:?} for the VIP"),
            )));
        }
        if !self.lab.ping(&self.client, VIP)? {
            return Ok(Some(("client_unanswered", "the VIP (on vipd)".into())));
        }
        let mac = self.lab.neighbour_mac(&self.client, VIP)?;
        if mac.as_deref() != Some(self.v.mac.as_str()) {
            return Ok(Some((
                "client_wrong_mac",
                format!("the client has {mac:?} for the VIP"),
            )));
        }
        Ok(None)
    }

    fn describe(&self) -> String {
        "vipd (priority 200) and keepalived (priority 100) in one VRRPv3 group (100 ms \
         adverts, one VIP), a client and an intruder"
            .into()
    }

    fn results_name(&self, cycles: usize) -> String {
        if cycles < 100 {
            "chaos-vrrp-smoke".into()
        } else {
            "chaos-vrrp".into()
        }
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "mode": "vrrp", "advert_interval": "100ms" })
    }

    fn logs(&self) -> PathBuf {
        self.lab.dir().to_path_buf()
    }
}
