//! The policy model. Vocabulary follows Cilium Tetragon's TracingPolicy where it fits:
//! `selectors` are ORed, the `match*` fields inside one selector are ANDed, and the entries
//! inside one `match*` list are ANDed too. bulwark's own additions are hook points that are
//! events rather than kernel functions (`exec`, `connect`, `egress`, `ingress`), `matchNamespaces`
//! (Kubernetes namespaces; Tetragon uses that name for Linux namespaces), `matchDestinations`,
//! `matchEncryption` and a per-policy `mode`. The word enums ([`Hook`], [`Action`], [`Mode`],
//! [`Encryption`]) are declared with [`crate::words!`]: one word table each, shared by policies,
//! the CRD schema and the JSON events.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every bulwark resource.
pub const GROUP: &str = "bulwark.dev";
/// API version of the policy resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "bulwark.dev/v1alpha1";

/// Specification shared by `TracingPolicy` (cluster-wide) and `TracingPolicyNamespaced`
/// (applies only to workloads in the policy's own namespace).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulwark.dev",
    version = "v1alpha1",
    kind = "TracingPolicy",
    plural = "tracingpolicies",
    singular = "tracingpolicy",
    shortname = "tp",
    category = "bulwark",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","priority":1,"jsonPath":".status.nodeCounts.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TracingPolicySpec {
    #[serde(flatten)]
    pub policy: PolicySpec,
}

/// Same specification as [`TracingPolicySpec`], scoped to the policy's own namespace: every
/// selector implicitly carries `matchNamespaces: [{operator: In, values: [<own namespace>]}]`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulwark.dev",
    version = "v1alpha1",
    kind = "TracingPolicyNamespaced",
    plural = "tracingpoliciesnamespaced",
    singular = "tracingpolicynamespaced",
    shortname = "tpn",
    category = "bulwark",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","priority":1,"jsonPath":".status.nodeCounts.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TracingPolicyNamespacedSpec {
    #[serde(flatten)]
    pub policy: PolicySpec,
}

/// The body of a policy: its mode and its rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// `enforce` (default) carries out `Sigkill` and `Block`; `monitor` only reports what would
    /// have been done, and every event says so.
    #[serde(default)]
    pub mode: Mode,
    /// The rules of this policy. Each rule hooks one event and has ORed selectors.
    pub rules: Vec<Rule>,
}

crate::words! {
    /// Whether a policy's enforcing actions are carried out.
    pub enum Mode ("mode", default Enforce) {
        /// Carry out `Sigkill` and `Block`.
        Enforce = "enforce",
        /// Report what `Sigkill` and `Block` would have done; enforce nothing.
        Monitor = "monitor",
    }
}

/// One rule: a hook point and the selectors that decide what happens there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Unique within the policy (DNS-1123 label); events and violations name it.
    pub name: String,
    /// The event this rule acts on.
    pub hook: Hook,
    /// ORed: the rule matches when any selector matches.
    pub selectors: Vec<Selector>,
}

crate::words! {
    /// Hook points are events, not kernel functions.
    pub enum Hook ("hook") {
        /// A process executes a new image (execve). Actions: `Post`, `Sigkill`.
        Exec = "exec",
        /// A process connects a TCP or UDP socket (IPv4 or IPv6), or sends on an unconnected
        /// UDP socket. Actions: `Post`, `Block` (connect fails with EPERM).
        Connect = "connect",
        /// The first payload a process sends on an outbound TCP connection, classified as TLS
        /// or plaintext. Actions: `Post`, `Block` (the send fails with EACCES; nothing reaches
        /// the peer).
        Egress = "egress",
        /// The first payload a server socket receives: a TCP connection accepted on a socket
        /// that a process put in `listen()`, classified as TLS or plaintext. The process
        /// selectors match the process that called `listen()` (the workload exposing the
        /// service); `matchDestinations` ports are the service's local port and its CIDRs the
        /// peer's address. Actions: `Post`, `Block` (that payload and every later one are
        /// dropped before the server can read a byte, and the connection is reset).
        Ingress = "ingress",
        /// A process enters (and leaves) one of the system calls named in `matchSyscalls`,
        /// seen at the raw syscall tracepoints. Actions: `Post`, `Sigkill` (at the call's entry,
        /// or at its exit when the selector has `matchReturn`; docs/syscalls.md says what a
        /// killed call still does).
        Syscall = "syscall",
        /// A process opens, creates, truncates, renames, deletes or changes the metadata of a
        /// file named in `matchPaths` (the file the kernel actually used: after `..`, symlinks,
        /// a dirfd). Actions: `Post`, `Sigkill` (an open is killed at its exit, before the
        /// process can read a byte; docs/files.md says what each call still does).
        File = "file",
    }
}

