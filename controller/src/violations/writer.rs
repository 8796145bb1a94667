//! The violation writer's I/O loop: seeds the aggregator from this node's objects, writes
//! due objects with server-side apply, publishes Events, deletes expired objects, re-lists,
//! and reports dropped violations in a Warning Event regarding the node ([`drop_event`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::{
    event_for, label_value, object_of, policy_reference, Aggregator, Limits, ViolationKey,
    NODE_LABEL,
};
use crate::crd::PolicyViolation;
use crate::stats::Stats;
use crate::violation_queue::Violation;
use crate::ControllerOptions;

/// List this node's objects into the aggregator. Returns the keys present.
async fn list_into(
    api: &Api<PolicyViolation>,
    node: &str,
    agg: &mut Aggregator,
) -> Result<std::collections::HashSet<ViolationKey>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{NODE_LABEL}={}", label_value(node)));
    let list = crate::timed(api.list(&lp)).await?;
    let mut present = std::collections::HashSet::new();
    for o in list {
        let key = ViolationKey {
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
        };
        agg.seed(key.clone(), o.spec);
        present.insert(key);
    }
    Ok(present)
}

/// Run the violation writer forever (after the engine's sender is gone it keeps flushing,
/// expiring and re-creating lost objects).
pub async fn run(
    client: Client,
    node: String,
    mut rx: mpsc::Receiver<Violation>,
    opts: ControllerOptions,
) -> crate::Result<()> {
    let stats = opts.stats.clone();
    let mut agg = Aggregator::new(
        &node,
        &opts.host_namespace,
        Limits::from_options(&opts),
        stats.clone(),
    );
    let all: Api<PolicyViolation> = Api::all(client.clone());
    let reporter = Reporter {
        controller: "bulwark".into(),
        instance: Some(node.clone()),
    };
    let mut recorder = Recorder::new(client.clone(), reporter.clone());
    let manager = format!("{}/{}", opts.field_manager, node);
    let mut seeded = false;
    let mut next_list = Instant::now();
    // Expiry sweeps: every minute (more often when resync is short, as in tests).
    let sweep = opts.resync_interval.min(Duration::from_secs(60));
    let mut next_expire = Instant::now() + sweep;
    let mut list_failures = 0u32;
    let mut rx_open = true;
    let tick = Duration::from_millis(250);
    let relist = opts.resync_interval.min(Duration::from_secs(600));
    // Dropped violations are reported in an Event at most this often.
    let drop_report = opts.resync_interval.min(Duration::from_secs(60));
    let mut next_drop_report = Instant::now() + drop_report;
    let mut drops_reported = DropCounts::of(&stats);
    loop {
        tokio::select! {
            ev = rx.recv(), if rx_open => match ev {
                Some(ev) => {
                    if ev.policy_match.policy_name.as_deref().unwrap_or("").is_empty() {
                        stats.violations_invalid.fetch_add(1, Ordering::Relaxed);
                        log::warn!("ignored a policy_match event without policy_name: {ev:?}");
                    } else {
                        agg.ingest(&ev);
                    }
                    // Drain what is queued without waiting.
                    while let Ok(ev) = rx.try_recv() {
                        if !ev.policy_match.policy_name.as_deref().unwrap_or("").is_empty() { agg.ingest(&ev); } else { stats.violations_invalid.fetch_add(1, Ordering::Relaxed); }
                    }
                }
                None => {
                    log::info!("the engine closed the violation stream; flushing what is pending");
                    rx_open = false;
                }
            },
            _ = tokio::time::sleep(tick) => {}
        }
        let now = Instant::now();
        if now >= next_list {
            match list_into(&all, &node, &mut agg).await {
                Ok(present) => {
                    let missing = agg.mark_missing(&present);
                    if missing > 0 {
                        log::warn!("{missing} PolicyViolation(s) of node {node} vanished from the API server; writing them again");
                    }
                    seeded = true;
                    list_failures = 0;
                    next_list = now + relist;
                }
                Err(e) => {
                    list_failures += 1;
                    if list_failures == 1 || list_failures.is_power_of_two() {
                        log::warn!("listing PolicyViolations failed (retrying; {list_failures} failure(s)): {e}; is the PolicyViolation CRD installed?");
                    }
                    next_list = now + Duration::from_millis(500u64 << list_failures.min(6));
                }
            }
        }
        if !seeded {
            // Counts on the server are unknown until the first list; writing now could lower them.
            continue;
        }
        for job in agg.due(now) {
            let api: Api<PolicyViolation> = Api::namespaced(client.clone(), &job.key.namespace);
            let body = object_of(&job.key, &job.spec, &node);
            let params = PatchParams::apply(&manager).force();
            let res = crate::timed(api.patch(&job.key.name, &params, &Patch::Apply(&body))).await;
            let ok = res.is_ok();
            agg.written(&job, ok, Instant::now());
            match res {
                Ok(_) => {
                    if job.create {
                        stats
                            .violation_objects_created
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats
                            .violation_objects_updated
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if opts.publish_events {
                        let ev = event_for(&job.key, &job.spec);
                        let reference = policy_reference(&job.spec);
                        let mut res = crate::timed(recorder.publish(&ev, &reference)).await;
                        if matches!(&res, Err(kube::Error::Api(e)) if e.code == 404) {
                            // The recorder's series cache names an Event the server no longer
                            // has (it lost its data): start over with a fresh cache.
                            recorder = Recorder::new(client.clone(), reporter.clone());
                            res = crate::timed(recorder.publish(&ev, &reference)).await;
                        }
                        if let Err(e) = res {
                            stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                            log::debug!(
                                "publishing an Event for {}/{} failed: {e}",
                                job.key.namespace,
                                job.key.name
                            );
                        }
                    }
                }
                Err(e) => {
                    stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "writing PolicyViolation {}/{} failed (kept, will retry): {e}",
                        job.key.namespace,
                        job.key.name
                    );
                    // Stop this round: the server is probably down or the CRD missing.
                    break;
                }
            }
        }
        if now >= next_drop_report {
            next_drop_report = now + drop_report;
            let drops = DropCounts::of(&stats);
            if let Some(ev) = drop_event(&drops_reported, &drops, drop_report) {
                let node_ref = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                };
                match crate::timed(recorder.publish(&ev, &node_ref)).await {
                    Ok(()) => {
                        stats.violation_drop_events.fetch_add(1, Ordering::Relaxed);
                        drops_reported = drops;
                    }
                    Err(e) => {
                        stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                        log::debug!("publishing the dropped-violations Event failed: {e}");
                    }
                }
            }
        }
        if now >= next_expire {
            next_expire = now + sweep;
            for key in agg.expire(jiff::Timestamp::now()) {
                let api: Api<PolicyViolation> = Api::namespaced(client.clone(), &key.namespace);
                match crate::timed(api.delete(&key.name, &DeleteParams::default())).await {
                    Ok(_) => {
                        stats
                            .violation_objects_expired
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        log::warn!("deleting expired PolicyViolation {}/{} failed (the next list adopts it and retries): {e}", key.namespace, key.name);
                    }
                }
            }
        }
    }
}

