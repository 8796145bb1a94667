//! The `EncryptedProtocol` objects of the cluster: a watch (untyped objects, so one malformed
//! object is reported, never stalls the list), each object judged by the checks `bulwark lint`
//! runs on a `--protocols` file (BW100-BW102, [`judge`]), the accepted ones put in force next to
//! the file's declarations ([`protocols_in_force`], handed to the node's
//! [`crate::ConnObservation`]) and each object's verdict written to its status
//! ([`desired_status`]).
//!
//! Status, bounded like the policies' (see [`crate::aggregate`]): the verdict does not depend
//! on the node, so there is one `Accepted` condition per object and one writer, the node that
//! holds the `bulwark-status` Lease (field manager [`STATUS_MANAGER`]). This module does not run
//! a second election: it reads the Lease, and only while a status is due, at most once per
//! Lease duration when another node holds it. A name a node's `--protocols` file also declares
//! stays the file's on that node (logged there, BW103), whatever the object's status says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_conns::{EncryptedProtocol, Signature, Signatures};
use bulwark_policy::diagnostics::codes;
use bulwark_policy::model::StatusCondition;
use bulwark_policy::protocol::{diagnostic, EncryptedProtocolStatus};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::Notify;

use crate::aggregate::{lease_expired, LEASE_NAME, STATUS_MANAGER};
use crate::in_force::{PROTOCOL_FILE, PROTOCOL_KUBERNETES};
use crate::options::ConnConfig;
use crate::reconcile::{condition, keep_transition_time, same_condition};
use crate::validate::Finding;
use crate::watch_store::WatchStore;
use crate::ControllerOptions;

/// Condition type and `state` values.
pub const ACCEPTED: &str = "Accepted";
pub const STATE_ACCEPTED: &str = "Accepted";
pub const STATE_REJECTED: &str = "Rejected";

/// One object as the watch saw it.
#[derive(Clone, Debug)]
pub struct ProtocolObject {
    pub name: String,
    pub generation: Option<i64>,
    pub status: Option<EncryptedProtocolStatus>,
    /// The declaration, or why the object cannot be read as one.
    pub declaration: Result<EncryptedProtocol, String>,
}

/// Reads an untyped object. Never fails: an unreadable one comes back with the reason.
pub fn parse_object(obj: &DynamicObject) -> ProtocolObject {
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let declaration = serde_json::to_value(obj)
        .and_then(serde_json::from_value::<EncryptedProtocol>)
        .map_err(|e| format!("the object cannot be read as an EncryptedProtocol: {e}"));
    ProtocolObject {
        name: obj.metadata.name.clone().unwrap_or_default(),
        generation: obj.metadata.generation,
        status,
        declaration,
    }
}

/// The lint's verdict on one object: its compiled signature, or every finding.
pub fn judge(p: &ProtocolObject) -> Result<Signature, Vec<Finding>> {
    let decl = p.declaration.as_ref().map_err(|e| {
        vec![Finding {
            code: codes::WRONG_TYPE.id.into(),
            error: true,
            message: e.clone(),
            hint: Some("run `bulwark lint` on the manifest".into()),
            path: None,
        }]
    })?;
    Signature::from_declaration(decl)
        .map_err(|errs| errs.iter().map(|e| Finding::from(diagnostic(e))).collect())
}

