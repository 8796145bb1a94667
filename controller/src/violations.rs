//! From the engine's violation stream to `PolicyViolation` objects and Events.
//!
//! [`Aggregator`] is the pure part: it deduplicates events by key (policy, rule, outcome, node,
//! workload, binary, destination), keeps count / firstSeen / lastSeen, decides which objects are
//! due for a write (at most one write per object per flush interval), rate-limits the creation
//! of new objects (token bucket), caps objects per namespace, bounds the number of keys waiting
//! to be written, and finds expired objects. Every event that does not end up in an object is
//! counted in [`Stats`] and logged, so nothing is lost silently.
//!
//! [`run`] is the I/O part: it seeds the aggregator from this node's existing objects (so counts
//! survive a restart), writes due objects with server-side apply (retrying failures with
//! backoff), publishes an `events.k8s.io/v1` Event regarding the policy through kube's
//! `Recorder`, deletes expired objects, and periodically re-lists to re-create objects the
//! server lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::crd::{PolicyViolation, PolicyViolationSpec, ViolationDestination};
use crate::reconcile::truncate;
use crate::stats::Stats;
use crate::violation_queue::Violation;
use crate::ControllerOptions;
use bulwark_events::Outcome;

/// Label holding the (possibly hashed) node name on every object a node writes.
pub const NODE_LABEL: &str = "bulwark.dev/node";
/// Label holding the policy name.
pub const POLICY_LABEL: &str = "bulwark.dev/policy";

/// FNV-1a, 64 bit: stable across runs and platforms (names must not change on restart).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A label value (at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends);
/// long or odd values become a readable prefix plus a hash.
pub fn label_value(s: &str) -> String {
    let ok = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        return s.to_string();
    }
    format!("{}-{:016x}", dns_prefix(s, 40), fnv64(s.as_bytes()))
}

/// Lower-case DNS-1123 characters of `s`, at most `max`, never ending in `-`; `x` when empty.
fn dns_prefix(s: &str, max: usize) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    while out.ends_with('-') || out.starts_with('-') {
        if out.ends_with('-') {
            out.pop();
        } else {
            out.remove(0);
        }
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// The identity of a violation: events with the same key update one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViolationKey {
    /// Namespace the object lives in (the workload's, or the host namespace).
    pub namespace: String,
    /// Object name: `<policy>-<hash of the whole key>`.
    pub name: String,
}

/// Compute the key and object namespace of an event.
pub fn key_of(ev: &Violation, node: &str, host_namespace: &str) -> ViolationKey {
    let pod = ev.policy_match.process.pod.as_ref();
    let namespace = pod
        .map(|p| p.namespace.clone())
        .unwrap_or_else(|| host_namespace.to_string());
    let dest = ev
        .policy_match
        .destination
        .as_ref()
        .map(|d| format!("{}|{}|{}", d.ip, d.port, d.protocol))
        .unwrap_or_default();
    let identity = [
        ev.policy_match.policy_namespace.as_deref().unwrap_or(""),
        ev.policy_match.policy_name.as_deref().unwrap_or(""),
        ev.policy_match.rule.as_deref().unwrap_or(""),
        ev.policy_match.outcome.as_str(),
        node,
        &namespace,
        pod.map(|p| p.name.as_str()).unwrap_or(""),
        pod.map(|p| p.container.as_str()).unwrap_or(""),
        &ev.policy_match.process.binary,
        &dest,
        ev.policy_match.encryption.map_or("", |e| e.as_str()),
    ]
    .join("\u{1f}");
    ViolationKey {
        namespace,
        name: format!(
            "{}-{:016x}",
            dns_prefix(ev.policy_match.policy_name.as_deref().unwrap_or(""), 40),
            fnv64(identity.as_bytes())
        ),
    }
}

