//! Fault injection for tests, compiled into debug builds only (the namespace tests run
//! one): faults no kernel can be asked for on cue.
//!
//! - `VIPD_FAULT_STALL_ADD=ADDR:MS`: the first takeover that adds `ADDR` blocks `MS`
//!   milliseconds before its netlink call, as a netlink send that hangs would (the fast
//!   path sends nothing meanwhile).

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::vip::Vip;

/// The variable naming the address whose takeover stalls, and for how long.
pub const STALL_ADD: &str = "VIPD_FAULT_STALL_ADD";

/// Blocks once, if `STALL_ADD` names one of `vips`.
pub fn stall_before_adding(vips: &[Vip]) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.load(Ordering::Relaxed) {
        return;
    }
    let Some((addr, ms)) = std::env::var(STALL_ADD).ok().and_then(|v| parse(&v)) else {
        return;
    };
    if vips.iter().any(|v| v.addr == addr) && !DONE.swap(true, Ordering::Relaxed) {
        tracing::warn!(%addr, ms, "test fault: the takeover stalls before its netlink call");
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn parse(v: &str) -> Option<(IpAddr, u64)> {
    let (addr, ms) = v.rsplit_once(':')?;
    Some((addr.parse().ok()?, ms.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_address_and_milliseconds() {
        assert_eq!(
            super::parse("192.0.2.201:2000"),
            Some(("192.0.2.201".parse().unwrap(), 2000))
        );
        assert_eq!(
            super::parse("2001:db8::1:50"),
            Some(("2001:db8::1".parse().unwrap(), 50))
        );
        assert_eq!(super::parse("192.0.2.201"), None);
    }
}
