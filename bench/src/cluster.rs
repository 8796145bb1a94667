//! `bulwark-bench cluster`: a simulated cluster against a real API server (tests/k8s/testenv or
//! any cluster the kubeconfig names). Runs the controller side of N node daemons in this process
//! ([`bulwark_controller::sim`]: everything but eBPF, a fake engine per node), then applies,
//! changes and deletes a batch of policies and measures: time until every node's status
//! converges (per policy, median / p95), API writes per policy change (the API server's own
//! `apiserver_request_total`, and the controllers' counters), the size of a policy's status,
//! pruning of departed nodes, and a violation storm (every node offering violations at a set
//! rate: writes/s to the API server, drops, how long the engine's offer took). Prints a report
//! and writes bench/out/cluster.json and bench/out/cluster.md, with the projection to 5,000
//! nodes. No root needed.
//!
//!     eval "$(tests/k8s/testenv/up)"
//!     target/release/bulwark-bench cluster --nodes 200

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bulwark_controller::crd::NodePolicyReport;
use bulwark_controller::sim::{
    blocked_metadata_connect, converged, crd_established, node_object, node_stand_in,
    node_stand_in_crd, policy_object, FailRule, SimNode,
};
use bulwark_controller::{BulwarkNode, ControllerOptions, PolicyKey, Violation};
use bulwark_events::{Pod, Process};
use bulwark_policy::model::{NodePolicyStatus, PolicyStatus, TracingPolicy};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{json, Value};

const LABEL: &str = "bench";
const STORM_NAMESPACE: &str = "sim-storm";
/// The daemon's violation queue (daemon/src/cmd_run.rs `VIOLATION_QUEUE`).
const QUEUE: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Policies applied, changed and deleted.
    #[arg(long, default_value_t = 100)]
    policies: usize,
    /// Kubeconfig of the API server (default: KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where cluster.json and cluster.md go.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Nodes killed to measure pruning.
    #[arg(long, default_value_t = 10)]
    departed: usize,
    /// Report heartbeat and node TTL (seconds); short so pruning shows within the run
    /// (production defaults: 60 and 300).
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
    #[arg(long, default_value_t = 20)]
    ttl: u64,
    /// Violation storm: seconds, and violations per second offered by every node.
    #[arg(long, default_value_t = 10)]
    storm_secs: u64,
    #[arg(long, default_value_t = 1000)]
    storm_rate: u64,
    /// Longest wait for any convergence.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Give every simulated node a Node object (a stand-in resource: the test API server
    /// serves no core/v1), so nodes are live while their Node exists and the departed nodes
    /// are pruned by deleting their Nodes rather than by the heartbeat TTL.
    #[arg(long)]
    node_objects: bool,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    // The controllers' own logs (RUST_LOG=bulwark_controller=info) when asked for.
    let _ = env_logger::builder()
        .filter_level(log::LevelFilter::Off)
        .parse_default_env()
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run_async(args))
}

/// Policy `i` fails on every fourth node when `i` is a multiple of 10 (as if over the kernel's
/// capacity there), so failing policies list more failing nodes than the status keeps.
fn fail_rule() -> FailRule {
    Arc::new(|node: &str, key: &PolicyKey| {
        let p: usize = key.name.rsplit('-').next()?.parse().ok()?;
        let n: usize = node.rsplit('-').next()?.parse().ok()?;
        (p.is_multiple_of(10) && n.is_multiple_of(4))
            .then(|| "needs 1100 selectors, the kernel maps hold 1024 (simulated)".to_string())
    })
}

fn node_name(i: usize) -> String {
    format!("sim-{i:05}")
}

fn policy_name(i: usize) -> String {
    format!("sim-p-{i:04}")
}

fn expected_failed(policy: usize, live_nodes: &[usize]) -> i64 {
    if !policy.is_multiple_of(10) {
        return 0;
    }
    live_nodes.iter().filter(|n| n.is_multiple_of(4)).count() as i64
}

