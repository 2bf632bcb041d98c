//! The one table of addresses the gateway never dials (unless a connection's
//! `allow_cidrs` exempts them): every block the IANA IPv4 and IPv6
//! Special-Purpose Address Registries mark not globally reachable, plus
//! multicast, cloud metadata endpoints and the IPv6 forms that embed an IPv4
//! address.
//!
//! Sources: IANA "IPv4 Special-Purpose Address Registry" and "IPv6
//! Special-Purpose Address Registry" (RFC 6890 format), the IANA IPv6 Address
//! Space registry (only `2000::/3` is allocated as global unicast) and the
//! multicast registries. Decisions beyond the registries, each a row below:
//!
//! - **Embedded IPv4 is denied, not decoded.** IPv4-mapped (`::ffff:0:0/96`),
//!   IPv4-compatible (`::/96`), SIIT (`::ffff:0:0:0/96`), NAT64
//!   (`64:ff9b::/96`, which the registry marks globally reachable,
//!   `64:ff9b:1::/48`), 6to4 (`2002::/16`) and Teredo (`2001::/32`) are
//!   refused whatever IPv4 address they carry: a service that is only
//!   reachable through a translator is not one the catalog names, and decoding
//!   would make the decision depend on a translator we cannot see.
//! - **Whole blocks, not their anycast holes.** `192.0.0.0/24` and
//!   `2001::/23` contain a few globally reachable anycast /32s and /128s
//!   (PCP, TURN, AMT, ORCHIDv2, DETs); no REST catalog entry has a reason to
//!   reach them, so the whole block is denied.
//! - **Outside global unicast.** IPv6 space outside `2000::/3` is reserved by
//!   IANA; three catch-all rows deny it so that a future special-purpose
//!   block there is denied before this table learns its name.
//! - **Cloud metadata.** The instance metadata services of the major clouds
//!   have their own rows (most lie in link-local or CGNAT space already;
//!   Azure's WireServer `168.63.129.16` is a public address).
//!
//! **Exemptions.** A connection's `allow_cidrs` entry exempts an address only
//! when it contains the address AND is at least as specific as the most
//! specific row that denies it. So `127.0.0.0/8` reaches loopback and
//! `10.20.0.0/16` part of `10/8`, but `0.0.0.0/0` or `::/0` exempt nothing,
//! and `169.254.0.0/16` does not reach `169.254.169.254`: a metadata endpoint
//! is reachable only by naming it exactly.

use crate::cidr::Cidr;
use std::net::IpAddr;

/// One denied block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub cidr: Cidr,
    pub name: &'static str,
    /// The registry (and RFC) the row comes from.
    pub reference: &'static str,
}

const fn r4(a: [u8; 4], len: u8, name: &'static str, reference: &'static str) -> Row {
    Row {
        cidr: Cidr::v4(a, len),
        name,
        reference,
    }
}

const fn r6(s: [u16; 8], len: u8, name: &'static str, reference: &'static str) -> Row {
    Row {
        cidr: Cidr::v6(s, len),
        name,
        reference,
    }
}

