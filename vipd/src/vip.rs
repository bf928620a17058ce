//! A virtual IP as configured: an address and the prefix length it is added with.

use std::{fmt, net::IpAddr, str::FromStr};

/// A VIP: `192.0.2.201` (added as /32), `2001:db8::201` (/128), or with an explicit prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length it is added with.
    pub prefix_len: u8,
}

impl FromStr for Vip {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
            return Err(format!(
                "{s:?} cannot be a VIP (unspecified, multicast or loopback)"
            ));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_prefix() {
        assert_eq!("192.0.2.201".parse::<Vip>().unwrap().prefix_len, 32);
        assert_eq!("2001:db8::1".parse::<Vip>().unwrap().prefix_len, 128);
        assert_eq!("192.0.2.201/24".parse::<Vip>().unwrap().prefix_len, 24);
        assert_eq!(
            "192.0.2.201/24".parse::<Vip>().unwrap().to_string(),
            "192.0.2.201/24"
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "foo",
            "192.0.2.1/33",
            "192.0.2.1/x",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
        ] {
            assert!(bad.parse::<Vip>().is_err(), "{bad}");
        }
    }
}
