//! Sending and receiving heartbeats: unicast to each configured peer and/or to a
//! link-local multicast group, on the cluster interface only.
//!
//! Plain heartbeats are consumed by the XDP program; the sockets here only receive the
//! ones with a state section (what the sender holds), which the program passes up.
//! Heartbeats go out with TTL / hop limit 255 and the sockets take only datagrams that
//! arrive with 255 (GTSM, RFC 5082): nothing from off the link.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use vipd_common::{
    auth::{AUTH_LEN, Key, sign},
    heartbeat::{HEADER_LEN, Heartbeat},
    peer::GTSM_TTL,
};

/// Largest heartbeat datagram we build or read.
pub const MAX_DATAGRAM: usize = 2048;

type UdpSocket = std::net::UdpSocket;

/// One address family's socket and where heartbeats go over it: the list a reload
/// replaces, shared with the shadow senders, read without a lock.
type Family = (UdpSocket, Arc<ArcSwap<Vec<SocketAddr>>>);

/// This node's heartbeat sockets, for sending (the fast path's: plain non-blocking
/// sockets, no async runtime).
pub struct Heartbeats {
    v4: Option<Family>,
    v6: Option<Family>,
    ifindex: u32,
    port: u16,
    template: Heartbeat,
    /// The last sequence number sent, shared with the [`shadow`](Self::shadow)s, so the
    /// node's heartbeats carry one rising sequence whichever thread sends them.
    sequence: Arc<AtomicU64>,
    /// With a key, every heartbeat ends with its MAC trailer (shared with the shadows,
    /// so a reload's new key reaches them too).
    key: Option<Arc<SigningKey>>,
    /// Datagrams handed to the kernel so far.
    pub sent: u64,
    /// Sends that failed (link down, no route, ...).
    pub failed: u64,
}

impl Heartbeats {
    /// Opens sockets bound to `port` on `interface` for the given destinations; with `key`,
    /// heartbeats are authenticated.
    pub fn open(
        interface: &str,
        ifindex: u32,
        port: u16,
        destinations: &[IpAddr],
        mut template: Heartbeat,
        key: Option<Key>,
    ) -> io::Result<Self> {
        let key = key.map(|k| Arc::new(SigningKey::new(k)));
        template.auth_len = if key.is_some() { AUTH_LEN as u16 } else { 0 };
        let open = |v6: bool| -> io::Result<Option<Family>> {
            let dests = socket_addrs(destinations, v6, port, ifindex);
            if dests.is_empty() {
                return Ok(None);
            }
            let any: IpAddr = if v6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let sock = socket(interface, ifindex, SocketAddr::new(any, port))?;
            for group in dests
                .iter()
                .map(SocketAddr::ip)
                .filter(IpAddr::is_multicast)
            {
                join(&sock, group, ifindex)?;
            }
            Ok(Some((sock, Arc::new(ArcSwap::from_pointee(dests)))))
        };
        Ok(Self {
            v4: open(false)?,
            v6: open(true)?,
            ifindex,
            port,
            template,
            sequence: Arc::new(AtomicU64::new(0)),
            key,
            sent: 0,
            failed: 0,
        })
    }

    /// Another sender of the same heartbeats (the same sockets, duplicated, and the same
    /// sequence), for a thread on another CPU.
    pub fn shadow(&self) -> io::Result<Self> {
        let dup = |s: &Option<Family>| -> io::Result<_> {
            s.as_ref()
                .map(|(sock, dests)| Ok((sock.try_clone()?, Arc::clone(dests))))
                .transpose()
        };
        Ok(Self {
            v4: dup(&self.v4)?,
            v6: dup(&self.v6)?,
            ifindex: self.ifindex,
            port: self.port,
            template: Heartbeat {
                hears: 0,
                ..self.template
            },
            sequence: Arc::clone(&self.sequence),
            key: self.key.clone(),
            sent: 0,
            failed: 0,
        })
    }

