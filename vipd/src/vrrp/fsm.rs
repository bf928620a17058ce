//! The VRRPv3 state machine of RFC 5798, section 6.4, as pure logic: events and a clock
//! in, actions and the transition (from, to, reason) out. It also keeps what a Backup
//! knows of its Master. Names follow the RFC; intervals are centiseconds, as on the wire,
//! and times are nanoseconds on a monotonic clock (the XDP program's), so Skew_Time keeps
//! its fraction of a centisecond.

use std::net::IpAddr;

/// Section 6.4's three states (numbered as the `vrrp_state` metric shows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpState {
    /// Waiting for a Startup event.
    Initialize = 0,
    /// Monitoring the Master.
    Backup = 1,
    /// Forwarding for the VIPs and sending ADVERTISEMENTs.
    Master = 2,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpEvent {
    /// The group was started (`reason`: why, for the log: startup, link_up, …).
    Startup {
        /// Why.
        reason: &'static str,
    },
    /// The group is being stopped (`reason`: why: shutdown, link_down, …).
    Shutdown {
        /// Why.
        reason: &'static str,
    },
    /// An ADVERTISEMENT for this VRID arrived (already validated).
    Advert {
        /// Its Priority.
        priority: u8,
        /// Its Max Adver Int, centiseconds.
        max_adver_int_cs: u16,
        /// Its source address (the sender's primary address).
        source: IpAddr,
    },
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpAction {
    /// Send an ADVERTISEMENT with this priority.
    SendAdvert {
        /// Priority field (0 when stopping).
        priority: u8,
    },
    /// Become the owner of the VIPs: add them and send gratuitous ARP / unsolicited NA.
    TakeVips,
    /// Stop owning the VIPs: remove them.
    ReleaseVips,
}

/// Nanoseconds per centisecond.
pub const CS: u64 = 10_000_000;

/// Transition reasons the machine gives itself (Startup and Shutdown bring theirs).
pub mod reason {
    /// A Backup's Master_Down_Timer fired: the Master went silent.
    pub const MASTER_DOWN: &str = "master_down";
    /// A Backup took over a Skew_Time after its Master sent priority 0.
    pub const PRIORITY_ZERO: &str = "priority_zero";
    /// A Master heard a higher-priority router (or an equal one from a higher address).
    pub const PREEMPTED: &str = "preempted";
}

/// A change of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: VrrpState,
    /// The state entered.
    pub to: VrrpState,
    /// Why (see [`reason`], or the Startup/Shutdown event's).
    pub reason: &'static str,
}

/// What one event or timer did: the actions to carry out, in order, and the transition if
/// the state changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// To carry out, in order.
    pub actions: Vec<VrrpAction>,
    /// The state change, if any.
    pub transition: Option<Transition>,
}

/// The Master's last advert as the XDP program recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// When it arrived (the kernel's monotonic nanoseconds).
    pub at: u64,
    /// Its priority.
    pub priority: u8,
    /// Its Max Adver Int, centiseconds.
    pub max_adver_int_cs: u16,
    /// Its source.
    pub source: IpAddr,
}

/// One virtual router's parameters and state. Times are nanoseconds on a monotonic clock.
#[derive(Clone, Debug)]
pub struct VirtualRouter {
    /// Priority: 1-254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement_Interval: how often a Master sends, centiseconds.
    pub advertisement_interval: u16,
    /// Preempt_Mode: a higher-priority Backup preempts a lower-priority Master.
    pub preempt: bool,
    /// This router's primary address (ties between equal priorities).
    pub primary: IpAddr,
    /// Master_Adver_Interval: the Master's advertisement interval, as learnt.
    pub master_adver_interval: u16,
    /// The current state.
    pub state: VrrpState,
    /// When the Master_Down_Timer fires, if running.
    pub master_down_at: Option<u64>,
    /// When the Adver_Timer fires, if running.
    pub adver_at: Option<u64>,
    /// The VRRP version: VRRPv2's Skew_Time is in seconds, not Master_Adver_Intervals.
    pub version: u8,
    /// The Master as a Backup last accepted it: its address and priority.
    pub master: Option<(IpAddr, u8)>,
    /// Adverts that arrived before this time are void (the group started after them, or
    /// the Master sent priority 0 then); see [`counts`](Self::counts).
    pub void_before: u64,
    /// The Master sent priority 0 and nothing since: the next takeover is for that reason.
    master_left: bool,
}

