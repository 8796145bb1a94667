//! Policy values and their one parser: CIDRs, ports and port ranges as a policy writes them,
//! parsed into the typed values validation accepts and the compiler consumes ([`Cidr`],
//! [`PortRange`], a whole `matchDestinations` entry as a [`DestinationSet`]); the split of a
//! port range into the prefix blocks a port trie holds; and the longest value the kernel
//! compares per field ([`ValueLimit`]). The lint turns the errors here into diagnostics; the
//! compiler lays the values out for the kernel. Nothing else parses these strings.

use crate::model::{DestinationSelector, IntValue, MatchKind, PortSpec, Protocol};
use daemon_common as limits;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network prefix with its host bits cleared, in the family it was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cidr {
    V4 { addr: u32, len: u8 },
    V6 { addr: u128, len: u8 },
}

fn mask4(addr: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => addr,
        l => addr & (u32::MAX << (32 - u32::from(l))),
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => addr,
        l => addr & (u128::MAX << (128 - u32::from(l))),
    }
}

/// `::ffff:0:0/96`, the IPv4-mapped block.
const MAPPED_PREFIX: u128 = 0xffff_u128 << 32;

impl Cidr {
    /// The network of `addr/len` (host bits cleared; `len` at most the family's width).
    fn network(addr: IpAddr, len: u8) -> Cidr {
        match addr {
            IpAddr::V4(a) => Cidr::V4 {
                addr: mask4(u32::from(a), len),
                len,
            },
            IpAddr::V6(a) => Cidr::V6 {
                addr: mask6(u128::from(a), len),
                len,
            },
        }
    }

    /// Does the prefix contain `addr`? A v4 prefix never contains a v6 address and vice versa
    /// (fold IPv4-mapped addresses first, see [`normalize_addr`]).
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Cidr::V4 { addr: net, len }, IpAddr::V4(a)) => mask4(u32::from(a), *len) == *net,
            (Cidr::V6 { addr: net, len }, IpAddr::V6(a)) => mask6(u128::from(a), *len) == *net,
            _ => false,
        }
    }

    /// True when every address of `other` is in `self` (same family only).
    pub fn covers(&self, other: &Cidr) -> bool {
        match (*self, *other) {
            (Cidr::V4 { addr, len }, Cidr::V4 { addr: o, len: ol }) => {
                len <= ol && mask4(o, len) == addr
            }
            (Cidr::V6 { addr, len }, Cidr::V6 { addr: o, len: ol }) => {
                len <= ol && mask6(o, len) == addr
            }
            _ => false,
        }
    }

    /// True when some address is in both.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The prefix of length `len` (at most this one's) that covers this one.
    pub fn truncated(self, len: u8) -> Cidr {
        match self {
            Cidr::V4 { addr, .. } => Cidr::V4 {
                addr: mask4(addr, len),
                len,
            },
            Cidr::V6 { addr, .. } => Cidr::V6 {
                addr: mask6(addr, len),
                len,
            },
        }
    }

    /// In the order of `Cidr`, the least and the greatest prefix that starts inside this one:
    /// `d` starts inside `c` exactly when `c.bounds().0 <= d <= c.bounds().1`.
    pub fn bounds(self) -> (Cidr, Cidr) {
        match self {
            Cidr::V4 { addr, len } => (
                Cidr::V4 { addr, len: 0 },
                Cidr::V4 {
                    addr: addr | !mask4(u32::MAX, len),
                    len: u8::MAX,
                },
            ),
            Cidr::V6 { addr, len } => (
                Cidr::V6 { addr, len: 0 },
                Cidr::V6 {
                    addr: addr | !mask6(u128::MAX, len),
                    len: u8::MAX,
                },
            ),
        }
    }

    /// The prefix with IPv6 prefixes inside `::ffff:0:0/96` folded into the IPv4 prefix they
    /// denote, as destinations are matched: the kernel folds IPv4-mapped destination addresses
    /// the same way ([`normalize_addr`]) before its lookup.
    pub fn folded(self) -> Cidr {
        match self {
            Cidr::V6 { addr, len } if len >= 96 && addr & !0xffff_ffff_u128 == MAPPED_PREFIX => {
                Cidr::V4 {
                    addr: addr as u32,
                    len: len - 96,
                }
            }
            other => other,
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

/// A CIDR as parsed from its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedCidr {
    /// The network the text denotes.
    pub network: Cidr,
    /// The text had host bits set (`10.1.2.3/8` means `10.0.0.0/8`); the lint warns about it.
    pub host_bits: bool,
}

/// Why a CIDR does not parse. The message quotes the text as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR `{text}`: `{addr}` is not an IPv4 or IPv6 address")]
    NotAnAddress { text: String, addr: String },
    #[error("invalid CIDR `{text}`: prefix length `/{prefix}` must be a number from 0 to {width}")]
    BadPrefix {
        text: String,
        prefix: String,
        width: u8,
    },
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a single host); surrounding blanks
/// are ignored.
pub fn parse_cidr(text: &str) -> Result<ParsedCidr, CidrError> {
    let trimmed = text.trim();
    let (addr, prefix) = match trimmed.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (trimmed, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| CidrError::NotAnAddress {
        text: text.to_string(),
        addr: addr.to_string(),
    })?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => width,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= width => n,
            _ => {
                return Err(CidrError::BadPrefix {
                    text: text.to_string(),
                    prefix: p.to_string(),
                    width,
                })
            }
        },
    };
    let host_bits = match addr {
        IpAddr::V4(a) => mask4(u32::from(a), len) != u32::from(a),
        IpAddr::V6(a) => mask6(u128::from(a), len) != u128::from(a),
    };
    Ok(ParsedCidr {
        network: Cidr::network(addr, len),
        host_bits,
    })
}