impl Hook {
    /// True for the hooks that see a connection's first payload and so decide
    /// `matchEncryption`: `egress` (what a process sends) and `ingress` (what a server
    /// receives). Both act on TCP only.
    pub fn classifies_payload(self) -> bool {
        matches!(self, Hook::Egress | Hook::Ingress)
    }
}

/// The fields of one selector are ANDed; so are the entries of each list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Conditions on the executable's path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_binaries: Vec<BinarySelector>,
    /// Conditions on the process arguments (argv).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_args: Vec<ArgSelector>,
    /// Conditions on the Kubernetes namespace of the workload (not Linux namespaces, unlike
    /// Tetragon's field of the same name). Host processes are in no namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_namespaces: Vec<NamespaceSelector>,
    /// Conditions on how the program was executed: from a file with no name (`fileless`), or
    /// through a dynamic loader run directly (`loader`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_exec_kinds: Vec<ExecKindSelector>,
    /// Conditions on the destination of a connection (`connect` and `egress` hooks); on the
    /// `ingress` hook, ports are the server's local port and CIDRs the peer's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_destinations: Vec<DestinationSelector>,
    /// Condition on the encryption state of the first payload (`egress` and `ingress` hooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_encryption: Option<Encryption>,
    /// The system calls a `hook: syscall` selector acts on, by name (x86_64 / arm64 tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_syscalls: Vec<SyscallSelector>,
    /// Conditions on the integer arguments of the system call (`hook: syscall`), by index.
    /// Tetragon spells these `matchArgs`; in bulwark `matchArgs` is the process's argv on every
    /// hook, so the system call's own arguments have their own field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_syscall_args: Vec<SyscallArgSelector>,
    /// Conditions on the system call's return value (`hook: syscall`); the selector is then
    /// decided when the call returns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_return: Vec<ReturnSelector>,
    /// The files a `hook: file` selector acts on, by absolute path: the path of the file the
    /// kernel used (after `..`, symlinks and a dirfd), and for `In` also the file itself (its
    /// identity when the rules were loaded, so a hard link to it is caught).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_paths: Vec<PathSelector>,
    /// The kinds of access a `hook: file` selector acts on (`read`, `write`, `create`,
    /// `delete`, `metadata`); every kind when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_access: Vec<AccessSelector>,
    /// What to do when the selector matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_actions: Vec<ActionSelector>,
}

/// String operators, as in Tetragon.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Operator {
    /// The value is one of `values`.
    In,
    /// The value is none of `values`.
    NotIn,
    /// The value starts with one of `values`.
    Prefix,
    /// The value starts with none of `values`.
    NotPrefix,
    /// The value ends with one of `values`.
    Postfix,
    /// The value ends with none of `values`.
    NotPostfix,
    /// The value equals one of `values` (same as `In`, kept for Tetragon users).
    Equal,
}

impl Operator {
    /// True for the operators that hold when the value is *not* found.
    pub fn is_negated(self) -> bool {
        matches!(
            self,
            Operator::NotIn | Operator::NotPrefix | Operator::NotPostfix
        )
    }

