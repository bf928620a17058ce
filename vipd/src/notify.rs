//! systemd's service notifications (sd_notify(3), `Type=notify`): `READY=1` once the daemon
//! runs, `STOPPING=1` when it winds down, and `WATCHDOG=1` while the fast path answers —
//! so a wedged daemon (a fast path stuck in a syscall, a deadlock) is killed and restarted
//! by `WatchdogSec=` and `Restart=on-failure`, not left holding VIPs it no longer serves.
//!
//! The protocol is a datagram to `$NOTIFY_SOCKET`; a few lines here instead of a
//! dependency on libsystemd.

use std::{
    os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram},
    sync::Mutex,
    time::Duration,
};

use tracing::{debug, warn};

/// The service manager's socket and watchdog period, from the environment.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
    /// The fast paths' wake-up counts at the last watchdog tick.
    last_wakeups: Mutex<Vec<u64>>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (with `WATCHDOG_PID`, if set, naming this
    /// process); without them every call is a no-op.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
                None => std::os::unix::net::SocketAddr::from_pathname(&path),
            };
            // Non-blocking: a service manager slow to read (its queue holds ten datagrams)
            // costs a notification, never a stalled daemon.
            let sock = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
            match (addr, sock) {
                (Ok(addr), Ok(sock)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!("NOTIFY_SOCKET {path:?} unusable: {e}");
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Self {
            socket,
            watchdog,
            last_wakeups: Mutex::new(Vec::new()),
        }
    }

    /// The daemon is up (its start-up line was logged).
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// The daemon is stopping (LEAVING / priority 0 and releases follow).
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// How often [`watchdog`](Self::watchdog) must run: half the service's `WatchdogSec`
    /// (a day without one).
    pub fn watchdog_period(&self) -> Duration {
        self.watchdog.map_or(Duration::from_secs(86_400), |w| w / 2)
    }

    /// One watchdog tick: feeds the watchdog if every fast path woke since the last tick
    /// (`wakeups`, their counters), then calls `wake` so they must wake before the next
    /// one. A fast path that stops answering stops feeding it, and systemd restarts vipd.
    pub fn watchdog(&self, wakeups: &[u64], wake: impl FnOnce()) {
        if self.watchdog.is_none() {
            return;
        }
        let mut last = self.last_wakeups.lock().unwrap_or_else(|e| e.into_inner());
        let woke = last.len() != wakeups.len() || last.iter().zip(wakeups).all(|(a, b)| a != b);
        *last = wakeups.to_vec();
        drop(last);
        if woke {
            self.send("WATCHDOG=1");
        } else {
            warn!(
                "the fast path did not answer for a watchdog period: not feeding systemd's watchdog"
            );
        }
        wake();
    }

    fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket
            && let Err(e) = sock.send_to_addr(message.as_bytes(), addr)
        {
            debug!("notifying the service manager ({message}): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_when_the_fast_path_woke() {
        let dir = std::env::temp_dir().join(format!("vipd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: Some(Duration::from_secs(2)),
            last_wakeups: Mutex::new(Vec::new()),
        };
        assert_eq!(n.watchdog_period(), Duration::from_secs(1));
        let recv = || {
            let mut buf = [0u8; 64];
            listener
                .recv(&mut buf)
                .ok()
                .map(|len| String::from_utf8_lossy(&buf[..len]).into_owned())
        };
        n.ready();
        assert_eq!(recv().as_deref(), Some("READY=1"));
        let mut woken = 0;
        n.watchdog(&[5, 9], || woken += 1);
        assert_eq!(recv().as_deref(), Some("WATCHDOG=1"));
        // No wake-up since: not fed.
        n.watchdog(&[5, 9], || woken += 1);
        assert_eq!(recv(), None);
        // One of two fast paths woke: not fed either.
        n.watchdog(&[6, 9], || woken += 1);
        assert_eq!(recv(), None);
        n.watchdog(&[7, 10], || woken += 1);
        assert_eq!(recv().as_deref(), Some("WATCHDOG=1"));
        assert_eq!(woken, 4, "the fast paths are woken at every tick");
        n.stopping();
        assert_eq!(recv().as_deref(), Some("STOPPING=1"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