/// Mutating requests by `resource[/subresource]`, from the API server's own counters, plus
/// the watch events it sent (`watch:<kind>`) and their bytes (`watch_bytes:<kind>`): the
/// fan-out of every write to the watchers of its kind.
async fn api_writes(client: &kube::Client) -> Result<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .context("request")?;
    let text = client
        .request_text(req)
        .await
        .context("GET /metrics of the API server")?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (metric, rest) = match line.split_once('{') {
            Some((m, r)) => (m, r),
            None => continue,
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let value = value.trim().parse::<f64>().unwrap_or(0.0);
        let what = match metric {
            "apiserver_request_total" => {
                let verb = label("verb");
                if !matches!(
                    verb.as_str(),
                    "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
                ) {
                    continue;
                }
                let mut what = label("resource");
                let sub = label("subresource");
                if !sub.is_empty() {
                    what = format!("{what}/{sub}");
                }
                what
            }
            "apiserver_watch_events_total" => format!("watch:{}", watch_kind(&label)),
            "apiserver_watch_events_sizes_sum" => format!("watch_bytes:{}", watch_kind(&label)),
            _ => continue,
        };
        *out.entry(what).or_insert(0.0) += value;
    }
    Ok(out)
}

/// The kind (or, in newer servers, resource) label of a watch metric.
fn watch_kind(label: &dyn Fn(&str) -> String) -> String {
    let k = label("kind");
    if k.is_empty() {
        label("resource")
    } else {
        k
    }
}

/// The API writes of a [`delta`] (without the watch figures), and the watch events and bytes.
fn split_watch(d: &BTreeMap<String, u64>) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    d.iter()
        .map(|(k, v)| (k.clone(), *v))
        .partition(|(k, _)| !k.starts_with("watch"))
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)).round() as u64,
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The controllers' own write counters, summed over the nodes.
#[derive(Default, Clone, Copy, Debug)]
struct Counters {
    report_changes: u64,
    heartbeats: u64,
    status_writes: u64,
    violation_writes: u64,
    dropped: u64,
    deferred: u64,
    drop_events: u64,
    received: u64,
}

fn counters(nodes: &[SimNode]) -> Counters {
    let mut c = Counters::default();
    for n in nodes {
        let s = &n.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        c.report_changes += get(&s.node_report_writes);
        c.heartbeats += get(&s.node_heartbeats);
        c.status_writes += get(&s.status_writes);
        c.violation_writes += get(&s.violation_objects_created) + get(&s.violation_objects_updated);
        c.dropped += get(&s.violations_dropped_queue_full)
            + get(&s.violations_dropped_pending_full)
            + get(&s.violations_capped);
        c.deferred += get(&s.violation_writes_deferred);
        c.drop_events += get(&s.violation_drop_events);
        c.received += get(&s.violations_received);
    }
    c
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Apply one CRD (given as JSON) and wait until it is Established.
async fn install_crd(client: &kube::Client, crd: &Value) -> Result<()> {
    let crd: CustomResourceDefinition = serde_json::from_value(crd.clone())?;
    install(client, &[crd]).await
}

async fn install_crds(client: &kube::Client) -> Result<()> {
    let mut crds = bulwark_policy::crds();
    crds.push(bulwark_controller::policy_violation_crd());
    crds.push(bulwark_controller::bulwark_node_crd());
    install(client, &crds).await
}

async fn install(client: &kube::Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("bulwark-bench").force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_until(&format!("CRD {name} Established"), 60, || {
            crd_established(&api, &name)
        })
        .await?;
    }
    Ok(())
}

