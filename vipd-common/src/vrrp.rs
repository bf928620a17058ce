//! VRRP advertisements, version 3 (RFC 5798, section 5) and version 2 (RFC 3768, section
//! 5, IPv4 only): parsing, building and the checksum.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! v3: |(rsvd) |     Max Adver Int     |          Checksum             |
//! v2: |   Auth Type   |   Adver Int   |          Checksum             |
//! |                       IPvX Address(es)                        |
//! v2: |                 Authentication Data (8 bytes)                 |
//! ```
//!
//! Carried in IP protocol 112 to 224.0.0.18 / ff02::12 with TTL / hop limit 255. The v3
//! checksum covers the VRRP message and the IPv4 or IPv6 pseudo-header (section 5.2.8);
//! the v2 checksum the message alone. v3's interval is in centiseconds, v2's in whole
//! seconds (kept here in centiseconds too). v2's authentication is type 0 (none) or 1 (a
//! plain-text password in the authentication data: no security, RFC 3768 section 10).
//! Unicast VRRP (keepalived's `unicast_peer`) sends the same message to each peer's
//! address; the v3 pseudo-header then holds that address.
//! The XDP program and the daemon share the parser, [`check_sender`], [`check_group`] and
//! [`judge`].

use crate::maps::{Counter, VrrpGroup};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// VRRPv3 (RFC 5798).
pub const VERSION_3: u8 = 3;
/// VRRPv2 (RFC 3768), IPv4 only.
pub const VERSION_2: u8 = 2;
/// Bytes of a VRRPv2 advert's authentication data (after the addresses).
pub const AUTH_DATA_LEN: usize = 8;
/// VRRPv2 Auth Type 0: no authentication.
pub const AUTH_NONE: u8 = 0;
/// VRRPv2 Auth Type 1: a plain-text password (keepalived's `PASS`).
pub const AUTH_PASS: u8 = 1;
/// The only VRRPv3 packet type: ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Bytes before the addresses.
pub const HEADER_LEN: usize = 8;
/// Most IPv4 addresses in one advert (the count field is 8 bits).
pub const MAX_ADDRS_V4: usize = 255;
/// Most IPv6 addresses in one advert that fit a 1500-byte frame.
pub const MAX_ADDRS_V6: usize = 90;
/// Longest VRRP message the XDP program checksums: every address VRRP allows that fits a
/// 1500-byte frame (255 IPv4 or 90 IPv6 addresses). Longer adverts count as malformed.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + MAX_ADDRS_V6 * 16;
/// Priority of the address owner.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a master sends when it stops (the backups take over at once).
pub const PRIORITY_STOP: u8 = 0;

/// Address family of an advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4: 4-byte addresses.
    V4,
    /// IPv6: 16-byte addresses.
    V6,
}

impl Family {
    /// Bytes per address.
    pub const fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// The fixed part of a VRRP advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    /// `VERSION_3` or `VERSION_2`.
    pub version: u8,
    /// VRRPv2's Auth Type (0 in VRRPv3).
    pub auth_type: u8,
    /// Virtual Rtr ID, 1-255.
    pub vrid: u8,
    /// Priority: 1-254 for backups, 255 for the address owner, 0 for a master stopping.
    pub priority: u8,
    /// Count IPvX Addr: how many addresses follow.
    pub count: u8,
    /// Max Adver Int, centiseconds (12 bits); VRRPv2's Adver Int (seconds) times 100.
    pub max_adver_int_cs: u16,
    /// Checksum as received.
    pub checksum: u16,
}

/// Why a frame is not a valid VRRP advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpError {
    /// Shorter than its header or than its announced addresses.
    Truncated,
    /// Not version 3, nor version 2 over IPv4.
    BadVersion(u8),
    /// Not an ADVERTISEMENT.
    BadType(u8),
    /// VRID 0 is invalid.
    BadVrid,
    /// No addresses, or an advertisement interval of zero.
    BadFields,
    /// The checksum does not match.
    BadChecksum,
}

impl Advert {
    /// Parses and checks the fields of a VRRP message (without its checksum: see
    /// [`checksum_v4`] / [`checksum_v6`] over the same bytes, which must be 0).
    pub fn parse(msg: &[u8], family: Family) -> Result<Self, VrrpError> {
        let h: &[u8; HEADER_LEN] = msg
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(VrrpError::Truncated)?;
        Self::parse_header(h, msg.len(), family)
    }

