//! Simulates the kernel's lookups over generated `MapEntries` (exact hash lookups,
//! longest-prefix match, `hits ^ negate`, required-mask checks) and checks that they agree with
//! the reference evaluator on many random policies and inputs, including prefixes and CIDRs
//! that overlap across conditions. Two rule sets share the maps in slots 0 and 1, as during a
//! switch, to check that slots do not leak into each other. Keys carry the *table* (a group of
//! a slot); node rule sets ([`compile_node`]) are checked the same way, the process's group
//! found in the slot's `GROUPS` entries as the kernel does.

use bulwark_compiler::{
    compile, compile_node, destination, BinaryIdentities, ExecFacts, FileId, MapEntries,
    NamespaceIds, PayloadMatch, RuleSet, LOADER_OPTIONS_WITH_VALUE,
};
use bulwark_policy::{AnyPolicy, Hook};
use daemon_common as dc;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Both slots' entries (every table of each), as one set of maps.
struct Maps {
    meta: BTreeMap<u8, dc::SlotMeta>,
    all: MapEntries,
    groups: Vec<(dc::NamespaceKey, u32)>,
}

impl Maps {
    fn new(a: &MapEntries, b: &MapEntries) -> Maps {
        Maps::of_tables(&[(0, a), (1, b)], Vec::new())
    }

    /// Maps holding both slots of two node rule sets.
    fn of_slots(a: &dc::SlotEntries, b: &dc::SlotEntries) -> Maps {
        let tables: Vec<(u32, &MapEntries)> = a
            .tables
            .iter()
            .chain(&b.tables)
            .map(|(t, e)| (*t, e))
            .collect();
        let groups = a.groups.iter().chain(&b.groups).copied().collect();
        Maps::of_tables(&tables, groups)
    }

    fn of_tables(tables: &[(u32, &MapEntries)], groups: Vec<(dc::NamespaceKey, u32)>) -> Maps {
        let mut all = MapEntries::default();
        let mut meta = BTreeMap::new();
        for (t, b) in tables {
            assert!(
                meta.insert(*t as u8, b.slot_meta).is_none(),
                "table {t} twice"
            );
            Maps::extend(&mut all, b);
        }
        Maps { meta, all, groups }
    }

    /// The table the exec program evaluates for namespace `ns` in `slot` (`GROUPS`, else 0).
    fn table_for(&self, slot: u8, ns: u32) -> u8 {
        let key = dc::NamespaceKey {
            slot: u32::from(slot),
            namespace_id: ns,
        };
        let group = self
            .groups
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, g)| *g);
        dc::table(u32::from(slot), group) as u8
    }

    fn meta_of(&self, table: u8) -> &dc::SlotMeta {
        self.meta.get(&table).expect("table written")
    }

    fn extend(all: &mut MapEntries, b: &MapEntries) {
        all.selectors.extend(b.selectors.iter().cloned());
        all.bin_exact.extend(b.bin_exact.iter().cloned());
        all.bin_inode.extend(b.bin_inode.iter().cloned());
        all.bin_prefix.extend(b.bin_prefix.iter().cloned());
        all.bin_postfix.extend(b.bin_postfix.iter().cloned());
        all.arg_exact.extend(b.arg_exact.iter().cloned());
        all.arg_prefix.extend(b.arg_prefix.iter().cloned());
        all.arg_postfix.extend(b.arg_postfix.iter().cloned());
        all.namespaces.extend(b.namespaces.iter().cloned());
        all.dest_v4.extend(b.dest_v4.iter().cloned());
        all.dest_v6.extend(b.dest_v6.iter().cloned());
        all.ports.extend(b.ports.iter().cloned());
    }
}

/// Independent LPM semantics: the entry with the longest prefix that matches `key`'s first
/// `key_bits` bits.
fn lpm<D>(
    entries: &[(u32, D, u64)],
    data: impl Fn(&D) -> Vec<u8>,
    key: &[u8],
    key_bits: u32,
) -> u64 {
    let mut best: Option<(u32, u64)> = None;
    for (bits, d, mask) in entries {
        if *bits > key_bits {
            continue;
        }
        let d = data(d);
        let matches = (0..*bits as usize).all(|i| {
            let (byte, bit) = (i / 8, 7 - (i % 8));
            (d[byte] >> bit) & 1 == (key[byte] >> bit) & 1
        });
        if matches && best.is_none_or(|(b, _)| *bits > b) {
            best = Some((*bits, *mask));
        }
    }
    best.map_or(0, |(_, m)| m)
}

