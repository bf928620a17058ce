//! Adding and removing many VIPs at once, synchronously, for the fast path.
//!
//! rtnetlink handles a request inside the `sendmsg` that carries it, so a batch of
//! RTM_NEWADDR / RTM_DELADDR messages in one datagram is applied before the call returns,
//! and the kernel queues an NLMSG_ERROR for each request that failed (no acknowledgement
//! is asked for the ones that succeed). Reading those back without blocking tells which
//! VIPs of the batch are in. No async runtime, no round trip per address: adopting 500
//! VIPs costs a handful of system calls.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use rtnetlink::{
    AddressMessageBuilder,
    packet_core::{
        NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
    },
};

use crate::vip::Vip;

/// Requests sent per datagram: small enough that the first VIPs of a large takeover are
/// announced after a few adds (an IPv6 add costs the kernel up to ~0.2 ms: it joins the
/// solicited-node group), large enough to save most system calls.
const CHUNK: usize = 16;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;

/// What happened to one VIP of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (added, or removed).
    Done,
    /// Nothing to do: already there (add) or already gone (remove).
    Unchanged,
    /// The kernel refused, with this errno.
    Failed(i32),
}

/// A blocking rtnetlink socket for interface addresses.
pub struct IfAddrs {
    fd: OwnedFd,
    seq: u32,
}

impl IfAddrs {
    /// Opens a NETLINK_ROUTE socket.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Room for the error replies of a whole chunk.
        let size: libc::c_int = 1 << 20;
        // SAFETY: setsockopt with a valid int; failure only leaves the default size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        Ok(Self { fd, seq: 0 })
    }

    /// Adds `vips` to interface `ifindex` (IPv6 without duplicate address detection,
    /// usable at once); calls `applied` after each chunk with its VIPs and their outcomes,
    /// so the caller can announce them before the next chunk is added.
    pub fn add(
        &mut self,
        ifindex: u32,
        vips: &[Vip],
        applied: impl FnMut(&[Vip], &[Outcome]),
    ) -> io::Result<()> {
        self.batch(ifindex, vips, true, applied)
    }

    /// Removes `vips` from interface `ifindex`; calls `applied` after each chunk.
    pub fn remove(
        &mut self,
        ifindex: u32,
        vips: &[Vip],
        applied: impl FnMut(&[Vip], &[Outcome]),
    ) -> io::Result<()> {
        self.batch(ifindex, vips, false, applied)
    }

    fn batch(
        &mut self,
        ifindex: u32,
        vips: &[Vip],
        add: bool,
        mut applied: impl FnMut(&[Vip], &[Outcome]),
    ) -> io::Result<()> {
        for chunk in vips.chunks(CHUNK) {
            let first_seq = self.seq.wrapping_add(1);
            let mut datagram = Vec::with_capacity(chunk.len() * 64);
            for vip in chunk {
                self.seq = self.seq.wrapping_add(1);
                datagram.extend_from_slice(&message(ifindex, vip, add, self.seq));
            }
            self.send(&datagram)?;
            let mut outcomes = vec![Outcome::Done; chunk.len()];
            self.read_errors(|seq, errno| {
                let i = seq.wrapping_sub(first_seq) as usize;
                if let Some(o) = outcomes.get_mut(i) {
                    *o = match errno {
                        libc::EEXIST if add => Outcome::Unchanged,
                        libc::EADDRNOTAVAIL if !add => Outcome::Unchanged,
                        e => Outcome::Failed(e),
                    };
                }
            })?;
            applied(chunk, &outcomes);
        }
        Ok(())
    }
}

/// One RTM_NEWADDR or RTM_DELADDR request for interface `ifindex`, serialized.
fn message(ifindex: u32, vip: &Vip, add: bool, seq: u32) -> Vec<u8> {
    let mut msg: AddressMessage = match vip.addr {
        IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(ifindex)
            .address(a, vip.prefix_len)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(ifindex)
            .address(a, vip.prefix_len)
            .build(),
    };
    let mut header = NetlinkHeader::default();
    header.sequence_number = seq;
    header.flags = NLM_F_REQUEST;
    let inner = if add {
        if vip.addr.is_ipv6() {
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        header.flags |= NLM_F_CREATE | NLM_F_EXCL;
        RouteNetlinkMessage::NewAddress(msg)
    } else {
        RouteNetlinkMessage::DelAddress(msg)
    };
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

impl IfAddrs {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; zeroed with the family set addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: the buffer and the address outlive the call; lengths match.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads every reply queued so far (without waiting) and reports the errors as
    /// (sequence number, errno).
    fn read_errors(&self, mut error: impl FnMut(u32, i32)) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            for (seq, errno) in errors_in(&buf[..n as usize]) {
                error(seq, errno);
            }
        }
    }
}

/// The (sequence number, errno) of each failed request acknowledged in `datagram`.
fn errors_in(datagram: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
        if len < 16 || len > rest.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
            if code != 0 {
                out.push((seq, -code));
            }
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(kind: u16, seq: u32, code: Option<i32>) -> Vec<u8> {
        let len = if code.is_some() { 36 } else { 16 };
        let mut m = vec![0u8; len];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        if let Some(c) = code {
            m[16..20].copy_from_slice(&c.to_ne_bytes());
        }
        m
    }

    #[test]
    fn errors_are_read_by_sequence_number() {
        let mut d = nlmsg(NLMSG_ERROR, 7, Some(-libc::EEXIST));
        d.extend(nlmsg(NLMSG_ERROR, 8, Some(0)));
        d.extend(nlmsg(3, 9, None));
        d.extend(nlmsg(NLMSG_ERROR, 10, Some(-libc::EPERM)));
        assert_eq!(errors_in(&d), vec![(7, libc::EEXIST), (10, libc::EPERM)]);
    }

    #[test]
    fn truncated_replies_are_ignored() {
        let d = nlmsg(NLMSG_ERROR, 7, Some(-libc::EEXIST));
        assert!(errors_in(&d[..10]).is_empty());
        let mut bad = d.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(errors_in(&bad).is_empty());
    }
}