async fn wait_until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of(o: &DynamicObject) -> PolicyStatus {
    o.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

/// Seconds from each policy's change until `done(policy object)` first held, by policy index.
async fn converge(
    api: &Api<DynamicObject>,
    started: &BTreeMap<usize, Instant>,
    timeout: u64,
    done: impl Fn(usize, &DynamicObject) -> bool,
) -> Result<Vec<f64>> {
    let mut took: BTreeMap<usize, f64> = BTreeMap::new();
    let lp = ListParams::default().labels(&format!("bulwark.dev/sim={LABEL}"));
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while took.len() < started.len() {
        let list = api.list(&lp).await.context("listing the policies")?;
        let now = Instant::now();
        for o in &list.items {
            let Some(i) = o
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.rsplit('-').next()?.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some(t0) = started.get(&i) {
                if !took.contains_key(&i) && done(i, o) {
                    took.insert(i, now.duration_since(*t0).as_secs_f64());
                }
            }
        }
        if Instant::now() > deadline {
            let sample = list.items.iter().find_map(|o| {
                o.data
                    .get("status")
                    .map(|s| format!("{}: {s}", o.metadata.name.as_deref().unwrap_or("")))
            });
            bail!(
                "{} of {} policies did not converge within {timeout} s; e.g. {}",
                started.len() - took.len(),
                started.len(),
                sample.unwrap_or_default()
            );
        }
        // Polling is load on the server too: 4 lists a second.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut v: Vec<f64> = took.into_values().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v)
}

/// One phase's figures.
fn phase_json(
    name: &str,
    times: &[f64],
    writes: &BTreeMap<String, u64>,
    before: Counters,
    after: Counters,
    changes: usize,
) -> Value {
    let (writes, watch) = split_watch(writes);
    let total: u64 = writes.values().sum();
    let controller = (after.report_changes - before.report_changes)
        + (after.status_writes - before.status_writes);
    json!({
        "phase": name,
        "changes": changes,
        "converged_s": { "median": percentile(times, 0.5), "p95": percentile(times, 0.95),
                          "max": times.last().copied().unwrap_or(f64::NAN) },
        "api_writes": writes,
        "api_writes_total": total,
        "watch_events": watch,
        "api_writes_per_change": total as f64 / changes as f64,
        "report_writes": after.report_changes - before.report_changes,
        "heartbeat_writes": after.heartbeats - before.heartbeats,
        "status_writes": after.status_writes - before.status_writes,
        "controller_writes_per_change": controller as f64 / changes as f64,
    })
}

fn storm_violation(node: &str, k: u64) -> Violation {
    let process = Process {
        exec_id: format!("{node}-{k}"),
        pid: 1000 + (k % 50) as u32,
        binary: "/usr/bin/curl".into(),
        pod: Some(Pod {
            namespace: STORM_NAMESPACE.into(),
            name: format!("storm-{}", k % 20),
            container: "app".into(),
            labels: Default::default(),
        }),
        ..Process::default()
    };
    let now = jiff::Timestamp::now().to_string();
    blocked_metadata_connect(node, &policy_name(1), &now, process, 80)
}

/// Server-side apply every policy in `mode`; returns when each was applied, by index.
async fn apply_all(
    policies: &Api<DynamicObject>,
    count: usize,
    mode: &str,
) -> Result<BTreeMap<usize, Instant>> {
    let mut started = BTreeMap::new();
    for i in 0..count {
        let name = policy_name(i);
        started.insert(i, Instant::now());
        policies
            .patch(
                &name,
                &PatchParams::apply("bulwark-bench").force(),
                &Patch::Apply(policy_object(&name, mode, LABEL)),
            )
            .await
            .with_context(|| format!("applying {name} ({mode})"))?;
    }
    Ok(started)
}

/// Wait until every policy of `started` shows `generation` converged on the live nodes.
async fn converge_on(
    policies: &Api<DynamicObject>,
    started: &BTreeMap<usize, Instant>,
    timeout: u64,
    generation: i64,
    live: &[usize],
) -> Result<Vec<f64>> {
    converge(policies, started, timeout, |i, o| {
        o.metadata.generation == Some(generation)
            && converged(
                &status_of(o),
                o.metadata.generation,
                live.len() as i64,
                expected_failed(i, live),
            )
    })
    .await
}

async fn cleanup(client: &kube::Client, policies: &Api<DynamicObject>, ns: &str) -> Result<()> {
    let lp = ListParams::default().labels(&format!("bulwark.dev/sim={LABEL}"));
    for o in policies.list(&lp).await?.items {
        let _ = policies
            .delete(
                &o.metadata.name.unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await;
    }
    let reports: Api<BulwarkNode> = Api::all(client.clone());
    for r in reports.list(&ListParams::default()).await?.items {
        let name = r.metadata.name.unwrap_or_default();
        if name.starts_with("sim-") {
            let _ = reports.delete(&name, &DeleteParams::default()).await;
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let _ = leases
        .delete(
            bulwark_controller::aggregate::LEASE_NAME,
            &DeleteParams::default(),
        )
        .await;
    // The Node stand-ins, where the resource exists.
    let k8s_nodes: Api<DynamicObject> = Api::all_with(client.clone(), &node_stand_in());
    let _ = k8s_nodes
        .delete_collection(&DeleteParams::default(), &lp)
        .await;
    let pv: Api<bulwark_controller::PolicyViolation> =
        Api::namespaced(client.clone(), STORM_NAMESPACE);
    let _ = pv
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    Ok(())
}

async fn run_async(args: ClusterArgs) -> Result<()> {
    let kubeconfig = args
        .kubeconfig
        .clone()
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .context("no kubeconfig: pass --kubeconfig or run `eval \"$(tests/k8s/testenv/up)\"`")?;
    let client = bulwark_controller::connect(Some(&kubeconfig)).await?;
    install_crds(&client).await?;
    let mut opts = ControllerOptions {
        report_heartbeat: Duration::from_secs(args.heartbeat),
        node_ttl: Duration::from_secs(args.ttl),
        ..ControllerOptions::default()
    };
    let k8s_nodes: Api<DynamicObject> = Api::all_with(client.clone(), &node_stand_in());
    if args.node_objects {
        install_crd(&client, &node_stand_in_crd()).await?;
        opts.node_resource = node_stand_in();
    }
    let ar = ApiResource::erase::<TracingPolicy>(&());
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    cleanup(&client, &policies, &opts.host_namespace).await?;
    let n = args.nodes;
    let mut report = json!({
        "nodes": n, "policies": args.policies,
        "options": { "heartbeat_s": args.heartbeat, "node_ttl_s": args.ttl,
                     "status_interval_s": opts.status_interval.as_secs_f64(),
                     "violation_write_rate": opts.violation_write_rate,
                     "violation_write_burst": opts.violation_write_burst,
                     "queue": QUEUE },
    });

    // Start the nodes (each with its own client, as separate daemons would have).
    if args.node_objects {
        eprintln!("creating {n} Node objects");
        for i in 0..n {
            let o: DynamicObject = serde_json::from_value(node_object(&node_name(i), LABEL))?;
            k8s_nodes
                .create(&PostParams::default(), &o)
                .await
                .with_context(|| format!("creating Node {}", node_name(i)))?;
        }
    }
    eprintln!("starting {n} simulated nodes");
    let t_start = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let c = bulwark_controller::connect(Some(&kubeconfig)).await?;
        nodes.push(SimNode::start(
            c,
            &node_name(i),
            fail_rule(),
            QUEUE,
            opts.clone(),
        ));
    }
    let reports: Api<BulwarkNode> = Api::all(client.clone());
    let mut live: Vec<usize> = (0..n).collect();
    wait_until("every node's report", args.timeout, || async {
        let l = reports.list(&ListParams::default()).await.ok()?;
        let count = l
            .items
            .iter()
            .filter(|r| {
                r.metadata
                    .name
                    .as_deref()
                    .is_some_and(|x| x.starts_with("sim-"))
            })
            .count();
        (count == n).then_some(())
    })
    .await?;
    report["startup_s"] = json!(t_start.elapsed().as_secs_f64());
    eprintln!(
        "all {n} nodes reported after {:.1} s",
        t_start.elapsed().as_secs_f64()
    );

    // 1. Create the policies, all at once.
    let mut phases = Vec::new();
    let m0 = api_writes(&client).await?;
    let c0 = counters(&nodes);
    let started = apply_all(&policies, args.policies, "enforce").await?;
    let times = converge_on(&policies, &started, args.timeout, 1, &live).await?;
    let (m1, c1) = (api_writes(&client).await?, counters(&nodes));
    phases.push(phase_json(
        "create",
        &times,
        &delta(&m0, &m1),
        c0,
        c1,
        args.policies,
    ));
    eprintln!("create converged: {}", phases.last().unwrap());

    // Status size at N, for a failing and a loaded policy.
    let failing = policies.get(&policy_name(0)).await?;
    let loaded = policies.get(&policy_name(1)).await?;
    let size = |o: &DynamicObject| -> Value {
        let st = o.data.get("status").cloned().unwrap_or_default();
        json!({
            "status_bytes": serde_json::to_vec(&st).unwrap_or_default().len(),
            "object_bytes": serde_json::to_vec(o).unwrap_or_default().len(),
            "managed_fields_entries": o.metadata.managed_fields.as_ref().map_or(0, |m| m.len()),
            "failed_nodes_listed": st["failedNodes"].as_array().map_or(0, |a| a.len()),
            "failed_nodes_omitted": st["failedNodesOmitted"].as_i64().unwrap_or(0),
            "nodes": st["nodes"].clone(),
        })
    };
    report["status_size"] =
        json!({ "failing_policy": size(&failing), "loaded_policy": size(&loaded) });
    let one_report = reports.get(&node_name(1)).await?;
    report["node_report_bytes"] = json!(serde_json::to_vec(&one_report)?.len());
    report["node_report_entry_bytes"] = json!(serde_json::to_vec(&NodePolicyReport {
        kind: "TracingPolicyNamespaced".into(),
        namespace: Some("a-typical-namespace".into()),
        name: "a-typical-policy-name-of-40-characters-xx".into(),
        generation: Some(12),
        error: None,
    })?
    .len());

    // 2. Change every policy (mode), generation 2.
    let m0 = api_writes(&client).await?;
    let c0 = counters(&nodes);
    let started = apply_all(&policies, args.policies, "monitor").await?;
    let times = converge_on(&policies, &started, args.timeout, 2, &live).await?;
    let (m1, c1) = (api_writes(&client).await?, counters(&nodes));
    phases.push(phase_json(
        "change",
        &times,
        &delta(&m0, &m1),
        c0,
        c1,
        args.policies,
    ));
    eprintln!("change converged: {}", phases.last().unwrap());

    // 3. Delete every policy but #1 (kept for the storm and pruning): converged when no
    // node reports it any more.
    let m0 = api_writes(&client).await?;
    let c0 = counters(&nodes);
    let mut started = BTreeMap::new();
    for i in (0..args.policies).filter(|i| *i != 1) {
        started.insert(i, Instant::now());
        policies
            .delete(&policy_name(i), &DeleteParams::default())
            .await
            .with_context(|| format!("deleting {}", policy_name(i)))?;
    }
    let mut took: BTreeMap<usize, f64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while took.len() < started.len() {
        let l = reports.list(&ListParams::default()).await?;
        let now = Instant::now();
        for (i, t0) in &started {
            let name = policy_name(*i);
            let still = l
                .items
                .iter()
                .any(|r| r.spec.policies.iter().any(|p| p.name == name));
            if !still && !took.contains_key(i) {
                took.insert(*i, now.duration_since(*t0).as_secs_f64());
            }
        }
        if Instant::now() > deadline {
            bail!("deletes did not reach every node within {} s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut times: Vec<f64> = took.into_values().collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let (m1, c1) = (api_writes(&client).await?, counters(&nodes));
    phases.push(phase_json(
        "delete",
        &times,
        &delta(&m0, &m1),
        c0,
        c1,
        started.len(),
    ));
    eprintln!("delete converged: {}", phases.last().unwrap());
    report["phases"] = json!(phases);

    // 4. Departed nodes: kill some; their reports are pruned and the counts drop.
    let t_kill = Instant::now();
    let gone: Vec<usize> = (n - args.departed.min(n - 1)..n).collect();
    for i in &gone {
        nodes[*i].kill();
        if args.node_objects {
            k8s_nodes
                .delete(&node_name(*i), &DeleteParams::default())
                .await
                .with_context(|| format!("deleting Node {}", node_name(*i)))?;
        }
    }
    live.retain(|i| !gone.contains(i));
    let live_n = live.len() as i64;
    wait_until("departed nodes pruned", args.ttl + args.timeout, || async {
        let o = policies.get(&policy_name(1)).await.ok()?;
        let s = status_of(&o);
        let l = reports.list(&ListParams::default()).await.ok()?;
        let left = l.items.iter().any(|r| {
            gone.iter()
                .any(|g| r.metadata.name.as_deref() == Some(node_name(*g).as_str()))
        });
        (!left && s.node_counts.is_some_and(|c| c.total == live_n)).then_some(())
    })
    .await?;
    report["pruning"] = json!({
        "departed": gone.len(), "ttl_s": args.ttl,
        "by": if args.node_objects { "Node deleted" } else { "heartbeat TTL" },
        "pruned_after_s": t_kill.elapsed().as_secs_f64(),
    });
    eprintln!(
        "departed nodes pruned after {:.1} s",
        t_kill.elapsed().as_secs_f64()
    );

    // 5. Violation storm on every live node.
    eprintln!(
        "storm: {} nodes x {} violations/s for {} s",
        live.len(),
        args.storm_rate,
        args.storm_secs
    );
    let m0 = api_writes(&client).await?;
    let c0 = counters(&nodes);
    let t_storm = Instant::now();
    let mut gens = Vec::new();
    for i in &live {
        let sender = nodes[*i].sender.clone();
        let name = node_name(*i);
        let (rate, secs) = (args.storm_rate, args.storm_secs);
        gens.push(tokio::spawn(async move {
            // Batches every 10 ms; the offer's own time is what the engine would pay.
            let per_tick = (rate / 100).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let end = Instant::now() + Duration::from_secs(secs);
            let (mut offer_ns, mut k) = (Vec::new(), 0u64);
            while Instant::now() < end {
                tick.tick().await;
                for _ in 0..per_tick {
                    let v = storm_violation(&name, k);
                    k += 1;
                    let t = Instant::now();
                    sender.offer(v);
                    offer_ns.push(t.elapsed().as_nanos() as u64);
                }
            }
            offer_ns
        }));
    }
    let mut offer_ns: Vec<u64> = Vec::new();
    for g in gens {
        offer_ns.extend(g.await?);
    }
    offer_ns.sort_unstable();
    let offered = offer_ns.len() as u64;
    let pct = |p: f64| -> f64 {
        offer_ns
            .get(((offer_ns.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |ns| *ns as f64 / 1000.0)
    };
    let storm_elapsed = t_storm.elapsed().as_secs_f64();
    // Writes keep draining after the storm at the capped rate: measure the storm window.
    let (m1, c1) = (api_writes(&client).await?, counters(&nodes));
    let (w, _) = split_watch(&delta(&m0, &m1));
    let pv_writes = w.get("policyviolations").copied().unwrap_or(0);
    let ev_writes = w.get("events").copied().unwrap_or(0);
    report["storm"] = json!({
        "nodes": live.len(),
        "target_per_node_per_s": args.storm_rate,
        "seconds": storm_elapsed,
        "offered": offered,
        "offered_per_node_per_s": offered as f64 / live.len() as f64 / storm_elapsed,
        "offer_us": { "p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0) },
        "api_writes": w,
        "violation_api_writes_per_s": (pv_writes + ev_writes) as f64 / storm_elapsed,
        "violation_api_writes_per_node_per_s": (pv_writes + ev_writes) as f64 / storm_elapsed / live.len() as f64,
        "cap_per_node_per_s": opts.violation_write_rate,
        "budget_per_node_per_s_over_window": (f64::from(opts.violation_write_burst) + opts.violation_write_rate * storm_elapsed) / storm_elapsed,
        "burst_per_node": opts.violation_write_burst,
        "dropped": c1.dropped - c0.dropped,
        "deferred_writes": c1.deferred - c0.deferred,
        "drop_events": c1.drop_events - c0.drop_events,
        "received": c1.received - c0.received,
    });
    eprintln!("storm: {}", report["storm"]);

    report["projection_5000"] = projection(&report);
    drop(nodes);
    cleanup(&client, &policies, &opts.host_namespace).await?;

    std::fs::create_dir_all(&args.out)?;
    let md = markdown(&report);
    std::fs::write(
        args.out.join("cluster.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("cluster.md"), &md)?;
    println!("{md}");
    eprintln!("wrote {}/cluster.json and cluster.md", args.out.display());
    Ok(())
}

/// What the measured figures imply for 5,000 nodes.
fn projection(r: &Value) -> Value {
    const N: f64 = 5000.0;
    let n = r["nodes"].as_f64().unwrap_or(1.0);
    let status = r["status_size"]["failing_policy"]["status_bytes"]
        .as_f64()
        .unwrap_or(0.0);
    // The per-node design this replaces: one nodeStatus entry per node plus one managedFields
    // entry per node's field manager.
    let old_entry = serde_json::to_vec(&NodePolicyStatus {
        node: "ip-10-0-123-45.eu-west-1.compute.internal".into(),
        state: "Loaded".into(),
        reason: None,
        observed_generation: Some(12),
    })
    .map_or(0, |v| v.len()) as f64;
    let old_managed = serde_json::to_vec(&json!({
        "manager": "bulwark/ip-10-0-123-45.eu-west-1.compute.internal",
        "operation": "Apply", "apiVersion": "bulwark.dev/v1alpha1", "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1", "subresource": "status",
        "fieldsV1": {"f:status": {"f:nodeStatus": {"k:{\"node\":\"ip-10-0-123-45.eu-west-1.compute.internal\"}": {
            ".": {}, "f:node": {}, "f:observedGeneration": {}, "f:state": {}}},
            "f:conditions": {"k:{\"type\":\"Accepted\"}": {".": {}, "f:type": {}, "f:status": {}}},
            "f:nodes": {}, "f:observedGeneration": {}, "f:state": {}}}
    }))
    .map_or(0, |v| v.len()) as f64;
    let phases = r["phases"].as_array().cloned().unwrap_or_default();
    let per_change = |name: &str| {
        phases
            .iter()
            .find(|p| p["phase"] == name)
            .and_then(|p| p["controller_writes_per_change"].as_f64())
            .unwrap_or(0.0)
    };
    let reports_per_change = phases
        .iter()
        .find(|p| p["phase"] == "change")
        .map(|p| p["report_writes"].as_f64().unwrap_or(0.0) / p["changes"].as_f64().unwrap_or(1.0))
        .unwrap_or(0.0);
    let hb = r["options"]["heartbeat_s"].as_f64().unwrap_or(60.0);
    json!({
        "status_bytes": status,
        "status_formula": "constant: counts + conditions (messages <= 8 KiB) + at most 20 failing nodes (reason <= 256 B); independent of N",
        "old_per_node_status_bytes_at_5000": N * (old_entry + old_managed),
        "old_per_node_formula": format!("N x ({old_entry} B nodeStatus entry + {old_managed} B managedFields entry)"),
        "etcd_object_limit_bytes": 1_572_864,
        "report_writes_per_node_per_batch": reports_per_change * args_changes(r) / n,
        "writes_per_change_at_n": per_change("change"),
        "writes_per_batch_at_5000": N * (reports_per_change * args_changes(r) / n) + per_change("change") * args_changes(r) - reports_per_change * args_changes(r),
        "watch_events_per_status_write_at_5000": N,
        "heartbeat_writes_per_s_at_5000_default_60s": N / 60.0,
        "heartbeat_writes_per_s_at_5000_bench_heartbeat": N / hb,
        "storm_writes_per_s_at_5000_default_cap": N * r["storm"]["cap_per_node_per_s"].as_f64().unwrap_or(1.0),
    })
}

fn args_changes(r: &Value) -> f64 {
    r["policies"].as_f64().unwrap_or(100.0)
}

fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let f = |v: &Value| v.as_f64().map_or("?".into(), |x| format!("{x:.2}"));
    s.push_str(&format!(
        "# Simulated cluster: {} nodes, {} policies\n\nStartup (every node reported): {} s\n\n",
        r["nodes"],
        r["policies"],
        f(&r["startup_s"])
    ));
    s.push_str("| phase | changes | converged median s | p95 s | max s | API writes (server) | per change | controller writes per change (reports + status) | heartbeats in window | watch events sent per change (policies / reports) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for p in r["phases"].as_array().into_iter().flatten() {
        let per = |kind: &str| {
            p["watch_events"][format!("watch:{kind}")]
                .as_f64()
                .unwrap_or(0.0)
                / p["changes"].as_f64().unwrap_or(1.0)
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} |\n",
            p["phase"].as_str().unwrap_or("?"),
            p["changes"],
            f(&p["converged_s"]["median"]),
            f(&p["converged_s"]["p95"]),
            f(&p["converged_s"]["max"]),
            p["api_writes_total"],
            f(&p["api_writes_per_change"]),
            f(&p["controller_writes_per_change"]),
            p["heartbeat_writes"],
            per("tracingpolicies"),
            per("bulwarknodes"),
        ));
    }
    let sz = &r["status_size"]["failing_policy"];
    s.push_str(&format!(
        "\nStatus of a policy failing on {} of the nodes: {} bytes of status, {} bytes of object, {} managedFields entries, {} failing nodes listed + {} omitted. A loaded policy: {} bytes of status.\n\nOne node's report: {} bytes (about {} bytes per policy).\n",
        sz["failed_nodes_listed"].as_i64().unwrap_or(0) + sz["failed_nodes_omitted"].as_i64().unwrap_or(0),
        sz["status_bytes"], sz["object_bytes"], sz["managed_fields_entries"],
        sz["failed_nodes_listed"], sz["failed_nodes_omitted"],
        r["status_size"]["loaded_policy"]["status_bytes"],
        r["node_report_bytes"], r["node_report_entry_bytes"],
    ));
    s.push_str(&format!(
        "\nPruning: {} nodes killed ({}); reports gone and counts down after {} s (TTL {} s).\n",
        r["pruning"]["departed"],
        r["pruning"]["by"].as_str().unwrap_or("?"),
        f(&r["pruning"]["pruned_after_s"]),
        r["pruning"]["ttl_s"]
    ));
    let st = &r["storm"];
    s.push_str(&format!(
        "\nStorm: {} nodes offering {} violations/s each for {} s (achieved {}/node/s, {} offered). Engine-side offer (a try_send, never awaits): p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs (the max includes the thread being descheduled on a loaded machine). Violation API writes: {}/s in all, {}/node/s (cap {}/s after a burst of {}: at most {}/node/s over this window). Dropped: {}; writes deferred by the cap: {}; ViolationsDropped Events: {}.\n",
        st["nodes"], st["target_per_node_per_s"], f(&st["seconds"]), f(&st["offered_per_node_per_s"]), st["offered"],
        f(&st["offer_us"]["p50"]), f(&st["offer_us"]["p99"]), f(&st["offer_us"]["p999"]), f(&st["offer_us"]["max"]),
        f(&st["violation_api_writes_per_s"]), f(&st["violation_api_writes_per_node_per_s"]),
        st["cap_per_node_per_s"], st["burst_per_node"], f(&st["budget_per_node_per_s_over_window"]),
        st["dropped"], st["deferred_writes"], st["drop_events"],
    ));
    let p = &r["projection_5000"];
    s.push_str(&format!(
        "\n## Projection to 5,000 nodes\n\n- Status: {} bytes, {} — the per-node list it replaces: {} = {} bytes (etcd refuses objects over {} bytes).\n- A batch of {} policy changes (as applied here): about {} writes (the report writes per node measured here times 5,000, plus the aggregator's status writes).\n- Heartbeats: {} report writes/s at the default 60 s.\n- Each status write is a watch event to every node's policy watch ({} deliveries).\n- Violation storm on every node at the default cap: {} writes/s to the API server; lower `violation_write_rate` on large clusters.\n",
        p["status_bytes"], p["status_formula"].as_str().unwrap_or(""), p["old_per_node_formula"].as_str().unwrap_or(""),
        p["old_per_node_status_bytes_at_5000"], p["etcd_object_limit_bytes"],
        r["policies"],
        f(&p["writes_per_batch_at_5000"]), f(&p["heartbeat_writes_per_s_at_5000_default_60s"]),
        p["watch_events_per_status_write_at_5000"], p["storm_writes_per_s_at_5000_default_cap"],
    ));
    s
}
