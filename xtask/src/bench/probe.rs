//! The two ends of the client-visible outage measurement, run inside lab namespaces:
//! `echo` answers UDP requests to a VIP with its node's name; `probe` sends requests to the
//! VIP at a fixed rate and reports who answered when.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Answers every datagram to `bind` with its first 8 bytes (the sequence) and `name`, for at
/// most `max` (bounded, in case nobody stops it).
///
/// With an unspecified address (`0.0.0.0:PORT`, `[::]:PORT`) it answers requests to every
/// local address of that family, each from the address it was sent to (`IP_PKTINFO` /
/// `IPV6_PKTINFO`): one responder for a whole pool of VIPs, whichever of them are here.
pub fn echo(bind: SocketAddr, name: &str, max: Duration) -> anyhow::Result<()> {
    if bind.ip().is_unspecified() {
        return echo_any(bind, name, max);
    }
    let domain = if bind.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
    // The VIP may not be on this node (yet): bind it anyway, answer once it arrives.
    s.set_freebind_v4(true)?;
    s.bind(&bind.into())
        .with_context(|| format!("binding {bind}"))?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let mut reply = [0u8; 64];
    while start.elapsed() < max {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        if n < 8 {
            continue;
        }
        reply[..8].copy_from_slice(&buf[..8]);
        let len = 8 + name.len().min(56);
        reply[8..len].copy_from_slice(&name.as_bytes()[..len - 8]);
        let _ = s.send_to(&reply[..len], from);
    }
    Ok(())
}

/// What a probe saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Requests never answered (counting each request once, whoever answered it).
    pub lost: u64,
    /// Duplicate replies (two nodes answering one request: a split brain on the wire).
    pub duplicates: u64,
    /// The longest run of consecutive unanswered requests, in microseconds of sending
    /// time: the client-visible outage, robust to duplicates and interleaved owners.
    pub longest_unanswered_us: f64,
    /// The node that answered first.
    pub first_node: String,
    /// The node that answered after it, if any.
    pub new_node: Option<String>,
    /// Receive time (CLOCK_MONOTONIC ns) of the first node's last reply before the switch.
    pub last_old_reply_ns: Option<u64>,
    /// Receive time of the new node's first reply.
    pub first_new_reply_ns: Option<u64>,
    /// The client-visible outage: between those two replies, microseconds.
    pub outage_us: Option<f64>,
    /// The longest gap between consecutive replies, microseconds.
    pub max_gap_us: f64,
    /// Requests per second actually sent.
    pub rate: f64,
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of vipd's timeline and of the kernel's
/// heartbeat timestamps, shared by every network namespace.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends `rate` requests per second to `target` for `duration` (both bounded), then
/// reports; replies arriving up to 300 ms after the last request still count.
pub fn probe(target: SocketAddr, rate: u32, duration: Duration) -> anyhow::Result<ProbeReport> {
    anyhow::ensure!(
        (1..=100_000).contains(&rate),
        "rate must be 1..=100000 per second"
    );
    anyhow::ensure!(
        duration <= Duration::from_secs(120),
        "duration must be at most 120 s"
    );
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let rx = sock.try_clone()?;
    let done = Arc::new(AtomicBool::new(false));
    let replies: Arc<Mutex<Vec<(u64, u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let receiver = {
        let (done, replies) = (Arc::clone(&done), Arc::clone(&replies));
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut local = Vec::new();
            // Bounded: `done` is set after the sender's bounded loop plus a grace period.
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut buf)
                    && n >= 8
                {
                    let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                    let name = String::from_utf8_lossy(&buf[8..n]).into_owned();
                    local.push((seq, monotonic_ns(), name));
                }
            }
            *replies.lock().unwrap_or_else(|e| e.into_inner()) = local;
        })
    };
    let period = Duration::from_secs(1) / rate;
    let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    for seq in 0..total {
        let due = start + period * seq as u32;
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let left = due - now;
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
        if sock.send_to(&seq.to_be_bytes(), target).is_ok() {
            sent += 1;
        }
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    let replies = std::mem::take(&mut *replies.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(analyse(sent, &replies, sent as f64 / elapsed.as_secs_f64()))
}

/// The longest run of sequence numbers in `0..sent` with no reply, and the number of
/// sequence numbers answered more than once.
fn unanswered(sent: u64, replies: &[(u64, u64, String)]) -> (u64, u64, u64) {
    let mut answered = vec![0u8; sent as usize];
    for (seq, _, _) in replies {
        if let Some(a) = answered.get_mut(*seq as usize) {
            *a = a.saturating_add(1);
        }
    }
    let (mut longest, mut run, mut missing, mut dups) = (0u64, 0u64, 0u64, 0u64);
    for a in &answered {
        if *a == 0 {
            run += 1;
            missing += 1;
            longest = longest.max(run);
        } else {
            run = 0;
            dups += u64::from(*a - 1);
        }
    }
    (longest, missing, dups)
}

/// The outage in a reply log: (sequence, receive time, node), in receive order.
pub fn analyse(sent: u64, replies: &[(u64, u64, String)], rate: f64) -> ProbeReport {
    let mut r = ProbeReport {
        sent,
        received: replies.len() as u64,
        rate,
        ..ProbeReport::default()
    };
    let (longest, missing, dups) = unanswered(sent, replies);
    r.lost = missing;
    r.duplicates = dups;
    r.longest_unanswered_us = if rate > 0.0 {
        longest as f64 * 1e6 / rate
    } else {
        0.0
    };
    r.max_gap_us = replies
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) as f64 / 1e3)
        .fold(0.0, f64::max);
    let Some(first) = replies.first() else {
        return r;
    };
    r.first_node = first.2.clone();
    if let Some(i) = replies.iter().position(|x| x.2 != first.2) {
        r.new_node = Some(replies[i].2.clone());
        r.first_new_reply_ns = Some(replies[i].1);
        let last_old = replies[..i].last().map(|x| x.1);
        r.last_old_reply_ns = last_old;
        r.outage_us = last_old.map(|l| (replies[i].1 - l) as f64 / 1e3);
    }
    r
}

