//! Policy sets the benchmarks load, generated so their size is known exactly. None of the
//! generated matchers match the bench workloads except where a workload needs it (the watched
//! egress port and the event-pipeline port), so the measured cost is the cost of *checking*.

use std::fmt::Write as _;

/// Port whose TCP sockets a plaintext-egress policy watches.
pub const WATCHED_PORT: u16 = 9443;
/// Port a plaintext-egress policy watches for one binary the bench never runs: sockets to it
/// are watched (by destination) while the bench's plaintext passes, so every send is judged.
pub const WATCHED_PLAIN_PORT: u16 = 9444;
/// Port whose unconnected UDP sends a `Post` policy reports (the event-pipeline workload).
pub const EVENT_PORT: u16 = 9999;

fn header(out: &mut String, name: &str, mode: &str) {
    let _ = write!(
        out,
        "---\napiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  mode: {mode}\n  rules:\n"
    );
}

/// The "realistic" set of issue 5: 20 policies, 200 binary matchers, 1,000 CIDRs, plus one
/// plaintext-egress policy on [`WATCHED_PORT`].
pub fn realistic() -> String {
    let mut s = String::new();
    // 10 exec policies x 20 binaries = 200 binary matchers (exact, prefix and postfix).
    for p in 0..10 {
        header(&mut s, &format!("bench-exec-{p}"), "enforce");
        let op = ["In", "Prefix", "Postfix"][p % 3];
        let _ = writeln!(s, "  - name: kill-tools\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: {op}\n        values:");
        for b in 0..20 {
            let v = match op {
                "Postfix" => format!("/bench-nomatch-{p}-{b}"),
                _ => format!("/opt/bench-nomatch/p{p}/bin{b}"),
            };
            let _ = writeln!(s, "        - {v}");
        }
        let _ = writeln!(s, "      matchActions:\n      - action: Sigkill");
    }
    // 5 connect policies x 200 CIDRs = 1,000 CIDRs in 100.64.0.0/10 (never used here).
    for p in 0..5 {
        header(&mut s, &format!("bench-connect-{p}"), "enforce");
        let _ = writeln!(s, "  - name: block-ranges\n    hook: connect\n    selectors:\n    - matchDestinations:\n      - operator: In\n        cidrs:");
        for c in 0..200 {
            let _ = writeln!(s, "        - 100.{}.{}.0/24", 64 + p, c);
        }
        let _ = writeln!(s, "      matchActions:\n      - action: Block");
    }
    // 4 policies on namespaces and arguments, which host processes never match.
    for p in 0..4 {
        header(&mut s, &format!("bench-ns-{p}"), "enforce");
        let _ = writeln!(
            s,
            "  - name: kill-in-ns\n    hook: exec\n    selectors:\n    - matchNamespaces:\n      - operator: In\n        values: [bench-ns-{p}]\n      matchArgs:\n      - operator: Prefix\n        values: [\"--bench-nomatch-{p}\"]\n      matchActions:\n      - action: Sigkill"
        );
    }
    // 1 plaintext-egress policy: watched sockets enter the SOCKHASH until classified TLS;
    // its second rule names a binary the bench never runs, so plaintext to that port passes
    // and stays watched (every send is judged for its sender).
    header(&mut s, "bench-egress", "enforce");
    let _ = writeln!(
        s,
        "  - name: block-plaintext\n    hook: egress\n    selectors:\n    - matchDestinations:\n      - operator: In\n        ports: [{WATCHED_PORT}]\n        protocol: TCP\n      matchEncryption: plaintext\n      matchActions:\n      - action: Block\n  - name: block-plaintext-of-a-tool\n    hook: egress\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/opt/bench-nomatch/tool]\n      matchDestinations:\n      - operator: In\n        ports: [{WATCHED_PLAIN_PORT}]\n        protocol: TCP\n      matchEncryption: plaintext\n      matchActions:\n      - action: Block"
    );
    s
}

/// One policy that reports every unconnected UDP send to [`EVENT_PORT`].
pub fn event_flood() -> String {
    let mut s = String::new();
    header(&mut s, "bench-events", "enforce");
    let _ = writeln!(
        s,
        "  - name: report-udp\n    hook: connect\n    selectors:\n    - matchDestinations:\n      - operator: In\n        ports: [{EVENT_PORT}]\n        protocol: UDP\n      matchActions:\n      - action: Post"
    );
    s
}

