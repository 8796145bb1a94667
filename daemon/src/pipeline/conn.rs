//! Connection observation in userspace: the kernel's connection records (`EVENT_CONN_*`:
//! stats and close, each naming its connection whole, and each direction's first payload)
//! joined by socket cookie into the
//! `process_close` and `conn_stats` events' [`Connection`]s. Classification is
//! `bulwark_conns::classify` of the first payload's prefix, `scope` comes from the
//! `--cluster-cidrs` ([`ClusterCidrs`]). Pure: the caller (the pipeline) names the process and
//! turns boot times into RFC 3339.
//!
//! A stats record carries the connection's totals at a packet at least `--conn-interval` after
//! the previous one (the kernel sends none while a connection is idle); its `conn_stats`
//! window runs from the previous report (or the open time) to that packet and holds the bytes moved
//! in between. `process_close` carries the exact totals whatever records were lost before it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulwark_conns::{classify, ClusterCidrs, Signatures};
use bulwark_events::{Connection, Endpoint, Family, Payload, Role};
use daemon_common::{
    ConnEvent, ConnPayloadEvent, Destination, CONN_DIR_SENT, CONN_PREFIX_LEN, CONN_ROLE_SERVER,
    EVENT_CONN_CLOSE, EVENT_CONN_STATS,
};

/// Open connections tracked at most (a connection whose close record was lost stays until
/// this many are open; then the oldest records of new ones are dropped and counted).
pub const MAX_OPEN_CONNECTIONS: usize = 1 << 20;

/// What one connection record becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnOutput {
    /// `process_close`.
    Close(ConnReport),
    /// `conn_stats`: bytes moved in `window_start_ns..time_ns`.
    Stats {
        report: ConnReport,
        window_start_ns: u64,
        window_sent: u64,
        window_received: u64,
    },
}

/// A connection ready for an event, with its owner (for the process) and times in boot ns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnReport {
    pub tgid: u32,
    pub start_ns: u64,
    pub time_ns: u64,
    pub open_ns: u64,
    /// `close_time` is filled in by the caller for a close (from `time_ns`).
    pub connection: Connection,
}

/// What userspace keeps of an open connection that sent a payload or a stats record (one
/// that moves nothing is only seen at its close).
#[derive(Clone, Debug, Default)]
struct Open {
    /// Each direction's first payload, classified once when its record arrives (the stats
    /// and close events of the connection reuse it).
    sent: Option<Payload>,
    received: Option<Payload>,
    reported_ns: u64,
    reported_sent: u64,
    reported_received: u64,
}

/// Hashes socket cookies, the open table's keys: numbers the kernel hands out in sequence,
/// which no peer chooses, so one multiply spreads them (SipHash, the default, was a visible
/// share of the daemon's time per connection record).
#[derive(Default)]
struct CookieHasher(u64);

impl Hasher for CookieHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The open connections and how to describe them.
pub struct Conns {
    open: HashMap<u64, Open, BuildHasherDefault<CookieHasher>>,
    cidrs: ClusterCidrs,
    signatures: Signatures,
    /// Records about connections the table had no room for.
    pub dropped: u64,
}

impl Conns {
    pub fn new(cidrs: ClusterCidrs, signatures: Signatures) -> Self {
        Conns {
            open: HashMap::default(),
            cidrs,
            signatures,
            dropped: 0,
        }
    }

    /// The ranges whose remote addresses are `cluster` (`--cluster-cidrs`).
    pub fn set_cluster_cidrs(&mut self, cidrs: ClusterCidrs) {
        self.cidrs = cidrs;
    }

    /// The declared encrypted protocols the classifier knows (`--protocols`).
    pub fn set_signatures(&mut self, signatures: Signatures) {
        self.signatures = signatures;
    }

    /// Connections open now (as far as the records say).
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    fn entry(&mut self, cookie: u64) -> Option<&mut Open> {
        if !self.open.contains_key(&cookie) && self.open.len() >= MAX_OPEN_CONNECTIONS {
            self.dropped += 1;
            return None;
        }
        Some(self.open.entry(cookie).or_default())
    }

    /// A first-payload record: kept until the connection's close (a second one for the same
    /// direction, which the kernel does not send, is ignored).
    pub fn on_payload(&mut self, p: &ConnPayloadEvent) {
        let n = (p.len as usize).min(CONN_PREFIX_LEN);
        let payload = classify(&p.data[..n], &self.signatures);
        let Some(open) = self.entry(p.cookie) else {
            return;
        };
        let slot = if p.direction == CONN_DIR_SENT {
            &mut open.sent
        } else {
            &mut open.received
        };
        if slot.is_none() {
            *slot = Some(payload);
        }
    }

