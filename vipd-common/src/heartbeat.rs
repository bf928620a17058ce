//! The vipd heartbeat, wire format version 4 (version 3 had no `dead_us` field, version 2
//! no `hears` field, version 1 no echoes in the state section; nodes of different versions
//! do not hear each other: counted as malformed).
//!
//! A heartbeat is the payload of one UDP datagram, all integers big-endian:
//!
//! ```text
//!  0      magic        u32  0x56495044 ("VIPD")
//!  4      version      u8   4
//!  5      flags        u8   FLAG_LEAVING | FLAG_MATURE | FLAG_PARTIAL
//!  6      auth_len     u16  length of the MAC trailer that follows the header (0: none)
//!  8      cluster_id   u32  which cluster this node belongs to (wide: no 8-bit VRID clashes)
//! 12      node_id      u32  the sender, unique in the cluster, never 0
//! 16      incarnation  u64  changes every time the sender's daemon starts
//! 24      sequence     u64  +1 per heartbeat within one incarnation
//! 32      interval_us  u32  the sender's heartbeat interval, microseconds
//! 36      weight       u16  the sender's placement weight
//! 38      state_len    u16  length of the state section after the header (0: none)
//! 40      view_digest  u64  digest of the sender's membership view (0: not computed)
//! 48      hears        u64  bit i: the i-th member of the sender's view (ids in ascending
//!                           order, the sender included) was heard within 1.5 of the
//!                           sender's intervals when the bits were taken, at most one
//!                           interval before sending (0: no evidence)
//! 56      dead_us      u32  the sender's dead interval, microseconds: its peers wait at
//!                           least this long before taking its VIPs over (it fences itself
//!                           after it), whatever their own dead interval
//! 60      reserved     u32  sent as 0, ignored on receipt (room for a later field)
//! 64      state        [u8; state_len]  which VIPs the sender holds and which peers'
//!                                        incarnations it hears, see [`State`] (or a chunk
//!                                        of its VIP list, see [`crate::vip_list`])
//!  …      auth         [u8; auth_len]   MAC trailer (0 or 16 bytes), see [`crate::auth`]
//! ```
//!
//! [`Heartbeat::parse`] is the one parser: the daemon calls it on slices, the XDP program
//! on a bounds-checked `[u8; HEADER_LEN]` read straight from the packet. The XDP program
//! consumes plain heartbeats and passes those with a state section up to the daemon, which
//! sends one whenever what it holds changes, and now and then as a refresh. With a shared
//! key configured, every heartbeat ends with a 16-byte trailer of two SipHash-2-4 MACs.

/// "VIPD" in ASCII.
pub const MAGIC: u32 = 0x5649_5044;
/// The wire format version this crate reads and writes.
pub const VERSION: u8 = 4;
/// Bytes in the fixed header (everything but the state section and the MAC trailer).
pub const HEADER_LEN: usize = 64;
/// Longest state section whose MAC trailer the XDP program looks for (a bound the verifier
/// can see on the trailer's offset; 10,000 VIPs and 64 echoes take 2,036 bytes): a longer
/// one fails authentication.
pub const MAX_STATE_LEN: usize = 2047;
/// Default UDP port heartbeats are sent to.
pub const DEFAULT_PORT: u16 = 7846;
/// The default IPv4 multicast group of heartbeats (link-local, unassigned by IANA).
pub const DEFAULT_GROUP_V4: core::net::Ipv4Addr = core::net::Ipv4Addr::new(224, 0, 0, 199);

/// The sender is stopping on purpose: peers adopt its VIPs at once.
pub const FLAG_LEAVING: u8 = 0x01;
/// The sender has been up for its hold-down and may be given VIPs.
pub const FLAG_MATURE: u8 = 0x02;
/// The sender sees the cluster only in part: it keeps a member it does not hear on
/// another's word, a member does not hear it, or its members' views differ from its own.
/// Its peers then keep a VIP they took because nobody claimed it (placement on views that
/// differ may leave one on nobody). Nodes that do not know this bit ignore it.
pub const FLAG_PARTIAL: u8 = 0x04;