/// 10,000 CIDRs and 1,000 binary matchers, for the compile + load measurement.
pub fn large() -> String {
    let mut s = String::new();
    for p in 0..10 {
        header(&mut s, &format!("bench-large-bin-{p}"), "enforce");
        let _ = writeln!(s, "  - name: kill\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values:");
        for b in 0..100 {
            let _ = writeln!(s, "        - /opt/bench-large/p{p}/bin{b}");
        }
        let _ = writeln!(s, "      matchActions:\n      - action: Sigkill");
    }
    for p in 0..10 {
        header(&mut s, &format!("bench-large-cidr-{p}"), "enforce");
        let _ = writeln!(s, "  - name: block\n    hook: connect\n    selectors:\n    - matchDestinations:\n      - operator: In\n        cidrs:");
        for c in 0..1000 {
            let _ = writeln!(s, "        - 100.{}.{}.{}/32", 64 + p, c / 250, c % 250);
        }
        let _ = writeln!(s, "      matchActions:\n      - action: Block");
    }
    s
}

/// `n` small valid policy documents, for the lint-speed measurement.
pub fn many_documents(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        header(&mut s, &format!("lint-bench-{i}"), "enforce");
        let _ = writeln!(
            s,
            "  - name: rule\n    hook: connect\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/usr/bin/tool{i}]\n      matchDestinations:\n      - operator: In\n        cidrs: [10.{}.{}.0/24]\n        ports: [443, \"8000-8080\"]\n      matchActions:\n      - action: Block",
            i / 256 % 256,
            i % 256
        );
    }
    s
}

/// `n` varied policy documents for the lint-scaling measurement: exec, connect and egress
/// rules with binaries, arguments, namespaces, destinations and encryption, one namespaced
/// policy in ten, and every 1,000th name repeated (so the duplicate-name check has findings
/// to place). About 360 bytes a policy (issue 12 measured 38,837 policies in 10 MB).
pub fn lint_mix(n: usize) -> String {
    let mut s = String::with_capacity(n * 300);
    for i in 0..n {
        let name = if i % 1000 == 999 {
            format!("lint-mix-{}", i - 1)
        } else {
            format!("lint-mix-{i}")
        };
        if i % 10 == 9 {
            let _ = write!(
                s,
                "---\napiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicyNamespaced\nmetadata:\n  name: {name}\n  namespace: team-{}\nspec:\n  rules:\n",
                i % 97
            );
        } else {
            header(
                &mut s,
                &name,
                if i % 2 == 0 { "enforce" } else { "monitor" },
            );
        }
        let _ = match i % 3 {
            0 => writeln!(
                s,
                "  - name: kill-tool\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: {}\n        values: [/opt/t{i}/bin/tool]\n      matchArgs:\n      - operator: Prefix\n        values: [\"--x{i}\"]\n      matchActions:\n      - action: Sigkill",
                ["In", "Prefix", "NotIn"][i % 7 % 3]
            ),
            1 => writeln!(
                s,
                "  - name: block-range\n    hook: connect\n    selectors:\n    - matchDestinations:\n      - operator: In\n        cidrs: [10.{}.{}.0/24]\n        ports: [443, \"8000-8080\"]\n      matchActions:\n      - action: Block",
                i / 256 % 256,
                i % 256
            ),
            _ => writeln!(
                s,
                "  - name: plain-egress\n    hook: egress\n    selectors:\n    - matchNamespaces:\n      - operator: In\n        values: [team-{}]\n      matchDestinations:\n      - operator: In\n        ports: [{}]\n      matchEncryption: plaintext\n      matchActions:\n      - action: Block",
                i % 97,
                1 + i % 60000
            ),
        };
    }
    s
}

/// A node's worth of `n` selectors, most namespaced to namespaces the bench never runs in:
/// two cluster-wide ones (an exec kill of a binary never run, a connect block of a port never
/// used: the bench's host processes are judged by them, in the namespace-independent group)
/// and `(n - 2) / 2` `TracingPolicyNamespaced`, each an exec and a connect rule.
pub fn node_selectors(n: usize) -> String {
    let mut s = String::new();
    header(&mut s, "bench-everywhere", "enforce");
    let _ = writeln!(
        s,
        "  - name: kill\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/opt/bench-nomatch/everywhere]\n      matchActions:\n      - action: Sigkill\n  - name: block\n    hook: connect\n    selectors:\n    - matchDestinations:\n      - operator: In\n        cidrs: [127.0.0.0/8]\n        ports: [\"1\"]\n      matchActions:\n      - action: Block"
    );
    for ns in 0..n.saturating_sub(2) / 2 {
        let _ = write!(
            s,
            "---\napiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicyNamespaced\nmetadata:\n  name: team\n  namespace: bench-team-{ns}\nspec:\n  rules:\n"
        );
        let _ = writeln!(
            s,
            "  - name: kill\n    hook: exec\n    selectors:\n    - matchBinaries:\n      - operator: In\n        values: [/opt/bench-nomatch/team-{ns}]\n      matchActions:\n      - action: Sigkill\n  - name: block\n    hook: connect\n    selectors:\n    - matchDestinations:\n      - operator: In\n        cidrs: [127.0.0.0/8]\n        ports: [\"{}\"]\n      matchActions:\n      - action: Block",
            20_000 + ns
        );
    }
    s
}