fn zero_fill(src: &[u8], n: usize) -> Vec<u8> {
    let mut v = src[..src.len().min(n)].to_vec();
    v.resize(n, 0);
    v
}

/// The binary path lookups of the exec program for one path (exact, prefix, postfix).
fn path_hits(m: &Maps, slot: u8, binary: &[u8]) -> u64 {
    let meta = m.meta_of(slot);
    let e = &m.all;
    let mut hits = 0u64;
    if meta.lookups & dc::LOOKUP_BIN_EXACT != 0 && binary.len() <= dc::PATH_LEN {
        let key = zero_fill(binary, dc::PATH_LEN);
        for (k, mask) in &e.bin_exact {
            if k.slot == u32::from(slot) && k.path[..] == key[..] {
                hits |= mask;
            }
        }
    }
    let path_data = |d: &dc::PathLpmData| [&[d.slot][..], &d.bytes[..]].concat();
    if meta.lookups & dc::LOOKUP_BIN_PREFIX != 0 {
        let head = &binary[..binary.len().min(dc::PATH_AFFIX_LEN)];
        let key = [&[slot][..], &zero_fill(head, dc::PATH_AFFIX_LEN)].concat();
        hits |= lpm(&e.bin_prefix, path_data, &key, 8 * (1 + head.len() as u32));
    }
    if meta.lookups & dc::LOOKUP_BIN_POSTFIX != 0 {
        let tail: Vec<u8> = binary
            .iter()
            .rev()
            .take(dc::PATH_AFFIX_LEN)
            .copied()
            .collect();
        let key = [&[slot][..], &zero_fill(&tail, dc::PATH_AFFIX_LEN)].concat();
        hits |= lpm(&e.bin_postfix, path_data, &key, 8 * (1 + tail.len() as u32));
    }
    hits
}

/// The process part of the exec program: selector bits for `slot`.
fn kernel_process(m: &Maps, slot: u8, facts: &ExecFacts) -> u64 {
    let meta = m.meta_of(slot);
    let e = &m.all;
    let argv: Vec<&[u8]> = facts.argv.iter().map(Vec::as_slice).collect();
    let ns = facts.namespace_id;
    let mut hits = path_hits(m, slot, &facts.path);
    if let Some(f) = &facts.filename {
        hits |= path_hits(m, slot, f);
    }
    if let Some(t) = loader_target(facts) {
        hits |= path_hits(m, slot, &t);
    }
    if let (true, Some(f)) = (meta.lookups & dc::LOOKUP_BIN_INODE != 0, facts.file) {
        for (k, mask) in &e.bin_inode {
            if k.slot == u32::from(slot) && (k.dev, k.ino) == (f.dev, f.ino) {
                hits |= mask;
            }
        }
    }
    if facts.fileless {
        hits |= meta.kind_fileless;
    }
    if facts.loader {
        hits |= meta.kind_loader;
    }
    let arg_data = |d: &dc::ArgLpmData| [&[d.slot, d.index][..], &d.bytes[..]].concat();
    // The walk (when the slot has argument conditions): every element within the bounds;
    // past them the arguments are incomplete.
    let area: usize = argv.iter().map(|a| a.len() + 1).sum();
    let incomplete =
        meta.proc_args != 0 && (argv.len() > dc::MAX_ARG_ELEMENTS || area > dc::MAX_ARG_BYTES);
    for (i, arg) in argv.iter().enumerate().take(dc::MAX_ARG_ELEMENTS) {
        let mut indices = Vec::new();
        if i < dc::MAX_ARGS {
            indices.push(i as u8);
        }
        if i >= 1 && meta.lookups & dc::LOOKUP_ARG_ANY != 0 {
            indices.push(dc::ARG_ANY_INDEX);
        }
        for index in indices {
            if meta.lookups & dc::LOOKUP_ARG_EXACT != 0 && arg.len() <= dc::ARG_LEN {
                let key = zero_fill(arg, dc::ARG_LEN);
                for (k, mask) in &e.arg_exact {
                    if k.slot == slot && k.index == index && k.value[..] == key[..] {
                        hits |= mask;
                    }
                }
            }
            if meta.lookups & dc::LOOKUP_ARG_PREFIX != 0 {
                let head = &arg[..arg.len().min(dc::ARG_LEN)];
                let key = [&[slot, index][..], &zero_fill(head, dc::ARG_LEN)].concat();
                hits |= lpm(&e.arg_prefix, arg_data, &key, 8 * (2 + head.len() as u32));
            }
            if meta.lookups & dc::LOOKUP_ARG_POSTFIX != 0 {
                let tail: Vec<u8> = arg.iter().rev().take(dc::ARG_LEN).copied().collect();
                let key = [&[slot, index][..], &zero_fill(&tail, dc::ARG_LEN)].concat();
                hits |= lpm(&e.arg_postfix, arg_data, &key, 8 * (2 + tail.len() as u32));
            }
        }
    }
    if meta.lookups & dc::LOOKUP_NAMESPACE != 0 && ns != 0 {
        for (k, mask) in &e.namespaces {
            if *k
                == (dc::NamespaceKey {
                    slot: u32::from(slot),
                    namespace_id: ns,
                })
            {
                hits |= mask;
            }
        }
    }
    let mut holds = hits ^ meta.proc_negate;
    if incomplete {
        holds |= meta.proc_args;
    }
    required(m, slot, holds, |s| s.proc_required)
}