/// [`echo`] on an unspecified address: replies leave from the address each request was
/// sent to, so one socket answers for every VIP of the family on this node.
fn echo_any(bind: SocketAddr, name: &str, max: Duration) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let v6 = bind.is_ipv6();
    let domain = if v6 {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
    if v6 {
        s.set_only_v6(true)?;
    }
    let fd = s.as_raw_fd();
    let (level, option) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let one: libc::c_int = 1;
    // SAFETY: an int option with its size, on a socket we own.
    if unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            std::ptr::from_ref(&one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("setsockopt(PKTINFO)");
    }
    s.bind(&bind.into())
        .with_context(|| format!("binding {bind}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let mut reply = [0u8; 64];
    let len = 8 + name.len().min(56);
    reply[8..len].copy_from_slice(&name.as_bytes()[..len - 8]);
    while start.elapsed() < max {
        // SAFETY: plain C structures, all zeroes is a valid value for each.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = std::ptr::from_mut(&mut from).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: every buffer in `msg` is valid for its length until the call returns.
        let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
        if n < 8 {
            continue;
        }
        reply[..8].copy_from_slice(&buf[..8]);
        let mut local4 = None;
        let mut local6 = None;
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                    let info: libc::in_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    local4 = Some(info.ipi_addr);
                } else if (*c).cmsg_level == libc::IPPROTO_IPV6
                    && (*c).cmsg_type == libc::IPV6_PKTINFO
                {
                    local6 = Some(std::ptr::read_unaligned::<libc::in6_pktinfo>(
                        libc::CMSG_DATA(c).cast(),
                    ));
                }
                c = libc::CMSG_NXTHDR(&raw const msg, c);
            }
        }
        let mut out_control = [0u64; 16];
        let mut out_iov = libc::iovec {
            iov_base: reply.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: as above.
        let mut out: libc::msghdr = unsafe { std::mem::zeroed() };
        out.msg_name = std::ptr::from_mut(&mut from).cast();
        out.msg_namelen = msg.msg_namelen;
        out.msg_iov = &raw mut out_iov;
        out.msg_iovlen = 1;
        // SAFETY: one control message, of the size given, in a buffer large enough for it.
        unsafe {
            let (level, kind, size) = if local4.is_some() {
                (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    std::mem::size_of::<libc::in_pktinfo>(),
                )
            } else {
                (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    std::mem::size_of::<libc::in6_pktinfo>(),
                )
            };
            if local4.is_some() || local6.is_some() {
                out.msg_control = out_control.as_mut_ptr().cast();
                out.msg_controllen = libc::CMSG_SPACE(size as u32) as _;
                let c = libc::CMSG_FIRSTHDR(&raw const out);
                (*c).cmsg_level = level;
                (*c).cmsg_type = kind;
                (*c).cmsg_len = libc::CMSG_LEN(size as u32) as _;
                if let Some(addr) = local4 {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: addr,
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                } else if let Some(info) = local6 {
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                }
            }
            libc::sendmsg(fd, &raw const out, 0);
        }
    }
    Ok(())
}