/// The spec of a new object for a first event.
pub fn spec_of(ev: &Violation, node: &str) -> PolicyViolationSpec {
    let pod = ev.policy_match.process.pod.as_ref();
    PolicyViolationSpec {
        policy: ev.policy_match.policy_name.clone().unwrap_or_default(),
        policy_kind: if ev.policy_match.policy_namespace.is_some() {
            "TracingPolicyNamespaced"
        } else {
            "TracingPolicy"
        }
        .into(),
        policy_namespace: ev.policy_match.policy_namespace.clone(),
        rule: ev.policy_match.rule.clone().unwrap_or_default(),
        hook: ev.policy_match.hook.to_string(),
        action: ev.policy_match.action.to_string(),
        mode: ev.policy_match.mode.to_string(),
        enforced: ev.policy_match.enforced,
        outcome: ev.policy_match.outcome.as_str().into(),
        node: node.to_string(),
        pod: pod.map(|p| p.name.clone()),
        container: pod.map(|p| p.container.clone()).filter(|c| !c.is_empty()),
        binary: ev.policy_match.process.binary.clone(),
        arguments: truncate(&ev.policy_match.process.arguments, 1024),
        destination: ev
            .policy_match
            .destination
            .as_ref()
            .map(|d| ViolationDestination {
                ip: d.ip.clone(),
                port: i32::from(d.port),
                protocol: d.protocol.clone(),
                address: if d.ip.contains(':') {
                    format!("[{}]:{}/{}", d.ip, d.port, d.protocol)
                } else {
                    format!("{}:{}/{}", d.ip, d.port, d.protocol)
                },
            }),
        encryption: ev.policy_match.encryption.map(|e| e.to_string()),
        count: 1,
        first_seen: normalize_time(&ev.time),
        last_seen: normalize_time(&ev.time),
    }
}

/// RFC 3339 in UTC; the current time when the event's time does not parse.
fn normalize_time(t: &str) -> String {
    t.parse::<jiff::Timestamp>()
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn parse_time(t: &str) -> Option<jiff::Timestamp> {
    t.parse::<jiff::Timestamp>().ok()
}

/// One known violation object.
#[derive(Clone, Debug)]
struct Entry {
    spec: PolicyViolationSpec,
    /// The server has (or had) this object; creating it is not subject to the rate limit.
    on_server: bool,
    /// Has changes not written yet.
    dirty: bool,
    last_write: Option<Instant>,
    /// After a failed write, not before this.
    retry_at: Option<Instant>,
    failures: u32,
}

/// A write the I/O loop should perform.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteJob {
    pub key: ViolationKey,
    pub spec: PolicyViolationSpec,
    /// True when the object is new (counts toward `created`).
    pub create: bool,
}

/// What happened to an ingested event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingest {
    /// A new key, waiting to be created.
    New,
    /// An existing key; its count went up.
    Repeat,
    /// The namespace is at its cap; counted, not created.
    Capped,
    /// Too many keys waiting to be written; counted, dropped.
    PendingFull,
}

/// Limits of the aggregator (from [`ControllerOptions`]).
#[derive(Clone, Debug)]
pub struct Limits {
    pub rate: f64,
    pub burst: u32,
    pub namespace_cap: usize,
    pub max_pending: usize,
    pub flush_interval: Duration,
    pub ttl: Duration,
}

impl Limits {
    pub fn from_options(o: &ControllerOptions) -> Limits {
        Limits {
            rate: o.violation_create_rate,
            burst: o.violation_create_burst,
            namespace_cap: o.violation_namespace_cap,
            max_pending: o.violation_max_pending,
            flush_interval: o.violation_flush_interval,
            ttl: o.violation_ttl,
        }
    }
}

/// The dedup / rate-limit / cap / expiry state machine. Pure: time is passed in.
pub struct Aggregator {
    node: String,
    host_namespace: String,
    limits: Limits,
    entries: HashMap<ViolationKey, Entry>,
    /// Entries with `dirty` set (kept in step with every change of `Entry::dirty`).
    dirty_count: usize,
    per_namespace: BTreeMap<String, usize>,
    tokens: f64,
    refilled: Option<Instant>,
    stats: Arc<Stats>,
}

