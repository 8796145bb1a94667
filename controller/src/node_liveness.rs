//! Which nodes' reports count ([`live_reports`], pure) and the watch of the cluster's Node
//! objects it relies on ([`NodeWatch`], run by the status aggregator).
//!
//! A node's real liveness signal is its Kubernetes Node: while the Node exists its report
//! counts however slow its daemon is, and once the Node is deleted its report leaves every
//! policy's status at the next pass. A report whose Node exists but whose heartbeat is older
//! than the TTL is *stale*: its daemon stopped or lost the API server, so nothing it reported
//! can be vouched for (its pinned programs may still enforce the rules it last loaded, but new
//! rules do not reach it and its violations are not reported). A stale node counts as failed
//! for every policy, with [`STALE_REASON`], so `kubectl get` shows it instead of counting it as
//! loaded. Where Nodes cannot be listed (no
//! RBAC, a test API server without core/v1, simulated nodes) or a report names no Node, the
//! report's heartbeat decides: older than the TTL, measured from now, and the node departed.
//! The heartbeat is renewed by a task of its own on the node ([`crate::node_report::Heartbeat`]),
//! so policy work never holds it up.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Notify;

use crate::crd::BulwarkNode;

/// What the aggregator knows about the cluster's Node objects.
#[derive(Clone, Debug, Default)]
pub struct NodeSet {
    /// The Nodes could be listed (the resource is served and readable).
    pub listed: bool,
    /// Names of the Nodes that exist.
    pub present: BTreeSet<String>,
    /// Names of Nodes seen deleted (by a watch event, or gone between two lists) and not
    /// created again since.
    pub deleted: BTreeSet<String>,
}

/// Why a stale node (its Node exists, its heartbeat is older than the TTL) fails every policy.
/// (At most 128 bytes: status reasons are cut there.)
pub const STALE_REASON: &str =
    "no heartbeat within the node TTL: the bulwark daemon is down or cut off from the API server";

/// Which reports count, from [`live_reports`].
#[derive(Debug, Default)]
pub struct Liveness {
    /// Reports that count, sorted by node name (stale ones included).
    pub live: Vec<Arc<BulwarkNode>>,
    /// Names of the live nodes whose heartbeat is older than the TTL while their Node exists.
    pub stale: BTreeSet<String>,
    /// Names of the departed nodes, whose reports are to be deleted.
    pub departed: Vec<String>,
}

/// Sorts reports into live, stale and departed: a report whose Node was deleted has departed;
/// one whose Node exists is live, and stale when its heartbeat is older than `ttl`; otherwise
/// (Nodes not listable, or no Node of that name) the heartbeat must be within `ttl` of `now`
/// (an unreadable heartbeat has departed).
pub fn live_reports(
    reports: &[Arc<BulwarkNode>],
    nodes: &NodeSet,
    now: jiff::Timestamp,
    ttl: Duration,
) -> Liveness {
    let ttl = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
    let mut out = Liveness::default();
    for r in reports {
        let name = r.metadata.name.clone().unwrap_or_default();
        let fresh = r
            .spec
            .heartbeat
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| now.duration_since(t) <= ttl);
        let node_exists = nodes.listed && nodes.present.contains(&name);
        let node_deleted = nodes.listed && nodes.deleted.contains(&name);
        if node_exists {
            if !fresh {
                out.stale.insert(name);
            }
            out.live.push(r.clone());
        } else if !node_deleted && fresh {
            out.live.push(r.clone());
        } else {
            out.departed.push(name);
        }
    }
    out.live
        .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// Node names kept in [`NodeSet::deleted`] at most, so a cluster replacing nodes all day does
/// not grow it forever (the first by name are forgotten; their reports fall back to the TTL).
const MAX_DELETED: usize = 10_000;