/// One heartbeat's header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Bitwise OR of `FLAG_*`.
    pub flags: u8,
    /// Length of the MAC trailer after the header.
    pub auth_len: u16,
    /// The cluster the sender belongs to.
    pub cluster_id: u32,
    /// The sender's node id (non-zero).
    pub node_id: u32,
    /// Changes whenever the sender restarts.
    pub incarnation: u64,
    /// Per-incarnation sequence number.
    pub sequence: u64,
    /// The sender's heartbeat interval in microseconds.
    pub interval_us: u32,
    /// The sender's placement weight.
    pub weight: u16,
    /// Length of the state section that follows the header.
    pub state_len: u16,
    /// Digest of the sender's membership view.
    pub view_digest: u64,
    /// Which members of the sender's view it heard lately (see the module's table): what
    /// peers use as indirect evidence before declaring a silent node lost.
    pub hears: u64,
    /// The sender's dead interval in microseconds (0: not said, then a peer's own counts).
    pub dead_us: u32,
}

/// Why a frame is not a heartbeat of our cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the header, or than header plus the announced trailer.
    Truncated,
    /// The magic number is wrong: not a vipd heartbeat.
    BadMagic,
    /// A wire format version this build does not read.
    BadVersion(u8),
    /// A well-formed heartbeat of another cluster.
    ForeignCluster(u32),
    /// Node id 0 is reserved.
    BadNodeId,
}

#[inline(always)]
fn be16(b: &[u8; HEADER_LEN], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn be64(b: &[u8; HEADER_LEN], at: usize) -> u64 {
    (be32(b, at) as u64) << 32 | be32(b, at + 4) as u64
}

/// Whether heartbeat flags (a heartbeat's, or as a peer entry or event records them) say
/// the sender is leaving.
#[inline(always)]
pub const fn is_leaving(flags: u8) -> bool {
    flags & FLAG_LEAVING != 0
}

impl Heartbeat {
    /// Parses a fixed-size header and checks it belongs to `cluster_id`.
    ///
    /// `payload_len` is the whole UDP payload's length, used to check the MAC trailer
    /// announced by `auth_len` is present.
    #[inline(always)]
    pub fn parse_header(
        b: &[u8; HEADER_LEN],
        payload_len: usize,
        cluster_id: u32,
    ) -> Result<Self, ParseError> {
        if be32(b, 0) != MAGIC {
            return Err(ParseError::BadMagic);
        }
        if b[4] != VERSION {
            return Err(ParseError::BadVersion(b[4]));
        }
        let hb = Heartbeat {
            flags: b[5],
            auth_len: be16(b, 6),
            cluster_id: be32(b, 8),
            node_id: be32(b, 12),
            incarnation: be64(b, 16),
            sequence: be64(b, 24),
            interval_us: be32(b, 32),
            weight: be16(b, 36),
            state_len: be16(b, 38),
            view_digest: be64(b, 40),
            hears: be64(b, 48),
            dead_us: be32(b, 56),
        };
        if payload_len < HEADER_LEN + hb.state_len as usize + hb.auth_len as usize {
            return Err(ParseError::Truncated);
        }
        if hb.cluster_id != cluster_id {
            return Err(ParseError::ForeignCluster(hb.cluster_id));
        }
        if hb.node_id == 0 {
            return Err(ParseError::BadNodeId);
        }
        Ok(hb)
    }

    /// Parses a whole UDP payload and checks it belongs to `cluster_id`.
    pub fn parse(payload: &[u8], cluster_id: u32) -> Result<Self, ParseError> {
        let header: &[u8; HEADER_LEN] = payload
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(ParseError::Truncated)?;
        Self::parse_header(header, payload.len(), cluster_id)
    }

    /// Writes the header (without trailer) in wire format.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4] = VERSION;
        out[5] = self.flags;
        out[6..8].copy_from_slice(&self.auth_len.to_be_bytes());
        out[8..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[12..16].copy_from_slice(&self.node_id.to_be_bytes());
        out[16..24].copy_from_slice(&self.incarnation.to_be_bytes());
        out[24..32].copy_from_slice(&self.sequence.to_be_bytes());
        out[32..36].copy_from_slice(&self.interval_us.to_be_bytes());
        out[36..38].copy_from_slice(&self.weight.to_be_bytes());
        out[38..40].copy_from_slice(&self.state_len.to_be_bytes());
        out[40..48].copy_from_slice(&self.view_digest.to_be_bytes());
        out[48..56].copy_from_slice(&self.hears.to_be_bytes());
        out[56..60].copy_from_slice(&self.dead_us.to_be_bytes());
        out[60..64].fill(0);
    }

    /// The header in wire format.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        self.write(&mut out);
        out
    }
}

