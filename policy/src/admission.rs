//! What the API server refuses at `kubectl apply`: the limits, patterns, formats, list-map keys
//! and `x-kubernetes-validations` (CEL) rules added to the CRD schema generated from the model
//! types. Each one mirrors a lint check, and a CEL rule's message starts with that check's code
//! (`BW060: ...`), so `kubectl apply` and `bulwark lint` say the same thing. What only bulwark
//! can judge (contradictions, shadowing, the capacity of a whole set) stays in `status`.
//!
//! Two constraints shape this: a CEL rule's estimated cost is multiplied by the `maxItems` of
//! every list above it, so per-value checks deep in a selector (CIDRs, ports, namespace names)
//! are `format`/`pattern` validations, which have no cost; and a bound here is also a lint
//! check ([`crate::schema`] reads `maxItems` from this same schema), so every bound is one the
//! kernel maps or the model impose, never an arbitrary one.

use crate::diagnostics::{codes, Code};
use daemon_common as limits;
use serde_json::{json, Value as J};

/// A DNS-1123 label: what Kubernetes namespace names and bulwark rule names are.
pub const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A port `1`..`65535` (leading zeros and `+` allowed, as Rust reads integers) or a range of
/// two, blanks around either end, as [`crate::values::parse_port`] reads text; whether a range
/// is low to high is the lint's to judge (BW053).
pub const PORT_TEXT: &str = concat!(
    r"^\s*\+?0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])\s*",
    r"(-\s*\+?0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])\s*)?$"
);

/// `matchActions` never needs more entries than there are actions.
const MAX_ACTIONS: u64 = 3;

fn rule(code: Code, rule: &str, message: &str) -> J {
    json!({ "rule": rule, "message": format!("{}: {message}", code.id) })
}

/// A rule whose message names the offending value as the lint does: `parts` are CEL string
/// expressions (`'text'` literals or `self.name`) joined with `+`; `message` is the fixed
/// fallback the API server uses if the expression fails.
fn rule_naming(code: Code, rule: &str, message: &str, parts: &[&str]) -> J {
    let mut r = self::rule(code, rule, message);
    r["messageExpression"] = json!(format!("'{}: ' + {}", code.id, parts.join(" + ")));
    r
}

/// The schema node at a path of property names, `[]` stepping into a list's items
/// (`spec.rules[].selectors[]`). `None` when the generated schema has no such node.
fn node<'a>(schema: &'a mut J, path: &str) -> Option<&'a mut J> {
    let mut n = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, lists) = match part.find('[') {
            Some(i) => (&part[..i], part[i..].matches("[]").count()),
            None => (part, 0),
        };
        n = n.get_mut("properties")?.get_mut(name)?;
        for _ in 0..lists {
            n = n.get_mut("items")?;
        }
    }
    Some(n)
}

/// Adds `fields` to the schema node at `path`; appends to its `x-kubernetes-validations`.
fn refine(schema: &mut J, path: &str, fields: J) {
    let Some(J::Object(target)) = node(schema, path) else {
        // Only reachable if the model loses a field; the unit tests pin every path.
        panic!("admission: no schema node at `{path}`");
    };
    let J::Object(fields) = fields else { return };
    for (k, v) in fields {
        match (k.as_str(), target.get_mut(&k), v) {
            ("x-kubernetes-validations", Some(J::Array(have)), J::Array(more)) => have.extend(more),
            (_, _, v) => {
                target.insert(k, v);
            }
        }
    }
}