impl VirtualRouter {
    /// A router in Initialize.
    pub fn new(priority: u8, advertisement_interval: u16, preempt: bool, primary: IpAddr) -> Self {
        Self {
            priority,
            advertisement_interval,
            preempt,
            primary,
            master_adver_interval: advertisement_interval,
            state: VrrpState::Initialize,
            master_down_at: None,
            adver_at: None,
            version: vipd_common::vrrp::VERSION_3,
            master: None,
            void_before: 0,
            master_left: false,
        }
    }

    /// The router running VRRP `version` (2 or 3).
    pub fn with_version(self, version: u8) -> Self {
        Self { version, ..self }
    }

    /// Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (RFC 5798), or
    /// (256 - Priority) / 256 seconds (RFC 3768), in nanoseconds.
    pub fn skew_time(&self) -> u64 {
        let unit_cs = if self.version == vipd_common::vrrp::VERSION_2 {
            100
        } else {
            self.master_adver_interval
        };
        (256 - u64::from(self.priority)) * u64::from(unit_cs) * CS / 256
    }

    /// Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time, in nanoseconds.
    pub fn master_down_interval(&self) -> u64 {
        3 * u64::from(self.master_adver_interval) * CS + self.skew_time()
    }

    /// The next moment a timer fires, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.master_down_at, self.adver_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether an advert that arrived at `at` still counts (see `void_before`).
    pub fn counts(&self, at: u64) -> bool {
        at > self.void_before
    }

    fn become_master(&mut self, now: u64, out: &mut Vec<VrrpAction>) {
        out.push(VrrpAction::SendAdvert {
            priority: self.priority,
        });
        out.push(VrrpAction::TakeVips);
        self.adver_at = Some(now + u64::from(self.advertisement_interval) * CS);
        self.master_down_at = None;
        self.master = None;
        self.state = VrrpState::Master;
    }

    fn become_backup(&mut self, now: u64, master_adver_interval: u16) {
        self.master_adver_interval = master_adver_interval;
        self.master_down_at = Some(now + self.master_down_interval());
        self.adver_at = None;
        self.state = VrrpState::Backup;
    }

    /// Takes new parameters at `now` (a configuration reload; the state stays). A Master
    /// advertises them at once and restarts its Adver_Timer on the new interval, so Backups
    /// that learn a shorter Master_Adver_Interval hear the next advert in time; a Backup
    /// keeps its Master_Down_Timer, and the XDP program judges adverts by the new priority.
    pub fn reconfigure(
        &mut self,
        priority: u8,
        advertisement_interval: u16,
        preempt: bool,
        now: u64,
    ) -> Vec<VrrpAction> {
        self.priority = priority;
        self.advertisement_interval = advertisement_interval;
        self.preempt = preempt;
        match self.state {
            VrrpState::Master => {
                self.adver_at = Some(now + u64::from(advertisement_interval) * CS);
                vec![VrrpAction::SendAdvert { priority }]
            }
            VrrpState::Initialize => {
                self.master_adver_interval = advertisement_interval;
                Vec::new()
            }
            VrrpState::Backup => Vec::new(),
        }
    }

