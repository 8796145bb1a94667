//! The violation writer's I/O loop: seeds the aggregator from this node's objects, writes
//! due objects with server-side apply, publishes Events, deletes expired objects and re-lists.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use super::{
    event_for, label_value, object_of, policy_reference, Aggregator, Limits, ViolationKey,
    NODE_LABEL,
};
use crate::crd::PolicyViolation;
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
