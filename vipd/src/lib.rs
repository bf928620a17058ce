//! vipd: failover of virtual IPs for round-robin DNS, with heartbeats parsed in XDP.
//!
//! The daemon is split in two: the fast path ([`fastpath`], and each mode's loop on it:
//! [`pool::fast`]) sends heartbeats, watches deadlines and takes VIPs over on a real-time
//! thread; the slow path ([`pool::slow`], [`vrrp::slow`], in one shell: [`daemon`]) does
//! everything else on tokio.
//! Pure rules — membership, placement, the RFC 5798 state machine, reload plans — are
//! host-tested with a fake clock.

pub mod announce;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod conflict;
pub mod control;
pub mod daemon;
pub mod drain;
pub mod fastpath;
#[cfg(debug_assertions)]
pub mod fault;
pub mod fuzz;
pub mod health;
pub mod heartbeat;
pub mod holder;
pub mod hooks;
pub mod ifaddr;
pub mod incarnation;
pub mod metrics;
pub mod netlink;
pub mod nft;
pub mod notify;
pub mod pool;
pub mod ratelimit;
pub mod runtime;
pub mod sim;
pub mod testrun;
pub mod vip;
pub mod vrrp;
pub mod xdp;