/// A metadata-only watch of the Node objects (`resource`: core/v1 Node in a cluster); pokes
/// `changed` when one is added or deleted. Stops when dropped.
pub struct NodeWatch {
    nodes: Arc<RwLock<NodeSet>>,
    task: tokio::task::AbortHandle,
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeWatch {
    pub fn spawn(client: Client, resource: &ApiResource, changed: Arc<Notify>) -> NodeWatch {
        let nodes: Arc<RwLock<NodeSet>> = Arc::default();
        // Metadata only: a Node's status is large and changes often; only names matter here.
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, resource);
        let (set, plural) = (nodes.clone(), resource.plural.clone());
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            let mut listing: Option<BTreeSet<String>> = None;
            let mut warned = false;
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        if !warned {
                            log::info!("cannot watch {plural} ({e}); departed nodes are found by their report's heartbeat only");
                            warned = true;
                        }
                        continue;
                    }
                };
                let name = |m: &kube::api::ObjectMeta| m.name.clone().unwrap_or_default();
                let Ok(mut s) = set.write() else { return };
                let poke = match ev {
                    watcher::Event::Init => {
                        listing = Some(BTreeSet::new());
                        false
                    }
                    watcher::Event::InitApply(o) => {
                        listing
                            .get_or_insert_with(BTreeSet::new)
                            .insert(name(&o.metadata));
                        false
                    }
                    watcher::Event::InitDone => {
                        let fresh = listing.take().unwrap_or_default();
                        let gone: Vec<String> = s.present.difference(&fresh).cloned().collect();
                        s.deleted.extend(gone);
                        s.deleted.retain(|n| !fresh.contains(n));
                        s.present = fresh;
                        s.listed = true;
                        true
                    }
                    watcher::Event::Apply(o) => {
                        let n = name(&o.metadata);
                        s.deleted.remove(&n);
                        s.present.insert(n)
                    }
                    watcher::Event::Delete(o) => {
                        let n = name(&o.metadata);
                        s.present.remove(&n);
                        s.deleted.insert(n);
                        true
                    }
                };
                while s.deleted.len() > MAX_DELETED {
                    s.deleted.pop_first();
                }
                drop(s);
                if poke {
                    changed.notify_one();
                }
            }
        })
        .abort_handle();
        NodeWatch { nodes, task }
    }

    /// What is known now.
    pub fn snapshot(&self) -> NodeSet {
        self.nodes.read().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BulwarkNodeSpec;

    fn report(node: &str, heartbeat: &str) -> Arc<BulwarkNode> {
        let mut r = BulwarkNode::new(
            node,
            BulwarkNodeSpec {
                heartbeat: heartbeat.into(),
                ..Default::default()
            },
        );
        r.metadata.name = Some(node.into());
        Arc::new(r)
    }

    fn names(live: &[Arc<BulwarkNode>]) -> Vec<String> {
        live.iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn without_nodes_departed_nodes_are_those_without_a_recent_heartbeat() {
        let now = jiff::Timestamp::now();
        let ago = |s: i64| (now - jiff::SignedDuration::from_secs(s)).to_string();
        let reports = vec![
            report("node-b", &ago(10)),
            report("node-a", &ago(299)),
            report("node-old", &ago(301)),
            report("node-garbled", "yesterday"),
        ];
        let l = live_reports(&reports, &NodeSet::default(), now, Duration::from_secs(300));
        assert_eq!(names(&l.live), ["node-a", "node-b"], "sorted, fresh only");
        assert_eq!(l.departed, ["node-old", "node-garbled"]);
        assert!(l.stale.is_empty(), "without Nodes an old heartbeat departs");
    }

    #[test]
    fn an_existing_node_stays_but_is_stale_without_heartbeat_and_a_deleted_one_departs_at_once() {
        let now = jiff::Timestamp::now();
        let ago = |s: i64| (now - jiff::SignedDuration::from_secs(s)).to_string();
        let reports = vec![
            report("slow", &ago(3600)),
            report("deleted", &ago(1)),
            report("no-node-fresh", &ago(1)),
            report("no-node-stale", &ago(3600)),
        ];
        let nodes = NodeSet {
            listed: true,
            present: ["slow".to_string()].into(),
            deleted: ["deleted".to_string()].into(),
        };
        let ttl = Duration::from_secs(300);
        let l = live_reports(&reports, &nodes, now, ttl);
        assert_eq!(names(&l.live), ["no-node-fresh", "slow"]);
        assert_eq!(l.departed, ["deleted", "no-node-stale"]);
        assert_eq!(
            l.stale,
            ["slow".to_string()].into(),
            "kept, but not vouched for"
        );
        // Until the Nodes are listed, only heartbeats count.
        let unlisted = NodeSet {
            listed: false,
            ..nodes
        };
        let l = live_reports(&reports, &unlisted, now, ttl);
        assert_eq!(names(&l.live), ["deleted", "no-node-fresh"]);
    }
}
