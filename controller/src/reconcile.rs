//! The status of one policy as a pure function: given the policy object as read from the API
//! server, the lint verdict and what every live node reported about it, [`reconcile`] returns
//! the status to apply, or that nothing needs writing. No I/O here; [`crate::aggregate`]
//! gathers the node reports and performs the write.
//!
//! Status ownership: one writer, the status aggregator (field manager `bulwark-aggregator`),
//! so writes never conflict and `managedFields` holds one entry whatever the cluster size. The
//! status is bounded: node counts, plus at most [`MAX_FAILED_NODES`] failing nodes (sorted by
//! name) and how many were left out; per-node detail lives in each node's `BulwarkNode` report.

use bulwark_policy::model::{
    NodeCounts, NodePolicyStatus, PolicyStatus, StatusCondition, MAX_FAILED_NODES,
};

use crate::validate::Verdict;
use crate::PolicyKey;

/// Condition types.
pub const ACCEPTED: &str = "Accepted";
pub const LOADED: &str = "Loaded";
/// `state` values (the STATE printer column).
pub const STATE_ACCEPTED: &str = "Accepted";
pub const STATE_REJECTED: &str = "Rejected";
/// `failedNodes[].state`.
pub const NODE_FAILED: &str = "Failed";

/// Conditions carry at most this many bytes of message (the API server limit is 32 KiB).
const MAX_MESSAGE: usize = 8 * 1024;
/// A failing node's reason is cut to this many bytes in the status (the full text is in the
/// node's report).
pub const MAX_NODE_REASON: usize = 256;

/// One policy object as the watch saw it.
#[derive(Clone, Debug)]
pub struct PolicyObject {
    pub key: PolicyKey,
    pub generation: Option<i64>,
    /// Current status on the server (None if absent or unreadable).
    pub status: Option<PolicyStatus>,
}

/// What one live node reported about the policy.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeView<'a> {
    /// The node has no entry for the policy (not handed to its engine yet).
    Unreported,
    /// The node acted on `generation`; `error` says why it could not load it.
    Reported {
        generation: Option<i64>,
        error: Option<&'a str>,
    },
}

/// What the aggregator knows about the policy.
#[derive(Clone, Debug)]
pub struct ReconcileContext<'a> {
    /// The lint verdict on the object (an unreadable object is a rejecting verdict).
    pub verdict: &'a Verdict,
    /// Every live node (heartbeat within the TTL), by name, sorted by name.
    pub nodes: &'a [(&'a str, NodeView<'a>)],
    /// RFC 3339 "now" for `lastTransitionTime` of changed conditions.
    pub now: &'a str,
}

/// What to do for the object.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The status on the server already says what the aggregator would write.
    NoChange,
    /// Server-side apply this status.
    ApplyStatus(PolicyStatus),
}

