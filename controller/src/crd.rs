//! bulwark's own custom resources besides the policies (group `bulwark.dev`, `v1alpha1`):
//! - `PolicyViolation` (namespaced): one object per distinct violation key on one node, in the
//!   workload's namespace (host processes go to a configurable namespace). Repeats raise `count`
//!   and `lastSeen` instead of creating objects.
//! - `BulwarkNode` (cluster-scoped, named after the node): one node's report of what it loaded,
//!   plus a heartbeat; written only by that node, read by the status aggregator
//!   ([`crate::aggregate`]), deleted by it once the heartbeat is older than the TTL.
//!
//! `crds/*.yaml` are generated from these types by `bulwark crds`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A violation of a bulwark policy seen on one node: what was killed, blocked or (in monitor
/// mode) would have been.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulwark.dev",
    version = "v1alpha1",
    kind = "PolicyViolation",
    plural = "policyviolations",
    singular = "policyviolation",
    shortname = "pviol",
    category = "bulwark",
    namespaced,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Hook","type":"string","jsonPath":".spec.hook"}"#,
    printcolumn = r#"{"name":"Outcome","type":"string","jsonPath":".spec.outcome"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.pod"}"#,
    printcolumn = r#"{"name":"Binary","type":"string","jsonPath":".spec.binary"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Count","type":"integer","jsonPath":".spec.count"}"#,
    printcolumn = r#"{"name":"Last Seen","type":"date","jsonPath":".spec.lastSeen"}"#,
    printcolumn = r#"{"name":"Rule","type":"string","priority":1,"jsonPath":".spec.rule"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","priority":1,"jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Node","type":"string","priority":1,"jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Container","type":"string","priority":1,"jsonPath":".spec.container"}"#,
    printcolumn = r#"{"name":"Encryption","type":"string","priority":1,"jsonPath":".spec.encryption"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolationSpec {
    /// Name of the policy that matched.
    pub policy: String,
    /// `TracingPolicy` or `TracingPolicyNamespaced`.
    pub policy_kind: String,
    /// Namespace of a `TracingPolicyNamespaced`; absent for a `TracingPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_namespace: Option<String>,
    /// Rule of the policy that matched.
    pub rule: String,
    /// `exec`, `connect`, `egress`, `ingress`, `syscall` or `file`.
    pub hook: String,
    /// The policy's action: `Sigkill`, `Block` or `Post`.
    pub action: String,
    /// `enforce` or `monitor`.
    pub mode: String,
    /// True when the action was carried out; false when it only would have been (monitor).
    pub enforced: bool,
    /// `killed`, `blocked`, `would_kill`, `would_block` or `reported`.
    pub outcome: String,
    /// Node the violation was seen on.
    pub node: String,
    /// Pod name; absent for host processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Container name; absent for host processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Absolute path of the executable.
    pub binary: String,
    /// Arguments of the last occurrence (truncated to 1 KiB).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arguments: String,
    /// Destination of the connection (`connect`, `egress`; on `ingress` the peer's address
    /// and the server's own port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<ViolationDestination>,
    /// Encryption verdict of the first payload (`plaintext` or `tls`, egress and ingress
    /// hooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// The file of a `file` match: its path, what was done to it, and the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<ViolationFile>,
    /// The system call of a `syscall` match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<ViolationSyscall>,
    /// What the match was about, for `kubectl get`: the destination's `address`, the file's
    /// path, or the system call's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How many times this violation was seen.
    pub count: i64,
    /// RFC 3339 time of the first and the last occurrence.
    pub first_seen: String,
    pub last_seen: String,
}

/// Destination of a blocked or reported connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationDestination {
    pub ip: String,
    pub port: i32,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// `ip:port/protocol` (IPv6 in brackets), for `kubectl get`.
    pub address: String,
}

/// The file a `file` match was about (from the `process_file` event).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationFile {
    /// Absolute path of the file the kernel used; absent when it was too long or too deep to
    /// build (the access was judged by the file's identity, `device` and `inode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What the call did to it: `read`, `write`, `create`, `delete`, `metadata`.
    pub access: Vec<String>,
    /// The system call (`openat`, `unlinkat`, ...); absent for a number the table lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The file's device (`major:minor`) and inode, when the call had a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<i64>,
}