/// Every denied block. Order is for the reader; [`classify`] takes the most
/// specific matching row.
#[rustfmt::skip]
pub const TABLE: &[Row] = &[
    // --- IPv4 Special-Purpose Address Registry: not globally reachable ---
    r4([0, 0, 0, 0], 8, "this network", "IANA IPv4 Special-Purpose Address Registry; RFC 791"),
    r4([0, 0, 0, 0], 32, "this host on this network", "IANA IPv4 Special-Purpose Address Registry; RFC 1122"),
    r4([10, 0, 0, 0], 8, "private-use", "IANA IPv4 Special-Purpose Address Registry; RFC 1918"),
    r4([100, 64, 0, 0], 10, "shared address space (CGNAT)", "IANA IPv4 Special-Purpose Address Registry; RFC 6598"),
    r4([127, 0, 0, 0], 8, "loopback", "IANA IPv4 Special-Purpose Address Registry; RFC 1122"),
    r4([169, 254, 0, 0], 16, "link local", "IANA IPv4 Special-Purpose Address Registry; RFC 3927"),
    r4([172, 16, 0, 0], 12, "private-use", "IANA IPv4 Special-Purpose Address Registry; RFC 1918"),
    r4([192, 0, 0, 0], 24, "IETF protocol assignments (whole block, anycast /32s included)", "IANA IPv4 Special-Purpose Address Registry; RFC 6890"),
    r4([192, 0, 0, 0], 29, "IPv4 service continuity prefix", "IANA IPv4 Special-Purpose Address Registry; RFC 7335"),
    r4([192, 0, 0, 8], 32, "IPv4 dummy address", "IANA IPv4 Special-Purpose Address Registry; RFC 7600"),
    r4([192, 0, 0, 170], 31, "NAT64/DNS64 discovery", "IANA IPv4 Special-Purpose Address Registry; RFC 8880, RFC 7050"),
    r4([192, 0, 2, 0], 24, "documentation (TEST-NET-1)", "IANA IPv4 Special-Purpose Address Registry; RFC 5737"),
    r4([192, 88, 99, 0], 24, "deprecated 6to4 relay anycast", "IANA IPv4 Special-Purpose Address Registry; RFC 7526"),
    r4([192, 168, 0, 0], 16, "private-use", "IANA IPv4 Special-Purpose Address Registry; RFC 1918"),
    r4([198, 18, 0, 0], 15, "benchmarking", "IANA IPv4 Special-Purpose Address Registry; RFC 2544"),
    r4([198, 51, 100, 0], 24, "documentation (TEST-NET-2)", "IANA IPv4 Special-Purpose Address Registry; RFC 5737"),
    r4([203, 0, 113, 0], 24, "documentation (TEST-NET-3)", "IANA IPv4 Special-Purpose Address Registry; RFC 5737"),
    r4([240, 0, 0, 0], 4, "reserved", "IANA IPv4 Special-Purpose Address Registry; RFC 1112"),
    r4([255, 255, 255, 255], 32, "limited broadcast", "IANA IPv4 Special-Purpose Address Registry; RFC 8190, RFC 919"),
    // --- IPv4 beyond the registry ---
    r4([224, 0, 0, 0], 4, "multicast", "IANA IPv4 Multicast Address Space Registry; RFC 5771"),
    r4([169, 254, 169, 254], 32, "cloud instance metadata (AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle)", "cloud metadata; inside RFC 3927 link local"),
    r4([169, 254, 170, 2], 32, "cloud task metadata (AWS ECS)", "cloud metadata; inside RFC 3927 link local"),
    r4([100, 100, 100, 200], 32, "cloud instance metadata (Alibaba Cloud)", "cloud metadata; inside RFC 6598 shared address space"),
    r4([168, 63, 129, 16], 32, "cloud host endpoint (Azure WireServer), a public address", "cloud metadata"),
    r4([192, 0, 0, 192], 32, "cloud instance metadata (Oracle Cloud, legacy)", "cloud metadata; inside RFC 6890 IETF protocol assignments"),
    // --- IPv6 Special-Purpose Address Registry: not globally reachable ---
    r6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback", "IANA IPv6 Special-Purpose Address Registry; RFC 4291"),
    r6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified", "IANA IPv6 Special-Purpose Address Registry; RFC 4291"),
    r6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped (embeds IPv4; denied)", "IANA IPv6 Special-Purpose Address Registry; RFC 4291"),
    r6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64 well-known prefix (embeds IPv4; denied although the registry marks it global)", "IANA IPv6 Special-Purpose Address Registry; RFC 6052"),
    r6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64 (embeds IPv4)", "IANA IPv6 Special-Purpose Address Registry; RFC 8215"),
    r6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only", "IANA IPv6 Special-Purpose Address Registry; RFC 6666"),
    r6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "dummy IPv6 prefix", "IANA IPv6 Special-Purpose Address Registry; RFC 9780"),
    r6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol assignments (whole block, anycast holes included)", "IANA IPv6 Special-Purpose Address Registry; RFC 2928"),
    r6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo (embeds IPv4)", "IANA IPv6 Special-Purpose Address Registry; RFC 4380"),
    r6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking", "IANA IPv6 Special-Purpose Address Registry; RFC 5180"),
    r6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "deprecated ORCHID", "IANA IPv6 Special-Purpose Address Registry; RFC 4843"),
    r6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation", "IANA IPv6 Special-Purpose Address Registry; RFC 3849"),
    r6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 (embeds IPv4)", "IANA IPv6 Special-Purpose Address Registry; RFC 3056"),
    r6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation", "IANA IPv6 Special-Purpose Address Registry; RFC 9637"),
    r6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing (SRv6) SIDs", "IANA IPv6 Special-Purpose Address Registry; RFC 9602"),
    r6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local", "IANA IPv6 Special-Purpose Address Registry; RFC 4193, RFC 8190"),
    r6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local unicast", "IANA IPv6 Special-Purpose Address Registry; RFC 4291"),
    // --- IPv6 beyond the registry ---
    r6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible, deprecated (embeds IPv4)", "RFC 4291 section 2.5.5.1"),
    r6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "IPv4-translated, SIIT (embeds IPv4)", "RFC 2765"),
    r6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local, deprecated", "RFC 3879"),
    r6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "IANA IPv6 Multicast Address Space Registry; RFC 4291"),
    r6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128, "cloud instance metadata (AWS, IPv6)", "cloud metadata; inside RFC 4193 unique local"),
    r6([0, 0, 0, 0, 0, 0, 0, 0], 3, "outside global unicast 2000::/3 (reserved)", "IANA IPv6 Address Space registry"),
    r6([0x4000, 0, 0, 0, 0, 0, 0, 0], 2, "outside global unicast 2000::/3 (reserved)", "IANA IPv6 Address Space registry"),
    r6([0x8000, 0, 0, 0, 0, 0, 0, 0], 1, "outside global unicast 2000::/3 (reserved)", "IANA IPv6 Address Space registry"),
];