/// Decide the status of `obj`.
pub fn reconcile(obj: &PolicyObject, ctx: &ReconcileContext<'_>) -> Action {
    let current = obj.status.clone().unwrap_or_default();
    let generation = obj.generation;
    let accepted = ctx.verdict.accepted();

    // Nodes by outcome for the observed generation.
    let mut loaded = 0usize;
    let mut failed: Vec<(&str, &str)> = Vec::new();
    let mut pending: Vec<&str> = Vec::new();
    for (node, view) in ctx.nodes {
        match view {
            NodeView::Reported {
                generation: g,
                error,
            } if *g == generation => match error {
                None => loaded += 1,
                Some(e) => failed.push((node, e)),
            },
            _ => pending.push(node),
        }
    }
    let total = ctx.nodes.len();
    let (loaded, failed, pending) = if accepted {
        (loaded, failed, pending)
    } else {
        (0, Vec::new(), Vec::new())
    };
    let nodes = format!("{loaded}/{total}");
    let counts = NodeCounts {
        total: total as i64,
        loaded: loaded as i64,
        failed: failed.len() as i64,
        pending: pending.len() as i64,
    };
    let failed_nodes: Vec<NodePolicyStatus> = failed
        .iter()
        .take(MAX_FAILED_NODES)
        .map(|(node, e)| NodePolicyStatus {
            node: node.to_string(),
            state: NODE_FAILED.into(),
            reason: Some(truncate(e, MAX_NODE_REASON)),
            observed_generation: generation,
        })
        .collect();
    let omitted = failed.len() - failed_nodes.len();

    let accepted_cond = if accepted {
        let warnings: Vec<String> = ctx.verdict.findings.iter().map(|f| f.to_string()).collect();
        condition(
            ACCEPTED,
            "True",
            "Valid",
            if warnings.is_empty() {
                "the policy passed every lint check".to_string()
            } else {
                format!(
                    "accepted with {} warning(s): {}",
                    warnings.len(),
                    warnings.join("; ")
                )
            },
            generation,
        )
    } else {
        let all: Vec<String> = ctx.verdict.findings.iter().map(|f| f.to_string()).collect();
        condition(
            ACCEPTED,
            "False",
            "Rejected",
            format!(
                "rejected by {} lint finding(s), not loaded on any node: {}",
                all.len(),
                all.join("; ")
            ),
            generation,
        )
    };

    let loaded_cond = if !accepted {
        condition(
            LOADED,
            "False",
            "Rejected",
            "the policy was rejected by validation".into(),
            generation,
        )
    } else if total == 0 {
        condition(
            LOADED,
            "False",
            "NoNodes",
            "no node has reported yet (is the bulwark DaemonSet running?)".into(),
            generation,
        )
    } else if loaded == total {
        condition(
            LOADED,
            "True",
            "LoadedOnAllNodes",
            format!("in force on {loaded} node(s)"),
            generation,
        )
    } else {
        // Name a bounded number of nodes; the counts say the rest.
        let shown = MAX_FAILED_NODES;
        let mut parts: Vec<String> = failed
            .iter()
            .take(shown)
            .map(|(n, e)| format!("{n}: {}", truncate(e, MAX_NODE_REASON)))
            .collect();
        if failed.len() > shown {
            parts.push(format!("and {} more failed", failed.len() - shown));
        }
        let gen_text = generation
            .map(|g| g.to_string())
            .unwrap_or_else(|| "?".into());
        parts.extend(
            pending
                .iter()
                .take(shown)
                .map(|n| format!("{n}: has not loaded generation {gen_text} yet")),
        );
        if pending.len() > shown {
            parts.push(format!(
                "and {} more have not loaded it yet",
                pending.len() - shown
            ));
        }
        condition(
            LOADED,
            "False",
            if loaded == 0 {
                "NotLoaded"
            } else {
                "PartiallyLoaded"
            },
            format!(
                "loaded on {loaded} of {total} node(s), {} failed, {} pending; {}",
                failed.len(),
                pending.len(),
                parts.join("; ")
            ),
            generation,
        )
    };

    let desired = PolicyStatus {
        observed_generation: generation,
        state: Some(
            if accepted {
                STATE_ACCEPTED
            } else {
                STATE_REJECTED
            }
            .into(),
        ),
        nodes: Some(nodes),
        node_counts: Some(counts),
        conditions: vec![
            keep_transition_time(accepted_cond, &current.conditions, ctx.now),
            keep_transition_time(loaded_cond, &current.conditions, ctx.now),
        ],
        failed_nodes,
        failed_nodes_omitted: (omitted > 0).then_some(omitted as i64),
    };

    if up_to_date(&current, &desired) {
        Action::NoChange
    } else {
        Action::ApplyStatus(desired)
    }
}

pub(crate) fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> StatusCondition {
    StatusCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(truncate(&message, MAX_MESSAGE)),
        observed_generation: generation,
        last_transition_time: None,
    }
}

/// `lastTransitionTime` changes only when the condition's status does.
pub(crate) fn keep_transition_time(
    mut c: StatusCondition,
    current: &[StatusCondition],
    now: &str,
) -> StatusCondition {
    c.last_transition_time = match current.iter().find(|o| o.type_ == c.type_) {
        Some(old) if old.status == c.status && old.last_transition_time.is_some() => {
            old.last_transition_time.clone()
        }
        _ => Some(now.to_string()),
    };
    c
}

