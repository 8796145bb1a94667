//! Test policies as YAML: a small builder for `TracingPolicy` documents (so each test states
//! exactly the selectors it exercises), and YAML <-> JSON-value helpers used to load and rewrite
//! the files in `policies/examples/` (their namespaces, paths and destinations adapted to the
//! test's world). Independent of the daemon's own policy crates on purpose: the tests speak the
//! documented YAML format, as an operator would.

use serde_json::{json, Map, Value};

/// Builds one `TracingPolicy`.
#[derive(Clone, Debug)]
pub struct PolicyBuilder {
    name: String,
    mode: Option<String>,
    rules: Vec<Value>,
}

impl PolicyBuilder {
    /// A policy called `name` (enforce mode unless [`PolicyBuilder::mode`] says otherwise).
    pub fn new(name: &str) -> PolicyBuilder {
        PolicyBuilder {
            name: name.to_string(),
            mode: None,
            rules: Vec::new(),
        }
    }

    /// `spec.mode`: `enforce` or `monitor`.
    pub fn mode(mut self, mode: &str) -> PolicyBuilder {
        self.mode = Some(mode.to_string());
        self
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: RuleBuilder) -> PolicyBuilder {
        self.rules.push(rule.build());
        self
    }

    /// The document as a JSON value.
    pub fn value(&self) -> Value {
        let mut spec = Map::new();
        if let Some(m) = &self.mode {
            spec.insert("mode".into(), json!(m));
        }
        spec.insert("rules".into(), Value::Array(self.rules.clone()));
        json!({
            "apiVersion": "bulwark.dev/v1alpha1",
            "kind": "TracingPolicy",
            "metadata": {"name": self.name},
            "spec": spec,
        })
    }

    /// The document as YAML.
    pub fn yaml(&self) -> String {
        to_yaml(&self.value())
    }
}

/// Builds one rule; selector methods add to the current selector, [`RuleBuilder::or`] starts
/// the next (selectors are ORed).
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    name: String,
    hook: String,
    selectors: Vec<Map<String, Value>>,
}

impl RuleBuilder {
    /// A rule on hook `hook` (`exec`, `connect`, `egress`, `syscall`, ...).
    pub fn new(name: &str, hook: &str) -> RuleBuilder {
        RuleBuilder {
            name: name.to_string(),
            hook: hook.to_string(),
            selectors: vec![Map::new()],
        }
    }

    pub fn exec(name: &str) -> RuleBuilder {
        RuleBuilder::new(name, "exec")
    }

    pub fn connect(name: &str) -> RuleBuilder {
        RuleBuilder::new(name, "connect")
    }

    pub fn egress(name: &str) -> RuleBuilder {
        RuleBuilder::new(name, "egress")
    }

    pub fn syscall(name: &str) -> RuleBuilder {
        RuleBuilder::new(name, "syscall")
    }

    /// Starts a new (ORed) selector.
    pub fn or(mut self) -> RuleBuilder {
        self.selectors.push(Map::new());
        self
    }

    fn push(mut self, field: &str, entry: Value) -> RuleBuilder {
        let sel = self.selectors.last_mut().expect("at least one selector");
        match sel
            .entry(field.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a.push(entry),
            other => *other = entry,
        }
        self
    }

    /// `matchBinaries: [{operator, values}]`
    pub fn binaries(self, operator: &str, values: &[&str]) -> RuleBuilder {
        self.push(
            "matchBinaries",
            json!({"operator": operator, "values": values}),
        )
    }

    /// `matchArgs: [{index, operator, values}]` (`index: None` means any argument).
    pub fn args(self, index: Option<u32>, operator: &str, values: &[&str]) -> RuleBuilder {
        let mut e = json!({"operator": operator, "values": values});
        if let Some(i) = index {
            e["index"] = json!(i);
        }
        self.push("matchArgs", e)
    }

    /// `matchSyscalls: [{operator, values}]` (call names).
    pub fn syscalls(self, operator: &str, values: &[&str]) -> RuleBuilder {
        self.push(
            "matchSyscalls",
            json!({"operator": operator, "values": values}),
        )
    }

    /// `matchReturn: [{operator, values}]` (`hook: syscall`: the call's return value).
    pub fn returns(self, operator: &str, values: &[&str]) -> RuleBuilder {
        self.push(
            "matchReturn",
            json!({"operator": operator, "values": values}),
        )
    }

    /// `matchNamespaces: [{operator, values}]`
    pub fn namespaces(self, operator: &str, values: &[&str]) -> RuleBuilder {
        self.push(
            "matchNamespaces",
            json!({"operator": operator, "values": values}),
        )
    }

    /// `matchExecKinds: [{operator, values}]` (`fileless`, `loader`).
    pub fn exec_kinds(self, operator: &str, values: &[&str]) -> RuleBuilder {
        self.push(
            "matchExecKinds",
            json!({"operator": operator, "values": values}),
        )
    }

    /// `matchDestinations: [{operator, cidrs, ports, protocol}]`; ports are written as numbers
    /// when they parse as one (`"443"`), else as strings (`"8000-8080"`).
    pub fn destinations(
        self,
        operator: &str,
        cidrs: &[&str],
        ports: &[&str],
        protocol: Option<&str>,
    ) -> RuleBuilder {
        let mut e = json!({"operator": operator});
        if !cidrs.is_empty() {
            e["cidrs"] = json!(cidrs);
        }
        if !ports.is_empty() {
            e["ports"] = Value::Array(
                ports
                    .iter()
                    .map(|p| p.parse::<u16>().map(|n| json!(n)).unwrap_or(json!(p)))
                    .collect(),
            );
        }
        if let Some(p) = protocol {
            e["protocol"] = json!(p);
        }
        self.push("matchDestinations", e)
    }