fn required(m: &Maps, slot: u8, holds: u64, field: impl Fn(&dc::SelectorEntry) -> u64) -> u64 {
    let meta = m.meta_of(slot);
    let mut out = 0;
    for i in 0..meta.selector_count {
        let index = u32::from(slot) * dc::MAX_SELECTORS as u32 + i;
        let entry = m
            .all
            .selectors
            .iter()
            .find(|(k, _)| *k == index)
            .map(|(_, e)| *e)
            .expect("selector written");
        if field(&entry) & holds == field(&entry) {
            out |= 1 << i;
        }
    }
    out
}

/// The destination part of the connect program.
fn kernel_destination(m: &Maps, slot: u8, selectors: u64, dest: &dc::Destination) -> u64 {
    let meta = m.meta_of(slot);
    let e = &m.all;
    let mut d = *dest;
    // IPv4-mapped IPv6 -> IPv4 before the lookup.
    if d.family == 10 && d.addr[..10] == [0; 10] && d.addr[10..12] == [0xff, 0xff] {
        let v4 = [d.addr[12], d.addr[13], d.addr[14], d.addr[15]];
        d.addr = [0; 16];
        d.addr[..4].copy_from_slice(&v4);
        d.family = 2;
    }
    let mut addr_hits = meta.dest_any_addr;
    if d.family == 2 {
        let key = [&[slot][..], &d.addr[..4]].concat();
        addr_hits |= lpm(
            &e.dest_v4,
            |x: &dc::V4LpmData| [&[x.slot][..], &x.addr[..]].concat(),
            &key,
            40,
        );
    } else if d.family == 10 {
        let key = [&[slot][..], &d.addr[..]].concat();
        addr_hits |= lpm(
            &e.dest_v6,
            |x: &dc::V6LpmData| [&[x.slot][..], &x.addr[..]].concat(),
            &key,
            136,
        );
    }
    let key = [&[slot][..], &d.port.to_be_bytes()[..]].concat();
    let port_hits = meta.dest_any_port
        | lpm(
            &e.ports,
            |x: &dc::PortLpmData| [&[x.slot][..], &x.port[..]].concat(),
            &key,
            24,
        );
    let proto = match d.protocol {
        dc::PROTO_TCP => meta.dest_tcp,
        dc::PROTO_UDP => meta.dest_udp,
        _ => meta.dest_tcp & meta.dest_udp,
    };
    let holds = (addr_hits & port_hits & proto) ^ meta.dest_negate;
    selectors & required(m, slot, holds, |s| s.dest_required)
}

/// The payload programs' decision (egress sk_msg, ingress cgroup_skb): the hook's selectors
/// among the process's whose destination conditions hold, filtered by the selector entry's
/// encryption byte with the kernel's own `encryption_match`.
fn kernel_payload(
    m: &Maps,
    slot: u8,
    hook: Hook,
    process: u64,
    dest: &dc::Destination,
    verdict: u8,
) -> PayloadMatch {
    let meta = m.meta_of(slot);
    let mask = match hook {
        Hook::Egress => meta.hook_egress,
        Hook::Ingress => meta.hook_ingress,
        _ => unreachable!("not a payload hook"),
    };
    let candidates = kernel_destination(m, slot, process & mask, dest);
    let mut out = PayloadMatch::default();
    for i in 0..meta.selector_count {
        let bit = 1u64 << i;
        if candidates & bit == 0 {
            continue;
        }
        let index = u32::from(slot) * dc::MAX_SELECTORS as u32 + i;
        let (_, e) = m
            .all
            .selectors
            .iter()
            .find(|(k, _)| *k == index)
            .expect("selector");
        if dc::encryption_match(e.encryption, verdict).is_none() {
            continue;
        }
        out.matched |= bit;
        if e.mode == dc::MODE_ENFORCE && e.actions & dc::ACTION_BLOCK != 0 {
            out.blocking |= bit;
        }
    }
    out
}

