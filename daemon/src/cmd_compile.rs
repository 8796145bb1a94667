//! `bulwark compile`: shows what a set of policies compiles to, for a person debugging a policy.
//! Loads the files with the lint engine (`bulwark_compiler::lint_paths`; diagnostics with errors
//! are printed and exit 1), compiles with `bulwark_compiler::compile` and prints, per selector,
//! its policy, rule, hook, actions, mode and required conditions in words, then the exact map
//! entries of one slot grouped by map, keys decoded (paths, arguments, CIDRs, port blocks) and
//! hit masks in hex with the condition bits they carry. Exit 0 when it compiles, 1 on policy
//! errors (lint or compile), 2 on I/O and usage errors.

use bulwark_compiler::{compile_node, MapEntries, NamespaceIds, RuleSet};
use bulwark_policy::diagnostics::render_text;
use daemon_common as dc;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Selectors in words, then the map entries grouped by map.
    #[default]
    Text,
    /// One JSON object: policies, selectors, conditions and decoded map entries.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Intern the namespaces of this workloads file (the `bulwark run --workloads` format)
    /// first, in file order, so namespace ids are shown as the daemon would number them.
    #[arg(long, value_name = "FILE")]
    pub namespaces_from_workloads: Option<PathBuf>,
    /// Slot (0 or 1) whose keys to show; the daemon alternates between them.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..2))]
    pub slot: u8,
    /// Policy files or directories (searched recursively for .yaml/.yml).
    #[arg(required = true, value_name = "POLICY_FILE_OR_DIR")]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let mut ids = NamespaceIds::new();
    if let Some(file) = &args.namespaces_from_workloads {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read workloads file {}: {e}", file.display()))?;
        for w in bulwark::pipeline::workload::parse_workloads(&text, file)? {
            ids.id(&w.namespace);
        }
    }
    // The load error says everything in its own message; no cause chain repeating it.
    let outcome = bulwark_compiler::lint_paths(&args.paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !outcome.diagnostics.is_empty() {
        eprint!("{}", render_text(&outcome.diagnostics));
    }
    if outcome.errors() > 0 {
        eprintln!("bulwark compile: the policies have errors (above); nothing was compiled");
        return Ok(ExitCode::from(1));
    }
    let node = match compile_node(&outcome.policies, &mut ids) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("bulwark compile: error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    // One report per selector group (table); a set that fits one group reads as before.
    let slot = u32::from(args.slot & 1);
    let groups = node.groups();
    let out = match args.format {
        Format::Text if groups.len() == 1 => {
            let rs = &groups[0].rules;
            render_text_report(rs, &rs.map_entries(args.slot), &ids, args.slot)
        }
        Format::Text => {
            let mut out = String::new();
            for (g, group) in groups.iter().enumerate() {
                let t = dc::table(slot, g as u32);
                let _ = writeln!(
                    out,
                    "## selector group {g} (table {t}; namespaces: {})",
                    if group.namespaces.is_empty() {
                        "host and every namespace without a group".to_string()
                    } else {
                        group.namespaces.join(", ")
                    }
                );
                let e = group.rules.table_entries(t as u8);
                out.push_str(&render_text_report(&group.rules, &e, &ids, args.slot));
            }
            out
        }
        Format::Json => {
            let v = if groups.len() == 1 {
                let rs = &groups[0].rules;
                render_json(rs, &rs.map_entries(args.slot), &ids, args.slot)
            } else {
                let gs: Vec<Value> = groups
                    .iter()
                    .enumerate()
                    .map(|(g, group)| {
                        let t = dc::table(slot, g as u32);
                        let e = group.rules.table_entries(t as u8);
                        json!({
                            "group": g, "table": t, "namespaces": group.namespaces,
                            "rule_set": render_json(&group.rules, &e, &ids, args.slot),
                        })
                    })
                    .collect();
                json!({ "groups": gs, "selectors": node.selector_count() })
            };
            let mut s = serde_json::to_string_pretty(&v)?;
            s.push('\n');
            s
        }
    };
    // A closed pipe (e.g. `| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// `0x…` and the condition bits set, e.g. `0x0000000000000005 (p0 p2)`.
fn hits(mask: u64, prefix: char) -> String {
    let bits: Vec<String> = (0..64)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("{prefix}{i}"))
        .collect();
    format!("{mask:#018x} ({})", bits.join(" "))
}

fn bit_list(mask: u64, prefix: char) -> Vec<String> {
    (0..64)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("{prefix}{i}"))
        .collect()
}