impl Aggregator {
    pub fn new(node: &str, host_namespace: &str, limits: Limits, stats: Arc<Stats>) -> Aggregator {
        Aggregator {
            node: node.to_string(),
            host_namespace: host_namespace.to_string(),
            tokens: f64::from(limits.burst),
            limits,
            entries: HashMap::new(),
            dirty_count: 0,
            per_namespace: BTreeMap::new(),
            refilled: None,
            stats,
        }
    }

    /// Objects known (on the server or waiting to be created).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Current count of a key, if known.
    pub fn count(&self, key: &ViolationKey) -> Option<i64> {
        self.entries.get(key).map(|e| e.spec.count)
    }

    fn pending(&self) -> usize {
        self.dirty_count
    }

    fn update_gauge(&self) {
        #[cfg(test)]
        assert_eq!(
            self.dirty_count,
            self.entries.values().filter(|e| e.dirty).count(),
            "dirty_count out of step"
        );
        self.stats
            .violations_pending
            .store(self.pending() as u64, Ordering::Relaxed);
    }

    /// Add one event.
    pub fn ingest(&mut self, ev: &Violation) -> Ingest {
        let key = key_of(ev, &self.node, &self.host_namespace);
        if let Some(e) = self.entries.get_mut(&key) {
            e.spec.count += 1;
            let t = normalize_time(&ev.time);
            if parse_time(&t) > parse_time(&e.spec.last_seen) {
                e.spec.last_seen = t;
            }
            e.spec.arguments = truncate(&ev.policy_match.process.arguments, 1024);
            if !e.dirty {
                e.dirty = true;
                self.dirty_count += 1;
                self.update_gauge();
            }
            return Ingest::Repeat;
        }
        if self.per_namespace.get(&key.namespace).copied().unwrap_or(0) >= self.limits.namespace_cap
        {
            let n = self.stats.violations_capped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!(
                    "namespace {} has {} PolicyViolations from node {} (the cap): not creating one \
                     for policy {} rule {}; {n} capped so far. Raise the cap or fix the workload.",
                    key.namespace,
                    self.limits.namespace_cap,
                    self.node,
                    ev.policy_match.policy_name.as_deref().unwrap_or("?"),
                    ev.policy_match.rule.as_deref().unwrap_or("?")
                );
            }
            return Ingest::Capped;
        }
        if self.pending() >= self.limits.max_pending {
            let n = self
                .stats
                .violations_dropped_pending_full
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                log::warn!(
                    "{} violation objects are waiting to be written (API server slow or down); \
                     dropped a new one for policy {}; {n} dropped so far",
                    self.limits.max_pending,
                    ev.policy_match.policy_name.as_deref().unwrap_or("?")
                );
            }
            return Ingest::PendingFull;
        }
        *self.per_namespace.entry(key.namespace.clone()).or_default() += 1;
        self.entries.insert(
            key,
            Entry {
                spec: spec_of(ev, &self.node),
                on_server: false,
                dirty: true,
                last_write: None,
                retry_at: None,
                failures: 0,
            },
        );
        self.dirty_count += 1;
        self.update_gauge();
        Ingest::New
    }

    /// Adopt an object found on the server (startup or re-list). Keeps the larger count.
    pub fn seed(&mut self, key: ViolationKey, spec: PolicyViolationSpec) {
        match self.entries.get_mut(&key) {
            Some(e) => {
                e.on_server = true;
                if spec.count > e.spec.count {
                    // The server knows more occurrences than we do (we restarted): add ours on top.
                    let ours_unwritten = if e.dirty { e.spec.count } else { 0 };
                    e.spec.count = spec.count + ours_unwritten;
                    e.spec.first_seen = spec.first_seen;
                    if e.dirty && ours_unwritten == 0 {
                        e.dirty = false;
                        self.dirty_count -= 1;
                    }
                }
            }
            None => {
                *self.per_namespace.entry(key.namespace.clone()).or_default() += 1;
                self.entries.insert(
                    key,
                    Entry {
                        spec,
                        on_server: true,
                        dirty: false,
                        last_write: None,
                        retry_at: None,
                        failures: 0,
                    },
                );
            }
        }
        self.update_gauge();
    }

    /// Objects we believe are on the server but a listing did not contain: write them again.
    pub fn mark_missing(&mut self, present: &std::collections::HashSet<ViolationKey>) -> usize {
        let mut n = 0;
        for (k, e) in self.entries.iter_mut() {
            if e.on_server && !present.contains(k) {
                e.on_server = false;
                if !e.dirty {
                    e.dirty = true;
                    self.dirty_count += 1;
                }
                n += 1;
            }
        }
        self.update_gauge();
        n
    }

    fn refill(&mut self, now: Instant) {
        if let Some(t) = self.refilled {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            self.tokens =
                (self.tokens + dt * self.limits.rate).min(f64::from(self.limits.burst.max(1)));
        }
        self.refilled = Some(now);
    }

    /// Writes due at `now`. Updates of existing objects wait for the flush interval since the
    /// last write; new objects each take a token from the creation bucket and wait if it is empty.
    pub fn due(&mut self, now: Instant) -> Vec<WriteJob> {
        self.refill(now);
        let mut keys: Vec<&ViolationKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        let keys: Vec<ViolationKey> = keys.into_iter().cloned().collect();
        let mut jobs = Vec::new();
        for k in keys {
            let e = &self.entries[&k];
            if e.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            if e.last_write
                .is_some_and(|t| now.saturating_duration_since(t) < self.limits.flush_interval)
            {
                continue;
            }
            let create = !e.on_server;
            if create && e.last_write.is_none() {
                // A brand-new object: rate-limited.
                if self.tokens < 1.0 {
                    continue;
                }
                self.tokens -= 1.0;
            }
            jobs.push(WriteJob {
                key: k.clone(),
                spec: e.spec.clone(),
                create,
            });
        }
        jobs
    }

    /// Report the outcome of a job from [`Aggregator::due`].
    pub fn written(&mut self, job: &WriteJob, ok: bool, now: Instant) {
        let Some(e) = self.entries.get_mut(&job.key) else {
            return;
        };
        e.last_write = Some(now);
        if ok {
            e.on_server = true;
            e.failures = 0;
            e.retry_at = None;
            // Only clean if nothing arrived since the job was taken.
            if e.dirty && e.spec.count == job.spec.count {
                e.dirty = false;
                self.dirty_count -= 1;
            }
        } else {
            e.failures += 1;
            e.retry_at = Some(now + Duration::from_millis(500u64 << e.failures.min(7)));
        }
        self.update_gauge();
    }

    /// Forget `key` (it was deleted on the server or expired).
    pub fn forget(&mut self, key: &ViolationKey) {
        if let Some(e) = self.entries.remove(key) {
            if e.dirty {
                self.dirty_count -= 1;
            }
            if let Some(n) = self.per_namespace.get_mut(&key.namespace) {
                *n = n.saturating_sub(1);
            }
        }
        self.update_gauge();
    }

    /// Objects whose `lastSeen` is older than the TTL at wall time `now` (and that have no
    /// unwritten occurrences). They are removed from the aggregator; the caller deletes them.
    pub fn expire(&mut self, now: jiff::Timestamp) -> Vec<ViolationKey> {
        let ttl =
            jiff::SignedDuration::try_from(self.limits.ttl).unwrap_or(jiff::SignedDuration::MAX);
        let expired: Vec<ViolationKey> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.dirty)
            .filter(|(_, e)| {
                parse_time(&e.spec.last_seen).is_some_and(|t| now.duration_since(t) > ttl)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.forget(k);
        }
        expired
    }
}

