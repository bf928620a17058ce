//! Adding and removing VIPs on the interface, over rtnetlink.

use std::{net::IpAddr, time::Duration};

use futures::{StreamExt as _, TryStreamExt as _, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
        link::{LinkAttribute, LinkFlags, LinkMessage, MacVlanMode},
    },
};

use crate::vip::Vip;

/// Errors talking to the kernel's routing netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Opening the netlink socket failed.
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// No interface of that name in this network namespace.
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// The interface has no Ethernet address.
    #[error("interface {0:?} has no 6-byte hardware address (vipd needs an Ethernet link)")]
    NotEthernet(String),
    /// Preparing an interface failed.
    #[error("{what}: {source}")]
    Setup {
        what: String,
        source: std::io::Error,
    },
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
    /// The kernel did not answer a request in time.
    #[error("{0}: no answer from the kernel within {REQUEST_TIMEOUT:?}")]
    TimedOut(String),
}

/// How long one netlink request may take before vipd gives up on it (the kernel answers
/// in microseconds; a request that hangs must not hang the daemon).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `request`, given up after [`REQUEST_TIMEOUT`] (`what` names it in the error).
async fn bounded<T>(
    what: impl FnOnce() -> String,
    request: impl Future<Output = T>,
) -> Result<T, NetlinkError> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| NetlinkError::TimedOut(what()))
}

/// Whether an address add changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The address was added.
    New,
    /// It was already there (EEXIST): nothing to do.
    AlreadyPresent,
}

/// A netlink handle bound to one interface.
#[derive(Clone)]
pub struct Link {
    handle: Handle,
    /// The interface's index.
    pub index: u32,
    /// The interface's name.
    pub name: String,
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// Whether it had carrier (up, lower layer up) when opened.
    pub carrier: bool,
}

impl Link {
    /// Opens a netlink connection (spawned on the current tokio runtime) and looks up `name`.
    pub async fn open(name: &str) -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        let mut links = handle.link().get().match_name(name.to_string()).execute();
        let msg = match bounded(|| format!("RTM_GETLINK {name}"), links.try_next()).await? {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(NetlinkError::NoSuchInterface(name.into())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Err(NetlinkError::NoSuchInterface(name.into()));
            }
            Err(source) => {
                return Err(NetlinkError::Request {
                    what: format!("RTM_GETLINK {name}"),
                    source,
                });
            }
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::NotEthernet(name.into()))?;
        Ok(Self {
            carrier: has_carrier(&msg),
            handle,
            index: msg.header.index,
            name: name.into(),
            mac,
        })
    }

    /// The addresses configured on this interface, with their prefix lengths.
    pub async fn addresses(&self) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        let request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute()
            .try_collect();
        let msgs: Vec<AddressMessage> = bounded(|| format!("RTM_GETADDR {}", self.name), request)
            .await?
            .map_err(|source| NetlinkError::Request {
                what: format!("RTM_GETADDR {}", self.name),
                source,
            })?;
        Ok(msgs
            .iter()
            .filter_map(|m| Some((address_of(m)?, m.header.prefix_len)))
            .collect())
    }

    /// Creates a macvlan `name` on this interface with the MAC `mac` and opens it, after
    /// removing a leftover of the same name (a virtual MAC for VRRP). `before_up` runs
    /// while it is still down (to set per-interface sysctls); then it is set up.
    pub async fn add_macvlan(
        &self,
        name: &str,
        mac: [u8; 6],
        before_up: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<Link, NetlinkError> {
        if let Ok(old) = Link::open(name).await {
            old.delete().await?;
        }
        let request = |what: String| move |source| NetlinkError::Request { what, source };
        let msg = rtnetlink::LinkMacVlan::new(name, self.index, MacVlanMode::Private)
            .address(mac.to_vec())
            .build();
        let what = format!("creating macvlan {name} on {}", self.name);
        bounded(|| what.clone(), self.handle.link().add(msg).execute())
            .await?
            .map_err(request(what))?;
        let link = Link::open(name).await?;
        before_up().map_err(|e| NetlinkError::Setup {
            what: format!("preparing {name}"),
            source: e,
        })?;
        let up = rtnetlink::LinkUnspec::new_with_index(link.index)
            .up()
            .build();
        let what = format!("setting {name} up");
        bounded(|| what.clone(), self.handle.link().set(up).execute())
            .await?
            .map_err(request(what))?;
        Ok(link)
    }

    /// Deletes this interface (a macvlan this daemon made).
    pub async fn delete(&self) -> Result<(), NetlinkError> {
        let what = format!("deleting {}", self.name);
        bounded(
            || what.clone(),
            self.handle.link().del(self.index).execute(),
        )
        .await?
        .map_err(|source| NetlinkError::Request { what, source })
    }

    /// Adds a VIP (IPv6 without duplicate address detection, so it is usable at once).
    pub async fn add(&self, vip: &Vip) -> Result<Added, NetlinkError> {
        let mut req = self
            .handle
            .address()
            .add(self.index, vip.addr, vip.prefix_len);
        if vip.addr.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match bounded(|| format!("adding {vip} to {}", self.name), req.execute()).await? {
            Ok(()) => Ok(Added::New),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                Ok(Added::AlreadyPresent)
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("adding {vip} to {}", self.name),
                source,
            }),
        }
    }

    /// Removes a VIP; `false` if it was not there.
    pub async fn remove(&self, vip: &Vip) -> Result<bool, NetlinkError> {
        // One RTM_DELADDR, no dump: releasing many VIPs must stay cheap.
        let msg = match vip.addr {
            IpAddr::V4(a) => rtnetlink::AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(self.index)
                .address(a, vip.prefix_len)
                .build(),
            IpAddr::V6(a) => rtnetlink::AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(self.index)
                .address(a, vip.prefix_len)
                .build(),
        };
        let request = self.handle.address().del(msg).execute();
        match bounded(|| format!("removing {vip} from {}", self.name), request).await? {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {
                Ok(false)
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("removing {vip} from {}", self.name),
                source,
            }),
        }
    }
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn has_carrier(msg: &LinkMessage) -> bool {
    msg.header
        .flags
        .contains(LinkFlags::Up | LinkFlags::LowerUp)
}

