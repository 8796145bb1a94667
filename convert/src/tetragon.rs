//! Reading a Cilium Tetragon `TracingPolicy` / `TracingPolicyNamespaced` (`cilium.io/v1alpha1`)
//! from a marked YAML document: its metadata, its options and its hooks (`spec.kprobes[]`,
//! `tracepoints[]`, `lsmhooks[]`, `uprobes[]`, `usdts[]`) with their declared `args` and their
//! `selectors`, each with its line. Only the shape is read here; what maps to bulwark is
//! decided in [`crate::translate`]. Selectors stay marked YAML nodes so every finding about
//! them can name its line.

use crate::report::InputError;
use bulwark_policy::yaml::{Node, Value};
use std::collections::BTreeMap;

/// The hook lists of a Tetragon spec, in the order they are converted.
pub const HOOK_SECTIONS: &[&str] = &["kprobes", "tracepoints", "lsmhooks", "uprobes", "usdts"];

/// A Tetragon policy document, read.
#[derive(Debug)]
pub struct Policy<'a> {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec`, when present.
    pub spec: Option<&'a Node>,
    pub hooks: Vec<Hook<'a>>,
}

/// One declared argument of a hook: `args[].index` and `args[].type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub index: i64,
    pub type_: String,
}

/// One hook of any section.
#[derive(Debug)]
pub struct Hook<'a> {
    /// `kprobes`, `tracepoints`, ...
    pub section: &'static str,
    /// `spec.kprobes[0]`.
    pub path: String,
    pub line: u32,
    /// Last line any of its nodes is on (comments up to here belong to it).
    pub end_line: u32,
    /// `call` (kprobes), `subsystem/event` (tracepoints), `hook` (lsmhooks), `path` (uprobes).
    pub call: String,
    /// `syscall: true` (kprobes).
    pub syscall: bool,
    pub args: Vec<Arg>,
    /// `selectors` entries (none: the hook reports every call).
    pub selectors: Vec<&'a Node>,
    /// `message` and `tags`, carried over as comments.
    pub message: Option<String>,
    pub tags: Vec<String>,
    /// A malformed part of the hook; the hook is then not translated.
    pub error: Option<String>,
}

impl Hook<'_> {
    /// The declared type of the argument `matchArgs.index` refers to.
    pub fn arg_type(&self, index: i64) -> Option<&str> {
        self.args
            .iter()
            .find(|a| a.index == index)
            .map(|a| a.type_.as_str())
    }
}

/// A scalar as text (Tetragon writes values as strings or numbers).
pub fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// `values` of a selector entry as text, or why they cannot be read.
pub fn values(entry: &Node) -> Result<Vec<String>, String> {
    match entry.get("values").map(|v| &v.value) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Seq(items)) => items
            .iter()
            .map(|n| {
                scalar_text(n).ok_or_else(|| {
                    format!(
                        "line {}: a value is a {}, expected a string or number",
                        n.pos.line,
                        n.value.type_name()
                    )
                })
            })
            .collect(),
        Some(other) => Err(format!(
            "`values` is a {}, expected a list",
            other.type_name()
        )),
    }
}

/// The last line any node of this subtree is on.
pub fn last_line(node: &Node) -> u32 {
    match &node.value {
        Value::Seq(items) => items.iter().map(last_line).fold(node.pos.line, u32::max),
        Value::Map(entries) => entries
            .iter()
            .map(|e| last_line(&e.value))
            .fold(node.pos.line, u32::max),
        _ => node.pos.line,
    }
}

fn string_map(node: Option<&Node>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Map(entries)) = node.map(|n| &n.value) {
        for e in entries {
            if let Some(v) = scalar_text(&e.value) {
                out.insert(e.key.clone(), v);
            }
        }
    }
    out
}

fn error_at(node: &Node, message: impl Into<String>, hint: impl Into<String>) -> InputError {
    InputError {
        line: node.pos.line,
        column: node.pos.column,
        message: message.into(),
        hint: hint.into(),
    }
}

/// Reads a document as a Tetragon policy, or says why it is not one.
pub fn read(root: &Node) -> Result<Policy<'_>, InputError> {
    let Value::Map(_) = &root.value else {
        return Err(error_at(
            root,
            format!(
                "the document is a {}, not a Kubernetes object",
                root.value.type_name()
            ),
            "give a Tetragon TracingPolicy or TracingPolicyNamespaced (`apiVersion: cilium.io/v1alpha1`)",
        ));
    };
    let api = root.get("apiVersion");
    match api.and_then(Node::as_str) {
        Some(a) if a.starts_with("cilium.io/") => {}
        Some(a) if a.starts_with("bulwark.dev/") => {
            return Err(error_at(
                api.unwrap_or(root),
                "this is already a bulwark policy",
                "check it with `bulwark lint` instead",
            ))
        }
        other => {
            return Err(error_at(
                api.unwrap_or(root),
                match other {
                    Some(a) => format!("`apiVersion: {a}` is not a Cilium Tetragon policy"),
                    None => "no `apiVersion`".into(),
                },
                "`bulwark convert` reads Tetragon policies: `apiVersion: cilium.io/v1alpha1`",
            ))
        }
    }
    let kind_node = root.get("kind");
    let kind = kind_node
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_string();
    if kind != "TracingPolicy" && kind != "TracingPolicyNamespaced" {
        return Err(error_at(
            kind_node.unwrap_or(root),
            if kind.is_empty() {
                "no `kind`".to_string()
            } else {
                format!("`kind: {kind}` is not a Tetragon policy kind")
            },
            "`bulwark convert` reads `kind: TracingPolicy` and `kind: TracingPolicyNamespaced`",
        ));
    }
    let meta = root.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(scalar_text)
        .unwrap_or_default();
    if name.is_empty() {
        return Err(error_at(
            meta.unwrap_or(root),
            "no `metadata.name`",
            "give the policy a name; the bulwark policy keeps it",
        ));
    }
    let spec = root.get("spec");
    let mut hooks = Vec::new();
    if let Some(spec) = spec {
        for section in HOOK_SECTIONS {
            let Some(list) = spec.get(section) else {
                continue;
            };
            let Value::Seq(items) = &list.value else {
                return Err(error_at(
                    list,
                    format!(
                        "`spec.{section}` is a {}, expected a list",
                        list.value.type_name()
                    ),
                    format!("write `{section}:` followed by `- ` entries"),
                ));
            };
            for (i, node) in items.iter().enumerate() {
                hooks.push(read_hook(section, i, node));
            }
        }
    }
    Ok(Policy {
        kind,
        name,
        namespace: meta.and_then(|m| m.get("namespace")).and_then(scalar_text),
        labels: string_map(meta.and_then(|m| m.get("labels"))),
        annotations: string_map(meta.and_then(|m| m.get("annotations"))),
        spec,
        hooks,
    })
}

