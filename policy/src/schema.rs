//! Structural checks of one marked YAML document against the CRD's `openAPIV3Schema` (generated
//! from the Rust types by [`crate::crds`], so the schema has one home): apiVersion/kind
//! (including a Tetragon `cilium.io` policy given by mistake), metadata, unknown or misspelt
//! fields with "did you mean" hints, types, enum values, operators valid for their field,
//! required fields and list lengths (`maxItems`). The schema's other value checks (patterns,
//! formats, `minItems`, CEL rules: see [`crate::admission`]) each mirror a semantic check in
//! [`crate::validate`], which words them better. Every diagnostic carries the node's line/column and its JSON path.

use crate::diagnostics::{codes, Code, Diagnostic};
use crate::yaml::{Document, Node, Pos, Value};
use crate::{API_VERSION, GROUP};
use serde_json::Value as J;
use std::sync::OnceLock;

/// Which policy kind a document declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Namespaced,
}

/// The kinds bulwark reads from policy files.
pub const KINDS: &[&str] = &[
    "TracingPolicy",
    "TracingPolicyNamespaced",
    "EncryptedProtocol",
];

/// Fields of Kubernetes `ObjectMeta` with the JSON type each must have.
const OBJECT_META: &[(&str, &str)] = &[
    ("name", "string"),
    ("namespace", "string"),
    ("generateName", "string"),
    ("labels", "stringmap"),
    ("annotations", "stringmap"),
    ("uid", "string"),
    ("resourceVersion", "string"),
    ("generation", "integer"),
    ("creationTimestamp", "any"),
    ("deletionTimestamp", "any"),
    ("deletionGracePeriodSeconds", "integer"),
    ("finalizers", "stringlist"),
    ("ownerReferences", "array"),
    ("managedFields", "array"),
    ("selfLink", "string"),
];

/// The `openAPIV3Schema` of the policy CRDs (spec and status are the same for both kinds).
pub fn policy_schema() -> &'static J {
    static SCHEMA: OnceLock<J> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = crate::crds().into_iter().next();
        let json = crd
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(J::Null);
        json.pointer("/spec/versions/0/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or(J::Null)
    })
}