    /// A stats or close record: the event it makes, if any.
    pub fn on_conn(&mut self, c: &ConnEvent) -> Option<ConnOutput> {
        match c.header.kind {
            EVENT_CONN_STATS => {
                let open = self.entry(c.cookie)?;
                if open.reported_ns == 0 {
                    // Its first report: the window starts when the connection opened.
                    open.reported_ns = c.open_ns;
                }
                // Records of one connection from two CPUs may arrive out of order: totals
                // only grow.
                let sent = c.bytes_sent.max(open.reported_sent);
                let received = c.bytes_received.max(open.reported_received);
                let (ws, wr) = (sent - open.reported_sent, received - open.reported_received);
                if ws == 0 && wr == 0 {
                    return None;
                }
                let window_start_ns = open.reported_ns;
                (open.reported_ns, open.reported_sent, open.reported_received) =
                    (c.header.time_ns, sent, received);
                let mut record = *c;
                record.bytes_sent = sent;
                record.bytes_received = received;
                let (s, r) = (open.sent.clone(), open.received.clone());
                let report = self.report(&record, c.header.time_ns, s, r);
                Some(ConnOutput::Stats {
                    report,
                    window_start_ns,
                    window_sent: ws,
                    window_received: wr,
                })
            }
            EVENT_CONN_CLOSE => {
                let open = self.open.remove(&c.cookie).unwrap_or_default();
                Some(ConnOutput::Close(self.report(
                    c,
                    c.header.time_ns,
                    open.sent,
                    open.received,
                )))
            }
            _ => None,
        }
    }

    fn report(
        &self,
        c: &ConnEvent,
        time_ns: u64,
        sent: Option<Payload>,
        received: Option<Payload>,
    ) -> ConnReport {
        // A direction with no payload record yet: `none`.
        let sent = sent.unwrap_or_else(Payload::none);
        let received = received.unwrap_or_else(Payload::none);
        let (local_ip, family) = ip(&c.local);
        let (remote_ip, _) = ip(&c.remote);
        ConnReport {
            tgid: c.header.tgid,
            start_ns: c.header.start_ns,
            time_ns,
            open_ns: c.open_ns,
            connection: Connection {
                role: if c.role == CONN_ROLE_SERVER {
                    Role::Server
                } else {
                    Role::Client
                },
                family,
                local: Endpoint {
                    ip: ip_text(local_ip),
                    port: c.local.port,
                },
                remote: Endpoint {
                    ip: ip_text(remote_ip),
                    port: c.remote.port,
                },
                scope: self.cidrs.scope(remote_ip),
                encrypted: Connection::verdict(&sent, &received),
                sent,
                received,
                bytes_sent: c.bytes_sent,
                bytes_received: c.bytes_received,
                open_time: String::new(),
                close_time: None,
            },
        }
    }
}

/// `ip`'s text (as its `Display` writes it): IPv4 digits written directly, as every event
/// names two ends and the formatting machinery was a visible share of the daemon's time.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