/// The exec program's search for a loader's target, written independently of the evaluator:
/// argv[0] skipped; `--` makes the next element the target; an element of the option table
/// skips the next; any other `--x` is skipped; the first other element is it, if it fits.
fn loader_target(facts: &ExecFacts) -> Option<Vec<u8>> {
    if !facts.loader {
        return None;
    }
    let mut it = facts.argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a.as_slice() == b"--" {
            return it
                .next()
                .filter(|t| !t.is_empty() && t.len() < 256)
                .cloned();
        }
        if LOADER_OPTIONS_WITH_VALUE.contains(&a.as_slice()) {
            it.next();
            continue;
        }
        if a.starts_with(b"--") {
            continue;
        }
        return (!a.is_empty() && a.len() < 256).then(|| a.clone());
    }
    None
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const PATHS: &[&str] = &[
    "/usr/bin/nc",
    "/usr/bin/",
    "/usr/",
    "/usr/bin/ncat",
    "/bin/sh",
    "/bin/",
    "sh",
    "/tmp/",
    "nc",
    "at",
    "",
    "/usr/bin/n",
];
const ARGS: &[&str] = &["-e", "-", "--exec", "-c", "/bin/sh", "sh", "x", "--e", ""];
const NAMESPACES: &[&str] = &["a", "b", "c"];
const OPS: &[&str] = &[
    "In",
    "NotIn",
    "Prefix",
    "NotPrefix",
    "Postfix",
    "NotPostfix",
    "Equal",
];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "10.128.0.0/9",
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::1",
    "::ffff:10.1.0.0/112",
    "fe80::/10",
];
const PORTS: &[&str] = &[
    "80",
    "443",
    "8000-8080",
    "1-1023",
    "1024-65535",
    "53",
    "8080-8081",
    "1-65535",
];

fn values(rng: &mut Rng, pool: &[&str]) -> Vec<String> {
    (0..rng.below(4))
        .map(|_| rng.pick(pool).to_string())
        .collect()
}

fn random_selector(rng: &mut Rng, hook: &str) -> Value {
    let mut sel = serde_json::Map::new();
    let bins: Vec<Value> = (0..rng.below(3))
        .map(|_| json!({"operator": rng.pick(OPS), "values": values(rng, PATHS)}))
        .collect();
    sel.insert("matchBinaries".into(), Value::Array(bins));
    let args: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut a = json!({"operator": rng.pick(OPS), "values": values(rng, ARGS)});
            if rng.chance(50) {
                a["index"] = json!(rng.below(4));
            }
            a
        })
        .collect();
    sel.insert("matchArgs".into(), Value::Array(args));
    let nss: Vec<Value> = (0..rng.below(2))
        .map(
            |_| json!({"operator": *rng.pick(&["In", "NotIn"]), "values": values(rng, NAMESPACES)}),
        )
        .collect();
    sel.insert("matchNamespaces".into(), Value::Array(nss));
    let kinds: Vec<Value> = (0..rng.below(2))
        .map(|_| {
            let values: Vec<&str> = (0..1 + rng.below(2))
                .map(|_| *rng.pick(&["fileless", "loader"]))
                .collect();
            json!({"operator": *rng.pick(&["In", "NotIn"]), "values": values})
        })
        .collect();
    sel.insert("matchExecKinds".into(), Value::Array(kinds));
    if hook != "exec" {
        let dests: Vec<Value> = (0..rng.below(3))
            .map(|_| {
                let mut d =
                    json!({"operator": *rng.pick(&["In", "NotIn"]), "cidrs": values(rng, CIDRS)});
                if rng.chance(60) {
                    let ports: Vec<Value> = (0..1 + rng.below(2))
                        .map(|_| {
                            let p = *rng.pick(PORTS);
                            // Ports may be written as integers too.
                            p.parse::<i64>().map_or_else(|_| json!(p), |n| json!(n))
                        })
                        .collect();
                    d["ports"] = Value::Array(ports);
                }
                if rng.chance(40) {
                    d["protocol"] = json!(*rng.pick(&["TCP", "UDP"]));
                }
                d
            })
            .collect();
        sel.insert("matchDestinations".into(), Value::Array(dests));
    }
    if (hook == "egress" || hook == "ingress") && rng.chance(50) {
        sel.insert(
            "matchEncryption".into(),
            json!(*rng.pick(&["plaintext", "tls"])),
        );
    }
    Value::Object(sel)
}