/// Bytes up to the first NUL, shown as a Rust-style string literal.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    format!("{:?}", String::from_utf8_lossy(&bytes[..end]))
}

/// The first `n` bytes, reversed back (postfix keys are stored reversed).
fn unreversed(bytes: &[u8], n: usize) -> String {
    let v: Vec<u8> = bytes[..n.min(bytes.len())].iter().rev().copied().collect();
    text(&v)
}

fn arg_index(index: u8) -> String {
    if index == dc::ARG_ANY_INDEX {
        "any argv[1..]".to_string()
    } else {
        format!("argv[{index}]")
    }
}

fn hook_name(hook: u8) -> &'static str {
    match hook {
        dc::HOOK_EXEC => "exec",
        dc::HOOK_CONNECT => "connect",
        dc::HOOK_EGRESS => "egress",
        dc::HOOK_INGRESS => "ingress",
        dc::HOOK_SYSCALL => "syscall",
        dc::HOOK_FILE => "file",
        _ => "?",
    }
}

fn action_names(bits: u8) -> String {
    let mut v = Vec::new();
    for (bit, name) in [
        (dc::ACTION_POST, "Post"),
        (dc::ACTION_SIGKILL, "Sigkill"),
        (dc::ACTION_BLOCK, "Block"),
    ] {
        if bits & bit != 0 {
            v.push(name);
        }
    }
    v.join("+")
}

fn enc_name(enc: u8) -> &'static str {
    match enc {
        dc::ENC_PLAINTEXT => "plaintext",
        dc::ENC_TLS => "tls",
        _ => "any",
    }
}

