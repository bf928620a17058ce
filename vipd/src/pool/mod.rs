//! Pool mode (Wackamole-like): N VIPs balanced over the live nodes.
//!
//! - [`membership`] and [`placement`]: pure rules — who is in the view, who holds what.
//! - [`decide`]: the pool's decisions as a state machine behind [`decide::Edges`] (what to
//!   take, release, announce and send), run by the fast path and by the simulator
//!   ([`crate::sim`]); [`told`]: what the slow path has told it of each peer.
//! - [`lists`]: peers on another VIP list (a rolling change), their lists learned.
//! - [`plan`]: capacity after failures (`vipd plan`).
//! - [`fast`]: the fast path's loop (heartbeats, deadlines, takeover) on its real-time
//!   thread, `decide`'s I/O; [`slow`]: the slow path (state sections, carrier, checks, reload, logs);
//!   [`messages`]: what they say to each other.

pub mod decide;
pub mod fast;
pub mod lists;
pub mod membership;
pub mod messages;
pub mod placement;
pub mod plan;
pub mod slow;
pub mod told;

use vipd_common::heartbeat::{Heartbeat, fnv1a64};

use crate::{config::Config, vip::Vip};

/// Heartbeats that carry the state section after it changes (in case one is lost).
const STATE_BURST: u8 = 3;
/// How often the state section is sent anyway (ns).
const STATE_REFRESH_NS: u64 = 2_000_000_000;

/// Digest of the pool (addresses and prefixes, sorted), so nodes with different VIP lists
/// do not misread each other's state sections.
pub fn pool_digest(vips: &[Vip]) -> u32 {
    let text: Vec<String> = vips.iter().map(ToString::to_string).collect();
    let bytes: Vec<&[u8]> = text.iter().map(String::as_bytes).collect();
    fnv1a64(&bytes) as u32
}

/// What every heartbeat of this node's incarnation `incarnation` says whatever its moment:
/// who sends it and its timers (flags, sequence, view and state are filled in per send).
pub fn heartbeat_template(cfg: &Config, incarnation: u64) -> Heartbeat {
    let micros = |d: std::time::Duration| d.as_micros().min(u32::MAX as u128) as u32;
    Heartbeat {
        cluster_id: cfg.pool.cluster_id,
        node_id: cfg.node.id,
        incarnation,
        interval_us: micros(cfg.pool.interval),
        dead_us: micros(cfg.pool.dead_interval),
        weight: cfg.pool.weight,
        ..Heartbeat::default()
    }
}