    /// Parses and checks the fixed header of a message `msg_len` bytes long (the XDP
    /// program reads the header straight from the packet).
    #[inline(always)]
    pub fn parse_header(
        h: &[u8; HEADER_LEN],
        msg_len: usize,
        family: Family,
    ) -> Result<Self, VrrpError> {
        let version = h[0] >> 4;
        if version != VERSION_3 && !(version == VERSION_2 && family == Family::V4) {
            return Err(VrrpError::BadVersion(version));
        }
        if h[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(VrrpError::BadType(h[0] & 0x0f));
        }
        let v2 = version == VERSION_2;
        let a = Advert {
            version,
            auth_type: if v2 { h[4] } else { 0 },
            vrid: h[1],
            priority: h[2],
            count: h[3],
            max_adver_int_cs: if v2 {
                u16::from(h[5]) * 100
            } else {
                u16::from_be_bytes([h[4], h[5]]) & 0x0fff
            },
            checksum: u16::from_be_bytes([h[6], h[7]]),
        };
        if a.vrid == 0 {
            return Err(VrrpError::BadVrid);
        }
        if a.count == 0 || a.max_adver_int_cs == 0 {
            return Err(VrrpError::BadFields);
        }
        let trailer = if v2 { AUTH_DATA_LEN } else { 0 };
        if msg_len < HEADER_LEN + a.count as usize * family.addr_len() + trailer {
            return Err(VrrpError::Truncated);
        }
        Ok(a)
    }

    /// Where a VRRPv2 advert's authentication data starts in its message.
    #[inline(always)]
    pub fn auth_data_offset(&self) -> usize {
        HEADER_LEN + self.count as usize * 4
    }

    /// Writes the header with a zero checksum; the caller appends the addresses (and for
    /// VRRPv2 the authentication data) and then stores the checksum at bytes 6..8.
    pub fn write_header(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = (self.version << 4) | TYPE_ADVERTISEMENT;
        out[1] = self.vrid;
        out[2] = self.priority;
        out[3] = self.count;
        if self.version == VERSION_2 {
            out[4] = self.auth_type;
            out[5] = (self.max_adver_int_cs / 100) as u8;
        } else {
            out[4..6].copy_from_slice(&(self.max_adver_int_cs & 0x0fff).to_be_bytes());
        }
        out[6..8].copy_from_slice(&[0, 0]);
    }

    /// Whether a message whose words sum to `msg_sum` has a right checksum: VRRPv3's with
    /// the pseudo-header's sum `pseudo`, VRRPv2's without.
    #[inline(always)]
    pub fn checksum_ok(&self, pseudo: u32, msg_sum: u32) -> bool {
        let pseudo = if self.version == VERSION_2 { 0 } else { pseudo };
        fold(pseudo + msg_sum) == 0
    }
}

/// A group's own rules for an advert with a right checksum (RFC 3768 section 7.1 for
/// VRRPv2): the version the group runs, and for VRRPv2 its authentication type and
/// password (`auth_data`: the advert's authentication data) and its interval, which must
/// be this router's. `Err` names the counter of the refusal.
#[inline(always)]
pub fn check_group(
    advert: &Advert,
    group: &VrrpGroup,
    auth_data: &[u8; AUTH_DATA_LEN],
) -> Result<(), Counter> {
    if advert.version != group.version {
        return Err(Counter::VrrpBadVersion);
    }
    if advert.version != VERSION_2 {
        return Ok(());
    }
    if advert.auth_type != group.auth_type
        || (group.auth_type == AUTH_PASS && !eq8(auth_data, &group.auth_data))
    {
        return Err(Counter::VrrpBadAuth);
    }
    if advert.max_adver_int_cs != group.interval_cs {
        return Err(Counter::VrrpBadInterval);
    }
    Ok(())
}