fn lookup_names(bits: u32) -> String {
    let names = [
        (dc::LOOKUP_BIN_EXACT, "BIN_EXACT"),
        (dc::LOOKUP_BIN_PREFIX, "BIN_PREFIX"),
        (dc::LOOKUP_BIN_POSTFIX, "BIN_POSTFIX"),
        (dc::LOOKUP_ARG_EXACT, "ARG_EXACT"),
        (dc::LOOKUP_ARG_PREFIX, "ARG_PREFIX"),
        (dc::LOOKUP_ARG_POSTFIX, "ARG_POSTFIX"),
        (dc::LOOKUP_NAMESPACE, "NAMESPACE"),
        (dc::LOOKUP_ARG_ANY, "ARG_ANY"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join("|")
    }
}

fn port_block(port: [u8; 2], prefix_len: u32) -> String {
    let start = u16::from_be_bytes(port);
    let bits = prefix_len.saturating_sub(8).min(16);
    let end = u32::from(start) + (1u32 << (16 - bits)) - 1;
    if u32::from(start) == end {
        format!("{start}")
    } else {
        format!("{start}-{end} (/{bits})")
    }
}

/// A decoded map entry: key in words, hit mask, and the letter of the condition bits (`p`/`d`).
type Decoded = (String, u64, char);

/// Every matcher map's entries, decoded, by map name.
fn decoded_maps(e: &MapEntries, ids: &NamespaceIds) -> Vec<(&'static str, Vec<Decoded>)> {
    let ns_name = |id: u32| {
        ids.name(id)
            .map_or_else(|| format!("id {id}"), |n| format!("{n:?} (id {id})"))
    };
    vec![
        (
            dc::MAP_BIN_EXACT,
            e.bin_exact
                .iter()
                .map(|(k, m)| (text(&k.path), *m, 'p'))
                .collect(),
        ),
        (
            dc::MAP_BIN_PREFIX,
            e.bin_prefix
                .iter()
                .map(|(_, d, m)| (format!("{}*", text(&d.bytes)), *m, 'p'))
                .collect(),
        ),
        (
            dc::MAP_BIN_POSTFIX,
            e.bin_postfix
                .iter()
                .map(|(l, d, m)| {
                    (
                        format!(
                            "*{}",
                            unreversed(&d.bytes, (*l as usize / 8).saturating_sub(1))
                        ),
                        *m,
                        'p',
                    )
                })
                .collect(),
        ),
        (
            dc::MAP_ARG_EXACT,
            e.arg_exact
                .iter()
                .map(|(k, m)| {
                    (
                        format!("{} = {}", arg_index(k.index), text(&k.value)),
                        *m,
                        'p',
                    )
                })
                .collect(),
        ),
        (
            dc::MAP_ARG_PREFIX,
            e.arg_prefix
                .iter()
                .map(|(_, d, m)| {
                    (
                        format!("{} = {}*", arg_index(d.index), text(&d.bytes)),
                        *m,
                        'p',
                    )
                })
                .collect(),
        ),
        (
            dc::MAP_ARG_POSTFIX,
            e.arg_postfix
                .iter()
                .map(|(l, d, m)| {
                    let n = (*l as usize / 8).saturating_sub(2);
                    (
                        format!("{} = *{}", arg_index(d.index), unreversed(&d.bytes, n)),
                        *m,
                        'p',
                    )
                })
                .collect(),
        ),
        (
            dc::MAP_NAMESPACES,
            e.namespaces
                .iter()
                .map(|(k, m)| (ns_name(k.namespace_id), *m, 'p'))
                .collect(),
        ),
        (
            dc::MAP_DEST_V4,
            e.dest_v4
                .iter()
                .map(|(l, d, m)| {
                    (
                        format!("{}/{}", Ipv4Addr::from(d.addr), l.saturating_sub(8)),
                        *m,
                        'd',
                    )
                })
                .collect(),
        ),
        (
            dc::MAP_DEST_V6,
            e.dest_v6
                .iter()
                .map(|(l, d, m)| {
                    (
                        format!("{}/{}", Ipv6Addr::from(d.addr), l.saturating_sub(8)),
                        *m,
                        'd',
                    )
                })
                .collect(),
        ),
        (
            dc::MAP_PORTS,
            e.ports
                .iter()
                .map(|(l, d, m)| (port_block(d.port, *l), *m, 'd'))
                .collect(),
        ),
    ]
}

fn policy_label(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn render_text_report(rs: &RuleSet, e: &MapEntries, ids: &NamespaceIds, slot: u8) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} polic{}, {} selector{} (of {}), {} process condition{} (of {}), {} destination condition{} (of {})",
        rs.policies().len(),
        if rs.policies().len() == 1 { "y" } else { "ies" },
        rs.selectors().len(),
        if rs.selectors().len() == 1 { "" } else { "s" },
        dc::MAX_SELECTORS,
        rs.proc_conditions().len(),
        if rs.proc_conditions().len() == 1 { "" } else { "s" },
        dc::MAX_PROC_CONDITIONS,
        rs.dest_conditions().len(),
        if rs.dest_conditions().len() == 1 { "" } else { "s" },
        dc::MAX_DEST_CONDITIONS,
    );
    let _ = writeln!(
        o,
        "\nSelectors (ORed; everything a selector requires is ANDed):"
    );
    if rs.selectors().is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for s in rs.selectors() {
        let entry = rs.selector_entries()[usize::from(s.index)];
        let _ = writeln!(
            o,
            "  #{:<2} policy {} rule {} selectors[{}]: hook {}, actions {}, mode {}",
            s.index,
            policy_label(&s.policy_name, s.policy_namespace.as_deref()),
            s.rule_name,
            s.selector_index,
            hook_name(entry.hook),
            action_names(entry.actions),
            format!("{:?}", s.mode).to_lowercase(),
        );
        if s.proc_required == 0 && s.dest_required == 0 && s.encryption.is_none() {
            let _ = writeln!(
                o,
                "       requires nothing: matches every {}",
                hook_name(entry.hook)
            );
        }
        for b in 0..64 {
            if s.proc_required & (1 << b) != 0 {
                if let Some(c) = rs.proc_conditions().get(b) {
                    let _ = writeln!(o, "       p{b:<2} {}", c.describe());
                }
            }
        }
        for b in 0..64 {
            if s.dest_required & (1 << b) != 0 {
                if let Some(c) = rs.dest_conditions().get(b) {
                    let _ = writeln!(o, "       d{b:<2} {}", c.describe());
                }
            }
        }
        if let Some(enc) = s.encryption {
            let _ = writeln!(
                o,
                "       first payload is {}",
                format!("{enc:?}").to_lowercase()
            );
        }
    }

    let m = &e.slot_meta;
    let _ = writeln!(
        o,
        "\nMap entries for slot {slot} (LPM prefix lengths below exclude the slot byte):"
    );
    let _ = writeln!(
        o,
        "  {}: selector_count {}, lookups {}",
        dc::MAP_SLOT_META,
        m.selector_count,
        lookup_names(m.lookups)
    );
    for (name, v, p) in [
        ("hook_exec", m.hook_exec, 's'),
        ("hook_connect", m.hook_connect, 's'),
        ("hook_egress", m.hook_egress, 's'),
        ("hook_ingress", m.hook_ingress, 's'),
        ("proc_negate", m.proc_negate, 'p'),
        ("dest_negate", m.dest_negate, 'd'),
        ("dest_any_addr", m.dest_any_addr, 'd'),
        ("dest_any_port", m.dest_any_port, 'd'),
        ("dest_tcp", m.dest_tcp, 'd'),
        ("dest_udp", m.dest_udp, 'd'),
        ("enforce_net", m.enforce_net, 's'),
        ("monitor_net", m.monitor_net, 's'),
    ] {
        let _ = writeln!(o, "    {name:<14}{}", hits(v, p));
    }
    let _ = writeln!(o, "  {} ({}):", dc::MAP_SELECTORS, e.selectors.len());
    for (index, s) in &e.selectors {
        let _ = writeln!(
            o,
            "    [{index}] proc_required {} dest_required {} policy_id {} rule {} selector {} hook {} actions {} mode {} encryption {}",
            hits(s.proc_required, 'p'),
            hits(s.dest_required, 'd'),
            s.policy_id,
            s.rule_index,
            s.selector_index,
            hook_name(s.hook),
            action_names(s.actions),
            if s.mode == dc::MODE_MONITOR { "monitor" } else { "enforce" },
            enc_name(s.encryption),
        );
    }
    for (name, entries) in decoded_maps(e, ids) {
        let _ = writeln!(o, "  {name} ({}):", entries.len());
        let width = entries
            .iter()
            .map(|(k, _, _)| k.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        for (key, mask, p) in entries {
            let _ = writeln!(o, "    {key:<width$}  hits {}", hits(mask, p));
        }
    }
    o
}