/// Removes `null` from every `enum` (schemars lists it for an `Option` of an enum; `kubectl
/// explain` then prints `<no value>`). The fields stay `nullable`: a null is still accepted.
fn drop_null_from_enums(n: &mut J) {
    match n {
        J::Object(map) => {
            if let Some(J::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        J::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}

/// A selector with at least one condition (an empty list is none), as the lint counts them.
const SELECTOR_HAS_CONDITIONS: &str = "(has(s.matchBinaries) && size(s.matchBinaries) > 0) || (has(s.matchArgs) && size(s.matchArgs) > 0) || (has(s.matchNamespaces) && size(s.matchNamespaces) > 0) || (has(s.matchExecKinds) && size(s.matchExecKinds) > 0) || (has(s.matchDestinations) && size(s.matchDestinations) > 0) || has(s.matchEncryption) || (has(s.matchSyscallArgs) && size(s.matchSyscallArgs) > 0) || (has(s.matchReturn) && size(s.matchReturn) > 0) || (has(s.matchPaths) && size(s.matchPaths) > 0) || (has(s.matchAccess) && size(s.matchAccess) > 0)";

/// The checks a policy's `openAPIV3Schema` gets. `cluster`: a `TracingPolicy`, whose selectors
/// have no implicit namespace condition.
pub fn refine_policy_schema(schema: &mut J, cluster: bool) {
    drop_null_from_enums(schema);
    let sel = "spec.rules[].selectors[]";
    let max = |n: usize| n as u64;

    refine(
        schema,
        "spec.rules",
        json!({
            // Each rule needs a selector, and a policy's selectors all go into one selector
            // group (a node holds many groups), which holds MAX_SELECTORS of them.
            "maxItems": max(limits::MAX_SELECTORS),
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            // Naming the duplicate in a messageExpression costs more than the budget allows;
            // the list-map's own error names it (`Duplicate value: {"name":"..."}`).
            "x-kubernetes-validations": [rule(
                codes::DUPLICATE_RULE,
                "self.all(r, self.exists_one(x, x.name == r.name))",
                "rule names must be unique within a policy: events and violations name the rule",
            )],
        }),
    );
    refine(
        schema,
        "spec.rules[]",
        json!({ "x-kubernetes-validations": [
            rule_naming(
                codes::INVALID_NAME,
                &format!("self.name.matches('{DNS1123_LABEL}')"),
                "a rule name must be a DNS-1123 label (lowercase letters, digits and `-`, at most 63 characters)",
                &[
                    "'rule name `'",
                    "self.name",
                    "'` is not a valid DNS-1123 label (lowercase letters, digits and `-`, at most 63 characters)'",
                ],
            ),
            rule(
                codes::ACTION_NOT_ALLOWED,
                "self.hook != 'exec' || self.selectors.all(s, !has(s.matchActions) || s.matchActions.all(a, a.action != 'Block'))",
                "action `Block` is not allowed on `hook: exec`; it allows `Post`, `Sigkill` (use `Sigkill` to stop an exec)",
            ),
            rule(
                codes::ACTION_NOT_ALLOWED,
                "self.hook != 'syscall' || self.selectors.all(s, !has(s.matchActions) || s.matchActions.all(a, a.action != 'Block'))",
                "action `Block` is not allowed on `hook: syscall`; it allows `Post`, `Sigkill` (use `Sigkill` to stop the caller)",
            ),
            rule(
                codes::SYSCALL_FIELD_OFF_HOOK,
                "self.hook == 'syscall' || self.selectors.all(s, !has(s.matchSyscalls) && !has(s.matchSyscallArgs) && !has(s.matchReturn))",
                "`matchSyscalls`, `matchSyscallArgs` and `matchReturn` are only valid with `hook: syscall`",
            ),
            rule(
                codes::NO_SYSCALLS,
                "self.hook != 'syscall' || self.selectors.all(s, has(s.matchSyscalls) && size(s.matchSyscalls) > 0)",
                "a `hook: syscall` selector must name its system calls in `matchSyscalls`",
            ),
            rule(
                codes::ACTION_NOT_ALLOWED,
                "self.hook != 'file' || self.selectors.all(s, !has(s.matchActions) || s.matchActions.all(a, a.action != 'Block'))",
                "action `Block` is not allowed on `hook: file`; it allows `Post`, `Sigkill` (use `Sigkill` to stop the caller)",
            ),
            rule(
                codes::FILE_FIELD_OFF_HOOK,
                "self.hook == 'file' || self.selectors.all(s, !has(s.matchPaths) && !has(s.matchAccess))",
                "`matchPaths` and `matchAccess` are only valid with `hook: file`",
            ),
            rule(
                codes::NO_PATHS,
                "self.hook != 'file' || self.selectors.all(s, has(s.matchPaths) && size(s.matchPaths) > 0)",
                "a `hook: file` selector must name its files in `matchPaths`",
            ),
            rule_naming(
                codes::ACTION_NOT_ALLOWED,
                "self.hook == 'exec' || self.hook == 'syscall' || self.hook == 'file' || self.selectors.all(s, !has(s.matchActions) || s.matchActions.all(a, a.action != 'Sigkill'))",
                "action `Sigkill` is not allowed on `hook: connect`, `egress` or `ingress`; they allow `Post`, `Block` (use `Block` to refuse the connection or send)",
                &[
                    "'action `Sigkill` is not allowed on `hook: '",
                    "self.hook",
                    "'`; it allows `Post`, `Block` (use `Block` to refuse the connection or send)'",
                ],
            ),
            rule_naming(
                codes::DESTINATIONS_ON_EXEC,
                "self.hook != 'exec' || self.selectors.all(s, !has(s.matchDestinations) || size(s.matchDestinations) == 0)",
                "`matchDestinations` with `hook: exec`: an exec has no destination; use `hook: connect` or `egress`",
                &[
                    "'`matchDestinations` on rule `'",
                    "self.name",
                    "'` with `hook: exec`: an exec has no destination (use `hook: connect` or `egress`)'",
                ],
            ),
            rule(
                codes::UDP_ON_EGRESS,
                "(self.hook != 'egress' && self.hook != 'ingress') || self.selectors.all(s, !has(s.matchDestinations) || s.matchDestinations.all(d, d.operator != 'In' || !has(d.protocol) || d.protocol != 'UDP'))",
                "`protocol: UDP` on the egress or ingress hook never matches: only TCP payloads are classified (use `hook: connect` to act on UDP)",
            ),
            rule_naming(
                codes::ENCRYPTION_OFF_EGRESS,
                "self.hook == 'egress' || self.hook == 'ingress' || self.selectors.all(s, !has(s.matchEncryption))",
                "`matchEncryption` is only valid with `hook: egress` or `ingress`: encryption is decided from the first payload, which only those hooks see",
                &[
                    "'`matchEncryption` on rule `'",
                    "self.name",
                    "'` with `hook: '",
                    "self.hook",
                    "'`: encryption is decided from the first payload, which only the egress and ingress hooks see'",
                ],
            ),
        ]}),
    );
    if cluster {
        let enforcing = "has(s.matchActions) && s.matchActions.exists(a, a.action == 'Sigkill' || a.action == 'Block')";
        refine(
            schema,
            "spec.rules[]",
            json!({ "x-kubernetes-validations": [rule_naming(
                codes::NO_CONDITIONS_ENFORCING,
                &format!("self.selectors.all(s, !({enforcing}) || {SELECTOR_HAS_CONDITIONS})"),
                "a selector with `Sigkill` or `Block` and no conditions would kill or block every event of its hook; add conditions (matchBinaries, matchNamespaces, matchDestinations, ...)",
                &[
                    "'a selector of rule `'",
                    "self.name",
                    "'` has no conditions, so its enforcing action applies to every '",
                    "(self.hook == 'exec' ? 'exec on every host process and workload' : self.hook == 'connect' ? 'connect on the node' : self.hook == 'syscall' ? 'call of the named system calls by any process on the node' : self.hook == 'file' ? 'access to the named files by any process on the node' : 'outbound TCP connection on the node')",
                    "' (add conditions: matchBinaries, matchNamespaces, matchDestinations, ...)'",
                ],
            )]}),
        );
    }
    refine(schema, "spec.rules[].name", json!({ "maxLength": 63 }));
    refine(
        schema,
        "spec.rules[].selectors",
        json!({ "minItems": 1, "maxItems": max(limits::MAX_SELECTORS) }),
    );
    let conditions = [
        ("matchBinaries", limits::MAX_PROC_CONDITIONS),
        ("matchArgs", limits::MAX_PROC_CONDITIONS),
        ("matchNamespaces", limits::MAX_PROC_CONDITIONS),
        ("matchExecKinds", limits::MAX_PROC_CONDITIONS),
        ("matchDestinations", limits::MAX_DEST_CONDITIONS),
    ];
    for (field, limit) in conditions {
        refine(
            schema,
            &format!("{sel}.{field}"),
            json!({ "maxItems": max(limit) }),
        );
    }
    refine(
        schema,
        &format!("{sel}.matchActions"),
        json!({ "maxItems": MAX_ACTIONS }),
    );
    let values = [
        ("matchBinaries", limits::MAX_BINARY_VALUES),
        ("matchArgs", limits::MAX_ARG_VALUES),
        ("matchNamespaces", limits::MAX_NAMESPACES),
    ];
    for (field, limit) in values {
        refine(
            schema,
            &format!("{sel}.{field}[].values"),
            json!({ "minItems": 1, "maxItems": u64::from(limit) }),
        );
    }
    refine(
        schema,
        &format!("{sel}.matchExecKinds[].values"),
        json!({ "minItems": 1 }),
    );
    for field in ["matchSyscalls", "matchSyscallArgs", "matchReturn"] {
        refine(
            schema,
            &format!("{sel}.{field}[].values"),
            json!({ "minItems": 1 }),
        );
    }
    refine(
        schema,
        &format!("{sel}.matchSyscalls[].values"),
        json!({ "maxItems": max(limits::SYSCALL_NR_LIMIT as usize) }),
    );
    for field in ["matchSyscallArgs", "matchReturn"] {
        refine(
            schema,
            &format!("{sel}.{field}"),
            json!({ "maxItems": max(limits::MAX_SYSCALL_CONDS) }),
        );
        refine(
            schema,
            &format!("{sel}.{field}[].values"),
            json!({ "maxItems": max(limits::MAX_SYSCALL_CONDS) }),
        );
    }
    refine(
        schema,
        &format!("{sel}.matchBinaries[].values[]"),
        json!({ "maxLength": max(limits::PATH_EXACT_LEN.max(limits::PATH_AFFIX_LEN)) }),
    );
    refine(
        schema,
        &format!("{sel}.matchArgs[].values[]"),
        json!({ "maxLength": max(limits::ARG_LEN) }),
    );
    for field in ["matchPaths", "matchAccess"] {
        refine(
            schema,
            &format!("{sel}.{field}[].values"),
            json!({ "minItems": 1 }),
        );
    }
    refine(
        schema,
        &format!("{sel}.matchPaths"),
        json!({ "maxItems": max(limits::MAX_FILE_PATH_CONDS) }),
    );
    refine(
        schema,
        &format!("{sel}.matchPaths[].values"),
        json!({ "maxItems": u64::from(limits::MAX_FILE_VALUES) }),
    );
    refine(
        schema,
        &format!("{sel}.matchPaths[].values[]"),
        json!({ "maxLength": max(limits::PATH_EXACT_LEN.max(limits::PATH_AFFIX_LEN)) }),
    );
    refine(
        schema,
        &format!("{sel}.matchArgs[].index"),
        json!({ "maximum": max(limits::MAX_ARGS - 1) }),
    );
    refine(
        schema,
        &format!("{sel}.matchNamespaces[].values[]"),
        json!({ "maxLength": 63, "pattern": DNS1123_LABEL }),
    );
    refine(
        schema,
        &format!("{sel}.matchDestinations[].cidrs"),
        json!({ "maxItems": u64::from(limits::MAX_CIDRS) }),
    );
    refine(
        schema,
        &format!("{sel}.matchDestinations[].cidrs[]"),
        json!({ "anyOf": [{ "format": "cidr" }, { "format": "ipv4" }, { "format": "ipv6" }] }),
    );
    refine(
        schema,
        &format!("{sel}.matchDestinations[].ports"),
        json!({ "maxItems": u64::from(limits::MAX_PORT_PREFIXES) }),
    );
    refine(
        schema,
        &format!("{sel}.matchDestinations[].ports[]"),
        json!({ "minimum": 1, "maximum": 65535, "pattern": PORT_TEXT }),
    );
}

/// Applies [`refine_policy_schema`] to a CRD's every version.
pub fn refine_crd(crd: &mut crate::CustomResourceDefinition) {
    let cluster = crd.spec.scope == "Cluster";
    let Ok(mut json) = serde_json::to_value(&*crd) else {
        return;
    };
    // kube-derive describes the root as "Auto-generated derived type ..."; `kubectl explain`
    // shows it first.
    let description = if cluster {
        "A cluster-wide bulwark policy: rules that report, kill or block process executions, connections and outbound payloads of host processes and every workload. `bulwark lint` checks a policy offline; the API server refuses what it can check itself, and `status` reports the rest."
    } else {
        "A bulwark policy confined to workloads in its own namespace: rules that report, kill or block process executions, connections and outbound payloads. `bulwark lint` checks a policy offline; the API server refuses what it can check itself, and `status` reports the rest."
    };
    if let Some(J::Array(versions)) = json.pointer_mut("/spec/versions") {
        for v in versions {
            if let Some(schema) = v.pointer_mut("/schema/openAPIV3Schema") {
                refine_policy_schema(schema, cluster);
                schema["description"] = json!(description);
            }
        }
    }
    if let Ok(refined) = serde_json::from_value(json) {
        *crd = refined;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::code_info;

    /// `(code of message, messageExpression)` of every CEL rule in `n`.
    fn cel_rules(n: &J, out: &mut Vec<(String, Option<String>)>) {
        match n {
            J::Object(map) => {
                if let Some(J::Array(rules)) = map.get("x-kubernetes-validations") {
                    for r in rules {
                        let message = r.get("message").and_then(J::as_str).unwrap_or("");
                        let code = message.split(':').next().unwrap_or("").to_string();
                        let expression = r
                            .get("messageExpression")
                            .and_then(J::as_str)
                            .map(str::to_string);
                        out.push((code, expression));
                    }
                }
                map.values().for_each(|v| cel_rules(v, out));
            }
            J::Array(items) => items.iter().for_each(|v| cel_rules(v, out)),
            _ => {}
        }
    }

    fn schemas() -> Vec<(String, J)> {
        crate::crds()
            .into_iter()
            .map(|c| {
                let kind = c.spec.names.kind.clone();
                let json = serde_json::to_value(c).unwrap();
                let schema = json
                    .pointer("/spec/versions/0/schema/openAPIV3Schema")
                    .cloned()
                    .unwrap();
                (kind, schema)
            })
            .collect()
    }

    #[test]
    fn every_cel_message_names_a_lint_code() {
        for (kind, schema) in schemas() {
            let mut rules = Vec::new();
            cel_rules(&schema, &mut rules);
            assert!(rules.len() >= 7, "{kind}: {rules:?}");
            for (c, expression) in &rules {
                assert!(code_info(c).is_some(), "{kind}: `{c}` is not a lint code");
                if let Some(e) = expression {
                    assert!(e.starts_with(&format!("'{c}: ' + ")), "{kind}: {e}");
                }
            }
            let codes: Vec<&String> = rules.iter().map(|(c, _)| c).collect();
            // An enforcing selector without conditions is fine in a namespaced policy, whose
            // namespace is always a condition.
            assert_eq!(
                codes.iter().any(|c| c.as_str() == "BW043"),
                kind == "TracingPolicy",
                "{kind}"
            );
        }
    }

    #[test]
    fn no_enum_lists_null() {
        fn walk(n: &J, path: &str) {
            match n {
                J::Object(m) => {
                    if let Some(J::Array(e)) = m.get("enum") {
                        assert!(e.iter().all(|v| !v.is_null()), "{path}: {e:?}");
                    }
                    m.iter().for_each(|(k, v)| walk(v, &format!("{path}.{k}")));
                }
                J::Array(a) => a.iter().for_each(|v| walk(v, path)),
                _ => {}
            }
        }
        for (_, schema) in schemas() {
            walk(&schema, "");
        }
    }

    #[test]
    fn limits_come_from_the_kernel_contract() {
        let (_, mut schema) = schemas().remove(0);
        let sel = "spec.rules[].selectors[]";
        let get = |s: &mut J, p: &str, k: &str| node(s, p).and_then(|n| n.get(k)).cloned();
        assert_eq!(
            get(&mut schema, "spec.rules", "maxItems"),
            Some(json!(limits::MAX_SELECTORS))
        );
        assert_eq!(
            get(&mut schema, "spec.rules", "x-kubernetes-list-map-keys"),
            Some(json!(["name"]))
        );
        assert_eq!(
            get(
                &mut schema,
                &format!("{sel}.matchBinaries[].values"),
                "maxItems"
            ),
            Some(json!(limits::MAX_BINARY_VALUES))
        );
        assert_eq!(
            get(&mut schema, &format!("{sel}.matchArgs[].index"), "maximum")
                .and_then(|v| v.as_f64()),
            Some((limits::MAX_ARGS - 1) as f64)
        );
        assert_eq!(
            get(
                &mut schema,
                &format!("{sel}.matchArgs[].values[]"),
                "maxLength"
            ),
            Some(json!(limits::ARG_LEN))
        );
        assert!(node(&mut schema, "spec.nothing").is_none());
    }

    #[test]
    fn port_pattern_accepts_what_parse_port_reads() {
        use crate::values::{parse_port, PortError};
        use crate::PortSpec;
        let pattern = regex::Regex::new(PORT_TEXT).unwrap();
        let texts = [
            "1",
            "443",
            "0443",
            "65535",
            "8000-8080",
            " 80 - 90 ",
            "9-1",
            "0",
            "00",
            "65536",
            "99999",
            "123456",
            "9-",
            "-9",
            "https",
            "1-2-3",
            "",
            " ",
            "1-65536",
            "0-5",
            "+5",
            "+0",
            "1-+2",
            "++5",
        ];
        for t in texts {
            // A range written high to low is the lint's to judge (BW053), not the server's.
            let reads = matches!(
                parse_port(&PortSpec::Text(t.into())),
                Ok(_) | Err(PortError::Reversed { .. })
            );
            assert_eq!(pattern.is_match(t), reads, "`{t}`");
        }
        let label = regex::Regex::new(DNS1123_LABEL).unwrap();
        for n in ["a", "kube-system", "a1", "-a", "a-", "A", "a_b", "", "a.b"] {
            assert_eq!(
                label.is_match(n),
                crate::validate::is_dns1123_label(n),
                "`{n}`"
            );
        }
    }
}
