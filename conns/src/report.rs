//! The aggregation behind `bulwark conns`: the connections an event stream reports, each counted
//! once, filtered and grouped.
//!
//! A connection is identified by its node, process (`exec_id`), local and remote endpoints and
//! `open_time`; its `conn_stats` events and its `process_close` all carry the totals so far, so
//! the last record seen of each connection is the one that counts ([`Report::add`]): a
//! connection with three windows and a close is one connection with the close's byte totals;
//! one still open at the end of the stream counts with its last window's totals.
//!
//! The words shared with the connection metrics ([`Direction`], [`protocol_of`],
//! [`encrypted_word`]) live here so both say the same thing about a connection.

use bulwark_events::{Connection, Event, Protocol, Role, Scope};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

bulwark_policy::words! {
    /// Which way the connection was opened, from this node's process's side.
    pub enum Direction ("direction") {
        /// The process connected out (`role: client`).
        Egress = "egress",
        /// The process accepted the connection (`role: server`).
        Ingress = "ingress",
    }
}

impl Direction {
    pub fn of(role: Role) -> Direction {
        match role {
            Role::Client => Direction::Egress,
            Role::Server => Direction::Ingress,
        }
    }
}

/// The connection's protocol: the client's first payload (what it spoke), or the server's when
/// the client sent nothing (server-speaks-first protocols before the client answered).
pub fn protocol_of(conn: &Connection) -> &Protocol {
    let (client, server) = match conn.role {
        Role::Client => (&conn.sent, &conn.received),
        Role::Server => (&conn.received, &conn.sent),
    };
    if client.protocol == Protocol::None {
        &server.protocol
    } else {
        &client.protocol
    }
}

/// `true`, `false` or `unknown` (no payload yet): the connection's verdict as one word.
pub fn encrypted_word(conn: &Connection) -> &'static str {
    match conn.encrypted {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}

/// The endpoint a connection was made to: the remote one for egress, this node's (the
/// listening service) for ingress.
fn destination(conn: &Connection) -> String {
    match conn.role {
        Role::Client => conn.remote.to_string(),
        Role::Server => conn.local.to_string(),
    }
}

bulwark_policy::words! {
    /// What `--by` groups connections by.
    pub enum GroupBy ("grouping") {
        /// The process's Kubernetes namespace (host processes: none).
        Namespace = "namespace",
        /// `namespace/pod` (host processes: none).
        Pod = "pod",
        /// The process's executable path.
        Binary = "binary",
        /// Where the connection went: the remote `ip:port` for egress, the local (listening)
        /// `ip:port` for ingress.
        Destination = "destination",
        /// The other end's address (no port): the server for egress, the client for ingress.
        Peer = "peer",
        /// The connection's protocol ([`protocol_of`]).
        Protocol = "protocol",
    }
}

/// Which connections count. Empty lists and `None` mean "any"; everything given is ANDed, the
/// values of one list ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `Some(false)`: only plaintext connections (`encrypted: false`); `Some(true)`: only
    /// encrypted ones. Connections that moved no payload are neither.
    pub encrypted: Option<bool>,
    pub scope: Option<Scope>,
    pub direction: Option<Direction>,
    /// Kubernetes namespaces of the process.
    pub namespaces: Vec<String>,
    /// Pod names, or `namespace/pod`.
    pub pods: Vec<String>,
    /// Binary paths, or a bare name matching the last path component.
    pub binaries: Vec<String>,
    /// Protocol words ([`protocol_of`]).
    pub protocols: Vec<String>,
}

/// What the report keeps of a connection's latest record.
#[derive(Clone, Debug)]
struct Seen {
    namespace: Option<String>,
    pod: Option<String>,
    binary: String,
    direction: Direction,
    scope: Scope,
    encrypted: Option<bool>,
    protocol: String,
    destination: String,
    peer: String,
    bytes_sent: u64,
    bytes_received: u64,
    closed: bool,
}

impl Filter {
    fn matches(&self, c: &Seen) -> bool {
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|v| f(v))
        };
        (self.encrypted.is_none() || c.encrypted == self.encrypted)
            && self.scope.is_none_or(|s| s == c.scope)
            && self.direction.is_none_or(|d| d == c.direction)
            && any(&self.namespaces, &|ns| c.namespace.as_deref() == Some(ns))
            && any(&self.pods, &|p| {
                let Some(pod) = c.pod.as_deref() else {
                    return false;
                };
                pod == p || pod.split_once('/').is_some_and(|(_, name)| name == p)
            })
            && any(&self.binaries, &|b| {
                c.binary == b || (!b.contains('/') && c.binary.rsplit('/').next() == Some(b))
            })
            && any(&self.protocols, &|p| c.protocol == p)
    }
}

/// One group of connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Row {
    /// The group's value for each `--by` key, by key word (`null`: host process, for
    /// namespace and pod).
    pub key: BTreeMap<&'static str, Option<String>>,
    pub connections: u64,
    /// Of which still open at the end of the stream (last seen in a `conn_stats`).
    pub open: u64,
    /// Connections whose verdict is plaintext / encrypted / not yet known (no payload).
    pub plaintext: u64,
    pub encrypted: u64,
    pub unclassified: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `plaintext / (plaintext + encrypted)`; `null` when neither.
    pub plaintext_ratio: Option<f64>,
    /// The protocol words of the group's connections.
    pub protocols: BTreeSet<String>,
}

