//! Helpers shared by the integration tests against the real CRD API server
//! (`tests/k8s/testenv`): kubectl, clients, a fake engine, polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_controller::{PolicyEngine, PolicyKey, PolicyLoadResult};
use bulwark_policy::model::{AnyPolicy, Mode};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The kubeconfig named by KUBECONFIG. Without it: panic under CI=true, else `None` (skip).
pub fn kubeconfig_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                !in_ci(),
                "{test}: KUBECONFIG is not set but CI=true: start the test server with \
                 `eval \"$(tests/k8s/testenv/up)\"` (or run tests/k8s/controller.sh)"
            );
            eprintln!("{test}: SKIPPED: KUBECONFIG is not set (run tests/k8s/controller.sh)");
            None
        }
    }
}

/// kubectl of the test kit.
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("K8S_TESTENV_BIN")
        .map(|b| PathBuf::from(b).join("kubectl"))
        .unwrap_or_else(|| PathBuf::from("/var/cache/k8s-testenv/bin/kubectl"))
}

/// Run kubectl against `kubeconfig`; returns (success, stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kubectl_path())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl_path().display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// kubectl that must succeed.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, out, err) = kubectl(kubeconfig, args);
    assert!(ok, "kubectl {} failed: {err}{out}", args.join(" "));
    out
}

/// The test server named by KUBECONFIG, made ready for `test`: test logging on, the CRDs
/// installed and Established, the nodes of earlier tests forgotten ([`forget_other_nodes`]).
/// `None` means skip, as [`kubeconfig_or_skip`] says.
pub fn test_server_or_skip(test: &str) -> Option<PathBuf> {
    let _ = env_logger::builder().is_test(true).try_init();
    let kc = kubeconfig_or_skip(test)?;
    install_crds(&kc);
    forget_other_nodes(&kc);
    Some(kc)
}

/// A loopback address whose port was free a moment ago (for a health endpoint).
pub fn free_local_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Apply crds/ and wait until they are Established.
pub fn install_crds(kubeconfig: &Path) {
    kubectl_ok(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", "crds/"],
    );
    for crd in [
        "tracingpolicies.bulwark.dev",
        "tracingpoliciesnamespaced.bulwark.dev",
        "policyviolations.bulwark.dev",
        "bulwarknodes.bulwark.dev",
        "encryptedprotocols.bulwark.dev",
    ] {
        kubectl_ok(
            kubeconfig,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ],
        );
    }
}

/// Forget the nodes of earlier tests on this server: their reports (which would count as live
/// nodes until their heartbeat ages past the TTL) and the status Lease (which a stopped
/// controller may still hold until it expires).
pub fn forget_other_nodes(kubeconfig: &Path) {
    kubectl_ok(
        kubeconfig,
        &["delete", "bulwarknodes", "--all", "--ignore-not-found"],
    );
    kubectl_ok(
        kubeconfig,
        &[
            "delete",
            "lease",
            "bulwark-status",
            "-n",
            "bulwark-system",
            "--ignore-not-found",
        ],
    );
}

/// A kube client for `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    kube::Client::try_from(cfg).expect("client")
}

/// An RFC 3339 time `secs` seconds after an anchor taken from the clock (one hour ago, whole
/// seconds), so "recent" events stay recent whatever day the tests run: violations carry
/// these, and the controller's expiry sweep compares them with the real clock.
pub fn recent(secs: i64) -> String {
    use std::sync::OnceLock;
    static ANCHOR: OnceLock<i64> = OnceLock::new();
    let anchor = *ANCHOR.get_or_init(|| jiff::Timestamp::now().as_second() - 3600);
    jiff::Timestamp::from_second(anchor + secs)
        .expect("in range")
        .to_string()
}

/// Poll `f` every 250 ms until it returns Some, or panic after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the fake engine saw in one apply.
#[derive(Clone, Debug)]
pub struct Applied {
    pub policies: Vec<(PolicyKey, Mode)>,
}

/// An engine that records every apply. Policies named `fail-*` fail to load on this node (as
/// if over kernel capacity); a set containing `slow-*` takes 1.5 s to apply.
#[derive(Default)]
pub struct FakeEngine {
    pub history: Mutex<Vec<Applied>>,
}

impl FakeEngine {
    pub fn last(&self) -> Option<Applied> {
        self.history.lock().unwrap().last().cloned()
    }
    pub fn applies(&self) -> usize {
        self.history.lock().unwrap().len()
    }
}

impl PolicyEngine for FakeEngine {
    fn apply(&self, policies: Vec<AnyPolicy>) -> Result<Vec<PolicyLoadResult>, String> {
        let keys: Vec<(PolicyKey, Mode)> = policies
            .iter()
            .map(|p| (PolicyKey::of(p), p.spec().mode))
            .collect();
        self.history.lock().unwrap().push(Applied {
            policies: keys.clone(),
        });
        if keys.iter().any(|(k, _)| k.name.starts_with("slow-")) {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(keys
            .into_iter()
            .filter(|(k, _)| k.name.starts_with("fail-"))
            .map(|(key, _)| PolicyLoadResult {
                key,
                result: Err("needs 80 selectors, the kernel maps hold 64 (BW092)".into()),
            })
            .collect())
    }
}

pub fn fake_engine() -> Arc<FakeEngine> {
    Arc::new(FakeEngine::default())
}

/// (name, namespace or None) of every example policy, read from the YAML.
pub fn examples() -> Vec<(PathBuf, String, Option<String>, String)> {
    let dir = repo().join("policies/examples");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        if f.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let mut kind = String::new();
        let mut name = None;
        let mut ns = None;
        let mut in_meta = false;
        for line in text.lines() {
            if let Some(k) = line.strip_prefix("kind: ") {
                kind = k.trim().to_string();
            }
            if line.starts_with("metadata:") {
                in_meta = true;
                continue;
            }
            if in_meta {
                if let Some(n) = line.strip_prefix("  name: ") {
                    name = Some(n.trim().to_string());
                } else if let Some(n) = line.strip_prefix("  namespace: ") {
                    ns = Some(n.trim().to_string());
                } else if !line.starts_with("  ") && !line.starts_with('#') {
                    in_meta = false;
                }
            }
        }
        out.push((f, name.expect("example has metadata.name"), ns, kind));
    }
    out
}

#[allow(unused_imports)] // not every test binary uses it
pub use bulwark_controller::sim::blocked_metadata_connect;

/// `GET path` on the health/metrics endpoint at `addr`: the whole response, or `None` when it
/// cannot be reached (yet).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The first Event (events.k8s.io/v1, any namespace) that `pred` accepts.
pub fn find_event(
    kubeconfig: &Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let out = kubectl_ok(
        kubeconfig,
        &["get", "events.events.k8s.io", "-A", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["items"].as_array()?.iter().find(|e| pred(e)).cloned()
}

/// Apply a CustomResourceDefinition (server-side) and wait until it is Established.
pub async fn apply_crd(client: &kube::Client, crd: &serde_json::Value) {
    let api: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = kube::Api::all(client.clone());
    let name = crd["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &kube::api::PatchParams::apply("bulwark-tests").force(),
        &kube::api::Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    wait_for(
        &format!("CRD {name} established"),
        Duration::from_secs(90),
        || bulwark_controller::sim::crd_established(&api, &name),
    )
    .await;
}