/// The address of a kernel destination and its family (IPv4-mapped addresses were folded to
/// IPv4 by the kernel).
fn ip(d: &Destination) -> (IpAddr, Family) {
    if d.family as i32 == libc::AF_INET6 {
        (IpAddr::V6(Ipv6Addr::from(d.addr)), Family::Ipv6)
    } else {
        let a = Ipv4Addr::new(d.addr[0], d.addr[1], d.addr[2], d.addr[3]);
        (IpAddr::V4(a), Family::Ipv4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_events::{Protocol, Scope};
    use daemon_common::{
        EventHeader, CONN_DIR_RECEIVED, CONN_ROLE_CLIENT, EVENT_CONN_PAYLOAD, PROTO_TCP,
    };

    fn v4(a: [u8; 4], port: u16) -> Destination {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&a);
        Destination {
            addr,
            port,
            family: libc::AF_INET as u8,
            protocol: PROTO_TCP,
        }
    }

    fn rec(kind: u32, time_ns: u64, sent: u64, received: u64) -> ConnEvent {
        ConnEvent {
            header: EventHeader {
                kind,
                tgid: 42,
                time_ns,
                start_ns: 7,
            },
            cookie: 99,
            open_ns: 1_000,
            bytes_sent: sent,
            bytes_received: received,
            local: v4([10, 0, 0, 1], 40000),
            remote: v4([93, 184, 216, 34], 80),
            role: CONN_ROLE_CLIENT,
            ..ConnEvent::default()
        }
    }

    fn payload(direction: u32, bytes: &[u8]) -> ConnPayloadEvent {
        let mut data = [0u8; CONN_PREFIX_LEN];
        data[..bytes.len()].copy_from_slice(bytes);
        ConnPayloadEvent {
            header: EventHeader {
                kind: EVENT_CONN_PAYLOAD,
                ..EventHeader::default()
            },
            cookie: 99,
            direction,
            len: bytes.len() as u32,
            data,
        }
    }

    #[test]
    fn addresses_read_as_their_display_says() {
        // Every octet value in every position.
        for o in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(o, 255 - o, o / 3, o.wrapping_mul(7)));
            assert_eq!(ip_text(ip), ip.to_string());
        }
        let v6 = IpAddr::V6("2001:db8::1".parse().unwrap());
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    fn conns() -> Conns {
        Conns::new(ClusterCidrs::defaults(), Signatures::default())
    }

    #[test]
    fn a_plaintext_http_exchange_closes_with_its_totals_and_classification() {
        let mut c = conns();
        c.on_payload(&payload(
            CONN_DIR_SENT,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ));
        c.on_payload(&payload(CONN_DIR_RECEIVED, b"HTTP/1.1 200 OK\r\n\r\n"));
        let Some(ConnOutput::Close(r)) = c.on_conn(&rec(EVENT_CONN_CLOSE, 5_000, 27, 19)) else {
            panic!("no close");
        };
        assert_eq!(c.open_count(), 0);
        let conn = &r.connection;
        assert_eq!(
            (r.tgid, r.start_ns, r.time_ns, r.open_ns),
            (42, 7, 5_000, 1_000)
        );
        assert_eq!(conn.role, Role::Client);
        assert_eq!(conn.family, Family::Ipv4);
        assert_eq!(conn.remote.to_string(), "93.184.216.34:80");
        assert_eq!(conn.local.to_string(), "10.0.0.1:40000");
        assert_eq!(conn.scope, Scope::Internet);
        assert_eq!(conn.sent.protocol, Protocol::Http);
        assert_eq!(conn.received.protocol, Protocol::Http);
        assert_eq!(conn.encrypted, Some(false));
        assert_eq!((conn.bytes_sent, conn.bytes_received), (27, 19));
    }

    #[test]
    fn a_close_without_its_other_records_still_has_totals_and_no_payload() {
        let mut c = conns();
        let mut close = rec(EVENT_CONN_CLOSE, 5_000, 3, 4);
        close.remote = v4([10, 1, 2, 3], 22);
        let Some(ConnOutput::Close(r)) = c.on_conn(&close) else {
            panic!("no close");
        };
        assert_eq!(r.connection.sent.protocol, Protocol::None);
        assert_eq!(r.connection.encrypted, None);
        assert_eq!(r.connection.scope, Scope::Cluster);
        assert_eq!(
            (r.connection.bytes_sent, r.connection.bytes_received),
            (3, 4)
        );
    }

    #[test]
    fn stats_report_the_bytes_of_their_window_and_nothing_when_none_moved() {
        let mut c = conns();
        c.on_payload(&payload(CONN_DIR_RECEIVED, b"SSH-2.0-OpenSSH_9.6\r\n"));
        let Some(ConnOutput::Stats {
            report,
            window_start_ns,
            window_sent,
            window_received,
        }) = c.on_conn(&rec(EVENT_CONN_STATS, 6_000, 100, 50))
        else {
            panic!("no stats");
        };
        assert_eq!(
            (window_start_ns, window_sent, window_received),
            (1_000, 100, 50)
        );
        assert_eq!(report.connection.received.protocol, Protocol::Ssh);
        assert_eq!(report.connection.encrypted, Some(true));
        // Same totals again (or older ones arriving late): nothing moved.
        assert_eq!(c.on_conn(&rec(EVENT_CONN_STATS, 12_000, 100, 50)), None);
        assert_eq!(c.on_conn(&rec(EVENT_CONN_STATS, 12_500, 90, 50)), None);
        let Some(ConnOutput::Stats {
            window_start_ns,
            window_sent,
            window_received,
            ..
        }) = c.on_conn(&rec(EVENT_CONN_STATS, 20_000, 100, 80))
        else {
            panic!("no stats");
        };
        assert_eq!(
            (window_start_ns, window_sent, window_received),
            (6_000, 0, 30)
        );
        assert_eq!(c.open_count(), 1);
    }

    #[test]
    fn a_stats_record_alone_names_its_connection_and_its_window_starts_at_the_open() {
        let mut c = conns();
        let Some(ConnOutput::Stats {
            report,
            window_start_ns,
            window_sent,
            ..
        }) = c.on_conn(&rec(EVENT_CONN_STATS, 6_000, 1, 0))
        else {
            panic!("no stats");
        };
        assert_eq!((window_start_ns, window_sent), (1_000, 1));
        assert_eq!(report.connection.remote.to_string(), "93.184.216.34:80");
        assert_eq!(report.connection.sent.protocol, Protocol::None);
        assert_eq!(c.open_count(), 1);
        let Some(ConnOutput::Close(r)) = c.on_conn(&rec(EVENT_CONN_CLOSE, 7_000, 1, 0)) else {
            panic!("no close");
        };
        assert_eq!(r.connection.bytes_sent, 1);
        assert_eq!(c.open_count(), 0);
    }
}