    /// Sends the next heartbeat with `flags`, `view_digest` and an optional state section
    /// to every destination; returns the first error.
    pub fn send(&mut self, flags: u8, view_digest: u64, state: &[u8]) -> io::Result<()> {
        self.template.sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        self.template.flags = flags;
        self.template.view_digest = view_digest;
        self.template.state_len = state.len() as u16;
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut len = HEADER_LEN + state.len();
        let header: &mut [u8; HEADER_LEN] = (&mut buf[..HEADER_LEN]).try_into().expect("size");
        self.template.write(header);
        buf[HEADER_LEN..len].copy_from_slice(state);
        if let Some(key) = &self.key {
            let trailer = sign(key.get(), &buf[..len]);
            buf[len..len + AUTH_LEN].copy_from_slice(&trailer);
            len += AUTH_LEN;
        }
        let mut first_err = None;
        for (sock, dests) in self.v4.iter().chain(self.v6.iter()) {
            for d in dests.load().iter() {
                match sock.send_to(&buf[..len], *d) {
                    Ok(_) => self.sent += 1,
                    Err(e) => {
                        self.failed += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Signs from the next heartbeat on with `key` (a reload during a key rotation); no
    /// effect without authentication.
    pub fn set_key(&self, key: Key) {
        if let Some(k) = &self.key {
            k.set(key);
        }
    }

    /// Sends to `destinations` from the next heartbeat on, in this sender and its shadows
    /// (a reload that changed the peers). Addresses of a family this sender has no
    /// socket for are left out: the configuration makes such a change need a restart.
    pub fn set_destinations(&self, destinations: &[IpAddr]) {
        for (v6, family) in [(false, &self.v4), (true, &self.v6)] {
            if let Some((_, dests)) = family {
                dests.store(Arc::new(socket_addrs(
                    destinations,
                    v6,
                    self.port,
                    self.ifindex,
                )));
            }
        }
    }

    /// Sets the `hears` bits of the next heartbeats (a shadow's stay 0: it has no fresh
    /// evidence).
    pub fn set_hears(&mut self, hears: u64) {
        self.template.hears = hears;
    }

    /// Changes the weight announced from the next heartbeat on.
    pub fn set_weight(&mut self, weight: u16) {
        self.template.weight = weight;
    }

    /// The sequence number of the last heartbeat sent.
    pub fn sequence(&self) -> u64 {
        self.sequence.load(Ordering::Relaxed)
    }

    /// A receiver of the datagrams that reach these sockets, for the slow path (the
    /// same sockets, duplicated into the async runtime).
    pub fn receiver(&self) -> io::Result<Receiver> {
        let dup = |s: &Option<Family>| -> io::Result<_> {
            s.as_ref()
                .map(|(sock, _)| tokio::net::UdpSocket::from_std(sock.try_clone()?))
                .transpose()
        };
        Ok(Receiver {
            v4: dup(&self.v4)?,
            v6: dup(&self.v6)?,
        })
    }
}

/// The socket addresses of the IPv4 or IPv6 `destinations` (link-local IPv6 ones scoped
/// to the interface).
fn socket_addrs(destinations: &[IpAddr], v6: bool, port: u16, ifindex: u32) -> Vec<SocketAddr> {
    destinations
        .iter()
        .filter(|a| a.is_ipv6() == v6)
        .map(|&a| match a {
            IpAddr::V6(a) if is_link_local_v6(&a) => {
                SocketAddr::V6(SocketAddrV6::new(a, port, 0, ifindex))
            }
            a => SocketAddr::new(a, port),
        })
        .collect()
}

/// The signing key, replaceable while shadows send with it (no lock on the fast path: a
/// heartbeat signed during the switch may carry half of each key, and is refused once).
pub struct SigningKey {
    k0: AtomicU64,
    k1: AtomicU64,
}

impl SigningKey {
    fn new(key: Key) -> Self {
        Self {
            k0: AtomicU64::new(key.k0),
            k1: AtomicU64::new(key.k1),
        }
    }

    fn get(&self) -> Key {
        Key {
            k0: self.k0.load(Ordering::Relaxed),
            k1: self.k1.load(Ordering::Relaxed),
        }
    }

    fn set(&self, key: Key) {
        self.k0.store(key.k0, Ordering::Relaxed);
        self.k1.store(key.k1, Ordering::Relaxed);
    }
}

/// The slow path's end of the heartbeat sockets: what the XDP program passed up
/// (heartbeats with a state section).
pub struct Receiver {
    v4: Option<tokio::net::UdpSocket>,
    v6: Option<tokio::net::UdpSocket>,
}

impl Receiver {
    /// Receives the next datagram that reached a socket (a heartbeat with a state section,
    /// or anything else the XDP program passed) and its source address. Never resolves if
    /// there are no sockets.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
        let (n, from) = match (&self.v4, &self.v6) {
            (Some(a), Some(b)) => {
                let mut buf2 = [0u8; MAX_DATAGRAM];
                tokio::select! {
                    r = a.recv_from(buf) => r?,
                    r = b.recv_from(&mut buf2) => {
                        let (n, from) = r?;
                        let n = n.min(buf.len());
                        buf[..n].copy_from_slice(&buf2[..n]);
                        (n, from)
                    }
                }
            }
            (Some(s), None) | (None, Some(s)) => s.recv_from(buf).await?,
            (None, None) => std::future::pending().await,
        };
        Ok((n, from.ip()))
    }
}

/// Joins `group` on the interface, so its frames are accepted (and the state heartbeats
/// sent to it reach this socket).
fn join(sock: &UdpSocket, group: IpAddr, ifindex: u32) -> io::Result<()> {
    let s = socket2::SockRef::from(sock);
    match group {
        IpAddr::V4(g) => {
            s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(ifindex))
        }
        IpAddr::V6(g) => s.join_multicast_v6(&g, ifindex),
    }
}

fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80 || (a.is_multicast() && a.segments()[0] & 0x000f == 2)
}

/// An integer socket option socket2 has no setter for.
fn set_int(s: &Socket, level: libc::c_int, name: libc::c_int, value: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let value = value as libc::c_int;
    // SAFETY: a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socket(interface: &str, ifindex: u32, bind: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // GTSM (RFC 5082): sent with TTL / hop limit 255, and only datagrams that still have
    // 255 reach this socket (the XDP program refuses the others before that).
    let gtsm = GTSM_TTL as u32;
    if bind.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_multicast_if_v6(ifindex)?;
        s.set_multicast_loop_v6(false)?;
        s.set_multicast_hops_v6(gtsm)?;
        s.set_unicast_hops_v6(gtsm)?;
        set_int(&s, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, gtsm)?;
    } else {
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_ttl_v4(gtsm)?;
        s.set_ttl_v4(gtsm)?;
        set_int(&s, libc::IPPROTO_IP, libc::IP_MINTTL, gtsm)?;
    }
    s.bind_device(Some(interface.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&bind.into())?;
    Ok(s.into())
}
