//! Peers on another VIP list — a configuration change rolled out node by node. A state
//! section's bitmap indexes its sender's list, so a node reads a peer's holdings only with
//! that list at hand: nodes whose pool digests differ send their lists in chunks
//! ([`vip_list`]), and each node keeps the lists it has seen (its own earlier ones too) by
//! digest. Placement then puts each VIP on the members that list it
//! ([`placement::place_by_lists`](super::placement::place_by_lists)).
//!
//! Pure: the slow path feeds it chunks and asks it for lists; the bounds keep what a peer
//! can make it store small.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use vipd_common::vip_list::{LIST_HEADER_LEN, ListChunk, entry_len};

use super::pool_digest;
use crate::vip::Vip;

/// Entry bytes per chunk: a chunk, with the heartbeat's header and MAC, stays well inside
/// a 1,500-byte frame (IPv6 and UDP headers included).
const CHUNK_ENTRIES_LEN: usize = 1_200;
/// Lists kept by digest (this node's own included).
const KNOWN: usize = 16;
/// Lists being assembled at once (one per sending peer).
const ASSEMBLING: usize = 64;

/// A list, in its sender's order: entry `i` is bit `i` of its state sections.
pub type List = Arc<[Vip]>;

/// This node's list in chunks, ready to send.
pub fn chunks(vips: &[Vip]) -> Vec<Vec<u8>> {
    let digest = pool_digest(vips);
    let total = vips.len() as u16;
    let mut out = Vec::new();
    let mut first = 0;
    while first < vips.len() {
        let mut len = 0;
        let mut end = first;
        while end < vips.len() && len + entry_len(&vips[end].addr) <= CHUNK_ENTRIES_LEN {
            len += entry_len(&vips[end].addr);
            end += 1;
        }
        let entries: Vec<(IpAddr, u8)> = vips[first..end]
            .iter()
            .map(|v| (v.addr, v.prefix_len))
            .collect();
        let mut chunk = vec![0u8; LIST_HEADER_LEN + len];
        ListChunk::write(&mut chunk, digest, total, first as u16, &entries);
        out.push(chunk);
        first = end;
    }
    out
}

/// A peer's list, chunk by chunk.
struct Assembly {
    digest: u32,
    entries: Vec<Option<Vip>>,
    filled: usize,
    /// When it was last fed (for eviction).
    touched: u64,
}

/// The lists known by digest, and those being received.
#[derive(Default)]
pub struct Lists {
    /// Most recently learned last.
    known: Vec<(u32, List)>,
    assembling: BTreeMap<u32, Assembly>,
    /// Counts chunks, for eviction order.
    clock: u64,
}

impl Lists {
    /// Lists knowing `own` (this node's list).
    pub fn new(own: &[Vip]) -> Self {
        let mut lists = Self::default();
        lists.learn(own.into());
        lists
    }

    /// The list whose digest is `digest`, if known.
    pub fn get(&self, digest: u32) -> Option<&List> {
        self.known
            .iter()
            .find(|(d, _)| *d == digest)
            .map(|(_, list)| list)
    }

    /// Keeps `list` (this node's new one on reload, or a peer's), forgetting the oldest
    /// beyond the bound.
    pub fn learn(&mut self, list: List) {
        let digest = pool_digest(&list);
        self.known.retain(|(d, _)| *d != digest);
        if self.known.len() >= KNOWN {
            self.known.remove(0);
        }
        self.known.push((digest, list));
    }

