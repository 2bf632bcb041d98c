//! A connection's host: a DNS name to resolve, or an IP literal to classify
//! directly.
//!
//! Numeric spellings are parsed the way `inet_aton` (and so every C resolver
//! and browser) reads them — `2130706433`, `0177.1`, `0x7f.1`, `127.1` are
//! all `127.0.0.1` — so they are classified as the address they are, and are
//! never sent to DNS. Like the WHATWG URL parser, a host whose last label is
//! numeric must be a valid address or it is refused: `1.2.3.256` or `08.1`
//! is neither a name nor an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The host as it goes into `Host:` headers and URLs (IPv6 in brackets).
    pub fn authority_form(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host '{0}' looks numeric but is not a valid IPv4 address: write the address in dotted-decimal form")]
    BadNumeric(String),
    #[error("host '{0}' is not a valid IPv6 address (zone ids are not accepted)")]
    BadIpv6(String),
    #[error("host '{0}' is not a valid DNS name: use letters, digits, '-' and '_' in dot-separated labels of at most 63 characters")]
    BadName(String),
}

/// Parses a connection's host (or a redirect's).
pub fn parse_host(raw: &str) -> Result<Host, HostError> {
    let s = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    if s.contains(':') {
        return s
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| HostError::BadIpv6(raw.to_string()));
    }
    if s.len() != raw.len() {
        // Brackets around something that is not IPv6.
        return Err(HostError::BadName(raw.to_string()));
    }
    let lower = s.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let last = name.rsplit('.').next().unwrap_or("");
    if ends_in_number(last) {
        return inet_aton(name)
            .map(|a| Host::Ip(IpAddr::V4(a)))
            .ok_or_else(|| HostError::BadNumeric(raw.to_string()));
    }
    if valid_dns_name(name) {
        Ok(Host::Name(name.to_string()))
    } else {
        Err(HostError::BadName(raw.to_string()))
    }
}

/// The WHATWG "ends in a number" test on the last label: all decimal digits,
/// or `0x` followed by hex digits.
fn ends_in_number(label: &str) -> bool {
    if !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// One `inet_aton` part: `0x` hex, leading-`0` octal, else decimal.
fn aton_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // "0x" alone is 0, as in glibc and WHATWG.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 32 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// `inet_aton`: one to four parts; every part but the last is one byte, the
/// last fills the remaining bytes.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| aton_part(p))
        .collect::<Option<Vec<u64>>>()?;
    let (last, head) = nums.split_last()?;
    if head.iter().any(|n| *n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut v: u32 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= (*n as u32) << (24 - 8 * i as u32);
    }
    v |= u32::try_from(*last).ok()?;
    Some(Ipv4Addr::from(v))
}

/// Letters, digits, `-` and `_` in labels of 1-63 bytes, at most 253 bytes.
pub fn valid_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Host {
        Host::Ip(IpAddr::V4(s.parse().unwrap()))
    }

    /// Every numeric spelling is the address it means, never a name.
    #[test]
    fn numeric_spellings_are_addresses() {
        let cases = [
            ("2130706433", "127.0.0.1"),
            ("0177.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0X7F.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0177.0.0.01", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("10.0x10.1", "10.16.0.1"),
            ("167772161", "10.0.0.1"),
            ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
            ("2852039166", "169.254.169.254"),
            ("4294967295", "255.255.255.255"),
            ("8.8.8.8", "8.8.8.8"),
        ];
        for (spelling, addr) in cases {
            assert_eq!(parse_host(spelling), Ok(v4(addr)), "{spelling}");
        }
    }

    #[test]
    fn bad_numeric_spellings_are_refused_not_resolved() {
        for s in [
            "4294967296",
            "1.2.3.256",
            "256.1",
            "1.2.3.4.5",
            "08.1",
            "1..1",
            "99999999999999999999999999999999999",
            "foo.09",
        ] {
            assert_eq!(
                parse_host(s),
                Err(HostError::BadNumeric(s.to_string())),
                "{s}"
            );
        }
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(parse_host("[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            parse_host("::ffff:127.0.0.1"),
            Ok(Host::Ip("::ffff:127.0.0.1".parse().unwrap()))
        );
        assert!(matches!(
            parse_host("fe80::1%eth0"),
            Err(HostError::BadIpv6(_))
        ));
        assert!(matches!(parse_host("[foo]"), Err(HostError::BadName(_))));
    }

    #[test]
    fn names() {
        assert_eq!(parse_host("Svc.Test."), Ok(Host::Name("svc.test".into())));
        assert_eq!(
            parse_host("api.example.com"),
            Ok(Host::Name("api.example.com".into()))
        );
        assert_eq!(parse_host("1.2.3.a"), Ok(Host::Name("1.2.3.a".into())));
        assert_eq!(parse_host("0xg"), Ok(Host::Name("0xg".into())));
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a b",
            "a/b",
            "ex\u{e4}mple.com",
            "a@b",
        ] {
            assert!(
                matches!(parse_host(bad), Err(HostError::BadName(_))),
                "{bad}"
            );
        }
        assert!(parse_host(&"a".repeat(64)).is_err());
        assert_eq!(Host::Ip("::1".parse().unwrap()).authority_form(), "[::1]");
    }
}