/// Which random policies: the node tests keep the generator they were tuned with (exec, connect
/// and egress rules with their selectors' default actions); the flat check adds ingress rules
/// and random Post/Block actions, so the payload decisions see blocking selectors.
#[derive(Clone, Copy, PartialEq)]
enum Mix {
    Node,
    Flat,
}

fn random_policies(rng: &mut Rng, tag: usize, mix: Mix) -> Vec<AnyPolicy> {
    (0..1 + rng.below(3))
        .map(|p| {
            let rules: Vec<Value> = (0..1 + rng.below(2))
                .map(|r| {
                    let hook = if mix == Mix::Flat {
                        *rng.pick(&["exec", "connect", "egress", "ingress"])
                    } else {
                        *rng.pick(&["exec", "connect", "egress"])
                    };
                    let sels: Vec<Value> = (0..1 + rng.below(3))
                        .map(|_| {
                            let mut s = random_selector(rng, hook);
                            if mix == Mix::Flat && hook != "exec" && rng.chance(50) {
                                let action = *rng.pick(&["Post", "Block"]);
                                s["matchActions"] = json!([{ "action": action }]);
                            }
                            s
                        })
                        .collect();
                    json!({"name": format!("r{r}"), "hook": hook, "selectors": sels})
                })
                .collect();
            let spec = json!({"mode": "enforce", "rules": rules});
            if rng.chance(30) {
                let ns = rng.pick(NAMESPACES);
                AnyPolicy::Namespaced(
                    serde_json::from_value(json!({
                        "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicyNamespaced",
                        "metadata": {"name": format!("p{tag}-{p}"), "namespace": ns}, "spec": spec
                    }))
                    .expect("namespaced policy"),
                )
            } else {
                AnyPolicy::Cluster(
                    serde_json::from_value(json!({
                        "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
                        "metadata": {"name": format!("p{tag}-{p}")}, "spec": spec
                    }))
                    .expect("cluster policy"),
                )
            }
        })
        .collect()
}

/// File `n` of the identity pool.
fn file_of(n: usize) -> FileId {
    FileId {
        dev: (8 << 20) | (n as u32 % 2),
        ino: 100 + n as u64,
    }
}

fn random_binary(rng: &mut Rng) -> Vec<u8> {
    let mut b = rng.pick(PATHS).as_bytes().to_vec();
    b.extend_from_slice(rng.pick(&["", "x", "/nc", "bin/sh", "nc", "at"]).as_bytes());
    if rng.chance(3) {
        // Longer than the kernel's exact/affix buffers.
        b = [b"/very/".as_slice(), &vec![b'l'; 300], &b].concat();
    }
    b
}

fn random_argv(rng: &mut Rng) -> Vec<Vec<u8>> {
    if rng.chance(1) {
        // Past the kernel's bounds: in element count, or in bytes.
        let (n, len) = if rng.chance(50) {
            (dc::MAX_ARG_ELEMENTS + 1, 1)
        } else {
            (40, dc::MAX_ARG_BYTES / 32)
        };
        return (0..n).map(|_| vec![b'x'; len]).collect();
    }
    (0..rng.below(20))
        .map(|_| {
            let mut a = rng.pick(ARGS).as_bytes().to_vec();
            a.extend_from_slice(rng.pick(&["", "", "x", "e", "sh"]).as_bytes());
            if rng.chance(2) {
                a = [&a[..], &[b'z'; 200]].concat();
            }
            a
        })
        .collect()
}

fn random_destination(rng: &mut Rng) -> dc::Destination {
    let addrs = [
        "10.1.2.3",
        "10.1.2.4",
        "10.1.3.1",
        "10.2.0.1",
        "10.200.0.1",
        "11.0.0.1",
        "192.168.7.7",
        "8.8.8.8",
        "::ffff:10.1.2.3",
        "::ffff:10.1.9.9",
        "::ffff:8.8.8.8",
        "2001:db8::5",
        "2001:db8:1::1",
        "2001:db8:1::2",
        "2001:db9::1",
        "fe80::1",
        "::1",
    ];
    let addr: IpAddr = rng.pick(&addrs).parse().unwrap();
    let port = *rng.pick(&[
        80u16, 443, 8000, 8080, 8081, 8079, 53, 1023, 1024, 65535, 0, 22,
    ]);
    let proto = *rng.pick(&[dc::PROTO_TCP, dc::PROTO_UDP, 1]);
    destination(addr, port, proto)
}

