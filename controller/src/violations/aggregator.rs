//! The dedup / rate-limit / cap / expiry state machine of violations. Pure: time is passed
//! in, writes are handed out as [`WriteJob`]s for the I/O loop ([`super::writer`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{key_of, normalize_time, parse_time, spec_of, target_of, ViolationKey};
use crate::crd::PolicyViolationSpec;
use crate::reconcile::truncate;
use crate::stats::Stats;
use crate::violation_queue::Violation;
use crate::ControllerOptions;

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
    /// API writes per second (objects and Events) and burst: the storm cap of this node.
    pub write_rate: f64,
    pub write_burst: u32,
    /// API writes one object write costs: 1, or 2 when an Event is published with it.
    pub write_cost: u32,
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
            write_rate: o.violation_write_rate,
            write_burst: o.violation_write_burst,
            write_cost: if o.publish_events { 2 } else { 1 },
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
    /// The write budget (token bucket of `write_rate` / `write_burst`).
    write_tokens: f64,
    refilled: Option<Instant>,
    stats: Arc<Stats>,
}

impl Aggregator {
    pub fn new(node: &str, host_namespace: &str, limits: Limits, stats: Arc<Stats>) -> Aggregator {
        Aggregator {
            node: node.to_string(),
            host_namespace: host_namespace.to_string(),
            tokens: f64::from(limits.burst),
            write_tokens: f64::from(limits.write_burst),
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
    pub fn seed(&mut self, key: ViolationKey, mut spec: PolicyViolationSpec) {
        if spec.target.is_none() {
            // Written before `target` existed: its next write shows it too.
            spec.target = target_of(&spec);
        }
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
            self.write_tokens = (self.write_tokens + dt * self.limits.write_rate).min(f64::from(
                self.limits.write_burst.max(self.limits.write_cost),
            ));
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
            let cost = f64::from(self.limits.write_cost.max(1));
            if self.write_tokens < cost {
                // Over the write budget: the object keeps aggregating and is written later.
                self.stats
                    .violation_writes_deferred
                    .fetch_add(1, Ordering::Relaxed);
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
            self.write_tokens -= cost;
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
            write_rate: 1000.0,
            write_burst: 1000,
            write_cost: 1,
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
    fn a_storm_is_capped_by_the_write_budget_and_its_counts_are_kept() {
        // 1,000 violations a second over 100 keys for 10 s; 10 writes/s, burst 20, each object
        // write followed by an Event (cost 2).
        let (mut a, stats) = agg(Limits {
            rate: 50.0,
            burst: 50,
            write_rate: 10.0,
            write_burst: 20,
            write_cost: 2,
            namespace_cap: 1000,
            max_pending: 10_000,
            flush_interval: Duration::from_secs(2),
            ttl: Duration::from_secs(3600),
        });
        let t0 = Instant::now();
        let mut written: HashMap<ViolationKey, i64> = HashMap::new();
        let mut writes = 0u32;
        let mut flush = |a: &mut Aggregator, at: Instant, writes: &mut u32| {
            for job in a.due(at) {
                *writes += 2;
                written.insert(job.key.clone(), job.spec.count);
                a.written(&job, true, at);
            }
        };
        for tick in 0..40u32 {
            let at = t0 + Duration::from_millis(250 * u64::from(tick));
            for i in 0..250 {
                a.ingest(&with_pod(&format!("p{}", i % 100)));
            }
            flush(&mut a, at, &mut writes);
        }
        // 10 s at 10 writes/s plus the burst (the first tick refills nothing).
        assert!(writes <= 20 + 10 * 10, "{writes} API writes in 10 s");
        assert!(writes >= 20, "the budget is used: {writes}");
        assert!(stats.violation_writes_deferred.load(Ordering::Relaxed) > 0);
        // After the storm every count reaches the server, nothing is lost.
        for tick in 0..400u32 {
            let at = t0 + Duration::from_secs(10) + Duration::from_millis(250 * u64::from(tick));
            flush(&mut a, at, &mut writes);
        }
        assert_eq!(written.len(), 100);
        assert_eq!(written.values().sum::<i64>(), 10_000);
        assert_eq!(stats.violations_pending.load(Ordering::Relaxed), 0);
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
        // Written by a version without `target`: the next write has it.
        server.target = None;
        a.seed(key.clone(), server);
        assert_eq!(a.ingest(&ev()), Ingest::Repeat);
        assert_eq!(a.count(&key), Some(41));
        let t0 = Instant::now();
        let j = a.due(t0).pop().unwrap();
        assert!(!j.create);
        assert_eq!(j.spec.target.as_deref(), Some("169.254.169.254:80/TCP"));
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
}