/// An inclusive range of ports, `1 <= lo <= hi`: port 0 never appears on a connection, so a
/// policy cannot name it. Serializes as `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "(u16, u16)")]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl From<PortRange> for (u16, u16) {
    fn from(r: PortRange) -> (u16, u16) {
        (r.lo, r.hi)
    }
}

impl PortRange {
    /// `lo..=hi`; `None` unless `1 <= lo <= hi`.
    pub fn new(lo: u16, hi: u16) -> Option<PortRange> {
        (lo >= 1 && lo <= hi).then_some(PortRange { lo, hi })
    }

    pub fn lo(self) -> u16 {
        self.lo
    }

    pub fn hi(self) -> u16 {
        self.hi
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    /// True when every port of `other` is in `self`.
    pub fn covers(self, other: PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// True when some port is in both.
    pub fn overlaps(self, other: PortRange) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    /// The fewest aligned blocks `(start, prefix_bits)` covering the range exactly (block size
    /// `2^(16 - prefix_bits)`): what a port LPM trie can store.
    pub fn prefix_blocks(self) -> Vec<(u16, u8)> {
        let mut out = Vec::new();
        let (mut lo, hi) = (u32::from(self.lo), u32::from(self.hi));
        while lo <= hi {
            // Largest power-of-two block aligned at `lo` (never 0) that stays within `hi`.
            let mut size_bits = lo.trailing_zeros().min(16);
            while lo + (1 << size_bits) - 1 > hi {
                size_bits -= 1;
            }
            out.push((lo as u16, (16 - size_bits) as u8));
            lo += 1 << size_bits;
        }
        out
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Why a port or port range does not parse. The message quotes the text as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A number outside 1..=65535 (`zero`: it was 0).
    #[error("port `{text}` is out of range: ports are 1 to 65535")]
    OutOfRange { text: String, zero: bool },
    /// Not a number (service names are not resolved).
    #[error("`{text}` is not a port number")]
    NotANumber { text: String },
    /// `"8000-"` or `"-8080"`.
    #[error("port range `{text}` is missing an end")]
    MissingEnd { text: String },
    /// `"8080-8000"`.
    #[error("port range `{text}` starts above its end")]
    Reversed { text: String, lo: u16, hi: u16 },
}

impl PortError {
    /// True for errors in the shape of a range (rather than in one of its ports).
    pub fn is_range_error(&self) -> bool {
        matches!(
            self,
            PortError::MissingEnd { .. } | PortError::Reversed { .. }
        )
    }
}

/// Parses a port (`443`, `"443"`) or an inclusive range (`"8000-8080"`; blanks around either
/// end are ignored).
pub fn parse_port(spec: &PortSpec) -> Result<PortRange, PortError> {
    let one = |n: i64, text: &str| -> Result<u16, PortError> {
        match u16::try_from(n) {
            Ok(p) if p >= 1 => Ok(p),
            _ => Err(PortError::OutOfRange {
                text: text.to_string(),
                zero: n == 0,
            }),
        }
    };
    let parse = |t: &str| -> Result<u16, PortError> {
        let t = t.trim();
        match t.parse::<i64>() {
            Ok(n) => one(n, t),
            // Digits only but too long for an i64: out of range, not "not a number".
            Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => one(i64::MAX, t),
            Err(_) => Err(PortError::NotANumber {
                text: t.to_string(),
            }),
        }
    };
    let (lo, hi) = match spec {
        PortSpec::Number(n) => {
            let p = one(*n, &n.to_string())?;
            (p, p)
        }
        PortSpec::Text(t) => match t.split_once('-') {
            None => {
                let p = parse(t)?;
                (p, p)
            }
            Some((lo, hi)) => {
                if lo.trim().is_empty() || hi.trim().is_empty() {
                    return Err(PortError::MissingEnd { text: t.clone() });
                }
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(PortError::Reversed {
                        text: t.clone(),
                        lo,
                        hi,
                    });
                }
                (lo, hi)
            }
        },
    };
    Ok(PortRange { lo, hi })
}

/// Why an integer value (`matchSyscallArgs`, `matchReturn`) does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntError {
    /// Not a decimal or `0x` hex integer in i64 range (or u64, as its bits), nor an errno.
    NotAnInteger { text: String },
    /// An errno name where only integers are allowed (`matchSyscallArgs`).
    ErrnoNotAllowed { text: String },
    /// `-E...` that names no errno; the closest name when one is close.
    UnknownErrno {
        text: String,
        did_you_mean: Option<&'static str>,
    },
}

impl fmt::Display for IntError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntError::NotAnInteger { text } => {
                write!(f, "`{text}` is not an integer (decimal, or hex with `0x`)")
            }
            IntError::ErrnoNotAllowed { text } => write!(
                f,
                "`{text}` is an errno name, which only `matchReturn` accepts"
            ),
            IntError::UnknownErrno { text, .. } => write!(f, "`{text}` names no errno"),
        }
    }
}