/// Where an advert for `group` may come from. Multicast (RFC 5798 5.1.1.3, 5.1.2.1):
/// TTL / hop limit 255, and over IPv6 a link-local source. Unicast (keepalived's
/// `unicast_peer`, which may cross routers): a source `is_peer` finds among the group's
/// peers, with a TTL / hop limit of at least the group's `min_ttl`. `Err` names the counter
/// of the refusal.
#[inline(always)]
pub fn check_sender(
    group: &VrrpGroup,
    family: Family,
    ttl: u8,
    source: &[u8; 16],
    is_peer: impl FnOnce() -> bool,
) -> Result<(), Counter> {
    if group.unicast != 0 {
        if ttl < group.min_ttl {
            return Err(Counter::VrrpBadTtl);
        }
        if !is_peer() {
            return Err(Counter::VrrpNotPeer);
        }
        return Ok(());
    }
    if ttl != 255 {
        return Err(Counter::VrrpBadTtl);
    }
    if family == Family::V6 && (source[0] != 0xfe || source[1] & 0xc0 != 0x80) {
        return Err(Counter::VrrpNotLinkLocal);
    }
    Ok(())
}

#[inline(always)]
fn eq8(a: &[u8; 8], b: &[u8; 8]) -> bool {
    u64::from_ne_bytes(*a) == u64::from_ne_bytes(*b)
}

/// What the receiving router is doing, as the XDP program needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local<'a> {
    /// Our priority.
    pub priority: u8,
    /// Preempt_Mode.
    pub preempt: bool,
    /// Whether we are Master.
    pub master: bool,
    /// Whether the group runs (Backup or Master); in Initialize adverts are only counted.
    pub active: bool,
    /// Our primary address, for ties (IPv4 in the first four bytes, the rest zero).
    pub primary: &'a [u8; 16],
}

/// Why an advertisement should wake the daemon.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The Master is stopping (priority 0): take over after Skew_Time.
    PriorityZero = 1,
    /// We are Master and the sender outranks us: become Backup.
    Outranked = 2,
    /// We are Backup and the Master changed (first advert since the group started, another
    /// address, priority or interval): learn Master_Adver_Interval.
    MasterChanged = 3,
    /// An advert lists other addresses than the group's (RFC 5798 section 7.1: log it).
    /// Sent at most every [`MISMATCH_NOTICE_NS`] per group; the advert is still processed.
    AddressMismatch = 4,
}

/// Shortest time between two [`Notice::AddressMismatch`] of a group.
pub const MISMATCH_NOTICE_NS: u64 = 10_000_000_000;

impl Notice {
    /// Decodes the `kind` byte of an event.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::PriorityZero,
            2 => Self::Outranked,
            3 => Self::MasterChanged,
            4 => Self::AddressMismatch,
            _ => return None,
        })
    }
}

/// What to do with a valid advertisement (RFC 5798 sections 6.4.2 and 6.4.3, the part that
/// does not need timers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Restart the Master_Down_Timer: record this advert as the Master's latest.
    pub refresh: bool,
    /// Wake the daemon.
    pub notice: Option<Notice>,
}

/// The Master last recorded for a group, to tell a change from a repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen<'a> {
    /// Its address.
    pub source: &'a [u8; 16],
    /// Its priority.
    pub priority: u8,
    /// Its advertisement interval, centiseconds.
    pub max_adver_int_cs: u16,
}

/// Judges one valid advertisement from `source` against what we are doing. Backups are
/// refreshed silently by adverts that hold them back; only changes wake the daemon.
#[inline(always)]
pub fn judge(local: &Local, advert: &Advert, source: &[u8; 16], seen: Option<&Seen>) -> Verdict {
    if !local.active {
        return Verdict {
            refresh: false,
            notice: None,
        };
    }
    if advert.priority == PRIORITY_STOP {
        return Verdict {
            refresh: false,
            notice: Some(Notice::PriorityZero),
        };
    }
    if local.master {
        // 6.4.3: a higher priority, or an equal one from a higher address, wins.
        let outranks = advert.priority > local.priority
            || (advert.priority == local.priority && gt16(source, local.primary));
        return Verdict {
            refresh: outranks,
            notice: if outranks {
                Some(Notice::Outranked)
            } else {
                None
            },
        };
    }
    // 6.4.2: a preempting Backup discards a lower-priority Master's adverts, so its
    // Master_Down_Timer fires and it takes over.
    if local.preempt && advert.priority < local.priority {
        return Verdict {
            refresh: false,
            notice: None,
        };
    }
    let changed = match seen {
        None => true,
        Some(s) => {
            !eq16(s.source, source)
                || s.priority != advert.priority
                || s.max_adver_int_cs != advert.max_adver_int_cs
        }
    };
    Verdict {
        refresh: true,
        notice: if changed {
            Some(Notice::MasterChanged)
        } else {
            None
        },
    }
}

