//! The daemon's side of `bulwark run --kubernetes`: adapters that let the Kubernetes controller
//! (crate `bulwark-controller`, on its own thread) drive the daemon's main loop without a second
//! loader. [`EngineBridge`] is the controller's [`PolicyEngine`]: each accepted policy set is
//! sent to the main loop as a [`Request::ApplySet`] (validated, compiled and swapped into the
//! kernel's inactive slot there, like a policy-directory reload, with the same status events)
//! and the per-policy outcome goes back as [`PolicyLoadResult`]s (the typed outcome worded for
//! policy status here). [`RegistryBridge`] is its
//! [`WorkloadRegistry`]: Pod identities become [`Request::AddWorkload`] /
//! [`Request::RemoveWorkload`]. [`ObservationBridge`] is its [`ConnObservation`]: the declared
//! protocols and cluster CIDRs in force become [`Request::DeclaredProtocols`] /
//! [`Request::ClusterCidrs`].

use crate::pipeline::daemon::{Request, SetOutcome};
use bulwark_conns::{ClusterCidrs, Signatures};
use bulwark_controller::{
    ConnObservation, PolicyEngine, PolicyKey, PolicyLoadResult, Workload, WorkloadRegistry,
};
use bulwark_policy::AnyPolicy;
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

/// How long the controller waits for the main loop to apply a set before reporting a failure
/// (and retrying with backoff). The loop serves requests every ~100 ms; an apply takes
/// milliseconds.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The controller's [`PolicyEngine`], backed by the daemon's main loop.
pub struct EngineBridge {
    tx: Sender<Request<AnyPolicy>>,
    timeout: Duration,
}

impl EngineBridge {
    pub fn new(tx: Sender<Request<AnyPolicy>>) -> Self {
        EngineBridge {
            tx,
            timeout: APPLY_TIMEOUT,
        }
    }
}

/// The main loop's per-policy outcome as the controller reports it.
fn load_results(
    policies: &[AnyPolicy],
    outcome: SetOutcome,
) -> Result<Vec<PolicyLoadResult>, String> {
    let per_policy = outcome.map_err(|e| e.to_string())?;
    Ok(policies
        .iter()
        .zip(per_policy)
        .map(|(p, result)| PolicyLoadResult {
            key: PolicyKey::of(p),
            result: result.map_err(|left_out| left_out.to_string()),
        })
        .collect())
}

impl PolicyEngine for EngineBridge {
    fn apply(&self, policies: Vec<AnyPolicy>) -> Result<Vec<PolicyLoadResult>, String> {
        let (reply, answer) = channel();
        let keep = policies.clone();
        self.tx
            .send(Request::ApplySet { policies, reply })
            .map_err(|_| "the daemon is shutting down; nothing was applied".to_string())?;
        match answer.recv_timeout(self.timeout) {
            Ok(outcome) => load_results(&keep, outcome),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "the daemon's main loop did not apply the set within {:?}",
                self.timeout
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err("the daemon is shutting down; nothing was applied".to_string())
            }
        }
    }
}

/// The controller's [`WorkloadRegistry`], backed by the daemon's main loop.
pub struct RegistryBridge {
    tx: Sender<Request<AnyPolicy>>,
}

impl RegistryBridge {
    pub fn new(tx: Sender<Request<AnyPolicy>>) -> Self {
        RegistryBridge { tx }
    }
}

impl WorkloadRegistry for RegistryBridge {
    fn upsert(&self, cgroup_id: u64, w: Workload) {
        // A closed channel means the daemon is stopping: nothing left to register.
        let _ = self.tx.send(Request::AddWorkload {
            cgroup_id,
            pod: w.pod,
        });
    }

    fn remove(&self, cgroup_id: u64) {
        let _ = self.tx.send(Request::RemoveWorkload { cgroup_id });
    }
}

/// The controller's [`ConnObservation`], backed by the daemon's main loop.
pub struct ObservationBridge {
    tx: Sender<Request<AnyPolicy>>,
}

impl ObservationBridge {
    pub fn new(tx: Sender<Request<AnyPolicy>>) -> Self {
        ObservationBridge { tx }
    }
}

