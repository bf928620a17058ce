//! The VIP-list section: a node's whole VIP list, in chunks, for peers that run another
//! list (a rolling configuration change) and so cannot read its state sections' bitmaps.
//!
//! It travels in place of a state section (`state_len` bytes after the heartbeat header),
//! sent only while some peer's state sections carry another pool digest. All integers
//! big-endian:
//!
//! ```text
//! 0   pool_digest  u32  digest of the whole list (as in the state section)
//! 4   mark         u16  LIST_MARK (0xFFFF): never a state section's VIP count, so a state
//!                       section parser finds it truncated
//! 6   total        u16  VIPs in the whole list (at most MAX_LIST)
//! 8   first        u16  index in the list of this chunk's first entry
//! 10  count        u16  entries in this chunk
//! 12  entries      [family u8 (4 or 6), prefix_len u8, address (4 or 16 bytes); count]
//! ```
//!
//! The list is in the sender's order (sorted): entry `i` is bit `i` of its state sections.
//! The receiver assembles the chunks and keeps the list only if its digest matches.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The `mark` field of a VIP-list section.
pub const LIST_MARK: u16 = 0xFFFF;
/// Bytes before the entries.
pub const LIST_HEADER_LEN: usize = 12;
/// Longest list a chunk may announce (the pool's limit).
pub const MAX_LIST: u16 = 10_000;

/// Whether a section after a heartbeat header is a VIP-list chunk (not a state section).
pub fn is_list(section: &[u8]) -> bool {
    section.len() >= 6 && u16::from_be_bytes([section[4], section[5]]) == LIST_MARK
}

/// Bytes one entry for `addr` takes.
pub const fn entry_len(addr: &IpAddr) -> usize {
    match addr {
        IpAddr::V4(_) => 6,
        IpAddr::V6(_) => 18,
    }
}

/// Why a VIP-list chunk is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListError {
    /// Shorter or longer than its entries say, or not a list chunk.
    Malformed,
    /// An entry of an unknown family or with a prefix too long for it.
    BadEntry,
    /// Its entries do not fit in the list it announces.
    OutOfRange,
}

/// One parsed chunk of a VIP list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListChunk<'a> {
    /// Digest of the whole list.
    pub pool_digest: u32,
    /// VIPs in the whole list.
    pub total: u16,
    /// Index of the first entry.
    pub first: u16,
    /// Entries in this chunk.
    pub count: u16,
    entries: &'a [u8],
}

impl<'a> ListChunk<'a> {
    /// Parses a chunk (exactly the section's bytes); every entry is checked.
    pub fn parse(b: &'a [u8]) -> Result<Self, ListError> {
        if b.len() < LIST_HEADER_LEN || !is_list(b) {
            return Err(ListError::Malformed);
        }
        let at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let chunk = Self {
            pool_digest: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            total: at(6),
            first: at(8),
            count: at(10),
            entries: &b[LIST_HEADER_LEN..],
        };
        if chunk.total > MAX_LIST
            || u32::from(chunk.first) + u32::from(chunk.count) > u32::from(chunk.total)
        {
            return Err(ListError::OutOfRange);
        }
        let mut seen = 0u16;
        let mut rest = chunk.entries;
        while !rest.is_empty() {
            let (_, len) = entry(rest)?;
            rest = &rest[len..];
            seen += 1;
        }
        if seen != chunk.count {
            return Err(ListError::Malformed);
        }
        Ok(chunk)
    }

    /// The entries, (address, prefix length), in list order from index `first`.
    pub fn entries(&self) -> impl Iterator<Item = (IpAddr, u8)> + 'a {
        let mut rest = self.entries;
        core::iter::from_fn(move || {
            let (e, len) = entry(rest).ok()?;
            rest = &rest[len..];
            Some(e)
        })
    }

    /// Writes a chunk of `entries` (starting at index `first` of a list of `total`) into
    /// `out`, which must hold `LIST_HEADER_LEN` plus the entries' lengths. Returns the
    /// bytes written.
    pub fn write(
        out: &mut [u8],
        pool_digest: u32,
        total: u16,
        first: u16,
        entries: &[(IpAddr, u8)],
    ) -> usize {
        out[0..4].copy_from_slice(&pool_digest.to_be_bytes());
        out[4..6].copy_from_slice(&LIST_MARK.to_be_bytes());
        out[6..8].copy_from_slice(&total.to_be_bytes());
        out[8..10].copy_from_slice(&first.to_be_bytes());
        out[10..12].copy_from_slice(&(entries.len() as u16).to_be_bytes());
        let mut at = LIST_HEADER_LEN;
        for (addr, prefix) in entries {
            out[at + 1] = *prefix;
            match addr {
                IpAddr::V4(a) => {
                    out[at] = 4;
                    out[at + 2..at + 6].copy_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out[at] = 6;
                    out[at + 2..at + 18].copy_from_slice(&a.octets());
                }
            }
            at += entry_len(addr);
        }
        at
    }
}

