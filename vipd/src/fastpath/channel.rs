//! The two ends between the slow path and the fast path, for both modes: commands go in
//! through a bounded queue and a wake-up, reports come out through a bounded queue the fast
//! path never waits on (a report that does not fit is dropped and counted).

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing::{info, warn};

use super::{Granted, Priority, Sleeper, Stats, Waker};
use crate::control::FastPathStatus;

/// State both ends see.
#[derive(Debug, Default)]
pub struct Shared {
    /// Stop: the fast path winds down (LEAVING, priority 0, VIPs released) and ends.
    pub stop: AtomicBool,
    /// Reports dropped because the slow path was behind.
    pub reports_dropped: AtomicU64,
    /// Punctuality of what the fast path sends.
    pub stats: Stats,
}

/// The fast path's end.
pub struct FastEnd<C, R> {
    /// Shared with the slow path.
    pub shared: Arc<Shared>,
    /// Where the thread sleeps.
    pub sleeper: Sleeper,
    commands: Receiver<C>,
    reports: tokio::sync::mpsc::Sender<R>,
}

impl<C, R> FastEnd<C, R> {
    /// The next queued command, if any (never waits).
    pub fn next_command(&self) -> Option<C> {
        self.commands.try_recv().ok()
    }

    /// Reports to the slow path; never waits (a report that does not fit is counted).
    pub fn report(&self, r: R) {
        if self.reports.try_send(r).is_err() {
            self.shared.reports_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the slow path asked it to stop.
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }
}

/// The slow path's end.
pub struct SlowEnd<C> {
    /// Shared with the fast path.
    pub shared: Arc<Shared>,
    /// How the fast path's thread is scheduled.
    pub granted: Granted,
    commands: SyncSender<C>,
    waker: Waker,
}

impl<C> SlowEnd<C> {
    /// Queues `command` and wakes the fast path; gives it back if the queue is full (the
    /// fast path is behind: the caller decides whether that matters).
    pub fn try_ask(&self, command: C) -> Result<(), C> {
        match self.commands.try_send(command) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => Err(c),
        }
    }

    /// Queues `command`, waiting for room if the queue is full (for commands that must
    /// not be lost: state changes, reloads).
    pub async fn ask(&self, mut command: C) {
        loop {
            match self.commands.try_send(command) {
                Ok(()) => break,
                Err(TrySendError::Full(c)) => {
                    command = c;
                    self.waker.wake();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        self.waker.wake();
    }

    /// Wakes the fast path (to read shared state).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Asks the fast path to stop.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.waker.wake();
    }

    /// What the metrics and the watchdog read of the fast path: its shared state, and
    /// whether it runs real-time.
    pub fn path(&self) -> (Arc<Shared>, bool) {
        (
            Arc::clone(&self.shared),
            matches!(self.granted, Granted::RealTime(_)),
        )
    }

    /// The fast path's part of `vipd status`.
    pub fn status(&self) -> FastPathStatus {
        let stats = &self.shared.stats;
        FastPathStatus {
            scheduling: match &self.granted {
                Granted::RealTime(p) => format!("SCHED_FIFO {p}"),
                Granted::Normal => "normal".into(),
                Granted::Refused(why) => format!("normal (real-time refused: {why})"),
            },
            heartbeats_sent: stats.sent.load(Ordering::Relaxed),
            heartbeats_late: stats.late.load(Ordering::Relaxed),
            max_late_ms: stats.max_late_ns.load(Ordering::Relaxed) as f64 / 1e6,
            reports_dropped: self.shared.reports_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Starts the fast path: its channels (`commands` and `reports` deep), and `body` on its
/// own thread at `priority`; logs what scheduling it got. Returns the slow path's end, the
/// reports, and the thread.
pub fn start<C: Send + 'static, R: Send + 'static>(
    priority: Priority,
    (commands, reports): (usize, usize),
    body: impl FnOnce(FastEnd<C, R>) + Send + 'static,
) -> io::Result<(SlowEnd<C>, tokio::sync::mpsc::Receiver<R>, JoinHandle<()>)> {
    let shared = Arc::new(Shared::default());
    let (command_tx, command_rx) = std::sync::mpsc::sync_channel(commands);
    let (report_tx, report_rx) = tokio::sync::mpsc::channel(reports);
    let (sleeper, waker) = Sleeper::new()?;
    let end = FastEnd {
        shared: Arc::clone(&shared),
        sleeper,
        commands: command_rx,
        reports: report_tx,
    };
    let (granted, thread) = super::spawn("vipd-fast", priority, move || body(end))?;
    match &granted {
        Granted::RealTime(p) => info!(priority = p, "fast path: SCHED_FIFO, memory locked"),
        Granted::Normal => info!("fast path: normal scheduling (rt_priority = 0)"),
        Granted::Refused(why) => warn!(
            "fast path: real-time scheduling refused ({why}); running at normal priority, so \
             CPU load can delay heartbeats and adverts (grant CAP_SYS_NICE and CAP_IPC_LOCK)"
        ),
    }
    let slow = SlowEnd {
        shared,
        granted,
        commands: command_tx,
        waker,
    };
    Ok((slow, report_rx, thread))
}
