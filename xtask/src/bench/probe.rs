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
pub fn echo(bind: SocketAddr, name: &str, max: Duration) -> anyhow::Result<()> {
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

fn monotonic_ns() -> u64 {
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
}