/// One target of a [`probe_many`] run (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetReport {
    /// The address probed.
    pub target: SocketAddr,
    /// Requests sent to it.
    pub sent: u64,
    /// Replies from the node that held it at first.
    pub old_replies: u64,
    /// The last of those.
    pub last_old_reply_ns: Option<u64>,
    /// The node that answered it next, and when its first reply arrived.
    pub new_node: Option<String>,
    /// Receive time of that first reply from the new node.
    pub first_new_reply_ns: Option<u64>,
    /// Send time of the request that reply answered.
    pub first_new_sent_ns: Option<u64>,
    /// Send time of the request to this target before it (unanswered, or answered by the
    /// old node): the address began to answer between the two, so their distance is the
    /// resolution of `first_new_reply_ns`.
    pub previous_sent_ns: Option<u64>,
}

/// What a [`probe_many`] run saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ManyReport {
    /// Requests sent, in all.
    pub sent: u64,
    /// Replies received, in all.
    pub received: u64,
    /// Requests per second actually sent.
    pub rate: f64,
    /// Whether every target was answered by another node than the first before the end.
    pub all_moved: bool,
    /// Per target, in the order given.
    pub targets: Vec<TargetReport>,
}

/// The target index in the upper bits of a sequence number sent by [`probe_many`].
const TARGET_SHIFT: u32 = 40;

/// Probes `targets` round-robin at `rate` requests per second in all until each has been
/// answered by another node than `from_node` (then 100 ms more), or for `max` at most.
/// A target answered by a new node leaves the rotation, so the ones still waiting are
/// probed ever faster. Prints "every target answered" once each has answered at all.
pub fn probe_many(
    targets: &[SocketAddr],
    from_node: &str,
    rate: u32,
    max: Duration,
) -> anyhow::Result<ManyReport> {
    use std::sync::atomic::AtomicUsize;
    anyhow::ensure!(
        (1..=100_000).contains(&rate),
        "rate must be 1..=100000 per second"
    );
    anyhow::ensure!(max <= Duration::from_secs(120), "at most 120 s");
    anyhow::ensure!(
        !targets.is_empty() && targets.len() < 1 << 16,
        "1 to 65535 targets"
    );
    let v4 = UdpSocket::bind("0.0.0.0:0")?;
    let v6 = if targets.iter().any(SocketAddr::is_ipv6) {
        Some(UdpSocket::bind("[::]:0")?)
    } else {
        None
    };
    let n = targets.len();
    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let moved: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let (seen_count, moved_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for sock in std::iter::once(&v4).chain(v6.as_ref()) {
        let rx = sock.try_clone()?;
        rx.set_read_timeout(Some(Duration::from_millis(20)))?;
        let (seen, moved, seen_count, moved_count, done) = (
            Arc::clone(&seen),
            Arc::clone(&moved),
            Arc::clone(&seen_count),
            Arc::clone(&moved_count),
            Arc::clone(&done),
        );
        let from = from_node.to_string();
        receivers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut local = Vec::new();
            // Bounded: `done` is set after the sender's bounded loop plus a grace period.
            while !done.load(Ordering::Relaxed) {
                if let Ok(len) = rx.recv(&mut buf)
                    && len >= 8
                {
                    let at = monotonic_ns();
                    let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                    let name = String::from_utf8_lossy(&buf[8..len]).into_owned();
                    let i = (seq >> TARGET_SHIFT) as usize;
                    if i < seen.len() {
                        if !seen[i].swap(true, Ordering::Relaxed) {
                            seen_count.fetch_add(1, Ordering::Relaxed);
                        }
                        if name != from && !moved[i].swap(true, Ordering::Relaxed) {
                            moved_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    local.push((seq, at, name));
                }
            }
            local
        }));
    }
    let period_ns = 1_000_000_000 / u64::from(rate);
    let start = Instant::now();
    let mut sends: Vec<(usize, u64)> = Vec::new();
    let (mut next, mut announced_ready, mut all_moved_at) = (0usize, false, None);
    while start.elapsed() < max {
        if !announced_ready && seen_count.load(Ordering::Relaxed) == n {
            println!("every target answered");
            announced_ready = true;
        }
        if moved_count.load(Ordering::Relaxed) == n {
            let at = *all_moved_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= Duration::from_millis(100) {
                break;
            }
        }
        let due = start + Duration::from_nanos(period_ns * sends.len() as u64);
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            let left = due - now;
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
        // The next target not yet answered by a new node (any, once all have been).
        let mut i = next;
        for _ in 0..n {
            if !moved[i].load(Ordering::Relaxed) {
                break;
            }
            i = (i + 1) % n;
        }
        next = (i + 1) % n;
        let seq = ((i as u64) << TARGET_SHIFT) | sends.len() as u64;
        let sock = if targets[i].is_ipv6() {
            v6.as_ref().unwrap_or(&v4)
        } else {
            &v4
        };
        let _ = sock.send_to(&seq.to_be_bytes(), targets[i]);
        sends.push((i, monotonic_ns()));
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, Ordering::Relaxed);
    let mut replies = Vec::new();
    for r in receivers {
        replies.extend(
            r.join()
                .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?,
        );
    }
    replies.sort_by_key(|r| r.1);
    Ok(analyse_many(
        targets,
        from_node,
        &sends,
        &replies,
        sends.len() as f64 / elapsed.as_secs_f64(),
    ))
}

