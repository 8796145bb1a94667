//! The test network: a "pod" and a "server" network namespace joined by one veth pair, with
//! IPv4 and IPv6 addresses from a private subnet unique to the test (10.199.N.0/24 and
//! fd99:N::/64). Nothing is created on the host side and there is no default route, so no test
//! traffic can leave these two namespaces. Dropping the guard deletes both namespaces (which
//! destroys the veth pair).

use crate::host_cmd;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Two joined network namespaces and their addresses.
#[derive(Debug)]
pub struct NetPair {
    /// Subnet number N of 10.199.N.0/24 and fd99:N::/64.
    pub subnet: u8,
    /// Name of the pod namespace (`ip netns exec <pod>`).
    pub pod: String,
    /// Name of the server namespace.
    pub server: String,
    /// 10.199.N.1, the pod's address.
    pub pod_v4: Ipv4Addr,
    /// 10.199.N.2, the server's main address.
    pub server_v4: Ipv4Addr,
    /// 10.199.N.3, a second server address (for "other destinations still work").
    pub server_v4_alt: Ipv4Addr,
    /// fd99:N::1
    pub pod_v6: Ipv6Addr,
    /// fd99:N::2
    pub server_v6: Ipv6Addr,
    /// fd99:N::3
    pub server_v6_alt: Ipv6Addr,
}

impl NetPair {
    /// Creates both namespaces, the veth pair and the addresses; `tag` names them
    /// (`bwe-<pid>-<n>-<tag>-pod` / `-srv`).
    pub fn create(tag: &str) -> NetPair {
        let n = crate::next_id();
        let subnet = ((std::process::id() as u64 * 37 + n as u64) % 250 + 1) as u8;
        let base = format!("bwe-{}-{n}-{tag}", std::process::id());
        let pair = NetPair {
            subnet,
            pod: format!("{base}-pod"),
            server: format!("{base}-srv"),
            pod_v4: Ipv4Addr::new(10, 199, subnet, 1),
            server_v4: Ipv4Addr::new(10, 199, subnet, 2),
            server_v4_alt: Ipv4Addr::new(10, 199, subnet, 3),
            pod_v6: v6(subnet, 1),
            server_v6: v6(subnet, 2),
            server_v6_alt: v6(subnet, 3),
        };
        // Guard first, so a failure half-way still deletes what was made.
        host_cmd("ip", &["netns", "add", &pair.pod]);
        host_cmd("ip", &["netns", "add", &pair.server]);
        let (p, s) = (pair.pod.as_str(), pair.server.as_str());
        host_cmd(
            "ip",
            &[
                "-n", p, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s,
            ],
        );
        for (ns, v4s, v6s) in [
            (p, vec![pair.pod_v4], vec![pair.pod_v6]),
            (
                s,
                vec![pair.server_v4, pair.server_v4_alt],
                vec![pair.server_v6, pair.server_v6_alt],
            ),
        ] {
            host_cmd("ip", &["-n", ns, "link", "set", "lo", "up"]);
            for a in v4s {
                host_cmd(
                    "ip",
                    &["-n", ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"],
                );
            }
            for a in v6s {
                host_cmd(
                    "ip",
                    &[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("{a}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                );
            }
            host_cmd("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        }
        let up = crate::poll_until(crate::timeout(), || {
            let a = host_cmd("ip", &["-n", p, "link", "show", "eth0"]);
            let b = host_cmd("ip", &["-n", s, "link", "show", "eth0"]);
            (a.contains("LOWER_UP") && b.contains("LOWER_UP")).then_some(())
        });
        if up.is_none() {
            panic!("veth pair between {p} and {s} did not come up");
        }
        pair
    }

    /// The server's main address of the given family.
    pub fn server_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.server_v6)
        } else {
            IpAddr::V4(self.server_v4)
        }
    }

    /// The second server address of the given family.
    pub fn server_alt_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.server_v6_alt)
        } else {
            IpAddr::V4(self.server_v4_alt)
        }
    }

    /// `10.199.N.0/24`
    pub fn v4_cidr(&self) -> String {
        format!("10.199.{}.0/24", self.subnet)
    }

    /// `fd99:N::/64`
    pub fn v6_cidr(&self) -> String {
        format!("fd99:{:x}::/64", self.subnet)
    }
}

fn v6(subnet: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd99, subnet as u16, 0, 0, 0, 0, 0, host)
}

/// `http://IP:PORT` with brackets around IPv6 addresses.
pub fn url(scheme: &str, ip: IpAddr, port: u16, path: &str) -> String {
    match ip {
        IpAddr::V4(a) => format!("{scheme}://{a}:{port}{path}"),
        IpAddr::V6(a) => format!("{scheme}://[{a}]:{port}{path}"),
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.server] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}