/// Why an address may not be dialled: the most specific row that covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied(pub &'static Row);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} ({})",
            self.0.cidr, self.0.name, self.0.reference
        )
    }
}

/// The most specific row covering `ip`, if any.
pub fn row_for(ip: IpAddr) -> Option<&'static Row> {
    TABLE
        .iter()
        .filter(|r| r.cidr.contains(ip))
        .max_by_key(|r| r.cidr.prefix_len())
}

/// Whether the gateway may dial `ip` for a connection with these
/// `allow_cidrs` (see the module doc for how an exemption works).
pub fn classify(ip: IpAddr, allow: &[Cidr]) -> Result<(), Denied> {
    let Some(row) = row_for(ip) else {
        return Ok(());
    };
    let exempt = allow
        .iter()
        .any(|a| a.contains(ip) && a.prefix_len() >= row.cidr.prefix_len());
    if exempt {
        Ok(())
    } else {
        Err(Denied(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every row: both ends of its block are denied, and at least one end is
    /// decided by this very row (so no row is dead, shadowed by a more
    /// specific one everywhere). A failure names the row.
    #[test]
    fn every_row_denies_its_block() {
        let mut failures = Vec::new();
        for (i, row) in TABLE.iter().enumerate() {
            let ends = [row.cidr.first(), row.cidr.last()];
            for a in ends {
                if classify(a, &[]).is_ok() {
                    failures.push(format!("row {i} {} ({}): {a} allowed", row.cidr, row.name));
                }
            }
            if !ends.iter().any(|a| row_for(*a) == Some(row)) {
                failures.push(format!(
                    "row {i} {} ({}): neither end is decided by this row",
                    row.cidr, row.name
                ));
            }
            // Exempted by exactly its own prefix.
            for a in ends {
                if row_for(a) == Some(row) && classify(a, &[row.cidr]).is_err() {
                    failures.push(format!(
                        "row {i} {} ({}): {a} not exempted by {}",
                        row.cidr, row.name, row.cidr
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn rows_are_unique() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert_ne!(a.cidr, b.cidr, "{} appears twice", a.cidr);
            }
        }
    }

    /// The classes the issue names, each with the row that must decide it.
    #[test]
    fn named_classes() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private-use"),
            ("172.31.255.255", "private-use"),
            ("192.168.1.1", "private-use"),
            ("169.254.1.1", "link local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("0.1.2.3", "this network"),
            ("0.0.0.0", "this host on this network"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "limited broadcast"),
            ("198.19.0.1", "benchmarking"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("169.254.169.254", "cloud instance metadata (AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle)"),
            ("100.100.100.200", "cloud instance metadata (Alibaba Cloud)"),
            ("168.63.129.16", "cloud host endpoint (Azure WireServer), a public address"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "IPv4-mapped (embeds IPv4; denied)"),
            ("::ffff:8.8.8.8", "IPv4-mapped (embeds IPv4; denied)"),
            ("64:ff9b::7f00:1", "NAT64 well-known prefix (embeds IPv4; denied although the registry marks it global)"),
            ("64:ff9b::808:808", "NAT64 well-known prefix (embeds IPv4; denied although the registry marks it global)"),
            ("64:ff9b:1::a00:1", "local-use NAT64 (embeds IPv4)"),
            ("2002:7f00:1::", "6to4 (embeds IPv4)"),
            ("2002:808:808::1", "6to4 (embeds IPv4)"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo (embeds IPv4)"),
            ("::127.0.0.1", "IPv4-compatible, deprecated (embeds IPv4)"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fd00:ec2::254", "cloud instance metadata (AWS, IPv6)"),
            ("fe80::1", "link-local unicast"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
        ];
        let mut failures = Vec::new();
        for (a, name) in cases {
            match classify(ip(a), &[]) {
                Err(Denied(row)) if row.name == name => {}
                other => failures.push(format!("{a}: expected '{name}', got {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn global_addresses_pass() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2620:4f:8000::1",
        ] {
            assert_eq!(classify(ip(a), &[]), Ok(()), "{a}");
        }
    }

    #[test]
    fn allow_cidrs_exempt_only_when_as_specific() {
        let loop8 = Cidr::parse("127.0.0.0/8").unwrap();
        assert_eq!(classify(ip("127.0.0.1"), &[loop8]), Ok(()));
        assert_eq!(classify(ip("127.9.9.9"), &[loop8]), Ok(()));
        // A v4 exemption never covers the v6 forms of the same address.
        assert!(classify(ip("::ffff:127.0.0.1"), &[loop8]).is_err());
        assert!(classify(ip("64:ff9b::7f00:1"), &[loop8]).is_err());
        // Blanket prefixes exempt nothing.
        let all4 = Cidr::parse("0.0.0.0/0").unwrap();
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(classify(ip("10.0.0.1"), &[all4, all6]).is_err());
        assert!(classify(ip("fc00::1"), &[all4, all6]).is_err());
        // A narrower exemption inside a row works.
        let net = Cidr::parse("10.20.0.0/16").unwrap();
        assert_eq!(classify(ip("10.20.1.1"), &[net]), Ok(()));
        assert!(classify(ip("10.21.1.1"), &[net]).is_err());
        // Metadata needs its exact prefix.
        let ll = Cidr::parse("169.254.0.0/16").unwrap();
        assert_eq!(classify(ip("169.254.1.1"), &[ll]), Ok(()));
        assert!(classify(ip("169.254.169.254"), &[ll]).is_err());
        let md = Cidr::parse("169.254.169.254/32").unwrap();
        assert_eq!(classify(ip("169.254.169.254"), &[md]), Ok(()));
    }
}
