//! Heartbeat authentication: SipHash-2-4 with a shared 128-bit key.
//!
//! When authentication is on, every heartbeat carries `auth_len = 16` and a 16-byte trailer
//! after the header and the state section:
//!
//! ```text
//!  0  header MAC  u64  SipHash-2-4(key, the 64 header bytes), big-endian
//!  8  full MAC    u64  SipHash-2-4(key, header bytes ‖ state section), big-endian
//! ```
//!
//! The header MAC is computed over fixed-size data, so the XDP program checks it on every
//! heartbeat with [`siphash24_header`] (straight-line code the verifier accepts); the full MAC
//! covers the state section too, and the daemon checks it on the heartbeats that carry one.
//! Both MACs cover `state_len` and `auth_len` (they are header fields), so neither can be
//! moved to another message of another length.

use crate::heartbeat::{HEADER_LEN, Heartbeat, MAX_STATE_LEN};

/// Length of the MAC trailer.
pub const AUTH_LEN: usize = 16;

/// A SipHash key: the 16 key bytes read as two little-endian words, as SipHash does.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Key {
    /// Bytes 0..8 of the key, little-endian.
    pub k0: u64,
    /// Bytes 8..16 of the key, little-endian.
    pub k1: u64,
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the secret.
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// The key for 16 key bytes.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Self {
            k0: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            k1: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
}