    /// A chunk from `peer`. Returns the digest of a list it completed (checked against
    /// its digest), now known.
    pub fn on_chunk(&mut self, peer: u32, chunk: &ListChunk) -> Option<u32> {
        if self.get(chunk.pool_digest).is_some() {
            self.assembling.remove(&peer);
            return None;
        }
        self.clock += 1;
        let fresh = self.assembling.get(&peer).is_none_or(|a| {
            a.digest != chunk.pool_digest || a.entries.len() != usize::from(chunk.total)
        });
        if fresh {
            if !self.assembling.contains_key(&peer) && self.assembling.len() >= ASSEMBLING {
                let oldest = self.assembling.iter().min_by_key(|(_, a)| a.touched);
                if let Some(&oldest) = oldest.map(|(id, _)| id) {
                    self.assembling.remove(&oldest);
                }
            }
            self.assembling.insert(
                peer,
                Assembly {
                    digest: chunk.pool_digest,
                    entries: vec![None; chunk.total.into()],
                    filled: 0,
                    touched: 0,
                },
            );
        }
        let a = self.assembling.get_mut(&peer)?;
        a.touched = self.clock;
        for (i, (addr, prefix_len)) in chunk.entries().enumerate() {
            let slot = &mut a.entries[usize::from(chunk.first) + i];
            if slot.is_none() {
                a.filled += 1;
            }
            *slot = Some(Vip { addr, prefix_len });
        }
        if a.filled < a.entries.len() {
            return None;
        }
        let a = self.assembling.remove(&peer)?;
        let list: Vec<Vip> = a.entries.into_iter().flatten().collect();
        // A list that is not what its digest says (a damaged or mixed-up assembly) is
        // dropped: the next round brings it again.
        (pool_digest(&list) == a.digest).then(|| {
            self.learn(list.into());
            a.digest
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vips(n: usize, v6: bool) -> Vec<Vip> {
        let mut out: Vec<Vip> = (0..n)
            .map(|i| {
                let text = if v6 {
                    format!("2001:db8::{:x}", i + 1)
                } else {
                    format!("198.51.{}.{}", i / 250, i % 250 + 1)
                };
                text.parse().unwrap()
            })
            .collect();
        out.sort();
        out
    }

    fn parse(chunk: &[u8]) -> ListChunk<'_> {
        ListChunk::parse(chunk).unwrap()
    }

    #[test]
    fn a_long_list_is_sent_in_chunks_and_assembled_in_any_order() {
        for v6 in [false, true] {
            let theirs = vips(1_000, v6);
            let sent = chunks(&theirs);
            assert!(sent.len() > 1);
            assert!(
                sent.iter()
                    .all(|c| c.len() <= LIST_HEADER_LEN + CHUNK_ENTRIES_LEN)
            );
            let mut lists = Lists::new(&vips(3, false));
            let digest = pool_digest(&theirs);
            assert!(lists.get(digest).is_none());
            // Backwards, with a repeat: complete only once every entry is in.
            let (last, rest) = sent.split_first().unwrap();
            for c in rest.iter().rev().chain(rest.first()) {
                assert_eq!(lists.on_chunk(7, &parse(c)), None);
            }
            assert_eq!(lists.on_chunk(7, &parse(last)), Some(digest));
            assert_eq!(&lists.get(digest).unwrap()[..], &theirs[..]);
            // Known now: later rounds change nothing.
            assert_eq!(lists.on_chunk(7, &parse(last)), None);
        }
    }

    #[test]
    fn a_list_that_is_not_its_digest_is_dropped() {
        let theirs = vips(3, false);
        let mut chunk = chunks(&theirs).remove(0);
        chunk[0] ^= 1;
        let mut lists = Lists::new(&[]);
        assert_eq!(lists.on_chunk(2, &parse(&chunk)), None);
        assert!(lists.known.len() == 1 && lists.assembling.is_empty());
    }

    #[test]
    fn a_new_list_from_a_peer_restarts_its_assembly() {
        let (a, b) = (vips(1_000, true), vips(999, true));
        let mut lists = Lists::new(&[]);
        assert_eq!(lists.on_chunk(2, &parse(&chunks(&a)[0])), None);
        let mut done = None;
        for c in chunks(&b) {
            done = lists.on_chunk(2, &parse(&c));
        }
        assert_eq!(done, Some(pool_digest(&b)));
        assert!(lists.get(pool_digest(&a)).is_none());
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let mut lists = Lists::new(&vips(1, false));
        for n in 2..2 + KNOWN + 5 {
            lists.learn(vips(n, false).into());
        }
        assert_eq!(lists.known.len(), KNOWN);
        let long = chunks(&vips(2_000, false));
        for peer in 0..(ASSEMBLING as u32 + 10) {
            lists.on_chunk(peer, &parse(&long[0]));
        }
        assert_eq!(lists.assembling.len(), ASSEMBLING);
    }
}
