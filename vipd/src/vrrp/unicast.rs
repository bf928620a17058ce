//! Unicast adverts (keepalived's `unicast_peer`): one raw IP socket (protocol 112) per
//! unicast group, bound to the group's source address and interface, sending the advert to
//! each peer with TTL / hop limit 255. The kernel routes and resolves each peer, so peers
//! may sit behind a router as keepalived allows. Adverts *received* are read by the XDP
//! program; the socket drops every copy the kernel hands it (a socket filter that accepts
//! nothing), and its presence stops the kernel answering unicast adverts with ICMP
//! "protocol unreachable".

use std::{
    io,
    net::{IpAddr, SocketAddr, SocketAddrV6},
};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use vipd_common::vrrp::IPPROTO_VRRP;

/// What the adverts' IP header says of their precedence (internetwork control), as
/// routers and the multicast frames send.
const TOS_NETWORK_CONTROL: u32 = 0xc0;

/// A group's socket for unicast adverts.
#[derive(Debug)]
pub struct UnicastSocket {
    socket: Socket,
    /// The interface index, for link-local IPv6 peers.
    ifindex: u32,
}

impl UnicastSocket {
    /// Opens the socket on interface `ifname` (index `ifindex`), sending from `source`.
    pub fn open(source: IpAddr, ifname: &str, ifindex: u32) -> io::Result<Self> {
        let domain = if source.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(
            domain,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        socket.set_nonblocking(true)?;
        // A filter that returns 0 keeps nothing of what arrives (BPF_RET | BPF_K, 0).
        socket.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        match source {
            IpAddr::V4(_) => {
                socket.set_ttl_v4(255)?;
                socket.set_tos_v4(TOS_NETWORK_CONTROL)?;
            }
            IpAddr::V6(_) => {
                socket.set_unicast_hops_v6(255)?;
                socket.set_tclass_v6(TOS_NETWORK_CONTROL)?;
            }
        }
        socket.bind(&sock_addr(source, ifindex).into())?;
        Ok(UnicastSocket { socket, ifindex })
    }

    /// Sends `msg` (a VRRP message checksummed for `peer`) to `peer`.
    pub fn send(&self, peer: IpAddr, msg: &[u8]) -> io::Result<()> {
        self.socket
            .send_to(msg, &sock_addr(peer, self.ifindex).into())
            .map(drop)
    }
}

/// `addr` as a socket address (port 0); a link-local IPv6 address scoped to `ifindex`.
fn sock_addr(addr: IpAddr, ifindex: u32) -> SocketAddr {
    match addr {
        IpAddr::V4(_) => SocketAddr::new(addr, 0),
        IpAddr::V6(a) => {
            let scope = if a.segments()[0] & 0xffc0 == 0xfe80 {
                ifindex
            } else {
                0
            };
            SocketAddrV6::new(a, 0, 0, scope).into()
        }
    }
}
