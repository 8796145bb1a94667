//! Connection metrics, fed from the `process_close` and `conn_stats` events the daemon writes
//! ([`ConnMetrics::record`]) and rendered in Prometheus text format with the daemon's other
//! counters (controller `Stats`, served on `--metrics-addr` and the Kubernetes health port).
//!
//! Series, labelled `direction` (egress, ingress), `scope` (internet, cluster), `protocol`
//! (the connection's protocol word: a built-in or a declared one), `encrypted` (true, false,
//! unknown) and `namespace` (empty for host processes) — no addresses, pods or processes, so
//! the label sets stay bounded:
//! - `bulwark_connections_total`: connections that ended;
//! - `bulwark_connection_sent_bytes_total`, `bulwark_connection_received_bytes_total`: TCP
//!   payload bytes, as they are reported (windows of open connections, then the close).
//!
//! Each byte is counted once. Every record of a connection carries its totals so far; the
//! metrics remember how much of each open connection they have counted and add only the
//! difference, so for every connection the bytes counted equal the totals of its latest record
//! (a close after three windows adds what the windows did not). Labels are those of the record
//! that moved the bytes: a connection whose second direction is classified later counts its
//! later bytes under the refined labels.

use crate::report::{connection_id, encrypted_word, protocol_of, Direction};
use bulwark_events::{Event, EventType};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Open connections whose counted bytes are remembered. Beyond this, about the eighth reported
/// longest ago is forgotten ([`ConnMetrics`] counts them in
/// `bulwark_connection_metrics_forgotten_total`); a forgotten connection that reports again
/// counts its totals again.
pub const MAX_TRACKED_OPEN: usize = 1 << 18;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    direction: &'static str,
    scope: &'static str,
    protocol: String,
    encrypted: &'static str,
    namespace: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    sent: u64,
    received: u64,
    /// When it was last reported (record sequence number), for forgetting the stalest.
    last: u64,
}

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<Labels, Counts>,
    open: HashMap<u64, Counted>,
    records: u64,
    forgotten: u64,
}

/// A counter family: name, help, and which count of a label set it shows.
type Family = (&'static str, &'static str, fn(&Counts) -> u64);

/// The connection counters. Any thread may record and render.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    inner: Mutex<Inner>,
}

fn hash_id(ev: &Event) -> Option<u64> {
    let id = connection_id(ev)?;
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    Some(h.finish())
}