/// Bytes before the bitmap in a state section.
pub const STATE_HEADER_LEN: usize = 6;
/// Bytes of one echo: a peer's node id (u32) and the incarnation heard from it (u64).
pub const ECHO_LEN: usize = 12;
/// Most echoes a state section carries.
pub const MAX_ECHOES: usize = 64;

/// A state section: which VIPs of the pool the sender holds, and the incarnation of each
/// peer it hears (its echoes).
///
/// ```text
/// 0  pool_digest  u32  digest of the sorted VIP list (see `vipd::pool::pool_digest`): bit
///                      i means the i-th VIP of *that* list, so a node with another list
///                      ignores the bitmap
/// 4  vip_count    u16  number of VIPs in the pool
/// 6  bitmap       [u8; ceil(vip_count / 8)]  bit i (LSB first) set: holds VIP i
/// …  echo_count   u16  at most MAX_ECHOES
/// …  echoes       [node_id u32, incarnation u64; echo_count]
/// ```
///
/// The echoes make heartbeats fresh from the first packet: a node counts a peer as alive
/// only once an authenticated state section of the peer's current incarnation echoes the
/// node's *own current* incarnation — which no recording made before the node started can
/// hold (incarnations only grow). Like BFD's discriminators, without a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State<'a> {
    /// Digest of the pool the bitmap indexes.
    pub pool_digest: u32,
    /// Number of VIPs in the pool.
    pub vip_count: u16,
    /// The bitmap.
    pub bitmap: &'a [u8],
    /// The echoes, `ECHO_LEN` bytes each.
    echoes: &'a [u8],
}

impl<'a> State<'a> {
    /// Bytes a state section for `vip_count` VIPs and `echoes` echoes takes.
    pub const fn len_for(vip_count: u16, echoes: usize) -> usize {
        STATE_HEADER_LEN + (vip_count as usize).div_ceil(8) + 2 + echoes * ECHO_LEN
    }

    /// Parses a state section (exactly `state_len` bytes).
    pub fn parse(b: &'a [u8]) -> Result<Self, ParseError> {
        if b.len() < STATE_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let pool_digest = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let vip_count = u16::from_be_bytes([b[4], b[5]]);
        let bitmap_end = STATE_HEADER_LEN + (vip_count as usize).div_ceil(8);
        let count = b
            .get(bitmap_end..bitmap_end + 2)
            .ok_or(ParseError::Truncated)?;
        let count = u16::from_be_bytes([count[0], count[1]]) as usize;
        if count > MAX_ECHOES || b.len() != bitmap_end + 2 + count * ECHO_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(Self {
            pool_digest,
            vip_count,
            bitmap: &b[STATE_HEADER_LEN..bitmap_end],
            echoes: &b[bitmap_end + 2..],
        })
    }

    /// Whether the sender holds VIP number `i` of the pool.
    pub fn holds(&self, i: usize) -> bool {
        i < self.vip_count as usize && self.bitmap[i / 8] & (1 << (i % 8)) != 0
    }

