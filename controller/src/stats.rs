//! Counters of the controller ([`Stats`]), shared between the engine's sender, the controller
//! tasks and the health endpoint, which renders them in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Status writes done by the policy reconciler.
    pub status_writes: AtomicU64,
    /// Engine applies done / failed.
    pub engine_applies: AtomicU64,
    pub engine_apply_errors: AtomicU64,
    /// Workloads (cgroups) known from the Pod watch (gauge).
    pub workloads: AtomicU64,
}

impl Stats {
    /// Prometheus text exposition of every counter.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &AtomicU64, &str); 14] = [
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
                "Policy status writes.",
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
        ];
        let mut out = String::new();
        for (name, kind, v, help) in rows {
            let base = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                out.push_str(&format!("# HELP {base} {help}\n# TYPE {base} {kind}\n"));
            }
            out.push_str(&format!("{name} {}\n", v.load(Ordering::Relaxed)));
        }
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
}