    /// Feeds one event at `now` (an advert's arrival time); returns what to do. Adverts
    /// that arrived before `void_before` are ignored.
    pub fn handle(&mut self, event: VrrpEvent, now: u64) -> Step {
        let from = self.state;
        let mut reason = "";
        let mut out = Vec::new();
        if matches!(event, VrrpEvent::Advert { .. }) && now < self.void_before {
            return Step::default();
        }
        match (self.state, event) {
            // 6.4.1: Startup.
            (VrrpState::Initialize, VrrpEvent::Startup { reason: why }) => {
                reason = why;
                self.void_before = now;
                self.master = None;
                self.master_left = false;
                if self.priority == 255 {
                    self.become_master(now, &mut out);
                } else {
                    self.become_backup(now, self.advertisement_interval);
                }
            }
            (VrrpState::Initialize, _) => {}
            // 6.4.2: Backup.
            (VrrpState::Backup, VrrpEvent::Shutdown { reason: why }) => {
                reason = why;
                self.master_down_at = None;
                self.master = None;
                self.state = VrrpState::Initialize;
            }
            (VrrpState::Backup, VrrpEvent::Advert { priority: 0, .. }) => {
                self.master_down_at = Some(now + self.skew_time());
                self.master = None;
                self.master_left = true;
                self.void_before = now;
            }
            (
                VrrpState::Backup,
                VrrpEvent::Advert {
                    priority,
                    max_adver_int_cs,
                    source,
                },
            ) => {
                if !self.preempt || priority >= self.priority {
                    self.become_backup(now, max_adver_int_cs);
                    self.master = Some((source, priority));
                    self.master_left = false;
                }
                // Otherwise discard: a lower-priority Master will be preempted when the
                // Master_Down_Timer fires.
            }
            (VrrpState::Backup, VrrpEvent::Startup { .. }) => {}
            // 6.4.3: Master.
            (VrrpState::Master, VrrpEvent::Shutdown { reason: why }) => {
                reason = why;
                self.adver_at = None;
                out.push(VrrpAction::SendAdvert { priority: 0 });
                out.push(VrrpAction::ReleaseVips);
                self.state = VrrpState::Initialize;
            }
            (VrrpState::Master, VrrpEvent::Advert { priority: 0, .. }) => {
                self.void_before = now;
                out.push(VrrpAction::SendAdvert {
                    priority: self.priority,
                });
                self.adver_at = Some(now + u64::from(self.advertisement_interval) * CS);
            }
            (
                VrrpState::Master,
                VrrpEvent::Advert {
                    priority,
                    max_adver_int_cs,
                    source,
                },
            ) => {
                let wins = priority > self.priority
                    || (priority == self.priority && source > self.primary);
                if wins {
                    reason = reason::PREEMPTED;
                    out.push(VrrpAction::ReleaseVips);
                    self.become_backup(now, max_adver_int_cs);
                    self.master = Some((source, priority));
                    self.master_left = false;
                }
            }
            (VrrpState::Master, VrrpEvent::Startup { .. }) => {}
        }
        self.step(from, reason, out)
    }

    /// The step from `from` to the current state.
    fn step(&self, from: VrrpState, reason: &'static str, actions: Vec<VrrpAction>) -> Step {
        Step {
            actions,
            transition: (from != self.state).then_some(Transition {
                from,
                to: self.state,
                reason,
            }),
        }
    }

    /// Fires the timers due at `now`, after checking a Backup's Master_Down_Timer against
    /// `heard`: the last advert that should have reset it (recorded by the XDP program
    /// instead of waking us). If that advert counts and is recent enough, the timer is
    /// re-armed from it, exactly as if it had been delivered; otherwise the timer fires.
    pub fn expire(&mut self, now: u64, heard: Option<Heard>) -> Step {
        if self.state == VrrpState::Backup
            && self.master_down_at.is_some_and(|t| t <= now)
            && let Some(h) = heard.filter(|h| h.at <= now && self.counts(h.at))
        {
            let mut step = self.handle(
                VrrpEvent::Advert {
                    priority: h.priority,
                    max_adver_int_cs: h.max_adver_int_cs,
                    source: h.source,
                },
                h.at,
            );
            let then = self.tick(now);
            step.actions.extend(then.actions);
            step.transition = then.transition.or(step.transition);
            return step;
        }
        self.tick(now)
    }