impl ConnMetrics {
    /// Counts a `process_close` or `conn_stats` event (others are ignored).
    pub fn record(&self, ev: &Event) {
        let (Some(conn), Some(id), Some(process)) = (ev.connection(), hash_id(ev), ev.process())
        else {
            return;
        };
        let closed = ev.event_type() == EventType::ProcessClose;
        let labels = Labels {
            direction: Direction::of(conn.role).as_str(),
            scope: conn.scope.as_str(),
            protocol: protocol_of(conn).to_string(),
            encrypted: encrypted_word(conn),
            namespace: process
                .pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.records += 1;
        let now = inner.records;
        let before = if closed {
            inner.open.remove(&id).unwrap_or_default()
        } else {
            if !inner.open.contains_key(&id) && inner.open.len() >= MAX_TRACKED_OPEN {
                inner.forget_stalest();
            }
            let entry = inner.open.entry(id).or_default();
            let before = Counted {
                last: now,
                ..*entry
            };
            *entry = Counted {
                sent: conn.bytes_sent.max(entry.sent),
                received: conn.bytes_received.max(entry.received),
                last: now,
            };
            before
        };
        let counts = inner.series.entry(labels).or_default();
        counts.bytes_sent += conn.bytes_sent.saturating_sub(before.sent);
        counts.bytes_received += conn.bytes_received.saturating_sub(before.received);
        counts.connections += u64::from(closed);
    }

    /// The counts of every label set, summed (tests and the e2e harness compare these with
    /// `bulwark conns`).
    pub fn totals(&self) -> Counts {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .series
            .values()
            .fold(Counts::default(), |a, c| Counts {
                connections: a.connections + c.connections,
                bytes_sent: a.bytes_sent + c.bytes_sent,
                bytes_received: a.bytes_received + c.bytes_received,
            })
    }

    /// Prometheus text of the connection series.
    pub fn render_prometheus(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let families: [Family; 3] = [
            (
                "bulwark_connections_total",
                "TCP connections that ended (process_close), by direction, scope, protocol, encrypted and namespace.",
                |c| c.connections,
            ),
            (
                "bulwark_connection_sent_bytes_total",
                "TCP payload bytes sent by this node's processes, counted once per byte as conn_stats windows and process_close report them.",
                |c| c.bytes_sent,
            ),
            (
                "bulwark_connection_received_bytes_total",
                "TCP payload bytes received by this node's processes, counted like the sent bytes.",
                |c| c.bytes_received,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in families {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (l, c) in &inner.series {
                out.push_str(&format!(
                    "{name}{{direction=\"{}\",scope=\"{}\",protocol=\"{}\",encrypted=\"{}\",namespace=\"{}\"}} {}\n",
                    l.direction,
                    l.scope,
                    escape(&l.protocol),
                    l.encrypted,
                    escape(&l.namespace),
                    value(c)
                ));
            }
        }
        out.push_str(
            "# HELP bulwark_connection_metrics_forgotten_total Open connections the byte counters stopped remembering (more than MAX_TRACKED_OPEN open at once); each may count its bytes again.\n\
             # TYPE bulwark_connection_metrics_forgotten_total counter\n",
        );
        out.push_str(&format!(
            "bulwark_connection_metrics_forgotten_total {}\n",
            inner.forgotten
        ));
        out
    }
}

impl Inner {
    /// Forgets the eighth of the open connections reported longest ago.
    fn forget_stalest(&mut self) {
        let mut lasts: Vec<u64> = self.open.values().map(|c| c.last).collect();
        let cut = lasts.len() / 8;
        let (_, threshold, _) = lasts.select_nth_unstable(cut);
        let threshold = *threshold;
        let before = self.open.len();
        self.open.retain(|_, c| c.last > threshold);
        self.forgotten += (before - self.open.len()) as u64;
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::report::{Filter, Report};

    fn events(text: &str) -> Vec<Event> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Event::from_json_line(l).unwrap())
            .collect()
    }

    #[test]
    fn every_byte_is_counted_once_and_matches_the_report() {
        let m = ConnMetrics::default();
        let mut r = Report::new();
        for ev in events(fixtures::STREAM) {
            m.record(&ev);
            r.add(&ev);
        }
        let s = r.summarize(&Filter::default(), &[]);
        let t = m.totals();
        // The invariant: per connection, bytes counted == its latest totals; so the sums
        // equal the report's, which keeps each connection's latest record.
        assert_eq!(t.bytes_sent, s.total.bytes_sent);
        assert_eq!(t.bytes_received, s.total.bytes_received);
        assert_eq!(t.connections, s.total.connections - s.total.open);
        // The python connection: two windows then a close, 24000 sent in all.
        let text = m.render_prometheus();
        assert!(
            text.contains(
                "bulwark_connection_sent_bytes_total{direction=\"egress\",scope=\"internet\",protocol=\"http\",encrypted=\"false\",namespace=\"batch\"} 24000\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "bulwark_connections_total{direction=\"ingress\",scope=\"internet\",protocol=\"http\",encrypted=\"false\",namespace=\"prod\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "bulwark_connections_total{direction=\"egress\",scope=\"cluster\",protocol=\"none\",encrypted=\"unknown\",namespace=\"\"} 1\n"
            ),
            "{text}"
        );
        // The open redis connection moved bytes but has not ended.
        assert!(
            text.contains(
                "bulwark_connections_total{direction=\"egress\",scope=\"cluster\",protocol=\"other\",encrypted=\"false\",namespace=\"batch\"} 0\n"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE bulwark_connections_total counter")
                .count(),
            1
        );
        assert!(!text.contains("10.244."), "no addresses as labels");
        assert!(!text.contains("worker-0"), "no pod names as labels");
    }

    #[test]
    fn ten_thousand_short_connections_are_each_counted_once_with_exact_bytes() {
        // Every third connection reports a window before its close; the close carries the
        // totals, the window part of them.
        let template = events(fixtures::STREAM)
            .into_iter()
            .find(|e| e.event_type() == EventType::ProcessClose)
            .unwrap();
        let m = ConnMetrics::default();
        let mut r = Report::new();
        let (mut sent, mut received) = (0u64, 0u64);
        for i in 0..10_000u64 {
            let mut close = template.clone();
            let bulwark_events::Body::ProcessClose { connection, .. } = &mut close.body else {
                unreachable!()
            };
            connection.local.port = 1024 + (i % 60_000) as u16;
            connection.open_time = format!("t{i}");
            connection.bytes_sent = 100 + i;
            connection.bytes_received = 7 * i;
            let c = connection.clone();
            sent += 100 + i;
            received += 7 * i;
            if i % 3 == 0 {
                let (ws, wr) = (c.bytes_sent / 2, c.bytes_received / 3);
                let window = Event {
                    body: bulwark_events::Body::ConnStats {
                        process: close.process().unwrap().clone(),
                        connection: bulwark_events::Connection {
                            bytes_sent: ws,
                            bytes_received: wr,
                            close_time: None,
                            ..c
                        },
                        window: bulwark_events::Window {
                            start: "a".into(),
                            end: "b".into(),
                            bytes_sent: ws,
                            bytes_received: wr,
                        },
                    },
                    ..close.clone()
                };
                m.record(&window);
                r.add(&window);
            }
            m.record(&close);
            r.add(&close);
        }
        let total = r.summarize(&Filter::default(), &[]).total;
        assert_eq!((total.connections, total.open), (10_000, 0));
        assert_eq!((total.bytes_sent, total.bytes_received), (sent, received));
        assert_eq!(
            m.totals(),
            Counts {
                connections: 10_000,
                bytes_sent: sent,
                bytes_received: received
            }
        );
        let inner = m.inner.lock().unwrap();
        assert!(inner.open.is_empty(), "closed connections are forgotten");
    }

    #[test]
    fn a_repeated_window_adds_nothing() {
        let m = ConnMetrics::default();
        let evs = events(fixtures::STREAM);
        for ev in &evs {
            m.record(ev);
        }
        let once = m.totals();
        // The same windows again (a reader that re-read part of the file): totals do not move
        // for connections still open.
        for ev in evs
            .iter()
            .filter(|e| e.event_type() == EventType::ConnStats)
        {
            if ev.connection().unwrap().remote.port == 6379 {
                m.record(ev);
            }
        }
        assert_eq!(m.totals(), once);
    }

    #[test]
    fn the_stalest_open_connections_are_forgotten_at_the_cap() {
        let mut inner = Inner::default();
        for i in 0..16u64 {
            inner.open.insert(
                i,
                Counted {
                    sent: 1,
                    received: 1,
                    last: i,
                },
            );
        }
        inner.forget_stalest();
        assert_eq!(inner.forgotten, 3, "the two oldest and the cut itself");
        assert!(inner.open.keys().all(|k| *k > 2));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
