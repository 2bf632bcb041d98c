//! IP prefixes (`10.0.0.0/8`, `fc00::/7`): the rows of the special-purpose
//! table and a connection's `allow_cidrs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix. Host bits below the prefix are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4 { addr: u32, len: u8 },
    V6 { addr: u128, len: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("'{0}' is not an IP prefix: write ADDRESS/LENGTH, e.g. 10.0.0.0/8 or fd00::/8")]
    Syntax(String),
    #[error("'{0}': the prefix length is out of range (0-32 for IPv4, 0-128 for IPv6)")]
    Length(String),
    #[error(
        "'{0}' has bits set below its prefix length: write the network address (e.g. 10.1.0.0/16)"
    )]
    HostBits(String),
}

const fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

const fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl Cidr {
    /// An IPv4 prefix for the committed table (host bits are masked off).
    pub const fn v4(a: [u8; 4], len: u8) -> Cidr {
        Cidr::V4 {
            addr: u32::from_be_bytes(a) & mask4(len),
            len,
        }
    }

    /// An IPv6 prefix for the committed table (host bits are masked off).
    pub const fn v6(s: [u16; 8], len: u8) -> Cidr {
        let mut addr: u128 = 0;
        let mut i = 0;
        while i < 8 {
            addr = (addr << 16) | s[i] as u128;
            i += 1;
        }
        Cidr::V6 {
            addr: addr & mask6(len),
            len,
        }
    }

    pub fn prefix_len(&self) -> u8 {
        match *self {
            Cidr::V4 { len, .. } | Cidr::V6 { len, .. } => len,
        }
    }

    /// Whether `ip` lies in this prefix. An IPv4 prefix never contains an
    /// IPv6 address (not even an IPv4-mapped one) and vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Cidr::V4 { addr, len }, IpAddr::V4(a)) => u32::from(a) & mask4(len) == addr,
            (Cidr::V6 { addr, len }, IpAddr::V6(a)) => u128::from(a) & mask6(len) == addr,
            _ => false,
        }
    }

    /// The first address of the prefix.
    pub fn first(&self) -> IpAddr {
        match *self {
            Cidr::V4 { addr, .. } => IpAddr::V4(Ipv4Addr::from(addr)),
            Cidr::V6 { addr, .. } => IpAddr::V6(Ipv6Addr::from(addr)),
        }
    }

    /// The last address of the prefix.
    pub fn last(&self) -> IpAddr {
        match *self {
            Cidr::V4 { addr, len } => IpAddr::V4(Ipv4Addr::from(addr | !mask4(len))),
            Cidr::V6 { addr, len } => IpAddr::V6(Ipv6Addr::from(addr | !mask6(len))),
        }
    }

    /// Parses `ADDRESS/LENGTH` (strict dotted-quad IPv4 or RFC 4291 IPv6, no
    /// zone). A bare address is a host prefix (`/32`, `/128`). Host bits set
    /// below the length are an error, not silently cleared: `10.1.2.3/8` is
    /// more likely a typo than a wish for all of 10/8.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err(syntax());
                }
                (a, Some(l.parse::<u8>().map_err(|_| syntax())?))
            }
            None => (s, None),
        };
        let ip: IpAddr = a.parse().map_err(|_| syntax())?;
        let c = match ip {
            IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(CidrError::Length(s.to_string()));
                }
                Cidr::V4 {
                    addr: u32::from(v4),
                    len,
                }
            }
            IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(CidrError::Length(s.to_string()));
                }
                Cidr::V6 {
                    addr: u128::from(v6),
                    len,
                }
            }
        };
        let clean = match c {
            Cidr::V4 { addr, len } => addr & mask4(len) == addr,
            Cidr::V6 { addr, len } => addr & mask6(len) == addr,
        };
        if !clean {
            return Err(CidrError::HostBits(s.to_string()));
        }
        Ok(c)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.first(), self.prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.0".parse().unwrap()));
        assert!(!c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let h = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(h, Cidr::v4([127, 0, 0, 1], 32));
        let v6 = Cidr::parse("fc00::/7").unwrap();
        assert!(v6.contains("fdff::1".parse().unwrap()));
        assert!(!v6.contains("fe00::1".parse().unwrap()));
        assert_eq!(v6.to_string(), "fc00::/7");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn parse_refuses_bad_input() {
        assert!(matches!(
            Cidr::parse("10.1.2.3/8"),
            Err(CidrError::HostBits(_))
        ));
        assert!(matches!(
            Cidr::parse("10.0.0.0/33"),
            Err(CidrError::Length(_))
        ));
        assert!(matches!(Cidr::parse("::/129"), Err(CidrError::Length(_))));
        for bad in [
            "",
            "/8",
            "10/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "0177.0.0.1/32",
            "fe80::1%eth0/128",
            "10.0.0.0/8/8",
            "x",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_and_last() {
        let c = Cidr::v4([192, 168, 0, 0], 16);
        assert_eq!(c.first(), "192.168.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(c.last(), "192.168.255.255".parse::<IpAddr>().unwrap());
        let c = Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10);
        assert_eq!(
            c.last(),
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap()
        );
    }
}
