//! Counters of the controller ([`Stats`]), shared between the engine's sender, the controller
//! tasks and the health endpoint, which renders them in Prometheus text format. The daemon's
//! own health (lost events, full kernel maps, refusals by reason) and the connections it observed
//! (`bulwark-conns` metrics) come from the events it writes ([`Stats::record_event`]), so the
//! metrics say what the events say.

use std::sync::atomic::{AtomicU64, Ordering};

use bulwark_conns::metrics::ConnMetrics;
use bulwark_events::{Body, Event, Reason};

/// Monotonic counters and gauges. All fields are plain atomics so any task can bump them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Violation events offered by the engine.
    pub violations_received: AtomicU64,
    /// Dropped because the engine->controller queue was full (or the controller gone).
    pub violations_dropped_queue_full: AtomicU64,
    /// Dropped because too many distinct violation keys were waiting to be written.
    pub violations_dropped_pending_full: AtomicU64,
    /// New violation keys not created because the namespace reached its cap (still counted here).
    pub violations_capped: AtomicU64,
    /// Policy matches with no usable identity (the rule set that matched was no longer known).
    pub violations_invalid: AtomicU64,
    /// PolicyViolation objects created / updated / expired (deleted).
    pub violation_objects_created: AtomicU64,
    pub violation_objects_updated: AtomicU64,
    pub violation_objects_expired: AtomicU64,
    /// Failed API writes (retried).
    pub api_write_errors: AtomicU64,
    /// Distinct violation keys waiting to be written (gauge).
    pub violations_pending: AtomicU64,
    /// Policy status writes done by this node as the status aggregator.
    pub status_writes: AtomicU64,
    /// Writes of this node's `BulwarkNode` report because what it reports changed.
    pub node_report_writes: AtomicU64,
    /// Writes of the report that only renew its heartbeat.
    pub node_heartbeats: AtomicU64,
    /// Reports of departed nodes deleted by this node as the status aggregator.
    pub node_reports_pruned: AtomicU64,
    /// Violation writes (objects and Events) that waited for the write budget
    /// (`violation_write_rate`): the counts kept aggregating meanwhile.
    pub violation_writes_deferred: AtomicU64,
    /// Events written about dropped violations.
    pub violation_drop_events: AtomicU64,
    /// Engine applies done / failed.
    pub engine_applies: AtomicU64,
    pub engine_apply_errors: AtomicU64,
    /// Workloads (cgroups) known from the Pod watch (gauge).
    pub workloads: AtomicU64,
    /// Kernel records lost since the daemon started (its last status event).
    pub events_lost: AtomicU64,
    /// Connects by processes whose selector bits were stale for the rule set in force.
    pub stale_process_connects: AtomicU64,
    /// Kernel maps that were full since start, enforcement kept by refusing (gauge; the
    /// status event's `warnings`).
    pub capacity_warnings: AtomicU64,
    /// `policy_match` events with a `reason`, indexed like [`Reason::ALL`].
    pub matches_by_reason: [AtomicU64; Reason::ALL.len()],
    /// Connections and bytes from `process_close` and `conn_stats` events.
    pub connections: ConnMetrics,
    /// The cluster CIDRs and declared protocols connection observation uses now.
    pub in_force: crate::in_force::InForce,
}