/// Per-target first replies from a new node, from the sends (target, send time) in sequence
/// order and the replies (sequence, receive time, node) in receive order.
fn analyse_many(
    targets: &[SocketAddr],
    from_node: &str,
    sends: &[(usize, u64)],
    replies: &[(u64, u64, String)],
    rate: f64,
) -> ManyReport {
    let mut out: Vec<TargetReport> = targets
        .iter()
        .map(|&target| TargetReport {
            target,
            sent: 0,
            old_replies: 0,
            last_old_reply_ns: None,
            new_node: None,
            first_new_reply_ns: None,
            first_new_sent_ns: None,
            previous_sent_ns: None,
        })
        .collect();
    for &(i, _) in sends {
        out[i].sent += 1;
    }
    for (seq, at, name) in replies {
        let (i, counter) = (
            (seq >> TARGET_SHIFT) as usize,
            (seq & ((1 << TARGET_SHIFT) - 1)) as usize,
        );
        let Some(t) = out.get_mut(i) else { continue };
        if name == from_node {
            t.old_replies += 1;
            t.last_old_reply_ns = Some(t.last_old_reply_ns.map_or(*at, |l| l.max(*at)));
        } else if t.first_new_reply_ns.is_none() {
            t.new_node = Some(name.clone());
            t.first_new_reply_ns = Some(*at);
            t.first_new_sent_ns = sends.get(counter).map(|s| s.1);
            t.previous_sent_ns = sends[..counter.min(sends.len())]
                .iter()
                .rev()
                .find(|s| s.0 == i)
                .map(|s| s.1);
        }
    }
    ManyReport {
        sent: sends.len() as u64,
        received: replies.len() as u64,
        rate,
        all_moved: out.iter().all(|t| t.first_new_reply_ns.is_some()),
        targets: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_the_gap_across_the_owner_change() {
        let replies = vec![
            (0, 1_000, "n1".to_string()),
            (1, 2_000, "n1".to_string()),
            (5, 9_000, "n2".to_string()),
            (6, 10_000, "n2".to_string()),
        ];
        let r = analyse(7, &replies, 1000.0);
        assert_eq!(r.outage_us, Some(7.0));
        assert_eq!(r.lost, 3);
        assert_eq!(r.longest_unanswered_us, 3000.0, "seqs 2, 3, 4 at 1 ms each");
        assert_eq!(r.new_node.as_deref(), Some("n2"));
        assert_eq!(r.max_gap_us, 7.0);
        let none = analyse(3, &replies[..2], 1000.0);
        assert_eq!(none.outage_us, None);
        // Two nodes answering the same request are not two answers.
        let dup = vec![
            (0, 1, "a".to_string()),
            (0, 2, "b".to_string()),
            (2, 3, "a".to_string()),
        ];
        let d = analyse(3, &dup, 1000.0);
        assert_eq!((d.lost, d.duplicates), (1, 1));
    }

    #[test]
    fn first_reply_per_target_from_a_new_node() {
        let targets: Vec<SocketAddr> = vec![
            "192.0.2.1:9".parse().unwrap(),
            "[2001:db8::1]:9".parse().unwrap(),
        ];
        // Sends 0..6 alternate between the targets, 100 ns apart.
        let sends: Vec<(usize, u64)> = (0..6).map(|c| (c % 2, 100 * c as u64)).collect();
        let seq = |i: u64, c: u64| (i << TARGET_SHIFT) | c;
        let replies = vec![
            (seq(0, 0), 10, "a".to_string()),
            (seq(1, 1), 110, "a".to_string()),
            (seq(1, 5), 510, "b".to_string()),
            (seq(0, 4), 420, "b".to_string()),
            (seq(0, 4), 430, "a".to_string()),
        ];
        let r = analyse_many(&targets, "a", &sends, &replies, 1.0);
        assert!(r.all_moved);
        let t0 = &r.targets[0];
        assert_eq!((t0.sent, t0.old_replies), (3, 2));
        assert_eq!(t0.first_new_reply_ns, Some(420));
        assert_eq!(
            (t0.previous_sent_ns, t0.first_new_sent_ns),
            (Some(200), Some(400))
        );
        let t1 = &r.targets[1];
        assert_eq!(t1.new_node.as_deref(), Some("b"));
        assert_eq!(
            (t1.previous_sent_ns, t1.first_new_sent_ns),
            (Some(300), Some(500))
        );
    }
}