/// Parses an integer a policy writes: a number, or text holding a decimal or `0x` hex integer
/// with an optional `-`, or (with `errno`, for return values) a negated errno name such as
/// `-EPERM` (the value a failing call returns). Hex up to 64 bits is taken as its bits
/// (`0xffffffffffffffff` is -1).
pub fn parse_int(v: &IntValue, errno: bool) -> Result<i64, IntError> {
    let text = match v {
        IntValue::Number(n) => return Ok(*n),
        IntValue::Text(t) => t.trim(),
    };
    let bad = || IntError::NotAnInteger {
        text: text.to_string(),
    };
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    if body.starts_with('E') && body.len() > 1 && body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        if !errno {
            return Err(IntError::ErrnoNotAllowed {
                text: text.to_string(),
            });
        }
        let errnos = crate::syscalls::errnos();
        return match errnos.get(body) {
            Some(n) if neg => Ok(-i64::from(*n)),
            // A bare `EPERM`: the call returns it negated.
            Some(_) => Err(IntError::UnknownErrno {
                text: text.to_string(),
                did_you_mean: errnos.get_key_value(body).map(|(k, _)| *k),
            }),
            None => Err(IntError::UnknownErrno {
                text: text.to_string(),
                did_you_mean: crate::schema::closest(body, errnos.keys().copied()),
            }),
        };
    }
    let magnitude = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).map_err(|_| bad())? as i64
    } else {
        let n: u64 = body.parse().map_err(|_| bad())?;
        if n > i64::MAX as u64 && !(neg && n == 1u64 << 63) {
            return Err(bad());
        }
        n as i64
    };
    Ok(if neg {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

/// A value of a `matchDestinations` entry that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// A `matchDestinations` entry with its values parsed. A destination is *in* it when its
/// address lies in one of `cidrs` (any address if empty), its port in one of `ports` (any if
/// empty) and its protocol is `protocol` (any if `None`); a `negated` (`NotIn`) entry holds
/// when the destination is not in it. CIDRs are networks as written (not folded, see
/// [`Cidr::folded`]); both lists are in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationSet {
    pub negated: bool,
    pub cidrs: Vec<Cidr>,
    pub ports: Vec<PortRange>,
    pub protocol: Option<Protocol>,
}

impl DestinationSelector {
    /// The entry with its CIDRs and ports parsed; the first value that does not parse is the
    /// error (the lint reports every one, each at its own path).
    pub fn parse(&self) -> Result<DestinationSet, ValueError> {
        Ok(DestinationSet {
            negated: self.operator.is_negated(),
            cidrs: self
                .cidrs
                .iter()
                .map(|c| parse_cidr(c).map(|p| p.network))
                .collect::<Result<_, _>>()?,
            ports: self
                .ports
                .iter()
                .map(parse_port)
                .collect::<Result<_, _>>()?,
            protocol: self.protocol,
        })
    }
}

/// The longest value (bytes, without NUL) the kernel compares for a field: longer values are
/// refused, as they could never match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueLimit {
    /// The constant in `daemon-common`.
    pub name: &'static str,
    pub max: usize,
}