    /// The (node id, incarnation) pairs the sender hears.
    pub fn echoes(&self) -> impl Iterator<Item = (u32, u64)> + 'a {
        self.echoes.chunks_exact(ECHO_LEN).map(|e| {
            let id = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let mut inc = [0u8; 8];
            inc.copy_from_slice(&e[4..12]);
            (id, u64::from_be_bytes(inc))
        })
    }

    /// Whether the sender echoes `incarnation` of `node_id`.
    pub fn echoes_for(&self, node_id: u32, incarnation: u64) -> bool {
        self.echoes().any(|e| e == (node_id, incarnation))
    }

    /// Writes a state section into `out` (at least `len_for(vip_count, echoes.len())`
    /// bytes, at most `MAX_ECHOES` echoes used); `holds(i)` says whether VIP `i` is held.
    /// Returns the bytes written.
    pub fn write(
        out: &mut [u8],
        pool_digest: u32,
        vip_count: u16,
        holds: impl Fn(usize) -> bool,
        echoes: &[(u32, u64)],
    ) -> usize {
        let echoes = &echoes[..echoes.len().min(MAX_ECHOES)];
        let len = Self::len_for(vip_count, echoes.len());
        out[..len].fill(0);
        out[0..4].copy_from_slice(&pool_digest.to_be_bytes());
        out[4..6].copy_from_slice(&vip_count.to_be_bytes());
        for i in 0..vip_count as usize {
            if holds(i) {
                out[STATE_HEADER_LEN + i / 8] |= 1 << (i % 8);
            }
        }
        let mut at = STATE_HEADER_LEN + (vip_count as usize).div_ceil(8);
        out[at..at + 2].copy_from_slice(&(echoes.len() as u16).to_be_bytes());
        at += 2;
        for (id, inc) in echoes {
            out[at..at + 4].copy_from_slice(&id.to_be_bytes());
            out[at + 4..at + 12].copy_from_slice(&inc.to_be_bytes());
            at += ECHO_LEN;
        }
        len
    }
}