/// Returns (rule sets compiled, refused over a limit, process evaluations with some selector
/// holding, destination evaluations with some selector holding).
/// Rule sets compiled, refused, and inputs that matched something: processes, destinations,
/// payload decisions.
fn check_agreement(seed: u64, rounds: usize) -> (usize, usize, usize, usize, usize) {
    let mut rng = Rng(seed);
    let (mut compiled, mut refused, mut proc_nonzero, mut dest_nonzero) = (0, 0, 0, 0);
    let mut payload_nonzero = 0;
    for round in 0..rounds {
        let mut ns = NamespaceIds::new();
        let (mut a, mut b): (RuleSet, RuleSet) = match (
            compile(&random_policies(&mut rng, round, Mix::Flat), &mut ns),
            compile(&random_policies(&mut rng, round + 1000, Mix::Flat), &mut ns),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                assert!(
                    e.kind.limit().is_some(),
                    "random policies are valid, only limits may refuse them: {e}"
                );
                refused += 1;
                continue;
            }
        };
        compiled += 1;
        // Paths name files from a small pool (two paths may name one file: a hard link).
        let mut ids = BinaryIdentities::new();
        for p in PATHS {
            for _ in 0..rng.below(3) {
                ids.insert(p, file_of(rng.below(6)));
            }
        }
        a.resolve_binaries(&ids).expect("few identities");
        b.resolve_binaries(&ids).expect("few identities");
        let maps = Maps::new(&a.map_entries(0), &b.map_entries(1));
        for _ in 0..60 {
            let mut facts = ExecFacts::new(&random_binary(&mut rng), &[], rng.below(5) as u32);
            facts.argv = random_argv(&mut rng);
            if rng.chance(30) {
                facts.filename = Some(random_binary(&mut rng));
            }
            facts.file = rng.chance(80).then(|| file_of(rng.below(8)));
            facts.fileless = rng.chance(15);
            facts.loader = rng.chance(20);
            if facts.loader && rng.chance(60) {
                // A loader command line: options, maybe `--`, a target from the paths.
                let mut argv = vec![b"ld.so".to_vec()];
                for _ in 0..rng.below(3) {
                    let opt = *rng.pick(&[&b"--library-path"[..], b"--inhibit-cache", b"--argv0"]);
                    argv.push(opt.to_vec());
                    if LOADER_OPTIONS_WITH_VALUE.contains(&opt) {
                        argv.push(random_binary(&mut rng));
                    }
                }
                if rng.chance(30) {
                    argv.push(b"--".to_vec());
                }
                argv.push(random_binary(&mut rng));
                argv.extend(random_argv(&mut rng));
                facts.argv = argv;
            }
            for (slot, rs) in [(0u8, &a), (1u8, &b)] {
                let want = rs.evaluate_exec(&facts);
                let got = kernel_process(&maps, slot, &facts);
                proc_nonzero += usize::from(want != 0);
                assert_eq!(
                    got,
                    want,
                    "process selectors differ (round {round}, slot {slot}, facts {facts:?})\n\
                     conditions: {:#?}\nselectors: {:#?}",
                    rs.proc_conditions(),
                    rs.selectors()
                );
                for _ in 0..4 {
                    let dest = random_destination(&mut rng);
                    let sel = if rng.chance(50) { u64::MAX } else { want };
                    let want_d = rs.evaluate_destination(sel, &dest);
                    let got_d = kernel_destination(&maps, slot, sel, &dest);
                    dest_nonzero += usize::from(want_d != 0);
                    assert_eq!(
                        got_d, want_d,
                        "destination selectors differ (round {round}, slot {slot}, dest {dest:?})\n\
                         conditions: {:#?}",
                        rs.dest_conditions()
                    );
                    for hook in [Hook::Egress, Hook::Ingress] {
                        let verdict = *rng.pick(&[
                            dc::ENC_PENDING,
                            dc::ENC_PLAINTEXT,
                            dc::ENC_TLS,
                            dc::ENC_ENCRYPTED,
                        ]);
                        let want_p = rs.evaluate_payload(hook, sel, &dest, verdict);
                        let got_p = kernel_payload(&maps, slot, hook, sel, &dest, verdict);
                        payload_nonzero += usize::from(want_p.matched != 0);
                        assert_eq!(
                            got_p, want_p,
                            "{hook:?} payload decision differs (round {round}, slot {slot}, \
                             dest {dest:?}, verdict {verdict})"
                        );
                    }
                }
            }
        }
    }
    (
        compiled,
        refused,
        proc_nonzero,
        dest_nonzero,
        payload_nonzero,
    )
}