fn object_of(key: &ViolationKey, spec: &PolicyViolationSpec, node: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "bulwark.dev/v1alpha1",
        "kind": "PolicyViolation",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": {
                NODE_LABEL: label_value(node),
                POLICY_LABEL: label_value(&spec.policy),
                "app.kubernetes.io/managed-by": "bulwark",
            },
        },
        "spec": spec,
    })
}

fn policy_reference(spec: &PolicyViolationSpec) -> ObjectReference {
    ObjectReference {
        api_version: Some("bulwark.dev/v1alpha1".into()),
        kind: Some(spec.policy_kind.clone()),
        name: Some(spec.policy.clone()),
        namespace: spec.policy_namespace.clone(),
        ..Default::default()
    }
}

/// The Event published for a written violation.
pub fn event_for(key: &ViolationKey, spec: &PolicyViolationSpec) -> K8sEvent {
    let outcome = spec.outcome.parse().unwrap_or(Outcome::Reported);
    let reason = match outcome {
        Outcome::Killed => "ProcessKilled",
        Outcome::Blocked => "ConnectionBlocked",
        Outcome::WouldKill => "WouldKillProcess",
        Outcome::WouldBlock => "WouldBlockConnection",
        Outcome::Reported => "PolicyMatched",
    };
    let who = match (&spec.pod, &spec.container) {
        (Some(p), Some(c)) => format!("pod {}/{} container {}", key.namespace, p, c),
        (Some(p), None) => format!("pod {}/{}", key.namespace, p),
        _ => format!("a host process on node {}", spec.node),
    };
    let target = spec
        .destination
        .as_ref()
        .map(|d| format!(" to {}", d.address))
        .unwrap_or_default();
    let enc = spec
        .encryption
        .as_ref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    K8sEvent {
        type_: if outcome == Outcome::Reported {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.into(),
        note: Some(truncate(
            &format!(
                "rule {}: {} {} by {} in {}{}{}; count and last time in PolicyViolation {}/{}",
                spec.rule,
                spec.outcome.replace('_', " "),
                spec.hook,
                spec.binary,
                who,
                target,
                enc,
                key.namespace,
                key.name
            ),
            1000,
        )),
        action: if spec.enforced { "Enforce" } else { "Monitor" }.into(),
        secondary: Some(ObjectReference {
            api_version: Some("bulwark.dev/v1alpha1".into()),
            kind: Some("PolicyViolation".into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..Default::default()
        }),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::violation_queue::tests::sample;

    fn ev() -> Violation {
        sample()
    }

    fn limits() -> Limits {
        Limits {
            rate: 1.0,
            burst: 2,
            namespace_cap: 3,
            max_pending: 100,
            flush_interval: Duration::from_secs(2),
            ttl: Duration::from_secs(3600),
        }
    }

    fn agg(l: Limits) -> (Aggregator, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        (
            Aggregator::new("node-a", "bulwark-system", l, stats.clone()),
            stats,
        )
    }

    fn with_pod(name: &str) -> Violation {
        let mut e = ev();
        e.policy_match.process.pod.as_mut().unwrap().name = name.into();
        e
    }

    #[test]
    fn key_is_stable_dns_and_separates_what_matters() {
        let a = key_of(&ev(), "node-a", "bulwark-system");
        assert_eq!(a, key_of(&ev(), "node-a", "bulwark-system"));
        assert_eq!(a.namespace, "payments");
        assert!(a.name.starts_with("block-cloud-metadata-"), "{}", a.name);
        assert!(
            a.name.len() <= 63
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        // Arguments and pid do not split a violation; pod, node and destination do.
        let mut b = ev();
        b.policy_match.process.arguments = "other".into();
        b.policy_match.process.pid = 9;
        assert_eq!(key_of(&b, "node-a", "x"), a);
        assert_ne!(key_of(&with_pod("other"), "node-a", "x"), a);
        assert_ne!(key_of(&ev(), "node-b", "x"), a);
        let mut c = ev();
        c.policy_match.destination.as_mut().unwrap().port = 443;
        assert_ne!(key_of(&c, "node-a", "x"), a);
        // fnv64 is the published FNV-1a (so names never change between builds).
        assert_eq!(fnv64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn host_processes_go_to_the_host_namespace() {
        let mut e = ev();
        e.policy_match.process.pod = None;
        let k = key_of(&e, "node-a", "bulwark-system");
        assert_eq!(k.namespace, "bulwark-system");
        let s = spec_of(&e, "node-a");
        assert_eq!(s.pod, None);
        assert_eq!(s.container, None);
    }

    #[test]
    fn spec_carries_every_field() {
        let s = spec_of(&ev(), "node-a");
        assert_eq!(s.policy, "block-cloud-metadata");
        assert_eq!(s.policy_kind, "TracingPolicy");
        assert_eq!(s.hook, "connect");
        assert_eq!(s.action, "Block");
        assert_eq!(s.mode, "enforce");
        assert!(s.enforced);
        assert_eq!(s.outcome, "blocked");
        assert_eq!(s.pod.as_deref(), Some("api-7d9"));
        assert_eq!(s.container.as_deref(), Some("app"));
        assert_eq!(
            s.destination.as_ref().unwrap().address,
            "169.254.169.254:80/TCP"
        );
        assert_eq!(s.first_seen, "2026-11-22T03:00:00.123Z");
        assert_eq!(s.count, 1);
        let mut e6 = ev();
        e6.policy_match.destination.as_mut().unwrap().ip = "2001:db8::1".into();
        assert_eq!(
            spec_of(&e6, "n").destination.unwrap().address,
            "[2001:db8::1]:80/TCP"
        );
    }

    #[test]
    fn repeats_raise_the_count_and_coalesce_writes() {
        let (mut a, _) = agg(limits());
        let t0 = Instant::now();
        assert_eq!(a.ingest(&ev()), Ingest::New);
        let jobs = a.due(t0);
        assert_eq!(jobs.len(), 1);
        assert!(jobs[0].create);
        assert_eq!(jobs[0].spec.count, 1);
        a.written(&jobs[0], true, t0);
        let mut later = ev();
        later.time = "2026-11-22T03:05:00Z".into();
        assert_eq!(a.ingest(&later), Ingest::Repeat);
        assert_eq!(a.ingest(&ev()), Ingest::Repeat);
        // Within the flush interval: nothing due.
        assert!(a.due(t0 + Duration::from_millis(500)).is_empty());
        let jobs = a.due(t0 + Duration::from_secs(3));
        assert_eq!(jobs.len(), 1);
        assert!(!jobs[0].create);
        assert_eq!(jobs[0].spec.count, 3);
        assert_eq!(jobs[0].spec.last_seen, "2026-11-22T03:05:00Z");
        assert_eq!(jobs[0].spec.first_seen, "2026-11-22T03:00:00.123Z");
        a.written(&jobs[0], true, t0 + Duration::from_secs(3));
        assert!(a.due(t0 + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn creation_is_rate_limited_but_not_lost() {
        let (mut a, _) = agg(Limits {
            namespace_cap: 100,
            ..limits()
        });
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(a.ingest(&with_pod(&format!("p{i}"))), Ingest::New);
        }
        let first = a.due(t0);
        assert_eq!(first.len(), 2, "burst of 2");
        for j in &first {
            a.written(j, true, t0);
        }
        assert!(a.due(t0 + Duration::from_millis(100)).is_empty());
        let next = a.due(t0 + Duration::from_millis(1100));
        assert_eq!(next.len(), 1, "1 per second");
        for j in &next {
            a.written(j, true, t0);
        }
        let rest = a.due(t0 + Duration::from_secs(10));
        assert_eq!(rest.len(), 2, "the rest once tokens refill");
    }

    #[test]
    fn namespace_cap_counts_instead_of_creating() {
        let (mut a, stats) = agg(limits());
        for i in 0..3 {
            assert_eq!(a.ingest(&with_pod(&format!("p{i}"))), Ingest::New);
        }
        assert_eq!(a.ingest(&with_pod("p3")), Ingest::Capped);
        assert_eq!(stats.violations_capped.load(Ordering::Relaxed), 1);
        // Repeats of existing keys still count.
        assert_eq!(a.ingest(&with_pod("p0")), Ingest::Repeat);
        // Another namespace is not affected.
        let mut other = with_pod("p9");
        other.policy_match.process.pod.as_mut().unwrap().namespace = "web".into();
        assert_eq!(a.ingest(&other), Ingest::New);
        // Forgetting one frees a slot.
        let k = key_of(&with_pod("p1"), "node-a", "bulwark-system");
        a.forget(&k);
        assert_eq!(a.ingest(&with_pod("p3")), Ingest::New);
    }

    #[test]
    fn pending_bound_drops_new_keys_with_a_count() {
        let (mut a, stats) = agg(Limits {
            max_pending: 2,
            namespace_cap: 100,
            ..limits()
        });
        assert_eq!(a.ingest(&with_pod("a")), Ingest::New);
        assert_eq!(a.ingest(&with_pod("b")), Ingest::New);
        assert_eq!(a.ingest(&with_pod("c")), Ingest::PendingFull);
        assert_eq!(
            stats
                .violations_dropped_pending_full
                .load(Ordering::Relaxed),
            1
        );
        assert_eq!(stats.violations_pending.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn failed_writes_are_retried_with_backoff() {
        let (mut a, _) = agg(limits());
        let t0 = Instant::now();
        a.ingest(&ev());
        let j = a.due(t0).pop().unwrap();
        a.written(&j, false, t0);
        assert!(a.due(t0 + Duration::from_millis(100)).is_empty());
        let again = a.due(t0 + Duration::from_secs(3));
        assert_eq!(again.len(), 1);
        assert!(again[0].create, "still a creation after a failure");
        a.written(&again[0], true, t0 + Duration::from_secs(3));
        assert!(a.due(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn seeding_keeps_server_counts_and_missing_objects_are_rewritten() {
        let (mut a, _) = agg(limits());
        let key = key_of(&ev(), "node-a", "bulwark-system");
        let mut server = spec_of(&ev(), "node-a");
        server.count = 40;
        a.seed(key.clone(), server);
        assert_eq!(a.ingest(&ev()), Ingest::Repeat);
        assert_eq!(a.count(&key), Some(41));
        let t0 = Instant::now();
        let j = a.due(t0).pop().unwrap();
        assert!(!j.create);
        a.written(&j, true, t0);
        // The server lost everything: the object is written again as a creation.
        assert_eq!(a.mark_missing(&Default::default()), 1);
        let j = a.due(t0 + Duration::from_secs(5)).pop().unwrap();
        assert!(j.create);
        assert_eq!(j.spec.count, 41);
    }

    #[test]
    fn old_objects_expire() {
        let (mut a, _) = agg(limits());
        let t0 = Instant::now();
        a.ingest(&ev());
        let now =
            jiff::Timestamp::from_second(parse_time("2026-11-22T03:30:00Z").unwrap().as_second())
                .unwrap();
        // Unwritten: never expired (it would be lost).
        assert!(a
            .expire(now + jiff::SignedDuration::from_hours(5))
            .is_empty());
        let j = a.due(t0).pop().unwrap();
        a.written(&j, true, t0);
        assert!(a.expire(now).is_empty(), "30 minutes old, ttl 1h");
        let gone = a.expire(now + jiff::SignedDuration::from_hours(1));
        assert_eq!(gone, vec![key_of(&ev(), "node-a", "x")]);
        assert!(a.is_empty());
    }

    #[test]
    fn event_names_the_story() {
        let key = key_of(&ev(), "node-a", "bulwark-system");
        let e = event_for(&key, &spec_of(&ev(), "node-a"));
        assert_eq!(e.reason, "ConnectionBlocked");
        assert_eq!(e.type_, EventType::Warning);
        let note = e.note.unwrap();
        assert!(note.contains("blocked connect by /usr/bin/curl in pod payments/api-7d9 container app to 169.254.169.254:80/TCP"), "{note}");
        let mut host = ev();
        host.policy_match.process.pod = None;
        host.policy_match.outcome = Outcome::Reported;
        let e = event_for(&key, &spec_of(&host, "node-a"));
        assert_eq!(e.type_, EventType::Normal);
        assert!(e.note.unwrap().contains("a host process on node node-a"));
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("node-a"), "node-a");
        let long = "n".repeat(100);
        let v = label_value(&long);
        assert!(v.len() <= 63, "{v}");
        assert_ne!(label_value("a/b"), "a/b");
    }
}