/// FNV-1a, 64 bits: the digest of views and pools (not cryptographic: it detects
/// disagreement, it does not authenticate).
pub fn fnv1a64(chunks: &[&[u8]]) -> u64 {
    chunks
        .iter()
        .fold(FNV_OFFSET, |h, c| fnv1a64_continue(h, c))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Digest of a membership view: its node ids, sorted.
pub fn view_digest(sorted_ids: &[u32]) -> u64 {
    sorted_ids
        .iter()
        .fold(FNV_OFFSET, |h, id| fnv1a64_continue(h, &id.to_be_bytes()))
}

fn fnv1a64_continue(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            flags: FLAG_MATURE,
            auth_len: 0,
            cluster_id: 0xC0FF_EE01,
            node_id: 7,
            incarnation: 0x0102_0304_0506_0708,
            sequence: u64::MAX - 3,
            interval_us: 100_000,
            weight: 300,
            state_len: 0,
            view_digest: 0xDEAD_BEEF_F00D_CAFE,
            hears: 0b1010,
            dead_us: 350_000,
        }
    }

    #[test]
    fn round_trip() {
        let hb = sample();
        assert_eq!(Heartbeat::parse(&hb.to_bytes(), hb.cluster_id), Ok(hb));
        let leaving = Heartbeat {
            flags: FLAG_LEAVING,
            ..hb
        };
        let parsed = Heartbeat::parse(&leaving.to_bytes(), hb.cluster_id).unwrap();
        assert!(is_leaving(parsed.flags));
    }

    #[test]
    fn layout_is_big_endian_and_fixed() {
        let b = sample().to_bytes();
        assert_eq!(&b[0..4], b"VIPD");
        assert_eq!(b[4], VERSION);
        assert_eq!(&b[12..16], &[0, 0, 0, 7]);
        assert_eq!(&b[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[38..40], &[0, 0]);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let b = sample().to_bytes();
        for len in 0..HEADER_LEN {
            assert_eq!(
                Heartbeat::parse(&b[..len], sample().cluster_id),
                Err(ParseError::Truncated),
                "length {len}"
            );
        }
    }

    #[test]
    fn missing_trailer_is_truncation() {
        let hb = Heartbeat {
            auth_len: 16,
            ..sample()
        };
        let mut buf = [0u8; HEADER_LEN + 16];
        hb.write((&mut buf[..HEADER_LEN]).try_into().unwrap());
        for len in HEADER_LEN..HEADER_LEN + 16 {
            assert_eq!(
                Heartbeat::parse(&buf[..len], hb.cluster_id),
                Err(ParseError::Truncated)
            );
        }
        assert_eq!(Heartbeat::parse(&buf, hb.cluster_id), Ok(hb));
    }

    #[test]
    fn wrong_magic_version_cluster_node_rejected() {
        let hb = sample();
        let mut b = hb.to_bytes();
        b[0] ^= 0xff;
        assert_eq!(
            Heartbeat::parse(&b, hb.cluster_id),
            Err(ParseError::BadMagic)
        );

        let mut b = hb.to_bytes();
        b[4] = 1;
        assert_eq!(
            Heartbeat::parse(&b, hb.cluster_id),
            Err(ParseError::BadVersion(1))
        );

        assert_eq!(
            Heartbeat::parse(&hb.to_bytes(), 1),
            Err(ParseError::ForeignCluster(hb.cluster_id))
        );

        let zero = Heartbeat { node_id: 0, ..hb };
        assert_eq!(
            Heartbeat::parse(&zero.to_bytes(), hb.cluster_id),
            Err(ParseError::BadNodeId)
        );
    }

    #[test]
    fn state_section_round_trip_and_truncation() {
        let mut buf = [0u8; 64];
        let echoes = [(2, 0x0102_0304_0506_0708), (3, 9)];
        let n = State::write(
            &mut buf,
            0xABCD_0123,
            11,
            |i| i == 0 || i == 9 || i == 10,
            &echoes,
        );
        assert_eq!(n, State::len_for(11, 2));
        assert_eq!(n, 6 + 2 + 2 + 24);
        let s = State::parse(&buf[..n]).unwrap();
        assert_eq!((s.pool_digest, s.vip_count), (0xABCD_0123, 11));
        let held: [bool; 12] = core::array::from_fn(|i| s.holds(i));
        assert_eq!(held.iter().filter(|h| **h).count(), 3);
        assert!(held[0] && held[9] && held[10] && !held[11]);
        assert!(s.echoes().eq(echoes.iter().copied()));
        assert!(s.echoes_for(2, 0x0102_0304_0506_0708));
        assert!(!s.echoes_for(2, 0x0102_0304_0506_0709) && !s.echoes_for(4, 9));
        for len in 0..n {
            assert_eq!(
                State::parse(&buf[..len]),
                Err(ParseError::Truncated),
                "length {len}"
            );
        }
        assert_eq!(State::parse(&buf[..n + 1]), Err(ParseError::Truncated));
    }

    #[test]
    fn heartbeat_with_state_needs_its_state_bytes() {
        let hb = Heartbeat {
            state_len: 8,
            ..sample()
        };
        let mut buf = [0u8; HEADER_LEN + 8];
        // (The header only announces the length; the section's own checks are State's.)
        hb.write((&mut buf[..HEADER_LEN]).try_into().unwrap());
        assert_eq!(
            Heartbeat::parse(&buf[..HEADER_LEN + 7], hb.cluster_id),
            Err(ParseError::Truncated)
        );
        assert_eq!(Heartbeat::parse(&buf, hb.cluster_id), Ok(hb));
    }

    #[test]
    fn digests_differ_for_different_views() {
        assert_ne!(view_digest(&[1, 2]), view_digest(&[1, 3]));
        assert_ne!(view_digest(&[1, 2]), view_digest(&[12]));
        assert_eq!(view_digest(&[1, 2]), view_digest(&[1, 2]));
        assert_ne!(fnv1a64(&[b"a"]), fnv1a64(&[b"b"]));
    }

    #[test]
    fn longer_payloads_are_accepted() {
        let hb = sample();
        let mut buf = [0u8; 200];
        buf[..HEADER_LEN].copy_from_slice(&hb.to_bytes());
        assert_eq!(Heartbeat::parse(&buf, hb.cluster_id), Ok(hb));
    }
}