    /// How the operator compares a value with `values` (before negation).
    pub fn kind(self) -> MatchKind {
        match self {
            Operator::In | Operator::NotIn | Operator::Equal => MatchKind::Exact,
            Operator::Prefix | Operator::NotPrefix => MatchKind::Prefix,
            Operator::Postfix | Operator::NotPostfix => MatchKind::Postfix,
        }
    }
}

/// How a string operator compares: the whole value, its start, or its end. Every operator is
/// one kind, negated or not ([`Operator::kind`], [`Operator::is_negated`]).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// `In`, `Equal`, `NotIn`.
    Exact,
    /// `Prefix`, `NotPrefix`.
    Prefix,
    /// `Postfix`, `NotPostfix`.
    Postfix,
}

/// Set operators for namespaces and destinations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SetOperator {
    /// Matches when the value is in the set.
    #[default]
    In,
    /// Matches when the value is not in the set.
    NotIn,
}

impl SetOperator {
    /// True for `NotIn`.
    pub fn is_negated(self) -> bool {
        self == SetOperator::NotIn
    }
}

/// `matchBinaries` entry: the absolute path of the executable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinarySelector {
    pub operator: Operator,
    pub values: Vec<String>,
}

/// `matchArgs` entry: process arguments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgSelector {
    /// Which argv element (0 is the program name as invoked). Omitted: any argument from
    /// argv[1] on satisfies positive operators, and none may match for negated ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "arg_index_schema")]
    pub index: Option<u32>,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// Schema of `matchArgs.index`: a non-negative integer. Written by hand because schemars'
/// `format: uint32` is not a Kubernetes format and the API server warns about it.
fn arg_index_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "minimum": 0,
        "maximum": 4294967295u64,
        "description": "Which argv element (0 is the program name as invoked). Omitted: any argument from argv[1] on satisfies positive operators, and none may match for negated ones."
    })
}

/// `matchNamespaces` entry: Kubernetes namespace names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub operator: SetOperator,
    pub values: Vec<String>,
}

crate::words! {
    /// How a program was executed, beyond the path of what runs (`matchExecKinds`).
    pub enum ExecKind ("exec kind") {
        /// The executed file has no name on any filesystem: `memfd_create` + `execveat`, an
        /// `O_TMPFILE` file, a file deleted after it was opened.
        Fileless = "fileless",
        /// A dynamic loader run directly (`/lib64/ld-linux-x86-64.so.2 /usr/bin/curl ...`); the
        /// program it loads is also matched by `matchBinaries` as a path.
        Loader = "loader",
    }
}

/// `matchExecKinds` entry: the exec is (`In`) or is not (`NotIn`) of one of these kinds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecKindSelector {
    pub operator: SetOperator,
    pub values: Vec<ExecKind>,
}

/// `matchDestinations` entry. A destination is in the set when it lies in one of `cidrs` (any
/// address if empty) and its port is one of `ports` (any port if empty) and its protocol is
/// `protocol` (any if omitted); `NotIn` negates that.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSelector {
    pub operator: SetOperator,
    /// IPv4 or IPv6 CIDRs (`10.0.0.0/8`, `2001:db8::/32`); a bare address means a single host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Ports (`443`) or inclusive ranges (`"8000-8080"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// Transport protocol of a destination.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Protocol {
    TCP,
    UDP,
}

crate::words! {
    /// Encryption state of the first payload bytes on a connection.
    pub enum Encryption ("encryption") {
        /// Anything that does not start with a TLS handshake record.
        Plaintext = "plaintext",
        /// A TLS handshake record (0x16 0x03 0x00..0x04).
        Tls = "tls",
    }
}

/// `matchPaths` entry: absolute file paths (`/etc/shadow`), directory prefixes (`/etc/`) or
/// name endings (`.pem`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathSelector {
    pub operator: Operator,
    pub values: Vec<String>,
}