/// Reads the entry at the start of `b`: (address, prefix length) and its length.
fn entry(b: &[u8]) -> Result<((IpAddr, u8), usize), ListError> {
    let (&family, rest) = b.split_first().ok_or(ListError::Malformed)?;
    let (&prefix, rest) = rest.split_first().ok_or(ListError::Malformed)?;
    match family {
        4 => {
            let a: [u8; 4] = rest
                .get(..4)
                .and_then(|a| a.try_into().ok())
                .ok_or(ListError::Malformed)?;
            if prefix > 32 {
                return Err(ListError::BadEntry);
            }
            Ok(((IpAddr::V4(Ipv4Addr::from(a)), prefix), 6))
        }
        6 => {
            let a: [u8; 16] = rest
                .get(..16)
                .and_then(|a| a.try_into().ok())
                .ok_or(ListError::Malformed)?;
            if prefix > 128 {
                return Err(ListError::BadEntry);
            }
            Ok(((IpAddr::V6(Ipv6Addr::from(a)), prefix), 18))
        }
        _ => Err(ListError::BadEntry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::State;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
    }

    #[test]
    fn a_chunk_round_trips_both_families() {
        let entries = [(v4(201), 32), (v4(202), 24), (v6(0x201), 128)];
        let mut out = [0u8; 64];
        let len = ListChunk::write(&mut out, 0xABCD_0123, 5, 1, &entries);
        assert_eq!(len, LIST_HEADER_LEN + 6 + 6 + 18);
        let chunk = ListChunk::parse(&out[..len]).unwrap();
        assert!(is_list(&out[..len]));
        assert_eq!(
            (chunk.pool_digest, chunk.total, chunk.first, chunk.count),
            (0xABCD_0123, 5, 1, 3)
        );
        let mut got = chunk.entries();
        for e in entries {
            assert_eq!(got.next(), Some(e));
        }
        assert_eq!(got.next(), None);
    }

    #[test]
    fn a_state_section_parser_refuses_a_list_chunk() {
        let mut out = [0u8; 64];
        let len = ListChunk::write(&mut out, 1, 2, 0, &[(v4(1), 32), (v4(2), 32)]);
        assert!(State::parse(&out[..len]).is_err());
        let mut state = [0u8; 64];
        let n = State::write(&mut state, 1, 2, |_| true, &[]);
        assert!(!is_list(&state[..n]));
    }

    #[test]
    fn damaged_chunks_are_refused() {
        let mut out = [0u8; 64];
        let len = ListChunk::write(&mut out, 1, 5, 1, &[(v4(1), 32), (v6(1), 64)]);
        let good = &out[..len];
        assert!(ListChunk::parse(good).is_ok());
        // Every truncation.
        for cut in 0..len {
            assert!(ListChunk::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A count that is not the entries'.
        let mut bad = out;
        bad[11] = 3;
        assert_eq!(ListChunk::parse(&bad[..len]), Err(ListError::Malformed));
        // Entries beyond the announced total.
        let mut bad = out;
        bad[7] = 2;
        assert_eq!(ListChunk::parse(&bad[..len]), Err(ListError::OutOfRange));
        // A total above the limit.
        let mut bad = out;
        bad[6..8].copy_from_slice(&(MAX_LIST + 1).to_be_bytes());
        assert_eq!(ListChunk::parse(&bad[..len]), Err(ListError::OutOfRange));
        // An unknown family, an impossible prefix.
        let mut bad = out;
        bad[LIST_HEADER_LEN] = 5;
        assert_eq!(ListChunk::parse(&bad[..len]), Err(ListError::BadEntry));
        let mut bad = out;
        bad[LIST_HEADER_LEN + 1] = 33;
        assert_eq!(ListChunk::parse(&bad[..len]), Err(ListError::BadEntry));
    }
}
