//! The reconciler as a pure function: given one policy object as read from the API server and
//! what this node decided about it (lint verdict, engine load result), [`reconcile`] returns the
//! status this node should apply, or that nothing needs writing. No I/O here; the watch loop in
//! [`crate::policy_watch`] performs the action.
//!
//! Status ownership (server-side apply, one field manager per node): every node writes
//! `observedGeneration`, `state`, `nodes` and the `Accepted`/`Loaded` conditions (all nodes
//! compute the same values from the same object, so shared ownership is harmless) and its own
//! entry of `nodeStatus` (a list-map keyed by `node`, so entries of other nodes are untouched).
//! `nodes` (`loaded/total`) is computed from the entries of every node, so each node re-applies
//! when another node's entry changes the count; that converges because all nodes compute the same
//! text from the same list.

use bulwark_policy::model::{NodePolicyStatus, PolicyStatus, StatusCondition};

use crate::validate::Verdict;
use crate::PolicyKey;

/// Condition types.
pub const ACCEPTED: &str = "Accepted";
pub const LOADED: &str = "Loaded";
/// `state` values (the STATE printer column).
pub const STATE_ACCEPTED: &str = "Accepted";
pub const STATE_REJECTED: &str = "Rejected";
/// `nodeStatus[].state` values.
pub const NODE_LOADED: &str = "Loaded";
pub const NODE_FAILED: &str = "Failed";

/// Conditions carry at most this many bytes of message (the API server limit is 32 KiB).
const MAX_MESSAGE: usize = 8 * 1024;

/// One policy object as the watch saw it.
#[derive(Clone, Debug)]
pub struct PolicyObject {
    pub key: PolicyKey,
    pub generation: Option<i64>,
    /// Current status on the server (None if absent or unreadable).
    pub status: Option<PolicyStatus>,
}

/// What this node knows about the policy.
#[derive(Clone, Debug)]
pub struct ReconcileContext<'a> {
    pub node: &'a str,
    /// The lint verdict on the object (an unreadable object is a rejecting verdict).
    pub verdict: &'a Verdict,
    /// The engine's answer for this policy: `None` when it was not handed to the engine
    /// (rejected); `Some(Err)` when the node could not load it (or the whole apply failed).
    pub load: Option<&'a Result<(), String>>,
    /// RFC 3339 "now" for `lastTransitionTime` of changed conditions.
    pub now: &'a str,
}

/// What to do for the object.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The status on the server already says what this node would write.
    NoChange,
    /// Server-side apply this status (only the fields this node owns).
    ApplyStatus(PolicyStatus),
}

