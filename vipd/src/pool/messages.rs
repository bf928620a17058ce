//! What the pool's two paths say to each other: the slow path *asks* ([`Command`], plus
//! the latest carrier and health verdicts in [`Verdicts`]), the fast path *reports*
//! ([`Report`]), over [`fastpath::channel`](crate::fastpath::channel).

use std::{collections::BTreeSet, net::IpAddr, sync::atomic::AtomicBool};

use vipd_common::maps::PeerEvent;

use super::membership::Transition;
use crate::{
    config::Config,
    control::Status,
    fastpath::sends::SendNotice,
    holder::{Released, Taken},
    vip::Vip,
};

/// Commands queued for the fast path (more wait in the slow path, never in the fast one).
pub const COMMANDS: usize = 256;
/// Reports queued for the slow path before the fast path starts dropping them.
pub const REPORTS: usize = 4096;

/// The slow path's latest carrier and health verdicts, read by the fast path on every
/// wake-up (never lost, never queued).
#[derive(Debug, Default)]
pub struct Verdicts {
    /// The cluster interface has carrier.
    pub carrier: AtomicBool,
    /// Every health check passes.
    pub healthy: AtomicBool,
}

impl Verdicts {
    /// Verdicts starting with `carrier` and `healthy`.
    pub fn new(carrier: bool, healthy: bool) -> Self {
        Self {
            carrier: AtomicBool::new(carrier),
            healthy: AtomicBool::new(healthy),
        }
    }
}

/// Something the slow path asks of the fast path.
#[derive(Debug)]
pub enum Command {
    /// What a peer, in `incarnation`, holds, from its latest authenticated state section.
    Holdings {
        peer: u32,
        incarnation: u64,
        vips: BTreeSet<IpAddr>,
    },
    /// The VIP list a peer runs, when it is not this node's (`None`: the same again).
    PeerList {
        peer: u32,
        vips: Option<BTreeSet<IpAddr>>,
    },
    /// A peer runs another VIP list: send this node's (one round of chunks, once the state
    /// section that shows our digest has gone out).
    SendList,
    /// A peer, in `incarnation`, echoed our current incarnation: it is live.
    Verified { peer: u32, incarnation: u64 },
    /// A reloaded configuration (already checked: nothing in it needs a restart).
    Reload(Box<Config>),
    /// The fast path's part of `vipd status`.
    Status(tokio::sync::oneshot::Sender<Status>),
    /// These addresses were removed from the interface (`None`: any may have been): those
    /// still held are added and announced again.
    Restore(Option<Vec<IpAddr>>),
    /// A live peer claims a held VIP by ARP/NDP: send what this node holds now, so the
    /// holdings rule settles it at once.
    SendHoldings,
}

/// Something the fast path did or saw, for logs, metrics, hooks and repeats.
#[derive(Debug)]
pub enum Report {
    /// A record from the XDP program's event ring.
    XdpEvent(PeerEvent),
    /// The view changed (`weight` and `last_seen_ns` as the peer table had them).
    Transition {
        transition: Transition,
        at_ns: u64,
        last_seen_ns: u64,
        weight: u16,
    },
    /// Peers kept in the view although this node does not hear them, each with the member
    /// that does (the whole list, when it changed).
    Vouched(Vec<(u32, u32)>),
    /// This node sent no heartbeat for `silent_ns` (past the dead interval: frozen or
    /// hung); it released the `held` VIPs it still had and holds down again.
    Silenced { silent_ns: u64, held: usize },
    /// The node state changed: active, holding-down, withdrawn or fault.
    NodeState(&'static str),
    /// The hold-down is over.
    Mature,
    /// The hold-down is over but this node waits: `member`'s view holds nodes it does not
    /// hear (it sees one side of a cut).
    HoldingForView { member: u32 },
    /// The members' view digests started or stopped agreeing with ours.
    Views {
        agree: bool,
        view: Vec<u32>,
        differing: Vec<u32>,
    },
    /// A held VIP is claimed by a peer too.
    Conflict(IpAddr),
    /// A conflict is over; the VIP was announced again.
    ConflictResolved(IpAddr),
    /// A peer declared lost came back: every held VIP was announced again.
    AnnouncedAgain(Vec<IpAddr>),
    /// VIPs added and announced, in the order they were.
    Taken(Vec<Taken>),
    /// Held VIPs that had been removed from outside, added and announced again.
    Restored(Vec<Vip>),
    /// A VIP could not be added (reported once until it succeeds).
    TakeFailed { vip: Vip, error: String },
    /// VIPs removed (or kept, when the kernel refused: they stay held and are retried).
    Released(Vec<Released>),
    /// Something to say about failing heartbeat sends (once per episode, not per send).
    Sends(SendNotice),
    /// Long-silent peers outside the view were forgotten (with their XDP entries): what
    /// the slow path told the fast path about them (verified, holdings, lists) must be
    /// told again when they come back.
    Forgotten(Vec<u32>),
    /// The fast path ended: heartbeats sent and failed, last sequence number.
    Stopped {
        sent: u64,
        failed: u64,
        sequence: u64,
    },
}