impl Stats {
    /// Takes what the metrics report from an event the daemon wrote: a status event's loss,
    /// stale-process and capacity figures, a policy match's reason.
    pub fn record_event(&self, ev: &Event) {
        match &ev.body {
            Body::Status(s) => {
                self.events_lost.store(s.lost_events, Ordering::Relaxed);
                self.stale_process_connects
                    .store(s.stale_processes, Ordering::Relaxed);
                self.capacity_warnings
                    .store(s.warnings.len() as u64, Ordering::Relaxed);
            }
            Body::PolicyMatch(m) => {
                if let Some(i) = m
                    .reason
                    .and_then(|r| Reason::ALL.iter().position(|x| *x == r))
                {
                    self.matches_by_reason[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            Body::ProcessClose { .. } | Body::ConnStats { .. } => self.connections.record(ev),
            _ => {}
        }
    }

    /// Prometheus text exposition of every counter.
    pub fn render_prometheus(&self) -> String {
        let fixed: [(&str, &str, &AtomicU64, &str); 22] = [
            (
                "bulwark_violations_received_total",
                "counter",
                &self.violations_received,
                "Violation events offered by the engine.",
            ),
            (
                "bulwark_violations_dropped_total{reason=\"queue_full\"}",
                "counter",
                &self.violations_dropped_queue_full,
                "Violation events dropped.",
            ),
            (
                "bulwark_violations_dropped_total{reason=\"pending_full\"}",
                "counter",
                &self.violations_dropped_pending_full,
                "",
            ),
            (
                "bulwark_violations_dropped_total{reason=\"namespace_cap\"}",
                "counter",
                &self.violations_capped,
                "",
            ),
            (
                "bulwark_violations_dropped_total{reason=\"invalid\"}",
                "counter",
                &self.violations_invalid,
                "",
            ),
            (
                "bulwark_violation_objects_total{op=\"created\"}",
                "counter",
                &self.violation_objects_created,
                "PolicyViolation object writes.",
            ),
            (
                "bulwark_violation_objects_total{op=\"updated\"}",
                "counter",
                &self.violation_objects_updated,
                "",
            ),
            (
                "bulwark_violation_objects_total{op=\"expired\"}",
                "counter",
                &self.violation_objects_expired,
                "",
            ),
            (
                "bulwark_api_write_errors_total",
                "counter",
                &self.api_write_errors,
                "Failed Kubernetes API writes (retried).",
            ),
            (
                "bulwark_violations_pending",
                "gauge",
                &self.violations_pending,
                "Violation keys waiting to be written.",
            ),
            (
                "bulwark_status_writes_total",
                "counter",
                &self.status_writes,
                "Policy status writes (as the status aggregator).",
            ),
            (
                "bulwark_node_report_writes_total",
                "counter",
                &self.node_report_writes,
                "Writes of this node's BulwarkNode report because it changed.",
            ),
            (
                "bulwark_node_heartbeats_total",
                "counter",
                &self.node_heartbeats,
                "Writes of this node's BulwarkNode report that only renew its heartbeat.",
            ),
            (
                "bulwark_node_reports_pruned_total",
                "counter",
                &self.node_reports_pruned,
                "Reports of departed nodes deleted by the status aggregator.",
            ),
            (
                "bulwark_violation_writes_deferred_total",
                "counter",
                &self.violation_writes_deferred,
                "Violation writes postponed by the per-node write budget (counts keep aggregating).",
            ),
            (
                "bulwark_violation_drop_events_total",
                "counter",
                &self.violation_drop_events,
                "Kubernetes Events written to report dropped violations.",
            ),
            (
                "bulwark_engine_applies_total{result=\"ok\"}",
                "counter",
                &self.engine_applies,
                "Policy set applies to the engine.",
            ),
            (
                "bulwark_engine_applies_total{result=\"error\"}",
                "counter",
                &self.engine_apply_errors,
                "",
            ),
            (
                "bulwark_workloads",
                "gauge",
                &self.workloads,
                "Container cgroups mapped to pods.",
            ),
            (
                "bulwark_events_lost_total",
                "counter",
                &self.events_lost,
                "Kernel records lost (ring buffer full or undecodable) since the daemon started.",
            ),
            (
                "bulwark_stale_process_connects_total",
                "counter",
                &self.stale_process_connects,
                "Connects by processes a policy switch left with stale selector bits (0 expected).",
            ),
            (
                "bulwark_capacity_warnings",
                "gauge",
                &self.capacity_warnings,
                "Kernel maps that were full since start; enforcement kept by refusing (see status warnings).",
            ),
        ];
        let by_reason: Vec<(String, &AtomicU64)> = Reason::ALL
            .iter()
            .zip(&self.matches_by_reason)
            .map(|(r, v)| (format!("bulwark_policy_matches_total{{reason=\"{r}\"}}"), v))
            .collect();
        let rows = fixed
            .iter()
            .map(|(n, k, v, h)| (*n, *k, *v, *h))
            .chain(by_reason.iter().enumerate().map(|(i, (n, v))| {
                let help = if i == 0 {
                    "Policy matches with a reason: refused because it could not be watched (TCP Fast Open, unseen payload, an existing connection, a full map, the socket guard) or arguments not all examined."
                } else {
                    ""
                };
                (n.as_str(), "counter", *v, help)
            }));
        let mut out = String::new();
        for (name, kind, v, help) in rows {
            let base = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                out.push_str(&format!("# HELP {base} {help}\n# TYPE {base} {kind}\n"));
            }
            out.push_str(&format!("{name} {}\n", v.load(Ordering::Relaxed)));
        }
        out.push_str(&self.connections.render_prometheus());
        out.push_str(&self.in_force.render_prometheus());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let s = Stats::default();
        s.violations_dropped_queue_full.store(3, Ordering::Relaxed);
        let text = s.render_prometheus();
        assert!(text.contains("bulwark_violations_dropped_total{reason=\"queue_full\"} 3\n"));
        assert!(text.contains("# TYPE bulwark_violations_dropped_total counter\n"));
        assert_eq!(
            text.matches("# TYPE bulwark_violations_dropped_total")
                .count(),
            1
        );
        assert!(text.contains("bulwark_violations_received_total 0\n"));
    }

    #[test]
    fn connection_events_become_connection_metrics() {
        let s = Stats::default();
        let close: Event = serde_json::from_str(
            r#"{"time":"t","node_name":"n","type":"process_close","process":{"exec_id":"x",
            "pid":5,"uid":0,"binary":"/usr/bin/curl","arguments":"","cwd":null,"start_time":"t",
            "parent_exec_id":null,"pod":null},"connection":{"role":"client","family":"ipv4",
            "local":{"ip":"10.0.0.1","port":40000},"remote":{"ip":"93.184.215.14","port":80},
            "scope":"internet","sent":{"protocol":"http","encrypted":false},
            "received":{"protocol":"http","encrypted":false},"encrypted":false,"bytes_sent":78,
            "bytes_received":1024,"open_time":"t0","close_time":"t1"}}"#,
        )
        .unwrap();
        s.record_event(&close);
        let text = s.render_prometheus();
        let labels = "{direction=\"egress\",scope=\"internet\",protocol=\"http\",encrypted=\"false\",namespace=\"\"}";
        assert!(
            text.contains(&format!("bulwark_connections_total{labels} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("bulwark_connection_sent_bytes_total{labels} 78\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "bulwark_connection_received_bytes_total{labels} 1024\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn status_and_reasons_of_daemon_events_become_metrics() {
        let s = Stats::default();
        let status: Event = serde_json::from_value(serde_json::json!({
            "time": "t", "node_name": "n", "type": "status", "state": "running",
            "generation": 3, "policies": [], "diagnostics": [], "lost_events": 7,
            "warnings": ["PROCESSES full: raise --max-processes", "SOCKHASH full"],
            "stale_processes": 2
        }))
        .unwrap();
        s.record_event(&status);
        let text = s.render_prometheus();
        assert!(text.contains("bulwark_events_lost_total 7\n"), "{text}");
        assert!(
            text.contains("bulwark_stale_process_connects_total 2\n"),
            "{text}"
        );
        assert!(text.contains("bulwark_capacity_warnings 2\n"), "{text}");
        // A later status with no warnings clears the gauge; the counters follow the daemon's.
        let calm: Event = serde_json::from_value(serde_json::json!({
            "time": "t", "node_name": "n", "type": "status", "state": "running",
            "generation": 3, "policies": [], "diagnostics": [], "lost_events": 9,
            "warnings": []
        }))
        .unwrap();
        s.record_event(&calm);
        let text = s.render_prometheus();
        assert!(text.contains("bulwark_capacity_warnings 0\n"), "{text}");
        assert!(text.contains("bulwark_events_lost_total 9\n"), "{text}");
        for r in Reason::ALL {
            assert!(
                text.contains(&format!(
                    "bulwark_policy_matches_total{{reason=\"{r}\"}} 0\n"
                )),
                "{text}"
            );
        }
        assert_eq!(
            text.matches("# TYPE bulwark_policy_matches_total counter")
                .count(),
            1
        );
        let refused: Event = serde_json::from_str(
            r#"{"time":"t","node_name":"n","type":"policy_match","policy_name":"p",
            "policy_namespace":null,"rule":"r","hook":"exec","action":"Sigkill","mode":"enforce",
            "enforced":true,"outcome":"killed","process":{"exec_id":"x","pid":5,"uid":0,
            "binary":"/bin/sh","arguments":"","cwd":null,"start_time":"t","parent_exec_id":null,
            "pod":null},"destination":null,"encryption":null,"reason":"capacity"}"#,
        )
        .unwrap();
        s.record_event(&refused);
        s.record_event(&refused);
        let text = s.render_prometheus();
        assert!(
            text.contains("bulwark_policy_matches_total{reason=\"capacity\"} 2\n"),
            "{text}"
        );
    }
}