/// Decide the status this node should write for `obj`.
pub fn reconcile(obj: &PolicyObject, ctx: &ReconcileContext<'_>) -> Action {
    let current = obj.status.clone().unwrap_or_default();
    let generation = obj.generation;
    let accepted = ctx.verdict.accepted();

    // This node's entry.
    let own = NodePolicyStatus {
        node: ctx.node.to_string(),
        state: match (accepted, ctx.load) {
            (true, Some(Ok(()))) => NODE_LOADED.into(),
            _ => NODE_FAILED.into(),
        },
        reason: match (accepted, ctx.load) {
            (false, _) => Some("rejected by validation; see the Accepted condition".into()),
            (true, None) => Some("not handed to the engine yet".into()),
            (true, Some(Err(e))) => Some(truncate(e, 1024)),
            (true, Some(Ok(()))) => None,
        },
        observed_generation: generation,
    };

    // Every node's entry, ours replaced.
    let mut all: Vec<NodePolicyStatus> = current
        .node_status
        .iter()
        .filter(|n| n.node != ctx.node)
        .cloned()
        .collect();
    all.push(own.clone());
    all.sort_by(|a, b| a.node.cmp(&b.node));
    let is_loaded =
        |n: &NodePolicyStatus| n.state == NODE_LOADED && n.observed_generation == generation;
    let loaded = all.iter().filter(|n| is_loaded(n)).count();
    let nodes = format!("{loaded}/{}", all.len());

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
    } else if loaded == all.len() {
        condition(
            LOADED,
            "True",
            "LoadedOnAllNodes",
            format!("in force on {loaded} node(s)"),
            generation,
        )
    } else {
        let not: Vec<String> = all
            .iter()
            .filter(|n| !is_loaded(n))
            .map(|n| {
                let why = if n.observed_generation != generation {
                    format!(
                        "has not loaded generation {} yet",
                        generation
                            .map(|g| g.to_string())
                            .unwrap_or_else(|| "?".into())
                    )
                } else {
                    n.reason.clone().unwrap_or_else(|| "failed".into())
                };
                format!("{}: {why}", n.node)
            })
            .collect();
        condition(
            LOADED,
            "False",
            if loaded == 0 {
                "NotLoaded"
            } else {
                "PartiallyLoaded"
            },
            format!(
                "loaded on {loaded} of {} node(s); {}",
                all.len(),
                not.join("; ")
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
        conditions: vec![
            keep_transition_time(accepted_cond, &current.conditions, ctx.now),
            keep_transition_time(loaded_cond, &current.conditions, ctx.now),
        ],
        node_status: vec![own],
    };

    if up_to_date(&current, &desired, ctx.node) {
        Action::NoChange
    } else {
        Action::ApplyStatus(desired)
    }
}

fn condition(
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
fn keep_transition_time(
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

fn same_condition(a: &StatusCondition, b: &StatusCondition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

/// True when every field this node owns already has the desired value.
fn up_to_date(current: &PolicyStatus, desired: &PolicyStatus, node: &str) -> bool {
    current.observed_generation == desired.observed_generation
        && current.state == desired.state
        && current.nodes == desired.nodes
        && desired.conditions.iter().all(|d| {
            current
                .conditions
                .iter()
                .any(|c| same_condition(c, d) && c.last_transition_time.is_some())
        })
        && current.node_status.iter().find(|n| n.node == node) == desired.node_status.first()
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

    fn ctx<'a>(verdict: &'a Verdict, load: Option<&'a Result<(), String>>) -> ReconcileContext<'a> {
        ReconcileContext {
            node: "node-a",
            verdict,
            load,
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
        let load = Ok(());
        let s = applied(reconcile(&obj(3, None), &ctx(&v, Some(&load))));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.state.as_deref(), Some("Accepted"));
        assert_eq!(s.nodes.as_deref(), Some("1/1"));
        assert_eq!(cond(&s, ACCEPTED).status, "True");
        assert_eq!(cond(&s, LOADED).status, "True");
        assert_eq!(cond(&s, LOADED).observed_generation, Some(3));
        assert_eq!(s.node_status.len(), 1);
        assert_eq!(s.node_status[0].state, "Loaded");
        assert_eq!(s.node_status[0].observed_generation, Some(3));
        assert_eq!(
            cond(&s, ACCEPTED).last_transition_time.as_deref(),
            Some("2026-11-22T03:00:00Z")
        );
    }

    #[test]
    fn status_already_written_means_no_change_and_new_generation_means_write() {
        let v = ok();
        let load = Ok(());
        let s = applied(reconcile(&obj(3, None), &ctx(&v, Some(&load))));
        let mut later = ctx(&v, Some(&load));
        later.now = "2026-11-22T04:00:00Z";
        assert_eq!(
            reconcile(&obj(3, Some(s.clone())), &later),
            Action::NoChange
        );
        let s4 = applied(reconcile(&obj(4, Some(s)), &later));
        assert_eq!(s4.observed_generation, Some(4));
        // Status did not flip, so the transition time is kept.
        assert_eq!(
            cond(&s4, ACCEPTED).last_transition_time.as_deref(),
            Some("2026-11-22T03:00:00Z")
        );
    }

    #[test]
    fn rejected_policy_carries_every_diagnostic() {
        let v = bad();
        let s = applied(reconcile(&obj(1, None), &ctx(&v, None)));
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
        assert_eq!(s.node_status[0].state, "Failed");
    }

    #[test]
    fn accepted_with_warnings_says_so() {
        let mut v = bad();
        v.findings.remove(0);
        let load = Ok(());
        let s = applied(reconcile(&obj(1, None), &ctx(&v, Some(&load))));
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
        let load = Err("needs 70 selectors, the kernel holds 64".to_string());
        let s = applied(reconcile(&obj(2, None), &ctx(&v, Some(&load))));
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
        assert_eq!(
            s.node_status[0].reason.as_deref(),
            Some("needs 70 selectors, the kernel holds 64")
        );
    }

    #[test]
    fn other_nodes_count_and_stale_generations_are_pending() {
        let v = ok();
        let load = Ok(());
        let current = PolicyStatus {
            node_status: vec![
                NodePolicyStatus {
                    node: "node-b".into(),
                    state: "Loaded".into(),
                    reason: None,
                    observed_generation: Some(5),
                },
                NodePolicyStatus {
                    node: "node-c".into(),
                    state: "Loaded".into(),
                    reason: None,
                    observed_generation: Some(4),
                },
            ],
            ..Default::default()
        };
        let s = applied(reconcile(&obj(5, Some(current)), &ctx(&v, Some(&load))));
        assert_eq!(s.nodes.as_deref(), Some("2/3"));
        let c = cond(&s, LOADED);
        assert_eq!(c.reason.as_deref(), Some("PartiallyLoaded"));
        assert!(c
            .message
            .as_deref()
            .unwrap()
            .contains("node-c: has not loaded generation 5 yet"));
        // Only our own entry is written; the others belong to their nodes.
        assert_eq!(s.node_status.len(), 1);
        assert_eq!(s.node_status[0].node, "node-a");
    }

    #[test]
    fn another_node_joining_changes_the_count_and_triggers_a_write() {
        let v = ok();
        let load = Ok(());
        let mut s = applied(reconcile(&obj(1, None), &ctx(&v, Some(&load))));
        assert_eq!(
            reconcile(&obj(1, Some(s.clone())), &ctx(&v, Some(&load))),
            Action::NoChange
        );
        s.node_status.push(NodePolicyStatus {
            node: "node-b".into(),
            state: "Loaded".into(),
            reason: None,
            observed_generation: Some(1),
        });
        let s2 = applied(reconcile(&obj(1, Some(s)), &ctx(&v, Some(&load))));
        assert_eq!(s2.nodes.as_deref(), Some("2/2"));
    }

    #[test]
    fn flip_to_rejected_moves_transition_time() {
        let good = ok();
        let load = Ok(());
        let s = applied(reconcile(&obj(1, None), &ctx(&good, Some(&load))));
        let badv = bad();
        let mut later = ctx(&badv, None);
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
        let s = applied(reconcile(&obj(1, None), &ctx(&v, None)));
        assert!(cond(&s, ACCEPTED).message.as_deref().unwrap().len() <= MAX_MESSAGE + 4);
    }
}
