//! The pool's deterministic simulator (no root needed): every bug it found keeps its seed
//! here, replayed exactly, and a bounded run of fresh seeds. `cargo xtask sim` runs many
//! more (release build).

use vipd::sim::{Options, Scenario};

/// Runs `seed` and fails with its trace's end if an invariant breaks: as drawn today, and
/// as drawn by the builds before (before the later fault kinds, and before rolling
/// dead-interval changes: the schedule it was kept for is among them).
fn clean(seed: u64) {
    let before_more = Options {
        more_faults: false,
        ..Options::default()
    };
    let before_rolling = Options {
        rolling_dead: false,
        ..before_more.clone()
    };
    for options in [Options::default(), before_more, before_rolling] {
        let scenario = Scenario::draw(seed, &options);
        let out = scenario.run(false);
        if let Some(v) = out.violation {
            let traced = scenario.shrink().run(true);
            let tail = traced.trace.len().saturating_sub(40);
            panic!("seed {seed}: {v}\n{}", traced.trace[tail..].join("\n"));
        }
    }
}

/// A peer back from a timeout but not mature (its checks fail) kept a heal deadline in the
/// past: the fast path never slept again (a busy loop on a real-time thread).
#[test]
fn a_heal_deadline_that_passed_does_not_spin() {
    clean(21);
}

/// A peer restarted during a split and came back holding what it held before: its state
/// sections were not passed on again (the same holdings), so both sides kept the VIP.
#[test]
fn a_restart_during_a_split_is_settled_on_heal() {
    clean(289);
}

/// A restarted peer's holdings were read before the event saying it restarted, which then
/// dropped them: a VIP on two nodes that hear each other.
#[test]
fn holdings_read_before_the_restart_event_count() {
    clean(148);
}

/// A node whose address adds fail kept its share placed on itself: those VIPs on nobody.
#[test]
fn a_node_that_cannot_add_addresses_steps_aside() {
    for seed in [5, 46, 110, 176] {
        clean(seed);
    }
}

/// A cut two nodes' common witness could not cover (it paused), then views that differ:
/// each side's placement put a VIP on a node whose own placement put it elsewhere (on
/// nobody), or two members both kept one (on two nodes that hear each other).
#[test]
fn views_that_differ_leave_no_vip_on_nobody_or_on_two() {
    for seed in [210, 76, 91, 121, 152, 193, 194, 242, 27, 251, 978] {
        clean(seed);
    }
}

/// A link that works one way only (a member keeps another on a third's word): its claims
/// were stale there, so placement waited for a node that would not take the VIP, and the
/// node that could see it all released what it took at once (the partial view is now
/// said in heartbeats, `FLAG_PARTIAL`); or a member that could not hear a conflict never
/// gave way (the one that does hear it now does).
#[test]
fn one_way_links_leave_no_vip_on_nobody() {
    for seed in [4, 1130, 1668, 2405, 2514, 2730] {
        clean(seed);
    }
}

/// A link losing 90 % of its frames: a state section saying a VIP was let go was lost, and
/// the node that would take it waited for the 2 s refresh while nobody answered (now every
/// heartbeat carries the state while a VIP is claimed by nobody).
#[test]
fn a_lost_release_is_said_again_at_once() {
    clean(1041);
}

/// Two cuts a third node saw across, everyone seeing the cluster only in part: the taker of
/// an orphan trusted what a member it did not hear last said (not partial, holding it),
/// and nobody took the VIP.
#[test]
fn when_every_node_sees_in_part_the_lowest_id_takes_an_orphan() {
    for seed in [6235, 12183, 13084, 13247] {
        clean(seed);
    }
}

/// Fresh seeds, a few per test run (the CI script runs thousands in a release build).
#[test]
fn fresh_seeds_break_no_invariant() {
    for seed in 5000..5010 {
        clean(seed);
    }
}

/// A rolling change of the dead interval caught halfway: a node on the shorter one took
/// over from a paused holder on the longer one before the holder's XDP program fenced
/// itself, so clients saw both answer (heartbeats now carry the dead interval, and a peer
/// is waited for the longer of its own and ours). Seed 1151: a split that heals while one
/// side is paused leaves both answering until the paused side's fence — the heal's to
/// settle, not a takeover during the pause (the checker once counted it as one).
#[test]
fn a_peer_on_a_longer_dead_interval_is_fenced_before_it_is_replaced() {
    for seed in [148, 234, 247, 294, 1151] {
        clean(seed);
    }
}

/// The member that saw the whole view could not add the orphan (its adds refused), so the
/// lowest id took over judging by the members it hears — and its orphan clock restarted
/// then, although no member it heard had claimed the VIP for seconds: 4.5 s on nobody.
/// Each basis now keeps its own clock.
#[test]
fn a_seer_that_cannot_take_an_orphan_does_not_restart_its_clock() {
    clean(60334);
}

/// Takeovers blocked in the kernel (an add that returns after the fault): seed 916, a
/// split during which one side's add blocks, then heals (the other side's takeover is
/// the split's, not the pause's); seed 416, a hand-over whose taker blocks in the add
/// (the giver may take the VIP back meanwhile: the address comes when the call returns);
/// seed 22015, an isolation shorter than the dead interval, then an add that blocks: the
/// peer missed the last heartbeats, so it takes over before the blocked node's fence, which
/// still ends it; seed 37565, a node back from a long isolation takes a VIP of a node
/// blocked before it could be verified again (its claims do not count yet), until the
/// fence.
#[test]
fn takeovers_blocked_in_the_kernel_leave_one_owner() {
    for seed in [416, 916, 22015, 37565] {
        clean(seed);
    }
}