/// The system call a `syscall` match was about (from the `process_syscall` event).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationSyscall {
    /// The call's name (`ptrace`), or `#<number>` for a number its table lacks.
    pub name: String,
    /// Its table: `x86_64`, `arm64`, or `i386` for a 32-bit (compat) call.
    pub abi: String,
}

/// The CRD, with `date-time` formats on the timestamps.
pub fn policy_violation_crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = PolicyViolation::crd();
    set_date_time(&mut crd, &["firstSeen", "lastSeen"]);
    crd
}

/// One node's report: which policies (and generations) it has in force or failed to load, and
/// when it last said so. Policies the lint rejected are not reported (every node rejects them
/// alike; the aggregator judges them itself).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bulwark.dev",
    version = "v1alpha1",
    kind = "BulwarkNode",
    plural = "bulwarknodes",
    singular = "bulwarknode",
    shortname = "bwnode",
    category = "bulwark",
    printcolumn = r#"{"name":"Policies","type":"integer","jsonPath":".spec.loaded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".spec.failed"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".spec.heartbeat"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BulwarkNodeSpec {
    /// RFC 3339 time the node last wrote this report (renewed every heartbeat interval).
    pub heartbeat: String,
    /// Number of reported policies in force, and failed.
    pub loaded: i64,
    pub failed: i64,
    /// One entry per accepted policy this node was handed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<NodePolicyReport>,
}

/// One policy on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePolicyReport {
    /// `TracingPolicy` or `TracingPolicyNamespaced`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The `metadata.generation` the node acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Why the node could not load it; absent when it is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `BulwarkNode` CRD, with a `date-time` heartbeat.
pub fn bulwark_node_crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = BulwarkNode::crd();
    set_date_time(&mut crd, &["heartbeat"]);
    crd
}

/// The properties of `spec` in a version's schema.
fn spec_properties(
    v: &mut CustomResourceDefinitionVersion,
) -> Option<&mut std::collections::BTreeMap<String, JSONSchemaProps>> {
    v.schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .and_then(|s| s.properties.as_mut())
        .and_then(|p| p.get_mut("spec"))
        .and_then(|s| s.properties.as_mut())
}

fn set_date_time(crd: &mut CustomResourceDefinition, fields: &[&str]) {
    for v in &mut crd.spec.versions {
        if let Some(props) = spec_properties(v) {
            for f in fields {
                if let Some(p) = props.get_mut(*f) {
                    p.format = Some("date-time".into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_group_version_scope_and_columns() {
        let crd = policy_violation_crd();
        assert_eq!(crd.spec.group, "bulwark.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "PolicyViolation");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            cols.contains(&"Count") && cols.contains(&"Last Seen"),
            "{cols:?}"
        );
        // One column says what each hook's violation was about.
        assert!(
            cols.contains(&"Hook") && cols.contains(&"Target"),
            "{cols:?}"
        );
        assert!(!cols.contains(&"Destination"), "{cols:?}");
        let json = serde_json::to_string(&crd).unwrap();
        assert!(json.contains("\"format\":\"date-time\""));
        // Structural: no untyped values anywhere.
        assert!(!json.contains("x-kubernetes-preserve-unknown-fields"));
    }

    #[test]
    fn every_violation_column_shows_a_spec_field() {
        let mut crd = policy_violation_crd();
        let v = &mut crd.spec.versions[0];
        let columns = v.additional_printer_columns.clone().unwrap();
        let spec = spec_properties(v).unwrap();
        for c in &columns {
            let field = c
                .json_path
                .strip_prefix(".spec.")
                .and_then(|p| p.split('.').next())
                .unwrap_or_else(|| panic!("{} is not a spec field", c.json_path));
            assert!(
                spec.contains_key(field),
                "column {}: no spec.{field}",
                c.name
            );
        }
    }

    #[test]
    fn node_report_crd_is_cluster_scoped_and_structural() {
        let crd = bulwark_node_crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.plural, "bulwarknodes");
        let json = serde_json::to_string(&crd).unwrap();
        assert!(json.contains("\"format\":\"date-time\""));
        assert!(!json.contains("x-kubernetes-preserve-unknown-fields"));
    }
}