pub(crate) fn same_condition(a: &StatusCondition, b: &StatusCondition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

/// True when every field of the status already has the desired value.
fn up_to_date(current: &PolicyStatus, desired: &PolicyStatus) -> bool {
    current.observed_generation == desired.observed_generation
        && current.state == desired.state
        && current.nodes == desired.nodes
        && current.node_counts == desired.node_counts
        && current.failed_nodes == desired.failed_nodes
        && current.failed_nodes_omitted == desired.failed_nodes_omitted
        && current.conditions.len() == desired.conditions.len()
        && desired.conditions.iter().all(|d| {
            current
                .conditions
                .iter()
                .any(|c| same_condition(c, d) && c.last_transition_time.is_some())
        })
}

/// `s` cut to at most `max` bytes (on a character boundary) with `…` appended when cut: API
/// object fields have size limits.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Finding;
    use crate::PolicyKind;

    fn obj(generation: i64, status: Option<PolicyStatus>) -> PolicyObject {
        PolicyObject {
            key: PolicyKey {
                kind: PolicyKind::Cluster,
                namespace: None,
                name: "p".into(),
            },
            generation: Some(generation),
            status,
        }
    }

    fn ok() -> Verdict {
        Verdict::default()
    }

    fn bad() -> Verdict {
        Verdict {
            findings: vec![
                Finding {
                    code: "BW050".into(),
                    error: true,
                    message: "`10.0.0.0/33` is not a CIDR".into(),
                    hint: Some("prefix length is at most 32".into()),
                    path: Some("spec.rules[0].selectors[0].matchDestinations[0].cidrs[0]".into()),
                },
                Finding {
                    code: "BW042".into(),
                    error: false,
                    message: "selector has no conditions".into(),
                    hint: None,
                    path: None,
                },
            ],
        }
    }

    /// One node, `node-a`, that reported `view`.
    fn one<'a>(view: NodeView<'a>) -> Vec<(&'a str, NodeView<'a>)> {
        vec![("node-a", view)]
    }

    fn loaded_at(generation: i64) -> NodeView<'static> {
        NodeView::Reported {
            generation: Some(generation),
            error: None,
        }
    }

    fn ctx<'a>(verdict: &'a Verdict, nodes: &'a [(&'a str, NodeView<'a>)]) -> ReconcileContext<'a> {
        ReconcileContext {
            verdict,
            nodes,
            now: "2026-11-22T03:00:00Z",
        }
    }

    fn applied(a: Action) -> PolicyStatus {
        match a {
            Action::ApplyStatus(s) => s,
            Action::NoChange => panic!("expected a status write"),
        }
    }

    fn cond<'a>(s: &'a PolicyStatus, t: &str) -> &'a StatusCondition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn new_accepted_and_loaded_policy_gets_full_status() {
        let v = ok();
        let nodes = one(loaded_at(3));
        let s = applied(reconcile(&obj(3, None), &ctx(&v, &nodes)));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.state.as_deref(), Some("Accepted"));
        assert_eq!(s.nodes.as_deref(), Some("1/1"));
        assert_eq!(cond(&s, ACCEPTED).status, "True");
        assert_eq!(cond(&s, LOADED).status, "True");
        assert_eq!(cond(&s, LOADED).observed_generation, Some(3));
        assert_eq!(
            s.node_counts,
            Some(NodeCounts {
                total: 1,
                loaded: 1,
                failed: 0,
                pending: 0
            })
        );
        assert!(s.failed_nodes.is_empty());
        assert_eq!(s.failed_nodes_omitted, None);
        assert_eq!(
            cond(&s, ACCEPTED).last_transition_time.as_deref(),
            Some("2026-11-22T03:00:00Z")
        );
    }

    #[test]
    fn status_already_written_means_no_change_and_new_generation_means_write() {
        let v = ok();
        let nodes = one(loaded_at(3));
        let s = applied(reconcile(&obj(3, None), &ctx(&v, &nodes)));
        let mut later = ctx(&v, &nodes);
        later.now = "2026-11-22T04:00:00Z";
        assert_eq!(
            reconcile(&obj(3, Some(s.clone())), &later),
            Action::NoChange
        );
        let s4 = applied(reconcile(&obj(4, Some(s)), &later));
        assert_eq!(s4.observed_generation, Some(4));
        // The node has not acted on generation 4 yet.
        assert_eq!(s4.nodes.as_deref(), Some("0/1"));
        assert_eq!(s4.node_counts.as_ref().unwrap().pending, 1);
        // Status did not flip, so the transition time is kept.
        assert_eq!(
            cond(&s4, ACCEPTED).last_transition_time.as_deref(),
            Some("2026-11-22T03:00:00Z")
        );
    }

    #[test]
    fn rejected_policy_carries_every_diagnostic() {
        let v = bad();
        let nodes = one(NodeView::Unreported);
        let s = applied(reconcile(&obj(1, None), &ctx(&v, &nodes)));
        assert_eq!(s.state.as_deref(), Some("Rejected"));
        let c = cond(&s, ACCEPTED);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("Rejected"));
        let m = c.message.as_deref().unwrap();
        assert!(
            m.contains("error BW050 at spec.rules[0].selectors[0].matchDestinations[0].cidrs[0]"),
            "{m}"
        );
        assert!(m.contains("hint: prefix length is at most 32"), "{m}");
        assert!(m.contains("warning BW042"), "{m}");
        assert_eq!(cond(&s, LOADED).status, "False");
        assert_eq!(s.nodes.as_deref(), Some("0/1"));
        // Not a node failure: no node is listed as failing.
        assert!(s.failed_nodes.is_empty());
        assert_eq!(s.node_counts.as_ref().unwrap().failed, 0);
    }

    #[test]
    fn accepted_with_warnings_says_so() {
        let mut v = bad();
        v.findings.remove(0);
        let nodes = one(loaded_at(1));
        let s = applied(reconcile(&obj(1, None), &ctx(&v, &nodes)));
        assert_eq!(cond(&s, ACCEPTED).status, "True");
        assert!(cond(&s, ACCEPTED)
            .message
            .as_deref()
            .unwrap()
            .contains("1 warning(s)"));
    }

    #[test]
    fn node_load_failure_is_reported_with_the_reason() {
        let v = ok();
        let nodes = one(NodeView::Reported {
            generation: Some(2),
            error: Some("needs 70 selectors, the kernel holds 64"),
        });
        let s = applied(reconcile(&obj(2, None), &ctx(&v, &nodes)));
        assert_eq!(s.state.as_deref(), Some("Accepted"));
        assert_eq!(s.nodes.as_deref(), Some("0/1"));
        let c = cond(&s, LOADED);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("NotLoaded"));
        assert!(c
            .message
            .as_deref()
            .unwrap()
            .contains("node-a: needs 70 selectors"));
        assert_eq!(s.failed_nodes.len(), 1);
        assert_eq!(s.failed_nodes[0].node, "node-a");
        assert_eq!(s.failed_nodes[0].state, "Failed");
        assert_eq!(s.failed_nodes[0].observed_generation, Some(2));
        assert_eq!(
            s.failed_nodes[0].reason.as_deref(),
            Some("needs 70 selectors, the kernel holds 64")
        );
        assert_eq!(s.node_counts.as_ref().unwrap().failed, 1);
    }

    #[test]
    fn other_nodes_count_and_stale_generations_are_pending() {
        let v = ok();
        let nodes = vec![
            ("node-a", loaded_at(5)),
            ("node-b", loaded_at(5)),
            ("node-c", loaded_at(4)),
            ("node-d", NodeView::Unreported),
        ];
        let s = applied(reconcile(&obj(5, None), &ctx(&v, &nodes)));
        assert_eq!(s.nodes.as_deref(), Some("2/4"));
        assert_eq!(
            s.node_counts,
            Some(NodeCounts {
                total: 4,
                loaded: 2,
                failed: 0,
                pending: 2
            })
        );
        let c = cond(&s, LOADED);
        assert_eq!(c.reason.as_deref(), Some("PartiallyLoaded"));
        let m = c.message.as_deref().unwrap();
        assert!(m.contains("node-c: has not loaded generation 5 yet"), "{m}");
        assert!(m.contains("node-d: has not loaded generation 5 yet"), "{m}");
        // Pending nodes are not failing nodes.
        assert!(s.failed_nodes.is_empty());
    }

    #[test]
    fn another_node_joining_changes_the_count_and_triggers_a_write() {
        let v = ok();
        let nodes = one(loaded_at(1));
        let s = applied(reconcile(&obj(1, None), &ctx(&v, &nodes)));
        assert_eq!(
            reconcile(&obj(1, Some(s.clone())), &ctx(&v, &nodes)),
            Action::NoChange
        );
        let two = vec![("node-a", loaded_at(1)), ("node-b", loaded_at(1))];
        let s2 = applied(reconcile(&obj(1, Some(s)), &ctx(&v, &two)));
        assert_eq!(s2.nodes.as_deref(), Some("2/2"));
    }

    #[test]
    fn no_nodes_is_not_loaded() {
        let v = ok();
        let s = applied(reconcile(&obj(1, None), &ctx(&v, &[])));
        assert_eq!(s.nodes.as_deref(), Some("0/0"));
        assert_eq!(cond(&s, LOADED).status, "False");
        assert_eq!(cond(&s, LOADED).reason.as_deref(), Some("NoNodes"));
    }

    #[test]
    fn status_stays_bounded_when_every_one_of_5000_nodes_fails() {
        let v = ok();
        let reason = "needs 1100 selectors, the kernel maps hold 1024 (BW092): ".repeat(20);
        let names: Vec<String> = (0..5000).map(|i| format!("node-{i:05}")).collect();
        let nodes: Vec<(&str, NodeView)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let view = match i % 5 {
                    0 => NodeView::Unreported,
                    1 => loaded_at(7),
                    _ => NodeView::Reported {
                        generation: Some(7),
                        error: Some(reason.as_str()),
                    },
                };
                (n.as_str(), view)
            })
            .collect();
        let s = applied(reconcile(&obj(7, None), &ctx(&v, &nodes)));
        assert_eq!(
            s.node_counts,
            Some(NodeCounts {
                total: 5000,
                loaded: 1000,
                failed: 3000,
                pending: 1000
            })
        );
        assert_eq!(s.nodes.as_deref(), Some("1000/5000"));
        assert_eq!(s.failed_nodes.len(), MAX_FAILED_NODES);
        assert_eq!(s.failed_nodes[0].node, "node-00002", "sorted by name");
        assert_eq!(s.failed_nodes_omitted, Some(3000 - MAX_FAILED_NODES as i64));
        assert!(s.failed_nodes[0].reason.as_deref().unwrap().len() <= MAX_NODE_REASON + 4);
        let bytes = serde_json::to_vec(&s).unwrap().len();
        assert!(bytes < 24 * 1024, "status is {bytes} bytes at 5000 nodes");
        let m = cond(&s, LOADED).message.as_deref().unwrap();
        assert!(m.contains("and 2980 more failed"), "{m}");
        assert!(m.contains("and 980 more have not loaded it yet"), "{m}");
    }

    #[test]
    fn flip_to_rejected_moves_transition_time() {
        let good = ok();
        let nodes = one(loaded_at(1));
        let s = applied(reconcile(&obj(1, None), &ctx(&good, &nodes)));
        let badv = bad();
        let mut later = ctx(&badv, &nodes);
        later.now = "2026-11-22T05:00:00Z";
        let s2 = applied(reconcile(&obj(2, Some(s)), &later));
        assert_eq!(
            cond(&s2, ACCEPTED).last_transition_time.as_deref(),
            Some("2026-11-22T05:00:00Z")
        );
    }

    #[test]
    fn huge_messages_are_truncated() {
        let v = Verdict {
            findings: (0..2000)
                .map(|i| Finding {
                    code: "BW050".into(),
                    error: true,
                    message: format!("bad cidr number {i}"),
                    hint: None,
                    path: None,
                })
                .collect(),
        };
        let s = applied(reconcile(&obj(1, None), &ctx(&v, &[])));
        assert!(cond(&s, ACCEPTED).message.as_deref().unwrap().len() <= MAX_MESSAGE + 4);
    }
}