impl ValueLimit {
    /// `matchArgs` values, any operator.
    pub const ARG: ValueLimit = ValueLimit {
        name: "ARG_LEN",
        max: limits::ARG_LEN,
    };

    /// `matchBinaries` values compared with `kind`.
    pub fn binary(kind: MatchKind) -> ValueLimit {
        match kind {
            MatchKind::Exact => ValueLimit {
                name: "PATH_EXACT_LEN",
                max: limits::PATH_EXACT_LEN,
            },
            MatchKind::Prefix | MatchKind::Postfix => ValueLimit {
                name: "PATH_AFFIX_LEN",
                max: limits::PATH_AFFIX_LEN,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Cidr {
        parse_cidr(text).unwrap().network
    }

    #[test]
    fn cidrs_parse_into_networks() {
        assert_eq!(
            net("10.0.0.0/8"),
            Cidr::V4 {
                addr: 0x0a00_0000,
                len: 8
            }
        );
        let p = parse_cidr("10.1.2.3/8").unwrap();
        assert!(p.host_bits);
        assert_eq!(p.network.to_string(), "10.0.0.0/8");
        assert!(!parse_cidr("10.0.0.0/8").unwrap().host_bits);
        assert_eq!(
            net(" 192.168.1.7 "),
            Cidr::V4 {
                addr: 0xc0a8_0107,
                len: 32
            }
        );
        assert_eq!(net("0.0.0.0/0"), Cidr::V4 { addr: 0, len: 0 });
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(
            net("2001:db8::1/32"),
            Cidr::V6 {
                addr: 0x2001_0db8_u128 << 96,
                len: 32
            }
        );
        assert!(parse_cidr("2001:db8::1/32").unwrap().host_bits);
        assert_eq!(net("::1"), Cidr::V6 { addr: 1, len: 128 });
        assert!(!parse_cidr("::1/128").unwrap().host_bits);
        assert!(!parse_cidr("1.2.3.4/32").unwrap().host_bits);
        assert_eq!(net("::/0").to_string(), "::/0");
        assert_eq!(net("169.254.169.254"), net("169.254.169.254/32"));
    }

    #[test]
    fn bad_cidrs_are_errors_that_quote_the_text() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "foo",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "fe80::1%eth0",
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid CIDR `{bad}`: ")),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse_cidr("10.0.0.0/33").unwrap_err().to_string(),
            "invalid CIDR `10.0.0.0/33`: prefix length `/33` must be a number from 0 to 32"
        );
        assert_eq!(
            parse_cidr("10.0.0/8").unwrap_err().to_string(),
            "invalid CIDR `10.0.0/8`: `10.0.0` is not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn cidr_containment() {
        let c = net("10.0.0.0/8");
        assert!(c.contains_addr("10.255.0.1".parse().unwrap()));
        assert!(!c.contains_addr("11.0.0.1".parse().unwrap()));
        assert!(!c.contains_addr("::1".parse().unwrap()));
        assert!(net("2001:db8::/32").covers(&net("2001:db8:1::/48")));
        assert!(!net("2001:db8:1::/48").covers(&net("2001:db8::/32")));
        assert!(net("2001:db8:1::/48").overlaps(&net("2001:db8::/32")));
        assert!(!c.covers(&net("::/0")));
        assert!(!net("::/0").covers(&c));
        assert!(!c.overlaps(&net("11.0.0.0/8")));
    }

    #[test]
    fn mapped_v6_cidrs_fold_into_v4() {
        assert_eq!(
            net("::ffff:10.0.0.0/104").folded(),
            Cidr::V4 {
                addr: 0x0a00_0000,
                len: 8
            }
        );
        assert_eq!(
            net("::ffff:1.2.3.4").folded(),
            Cidr::V4 {
                addr: 0x0102_0304,
                len: 32
            }
        );
        // Wider than the mapped block: stays v6.
        assert!(matches!(
            net("::ffff:0:0/80").folded(),
            Cidr::V6 { len: 80, .. }
        ));
        assert_eq!(net("10.0.0.0/8").folded(), net("10.0.0.0/8"));
        let a: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(normalize_addr(a), "10.1.2.3".parse::<IpAddr>().unwrap());
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(normalize_addr(b), b);
    }

    fn range(lo: u16, hi: u16) -> PortRange {
        PortRange::new(lo, hi).unwrap()
    }

    #[test]
    fn ports_parse() {
        assert_eq!(parse_port(&PortSpec::Number(443)), Ok(range(443, 443)));
        assert_eq!(
            parse_port(&PortSpec::Text("443".into())),
            Ok(range(443, 443))
        );
        assert_eq!(
            parse_port(&PortSpec::Text("8000-8080".into())),
            Ok(range(8000, 8080))
        );
        assert_eq!(
            parse_port(&PortSpec::Text(" 1 - 2 ".into())),
            Ok(range(1, 2))
        );
        assert_eq!(
            parse_port(&PortSpec::Number(65535)),
            Ok(range(65535, 65535))
        );
        assert_eq!(range(8000, 8080).to_string(), "8000-8080");
        assert_eq!(range(443, 443).to_string(), "443");
    }

    #[test]
    fn bad_ports_are_errors_of_their_kind() {
        let err = |p: PortSpec| parse_port(&p).unwrap_err();
        assert_eq!(
            err(PortSpec::Number(0)),
            PortError::OutOfRange {
                text: "0".into(),
                zero: true
            }
        );
        assert_eq!(
            err(PortSpec::Text("0-80".into())),
            PortError::OutOfRange {
                text: "0".into(),
                zero: true
            }
        );
        for bad in [
            PortSpec::Number(-1),
            PortSpec::Number(65536),
            PortSpec::Text("70000".into()),
            PortSpec::Text("99999999999999999999".into()),
        ] {
            assert!(
                matches!(err(bad.clone()), PortError::OutOfRange { zero: false, .. }),
                "{bad:?}"
            );
        }
        for bad in ["", "http", "https", "1-2-3"] {
            let e = err(PortSpec::Text(bad.into()));
            assert!(matches!(e, PortError::NotANumber { .. }), "{bad}: {e}");
            assert!(!e.is_range_error());
        }
        for bad in ["9-", "-", "-5", " -80"] {
            let e = err(PortSpec::Text(bad.into()));
            assert_eq!(e, PortError::MissingEnd { text: bad.into() });
            assert!(e.is_range_error());
        }
        assert_eq!(
            err(PortSpec::Text("9-1".into())),
            PortError::Reversed {
                text: "9-1".into(),
                lo: 9,
                hi: 1
            }
        );
        assert_eq!(
            err(PortSpec::Number(0)).to_string(),
            "port `0` is out of range: ports are 1 to 65535"
        );
        assert_eq!(PortRange::new(0, 1), None);
        assert_eq!(PortRange::new(2, 1), None);
    }

    #[test]
    fn port_ranges_split_into_aligned_blocks() {
        assert_eq!(range(443, 443).prefix_blocks(), vec![(443, 16)]);
        assert_eq!(range(8000, 8007).prefix_blocks(), vec![(8000, 13)]);
        assert_eq!(
            range(8000, 8008).prefix_blocks(),
            vec![(8000, 13), (8008, 16)]
        );
        assert_eq!(range(65535, 65535).prefix_blocks(), vec![(65535, 16)]);
        assert_eq!(range(1, 65535).prefix_blocks().len(), 16);
        assert_eq!(range(32768, 65535).prefix_blocks(), vec![(32768, 1)]);
        // Every range is covered exactly, by aligned blocks.
        for (lo, hi) in [
            (1u16, 1023u16),
            (1024, 65535),
            (8000, 8080),
            (3, 17),
            (1, 1),
            (1, 65535),
        ] {
            let mut next = u32::from(lo);
            for (start, bits) in range(lo, hi).prefix_blocks() {
                assert_eq!(u32::from(start), next);
                let size = 1u32 << (16 - u32::from(bits));
                assert_eq!(u32::from(start) % size, 0, "aligned");
                next += size;
            }
            assert_eq!(next, u32::from(hi) + 1);
        }
    }

    #[test]
    fn destination_entries_parse_as_a_whole() {
        let d: DestinationSelector = serde_json::from_value(serde_json::json!(
            {"operator": "NotIn", "cidrs": ["10.1.2.3/8", "::1"], "ports": [443, "8000-8080"], "protocol": "TCP"}
        ))
        .unwrap();
        assert_eq!(
            d.parse(),
            Ok(DestinationSet {
                negated: true,
                cidrs: vec![net("10.0.0.0/8"), net("::1")],
                ports: vec![range(443, 443), range(8000, 8080)],
                protocol: Some(Protocol::TCP),
            })
        );
        let bad: DestinationSelector = serde_json::from_value(
            serde_json::json!({"operator": "In", "cidrs": ["10.0.0.0/8"], "ports": [0]}),
        )
        .unwrap();
        assert!(matches!(
            bad.parse(),
            Err(ValueError::Port(PortError::OutOfRange { zero: true, .. }))
        ));
    }

    #[test]
    fn value_limits_by_field_and_kind() {
        assert_eq!(
            ValueLimit::binary(MatchKind::Exact).max,
            limits::PATH_EXACT_LEN
        );
        assert_eq!(ValueLimit::binary(MatchKind::Prefix).name, "PATH_AFFIX_LEN");
        assert_eq!(
            ValueLimit::binary(MatchKind::Postfix).max,
            limits::PATH_AFFIX_LEN
        );
        assert_eq!(ValueLimit::ARG.max, limits::ARG_LEN);
    }
}