/// The drop counters an Event reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub queue_full: u64,
    pub pending_full: u64,
    pub namespace_cap: u64,
}

impl DropCounts {
    pub fn of(stats: &Stats) -> DropCounts {
        DropCounts {
            queue_full: stats.violations_dropped_queue_full.load(Ordering::Relaxed),
            pending_full: stats
                .violations_dropped_pending_full
                .load(Ordering::Relaxed),
            namespace_cap: stats.violations_capped.load(Ordering::Relaxed),
        }
    }
    fn total(&self) -> u64 {
        self.queue_full + self.pending_full + self.namespace_cap
    }
}

/// The Warning Event about violations dropped since `before`; `None` when nothing was.
pub fn drop_event(before: &DropCounts, now: &DropCounts, window: Duration) -> Option<K8sEvent> {
    let d = DropCounts {
        queue_full: now.queue_full.saturating_sub(before.queue_full),
        pending_full: now.pending_full.saturating_sub(before.pending_full),
        namespace_cap: now.namespace_cap.saturating_sub(before.namespace_cap),
    };
    (d.total() > 0).then(|| K8sEvent {
        type_: EventType::Warning,
        reason: "ViolationsDropped".into(),
        note: Some(format!(
            "{} policy violation(s) were not recorded in the last {}s (queue full: {}, too many \
             objects pending: {}, namespace cap: {}); enforcement was not affected. Totals: \
             bulwark_violations_dropped_total on /metrics.",
            d.total(),
            window.as_secs(),
            d.queue_full,
            d.pending_full,
            d.namespace_cap
        )),
        action: "Drop".into(),
        secondary: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_since_the_last_event_are_reported_once() {
        let before = DropCounts {
            queue_full: 5,
            pending_full: 0,
            namespace_cap: 1,
        };
        assert!(drop_event(&before, &before, Duration::from_secs(60)).is_none());
        let now = DropCounts {
            queue_full: 905,
            pending_full: 2,
            namespace_cap: 1,
        };
        let ev = drop_event(&before, &now, Duration::from_secs(60)).unwrap();
        assert_eq!(ev.reason, "ViolationsDropped");
        assert!(matches!(ev.type_, EventType::Warning));
        let note = ev.note.unwrap();
        assert!(note.starts_with("902 policy violation(s)"), "{note}");
        assert!(
            note.contains("queue full: 900") && note.contains("pending: 2"),
            "{note}"
        );
    }
}
