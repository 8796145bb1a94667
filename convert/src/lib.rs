//! `bulwark convert`: Cilium Tetragon `TracingPolicy` / `TracingPolicyNamespaced` documents in,
//! bulwark policies and a report out. The path is one way: YAML text -> marked tree (the policy
//! crate's parser, so every finding has a line) -> Tetragon shape ([`tetragon`]) -> bulwark
//! model ([`translate`]) -> YAML with the input's comments ([`output`]) -> `bulwark lint` on
//! that YAML. Whatever does not translate is a [`report::Finding`] saying what and why, per
//! policy, hook and selector ([`report`]). Pure: no files, no kernel; the command
//! (`daemon/src/cmd_convert.rs`) reads and writes.
//!
//! Two rules keep a converted policy from doing more than the original: a selector whose every
//! condition was dropped is not translated (it would match every event), and a policy that
//! enforces while some dropped condition made a selector (or the whole policy, for
//! `podSelector`) broader is written in `mode: monitor`, with a finding saying so.

pub mod comments;
pub mod output;
pub mod report;
pub mod tetragon;
pub mod translate;

use bulwark_policy::yaml::{self, Node};
use bulwark_policy::{Mode, Rule, API_VERSION};
use comments::Comment;
use output::CommentedRule;
use report::{Finding, FindingKind, Outcome, PolicyReport};

/// One converted document: its report and, when any rule came out, the bulwark policy as YAML.
#[derive(Clone, Debug)]
pub struct Converted {
    pub report: PolicyReport,
    pub yaml: Option<String>,
}