#[inline(always)]
fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `a > b` as big-endian numbers (addresses compare this way).
#[inline(always)]
fn gt16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
        i += 1;
    }
    false
}

/// The sum of the pseudo-header's words for [`checksum_v4`]: add the message's words and
/// fold to check a received message in pieces.
#[inline(always)]
pub fn pseudo_sum_v4(src: [u8; 4], dst: [u8; 4], msg_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(IPPROTO_VRRP) + msg_len as u32
}

/// As [`pseudo_sum_v4`], over IPv6.
#[inline(always)]
pub fn pseudo_sum_v6(src: [u8; 16], dst: [u8; 16], msg_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + msg_len as u32 + u32::from(IPPROTO_VRRP)
}

/// Folds a one's complement sum to the 16-bit checksum (0 over a right message).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    let mut i = 0;
    while sum > 0xffff && i < 4 {
        sum = (sum & 0xffff) + (sum >> 16);
        i += 1;
    }
    !(sum as u16)
}

/// A fingerprint of an address list (4- or 16-byte addresses back to back): their folded
/// one's complement sum, the same for the same addresses in any order. Two lists match when
/// their counts and fingerprints do (a cheap check the XDP program can make; a collision
/// only hides a warning).
pub fn addresses_fingerprint(addrs: &[u8]) -> u16 {
    fold(sum16(addrs))
}

/// [`addresses_fingerprint`] of a received message's addresses, from the unfolded sum of
/// all its words (which the checksum check computes anyway), its `header` and its
/// VRRPv2 authentication data (`auth_data`; zeros for VRRPv3).
#[inline(always)]
pub fn message_fingerprint(
    msg_sum: u32,
    header: &[u8; HEADER_LEN],
    auth_data: &[u8; AUTH_DATA_LEN],
) -> u16 {
    fold(
        msg_sum
            .wrapping_sub(sum16(header))
            .wrapping_sub(sum16(auth_data)),
    )
}

/// Whether an advert's addresses (`count`, `fingerprint`) are the group's (`ours_count`,
/// `ours`), as RFC 5798 section 7.1 lets a receiver verify; always true when the group has
/// no list to compare (`ours_count` 0).
#[inline(always)]
pub fn addresses_match(count: u8, fingerprint: u16, ours_count: u8, ours: u16) -> bool {
    ours_count == 0 || (count == ours_count && fingerprint == ours)
}

