//! Compile-time benchmark (not a test): a large policy set of 10,000 CIDRs (nested and
//! overlapping) and 1,000 binary matchers, compiled and turned into map entries. Prints
//! timings; the target is well under 100 ms per compile in a release build.
//!
//!     cargo bench -p bulwark-compiler                 # release (bench profile)
//!     cargo bench -p bulwark-compiler --profile dev   # quicker to build, slower to run

use bulwark_compiler::{compile, NamespaceIds};
use bulwark_policy::AnyPolicy;
use serde_json::json;
use std::time::{Duration, Instant};

fn big_policies() -> Vec<AnyPolicy> {
    // 10,000 CIDRs: /16s, /24s inside them and /32s inside those, v4 and v6, in 8 conditions.
    let mut cidr_sets: Vec<Vec<String>> = vec![Vec::new(); 8];
    for i in 0..10_000u32 {
        // Group j: a /16, a /24 inside it, a /32 inside that, and a v6 /64: all distinct.
        let j = i / 4;
        let (a, b, c, d) = (11 + j / 256, j % 256, j % 200, 1 + j % 250);
        let c = match i % 4 {
            0 => format!("{a}.{b}.0.0/16"),
            1 => format!("{a}.{b}.{c}.0/24"),
            2 => format!("{a}.{b}.{c}.{d}"),
            _ => format!("2001:db8:{j:x}::/64"),
        };
        cidr_sets[(i % 8) as usize].push(c);
    }
    let dests: Vec<_> = cidr_sets
        .iter()
        .enumerate()
        .map(|(k, c)| {
            json!({"matchDestinations": [{"operator": if k % 2 == 0 { "In" } else { "NotIn" },
                   "cidrs": c, "ports": ["1-1023", 8080]}],
                   "matchActions": [{"action": "Block"}]})
        })
        .collect();
    // 1,000 binary matchers: exact paths, prefixes and postfixes, in 12 conditions.
    let mut bins = Vec::new();
    for (k, op) in [
        "In",
        "Prefix",
        "Postfix",
        "NotIn",
        "NotPrefix",
        "NotPostfix",
    ]
    .iter()
    .enumerate()
    {
        for half in 0..2 {
            let values: Vec<String> = (0..84)
                .map(|i| match k % 3 {
                    0 => format!("/usr/local/bin/tool-{k}-{half}-{i}"),
                    1 => format!("/opt/app{}/{k}/{half}/{i}/", i % 10),
                    _ => format!("-{k}-{half}-{i}"),
                })
                .collect();
            bins.push(
                json!({"matchBinaries": [{"operator": op, "values": values}],
                             "matchActions": [{"action": "Sigkill"}]}),
            );
        }
    }
    let p = json!({
        "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy", "metadata": {"name": "big"},
        "spec": {"rules": [
            {"name": "connect", "hook": "connect", "selectors": dests},
            {"name": "exec", "hook": "exec", "selectors": bins}
        ]}
    });
    vec![AnyPolicy::Cluster(
        serde_json::from_value(p).expect("valid policy"),
    )]
}

fn main() {
    let policies = big_policies();
    let runs = 10;
    let (mut compile_t, mut entries_t) = (Vec::new(), Vec::new());
    let mut sizes = (0, 0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let rs = compile(&policies, &mut NamespaceIds::new()).expect("compiles");
        compile_t.push(t.elapsed());
        let t = Instant::now();
        let e = rs.map_entries(1);
        entries_t.push(t.elapsed());
        sizes = (
            e.dest_v4.len() + e.dest_v6.len(),
            e.bin_exact.len() + e.bin_prefix.len() + e.bin_postfix.len(),
            e.len(),
        );
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (cmin, cmed, cmax) = stats(&mut compile_t);
    let (emin, emed, emax) = stats(&mut entries_t);
    println!("input: 10000 CIDRs and 1008 binary values; output: {} CIDR entries, {} binary entries, {} entries in all", sizes.0, sizes.1, sizes.2);
    println!("compile():         min {cmin:?}  median {cmed:?}  max {cmax:?}  ({runs} runs)");
    println!("map_entries(slot): min {emin:?}  median {emed:?}  max {emax:?}");
    println!("total (median):    {:?}", cmed + emed);
}
