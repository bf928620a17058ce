//! Reading frames: bounds-checked pointers, the Ethernet source, the counters and the
//! log's rate limit, shared by every part of the program.

use core::mem::size_of;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vipd_common::maps::{Counter, Verdict};

use crate::maps::{COUNTERS, LOGGED_AT};

pub(crate) const ETH_P_IPV4: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

#[inline(always)]
pub(crate) fn count(c: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot, written only from this CPU.
        unsafe { *slot += 1 };
    }
}

/// Counts a frame under `c` and returns what the counters' table says becomes of it
/// (`Counter::verdict`): dropped if refused, passed otherwise.
#[inline(always)]
pub(crate) fn judged(c: Counter) -> u32 {
    count(c);
    match c.verdict() {
        Verdict::Drop => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// A pointer to a `T` at `offset` in the frame, if the whole `T` lies inside it.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// The frame's Ethernet source address.
#[inline(always)]
pub(crate) fn eth_source(ctx: &XdpContext) -> Option<[u8; 6]> {
    let eth: *const [u8; 12] = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked both addresses lie inside the frame.
    let eth = unsafe { &*eth };
    Some([eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]])
}

/// Whether this CPU may log now (at most once a second).
#[inline(always)]
pub(crate) fn log_due(now: u64) -> bool {
    match LOGGED_AT.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, written only from this CPU.
        Some(at) => unsafe {
            let due = *at == 0 || now.saturating_sub(*at) >= 1_000_000_000;
            if due {
                *at = now;
            }
            due
        },
        None => false,
    }
}

/// Counts a frame as other traffic; passes it.
#[inline(always)]
pub(crate) fn other_traffic() -> u32 {
    count(Counter::OtherTraffic);
    xdp_action::XDP_PASS
}