/// One's complement sum of 16-bit words (an odd last byte padded with zero), unfolded.
#[inline(always)]
fn sum16(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// The VRRPv3 checksum of `msg` sent from `src` to `dst` over IPv4. Over a message whose
/// checksum field is zero it is the value to store; over a received message it is 0 when
/// the checksum is right.
pub fn checksum_v4(src: [u8; 4], dst: [u8; 4], msg: &[u8]) -> u16 {
    fold(pseudo_sum_v4(src, dst, msg.len()) + sum16(msg))
}

/// The VRRPv2 checksum of `msg` (no pseudo-header; see [`checksum_v4`]).
pub fn checksum_v2(msg: &[u8]) -> u16 {
    fold(sum16(msg))
}

/// The VRRPv3 checksum of `msg` sent from `src` to `dst` over IPv6 (see [`checksum_v4`]).
pub fn checksum_v6(src: [u8; 16], dst: [u8; 16], msg: &[u8]) -> u16 {
    fold(pseudo_sum_v6(src, dst, msg.len()) + sum16(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 4] = [192, 0, 2, 11];
    const DST: [u8; 4] = [224, 0, 0, 18];

    /// An advert for VRID 51, priority 100, 1 s, with 192.0.2.200, checksummed.
    fn sample_v4() -> [u8; 12] {
        let mut m = [0u8; 12];
        let a = Advert {
            version: VERSION_3,
            auth_type: 0,
            vrid: 51,
            priority: 100,
            count: 1,
            max_adver_int_cs: 100,
            checksum: 0,
        };
        a.write_header((&mut m[..HEADER_LEN]).try_into().unwrap());
        m[8..12].copy_from_slice(&[192, 0, 2, 200]);
        let c = checksum_v4(SRC, DST, &m);
        m[6..8].copy_from_slice(&c.to_be_bytes());
        m
    }

    #[test]
    fn round_trip_and_checksum() {
        let m = sample_v4();
        let a = Advert::parse(&m, Family::V4).unwrap();
        assert_eq!(
            (a.vrid, a.priority, a.count, a.max_adver_int_cs),
            (51, 100, 1, 100)
        );
        assert_eq!(m[0], 0x31);
        assert_eq!(
            checksum_v4(SRC, DST, &m),
            0,
            "a right checksum sums to zero"
        );
        let mut bad = m;
        bad[2] = 101;
        assert_ne!(checksum_v4(SRC, DST, &bad), 0);
        assert_ne!(
            checksum_v4([192, 0, 2, 12], DST, &m),
            0,
            "the pseudo-header counts"
        );
    }

    /// A VRRPv2 advert for VRID 51, priority 100, 3 s, 192.0.2.200, password "secret".
    fn sample_v2() -> [u8; 20] {
        let mut m = [0u8; 20];
        let a = Advert {
            version: VERSION_2,
            auth_type: AUTH_PASS,
            vrid: 51,
            priority: 100,
            count: 1,
            max_adver_int_cs: 300,
            checksum: 0,
        };
        a.write_header((&mut m[..HEADER_LEN]).try_into().unwrap());
        m[8..12].copy_from_slice(&[192, 0, 2, 200]);
        m[12..20].copy_from_slice(b"secret\0\0");
        let c = checksum_v2(&m);
        m[6..8].copy_from_slice(&c.to_be_bytes());
        m
    }

    fn v2_group() -> VrrpGroup {
        VrrpGroup {
            version: VERSION_2,
            auth_type: AUTH_PASS,
            auth_data: *b"secret\0\0",
            interval_cs: 300,
            ..VrrpGroup::default()
        }
    }

    #[test]
    fn vrrpv2_round_trips_over_ipv4_only() {
        let m = sample_v2();
        assert_eq!(&m[..6], &[0x21, 51, 100, 1, AUTH_PASS, 3]);
        let a = Advert::parse(&m, Family::V4).unwrap();
        assert_eq!(
            (
                a.version,
                a.auth_type,
                a.max_adver_int_cs,
                a.auth_data_offset()
            ),
            (2, AUTH_PASS, 300, 12)
        );
        assert!(a.checksum_ok(0xdead, sum16(&m)), "no pseudo-header");
        assert_eq!(Advert::parse(&m, Family::V6), Err(VrrpError::BadVersion(2)));
        // The authentication data must be there.
        assert_eq!(
            Advert::parse(&m[..12], Family::V4),
            Err(VrrpError::Truncated)
        );
        let header: &[u8; HEADER_LEN] = m[..HEADER_LEN].try_into().unwrap();
        let auth: &[u8; 8] = m[12..20].try_into().unwrap();
        assert_eq!(
            message_fingerprint(sum16(&m), header, auth),
            addresses_fingerprint(&[192, 0, 2, 200])
        );
    }

    #[test]
    fn a_group_refuses_another_version_password_or_interval() {
        let m = sample_v2();
        let a = Advert::parse(&m, Family::V4).unwrap();
        let auth: [u8; 8] = m[12..20].try_into().unwrap();
        let g = v2_group();
        assert_eq!(check_group(&a, &g, &auth), Ok(()));
        let v3 = VrrpGroup {
            version: VERSION_3,
            ..g
        };
        assert_eq!(check_group(&a, &v3, &auth), Err(Counter::VrrpBadVersion));
        assert_eq!(
            check_group(&a, &g, b"Secret\0\0"),
            Err(Counter::VrrpBadAuth)
        );
        let none = VrrpGroup {
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
            ..g
        };
        assert_eq!(check_group(&a, &none, &auth), Err(Counter::VrrpBadAuth));
        let faster = VrrpGroup {
            interval_cs: 100,
            ..g
        };
        assert_eq!(
            check_group(&a, &faster, &auth),
            Err(Counter::VrrpBadInterval)
        );
        // No password: the data is not compared.
        let open = Advert {
            auth_type: AUTH_NONE,
            ..a
        };
        assert_eq!(check_group(&open, &none, &[7; 8]), Ok(()));
    }

    #[test]
    fn multicast_needs_ttl_255_and_ipv6_link_local_unicast_needs_a_listed_peer() {
        let multicast = VrrpGroup::default();
        let global = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xfe, 0x80]);
        let v4 = [192, 0, 2, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let any = || true;
        assert_eq!(check_sender(&multicast, Family::V4, 255, &v4, any), Ok(()));
        let off_link = check_sender(&multicast, Family::V4, 254, &v4, any);
        assert_eq!(off_link, Err(Counter::VrrpBadTtl));
        let ll = check_sender(&multicast, Family::V6, 255, &link_local, any);
        assert_eq!(ll, Ok(()));
        let not_ll = check_sender(&multicast, Family::V6, 255, &global, any);
        assert_eq!(not_ll, Err(Counter::VrrpNotLinkLocal));

        let unicast = VrrpGroup {
            unicast: 1,
            ..VrrpGroup::default()
        };
        // Any TTL (keepalived's default), a global IPv6 source: only the peer list counts.
        assert_eq!(check_sender(&unicast, Family::V6, 64, &global, any), Ok(()));
        let stranger = check_sender(&unicast, Family::V4, 255, &v4, || false);
        assert_eq!(stranger, Err(Counter::VrrpNotPeer));
        let floor = VrrpGroup {
            min_ttl: 255,
            ..unicast
        };
        let routed = check_sender(&floor, Family::V4, 254, &v4, any);
        assert_eq!(routed, Err(Counter::VrrpBadTtl));
        assert_eq!(check_sender(&floor, Family::V4, 255, &v4, any), Ok(()));
    }

    #[test]
    fn every_truncation_and_bad_field_is_rejected() {
        let m = sample_v4();
        for len in 0..m.len() {
            assert_eq!(
                Advert::parse(&m[..len], Family::V4),
                Err(VrrpError::Truncated),
                "{len}"
            );
        }
        let with = |i: usize, v: u8| {
            let mut b = m;
            b[i] = v;
            Advert::parse(&b, Family::V4)
        };
        assert_eq!(with(0, 0x11), Err(VrrpError::BadVersion(1)));
        assert_eq!(
            with(0, 0x21),
            Err(VrrpError::Truncated),
            "as VRRPv2, no authentication data"
        );
        assert_eq!(with(0, 0x32), Err(VrrpError::BadType(2)));
        assert_eq!(with(1, 0), Err(VrrpError::BadVrid));
        assert_eq!(with(3, 0), Err(VrrpError::BadFields));
        assert_eq!(
            with(3, 2),
            Err(VrrpError::Truncated),
            "count says 2 addresses"
        );
        assert_eq!(
            Advert::parse(&m, Family::V6),
            Err(VrrpError::Truncated),
            "v6 needs 16 bytes"
        );
    }

    const PRIMARY: [u8; 16] = [192, 0, 2, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn local(priority: u8, preempt: bool, master: bool) -> Local<'static> {
        Local {
            priority,
            preempt,
            master,
            active: true,
            primary: &PRIMARY,
        }
    }

    fn advert(priority: u8) -> Advert {
        Advert {
            version: VERSION_3,
            auth_type: 0,
            vrid: 51,
            priority,
            count: 1,
            max_adver_int_cs: 100,
            checksum: 0,
        }
    }

    fn addr(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[192, 0, 2, last]);
        a
    }

    #[test]
    fn judge_priority_zero_always_wakes_and_never_refreshes() {
        for master in [false, true] {
            let v = judge(&local(100, true, master), &advert(0), &addr(11), None);
            assert_eq!((v.refresh, v.notice), (false, Some(Notice::PriorityZero)));
        }
    }

    #[test]
    fn judge_master_wakes_only_when_outranked() {
        let m = local(100, true, true);
        let j = |p, from| judge(&m, &advert(p), &addr(from), None);
        assert_eq!(j(99, 200).notice, None, "lower priority: discarded");
        assert_eq!(j(100, 11).notice, None, "tie from a lower address");
        assert_eq!(
            j(100, 13).notice,
            Some(Notice::Outranked),
            "tie, higher address"
        );
        assert_eq!(j(101, 1).notice, Some(Notice::Outranked));
        assert!(j(101, 1).refresh);
    }

    #[test]
    fn judge_backup_refreshes_silently_and_wakes_on_change() {
        let b = local(100, true, false);
        let first = judge(&b, &advert(200), &addr(11), None);
        assert_eq!(
            (first.refresh, first.notice),
            (true, Some(Notice::MasterChanged))
        );
        let eleven = addr(11);
        let seen = Seen {
            source: &eleven,
            priority: 200,
            max_adver_int_cs: 100,
        };
        let again = judge(&b, &advert(200), &addr(11), Some(&seen));
        assert_eq!(
            (again.refresh, again.notice),
            (true, None),
            "no wake-up per advert"
        );
        let other = judge(&b, &advert(200), &addr(13), Some(&seen));
        assert_eq!(other.notice, Some(Notice::MasterChanged));
        let slower = Advert {
            max_adver_int_cs: 200,
            ..advert(200)
        };
        assert_eq!(
            judge(&b, &slower, &addr(11), Some(&seen)).notice,
            Some(Notice::MasterChanged)
        );
        let equal = judge(&b, &advert(100), &addr(11), None);
        assert!(equal.refresh, "equal priority holds a backup back");
    }

    #[test]
    fn judge_ignores_everything_in_initialize() {
        let idle = Local {
            active: false,
            ..local(100, true, false)
        };
        for p in [0, 50, 200] {
            let v = judge(&idle, &advert(p), &addr(11), None);
            assert_eq!((v.refresh, v.notice), (false, None));
        }
    }

    #[test]
    fn judge_preempting_backup_ignores_a_lower_master() {
        let v = judge(&local(150, true, false), &advert(100), &addr(11), None);
        assert_eq!((v.refresh, v.notice), (false, None));
        let v = judge(&local(150, false, false), &advert(100), &addr(11), None);
        assert!(v.refresh, "no-preempt: any master holds it back");
    }

    #[test]
    fn address_lists_compare_by_count_and_fingerprint_in_any_order() {
        let a = [192, 0, 2, 200];
        let b = [192, 0, 2, 201];
        let c = [198, 51, 100, 7];
        let ours = addresses_fingerprint(&[a, b].concat());
        assert_eq!(addresses_fingerprint(&[b, a].concat()), ours, "order");
        assert!(addresses_match(2, ours, 2, ours));
        assert!(
            !addresses_match(1, addresses_fingerprint(&a), 2, ours),
            "count"
        );
        let other = addresses_fingerprint(&[a, c].concat());
        assert!(!addresses_match(2, other, 2, ours), "another address");
        assert!(addresses_match(2, other, 0, 0), "nothing to compare");
        // From a whole message, as the XDP program sees it (the checksum included).
        let m = sample_v4();
        let header: &[u8; HEADER_LEN] = m[..HEADER_LEN].try_into().unwrap();
        assert_eq!(
            message_fingerprint(sum16(&m), header, &[0; AUTH_DATA_LEN]),
            addresses_fingerprint(&m[HEADER_LEN..])
        );
    }

    #[test]
    fn checksum_in_pieces_matches() {
        let m = sample_v4();
        assert_eq!(fold(pseudo_sum_v4(SRC, DST, m.len()) + sum16(&m)), 0);
    }

    #[test]
    fn ipv6_checksum_verifies() {
        let src = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
        ];
        let mut dst = [0u8; 16];
        dst[0] = 0xff;
        dst[1] = 0x02;
        dst[15] = 0x12;
        let mut m = [0u8; 24];
        let a = Advert {
            version: VERSION_3,
            auth_type: 0,
            vrid: 7,
            priority: 255,
            count: 1,
            max_adver_int_cs: 1,
            checksum: 0,
        };
        a.write_header((&mut m[..HEADER_LEN]).try_into().unwrap());
        m[8..24].copy_from_slice(&src);
        let c = checksum_v6(src, dst, &m);
        m[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum_v6(src, dst, &m), 0);
        assert_eq!(
            Advert::parse(&m, Family::V6).unwrap().priority,
            PRIORITY_OWNER
        );
    }
}