/// Carrier changes of some interfaces, from rtnetlink link notifications.
pub struct CarrierWatch {
    indices: Vec<u32>,
    handle: Handle,
    messages: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    /// States re-read after an overrun, not yet returned.
    pending: Vec<(u32, bool)>,
}

impl CarrierWatch {
    /// Subscribes to link notifications of one interface (spawned on the current tokio
    /// runtime).
    pub fn open(index: u32) -> Result<Self, NetlinkError> {
        Self::open_many(&[index])
    }

    /// Subscribes to link notifications of these interfaces.
    pub fn open_many(indices: &[u32]) -> Result<Self, NetlinkError> {
        let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Self {
            indices: indices.to_vec(),
            handle,
            messages,
            pending: Vec::new(),
        })
    }

    /// The next carrier state of the interface (`true`: up); `None` if the kernel closed
    /// the subscription.
    pub async fn next(&mut self) -> Option<bool> {
        self.next_change().await.map(|(_, up)| up)
    }

    /// The next carrier state of one of the interfaces: (index, up).
    pub async fn next_change(&mut self) -> Option<(u32, bool)> {
        if let Some(p) = self.pending.pop() {
            return Some(p);
        }
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                    if self.indices.contains(&link.header.index) =>
                {
                    return Some((link.header.index, has_carrier(&link)));
                }
                // Notifications were lost (socket overrun): ask for the current states.
                NetlinkPayload::Overrun(_) => {
                    for &index in &self.indices {
                        let mut links = self.handle.link().get().match_index(index).execute();
                        if let Ok(Ok(Some(link))) =
                            bounded(|| "RTM_GETLINK".into(), links.try_next()).await
                        {
                            self.pending.push((index, has_carrier(&link)));
                        }
                    }
                    if let Some(p) = self.pending.pop() {
                        return Some(p);
                    }
                }
                _ => {}
            }
        }
    }
}

/// What an [`AddressWatch`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressGone {
    /// This address was removed from the interface with this index.
    Address(u32, IpAddr),
    /// Notifications were lost (socket overrun): any address may have gone.
    Unknown,
}

/// Addresses removed from interfaces (by anyone: vipd itself, an operator's `ip addr
/// flush`, networkd or NetworkManager reconfiguring it), from rtnetlink notifications.
pub struct AddressWatch {
    messages: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl AddressWatch {
    /// Subscribes to IPv4 and IPv6 address notifications (spawned on the current tokio
    /// runtime).
    pub fn open() -> Result<Self, NetlinkError> {
        let (conn, _, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { messages })
    }

    /// The next removal; `None` if the kernel closed the subscription.
    pub async fn next(&mut self) -> Option<AddressGone> {
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                    if let Some(addr) = address_of(&a) {
                        return Some(AddressGone::Address(a.header.index, addr));
                    }
                }
                NetlinkPayload::Overrun(_) => return Some(AddressGone::Unknown),
                _ => {}
            }
        }
    }
}

/// A MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