impl Row {
    fn add(&mut self, c: &Seen) {
        self.connections += 1;
        self.open += u64::from(!c.closed);
        match c.encrypted {
            Some(false) => self.plaintext += 1,
            Some(true) => self.encrypted += 1,
            None => self.unclassified += 1,
        }
        self.bytes_sent += c.bytes_sent;
        self.bytes_received += c.bytes_received;
        self.protocols.insert(c.protocol.clone());
        let judged = self.plaintext + self.encrypted;
        self.plaintext_ratio = (judged > 0).then(|| self.plaintext as f64 / judged as f64);
    }
}

/// The report: what `bulwark conns` prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub by: Vec<GroupBy>,
    /// Largest first (bytes sent and received), then by key.
    pub groups: Vec<Row>,
    /// All connections that passed the filter.
    pub total: Row,
}

/// Identity of a connection across its records: node, process `exec_id`, local and remote
/// endpoints, `open_time`.
pub type ConnId = (String, String, String, String, String);

/// The identity of the connection a `process_close` or `conn_stats` event is about.
pub fn connection_id(ev: &Event) -> Option<ConnId> {
    let (conn, process) = (ev.connection()?, ev.process()?);
    Some((
        ev.node_name.clone(),
        process.exec_id.clone(),
        conn.local.to_string(),
        conn.remote.to_string(),
        conn.open_time.clone(),
    ))
}

/// Connections read from an event stream, each once, with its latest record.
#[derive(Debug, Default)]
pub struct Report {
    conns: HashMap<ConnId, Seen>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Takes a `process_close` or `conn_stats` event (others are ignored); true when it was one.
    pub fn add(&mut self, ev: &Event) -> bool {
        let (Some(id), Some(conn), Some(process)) =
            (connection_id(ev), ev.connection(), ev.process())
        else {
            return false;
        };
        let closed = conn.close_time.is_some();
        // A window that arrives after the close (reordered writers) does not reopen it.
        if !closed && self.conns.get(&id).is_some_and(|s| s.closed) {
            return true;
        }
        self.conns.insert(
            id,
            Seen {
                namespace: process.pod.as_ref().map(|p| p.namespace.clone()),
                pod: process
                    .pod
                    .as_ref()
                    .map(|p| format!("{}/{}", p.namespace, p.name)),
                binary: process.binary.clone(),
                direction: Direction::of(conn.role),
                scope: conn.scope,
                encrypted: conn.encrypted,
                protocol: protocol_of(conn).to_string(),
                destination: destination(conn),
                peer: conn.remote.ip.clone(),
                bytes_sent: conn.bytes_sent,
                bytes_received: conn.bytes_received,
                closed,
            },
        );
        true
    }

    /// Connections seen (before any filter).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connections that pass `filter`, grouped by `by` (no key: one group of all).
    pub fn summarize(&self, filter: &Filter, by: &[GroupBy]) -> Summary {
        let mut groups: BTreeMap<Vec<Option<String>>, Row> = BTreeMap::new();
        let mut total = Row::default();
        for c in self.conns.values().filter(|c| filter.matches(c)) {
            let values: Vec<Option<String>> = by.iter().map(|k| key_value(c, *k)).collect();
            let row = groups.entry(values.clone()).or_insert_with(|| Row {
                key: by.iter().map(|k| k.as_str()).zip(values).collect(),
                ..Row::default()
            });
            row.add(c);
            total.add(c);
        }
        let mut groups: Vec<(Vec<Option<String>>, Row)> = groups.into_iter().collect();
        groups.sort_by(|(ka, a), (kb, b)| {
            let bytes = |r: &Row| r.bytes_sent + r.bytes_received;
            bytes(b).cmp(&bytes(a)).then_with(|| ka.cmp(kb))
        });
        Summary {
            by: by.to_vec(),
            groups: groups.into_iter().map(|(_, r)| r).collect(),
            total,
        }
    }
}