    /// Fires the timers due at `now`; returns what to do.
    pub fn tick(&mut self, now: u64) -> Step {
        let from = self.state;
        let mut reason = "";
        let mut out = Vec::new();
        if self.state == VrrpState::Backup && self.master_down_at.is_some_and(|t| t <= now) {
            // 6.4.2: Master_Down_Timer fired.
            reason = if self.master_left {
                reason::PRIORITY_ZERO
            } else {
                reason::MASTER_DOWN
            };
            self.master_left = false;
            self.become_master(now, &mut out);
        } else if self.state == VrrpState::Master && self.adver_at.is_some_and(|t| t <= now) {
            // 6.4.3: Adver_Timer fired.
            out.push(VrrpAction::SendAdvert {
                priority: self.priority,
            });
            self.adver_at = Some(now + u64::from(self.advertisement_interval) * CS);
        }
        self.step(from, reason, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VrrpAction::*;

    const fn cs(n: u64) -> u64 {
        n * CS
    }

    /// Master_Down_Interval of a priority-100 router at 1 s adverts.
    const DOWN: u64 = cs(300) + cs(156 * 100) / 256;

    const START: VrrpEvent = VrrpEvent::Startup { reason: "startup" };
    const STOP: VrrpEvent = VrrpEvent::Shutdown { reason: "shutdown" };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn router(priority: u8, preempt: bool) -> VirtualRouter {
        VirtualRouter::new(priority, 100, preempt, ip("192.0.2.12"))
    }

    fn advert(priority: u8, source: &str) -> VrrpEvent {
        VrrpEvent::Advert {
            priority,
            max_adver_int_cs: 100,
            source: ip(source),
        }
    }

    #[test]
    fn reconfigure_keeps_the_state_and_a_master_advertises_at_once() {
        let mut m = router(100, true);
        m.handle(START, cs(0));
        m.tick(DOWN);
        assert_eq!(m.adver_at, Some(DOWN + cs(100)));
        // From 1 s to 200 ms adverts half-way: an advert now, the next 200 ms later (not
        // at the old 1 s mark, which a Backup learning 200 ms would take for a failure).
        let out = m.reconfigure(200, 20, false, DOWN + cs(50));
        assert_eq!(out, vec![SendAdvert { priority: 200 }]);
        assert_eq!(m.state, VrrpState::Master);
        assert_eq!(m.adver_at, Some(DOWN + cs(70)));
        assert_eq!((m.priority, m.preempt), (200, false));

        let mut b = router(100, true);
        b.handle(START, cs(0));
        assert!(b.reconfigure(150, 20, true, cs(50)).is_empty());
        assert_eq!((b.state, b.master_down_at), (VrrpState::Backup, Some(DOWN)));
        assert_eq!(b.priority, 150);

        let mut idle = router(100, true);
        assert!(idle.reconfigure(100, 20, true, cs(50)).is_empty());
        idle.handle(START, cs(60));
        assert_eq!(
            idle.master_down_at,
            Some(cs(60) + idle.master_down_interval())
        );
        assert_eq!(idle.master_adver_interval, 20);
    }

    #[test]
    fn skew_and_master_down_interval_follow_the_rfc() {
        let r = router(100, true);
        // Skew_Time = ((256 - 100) * 100) / 256 = 60.9 cs; Master_Down = 3 * 100 + 60.9.
        assert_eq!(r.skew_time(), cs(156 * 100) / 256);
        assert_eq!(r.master_down_interval(), cs(300) + cs(156 * 100) / 256);
        assert_eq!(router(255, true).skew_time(), cs(100) / 256);
        // VRRPv2: in seconds, whatever the interval.
        let mut v2 = VirtualRouter::new(100, 300, true, ip("192.0.2.12")).with_version(2);
        v2.master_adver_interval = 300;
        assert_eq!(v2.skew_time(), cs(156 * 100) / 256);
        assert_eq!(v2.master_down_interval(), cs(900) + cs(156 * 100) / 256);
    }

    #[test]
    fn startup_owner_is_master_at_once_others_backup() {
        let mut owner = router(255, true);
        assert_eq!(
            owner.handle(START, cs(0)).actions,
            vec![SendAdvert { priority: 255 }, TakeVips]
        );
        assert_eq!(owner.state, VrrpState::Master);
        let mut b = router(100, true);
        assert!(b.handle(START, cs(0)).actions.is_empty());
        assert_eq!((b.state, b.master_down_at), (VrrpState::Backup, Some(DOWN)));
    }

    #[test]
    fn backup_becomes_master_when_the_master_down_timer_fires() {
        let mut b = router(100, true);
        b.handle(START, cs(0));
        assert!(b.tick(DOWN - 1).actions.is_empty());
        assert_eq!(
            b.tick(DOWN).actions,
            vec![SendAdvert { priority: 100 }, TakeVips]
        );
        assert_eq!(
            (b.state, b.adver_at),
            (VrrpState::Master, Some(DOWN + cs(100)))
        );
        assert_eq!(
            b.tick(DOWN + cs(100)).actions,
            vec![SendAdvert { priority: 100 }]
        );
    }

    #[test]
    fn adverts_reset_the_master_down_timer_and_teach_the_interval() {
        let mut b = router(100, true);
        b.handle(START, cs(0));
        b.handle(
            VrrpEvent::Advert {
                priority: 200,
                max_adver_int_cs: 10,
                source: ip("192.0.2.11"),
            },
            cs(300),
        );
        assert_eq!(b.master_adver_interval, 10);
        // 3 * 10 + (156 * 10) / 256 = 36.1 cs after the advert.
        assert_eq!(
            b.master_down_at,
            Some(cs(300) + cs(30) + cs(156 * 10) / 256)
        );
    }

    #[test]
    fn a_master_heard_by_the_kernel_re_arms_the_timer_without_a_wake_per_advert() {
        let mut b = router(100, true);
        b.handle(START, cs(0));
        let heard = |at| Heard {
            at,
            priority: 200,
            max_adver_int_cs: 100,
            source: ip("192.0.2.11"),
        };
        // The timer comes due; the Master's last advert was 50 cs ago: re-armed from it.
        assert!(
            b.expire(DOWN, Some(heard(DOWN - cs(50))))
                .actions
                .is_empty()
        );
        assert_eq!(b.state, VrrpState::Backup);
        assert_eq!(b.master_down_at, Some(DOWN - cs(50) + DOWN));
        // Due again with no newer advert: the Master is down.
        let t = DOWN - cs(50) + DOWN;
        assert_eq!(
            b.expire(t, Some(heard(DOWN - cs(50)))).actions,
            vec![SendAdvert { priority: 100 }, TakeVips]
        );
        // Nothing heard at all: fires as usual.
        let mut c = router(100, true);
        c.handle(START, cs(0));
        assert_eq!(
            c.expire(DOWN, None).actions,
            vec![SendAdvert { priority: 100 }, TakeVips]
        );
        // A preempting Backup is not held back by a lower-priority Master.
        let mut p = router(250, true);
        p.handle(START, cs(0));
        let due = p.master_down_at.unwrap();
        let lower = Heard {
            at: due - cs(1),
            ..heard(0)
        };
        assert_eq!(
            p.expire(due, Some(lower)).actions,
            vec![SendAdvert { priority: 250 }, TakeVips]
        );
    }

    #[test]
    fn priority_zero_means_take_over_after_skew_time() {
        let mut b = router(100, true);
        b.handle(START, cs(0));
        b.handle(advert(0, "192.0.2.11"), cs(50));
        let skew = cs(156 * 100) / 256;
        assert_eq!(b.master_down_at, Some(cs(50) + skew));
        assert_eq!(
            b.tick(cs(50) + skew).actions,
            vec![SendAdvert { priority: 100 }, TakeVips]
        );
    }

    #[test]
    fn preempting_backup_ignores_a_lower_master_non_preempting_does_not() {
        let mut pre = router(200, true);
        pre.handle(START, cs(0));
        let down = pre.master_down_at;
        pre.handle(advert(100, "192.0.2.11"), cs(100));
        assert_eq!(pre.master_down_at, down, "discarded: it will preempt");
        let mut nopre = router(200, false);
        nopre.handle(START, cs(0));
        nopre.handle(advert(100, "192.0.2.11"), cs(100));
        assert!(nopre.master_down_at > down, "accepted: it stays backup");
    }

    #[test]
    fn master_yields_to_higher_priority_or_higher_address_on_a_tie() {
        let mut m = router(100, true);
        m.handle(START, cs(0));
        m.tick(DOWN);
        assert!(
            m.handle(advert(50, "192.0.2.99"), cs(400))
                .actions
                .is_empty()
        );
        assert!(
            m.handle(advert(100, "192.0.2.1"), cs(400))
                .actions
                .is_empty(),
            "lower address loses a tie"
        );
        assert_eq!(
            m.handle(advert(100, "192.0.2.13"), cs(400)).actions,
            vec![ReleaseVips]
        );
        assert_eq!(m.state, VrrpState::Backup);
        let mut m2 = router(100, true);
        m2.handle(START, cs(0));
        m2.tick(DOWN);
        assert_eq!(
            m2.handle(advert(150, "192.0.2.1"), cs(400)).actions,
            vec![ReleaseVips]
        );
    }

    #[test]
    fn master_answers_priority_zero_and_shuts_down_with_it() {
        let mut m = router(100, true);
        m.handle(START, cs(0));
        m.tick(DOWN);
        assert_eq!(
            m.handle(advert(0, "192.0.2.11"), cs(400)).actions,
            vec![SendAdvert { priority: 100 }]
        );
        assert_eq!(
            m.handle(STOP, cs(410)).actions,
            vec![SendAdvert { priority: 0 }, ReleaseVips]
        );
        assert_eq!((m.state, m.next_deadline()), (VrrpState::Initialize, None));
    }

    fn transition(from: VrrpState, to: VrrpState, reason: &'static str) -> Option<Transition> {
        Some(Transition { from, to, reason })
    }

    #[test]
    fn each_step_says_its_transition_and_why() {
        use VrrpState::*;
        let mut b = router(100, true);
        let up = VrrpEvent::Startup { reason: "link_up" };
        assert_eq!(
            b.handle(up, cs(0)).transition,
            transition(Initialize, Backup, "link_up")
        );
        assert_eq!(
            b.tick(DOWN).transition,
            transition(Backup, Master, reason::MASTER_DOWN)
        );
        assert_eq!(
            b.tick(DOWN + cs(100)).transition,
            None,
            "an advert is no transition"
        );
        let higher = b.handle(advert(200, "192.0.2.11"), DOWN + cs(150));
        assert_eq!(
            higher.transition,
            transition(Master, Backup, reason::PREEMPTED)
        );
        // The Master stops: the takeover a Skew_Time later says so, and only that one.
        b.handle(advert(0, "192.0.2.11"), DOWN + cs(200));
        let due = b.master_down_at.unwrap();
        assert_eq!(
            b.tick(due).transition,
            transition(Backup, Master, reason::PRIORITY_ZERO)
        );
        let down = VrrpEvent::Shutdown {
            reason: "link_down",
        };
        assert_eq!(
            b.handle(down, due + cs(1)).transition,
            transition(Master, Initialize, "link_down")
        );
        b.handle(START, due + cs(2));
        let again = b.master_down_at.unwrap();
        assert_eq!(
            b.tick(again).transition,
            transition(Backup, Master, reason::MASTER_DOWN)
        );
    }

    #[test]
    fn a_backup_knows_its_master_until_it_stops_or_goes_silent() {
        let mut b = router(100, true);
        b.handle(START, cs(10));
        assert_eq!(b.master, None);
        b.handle(advert(200, "192.0.2.11"), cs(20));
        assert_eq!(b.master, Some((ip("192.0.2.11"), 200)));
        // A lower priority is discarded by a preempting Backup: not its Master.
        b.handle(advert(50, "192.0.2.13"), cs(30));
        assert_eq!(b.master, Some((ip("192.0.2.11"), 200)));
        // Priority 0 ends it, and what the kernel recorded before is void.
        b.handle(advert(0, "192.0.2.11"), cs(40));
        assert_eq!(b.master, None);
        assert!(!b.counts(cs(40)) && b.counts(cs(41)));
        let stale = Heard {
            at: cs(39),
            priority: 200,
            max_adver_int_cs: 100,
            source: ip("192.0.2.11"),
        };
        let due = b.master_down_at.unwrap();
        assert_eq!(
            b.expire(due, Some(stale)).transition.map(|t| t.to),
            Some(VrrpState::Master)
        );
        assert_eq!(b.master, None);
        // Adverts that arrived before a restart do not count after it.
        b.handle(STOP, cs(500));
        b.handle(START, cs(600));
        assert!(
            b.handle(advert(200, "192.0.2.11"), cs(590))
                .transition
                .is_none()
        );
        assert_eq!(b.master, None);
    }

    /// The XDP program's judgement of an advert (`vipd_common::vrrp::judge`) and this FSM's
    /// handling of it encode RFC 5798 section 6.4 twice; they must always agree: the
    /// program refreshes the Master_Down_Timer exactly when the FSM would restart it, and
    /// wakes the daemon (a notice) whenever the FSM would change state or act.
    mod agree_with_judge {
        use proptest::prelude::*;
        use vipd_common::vrrp::{Advert, Local, Notice, judge};

        use super::*;

        fn addr(last: u8) -> IpAddr {
            IpAddr::from([192, 0, 2, last])
        }

        fn bytes(a: IpAddr) -> [u8; 16] {
            let mut b = [0u8; 16];
            if let IpAddr::V4(v4) = a {
                b[..4].copy_from_slice(&v4.octets());
            }
            b
        }

        proptest! {
            #[test]
            fn on_every_advert(
                master in any::<bool>(),
                priority in 1u8..=254,
                preempt in any::<bool>(),
                own in 1u8..=254,
                advert_priority in any::<u8>(),
                from in 1u8..=254,
                interval in 1u16..=4095,
            ) {
                let now = 1_000 * CS;
                let mut r = VirtualRouter::new(priority, 100, preempt, addr(own));
                r.handle(START, 0);
                if master {
                    r.tick(r.master_down_at.unwrap_or_default());
                }
                prop_assume!(r.state == if master { VrrpState::Master } else { VrrpState::Backup });
                let before = r.clone();
                let source = addr(from);
                let actions = r.handle(
                    VrrpEvent::Advert { priority: advert_priority, max_adver_int_cs: interval, source },
                    now,
                );
                let primary = bytes(addr(own));
                let local = Local { priority, preempt, master, active: true, primary: &primary };
                let advert = Advert {
                    version: vipd_common::vrrp::VERSION_3,
                    auth_type: 0,
                    vrid: 51,
                    priority: advert_priority,
                    count: 1,
                    max_adver_int_cs: interval,
                    checksum: 0,
                };
                let verdict = judge(&local, &advert, &bytes(source), None);
                // The FSM restarted its Master_Down_Timer from this advert (as a Backup,
                // staying or becoming one), not on a priority 0 (Skew_Time only).
                let restarted = r.state == VrrpState::Backup
                    && advert_priority != 0
                    && r.master_down_at == Some(now + r.master_down_interval());
                prop_assert_eq!(verdict.refresh, restarted, "{:?} -> {:?}", before, r);
                let acted = r.state != before.state
                    || !actions.actions.is_empty()
                    || r.master_down_at != before.master_down_at;
                prop_assert_eq!(verdict.notice.is_some(), acted, "{:?}: {:?} -> {:?}", verdict, before, r);
                if advert_priority == 0 {
                    prop_assert_eq!(verdict.notice, Some(Notice::PriorityZero));
                }
            }
        }
    }
}
