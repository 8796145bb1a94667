//! No input makes the lint panic: a few thousand generated and mutated inputs (byte flips,
//! truncations, splices of policy fragments, deep nesting, odd scalars) go through
//! `lint_source`, and every diagnostic must be well formed. The cargo-fuzz target in `fuzz/`
//! does the same open-ended; this test keeps CI honest without it.

use bulwark_policy::load::lint_source;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<String> {
    let mut s = Vec::new();
    for dir in ["../policies/examples", "../tests/lint-cases"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    s.push(t);
                }
            }
        }
    }
    assert!(s.len() > 20, "seed corpus missing");
    s
}

const FRAGMENTS: &[&str] = &[
    "\n",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "---\n",
    "...\n",
    "\t",
    "? ",
    "|\n  x\n",
    ">\n",
    "~",
    "null",
    "0x",
    "-1",
    "99999999999999999999999",
    "1e999",
    ".nan",
    "\u{0}",
    "\u{feff}",
    "ü",
    "\\",
    "%YAML 1.2\n",
    "<<: *a\n",
    "operator: ",
    "values: ",
    "cidrs: [",
    "ports: [0",
    "hook: ",
    "index: -1",
    "index: 4294967296",
    "matchBinaries:",
    "matchDestinations:",
    "::/0",
    "/128",
    "255.255.255.255/32",
    "\"65535-1\"",
    "kind: TracingPolicyNamespaced\n",
    "namespace: ",
    "  ",
    "\r\n",
];

fn check(text: &str) {
    let out = lint_source("f.yaml", text);
    for d in &out.diagnostics {
        assert!(
            d.code.starts_with("BW") && d.code.len() == 5,
            "bad code {d:?}"
        );
        assert!(!d.message.is_empty(), "empty message {d:?}");
        assert!(
            d.line.is_some_and(|l| l >= 1) && d.column.is_some_and(|c| c >= 1),
            "no position {d:?}\n{text:?}"
        );
        assert_eq!(d.file.as_deref(), Some("f.yaml"));
    }
    // Renderers must cope with whatever came out.
    let _ = bulwark_policy::diagnostics::render_text(&out.diagnostics);
    let _ = bulwark_policy::diagnostics::render_sarif(&out.diagnostics);
}

#[test]
fn thousands_of_mutated_inputs_do_not_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut n = 0;
    for round in 0..4000 {
        let base = &seeds[round % seeds.len()];
        let mut bytes = base.as_bytes().to_vec();
        for _ in 0..1 + rng.below(6) {
            let pos = rng.below(bytes.len() + 1);
            match rng.below(6) {
                0 if !bytes.is_empty() => {
                    let p = pos.min(bytes.len() - 1);
                    bytes[p] = rng.next() as u8;
                }
                1 => bytes.truncate(pos),
                2 => {
                    let f = FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes();
                    bytes.splice(pos..pos, f.iter().copied());
                }
                3 if !bytes.is_empty() => {
                    let end = (pos + rng.below(40)).min(bytes.len());
                    bytes.drain(pos.min(end)..end);
                }
                4 => {
                    // splice in a piece of another seed
                    let other = seeds[rng.below(seeds.len())].as_bytes();
                    let a = rng.below(other.len());
                    let b = (a + rng.below(200)).min(other.len());
                    bytes.splice(pos..pos, other[a..b].iter().copied());
                }
                _ => {
                    // duplicate a line
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    let lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let l = lines[rng.below(lines.len())].to_string() + "\n";
                        let p = pos.min(bytes.len());
                        bytes.splice(p..p, l.bytes());
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        check(&text);
        n += 1;
    }
    assert_eq!(n, 4000);
}

#[test]
fn pathological_inputs_do_not_panic() {
    let cases = [
        String::new(),
        "\u{0}".into(),
        "[".repeat(10_000),
        "{".repeat(10_000),
        "- ".repeat(5_000),
        (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
        "a: &a [*a]\n".into(),
        "*unknown\n".into(),
        "? [a, b]\n: c\n".into(),
        "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\nspec: {rules: [{name: r, hook: exec, selectors: [{matchArgs: [{index: 4294967295, operator: In, values: []}]}]}]}\n".into(),
        "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\nspec: {rules: [{name: r, hook: connect, selectors: [{matchDestinations: [{operator: In, cidrs: ['::/128', '0.0.0.0/0', '::ffff:1.2.3.4/128', '1.2.3.4/-1'], ports: ['-', '1-', '-1', ' 5 ', 70000, -5, '1-2-3']}]}]}]}\n".into(),
        format!("apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: x}}\nspec: {{rules: [{}]}}\n", (0..300).map(|i| format!("{{name: r{i}, hook: exec, selectors: [{{matchBinaries: [{{operator: In, values: [/b{i}]}}]}}]}}")).collect::<Vec<_>>().join(", ")),
        "---\n---\n...\n---\n".into(),
        "a: 1\n\u{feff}b: 2\n".into(),
    ];
    for c in &cases {
        check(c);
    }
}