struct Sip {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl Sip {
    #[inline(always)]
    const fn new(key: Key) -> Self {
        Self {
            v0: key.k0 ^ 0x736f_6d65_7073_6575,
            v1: key.k1 ^ 0x646f_7261_6e64_6f6d,
            v2: key.k0 ^ 0x6c79_6765_6e65_7261,
            v3: key.k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    /// One message word: two compression rounds.
    #[inline(always)]
    fn word(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    /// The last word (the message length in its top byte), then four finalization rounds.
    #[inline(always)]
    fn finish(mut self, last: u64) -> u64 {
        self.word(last);
        self.v2 ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

#[inline(always)]
fn le64(b: &[u8; HEADER_LEN], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// SipHash-2-4 of exactly one heartbeat header: fixed length, no data-dependent branches or
/// loops, for the XDP program.
#[inline(always)]
pub fn siphash24_header(key: Key, header: &[u8; HEADER_LEN]) -> u64 {
    let mut s = Sip::new(key);
    s.word(le64(header, 0));
    s.word(le64(header, 8));
    s.word(le64(header, 16));
    s.word(le64(header, 24));
    s.word(le64(header, 32));
    s.word(le64(header, 40));
    s.word(le64(header, 48));
    s.word(le64(header, 56));
    // 64 is a multiple of 8: the last word is the length alone.
    const _: () = assert!(HEADER_LEN == 64);
    s.finish((HEADER_LEN as u64) << 56)
}

/// SipHash-2-4 of any message (userspace).
pub fn siphash24(key: Key, msg: &[u8]) -> u64 {
    let mut s = Sip::new(key);
    let mut words = msg.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        s.word(u64::from_le_bytes(b));
    }
    let mut last = (msg.len() as u64 & 0xff) << 56;
    for (i, &byte) in words.remainder().iter().enumerate() {
        last |= u64::from(byte) << (8 * i);
    }
    s.finish(last)
}

/// The trailer for a heartbeat: `message` is the header followed by the state section
/// (if any), exactly `HEADER_LEN + state_len` bytes.
pub fn sign(key: Key, message: &[u8]) -> [u8; AUTH_LEN] {
    let mut out = [0u8; AUTH_LEN];
    if let Some(header) = message.get(..HEADER_LEN).and_then(|h| h.try_into().ok()) {
        out[..8].copy_from_slice(&siphash24_header(key, header).to_be_bytes());
    }
    out[8..].copy_from_slice(&siphash24(key, message).to_be_bytes());
    out
}

/// Where the header MAC of `hb` starts in its UDP payload, if it announces a trailer the
/// XDP program checks: [`AUTH_LEN`] bytes after a state section of at most
/// [`MAX_STATE_LEN`] bytes (a bound the verifier sees). `None` fails authentication.
#[inline(always)]
pub fn header_mac_offset(hb: &Heartbeat) -> Option<usize> {
    let state_len = hb.state_len as usize;
    if hb.auth_len as usize != AUTH_LEN || state_len > MAX_STATE_LEN {
        return None;
    }
    Some(HEADER_LEN + state_len)
}

/// Reads the header MAC at the start of a trailer.
#[inline(always)]
pub fn header_mac(trailer: &[u8; 8]) -> u64 {
    u64::from_be_bytes(*trailer)
}

/// Why a heartbeat's trailer does not authenticate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// `auth_len` is not [`AUTH_LEN`], or the trailer is not all there.
    MissingTrailer,
    /// A MAC is wrong: another key, or a changed message.
    BadMac,
}

/// Checks both MACs of a heartbeat: `payload` is the whole UDP payload, `state_len` the
/// header's state length. Compares without early exit.
pub fn verify(key: Key, payload: &[u8], state_len: usize, auth_len: u16) -> Result<(), AuthError> {
    if auth_len as usize != AUTH_LEN {
        return Err(AuthError::MissingTrailer);
    }
    let end = HEADER_LEN + state_len;
    let (Some(message), Some(trailer)) = (payload.get(..end), payload.get(end..end + AUTH_LEN))
    else {
        return Err(AuthError::MissingTrailer);
    };
    let expected = sign(key, message);
    let diff = expected
        .iter()
        .zip(trailer)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(AuthError::BadMac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::{FLAG_MATURE, Heartbeat, State};

    /// The key 00 01 02 … 0f of the SipHash paper's test vectors.
    fn paper_key() -> Key {
        Key::from_bytes(core::array::from_fn(|i| i as u8))
    }

    fn counting(len: usize) -> [u8; 64] {
        let mut m = [0u8; 64];
        for (i, b) in m.iter_mut().enumerate().take(len) {
            *b = i as u8;
        }
        m
    }

    #[test]
    fn paper_vectors() {
        // Appendix A of "SipHash: a fast short-input PRF": key 00..0f, message 00..0e.
        assert_eq!(
            siphash24(paper_key(), &counting(15)[..15]),
            0xa129_ca61_49be_45e5
        );
        // The reference implementation's vectors.h (message 00..len-1), first entries.
        let expected = [
            0x726f_db47_dd0e_0e31,
            0x74f8_39c5_93dc_67fd,
            0x0d6c_8009_d9a9_4f5a,
            0x8567_6696_d7fb_7e2d,
        ];
        for (len, want) in expected.iter().enumerate() {
            assert_eq!(
                siphash24(paper_key(), &counting(len)[..len]),
                *want,
                "{len}"
            );
        }
    }

    #[test]
    fn matches_the_siphasher_crate_at_every_length() {
        use core::hash::Hasher as _;
        let key = Key::from_bytes(*b"0123456789abcdef");
        let mut msg = [0u8; 200];
        for (i, b) in msg.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        for len in 0..msg.len() {
            let mut h = siphasher::sip::SipHasher24::new_with_keys(key.k0, key.k1);
            h.write(&msg[..len]);
            assert_eq!(siphash24(key, &msg[..len]), h.finish(), "length {len}");
        }
    }

    #[test]
    fn header_entry_point_agrees_with_the_general_one() {
        let key = paper_key();
        let header: [u8; HEADER_LEN] = core::array::from_fn(|i| (i * 13) as u8);
        assert_eq!(siphash24_header(key, &header), siphash24(key, &header));
        let counted: [u8; HEADER_LEN] = counting(HEADER_LEN)[..HEADER_LEN].try_into().unwrap();
        assert_eq!(
            siphash24_header(key, &counted),
            siphash24(key, &counted),
            "vectors.h entry 48"
        );
    }

    /// A signed heartbeat with a 3-VIP state section, in a buffer: (buffer, length).
    fn signed(key: Key) -> ([u8; 128], usize) {
        let mut buf = [0u8; 128];
        let state_len = State::len_for(3, 1);
        let hb = Heartbeat {
            flags: FLAG_MATURE,
            auth_len: AUTH_LEN as u16,
            cluster_id: 1,
            node_id: 2,
            incarnation: 99,
            sequence: 1234,
            interval_us: 100_000,
            weight: 1,
            state_len: state_len as u16,
            view_digest: 0x1122_3344_5566_7788,
            hears: 0b11,
            dead_us: 300_000,
        };
        hb.write((&mut buf[..HEADER_LEN]).try_into().unwrap());
        State::write(&mut buf[HEADER_LEN..], 0xabcd, 3, |i| i == 1, &[(2, 7)]);
        let end = HEADER_LEN + state_len;
        let trailer = sign(key, &buf[..end]);
        buf[end..end + AUTH_LEN].copy_from_slice(&trailer);
        (buf, end + AUTH_LEN)
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = paper_key();
        let (buf, len) = signed(key);
        let hb = Heartbeat::parse(&buf[..len], 1).unwrap();
        assert_eq!(
            verify(key, &buf[..len], hb.state_len as usize, hb.auth_len),
            Ok(())
        );
        // The header MAC is what the XDP program checks.
        let header: &[u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
        let at = HEADER_LEN + hb.state_len as usize;
        assert_eq!(
            header_mac(buf[at..at + 8].try_into().unwrap()),
            siphash24_header(key, header)
        );
    }

    #[test]
    fn any_flipped_bit_fails() {
        let key = paper_key();
        let (buf, len) = signed(key);
        let state_len = len - HEADER_LEN - AUTH_LEN;
        for byte in 0..len {
            for bit in 0..8 {
                let mut b = buf;
                b[byte] ^= 1 << bit;
                assert!(
                    verify(key, &b[..len], state_len, AUTH_LEN as u16).is_err(),
                    "byte {byte} bit {bit}"
                );
                if byte < HEADER_LEN {
                    // The header MAC alone catches every change to the header.
                    let header: &[u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
                    let at = HEADER_LEN + state_len;
                    assert_ne!(
                        siphash24_header(key, header),
                        header_mac(buf[at..at + 8].try_into().unwrap())
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_key_and_missing_trailer_fail() {
        let (buf, len) = signed(paper_key());
        let state_len = len - HEADER_LEN - AUTH_LEN;
        let other = Key::from_bytes([0x42; 16]);
        assert_eq!(
            verify(other, &buf[..len], state_len, AUTH_LEN as u16),
            Err(AuthError::BadMac)
        );
        let key = paper_key();
        assert_eq!(
            verify(key, &buf[..len - 1], state_len, AUTH_LEN as u16),
            Err(AuthError::MissingTrailer)
        );
        assert_eq!(
            verify(key, &buf[..len], state_len, 0),
            Err(AuthError::MissingTrailer)
        );
        assert_eq!(
            verify(key, &buf[..len], state_len, 8),
            Err(AuthError::MissingTrailer)
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        extern crate std;
        let text = std::format!("{:?}", Key::from_bytes([0xab; 16]));
        assert!(!text.contains("ab") && !text.contains("171"), "{text}");
    }
}