crate::words! {
    /// What a call does to a file (`matchAccess`), as KubeArmor and Tetragon users know it.
    pub enum FileAccess ("file access") {
        /// Opened for reading.
        Read = "read",
        /// Opened for writing, truncated, or replaced by a rename.
        Write = "write",
        /// Created: an open that created it, mkdir, mknod, link, symlink, a rename's new name.
        Create = "create",
        /// Unlinked, removed (rmdir) or renamed away.
        Delete = "delete",
        /// Mode or owner changed (chmod, chown and their variants).
        Metadata = "metadata",
    }
}

impl FileAccess {
    /// The access's bit in the kernel's masks (daemon-common `FILE_ACCESS_*`).
    pub fn bit(self) -> u32 {
        match self {
            FileAccess::Read => daemon_common::FILE_ACCESS_READ,
            FileAccess::Write => daemon_common::FILE_ACCESS_WRITE,
            FileAccess::Create => daemon_common::FILE_ACCESS_CREATE,
            FileAccess::Delete => daemon_common::FILE_ACCESS_DELETE,
            FileAccess::Metadata => daemon_common::FILE_ACCESS_METADATA,
        }
    }
}

impl Selector {
    /// The accesses (`FILE_ACCESS_*` bits) its `matchAccess` entries (ANDed) leave: every
    /// access when it has none.
    pub fn access_bits(&self) -> u32 {
        self.match_access
            .iter()
            .fold(daemon_common::FILE_ACCESS_ALL, |set, a| {
                let listed = a.values.iter().fold(0, |m, v| m | v.bit());
                if a.operator.is_negated() {
                    set & !listed
                } else {
                    set & listed
                }
            })
    }
}

/// `matchAccess` entry: the call makes (`In`) or makes none of (`NotIn`) these accesses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessSelector {
    pub operator: SetOperator,
    pub values: Vec<FileAccess>,
}

/// `matchSyscalls` entry: system call names (`ptrace`, `mount`); `In` the call is one of
/// them, `NotIn` it is none of them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyscallSelector {
    pub operator: SetOperator,
    pub values: Vec<String>,
}

/// Integer operators (`matchSyscallArgs`, `matchReturn`), as Tetragon spells them. A condition
/// holds when the value compares true with any of `values` (`NotEqual`: with none equal).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IntOperator {
    /// The value equals one of `values`.
    Equal,
    /// The value equals none of `values`.
    NotEqual,
    /// The value has a bit in common with one of `values` (`value & v != 0`).
    Mask,
    /// The value is greater than one of `values` (signed 64-bit).
    GreaterThan,
    /// The value is less than one of `values` (signed 64-bit).
    LessThan,
}

/// `matchSyscallArgs` entry: argument `index` (0..=5) of the system call, as a 64-bit integer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyscallArgSelector {
    #[schemars(schema_with = "syscall_arg_index_schema")]
    pub index: u32,
    pub operator: IntOperator,
    /// Integers, written as numbers or strings (`"0x10"`, `"-1"`).
    pub values: Vec<IntValue>,
}

/// Schema of `matchSyscallArgs.index`: 0..=5 (a system call has at most six arguments).
fn syscall_arg_index_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "minimum": 0,
        "maximum": 5,
        "description": "Which system call argument, 0 to 5."
    })
}

/// `matchReturn` entry: the system call's return value; values may name an errno (`-EPERM`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReturnSelector {
    pub operator: IntOperator,
    /// Integers (`0`, `-1`, `"0x10"`) or negated errno names (`"-EPERM"`).
    pub values: Vec<IntValue>,
}

/// An integer written as a number (`1`) or as text (`"0x10"`, `"-EPERM"`). Kept as written;
/// [`crate::values::parse_int`] parses it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntValue {
    Number(i64),
    Text(String),
}

impl JsonSchema for IntValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntValue".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

/// `matchActions` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionSelector {
    pub action: Action,
}