/// Levenshtein distance (by chars), for "did you mean".
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word`, when close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if c.to_lowercase() == lower {
            0
        } else {
            edit_distance(&lower, &c.to_lowercase())
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let limit = (word.chars().count() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn preview(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => {
            let short: String = s.chars().take(40).collect();
            format!(" `{short}`")
        }
        Value::Int(i) => format!(" `{i}`"),
        Value::Float(f) => format!(" `{f}`"),
        Value::Bool(b) => format!(" `{b}`"),
        _ => String::new(),
    }
}

fn last_key(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    tail.split('[').next().unwrap_or(tail)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Where a key that is unknown here belongs instead, or what it is (Tetragon fields).
fn placement_hint(key: &str, path: &str) -> Option<String> {
    const SELECTOR_FIELDS: &[&str] = &[
        "matchBinaries",
        "matchArgs",
        "matchNamespaces",
        "matchExecKinds",
        "matchDestinations",
        "matchEncryption",
        "matchActions",
    ];
    const TETRAGON_SPEC: &[&str] = &[
        "kprobes",
        "tracepoints",
        "uprobes",
        "lsmhooks",
        "usdts",
        "enforcers",
        "lists",
        "options",
        "podSelector",
        "containerSelector",
    ];
    const TETRAGON_SELECTOR: &[&str] = &[
        "matchPIDs",
        "matchCapabilities",
        "matchNamespaceChanges",
        "matchCapabilityChanges",
        "matchReturnArgs",
        "matchReturnActions",
        "matchData",
    ];
    let here = last_key(path);
    if SELECTOR_FIELDS.contains(&key) && here != "selectors" {
        return Some(format!(
            "`{key}` belongs inside an entry of a rule's `selectors` list"
        ));
    }
    if (key == "mode" || key == "rules") && here.is_empty() {
        return Some(format!("`{key}` belongs under `spec`"));
    }
    if (key == "hook" || key == "selectors") && here != "rules" {
        return Some(format!("`{key}` belongs inside an entry of `spec.rules`"));
    }
    if (key == "name" || key == "namespace" || key == "labels") && here.is_empty() {
        return Some(format!("`{key}` belongs under `metadata`"));
    }
    if TETRAGON_SPEC.contains(&key) {
        return Some(format!(
            "`{key}` is a Cilium Tetragon field; bulwark hooks events, not kernel functions: write `rules` entries with `hook: exec`, `connect`, `egress` or `ingress` and `selectors`"
        ));
    }
    if TETRAGON_SELECTOR.contains(&key) {
        return Some(format!(
            "`{key}` is a Cilium Tetragon selector that bulwark does not support; bulwark selectors have matchBinaries, matchArgs, matchNamespaces, matchExecKinds, matchDestinations, matchEncryption and matchActions"
        ));
    }
    None
}

fn type_word(schema: &J) -> String {
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(J::as_bool)
        == Some(true)
    {
        return "an integer or a string".into();
    }
    match schema.get("type").and_then(J::as_str) {
        Some("object") => "a mapping".into(),
        Some("array") => {
            let inner = schema.get("items").map(type_word).unwrap_or_default();
            let inner = inner.trim_start_matches("a ").trim_start_matches("an ");
            if inner.is_empty() {
                "a list".into()
            } else {
                format!("a list of {inner}s")
            }
        }
        Some("string") => "a string".into(),
        Some("integer") => "an integer".into(),
        Some("number") => "a number".into(),
        Some("boolean") => "a boolean".into(),
        _ => "a value".into(),
    }
}

fn type_hint(node: &Node, schema: &J) -> String {
    let expected = schema.get("type").and_then(J::as_str).unwrap_or("");
    match (&node.value, expected) {
        (Value::Null, _) => "give it a value or remove the key".into(),
        (Value::Int(_) | Value::Float(_) | Value::Bool(_), "string") => {
            format!(
                "quote it to make it a string: `\"{}\"`",
                preview(node).trim().trim_matches('`')
            )
        }
        (Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_), "array") => format!(
            "write a list: `[{}]`, or one `- item` per line",
            preview(node).trim().trim_matches('`')
        ),
        (Value::Seq(_), "object" | "string" | "integer") => {
            "this field takes a single value, not a list".into()
        }
        (Value::Str(s), "integer") if s.trim().parse::<i64>().is_ok() => {
            format!("remove the quotes: `{}`", s.trim())
        }
        _ => format!("write {} here", type_word(schema)),
    }
}