fn read_hook<'a>(section: &'static str, i: usize, node: &'a Node) -> Hook<'a> {
    let text = |k: &str| node.get(k).and_then(scalar_text);
    let call = match section {
        "kprobes" => text("call"),
        "tracepoints" => match (text("subsystem"), text("event")) {
            (Some(s), Some(e)) => Some(format!("{s}/{e}")),
            _ => None,
        },
        "lsmhooks" => text("hook"),
        _ => text("path").or_else(|| text("name")),
    };
    let mut error = None;
    if !matches!(node.value, Value::Map(_)) {
        error = Some(format!(
            "line {}: the entry is a {}, expected a mapping",
            node.pos.line,
            node.value.type_name()
        ));
    } else if call.is_none() {
        let needs = match section {
            "kprobes" => "`call`",
            "tracepoints" => "`subsystem` and `event`",
            "lsmhooks" => "`hook`",
            _ => "`path`",
        };
        error = Some(format!(
            "line {}: the entry has no {needs}; Tetragon needs it to know what to hook",
            node.pos.line
        ));
    }
    let mut args = Vec::new();
    if let Some(Value::Seq(items)) = node.get("args").map(|a| &a.value) {
        for (pos, a) in items.iter().enumerate() {
            let index = match a.get("index").map(|n| &n.value) {
                Some(Value::Int(i)) => *i,
                _ => i64::try_from(pos).unwrap_or(i64::MAX),
            };
            let type_ = a.get("type").and_then(scalar_text).unwrap_or_default();
            args.push(Arg { index, type_ });
        }
    }
    let selectors = match node.get("selectors").map(|s| &s.value) {
        Some(Value::Seq(items)) => items.iter().collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            error.get_or_insert(format!(
                "line {}: `selectors` is a {}, expected a list of selectors",
                node.get("selectors").map_or(node.pos.line, |s| s.pos.line),
                other.type_name()
            ));
            Vec::new()
        }
    };
    let tags = match node.get("tags").map(|t| &t.value) {
        Some(Value::Seq(items)) => items.iter().filter_map(scalar_text).collect(),
        _ => Vec::new(),
    };
    Hook {
        section,
        path: format!("spec.{section}[{i}]"),
        line: node.pos.line,
        end_line: last_line(node),
        call: call.unwrap_or_else(|| "?".into()),
        syscall: matches!(
            node.get("syscall").map(|n| &n.value),
            Some(Value::Bool(true))
        ),
        args,
        selectors,
        message: text("message"),
        tags,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::yaml::parse;

    #[test]
    fn reads_hooks_args_and_selectors_with_lines() {
        let text = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: x\nspec:\n  kprobes:\n  - call: tcp_connect\n    syscall: false\n    args:\n    - index: 0\n      type: sock\n    selectors:\n    - matchArgs: []\n  tracepoints:\n  - subsystem: sched\n    event: sched_process_exec\n";
        let s = parse(text);
        let p = read(&s.documents[0].root).unwrap();
        assert_eq!(p.name, "x");
        assert_eq!(p.hooks.len(), 2);
        let k = &p.hooks[0];
        assert_eq!(
            (k.call.as_str(), k.line, k.end_line),
            ("tcp_connect", 7, 13)
        );
        assert_eq!(k.arg_type(0), Some("sock"));
        assert_eq!(k.selectors.len(), 1);
        assert_eq!(p.hooks[1].call, "sched/sched_process_exec");
        assert_eq!(p.hooks[1].path, "spec.tracepoints[0]");
    }

    #[test]
    fn refuses_what_is_not_a_tetragon_policy() {
        for (text, msg) in [
            (
                "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\n",
                "already a bulwark",
            ),
            ("apiVersion: v1\nkind: ConfigMap\n", "not a Cilium Tetragon"),
            (
                "apiVersion: cilium.io/v1alpha1\nkind: Pod\n",
                "not a Tetragon policy kind",
            ),
            (
                "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n",
                "metadata.name",
            ),
        ] {
            let s = parse(text);
            let e = read(&s.documents[0].root).unwrap_err();
            assert!(e.message.contains(msg), "{text}: {e:?}");
            assert!(!e.hint.is_empty());
        }
    }
}
