//! Parsing of the destination values a policy writes as text: CIDRs (v4, v6, bare addresses,
//! IPv4-mapped IPv6 folded into IPv4) and ports / port ranges, plus the split of a port range
//! into the prefix blocks an LPM trie can hold.

use bulwark_policy::{validate, PortSpec};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cidr {
    V4 { addr: u32, len: u8 },
    V6 { addr: u128, len: u8 },
}

impl Cidr {
    /// Does the prefix contain `addr`? A v4 prefix never contains a v6 address and vice versa
    /// (normalize IPv4-mapped addresses first, see [`normalize_addr`]).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Cidr::V4 { addr: net, len }, IpAddr::V4(a)) => mask4(u32::from(a), *len) == *net,
            (Cidr::V6 { addr: net, len }, IpAddr::V6(a)) => mask6(u128::from(a), *len) == *net,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4 { addr, len } => write!(f, "{}/{len}", Ipv4Addr::from(*addr)),
            Cidr::V6 { addr, len } => write!(f, "{}/{len}", Ipv6Addr::from(*addr)),
        }
    }
}

pub(crate) fn mask4(addr: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => addr,
        l => addr & (u32::MAX << (32 - u32::from(l))),
    }
}

pub(crate) fn mask6(addr: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => addr,
        l => addr & (u128::MAX << (128 - u32::from(l))),
    }
}

/// `::ffff:0:0/96`, the IPv4-mapped block.
const MAPPED_PREFIX: u128 = 0xffff_u128 << 32;

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a single host) with the lint's
/// parser (one definition of what a policy may write), then clears host bits below the prefix
/// length (`10.1.2.3/8` is `10.0.0.0/8`; the lint warns about those) and folds IPv6 prefixes
/// inside `::ffff:0:0/96` into the IPv4 prefix they denote, because destinations are matched
/// after the same folding ([`normalize_addr`]).
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let text = text.trim();
    let net = validate::parse_cidr(text)
        .map_err(|e| format!("{text:?} is not a CIDR: {e}"))?
        .network();
    let len = net.prefix;
    Ok(match net.addr {
        IpAddr::V4(a) => Cidr::V4 {
            addr: u32::from(a),
            len,
        },
        IpAddr::V6(a) => {
            let a = u128::from(a);
            if len >= 96 && a & !0xffff_ffff_u128 == MAPPED_PREFIX {
                Cidr::V4 {
                    addr: a as u32,
                    len: len - 96,
                }
            } else {
                Cidr::V6 { addr: a, len }
            }
        }
    })
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into the IPv4 address it carries; the
/// kernel programs do the same before looking destinations up (see daemon-common).
pub fn normalize_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

/// Parses a port (`443`, `"443"`) or an inclusive range (`"8000-8080"`) into `(low, high)`.
/// Unlike the lint (`validate::parse_port`), port 0 is accepted: it compiles to a condition no
/// connection meets, and the lint is where it is reported.
pub fn parse_port(spec: &PortSpec) -> Result<(u16, u16), String> {
    let range_err = |what: &str| {
        format!(
            "port {what} is not a port from 0 to 65535 or a range like \"8000-8080\" (low <= high)"
        )
    };
    match spec {
        PortSpec::Number(n) => u16::try_from(*n)
            .map(|p| (p, p))
            .map_err(|_| range_err(&n.to_string())),
        PortSpec::Text(t) => {
            let quoted = format!("{t:?}");
            let one = |s: &str| s.trim().parse::<u16>().map_err(|_| range_err(&quoted));
            match t.split_once('-') {
                None => one(t).map(|p| (p, p)),
                Some((lo, hi)) => {
                    let (lo, hi) = (one(lo)?, one(hi)?);
                    if lo > hi {
                        return Err(range_err(&quoted));
                    }
                    Ok((lo, hi))
                }
            }
        }
    }
}

