//! The lint engine (`bulwark_policy`) and the compiler agree at the limits: a policy set that
//! lints without errors compiles, and a set the compiler refuses over a kernel limit gets a lint
//! error. Random sets are generated around every limit the compiler checks (selectors, process
//! and destination conditions, value lengths, argv index, map entries).

use bulwark_compiler::{compile, ErrorKind, NamespaceIds};
use daemon_common as dc;
use serde_json::{json, Value};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Around `limit`: limit-2 ..= limit+1.
    fn around(&mut self, limit: usize) -> usize {
        limit - 2 + self.below(4)
    }
}

const SET_OPS: [&str; 2] = ["In", "NotIn"];
const OPS: [&str; 7] = [
    "In",
    "NotIn",
    "Prefix",
    "NotPrefix",
    "Postfix",
    "NotPostfix",
    "Equal",
];

/// One policy document (JSON is YAML) whose selectors push one limit.
fn near_limit_set(rng: &mut Rng) -> Vec<Value> {
    let mut docs = Vec::new();
    let policy = |name: String, rules: Value| {
        json!({"apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
               "metadata": {"name": name}, "spec": {"rules": rules}})
    };
    match rng.below(6) {
        0 => {
            // Selectors, split over two policies.
            let n = rng.around(dc::MAX_SELECTORS);
            let a = rng.below(n);
            for (i, count) in [a, n - a].into_iter().enumerate() {
                let sels: Vec<Value> = (0..count)
                    .map(|k| json!({"matchBinaries": [{"operator": "In", "values": [format!("/bin/s{}", k % 5)]}]}))
                    .collect();
                docs.push(policy(
                    format!("sel-{i}"),
                    json!([{"name": "r", "hook": "exec", "selectors": sels}]),
                ));
            }
        }
        1 => {
            // Distinct process conditions, with duplicates that must be shared.
            let n = rng.around(dc::MAX_PROC_CONDITIONS);
            let sels: Vec<Value> = (0..n)
                .map(|k| {
                    let op = OPS[k % 7];
                    json!({"matchArgs": [{"index": k % 3, "operator": op, "values": [format!("v{k}")]}],
                           "matchBinaries": [{"operator": "Prefix", "values": ["/usr/"]}]})
                })
                .collect();
            // n-1 distinct matchArgs + 1 shared matchBinaries = n conditions, in <= 64 selectors.
            let sels: Vec<Value> = sels.into_iter().take(n - 1).collect();
            if sels.len() <= dc::MAX_SELECTORS {
                docs.push(policy(
                    "conds".into(),
                    json!([{"name": "r", "hook": "exec", "selectors": sels}]),
                ));
            }
        }
        2 => {
            let n = rng.around(dc::MAX_DEST_CONDITIONS);
            let entries: Vec<Value> = (0..n)
                // One In and many NotIn: satisfiable together (In entries are ANDed too).
                .map(|k| json!({"operator": SET_OPS[usize::from(k > 0)], "ports": [k + 1], "protocol": "TCP"}))
                .collect();
            docs.push(policy(
                "dests".into(),
                json!([{"name": "r", "hook": "connect", "selectors": [{"matchDestinations": entries}]}]),
            ));
        }
        3 => {
            // Value lengths.
            let (op, limit) = match rng.below(3) {
                0 => ("In", dc::PATH_LEN),
                1 => ("Prefix", dc::PATH_AFFIX_LEN),
                _ => ("NotPostfix", dc::PATH_AFFIX_LEN),
            };
            let len = rng.around(limit);
            let value = format!("/{}", "a".repeat(len - 1));
            let arg_len = rng.around(dc::ARG_LEN);
            docs.push(policy(
                "lengths".into(),
                json!([{"name": "r", "hook": "exec", "selectors": [{
                    "matchBinaries": [{"operator": op, "values": [value]}],
                    "matchArgs": [{"operator": OPS[rng.below(7)], "values": ["b".repeat(arg_len)]}]}]}]),
            ));
        }
        4 => {
            let index = rng.around(dc::MAX_ARGS);
            docs.push(policy(
                "index".into(),
                json!([{"name": "r", "hook": "exec", "selectors": [{
                    "matchArgs": [{"index": index, "operator": "In", "values": ["x"]}]}]}]),
            ));
        }
        _ => {
            // Map entries: binary values and port blocks.
            let n = rng.around(dc::MAX_BINARY_VALUES as usize);
            let values: Vec<String> = (0..n).map(|k| format!("/opt/{k}")).collect();
            let ports = rng.around(dc::MAX_PORT_PREFIXES as usize);
            let ports: Vec<Value> = (0..ports).map(|k| json!(2 * k + 1)).collect();
            docs.push(policy(
                "entries".into(),
                json!([
                    {"name": "e", "hook": "exec", "selectors": [{"matchBinaries": [{"operator": OPS[rng.below(7)], "values": values}]}]},
                    {"name": "c", "hook": "connect", "selectors": [{"matchDestinations": [{"operator": "In", "ports": ports}]}]}
                ]),
            ));
        }
    }
    docs
}

#[test]
fn lint_and_compiler_agree_at_the_limits() {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let (mut both_ok, mut both_refuse) = (0, 0);
    for round in 0..120 {
        let docs = near_limit_set(&mut rng);
        if docs.is_empty() {
            continue;
        }
        let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        let lint = bulwark_policy::lint_source("set.yaml", &text.join("\n---\n"));
        // Only the kernel-limit codes are about what the compiler checks; anything else means
        // the generator produced a policy that is wrong in another way.
        let limit_codes = ["BW090", "BW091", "BW092"];
        let (lint_errors, other): (Vec<_>, Vec<_>) = lint
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| (d.code.to_string(), format!("{}: {}", d.code, d.message)))
            .partition(|(code, _)| limit_codes.contains(&code.as_str()));
        assert!(
            other.is_empty(),
            "round {round}: generator made an invalid policy: {other:?}"
        );
        let lint_errors: Vec<String> = lint_errors.into_iter().map(|(_, m)| m).collect();
        let policies: Vec<bulwark_policy::AnyPolicy> = docs
            .iter()
            .map(|d| {
                bulwark_policy::AnyPolicy::Cluster(
                    serde_json::from_value(d.clone()).expect("typed"),
                )
            })
            .collect();
        let compiled = compile(&policies, &mut NamespaceIds::new());
        match (&compiled, lint_errors.is_empty()) {
            (Ok(_), true) => both_ok += 1,
            (Err(e), false) => {
                assert!(
                    matches!(e.kind, ErrorKind::LimitExceeded { .. }),
                    "round {round}: {e}"
                );
                both_refuse += 1;
            }
            (Ok(_), false) => panic!("round {round}: lint refuses what compiles: {lint_errors:?}"),
            (Err(e), true) => panic!("round {round}: lint passes what the compiler refuses: {e}"),
        }
    }
    assert!(
        both_ok > 20 && both_refuse > 20,
        "{both_ok} accepted, {both_refuse} refused"
    );
}