/// What is in force on this node: the file's declarations plus the accepted objects whose name
/// the file does not declare; each name with its source; the names the file shadows.
pub fn protocols_in_force(
    file: &Signatures,
    accepted: Vec<Signature>,
) -> (Signatures, Vec<(String, &'static str)>, Vec<String>) {
    let mut shadowed = Vec::new();
    let mut all: Vec<Signature> = file.iter().cloned().collect();
    for s in accepted {
        if file.iter().any(|f| f.name() == s.name()) {
            shadowed.push(s.name().to_string());
        } else {
            all.push(s);
        }
    }
    let set = Signatures::new(all);
    let sources = set
        .iter()
        .map(|s| {
            let from_file = file.iter().any(|f| f.name() == s.name());
            let source = if from_file {
                PROTOCOL_FILE
            } else {
                PROTOCOL_KUBERNETES
            };
            (s.name().to_string(), source)
        })
        .collect();
    (set, sources, shadowed)
}

/// The status `p` should have given its verdict, or `None` when `current` already says it.
pub fn desired_status(
    p: &ProtocolObject,
    verdict: &Result<Signature, Vec<Finding>>,
    current: Option<&EncryptedProtocolStatus>,
    now: &str,
) -> Option<EncryptedProtocolStatus> {
    let (state, cond) = match verdict {
        Ok(_) => (
            STATE_ACCEPTED,
            condition(
                ACCEPTED,
                "True",
                "Valid",
                "the declaration passed every lint check; connections whose first payload \
                 carries the signature are classified under this name, encrypted, on every node \
                 (a node whose --protocols file declares the same name keeps the file's)"
                    .into(),
                p.generation,
            ),
        ),
        Err(findings) => {
            let all: Vec<String> = findings.iter().map(Finding::to_string).collect();
            (
                STATE_REJECTED,
                condition(
                    ACCEPTED,
                    "False",
                    "Rejected",
                    format!(
                        "rejected by {} lint finding(s), not in force on any node: {}",
                        all.len(),
                        all.join("; ")
                    ),
                    p.generation,
                ),
            )
        }
    };
    let old = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let cond = keep_transition_time(cond, old, now);
    let up_to_date = current.is_some_and(|s| {
        s.state.as_deref() == Some(state)
            && s.observed_generation == p.generation
            && s.conditions.len() == 1
            && same_condition(&s.conditions[0], &cond)
            && s.conditions[0].last_transition_time.is_some()
    });
    (!up_to_date).then(|| EncryptedProtocolStatus {
        state: Some(state.into()),
        observed_generation: p.generation,
        conditions: vec![cond],
    })
}

/// Whether this node holds the status Lease, read (not contended) and remembered: while it is
/// ours for a third of its duration, while another node's for its whole duration.
struct LeaseReader {
    api: Api<Lease>,
    node: String,
    duration: Duration,
    known: Option<(bool, Instant)>,
}

impl LeaseReader {
    async fn held(&mut self) -> bool {
        if let Some((held, until)) = self.known {
            if Instant::now() < until {
                return held;
            }
        }
        let held = match crate::timed(self.api.get_opt(LEASE_NAME)).await {
            Ok(Some(lease)) => lease.spec.as_ref().is_some_and(|s| {
                s.holder_identity.as_deref() == Some(self.node.as_str())
                    && !lease_expired(s, jiff::Timestamp::now())
            }),
            Ok(None) => false,
            Err(e) => {
                log::debug!("reading the {LEASE_NAME} Lease: {e}");
                false
            }
        };
        let keep = if held {
            self.duration / 3
        } else {
            self.duration
        };
        self.known = Some((held, Instant::now() + keep));
        held
    }
}

/// Run forever: keep the observation's declared protocols equal to [`protocols_in_force`] of
/// the file's and the accepted objects, and, on the Lease holder, each object's status.
pub async fn run(
    client: Client,
    node: String,
    cfg: ConnConfig,
    opts: ControllerOptions,
) -> crate::Result<()> {
    let ar = ApiResource::erase::<EncryptedProtocol>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let notify = Arc::new(Notify::new());
    let store = WatchStore::spawn(
        api.clone(),
        watcher::Config::default(),
        notify.clone(),
        "encryptedprotocols.bulwark.dev".into(),
    );
    let mut lease = LeaseReader {
        api: Api::namespaced(client, &opts.host_namespace),
        node: node.clone(),
        duration: opts.lease_duration,
        known: None,
    };
    // What this node wrote recently (the watch may not have brought it back yet).
    let mut written: HashMap<String, (EncryptedProtocolStatus, Instant)> = HashMap::new();
    let mut sent: Option<Signatures> = None;
    let mut shadowed_logged: Vec<String> = Vec::new();
    let mut next_audit = Instant::now() + opts.resync_interval;
    let mut wait = opts.resync_interval;
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Coalesce bursts (status writes come back as watch events).
        tokio::time::sleep(Duration::from_millis(150)).await;
        wait = opts.resync_interval;
        if Instant::now() >= next_audit {
            next_audit = Instant::now() + opts.resync_interval;
            if let Ok(true) = store.audit().await {
                log::warn!("the watch of EncryptedProtocols was out of sync with the API server; re-listed");
                written.clear();
            }
        }
        if !store.is_ready() {
            continue;
        }
        let objects: Vec<ProtocolObject> = store.state().iter().map(|o| parse_object(o)).collect();
        let verdicts: Vec<Result<Signature, Vec<Finding>>> = objects.iter().map(judge).collect();
        let accepted = verdicts
            .iter()
            .filter_map(|v| v.as_ref().ok().cloned())
            .collect();
        let (set, sources, shadowed) = protocols_in_force(&cfg.protocols, accepted);
        if shadowed != shadowed_logged {
            for name in &shadowed {
                log::warn!(
                    "{}: EncryptedProtocol {name} is also declared in this node's --protocols file; the file's declaration stays in force on node {node}",
                    codes::DUPLICATE_PROTOCOL.id
                );
            }
            shadowed_logged = shadowed;
        }
        if sent.as_ref() != Some(&set) {
            let names: Vec<String> = sources.iter().map(|(n, s)| format!("{n} ({s})")).collect();
            log::info!(
                "declared encrypted protocols in force on node {node}: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            for (p, v) in objects.iter().zip(&verdicts) {
                if let Err(findings) = v {
                    let all: Vec<String> = findings.iter().map(Finding::to_string).collect();
                    log::warn!("EncryptedProtocol {} rejected: {}", p.name, all.join("; "));
                }
            }
            opts.stats.in_force.set_protocols(sources);
            cfg.observation.set_declared_protocols(set.clone());
            sent = Some(set);
        }

        let now = Instant::now();
        let stamp = jiff::Timestamp::now().to_string();
        written.retain(|name, (_, at)| {
            objects.iter().any(|p| &p.name == name)
                && now.saturating_duration_since(*at) < opts.resync_interval
        });
        let due: Vec<(String, EncryptedProtocolStatus)> = objects
            .iter()
            .zip(&verdicts)
            .filter_map(|(p, v)| {
                let current = written.get(&p.name).map(|(s, _)| s).or(p.status.as_ref());
                desired_status(p, v, current, &stamp).map(|s| (p.name.clone(), s))
            })
            .collect();
        if due.is_empty() || !lease.held().await {
            if !due.is_empty() {
                // Another node writes them; look again once the Lease could have changed hands.
                wait = opts.lease_duration;
            }
            continue;
        }
        for (name, status) in due {
            let body = serde_json::json!({
                "apiVersion": ar.api_version,
                "kind": ar.kind,
                "metadata": { "name": name },
                "status": status,
            });
            let params = PatchParams::apply(STATUS_MANAGER).force();
            match crate::timed(api.patch_status(&name, &params, &Patch::Apply(&body))).await {
                Ok(_) => {
                    opts.stats
                        .status_writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    written.insert(name, (status, Instant::now()));
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    log::debug!(
                        "EncryptedProtocol {name} was deleted while its status was being written"
                    );
                }
                Err(e) => {
                    opts.stats
                        .api_write_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log::warn!(
                        "writing the status of EncryptedProtocol {name} failed (will retry): {e}"
                    );
                    wait = Duration::from_secs(2);
                }
            }
        }
    }
}