    /// `matchEncryption: plaintext | tls`
    pub fn encryption(mut self, enc: &str) -> RuleBuilder {
        self.selectors
            .last_mut()
            .expect("at least one selector")
            .insert("matchEncryption".into(), json!(enc));
        self
    }

    /// `matchActions: [{action}]` (`Post`, `Sigkill`, `Block`).
    pub fn action(self, action: &str) -> RuleBuilder {
        self.push("matchActions", json!({"action": action}))
    }

    fn build(self) -> Value {
        json!({
            "name": self.name,
            "hook": self.hook,
            "selectors": self.selectors.into_iter().map(Value::Object).collect::<Vec<_>>(),
        })
    }
}

/// Serializes a JSON value as YAML.
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).expect("a JSON value always serializes to YAML")
}

/// Parses every YAML document in `text` (separated by `---`) as JSON values.
pub fn parse_yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple::<Value>(text)
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
        .map_err(|e| e.to_string())
}

/// Serializes several documents into one multi-document YAML text.
pub fn to_yaml_docs(docs: &[Value]) -> String {
    docs.iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

/// Calls `f` on every selector object of every rule of a policy document.
pub fn for_each_selector(doc: &mut Value, mut f: impl FnMut(&str, &mut Map<String, Value>)) {
    if let Some(rules) = doc["spec"]["rules"].as_array_mut() {
        for rule in rules {
            let hook = rule["hook"].as_str().unwrap_or("").to_string();
            if let Some(sels) = rule["selectors"].as_array_mut() {
                for sel in sels {
                    if let Some(obj) = sel.as_object_mut() {
                        f(&hook, obj);
                    }
                }
            }
        }
    }
}

/// Replaces every string equal to `from` anywhere in `doc` with `to` (for paths, namespaces,
/// CIDRs of an example).
pub fn replace_strings(doc: &mut Value, from: &str, to: &str) {
    match doc {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|v| replace_strings(v, from, to)),
        Value::Object(o) => o.values_mut().for_each(|v| replace_strings(v, from, to)),
        _ => {}
    }
}

/// Adapts an example policy to a test world: renames namespaces (`renames` as (example, test)
/// pairs, also applied to a namespaced policy's own `metadata.namespace`) and ANDs
/// `matchNamespaces: [{operator: In, values: guard}]` into every selector, so an example written
/// for a whole node (kill binaries from /tmp, block DNS) can only touch the test's own pods.
pub fn adapt_example(doc: &mut Value, renames: &[(&str, &str)], guard: &[&str]) {
    for (from, to) in renames {
        replace_strings(doc, from, to);
    }
    for_each_selector(doc, |_, sel| {
        let entry = json!({"operator": "In", "values": guard});
        match sel
            .entry("matchNamespaces".to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a.push(entry),
            other => *other = Value::Array(vec![entry]),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_writes_the_documented_shape() {
        let p = PolicyBuilder::new("p")
            .mode("monitor")
            .rule(
                RuleBuilder::connect("r")
                    .namespaces("In", &["a"])
                    .destinations("NotIn", &["10.0.0.0/8"], &["80", "8000-8080"], Some("TCP"))
                    .action("Block")
                    .or()
                    .binaries("Prefix", &["/x/"])
                    .action("Post"),
            )
            .value();
        assert_eq!(p["spec"]["mode"], "monitor");
        let sels = p["spec"]["rules"][0]["selectors"].as_array().unwrap();
        assert_eq!(sels.len(), 2);
        assert_eq!(
            sels[0]["matchDestinations"][0]["ports"],
            json!([80, "8000-8080"])
        );
        assert_eq!(sels[0]["matchNamespaces"][0]["values"], json!(["a"]));
        assert!(sels[1].get("matchNamespaces").is_none());
        assert_eq!(sels[1]["matchActions"][0]["action"], "Post");
    }

    #[test]
    fn yaml_round_trips() {
        let p = PolicyBuilder::new("p")
            .rule(
                RuleBuilder::egress("e")
                    .encryption("plaintext")
                    .action("Block"),
            )
            .value();
        let docs = parse_yaml_docs(&to_yaml_docs(&[p.clone(), p.clone()])).unwrap();
        assert_eq!(docs, vec![p.clone(), p]);
        assert!(parse_yaml_docs("a: [unclosed").is_err());
    }

    #[test]
    fn adapt_example_guards_every_selector() {
        let mut p = PolicyBuilder::new("p")
            .rule(
                RuleBuilder::exec("r")
                    .binaries("Prefix", &["/tmp/"])
                    .action("Sigkill")
                    .or()
                    .namespaces("NotIn", &["mail"])
                    .action("Post"),
            )
            .value();
        adapt_example(
            &mut p,
            &[("mail", "e2e-mail"), ("/tmp/", "/w/")],
            &["e2e-a"],
        );
        let sels = &p["spec"]["rules"][0]["selectors"];
        let guard = json!({"operator": "In", "values": ["e2e-a"]});
        assert_eq!(sels[0]["matchNamespaces"], json!([guard.clone()]));
        assert_eq!(sels[0]["matchBinaries"][0]["values"], json!(["/w/"]));
        assert_eq!(
            sels[1]["matchNamespaces"],
            json!([{"operator": "NotIn", "values": ["e2e-mail"]}, guard])
        );
    }

    #[test]
    fn replace_strings_only_touches_equal_strings() {
        let mut v = json!({"a": ["prod", "prod-2"], "b": {"c": "prod"}, "d": 1});
        replace_strings(&mut v, "prod", "e2e");
        assert_eq!(
            v,
            json!({"a": ["e2e", "prod-2"], "b": {"c": "e2e"}, "d": 1})
        );
    }
}