#[test]
fn map_entries_agree_with_reference_on_random_policies() {
    let (compiled, refused, proc_nonzero, dest_nonzero, payload_nonzero) =
        check_agreement(0x9e37_79b9_7f4a_7c15, 400);
    assert!(
        compiled >= 300,
        "most random rule sets must compile: {compiled} compiled, {refused} refused"
    );
    // The inputs must exercise matches, not only misses (2 slots x 60 processes x 4 destinations).
    let (procs, dests) = (compiled * 2 * 60, compiled * 2 * 60 * 4);
    assert!(
        proc_nonzero * 4 > procs,
        "too few process matches: {proc_nonzero} of {procs}"
    );
    assert!(
        dest_nonzero * 4 > dests,
        "too few destination matches: {dest_nonzero} of {dests}"
    );
    // Two payload decisions per destination (egress, ingress).
    assert!(
        payload_nonzero * 20 > dests * 2,
        "too few payload matches: {payload_nonzero} of {}",
        dests * 2
    );
    eprintln!("{compiled} rule sets ({refused} over limits); {proc_nonzero}/{procs} processes, {dest_nonzero}/{dests} destinations and {payload_nonzero}/{} payload decisions matched something", dests * 2);
}

#[test]
fn overlapping_prefixes_and_cidrs_across_conditions() {
    // Condition 0: Prefix /usr/, 1: Prefix /usr/bin/, 2: NotPrefix /usr/bin/nc; v4 /8 vs /16 vs
    // /24 in three destination conditions, one NotIn. Lookups of the longest prefix must still
    // report every shorter covering prefix.
    let p: AnyPolicy = AnyPolicy::Cluster(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy", "metadata": {"name": "overlap"},
            "spec": {"rules": [
                {"name": "e", "hook": "exec", "selectors": [
                    {"matchBinaries": [{"operator": "Prefix", "values": ["/usr/"]}]},
                    {"matchBinaries": [{"operator": "Prefix", "values": ["/usr/bin/"]}]},
                    {"matchBinaries": [{"operator": "Prefix", "values": ["/usr/"]},
                                       {"operator": "NotPrefix", "values": ["/usr/bin/nc"]}]}]},
                {"name": "c", "hook": "connect", "selectors": [
                    {"matchDestinations": [{"operator": "In", "cidrs": ["10.0.0.0/8"]}]},
                    {"matchDestinations": [{"operator": "In", "cidrs": ["10.1.0.0/16"], "ports": ["8000-8080"]}]},
                    {"matchDestinations": [{"operator": "NotIn", "cidrs": ["10.1.2.0/24", "::ffff:10.1.2.0/120"]}]}]}
            ]}
        }))
        .unwrap(),
    );
    let rs = compile(&[p], &mut NamespaceIds::new()).unwrap();
    let maps = Maps::new(&rs.map_entries(0), &RuleSet::default().map_entries(1));
    let all = u64::MAX;
    for (bin, want) in [
        ("/usr/bin/nc", 0b011u64),
        ("/usr/bin/ls", 0b111),
        ("/usr/lib/x", 0b101),
        ("/opt/x", 0b000),
    ] {
        assert_eq!(rs.evaluate_process(bin, &[], 0) & 0b111, want, "{bin}");
        assert_eq!(
            kernel_process(&maps, 0, &ExecFacts::new(bin.as_bytes(), &[], 0)) & 0b111,
            want,
            "{bin}"
        );
    }
    for (addr, port, want) in [
        ("10.1.2.3", 8000u16, 0b011_000u64),
        ("::ffff:10.1.2.3", 8000, 0b011_000),
        ("10.1.3.3", 8000, 0b111_000),
        ("10.1.3.3", 9000, 0b101_000),
        ("10.9.0.1", 8000, 0b101_000),
        ("11.0.0.1", 80, 0b100_000),
    ] {
        let dest = destination(addr.parse().unwrap(), port, dc::PROTO_TCP);
        let connect = rs.hook_mask(bulwark_policy::Hook::Connect);
        assert_eq!(
            rs.evaluate_destination(connect, &dest),
            want,
            "{addr}:{port}"
        );
        assert_eq!(
            kernel_destination(&maps, 0, connect, &dest),
            want,
            "{addr}:{port}"
        );
    }
    assert_eq!(
        kernel_destination(
            &maps,
            0,
            all,
            &destination("11.0.0.1".parse().unwrap(), 1, 6)
        ) >> 3,
        0b100
    );
}