fn key_value(c: &Seen, key: GroupBy) -> Option<String> {
    match key {
        GroupBy::Namespace => c.namespace.clone(),
        GroupBy::Pod => c.pod.clone(),
        GroupBy::Binary => Some(c.binary.clone()),
        GroupBy::Destination => Some(c.destination.clone()),
        GroupBy::Peer => Some(c.peer.clone()),
        GroupBy::Protocol => Some(c.protocol.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn report(lines: &str) -> Report {
        let mut r = Report::new();
        for l in lines.lines().filter(|l| !l.trim().is_empty()) {
            r.add(&Event::from_json_line(l).unwrap());
        }
        r
    }

    #[test]
    fn a_connection_counts_once_with_its_latest_totals() {
        let r = report(fixtures::STREAM);
        let s = r.summarize(&Filter::default(), &[]);
        // Six connections in the stream; the one with two windows and a close is one.
        assert_eq!(s.total.connections, 6);
        assert_eq!(s.total.open, 1, "the redis connection has no close yet");
        assert_eq!(
            s.total.bytes_sent,
            78 + 517 + 24_000 + 10_240 + 350,
            "{s:#?}"
        );
        assert_eq!(
            s.total.bytes_received,
            1_024 + 5_120 + 90_000 + 20_480 + 2_000
        );
        assert_eq!(
            (s.total.plaintext, s.total.encrypted, s.total.unclassified),
            (4, 1, 1)
        );
    }

    #[test]
    fn plaintext_internet_egress_names_the_workloads_and_destinations() {
        let r = report(fixtures::STREAM);
        let f = Filter {
            encrypted: Some(false),
            scope: Some(Scope::Internet),
            direction: Some(Direction::Egress),
            ..Filter::default()
        };
        let s = r.summarize(&f, &[GroupBy::Pod, GroupBy::Binary, GroupBy::Destination]);
        let keys: Vec<Vec<Option<String>>> = s
            .groups
            .iter()
            .map(|g| g.key.values().cloned().collect())
            .collect();
        // Keys are in word order (binary, destination, pod); largest group first.
        assert_eq!(
            keys,
            vec![
                vec![
                    Some("/usr/bin/python3".to_string()),
                    Some("198.51.100.9:8080".to_string()),
                    Some("batch/worker-0".to_string()),
                ],
                vec![
                    Some("/usr/bin/curl".to_string()),
                    Some("93.184.215.14:80".to_string()),
                    None,
                ],
            ]
        );
        assert_eq!(s.groups[0].bytes_sent, 24_000);
        assert_eq!(s.groups[0].bytes_received, 90_000);
        assert_eq!(s.groups[1].bytes_sent, 78);
        assert_eq!(s.groups[1].protocols, BTreeSet::from(["http".to_string()]));
        assert_eq!(s.total.connections, 2);
        assert_eq!(s.total.plaintext_ratio, Some(1.0));
    }

    #[test]
    fn ingress_groups_by_the_local_service_and_filters_combine() {
        let r = report(fixtures::STREAM);
        let f = Filter {
            encrypted: Some(false),
            direction: Some(Direction::Ingress),
            scope: Some(Scope::Internet),
            ..Filter::default()
        };
        let s = r.summarize(&f, &[GroupBy::Destination, GroupBy::Peer]);
        assert_eq!(s.groups.len(), 1, "{s:#?}");
        assert_eq!(
            s.groups[0].key["destination"].as_deref(),
            Some("10.244.1.9:80")
        );
        assert_eq!(s.groups[0].key["peer"].as_deref(), Some("203.0.113.50"));
        let by_ns = r.summarize(
            &Filter {
                namespaces: vec!["batch".into()],
                ..Filter::default()
            },
            &[GroupBy::Namespace],
        );
        assert_eq!(by_ns.total.connections, 2);
        let by_binary = r.summarize(
            &Filter {
                binaries: vec!["curl".into(), "/usr/sbin/nginx".into()],
                ..Filter::default()
            },
            &[GroupBy::Binary],
        );
        assert_eq!(by_binary.total.connections, 4);
        let by_pod = r.summarize(
            &Filter {
                pods: vec!["worker-0".into()],
                protocols: vec!["other".into()],
                ..Filter::default()
            },
            &[],
        );
        assert_eq!(by_pod.total.connections, 1);
        let encrypted = r.summarize(
            &Filter {
                encrypted: Some(true),
                ..Filter::default()
            },
            &[GroupBy::Protocol],
        );
        assert_eq!(encrypted.groups.len(), 1);
        assert_eq!(encrypted.groups[0].key["protocol"].as_deref(), Some("tls"));
        assert_eq!(encrypted.total.plaintext_ratio, Some(0.0));
    }

    #[test]
    fn protocol_is_the_clients_first_payload_or_the_servers() {
        let ev = |l: &str| Event::from_json_line(l).unwrap();
        let stream: Vec<Event> = fixtures::STREAM
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(ev)
            .collect();
        let words: BTreeSet<String> = stream
            .iter()
            .filter_map(|e| e.connection())
            .map(|c| format!("{}:{}", Direction::of(c.role), protocol_of(c)))
            .collect();
        assert!(words.contains("ingress:http"), "{words:?}");
        assert!(words.contains("egress:tls"), "{words:?}");
        assert!(words.contains("egress:none"), "{words:?}");
    }

    #[test]
    fn a_late_window_does_not_reopen_a_closed_connection() {
        let mut r = report(fixtures::STREAM);
        let late = fixtures::STREAM
            .lines()
            .find(|l| l.contains("conn_stats") && l.contains("198.51.100.9"))
            .unwrap();
        r.add(&Event::from_json_line(late).unwrap());
        let s = r.summarize(&Filter::default(), &[]);
        assert_eq!(s.total.open, 1);
        assert_eq!(s.total.bytes_sent, 78 + 517 + 24_000 + 10_240 + 350);
    }
}