fn render_json(rs: &RuleSet, e: &MapEntries, ids: &NamespaceIds, slot: u8) -> Value {
    let selectors: Vec<Value> = rs
        .selectors()
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            let requires: Vec<String> = (0..64usize)
                .filter(|b| s.proc_required & (1 << b) != 0)
                .filter_map(|b| {
                    rs.proc_conditions()
                        .get(b)
                        .map(|c| format!("p{b}: {}", c.describe()))
                })
                .chain(
                    (0..64usize)
                        .filter(|b| s.dest_required & (1 << b) != 0)
                        .filter_map(|b| {
                            rs.dest_conditions()
                                .get(b)
                                .map(|c| format!("d{b}: {}", c.describe()))
                        }),
                )
                .collect();
            v["requires"] = json!(requires);
            v
        })
        .collect();
    let conditions = |descr: Vec<(String, Value)>, p: char| -> Vec<Value> {
        descr
            .into_iter()
            .enumerate()
            .map(|(i, (words, cond))| json!({"bit": format!("{p}{i}"), "description": words, "condition": cond}))
            .collect()
    };
    let proc = conditions(
        rs.proc_conditions()
            .iter()
            .map(|c| (c.describe(), serde_json::to_value(c).unwrap_or(Value::Null)))
            .collect(),
        'p',
    );
    let dest = conditions(
        rs.dest_conditions()
            .iter()
            .map(|c| (c.describe(), serde_json::to_value(c).unwrap_or(Value::Null)))
            .collect(),
        'd',
    );
    let m = &e.slot_meta;
    let hex = |v: u64| format!("{v:#018x}");
    let mut maps = serde_json::Map::new();
    maps.insert(
        dc::MAP_SLOT_META.into(),
        json!({
            "selectorCount": m.selector_count, "lookups": lookup_names(m.lookups),
            "hookExec": hex(m.hook_exec), "hookConnect": hex(m.hook_connect), "hookEgress": hex(m.hook_egress), "hookIngress": hex(m.hook_ingress),
            "procNegate": hex(m.proc_negate), "destNegate": hex(m.dest_negate),
            "destAnyAddr": hex(m.dest_any_addr), "destAnyPort": hex(m.dest_any_port),
            "destTcp": hex(m.dest_tcp), "destUdp": hex(m.dest_udp),
            "enforceNet": hex(m.enforce_net), "monitorNet": hex(m.monitor_net),
        }),
    );
    maps.insert(
        dc::MAP_SELECTORS.into(),
        Value::Array(
            e.selectors
                .iter()
                .map(|(i, s)| {
                    json!({"index": i, "procRequired": hex(s.proc_required), "destRequired": hex(s.dest_required),
                           "policyId": s.policy_id, "ruleIndex": s.rule_index, "selectorIndex": s.selector_index,
                           "hook": hook_name(s.hook), "actions": action_names(s.actions),
                           "mode": if s.mode == dc::MODE_MONITOR { "monitor" } else { "enforce" },
                           "encryption": enc_name(s.encryption)})
                })
                .collect(),
        ),
    );
    for (name, entries) in decoded_maps(e, ids) {
        maps.insert(
            name.into(),
            Value::Array(
                entries
                    .into_iter()
                    .map(|(key, mask, p)| json!({"key": key, "hits": hex(mask), "bits": bit_list(mask, p)}))
                    .collect(),
            ),
        );
    }
    json!({
        "slot": slot,
        "policies": rs.policies(),
        "selectors": selectors,
        "procConditions": proc,
        "destConditions": dest,
        "maps": maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: bulwark.dev/v1alpha1
kind: TracingPolicyNamespaced
metadata: {name: demo, namespace: shop}
spec:
  mode: monitor
  rules:
  - name: shells
    hook: exec
    selectors:
    - matchBinaries:
      - {operator: Postfix, values: [/sh]}
      matchArgs:
      - {index: 1, operator: Prefix, values: [--ex]}
      - {operator: NotPostfix, values: [.conf]}
      matchActions: [{action: Sigkill}]
  - name: egress
    hook: egress
    selectors:
    - matchDestinations:
      - {operator: NotIn, cidrs: [10.0.0.0/8, 10.1.0.0/16, "2001:db8::/32"], ports: ["8000-8080"]}
      matchEncryption: plaintext
      matchActions: [{action: Block}, {action: Post}]
"#;

    fn compiled() -> (RuleSet, NamespaceIds) {
        let out = bulwark_compiler::lint_source("demo.yaml", POLICY);
        assert_eq!(out.errors(), 0, "{}", render_text(&out.diagnostics));
        let mut ids = NamespaceIds::new();
        let rs = bulwark_compiler::compile(&out.policies, &mut ids).expect("compiles");
        (rs, ids)
    }

    #[test]
    fn text_report_shows_selectors_in_words_and_decoded_entries() {
        let (rs, ids) = compiled();
        let t = render_text_report(&rs, &rs.map_entries(1), &ids, 1);
        for want in [
            "1 policy, 2 selectors (of 64), 4 process conditions (of 64), 1 destination condition (of 64)",
            "#0  policy shop/demo rule shells selectors[0]: hook exec, actions Sigkill, mode monitor",
            "p0  binary path ends with one of [\"/sh\"]",
            "p1  argv[1] starts with one of [\"--ex\"]",
            "p2  no argument in argv[1..] ends with one of [\".conf\"]",
            "p3  Kubernetes namespace is one of [\"shop\"]",
            "#1  policy shop/demo rule egress selectors[0]: hook egress, actions Post+Block, mode monitor",
            "d0  destination NOT (address in [10.0.0.0/8, 10.1.0.0/16, 2001:db8::/32] and port in [8000-8080])",
            "first payload is plaintext",
            "Map entries for slot 1",
            "[64] proc_required 0x000000000000000f (p0 p1 p2 p3)",
            "*\"/sh\"  hits 0x0000000000000001 (p0)",
            "argv[1] = \"--ex\"*  hits 0x0000000000000002 (p1)",
            "any argv[1..] = *\".conf\"  hits 0x0000000000000004 (p2)",
            "\"shop\" (id 1)  hits 0x0000000000000008 (p3)",
            "10.0.0.0/8   hits 0x0000000000000001 (d0)",
            "10.1.0.0/16  hits 0x0000000000000001 (d0)",
            "2001:db8::/32  hits 0x0000000000000001 (d0)",
            "8000-8063 (/10)",
            "8080 ",
            "proc_negate   0x0000000000000004 (p2)",
            // The monitor-mode egress Block selector: the socket guard reports for it.
            "monitor_net   0x0000000000000002 (s1)",
            "enforce_net   0x0000000000000000 ()",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
    }

    #[test]
    fn json_report_has_every_part() {
        let (rs, ids) = compiled();
        let v = render_json(&rs, &rs.map_entries(0), &ids, 0);
        assert_eq!(v["slot"], 0);
        assert_eq!(v["policies"][0]["name"], "demo");
        assert_eq!(v["selectors"][1]["ruleName"], "egress");
        assert_eq!(
            v["selectors"][1]["requires"][0],
            "p3: Kubernetes namespace is one of [\"shop\"]"
        );
        assert_eq!(v["procConditions"].as_array().map(Vec::len), Some(4));
        assert_eq!(v["destConditions"][0]["condition"]["negated"], true);
        assert_eq!(v["maps"]["SLOT_META"]["selectorCount"], 2);
        assert_eq!(v["maps"]["SLOT_META"]["monitorNet"], "0x0000000000000002");
        assert_eq!(v["maps"]["SLOT_META"]["enforceNet"], "0x0000000000000000");
        assert_eq!(v["maps"]["SELECTORS"][1]["encryption"], "plaintext");
        assert_eq!(v["maps"]["DEST_V4"][1]["key"], "10.1.0.0/16");
        assert_eq!(v["maps"]["DEST_V4"][1]["bits"][0], "d0");
        assert_eq!(v["maps"]["PORTS"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["maps"]["BIN_EXACT"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn small_formatters() {
        assert_eq!(hits(0b101, 'p'), "0x0000000000000005 (p0 p2)");
        assert_eq!(hits(0, 'd'), "0x0000000000000000 ()");
        assert_eq!(port_block(443u16.to_be_bytes(), 24), "443");
        assert_eq!(port_block(8064u16.to_be_bytes(), 20), "8064-8079 (/12)");
        assert_eq!(port_block(0u16.to_be_bytes(), 8), "0-65535 (/0)");
        assert_eq!(unreversed(b"hs/\0\0", 3), "\"/sh\"");
        assert_eq!(text(b"ab\0c"), "\"ab\"");
        assert_eq!(arg_index(dc::ARG_ANY_INDEX), "any argv[1..]");
        assert_eq!(
            action_names(dc::ACTION_POST | dc::ACTION_BLOCK),
            "Post+Block"
        );
        assert_eq!(lookup_names(0), "none");
    }

    #[test]
    fn policy_errors_exit_1_without_compiling() {
        let dir = std::env::temp_dir().join(format!("bulwark-compile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, POLICY.replace("10.0.0.0/8", "10.0.0.0/33")).unwrap();
        let args = CompileArgs {
            format: Format::Text,
            namespaces_from_workloads: None,
            slot: 0,
            paths: vec![bad],
        };
        let code = run(args).expect("policy errors are not I/O errors");
        assert_eq!(code, ExitCode::from(1));
        let missing = CompileArgs {
            format: Format::Json,
            namespaces_from_workloads: None,
            slot: 0,
            paths: vec![dir.join("missing.yaml")],
        };
        let err = run(missing).expect_err("a missing file is an I/O error");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