/// Namespaces of the node tests: enough that their policies fill several groups.
const NODE_NAMESPACES: &[&str] = &["a", "b", "c", "n3", "n4", "n5", "n6", "n7", "n8", "n9"];

/// A node's worth of random policies: most confined to one namespace (as namespaced
/// policies), a few cluster-wide.
fn random_node_policies(rng: &mut Rng, tag: usize) -> Vec<AnyPolicy> {
    let mut out = Vec::new();
    for i in 0..12 {
        for p in random_policies(rng, tag * 100 + i, Mix::Node) {
            let AnyPolicy::Cluster(c) = &p else {
                out.push(p);
                continue;
            };
            if rng.chance(93) {
                let spec = serde_json::to_value(&c.spec).expect("spec");
                out.push(AnyPolicy::Namespaced(
                    serde_json::from_value(json!({
                        "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicyNamespaced",
                        "metadata": {"name": format!("q{tag}-{i}-{}", out.len()),
                                     "namespace": rng.pick(NODE_NAMESPACES)},
                        "spec": spec
                    }))
                    .expect("namespaced policy"),
                ));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The egress selectors (of any group) whose destination conditions hold for `dest`: a socket
/// to it must be watched exactly when there is one.
fn some_egress_selector_holds(
    node: &bulwark_compiler::NodeRuleSet,
    dest: &dc::Destination,
) -> bool {
    node.groups().iter().any(|g| {
        let egress = g.rules.hook_mask(bulwark_policy::Hook::Egress);
        g.rules.evaluate_destination(egress, dest) != 0
    })
}

#[test]
fn node_groups_agree_with_reference_and_watch_every_egress_destination() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut nodes, mut multi_group, mut refused, mut matched, mut watched) = (0, 0, 0, 0, 0);
    for round in 0..40 {
        let mut ns = NamespaceIds::new();
        let (a, b) = match (
            compile_node(&random_node_policies(&mut rng, round), &mut ns),
            compile_node(&random_node_policies(&mut rng, round + 1000), &mut ns),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                assert!(e.kind.limit().is_some(), "only limits may refuse: {e}");
                if refused < 3 {
                    eprintln!("refused: {e}");
                }
                refused += 1;
                continue;
            }
        };
        nodes += 1;
        multi_group += usize::from(a.groups().len() > 2);
        let maps = Maps::of_slots(&a.slot_entries(0), &b.slot_entries(1));
        for _ in 0..80 {
            let name = rng.pick(NODE_NAMESPACES);
            // Host, a namespace of the pool, or one no policy names.
            let namespace_id = match rng.below(4) {
                0 => 0,
                1 => 999,
                _ => ns.get(name).unwrap_or(0),
            };
            let mut facts = ExecFacts::new(&random_binary(&mut rng), &[], namespace_id);
            facts.argv = random_argv(&mut rng);
            for (slot, node) in [(0u8, &a), (1u8, &b)] {
                let table = maps.table_for(slot, namespace_id);
                let group = node.group_for(namespace_id);
                assert_eq!(u32::from(table), dc::table(u32::from(slot), group));
                let rules = node.group(group).expect("group");
                let want = node.evaluate_exec(&facts);
                assert_eq!(want, rules.evaluate_exec(&facts));
                assert_eq!(
                    kernel_process(&maps, table, &facts),
                    want,
                    "round {round}, slot {slot}, group {group}, facts {facts:?}"
                );
                matched += usize::from(want != 0);
                for _ in 0..3 {
                    let dest = random_destination(&mut rng);
                    assert_eq!(
                        kernel_destination(&maps, table, want, &dest),
                        rules.evaluate_destination(want, &dest)
                    );
                    let watch = dc::table(u32::from(slot), dc::WATCH_GROUP as u32) as u8;
                    let is_watched = kernel_destination(&maps, watch, u64::MAX, &dest) != 0;
                    assert_eq!(
                        is_watched,
                        some_egress_selector_holds(node, &dest),
                        "{dest:?}"
                    );
                    watched += usize::from(is_watched);
                }
            }
        }
    }
    assert!(nodes >= 30, "{nodes} node sets compiled, {refused} refused");
    assert!(
        multi_group >= 20,
        "only {multi_group} of {nodes} node sets needed several groups"
    );
    assert!(
        matched > 0 && watched > 0,
        "{matched} matches, {watched} watched"
    );
    eprintln!("{nodes} node sets ({multi_group} with several groups, {refused} refused); {matched} matches, {watched} watched");
}
