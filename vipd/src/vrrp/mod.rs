//! VRRP mode: VRRPv3 (RFC 5798) virtual routers, one per `[[vrrp]]` group, interoperable
//! with keepalived.
//!
//! - [`fsm`]: the section 6.4 state machine, pure, with a fake clock in its tests.
//! - [`advert`]: building the advertisement frames this node sends.
//! - [`reload`]: what a SIGHUP does to the running groups, pure.
//! - [`host`]: what VRRP mode changes on the host (nftables, macvlans, sysctls), undone.
//! - [`group`]: one group at run time: how it is made, joined and addressed.
//! - [`fast`]: the groups' state machines on the fast path's real-time thread: adverts
//!   on time, Master_Down_Timer, takeover.
//! - [`slow`]: the slow path around them. The XDP program validates and judges received adverts
//!   (`vipd_common::vrrp`), so a Backup is woken only by a change, a priority-0 advert or
//!   its own Master_Down_Timer, which it checks against the kernel's last-heard time.

pub mod advert;
pub mod fast;
pub mod fsm;
pub mod group;
pub mod host;
pub mod reload;
pub mod slow;
pub mod unicast;