/// Walks `node` against `schema`, appending diagnostics with positions and paths.
pub fn check(node: &Node, schema: &J, path: &str, out: &mut Vec<Diagnostic>) {
    let field_name = last_key(path);
    let field = if path.ends_with(']') {
        format!("each entry of `{field_name}`")
    } else {
        format!("`{field_name}`")
    };
    let field = field.as_str();
    if node.value == Value::Null {
        if schema.get("nullable").and_then(J::as_bool) != Some(true) {
            out.push(
                Diagnostic::new(
                    codes::WRONG_TYPE,
                    format!("{field} is empty; it must be {}", type_word(schema)),
                )
                .hint(type_hint(node, schema))
                .path(path)
                .at(node.pos.line, node.pos.column),
            );
        }
        return;
    }
    let wrong = |out: &mut Vec<Diagnostic>| {
        out.push(
            Diagnostic::new(
                codes::WRONG_TYPE,
                format!(
                    "{field} must be {}, found {}{}",
                    type_word(schema),
                    node.value.type_name(),
                    preview(node)
                ),
            )
            .hint(type_hint(node, schema))
            .path(path)
            .at(node.pos.line, node.pos.column),
        );
    };
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(J::as_bool)
        == Some(true)
    {
        if !matches!(node.value, Value::Int(_) | Value::Str(_)) {
            wrong(out);
        }
        return;
    }
    match (schema.get("type").and_then(J::as_str), &node.value) {
        (Some("object"), Value::Map(entries)) => {
            let props = schema.get("properties").and_then(J::as_object);
            for e in entries {
                let child_path = join(path, &e.key);
                match props.and_then(|p| p.get(&e.key)) {
                    Some(child) => check(&e.value, child, &child_path, out),
                    None => match schema.get("additionalProperties") {
                        Some(J::Bool(true)) => {}
                        Some(extra @ J::Object(_)) => check(&e.value, extra, &child_path, out),
                        _ => {
                            let known: Vec<&str> = props
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            out.push(unknown_field(&e.key, e.key_pos, path, &child_path, &known));
                        }
                    },
                }
            }
            if let Some(required) = schema.get("required").and_then(J::as_array) {
                for r in required.iter().filter_map(J::as_str) {
                    if !entries.iter().any(|e| e.key == r) {
                        let what = if field_name.is_empty() {
                            "document".to_string()
                        } else {
                            format!("`{field_name}` entry")
                        };
                        let expected = props
                            .and_then(|p| p.get(r))
                            .map(type_word)
                            .unwrap_or_default();
                        out.push(
                            Diagnostic::new(
                                codes::MISSING_FIELD,
                                format!("missing required field `{r}` in this {what}"),
                            )
                            .hint(format!("add `{r}:` ({expected})"))
                            .path(path)
                            .at(node.pos.line, node.pos.column),
                        );
                    }
                }
            }
        }
        (Some("array"), Value::Seq(items)) => {
            if let Some(max) = schema.get("maxItems").and_then(J::as_u64) {
                if items.len() as u64 > max {
                    out.push(
                        Diagnostic::new(
                            codes::TOO_MANY_ENTRIES,
                            format!(
                                "{field} has {} entries; at most {max} are allowed (the API server refuses more)",
                                items.len()
                            ),
                        )
                        .hint(format!(
                            "keep at most {max} entries in `{field_name}`; docs/lint.md#bw093 lists each limit and where it comes from"
                        ))
                        .path(path)
                        .at(node.pos.line, node.pos.column),
                    );
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        (Some("string"), Value::Str(s)) => check_enum(node, s, schema, path, out),
        (Some("integer"), Value::Int(i)) => {
            if let Some(min) = schema.get("minimum").and_then(J::as_f64) {
                if (*i as f64) < min {
                    out.push(
                        Diagnostic::new(
                            codes::WRONG_TYPE,
                            format!("{field} must be at least {min}, found {i}"),
                        )
                        .hint(format!("use a value of {min} or more"))
                        .path(path)
                        .at(node.pos.line, node.pos.column),
                    );
                }
            }
        }
        (Some("number"), Value::Int(_) | Value::Float(_))
        | (Some("boolean"), Value::Bool(_))
        | (None, _) => {}
        _ => wrong(out),
    }
}

fn unknown_field(key: &str, pos: Pos, parent_path: &str, path: &str, known: &[&str]) -> Diagnostic {
    let parent = last_key(parent_path);
    let within = if parent.is_empty() {
        "this document".to_string()
    } else if parent_path.ends_with(']') {
        format!("a `{parent}` entry")
    } else {
        format!("`{parent}`")
    };
    let hint = match (
        closest(key, known.iter().copied()),
        placement_hint(key, parent_path),
    ) {
        (_, Some(h)) => h,
        (Some(c), None) => format!("did you mean `{c}`?"),
        (None, None) => format!("remove it; {within} accepts {}", quote_list(known)),
    };
    Diagnostic::new(
        codes::UNKNOWN_FIELD,
        format!("unknown field `{key}` in {within}"),
    )
    .hint(hint)
    .path(path)
    .at(pos.line, pos.column)
}

fn check_enum(node: &Node, s: &str, schema: &J, path: &str, out: &mut Vec<Diagnostic>) {
    let Some(allowed) = schema.get("enum").and_then(J::as_array) else {
        return;
    };
    let allowed: Vec<&str> = allowed.iter().filter_map(J::as_str).collect();
    if allowed.contains(&s) {
        return;
    }
    let field = last_key(path);
    const STRING_OPERATORS: &[&str] = &["Prefix", "NotPrefix", "Postfix", "NotPostfix", "Equal"];
    const INT_OPERATORS: &[&str] = &["NotEqual", "Mask", "GreaterThan", "LessThan"];
    let list = path
        .rsplit('.')
        .nth(1)
        .and_then(|p| p.split('[').next())
        .unwrap_or("");
    let d = if field == "operator" && list == "matchArgs" && INT_OPERATORS.contains(&s) {
        // Tetragon's matchArgs is a kernel function's arguments; bulwark's is argv.
        Diagnostic::new(
            codes::OPERATOR_NOT_ALLOWED,
            format!("operator `{s}` is not valid in `matchArgs`: in bulwark `matchArgs` is the process's argv (strings) on every hook, not a system call's arguments as in Tetragon"),
        )
        .hint("for a system call's integer arguments use `matchSyscallArgs: [{index: N, operator: ..., values: [...]}]` on `hook: syscall`")
    } else if field == "operator"
        && (list == "matchSyscallArgs" || list == "matchReturn")
        && !allowed.contains(&s)
        && s != "In"
        && s != "NotIn"
        && closest(s, allowed.iter().copied()).is_none()
    {
        Diagnostic::new(
            codes::OPERATOR_NOT_ALLOWED,
            format!("operator `{s}` is not valid in `{list}`, which compares integers: {}", quote_list(&allowed)),
        )
        .hint("use `Equal` or `NotEqual` with a list of values, `Mask` for bits, `GreaterThan` / `LessThan` for ranges")
    } else if field == "operator"
        && (list == "matchSyscallArgs" || list == "matchReturn")
        && (s == "In" || s == "NotIn")
    {
        Diagnostic::new(
            codes::OPERATOR_NOT_ALLOWED,
            format!(
                "operator `{s}` is not valid in `{list}`, which compares integers: {}",
                quote_list(&allowed)
            ),
        )
        .hint(format!(
            "use `{}`: it holds when the value is {} of `values`",
            if s == "In" { "Equal" } else { "NotEqual" },
            if s == "In" { "one" } else { "none" }
        ))
    } else if field == "operator" && allowed == ["In", "NotIn"] && STRING_OPERATORS.contains(&s) {
        Diagnostic::new(
            codes::OPERATOR_NOT_ALLOWED,
            format!(
                "operator `{s}` is not valid in `{list}`, which supports only `In` and `NotIn`"
            ),
        )
        .hint(if list == "matchDestinations" {
            "use `In` or `NotIn` with CIDRs (prefix matching on addresses is what a CIDR does)"
                .to_string()
        } else {
            "use `In` or `NotIn` with the full names".to_string()
        })
    } else {
        let hint = match closest(s, allowed.iter().copied()) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("use one of {}", quote_list(&allowed)),
        };
        Diagnostic::new(
            codes::INVALID_ENUM,
            format!(
                "`{s}` is not a valid `{field}`; allowed: {}",
                quote_list(&allowed)
            ),
        )
        .hint(hint)
    };
    out.push(d.path(path).at(node.pos.line, node.pos.column));
}

fn at(code: Code, msg: String, hint: String, path: &str, pos: Pos) -> Diagnostic {
    Diagnostic::new(code, msg)
        .hint(hint)
        .path(path)
        .at(pos.line, pos.column)
}

/// Checks one document's envelope and structure. Returns the kind when the document is a
/// bulwark policy (even if it has errors), `None` when it is not one at all.
pub fn check_document(doc: &Document, out: &mut Vec<Diagnostic>) -> Option<Kind> {
    let root = &doc.root;
    let Value::Map(_) = &root.value else {
        out.push(at(
            codes::NOT_AN_OBJECT,
            format!(
                "a policy document must be a mapping, found {}",
                root.value.type_name()
            ),
            "start the document with `apiVersion: bulwark.dev/v1alpha1` and `kind: TracingPolicy`"
                .into(),
            "",
            root.pos,
        ));
        return None;
    };
    // apiVersion
    let api = root.entry("apiVersion");
    let api_str = api.and_then(|e| e.value.as_str());
    let is_tetragon = api_str.is_some_and(|a| a.starts_with("cilium.io/"))
        || (api_str.is_none()
            && root
                .get("spec")
                .is_some_and(|s| s.get("kprobes").is_some() || s.get("tracepoints").is_some()));
    if is_tetragon {
        let pos = api.map_or(doc.root.pos, |e| e.value.pos);
        out.push(at(
            codes::TETRAGON_POLICY,
            "this is a Cilium Tetragon policy (`cilium.io`), not a bulwark policy".into(),
            format!(
                "run `bulwark convert FILE` to translate it and see what does not map (docs/convert.md); by hand: set `apiVersion: {API_VERSION}`; replace `spec.kprobes`/`spec.tracepoints` with `spec.rules`, one per event, each with `name`, `hook: exec|connect|egress|ingress` and `selectors` (matchBinaries/matchArgs keep their Tetragon meaning; actions are Post, Sigkill, Block); see docs/lint.md"
            ),
            "apiVersion",
            pos,
        ));
        return None;
    }
    match api {
        None => {
            out.push(at(
                codes::API_VERSION,
                "missing `apiVersion`".into(),
                format!("add `apiVersion: {API_VERSION}` at the top of the document"),
                "",
                root.pos,
            ));
            return None;
        }
        Some(e) if api_str != Some(API_VERSION) => {
            let msg = match api_str {
                Some(a) if a.starts_with(&format!("{GROUP}/")) => {
                    format!("unsupported version `{a}`; this bulwark reads `{API_VERSION}`")
                }
                Some(a) => format!("`{a}` is not a bulwark policy apiVersion"),
                None => format!(
                    "`apiVersion` must be a string, found {}",
                    e.value.value.type_name()
                ),
            };
            out.push(at(
                codes::API_VERSION,
                msg,
                format!("use `apiVersion: {API_VERSION}`"),
                "apiVersion",
                e.value.pos,
            ));
            return None;
        }
        Some(_) => {}
    }
    // kind
    let kind = match root.entry("kind") {
        None => {
            out.push(at(
                codes::KIND,
                "missing `kind`".into(),
                "add `kind: TracingPolicy` (cluster-wide) or `kind: TracingPolicyNamespaced`"
                    .into(),
                "",
                root.pos,
            ));
            return None;
        }
        Some(e) => match e.value.as_str() {
            Some("TracingPolicy") => Kind::Cluster,
            Some("TracingPolicyNamespaced") => Kind::Namespaced,
            other => {
                let hint = match other.and_then(|k| closest(k, KINDS.iter().copied())) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "use `TracingPolicy` (cluster-wide) or `TracingPolicyNamespaced` (one namespace)".into(),
                };
                let shown = other.map_or_else(
                    || e.value.value.type_name().to_string(),
                    |k| format!("`{k}`"),
                );
                out.push(at(
                    codes::KIND,
                    format!("{shown} is not a bulwark policy kind"),
                    hint,
                    "kind",
                    e.value.pos,
                ));
                return None;
            }
        },
    };
    // top-level fields
    const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
    if let Value::Map(entries) = &root.value {
        for e in entries.iter().filter(|e| !TOP.contains(&e.key.as_str())) {
            out.push(unknown_field(&e.key, e.key_pos, "", &e.key, TOP));
        }
    }
    check_metadata(root, kind, out);
    let schema = policy_schema();
    let props = schema.get("properties");
    match root.get("spec") {
        None => out.push(at(
            codes::MISSING_FIELD,
            "missing `spec`".into(),
            "add `spec:` with `rules:` (and optionally `mode: enforce|monitor`)".into(),
            "",
            root.pos,
        )),
        Some(spec) => {
            if let Some(s) = props.and_then(|p| p.get("spec")) {
                check(spec, s, "spec", out);
            }
        }
    }
    if let (Some(status), Some(s)) = (root.get("status"), props.and_then(|p| p.get("status"))) {
        check(status, s, "status", out);
    }
    Some(kind)
}

fn check_metadata(root: &Node, kind: Kind, out: &mut Vec<Diagnostic>) {
    let Some(meta_entry) = root.entry("metadata") else {
        out.push(at(
            codes::MISSING_NAME,
            "missing `metadata` (a policy needs `metadata.name`)".into(),
            "add `metadata:` with `name: <dns-1123-name>`".into(),
            "",
            root.pos,
        ));
        return;
    };
    let meta = &meta_entry.value;
    let Value::Map(entries) = &meta.value else {
        out.push(at(
            codes::WRONG_TYPE,
            format!(
                "`metadata` must be a mapping, found {}",
                meta.value.type_name()
            ),
            "write `metadata:` with `name: <dns-1123-name>` on the next line, indented".into(),
            "metadata",
            meta.pos,
        ));
        return;
    };
    let known: Vec<&str> = OBJECT_META.iter().map(|(k, _)| *k).collect();
    for e in entries {
        let path = format!("metadata.{}", e.key);
        let Some((_, ty)) = OBJECT_META.iter().find(|(k, _)| *k == e.key) else {
            out.push(unknown_field(&e.key, e.key_pos, "metadata", &path, &known));
            continue;
        };
        let v = &e.value;
        let ok = match *ty {
            "string" => matches!(v.value, Value::Str(_)),
            "integer" => matches!(v.value, Value::Int(_)),
            "array" => matches!(v.value, Value::Seq(_)),
            "stringlist" => {
                matches!(&v.value, Value::Seq(items) if items.iter().all(|i| i.as_str().is_some()))
            }
            "stringmap" => {
                if let Value::Map(kv) = &v.value {
                    for item in kv.iter().filter(|i| i.value.as_str().is_none()) {
                        out.push(at(
                            codes::WRONG_TYPE,
                            format!(
                                "`{}` values must be strings, found {}",
                                e.key,
                                item.value.value.type_name()
                            ),
                            format!(
                                "quote it: `{}: \"{}\"`",
                                item.key,
                                preview(&item.value).trim().trim_matches('`')
                            ),
                            &format!("{path}.{}", item.key),
                            item.value.pos,
                        ));
                    }
                    true
                } else {
                    false
                }
            }
            _ => true,
        };
        if !ok {
            let want = match *ty {
                "stringlist" => "a list of strings",
                "stringmap" => "a mapping of strings",
                "array" => "a list",
                "integer" => "an integer",
                _ => "a string",
            };
            out.push(at(
                codes::WRONG_TYPE,
                format!(
                    "`metadata.{}` must be {want}, found {}",
                    e.key,
                    v.value.type_name()
                ),
                if *ty == "string"
                    && !matches!(v.value, Value::Seq(_) | Value::Map(_) | Value::Null)
                {
                    "quote it to make it a string".into()
                } else {
                    format!("write {want} here")
                },
                &path,
                v.pos,
            ));
        }
    }
    match meta.get("name") {
        None if meta.get("generateName").is_none() => out.push(at(
            codes::MISSING_NAME,
            "missing `metadata.name`".into(),
            "add `name: <dns-1123-name>` under `metadata` (lowercase letters, digits, `-`, `.`)"
                .into(),
            "metadata",
            meta_entry.key_pos,
        )),
        _ => {}
    }
    if kind == Kind::Cluster {
        if let Some(ns) = meta.entry("namespace") {
            out.push(at(
                codes::UNKNOWN_FIELD,
                "`metadata.namespace` on a cluster-scoped `TracingPolicy` is ignored".into(),
                "remove it, or use `kind: TracingPolicyNamespaced` to confine the policy to that namespace".into(),
                "metadata.namespace",
                ns.key_pos,
            )
            .severity(crate::diagnostics::Severity::Warning));
        }
    }
}