crate::words! {
    /// What happens when a selector matches.
    pub enum Action ("action") {
        /// Report an event.
        Post = "Post",
        /// Kill the process with SIGKILL (`exec` hook: before the new image runs; `syscall`:
        /// at the call's entry, or its exit with `matchReturn`; `file`: an open at its exit,
        /// before user space sees the fd, other calls at entry).
        Sigkill = "Sigkill",
        /// Refuse the operation (`connect`: EPERM; `egress`: the send fails with EACCES;
        /// `ingress`: the payload is dropped before the server reads it).
        Block = "Block",
    }
}

impl Action {
    /// True for actions that change what the workload can do.
    pub fn is_enforcing(self) -> bool {
        matches!(self, Action::Sigkill | Action::Block)
    }
}

/// A port or an inclusive port range, written as an integer (`443`) or a string (`"443"`,
/// `"8000-8080"`). Kept as written; [`crate::values::parse_port`] parses it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortSpec {
    Number(i64),
    Text(String),
}

impl JsonSchema for PortSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PortSpec".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The API server's structural-schema escape hatch for int-or-string values.
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

/// Status written through server-side apply by one writer, the cluster's status aggregator (the
/// node daemon holding the `bulwark-status` Lease), from the per-node reports (`BulwarkNode`
/// objects). Its size does not grow with the number of nodes: counts, plus at most
/// 20 failing nodes (`MAX_FAILED_NODES`) and the number of failing nodes left out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` or `Rejected`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Loaded/total nodes as text (`3/3`), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// How many live nodes loaded, failed or have not yet reported the observed generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_counts: Option<NodeCounts>,
    /// Standard conditions: `Accepted` (with every lint diagnostic when false) and `Loaded`.
    /// A list-map keyed by `type` for server-side apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<StatusCondition>,
    /// The nodes that failed to load the observed generation, by name, at most
    /// 20 (`MAX_FAILED_NODES`) of them (the rest are counted in `failedNodesOmitted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub failed_nodes: Vec<NodePolicyStatus>,
    /// Failing nodes not listed in `failedNodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_nodes_omitted: Option<i64>,
}

/// At most this many entries in [`PolicyStatus::failed_nodes`] (about 200 bytes each with a
/// 128-byte reason), so a status stays within a few KiB at any cluster size.
pub const MAX_FAILED_NODES: usize = 20;

/// Node counts of one policy's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Live nodes (a report whose heartbeat is within the TTL).
    pub total: i64,
    /// Nodes in force with the observed generation.
    pub loaded: i64,
    /// Nodes that failed to load the observed generation.
    pub failed: i64,
    /// Nodes that have not reported the observed generation yet.
    pub pending: i64,
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// One node that failed to load a policy, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePolicyStatus {
    pub node: String,
    /// `Failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A policy of either kind, as loaded from a file or the API server.
#[derive(Clone, Debug)]
pub enum AnyPolicy {
    Cluster(TracingPolicy),
    Namespaced(TracingPolicyNamespaced),
}

impl AnyPolicy {
    /// `metadata.name`, empty when missing.
    pub fn name(&self) -> &str {
        let meta = match self {
            AnyPolicy::Cluster(p) => &p.metadata,
            AnyPolicy::Namespaced(p) => &p.metadata,
        };
        meta.name.as_deref().unwrap_or("")
    }

    /// The namespace a `TracingPolicyNamespaced` is confined to; `None` for cluster policies.
    pub fn scope_namespace(&self) -> Option<&str> {
        match self {
            AnyPolicy::Cluster(_) => None,
            AnyPolicy::Namespaced(p) => Some(p.metadata.namespace.as_deref().unwrap_or("default")),
        }
    }

    /// The spec, whichever the kind.
    pub fn spec(&self) -> &PolicySpec {
        match self {
            AnyPolicy::Cluster(p) => &p.spec.policy,
            AnyPolicy::Namespaced(p) => &p.spec.policy,
        }
    }
}
