//! Types shared by the vipd daemon and its XDP program.
//!
//! - [`auth`]: SipHash-2-4 and the heartbeats' MAC trailer (shared-key authentication).
//! - [`heartbeat`]: the vipd heartbeat frame (wire format version 3), built by the daemon and read by
//!   the XDP program with the same parser.
//! - [`maps`]: the layout of the BPF maps both sides use (peer table, counters, events).
//! - [`neighbor`]: ARP and neighbour discovery: what a packet claims, what it asks for.
//! - [`peer`]: what the XDP program checks and records for one heartbeat (GTSM, peer
//!   filter, MAC, replays, events), pure so the host can run the same rules.
//! - [`vip_list`]: a node's VIP list in chunks, for peers running another list.
//! - [`vrrp`]: VRRPv3 advertisements (RFC 5798), for VRRP mode.
//!
//! The crate is `#![no_std]` so the eBPF program can use it; the `user` feature adds the
//! userspace-only trait impls (`aya::Pod`).
#![no_std]

pub mod auth;
pub mod heartbeat;
pub mod maps;
pub mod neighbor;
pub mod peer;
pub mod vip_list;
pub mod vrrp;
