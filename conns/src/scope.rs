//! Cluster or internet: [`ClusterCidrs`], the address ranges `--cluster-cidrs` names (and, with
//! `--kubernetes`, the node's pod CIDRs), and the [`Scope`] of a remote address. CIDR text is
//! parsed by the policy crate's one CIDR parser.

use bulwark_events::Scope;
use bulwark_policy::values::{normalize_addr, parse_cidr, Cidr, CidrError};
use std::fmt;
use std::net::IpAddr;

/// The documented defaults: loopback, RFC 1918, link-local, CGNAT, IPv6 loopback, ULA and
/// link-local.
pub const DEFAULT_CLUSTER_CIDRS: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// The ranges whose addresses are `cluster`; every other address is `internet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterCidrs {
    cidrs: Vec<Cidr>,
}

impl ClusterCidrs {
    /// [`DEFAULT_CLUSTER_CIDRS`].
    pub fn defaults() -> ClusterCidrs {
        ClusterCidrs::parse(&DEFAULT_CLUSTER_CIDRS.join(","))
            .expect("the default cluster CIDRs parse")
    }

    /// No range: every address is `internet`.
    pub fn empty() -> ClusterCidrs {
        ClusterCidrs { cidrs: Vec::new() }
    }

    /// A comma-separated list (`10.0.0.0/8,fd00::/8`; blanks around entries and empty entries
    /// are ignored; a bare address is one host). Host bits are cleared (`10.1.2.3/8` is
    /// `10.0.0.0/8`).
    pub fn parse(list: &str) -> Result<ClusterCidrs, CidrError> {
        let mut out = ClusterCidrs::empty();
        for entry in list.split(',').filter(|e| !e.trim().is_empty()) {
            out.add(parse_cidr(entry)?.network);
        }
        Ok(out)
    }

    /// Adds a range (a pod CIDR, say); one already covered adds nothing.
    pub fn add(&mut self, cidr: Cidr) {
        let cidr = cidr.folded();
        if !self.cidrs.iter().any(|c| c.covers(&cidr)) {
            self.cidrs.retain(|c| !cidr.covers(c));
            self.cidrs.push(cidr);
        }
    }

    /// `cluster` when `addr` (an IPv4-mapped IPv6 address counts as its IPv4 address) is in a
    /// range, else `internet`.
    pub fn scope(&self, addr: IpAddr) -> Scope {
        let addr = normalize_addr(addr);
        if self.cidrs.iter().any(|c| c.contains_addr(addr)) {
            Scope::Cluster
        } else {
            Scope::Internet
        }
    }

    /// The ranges, in the order they were added.
    pub fn cidrs(&self) -> &[Cidr] {
        &self.cidrs
    }
}

impl fmt::Display for ClusterCidrs {
    /// The comma list [`ClusterCidrs::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.cidrs.iter().map(Cidr::to_string).collect();
        f.write_str(&words.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(c: &ClusterCidrs, addr: &str) -> Scope {
        c.scope(addr.parse().unwrap())
    }

    #[test]
    fn defaults_cover_private_loopback_link_local_cgnat_and_ula() {
        let c = ClusterCidrs::defaults();
        for cluster in [
            "127.0.0.1",
            "10.244.1.7",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "fd00::7",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(scope(&c, cluster), Scope::Cluster, "{cluster}");
        }
        for internet in [
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "fec0::1",
        ] {
            assert_eq!(scope(&c, internet), Scope::Internet, "{internet}");
        }
    }

    #[test]
    fn parse_reads_a_comma_list_and_display_writes_it_back() {
        let c = ClusterCidrs::parse(" 10.1.2.3/8, ,2001:db8::/32,192.0.2.7").unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8,2001:db8::/32,192.0.2.7/32");
        assert_eq!(ClusterCidrs::parse(&c.to_string()).unwrap(), c);
        assert_eq!(scope(&c, "192.0.2.7"), Scope::Cluster);
        assert_eq!(scope(&c, "192.0.2.8"), Scope::Internet);
        assert_eq!(scope(&c, "2001:db8::5"), Scope::Cluster);
        let err = ClusterCidrs::parse("10.0.0.0/8,10.0.0.0/33").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
        assert_eq!(ClusterCidrs::parse("").unwrap(), ClusterCidrs::empty());
        assert_eq!(scope(&ClusterCidrs::empty(), "10.0.0.1"), Scope::Internet);
    }

    #[test]
    fn add_keeps_one_range_for_covered_addresses() {
        let mut c = ClusterCidrs::parse("10.244.1.0/24").unwrap();
        c.add(parse_cidr("10.244.0.0/16").unwrap().network);
        c.add(parse_cidr("10.244.2.0/24").unwrap().network);
        assert_eq!(c.to_string(), "10.244.0.0/16");
        // An IPv4-mapped range is the IPv4 range.
        c.add(parse_cidr("::ffff:203.0.113.0/120").unwrap().network);
        assert_eq!(c.to_string(), "10.244.0.0/16,203.0.113.0/24");
        assert_eq!(scope(&c, "203.0.113.9"), Scope::Cluster);
    }
}
