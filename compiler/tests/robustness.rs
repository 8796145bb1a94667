//! `compile()` on unvalidated input never panics: random policies built from hostile values
//! (odd bytes, malformed CIDRs and ports, huge indices, empty and oversized lists, wrong
//! hook/field combinations, long names) either compile, and then produce consistent map
//! entries, or fail with an error that names the policy. The capacity check, which counts with
//! the same builder past every limit, never panics on them either.

use bulwark_compiler::{compile, destination, NamespaceIds};
use bulwark_policy::AnyPolicy;
use serde_json::{json, Value};

const SET_OPS: [&str; 2] = ["In", "NotIn"];
const ENCS: [&str; 2] = ["tls", "plaintext"];
const MODES: [&str; 2] = ["enforce", "monitor"];
const INDICES: [u64; 6] = [0, 15, 16, 255, 256, u32::MAX as u64];

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
}

fn hostile_string(rng: &mut Rng) -> String {
    let pool = [
        "",
        "/",
        "\u{0}",
        "/bin/\u{0}sh",
        "é",
        "日本",
        "\u{feff}",
        "-",
        "..",
        "/usr/bin/",
        "a b",
        "\n",
    ];
    match rng.below(4) {
        0 => pool[rng.below(pool.len())].to_string(),
        1 => "x".repeat(rng.below(600)),
        2 => (0..rng.below(20))
            .map(|_| char::from_u32(rng.below(0x3000) as u32).unwrap_or('?'))
            .collect(),
        _ => format!("/{}", "é".repeat(rng.below(200))),
    }
}

fn hostile_cidr(rng: &mut Rng) -> String {
    let pool = [
        "10.0.0.0/8",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "::/0",
        "::/129",
        "::ffff:1.2.3.4/128",
        "::ffff:0:0/96",
        "1.2.3.4",
        "1.2.3",
        "",
        "/",
        "10.0.0.0/",
        "0.0.0.0/0",
        "fe80::1%eth0",
        "255.255.255.255/32",
    ];
    if rng.below(3) == 0 {
        hostile_string(rng)
    } else {
        pool[rng.below(pool.len())].to_string()
    }
}

fn hostile_port(rng: &mut Rng) -> Value {
    let pool = [
        json!(0),
        json!(65535),
        json!(65536),
        json!(-1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!("80"),
        json!("1-65535"),
        json!("65535-1"),
        json!("-"),
        json!(""),
        json!("8000-8080"),
        json!(" 22 "),
    ];
    pool[rng.below(pool.len())].clone()
}

fn strings(rng: &mut Rng, f: fn(&mut Rng) -> String) -> Vec<String> {
    let n = if rng.below(20) == 0 {
        300
    } else {
        rng.below(4)
    };
    (0..n).map(|_| f(rng)).collect()
}

fn hostile_policy(rng: &mut Rng, i: usize) -> AnyPolicy {
    let ops = [
        "In",
        "NotIn",
        "Prefix",
        "NotPrefix",
        "Postfix",
        "NotPostfix",
        "Equal",
    ];
    let hooks = ["exec", "connect", "egress"];
    let actions = ["Post", "Sigkill", "Block"];
    let rules: Vec<Value> = (0..rng.below(4))
        .map(|r| {
            let sels: Vec<Value> = (0..if rng.below(10) == 0 { 70 } else { rng.below(4) })
                .map(|_| {
                    let mut s = serde_json::Map::new();
                    if rng.below(2) == 0 {
                        s.insert(
                            "matchBinaries".into(),
                            json!([{"operator": ops[rng.below(7)], "values": strings(rng, hostile_string)}]),
                        );
                    }
                    if rng.below(2) == 0 {
                        let mut a = json!({"operator": ops[rng.below(7)], "values": strings(rng, hostile_string)});
                        if rng.below(2) == 0 {
                            a["index"] = json!(INDICES[rng.below(6)]);
                        }
                        s.insert("matchArgs".into(), json!([a]));
                    }
                    if rng.below(3) == 0 {
                        s.insert(
                            "matchNamespaces".into(),
                            json!([{"operator": SET_OPS[rng.below(2)], "values": strings(rng, hostile_string)}]),
                        );
                    }
                    if rng.below(2) == 0 {
                        let ports: Vec<Value> = (0..rng.below(4)).map(|_| hostile_port(rng)).collect();
                        s.insert(
                            "matchDestinations".into(),
                            json!([{"operator": SET_OPS[rng.below(2)], "cidrs": strings(rng, hostile_cidr), "ports": ports}]),
                        );
                    }
                    if rng.below(4) == 0 {
                        s.insert("matchEncryption".into(), json!(ENCS[rng.below(2)]));
                    }
                    let acts: Vec<Value> = (0..rng.below(3)).map(|_| json!({"action": actions[rng.below(3)]})).collect();
                    s.insert("matchActions".into(), Value::Array(acts));
                    Value::Object(s)
                })
                .collect();
            json!({"name": hostile_string(rng).chars().take(40).collect::<String>() + &r.to_string(),
                   "hook": hooks[rng.below(3)], "selectors": sels})
        })
        .collect();
    let meta = if rng.below(2) == 0 {
        json!({"name": format!("p{i}"), "namespace": hostile_string(rng)})
    } else {
        json!({})
    };
    let doc = json!({"metadata": meta, "spec": {"mode": MODES[rng.below(2)], "rules": rules}});
    if rng.below(2) == 0 {
        AnyPolicy::Namespaced(serde_json::from_value(doc).expect("shape is valid"))
    } else {
        AnyPolicy::Cluster(serde_json::from_value(doc).expect("shape is valid"))
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut ok, mut refused) = (0, 0);
    for round in 0..600 {
        let policies: Vec<AnyPolicy> = (0..1 + rng.below(3))
            .map(|i| hostile_policy(&mut rng, i))
            .collect();
        let names: Vec<String> = policies.iter().map(|p| p.name().to_string()).collect();
        let refs: Vec<&AnyPolicy> = policies.iter().collect();
        for (i, d) in bulwark_compiler::capacity(&refs) {
            assert!(i < policies.len() && d.code == "BW092", "{d:?}");
            assert!(
                d.path
                    .as_deref()
                    .is_some_and(|p| p.starts_with("spec.rules[")),
                "{d:?}"
            );
        }
        match compile(&policies, &mut NamespaceIds::new()) {
            Ok(rs) => {
                ok += 1;
                let e = rs.map_entries((round % 2) as u8);
                assert_eq!(e.selectors.len(), rs.selectors().len());
                assert_eq!(e.slot_meta.selector_count as usize, rs.selectors().len());
                assert!(rs.selectors().len() <= 64 && rs.proc_conditions().len() <= 64);
                let _ = rs.evaluate_process("/bin/sh", &["sh", "-c", "x"], 1);
                let _ = rs.evaluate_destination(
                    u64::MAX,
                    &destination("10.0.0.1".parse().unwrap(), 80, 6),
                );
            }
            Err(e) => {
                refused += 1;
                assert!(
                    names.contains(&e.at.policy),
                    "error names one of the policies: {e}"
                );
                assert!(!e.kind.to_string().is_empty());
            }
        }
    }
    assert!(
        ok > 20 && refused > 20,
        "both outcomes exercised: {ok} compiled, {refused} refused"
    );
}