/// The `Accepted` condition of a status, for readers (tests, `kubectl` users read the YAML).
pub fn accepted_condition(status: &EncryptedProtocolStatus) -> Option<&StatusCondition> {
    status.conditions.iter().find(|c| c.type_ == ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, signature: &str, offset: u32, mask: Option<&str>) -> ProtocolObject {
        let mut d = EncryptedProtocol::declare(name, signature, offset, mask);
        d.metadata.generation = Some(3);
        parse_object(&serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap())
    }

    #[test]
    fn objects_are_judged_by_the_lints_checks_with_its_messages() {
        let good = object("acme-tunnel", "ac 3e", 2, None);
        assert_eq!(good.generation, Some(3));
        let sig = judge(&good).unwrap();
        assert!(sig.matches(&[0, 0, 0xac, 0x3e]));
        let bad = object("acme", "ac 3e", 0, Some("ff"));
        let findings = judge(&bad).unwrap_err();
        let want = bulwark_policy::protocol::SignatureError::MaskLength {
            signature: 2,
            mask: 1,
        };
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].code, "BW100");
        assert_eq!(findings[0].message, want.to_string());
        assert_eq!(findings[0].path.as_deref(), Some("spec.mask"));
        let beyond = judge(&object("far", "01 02", 255, None)).unwrap_err();
        assert_eq!(beyond[0].code, "BW101");
        let unreadable: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "EncryptedProtocol",
            "metadata": {"name": "x"}, "spec": {"signature": 7}
        }))
        .unwrap();
        let f = judge(&parse_object(&unreadable)).unwrap_err();
        assert_eq!(f[0].code, "BW021");
        assert!(f[0].message.contains("cannot be read"), "{}", f[0].message);
    }

    #[test]
    fn the_file_and_the_accepted_objects_are_in_force_and_the_file_wins_a_name() {
        let file = Signatures::new(vec![
            Signature::new("shared", 0, vec![1], None).unwrap(),
            Signature::new("from-file", 0, vec![2], None).unwrap(),
        ]);
        let accepted = vec![
            Signature::new("shared", 0, vec![9], None).unwrap(),
            Signature::new("acme", 0, vec![3], None).unwrap(),
        ];
        let (set, sources, shadowed) = protocols_in_force(&file, accepted);
        assert_eq!(shadowed, ["shared"]);
        assert_eq!(set.matching(&[1]), Some("shared"));
        assert_eq!(set.matching(&[9]), None);
        assert_eq!(set.matching(&[3]), Some("acme"));
        assert_eq!(
            sources,
            [
                ("acme".to_string(), PROTOCOL_KUBERNETES),
                ("from-file".to_string(), PROTOCOL_FILE),
                ("shared".to_string(), PROTOCOL_FILE),
            ]
        );
        let (none, sources, _) = protocols_in_force(&Signatures::default(), Vec::new());
        assert!(none.is_empty() && sources.is_empty());
    }

    #[test]
    fn status_says_the_verdict_once_and_keeps_its_transition_time() {
        let bad = object("acme", "ac 3e", 0, Some("00 00"));
        let verdict = judge(&bad);
        let s = desired_status(&bad, &verdict, None, "t1").unwrap();
        assert_eq!(s.state.as_deref(), Some(STATE_REJECTED));
        assert_eq!(s.observed_generation, Some(3));
        let c = accepted_condition(&s).unwrap();
        assert_eq!(c.status, "False");
        let msg = c.message.as_deref().unwrap();
        assert!(
            msg.contains("error BW100 at spec.mask: mask is all zero"),
            "{msg}"
        );
        assert_eq!(c.last_transition_time.as_deref(), Some("t1"));
        // Written: nothing more to do.
        assert_eq!(desired_status(&bad, &verdict, Some(&s), "t2"), None);
        // Fixed: accepted, with a new transition time.
        let good = object("acme", "ac 3e", 0, Some("ff f0"));
        let s2 = desired_status(&good, &judge(&good), Some(&s), "t3").unwrap();
        assert_eq!(s2.state.as_deref(), Some(STATE_ACCEPTED));
        let c2 = accepted_condition(&s2).unwrap();
        assert_eq!(
            (c2.status.as_str(), c2.last_transition_time.as_deref()),
            ("True", Some("t3"))
        );
    }
}