/// Splits `lo..=hi` into the fewest aligned blocks `(start, prefix_bits)` (block size
/// `2^(16 - prefix_bits)`), which is what a port LPM trie can store.
pub fn port_blocks(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // Largest power-of-two block aligned at `lo` that stays within `hi`.
        let mut size_bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while size_bits > 0 && lo + (1 << size_bits) - 1 > hi {
            size_bits -= 1;
        }
        out.push((lo as u16, (16 - size_bits) as u8));
        lo += 1 << size_bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_mask() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Ok(Cidr::V4 {
                addr: 0x0a00_0000,
                len: 8
            })
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Ok(Cidr::V4 {
                addr: 0x0a00_0000,
                len: 8
            })
        );
        assert_eq!(
            parse_cidr(" 192.168.1.7 "),
            Ok(Cidr::V4 {
                addr: 0xc0a8_0107,
                len: 32
            })
        );
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok(Cidr::V4 { addr: 0, len: 0 }));
        assert_eq!(
            parse_cidr("2001:db8::1/32"),
            Ok(Cidr::V6 {
                addr: 0x2001_0db8_u128 << 96,
                len: 32
            })
        );
        assert_eq!(parse_cidr("::1"), Ok(Cidr::V6 { addr: 1, len: 128 }));
        assert_eq!(parse_cidr("::/0"), Ok(Cidr::V6 { addr: 0, len: 0 }));
    }

    #[test]
    fn mapped_v6_cidrs_fold_into_v4() {
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104"),
            Ok(Cidr::V4 {
                addr: 0x0a00_0000,
                len: 8
            })
        );
        assert_eq!(
            parse_cidr("::ffff:1.2.3.4"),
            Ok(Cidr::V4 {
                addr: 0x0102_0304,
                len: 32
            })
        );
        // Wider than the mapped block: stays v6.
        assert!(matches!(
            parse_cidr("::ffff:0:0/80"),
            Ok(Cidr::V6 { len: 80, .. })
        ));
        let a: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(normalize_addr(a), "10.1.2.3".parse::<IpAddr>().unwrap());
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(normalize_addr(b), b);
    }

    #[test]
    fn bad_cidrs_are_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "foo",
            "10.0.0.0/x",
            "10.0.0.0/-1",
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(e.contains(bad.trim()) || bad.is_empty(), "{bad}: {e}");
        }
    }

    #[test]
    fn cidr_contains() {
        let c = parse_cidr("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn ports_parse() {
        assert_eq!(parse_port(&PortSpec::Number(443)), Ok((443, 443)));
        assert_eq!(parse_port(&PortSpec::Text("443".into())), Ok((443, 443)));
        assert_eq!(
            parse_port(&PortSpec::Text("8000-8080".into())),
            Ok((8000, 8080))
        );
        assert_eq!(parse_port(&PortSpec::Text(" 1 - 2 ".into())), Ok((1, 2)));
        for bad in [PortSpec::Number(-1), PortSpec::Number(65536)] {
            assert!(parse_port(&bad).is_err(), "{bad:?}");
        }
        for bad in ["", "http", "9-8", "1-", "70000", "1-2-3"] {
            let e = parse_port(&PortSpec::Text(bad.into())).unwrap_err();
            assert!(e.contains("port"), "{bad}: {e}");
        }
    }

    #[test]
    fn port_ranges_split_into_aligned_blocks() {
        assert_eq!(port_blocks(443, 443), vec![(443, 16)]);
        assert_eq!(port_blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(port_blocks(8000, 8007), vec![(8000, 13)]);
        assert_eq!(port_blocks(8000, 8008), vec![(8000, 13), (8008, 16)]);
        assert_eq!(port_blocks(65535, 65535), vec![(65535, 16)]);
        // Every range is covered exactly, by aligned blocks.
        for (lo, hi) in [
            (1u16, 1023u16),
            (1024, 65535),
            (8000, 8080),
            (3, 17),
            (0, 1),
        ] {
            let blocks = port_blocks(lo, hi);
            let mut next = u32::from(lo);
            for (start, bits) in blocks {
                assert_eq!(u32::from(start), next);
                let size = 1u32 << (16 - u32::from(bits));
                assert_eq!(u32::from(start) % size, 0, "aligned");
                next += size;
            }
            assert_eq!(next, u32::from(hi) + 1);
        }
    }
}
