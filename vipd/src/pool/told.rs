//! What the slow path has told the fast path of each peer (verified in which incarnation,
//! holding what), so each fact crosses the channel once — and again after the fast path
//! forgot the peer ([`Told::forget`]). Pure: the daemon and the simulator keep it alike.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use vipd_common::maps::MAX_PEERS;

use super::messages::Command;

/// The facts passed to the fast path, per peer.
#[derive(Debug, Default)]
pub struct Told {
    /// The incarnation each peer was last verified in.
    verified: BTreeMap<u32, u64>,
    /// What each peer, in which incarnation, was last said to hold (the fast path drops
    /// what a peer held when it restarts).
    holdings: BTreeMap<u32, (u64, BTreeSet<IpAddr>)>,
}

impl Told {
    /// The command saying `peer` echoed our incarnation in its `incarnation`, unless said.
    pub fn verify(&self, peer: u32, incarnation: u64) -> Option<Command> {
        (self.verified.get(&peer) != Some(&incarnation))
            .then_some(Command::Verified { peer, incarnation })
    }

    /// The fast path took that command.
    pub fn verified(&mut self, peer: u32, incarnation: u64) {
        // Bounded: forgetting only means saying it again (the fast path keeps its own).
        if self.verified.len() >= 2 * MAX_PEERS as usize {
            self.verified.clear();
        }
        self.verified.insert(peer, incarnation);
    }

    /// The command saying what `peer`, in `incarnation`, holds, unless said.
    pub fn holdings(
        &self,
        peer: u32,
        incarnation: u64,
        vips: &BTreeSet<IpAddr>,
    ) -> Option<Command> {
        let said = self
            .holdings
            .get(&peer)
            .is_some_and(|(i, v)| *i == incarnation && v == vips);
        (!said).then(|| Command::Holdings {
            peer,
            incarnation,
            vips: vips.clone(),
        })
    }

    /// The fast path took that command.
    pub fn held(&mut self, peer: u32, incarnation: u64, vips: BTreeSet<IpAddr>) {
        if self.holdings.len() >= 2 * MAX_PEERS as usize && !self.holdings.contains_key(&peer) {
            self.holdings.clear();
        }
        self.holdings.insert(peer, (incarnation, vips));
    }

    /// Whether `peer`, verified in `incarnation`, said in it that it holds `vip`.
    pub fn holds(&self, peer: u32, incarnation: u64, vip: &IpAddr) -> bool {
        self.verified.get(&peer) == Some(&incarnation)
            && self
                .holdings
                .get(&peer)
                .is_some_and(|(i, vips)| *i == incarnation && vips.contains(vip))
    }

    /// Every peer's holdings are to be said again (this node's list changed).
    pub fn unsay_holdings(&mut self) {
        self.holdings.clear();
    }

    /// The fast path forgot `peer`: everything is said again when it is heard from.
    pub fn forget(&mut self, peer: u32) {
        self.verified.remove(&peer);
        self.holdings.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_are_said_again_after_a_restart() {
        // The fast path drops a peer's holdings when the peer restarts; the same holdings
        // from its new incarnation must reach it again.
        let mut told = Told::default();
        let vips: BTreeSet<IpAddr> = ["192.0.2.201".parse().unwrap()].into();
        told.held(2, 7, vips.clone());
        assert!(told.holdings(2, 7, &vips).is_none());
        assert!(told.holdings(2, 8, &vips).is_some());
    }

    #[test]
    fn each_fact_is_said_once_and_again_after_the_peer_is_forgotten() {
        let mut told = Told::default();
        assert!(told.verify(2, 7).is_some());
        told.verified(2, 7);
        assert!(told.verify(2, 7).is_none());
        // A new incarnation is a new fact.
        assert!(told.verify(2, 8).is_some());
        let vips: BTreeSet<IpAddr> = ["192.0.2.201".parse().unwrap()].into();
        assert!(told.holdings(2, 7, &vips).is_some());
        told.held(2, 7, vips.clone());
        assert!(told.holdings(2, 7, &vips).is_none());
        // Forgotten by the fast path (a long split): said again.
        told.forget(2);
        assert!(told.verify(2, 7).is_some());
        assert!(told.holdings(2, 7, &vips).is_some());
    }
}