impl ConnObservation for ObservationBridge {
    fn set_cluster_cidrs(&self, cidrs: ClusterCidrs) {
        // A closed channel means the daemon is stopping: nothing left to classify.
        let _ = self.tx.send(Request::ClusterCidrs(cidrs));
    }

    fn set_declared_protocols(&self, protocols: Signatures) {
        let _ = self.tx.send(Request::DeclaredProtocols(protocols));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::daemon::{LeftOut, SetError};

    fn policies() -> Vec<AnyPolicy> {
        let src = "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {name: a}\n\
                   spec:\n  rules:\n  - name: r\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/x]\n      matchActions:\n      - action: Post\n\
                   ---\napiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicyNamespaced\nmetadata: {name: b, namespace: web}\n\
                   spec:\n  rules:\n  - name: r\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/y]\n      matchActions:\n      - action: Post\n";
        let lint = bulwark_policy::lint_source("t.yaml", src);
        assert_eq!(lint.errors(), 0, "{:?}", lint.diagnostics);
        assert_eq!(lint.policies.len(), 2);
        lint.policies
    }

    #[test]
    fn apply_round_trips_through_the_main_loop() {
        let (tx, rx) = channel::<Request<AnyPolicy>>();
        let loop_thread = std::thread::spawn(move || {
            // Answer two requests: one with a per-policy failure, one failing as a whole.
            for outcome in [
                Ok(vec![
                    Ok(()),
                    Err(LeftOut {
                        why: "too big".to_string(),
                    }),
                ]),
                Err(SetError::KernelRefused {
                    why: "kernel said no".to_string(),
                }),
            ] {
                match rx.recv().unwrap() {
                    Request::ApplySet { policies, reply } => {
                        assert_eq!(policies.len(), 2);
                        reply.send(outcome).unwrap();
                    }
                    _ => panic!("expected an ApplySet"),
                }
            }
        });
        let bridge = EngineBridge::new(tx);
        let res = bridge.apply(policies()).unwrap();
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].key.name, "a");
        assert_eq!(res[0].result, Ok(()));
        assert_eq!(res[1].key.namespace.as_deref(), Some("web"));
        assert_eq!(
            res[1].result,
            Err("rejected on this node: too big".to_string())
        );
        assert_eq!(
            bridge.apply(policies()).unwrap_err(),
            "the kernel refused the new rule set: kernel said no; the previous set stays in force"
        );
        loop_thread.join().unwrap();
        // The loop is gone: a clear error, no hang.
        let err = bridge.apply(policies()).unwrap_err();
        assert!(err.contains("shutting down"), "{err}");
    }

    #[test]
    fn a_stuck_main_loop_times_out() {
        let (tx, rx) = channel::<Request<AnyPolicy>>();
        let bridge = EngineBridge {
            tx,
            timeout: Duration::from_millis(50),
        };
        let err = bridge.apply(policies()).unwrap_err();
        assert!(err.contains("did not apply the set"), "{err}");
        drop(rx);
    }

    #[test]
    fn pods_become_workload_requests() {
        let (tx, rx) = channel::<Request<AnyPolicy>>();
        let reg = RegistryBridge::new(tx);
        reg.upsert(
            42,
            Workload {
                pod: bulwark_events::Pod {
                    namespace: "web".into(),
                    name: "api-1".into(),
                    container: "app".into(),
                    labels: [("app".to_string(), "api".to_string())].into(),
                },
                ..Workload::default()
            },
        );
        reg.remove(42);
        match rx.try_recv().unwrap() {
            Request::AddWorkload { cgroup_id, pod } => {
                assert_eq!(cgroup_id, 42);
                assert_eq!(pod.namespace, "web");
                assert_eq!(pod.name, "api-1");
                assert_eq!(pod.container, "app");
                assert_eq!(pod.labels["app"], "api");
            }
            _ => panic!("expected AddWorkload"),
        }
        assert!(matches!(
            rx.try_recv().unwrap(),
            Request::RemoveWorkload { cgroup_id: 42 }
        ));
        drop(rx);
        // The daemon gone: no panic.
        reg.remove(1);
    }
}
