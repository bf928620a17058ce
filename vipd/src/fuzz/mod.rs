//! Differential fuzzing of the XDP program (`cargo xtask fuzz-xdp`): the loaded program
//! ([`crate::testrun`]) and a host reference built on the same `vipd_common` parsers
//! ([`model`]) get the same generated frames ([`frames`]); their verdicts, the counters
//! each frame adds to, the peer table and the events must agree. Any difference is a bug
//! in one of the two — a parser the kernel runs differently, or a check in one place only.

pub mod frames;
pub mod model;

use std::collections::BTreeMap;

use serde::Serialize;
use vipd_common::maps::{Counter, EventKind, PeerState, VipClaim};

use crate::testrun::Detached;

/// Differences a report spells out (the rest are only counted).
const SHOWN: usize = 10;

/// What a run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Frames run through both.
    pub frames: u64,
    /// Frames on which the two disagreed.
    pub differences: u64,
    /// The first few, described.
    pub first: Vec<String>,
    /// How often each counter was hit (by the program), over all setups.
    pub counters: BTreeMap<&'static str, u64>,
    /// Frames the program dropped / passed.
    pub dropped: u64,
    /// See `dropped`.
    pub passed: u64,
    /// Peer events the program pushed.
    pub events: u64,
    /// The configurations fuzzed.
    pub setups: Vec<&'static str>,
}

impl Report {
    /// Counts one difference, spelling out the first few.
    fn differ(&mut self, text: String) {
        self.differences += 1;
        if self.first.len() < SHOWN {
            self.first.push(text);
        }
    }
}

/// Runs `frames` frames (split over [`frames::setups`]) from `seed`; needs CAP_BPF. Each
/// setup starts with every well-formed sample cut at every length.
pub fn run(frames: u64, seed: u64) -> anyhow::Result<Report> {
    let setups = frames::setups();
    let mut report = Report {
        setups: setups.iter().map(|s| s.name).collect(),
        ..Report::default()
    };
    let n_setups = setups.len() as u64;
    for (i, setup) in setups.iter().enumerate() {
        let per_setup = frames / n_setups + u64::from((i as u64) < frames % n_setups);
        let mut program = Detached::load(setup)?;
        let mut model = model::Model::new(setup);
        let mut source = frames::Frames::new(seed.wrapping_add(i as u64));
        let mut before = program.counters()?;
        let mut cuts = source
            .samples()
            .into_iter()
            .flat_map(|f| (14..=f.len()).map(move |n| f[..n].to_vec()))
            .collect::<Vec<_>>()
            .into_iter();
        for n in 0..per_setup {
            let frame = cuts.next().unwrap_or_else(|| source.next_frame());
            let expected = model.classify(&frame);
            let verdict = program.run(&frame)?;
            let after = program.counters()?;
            let hit: Vec<Counter> = Counter::ALL
                .iter()
                .zip(before.iter().zip(&after))
                .flat_map(|(c, (b, a))| std::iter::repeat_n(*c, (a - b) as usize))
                .collect();
            before = after;
            let events: Vec<(u32, Option<EventKind>)> = program
                .events()
                .iter()
                .map(|e| (e.node_id, EventKind::from_u8(e.kind)))
                .collect();
            program.drain_vrrp_notices();
            let notices = program.claim_notices();
            let mut problems = Vec::new();
            match expected.claimed {
                Some((vip, must_tell)) => {
                    let got = program.claim(&vip)?.map(untimed_claim);
                    let want = model.claims.get(&vip).copied().map(untimed_claim);
                    if got != want {
                        problems.push(format!("claim: {got:?}, model {want:?}"));
                    }
                    // A known claimer is told again after a second of the program's clock.
                    if notices > 1 || (must_tell && notices == 0) {
                        problems.push(format!("{notices} claim notices, model told: {must_tell}"));
                    }
                }
                None if notices > 0 => {
                    problems.push(format!("{notices} claim notices, model none"))
                }
                None => {}
            }
            if verdict != expected.verdict {
                problems.push(format!("verdict {verdict}, model {}", expected.verdict));
            }
            let want = vec![expected.counter];
            if sorted(&hit) != sorted(&want) {
                problems.push(format!("counters {hit:?}, model {want:?}"));
            }
            let want_events: Vec<_> = expected
                .event
                .map(|(id, k)| (id, Some(k)))
                .into_iter()
                .collect();
            if events != want_events {
                problems.push(format!("events {events:?}, model {want_events:?}"));
            }
            if let Some(id) = expected.recorded {
                let got = program.peer(id)?.map(untimed);
                let want = model.peers.get(&id).copied().map(untimed);
                if got != want {
                    problems.push(format!("peer {id}: {got:?}, model {want:?}"));
                }
            }
            for c in &hit {
                *report.counters.entry(c.name()).or_default() += 1;
            }
            match verdict {
                model::DROP => report.dropped += 1,
                _ => report.passed += 1,
            }
            report.events += events.len() as u64;
            report.frames += 1;
            if !problems.is_empty() {
                report.differ(format!(
                    "{}, frame {n}: {}; frame {}",
                    setup.name,
                    problems.join("; "),
                    hex(&frame)
                ));
            }
        }
        // Every claim at the end: nothing recorded that the model did not.
        for vip in &setup.held {
            let got = program.claim(vip)?.map(untimed_claim);
            let want = model.claims.get(vip).copied().map(untimed_claim);
            if got != want {
                report.differ(format!(
                    "{}, at the end: claim {vip:?}: {got:?}, model {want:?}",
                    setup.name
                ));
            }
        }
        // The whole table at the end: nothing recorded that the model did not.
        for id in 0..=frames::NODES + 1 {
            let got = program.peer(id)?.map(untimed);
            let want = model.peers.get(&id).copied().map(untimed);
            if got != want {
                report.differ(format!(
                    "{}, at the end: peer {id}: {got:?}, model {want:?}",
                    setup.name
                ));
            }
        }
    }
    Ok(report)
}

fn sorted(c: &[Counter]) -> Vec<u32> {
    let mut v: Vec<u32> = c.iter().map(|c| *c as u32).collect();
    v.sort_unstable();
    v
}

/// A peer entry without its times (the program's come from its clock, the model has none).
fn untimed(p: PeerState) -> PeerState {
    PeerState {
        last_seen_ns: 0,
        first_seen_ns: 0,
        ..p
    }
}

/// A claim without its times.
fn untimed_claim(c: VipClaim) -> VipClaim {
    VipClaim {
        first_ns: 0,
        last_ns: 0,
        notified_ns: 0,
        ..c
    }
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    /// Program and model agree on a few thousand frames of each configuration (the long
    /// runs are `cargo xtask fuzz-xdp`).
    #[test]
    #[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
    fn the_xdp_program_and_its_host_reference_agree() {
        vipd_lab::lab::require_root();
        let report = super::run(6_000, 42).expect("fuzzing");
        assert_eq!(report.frames, 6_000);
        assert_eq!(report.differences, 0, "{:#?}", report.first);
        // The run reached every outcome a heartbeat or advert can have.
        for name in [
            "heartbeats_accepted",
            "heartbeats_bad_auth",
            "heartbeats_bad_ttl",
            "heartbeats_replayed",
            "heartbeats_unknown_source",
            "heartbeats_malformed",
            "vrrp_accepted",
            "vrrp_bad_checksum",
            "vrrp_not_link_local",
            "neighbor_claims",
        ] {
            assert!(
                report.counters.get(name).is_some_and(|&n| n > 0),
                "{name} never hit"
            );
        }
    }
}