/// Converts every document of one file's text. `file` labels the report.
pub fn convert_source(file: &str, text: &str) -> Vec<Converted> {
    let stream = yaml::parse(text);
    let all_comments = comments::comments(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let starts: Vec<u32> = stream.documents.iter().map(|d| d.start.line).collect();
    for (i, doc) in stream.documents.iter().enumerate() {
        let end = starts.get(i + 1).map_or(u32::MAX, |s| s.saturating_sub(1));
        let first = if i == 0 { 1 } else { doc.start.line };
        let in_doc: Vec<&Comment> = all_comments
            .iter()
            .filter(|c| c.line >= first && c.line <= end)
            .collect();
        out.push(convert_document(file, &doc.root, &in_doc, &lines));
    }
    if let Some(e) = stream.error {
        out.push(Converted {
            report: PolicyReport::input_error(
                file,
                e.pos.line,
                e.pos.column,
                format!("YAML syntax error: {}", e.message),
                "fix the YAML at this point; documents before it were converted".into(),
            ),
            yaml: None,
        });
    } else if out.is_empty() {
        out.push(Converted {
            report: PolicyReport::input_error(
                file,
                1,
                1,
                "the file holds no YAML document".into(),
                "give a file with a Tetragon TracingPolicy".into(),
            ),
            yaml: None,
        });
    }
    out
}

/// A DNS-1123 name made of `name`: lowercase, anything else than letters, digits (and `.` when
/// `dots`) becomes `-`, at most `max` bytes, never empty.
fn dns_name(name: &str, dots: bool, max: usize) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || (dots && c == '.') {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.truncate(max);
    let s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    if s.is_empty() {
        "rule".into()
    } else {
        s
    }
}

fn policy_finding(
    kind: FindingKind,
    path: &str,
    node: Option<&Node>,
    what: String,
    why: String,
    broadens: bool,
) -> Finding {
    Finding {
        kind,
        path: path.into(),
        line: node.map_or(1, |n| n.pos.line),
        what,
        why,
        broadens,
    }
}

/// The hook a comment belongs to: the one whose lines hold it, or the one right below a block
/// of whole-line comments.
fn comment_owner(c: &Comment, hooks: &[tetragon::Hook], lines: &[&str]) -> Option<usize> {
    if let Some(i) = hooks
        .iter()
        .position(|h| h.line <= c.line && c.line <= h.end_line)
    {
        return Some(i);
    }
    if !c.whole_line {
        return None;
    }
    let mut line = c.line + 1;
    loop {
        if let Some(i) = hooks.iter().position(|h| h.line == line) {
            return Some(i);
        }
        let text = lines.get(line as usize - 1)?.trim_start();
        if !text.starts_with('#') {
            return None;
        }
        line += 1;
    }
}

/// Converts one document.
pub fn convert_document(
    file: &str,
    root: &Node,
    comments: &[&Comment],
    lines: &[&str],
) -> Converted {
    let policy = match tetragon::read(root) {
        Ok(p) => p,
        Err(e) => {
            return Converted {
                report: PolicyReport::input_error(file, e.line, e.column, e.message, e.hint),
                yaml: None,
            }
        }
    };
    let mut report = PolicyReport {
        file: file.into(),
        line: root.pos.line,
        name: policy.name.clone(),
        kind: policy.kind.clone(),
        outcome: Outcome::None,
        output: None,
        bulwark_name: None,
        mode: None,
        error: None,
        findings: Vec::new(),
        hooks: Vec::new(),
        lint: Vec::new(),
    };
    let meta_name = root.get("metadata").and_then(|m| m.get("name"));
    let name = dns_name(&policy.name, true, 253);
    if name != policy.name {
        report.findings.push(policy_finding(
            FindingKind::Changed,
            "metadata.name",
            meta_name,
            format!("name `{}` -> `{name}`", policy.name),
            "a bulwark policy name is a DNS-1123 subdomain (lowercase letters, digits, `-`, `.`)"
                .into(),
            false,
        ));
    }

    // Spec-level fields other than the hooks.
    let mut explicit_mode = None;
    if let Some(yaml::Value::Map(entries)) = policy.spec.map(|s| &s.value) {
        for e in entries {
            let path = format!("spec.{}", e.key);
            match e.key.as_str() {
                k if tetragon::HOOK_SECTIONS.contains(&k) => {}
                "options" => {
                    let items = match &e.value.value {
                        yaml::Value::Seq(items) => items.as_slice(),
                        _ => &[],
                    };
                    for (j, o) in items.iter().enumerate() {
                        let name = o.get("name").and_then(tetragon::scalar_text).unwrap_or_default();
                        let value = o.get("value").and_then(tetragon::scalar_text).unwrap_or_default();
                        let path = format!("{path}[{j}]");
                        if name == "policy-mode" {
                            match value.as_str() {
                                "monitor" => explicit_mode = Some(Mode::Monitor),
                                "enforce" => explicit_mode = Some(Mode::Enforce),
                                _ => report.findings.push(policy_finding(FindingKind::Dropped, &path, Some(o), format!("option policy-mode `{value}`"), "Tetragon's policy modes are `monitor` and `enforce`; the mode is taken from the actions instead".into(), false)),
                            }
                        } else {
                            report.findings.push(policy_finding(FindingKind::Note, &path, Some(o), format!("option `{name}`"), "tunes how Tetragon attaches its probes; bulwark attaches no kprobes and needs no such option".into(), false));
                        }
                    }
                }
                "podSelector" | "containerSelector" => report.findings.push(policy_finding(
                    FindingKind::Dropped,
                    &path,
                    Some(&e.value),
                    e.key.clone(),
                    "bulwark selects workloads by Kubernetes namespace (matchNamespaces, or a TracingPolicyNamespaced), not by pod or container labels, so the policy applies to every workload in its scope".into(),
                    true,
                )),
                _ => report.findings.push(policy_finding(
                    FindingKind::Dropped,
                    &path,
                    Some(&e.value),
                    e.key.clone(),
                    "has no bulwark counterpart".into(),
                    false,
                )),
            }
        }
    }
    if policy.hooks.is_empty() {
        report.error = Some(report::InputError {
            line: policy.spec.map_or(root.pos.line, |s| s.pos.line),
            column: policy.spec.map_or(root.pos.column, |s| s.pos.column),
            message: "the policy has no hooks (`spec.kprobes`, `tracepoints`, `lsmhooks`, ...)".into(),
            hint: "a Tetragon policy hooks at least one kernel function or tracepoint; there is nothing to convert".into(),
        });
        return Converted { report, yaml: None };
    }

    // Hooks -> rules.
    let mut rules: Vec<CommentedRule> = Vec::new();
    let mut rule_of_hook: Vec<Option<usize>> = Vec::new();
    for h in &policy.hooks {
        let (translated, mut hook_report) = translate::hook(h);
        match translated {
            Some((target, selectors)) => {
                // Named after the hooked function (the tracepoint's event, the syscall without its
                // architecture prefix).
                let call = h.call.rsplit('/').next().unwrap_or(&h.call);
                let call = call
                    .trim_start_matches("__x64_")
                    .trim_start_matches("__arm64_");
                let base = dns_name(call, false, 60);
                let mut rule_name = base.clone();
                let mut n = 2;
                while rules.iter().any(|r| r.rule.name == rule_name) {
                    rule_name = format!("{base}-{n}");
                    n += 1;
                }
                hook_report.rule = Some(rule_name.clone());
                let mut comments = vec![format!(
                    "From Tetragon {} `{}` (line {}).",
                    h.path.trim_start_matches("spec."),
                    h.call,
                    h.line
                )];
                if let Some(m) = &h.message {
                    comments.push(format!("Tetragon message: {m}"));
                }
                if !h.tags.is_empty() {
                    comments.push(format!("Tetragon tags: {}", h.tags.join(", ")));
                }
                rule_of_hook.push(Some(rules.len()));
                rules.push(CommentedRule {
                    comments,
                    rule: Rule {
                        name: rule_name,
                        hook: target.hook(),
                        selectors,
                    },
                });
            }
            None => rule_of_hook.push(None),
        }
        report.hooks.push(hook_report);
    }
    let losses = report.findings.iter().any(Finding::is_loss);
    report.outcome = match Outcome::combine(report.hooks.iter().map(|h| h.outcome)) {
        Outcome::Full if losses => Outcome::Partial,
        o => o,
    };
    if rules.is_empty() {
        report.outcome = Outcome::None;
        return Converted { report, yaml: None };
    }

    // Mode: Tetragon's option, else enforce; monitor when nothing enforces (Tetragon's
    // monitor_only) or when a dropped condition made an enforcing policy broader.
    let enforces = rules
        .iter()
        .flat_map(|r| &r.rule.selectors)
        .flat_map(|s| &s.match_actions)
        .any(|a| a.action.is_enforcing());
    let broadened = report
        .findings
        .iter()
        .chain(
            report
                .hooks
                .iter()
                .flat_map(|h| &h.selectors)
                .filter(|s| s.outcome != Outcome::None)
                .flat_map(|s| &s.findings),
        )
        .any(|f| f.broadens);
    let mut mode = explicit_mode.unwrap_or(Mode::Enforce);
    if mode == Mode::Enforce && !enforces {
        mode = Mode::Monitor;
        report.findings.push(policy_finding(
            FindingKind::Note,
            "spec",
            policy.spec,
            "mode: monitor".into(),
            "no translated selector kills or blocks, so the policy only reports (Tetragon calls this monitor_only)".into(),
            false,
        ));
    } else if mode == Mode::Enforce && broadened {
        mode = Mode::Monitor;
        report.outcome = Outcome::Partial;
        report.findings.push(policy_finding(
            FindingKind::Changed,
            "spec",
            policy.spec,
            "mode: enforce -> monitor".into(),
            "a dropped condition makes the converted policy match more than the Tetragon policy did, so it would kill or block more; review the dropped conditions, then set `mode: enforce`".into(),
            false,
        ));
    }

    // Comments: the hook's go above its rule, the rest into the header.
    let mut header = vec![
        format!(
            "Converted by `bulwark convert` from the Tetragon {} `{}` in {file} (line {}).",
            policy.kind, policy.name, root.pos.line
        ),
        match report.outcome {
            Outcome::Full => "Outcome: translated fully.".to_string(),
            o => format!(
                "Outcome: {}; `bulwark convert` reports every dropped or changed condition.",
                o.describe()
            ),
        },
    ];
    for h in report.hooks.iter().filter(|h| h.outcome == Outcome::None) {
        header.push(format!(
            "Not translated: {} `{}` (line {}): {}",
            h.path,
            h.call,
            h.line,
            h.reason.as_deref().unwrap_or("")
        ));
    }
    let mut own: Vec<String> = Vec::new();
    for c in comments {
        match comment_owner(c, &policy.hooks, lines).map(|h| rule_of_hook[h]) {
            Some(Some(r)) => rules[r].comments.push(c.text.clone()),
            None => own.push(c.text.clone()),
            // The comment of a hook that was not translated: the banner names the hook.
            Some(None) => {}
        }
    }
    if !own.is_empty() {
        header.push(String::new());
        header.extend(own);
    }

    let mut metadata = serde_json::json!({ "name": name });
    if let Some(ns) = &policy.namespace {
        metadata["namespace"] = ns.clone().into();
    }
    if !policy.labels.is_empty() {
        metadata["labels"] = serde_json::to_value(&policy.labels).unwrap_or_default();
    }
    if !policy.annotations.is_empty() {
        metadata["annotations"] = serde_json::to_value(&policy.annotations).unwrap_or_default();
    }
    let envelope = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": policy.kind,
        "metadata": metadata,
        "spec": { "mode": mode },
    });
    let text = output::write(&header, &envelope, &rules);
    report.lint = bulwark_compiler::lint_source(&format!("{name}.yaml"), &text).diagnostics;
    report.bulwark_name = Some(name);
    report.mode = Some(mode.to_string());
    Converted {
        report,
        yaml: Some(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::{
        Action, BinarySelector, DestinationSelector, Operator, PortSpec, Protocol, SetOperator,
    };

    const HEAD: &str =
        "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n";

    /// Converts `HEAD + spec` and returns the report and the rules of the output as loaded
    /// back by the lint (which must find no error).
    fn convert(spec: &str) -> (PolicyReport, Vec<Rule>, String) {
        let text = format!("{HEAD}{spec}");
        let mut c = convert_source("t.yaml", &text);
        assert_eq!(c.len(), 1);
        let c = c.remove(0);
        let Some(yaml) = c.yaml else {
            return (c.report, Vec::new(), String::new());
        };
        let lint = bulwark_compiler::lint_source("out.yaml", &yaml);
        assert_eq!(lint.errors(), 0, "{yaml}\n{:?}", lint.diagnostics);
        let rules = lint.policies[0].spec().rules.clone();
        (c.report, rules, yaml)
    }

    #[test]
    fn exec_path_argument_becomes_match_binaries_and_sigkill_stays() {
        let (r, rules, yaml) = convert(
            "  kprobes:\n  - call: security_bprm_check\n    args:\n    - index: 0\n      type: linux_binprm\n    selectors:\n    - matchArgs:\n      - index: 0\n        operator: NotEqual\n        values: [/usr/bin/ok]\n      - index: 0\n        operator: Prefix\n        values: [/tmp/]\n      matchActions:\n      - action: Sigkill\n",
        );
        assert_eq!(r.outcome, Outcome::Full, "{r:#?}");
        assert_eq!(r.mode.as_deref(), Some("enforce"));
        assert_eq!(rules[0].hook, bulwark_policy::Hook::Exec);
        let s = &rules[0].selectors[0];
        assert_eq!(
            s.match_binaries,
            vec![
                BinarySelector {
                    operator: Operator::NotIn,
                    values: vec!["/usr/bin/ok".into()]
                },
                BinarySelector {
                    operator: Operator::Prefix,
                    values: vec!["/tmp/".into()]
                },
            ]
        );
        assert_eq!(s.match_actions[0].action, Action::Sigkill);
        assert!(yaml.contains("mode: enforce"), "{yaml}");
    }

    #[test]
    fn sock_operators_become_destinations_and_ranges_use_a_dash() {
        let (r, rules, _) = convert(
            "  kprobes:\n  - call: tcp_connect\n    args:\n    - index: 0\n      type: sock\n    selectors:\n    - matchArgs:\n      - index: 0\n        operator: NotDPort\n        values: [\"8000:8080\", 443]\n      - index: 0\n        operator: DAddr\n        values: [10.0.0.0/8]\n      - index: 0\n        operator: Protocol\n        values: [IPPROTO_TCP, IPPROTO_UDP]\n",
        );
        assert_eq!(r.outcome, Outcome::Full, "{r:#?}");
        assert_eq!(
            r.mode.as_deref(),
            Some("monitor"),
            "Post only: Tetragon's monitor_only"
        );
        let d = &rules[0].selectors[0].match_destinations;
        let dest =
            |operator, cidrs: Vec<&str>, ports: Vec<PortSpec>, protocol| DestinationSelector {
                operator,
                cidrs: cidrs.into_iter().map(String::from).collect(),
                ports,
                protocol,
            };
        assert_eq!(
            d,
            &vec![
                dest(
                    SetOperator::NotIn,
                    vec![],
                    vec![PortSpec::Text("8000-8080".into()), PortSpec::Number(443)],
                    None
                ),
                dest(SetOperator::In, vec!["10.0.0.0/8"], vec![], None),
                // tcp_connect sees TCP only; the Protocol entry naming TCP and UDP adds nothing.
                dest(SetOperator::In, vec![], vec![], Some(Protocol::TCP)),
            ]
        );
        assert_eq!(rules[0].selectors[0].match_actions[0].action, Action::Post);
    }

    #[test]
    fn a_selector_whose_every_condition_is_dropped_is_not_translated() {
        let (r, rules, _) = convert(
            "  kprobes:\n  - call: tcp_connect\n    args:\n    - index: 0\n      type: sock\n    selectors:\n    - matchPIDs:\n      - operator: In\n        values: [42]\n      matchActions:\n      - action: Sigkill\n    - matchArgs:\n      - index: 0\n        operator: DPort\n        values: [\"22\"]\n      matchActions:\n      - action: Sigkill\n",
        );
        assert_eq!(r.outcome, Outcome::Partial);
        let sel = &r.hooks[0].selectors;
        assert_eq!(sel[0].outcome, Outcome::None);
        assert!(sel[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("every condition was dropped"));
        assert_eq!(
            sel[1].outcome,
            Outcome::Partial,
            "Sigkill -> Block is a change"
        );
        assert_eq!(rules[0].selectors.len(), 1);
        assert_eq!(rules[0].selectors[0].match_actions[0].action, Action::Block);
        // The dropped selector did not broaden the one that was kept: the mode stays.
        assert_eq!(r.mode.as_deref(), Some("enforce"));
    }

    #[test]
    fn explicit_monitor_mode_and_comments_are_kept() {
        let (r, _, yaml) = convert(
            "  options:\n  - name: policy-mode\n    value: monitor\n  # watch the shells\n  tracepoints:\n  - subsystem: sched # scheduler\n    event: sched_process_exec\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/bin/sh]\n      matchActions:\n      - action: Sigkill\n",
        );
        assert_eq!(r.outcome, Outcome::Full, "{r:#?}");
        assert_eq!(r.mode.as_deref(), Some("monitor"));
        // A comment inside a hook goes above its rule; one outside every hook into the header.
        let (header, body) = yaml.split_at(yaml.find("apiVersion:").unwrap());
        assert!(header.contains("# watch the shells\n"), "{yaml}");
        assert!(body.contains("  # scheduler\n  - "), "{yaml}");
    }

    #[test]
    fn input_errors_say_where_and_how_to_fix() {
        let c = convert_source("bad.yaml", "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: x\nspec:\n  kprobes: {call: x}\n");
        let e = c[0].report.error.as_ref().unwrap();
        assert_eq!(
            (e.line, e.message.contains("expected a list")),
            (6, true),
            "{e:?}"
        );
        let c = convert_source("bad.yaml", "a: [\n");
        let e = c[0].report.error.as_ref().unwrap();
        assert!(e.message.starts_with("YAML syntax error"), "{e:?}");
        assert_eq!(c[0].report.outcome, Outcome::None);
    }
}
