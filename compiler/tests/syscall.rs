//! `hook: syscall` compiled: the calls each selector names (native and compat numbers), its
//! conditions, the filter a slot asks for, the refusals; and the map entries checked against
//! the reference evaluator (`RuleSet::evaluate_syscall`) by a simulation of the kernel's
//! lookups (`daemon-ebpf/src/syscall.rs`) over many calls.

use bulwark_compiler::{call_index, compile, target_arch, ErrorKind, NamespaceIds, SyscallFacts};
use bulwark_policy::syscalls::Arch;
use bulwark_policy::AnyPolicy;
use daemon_common as dc;
use serde_json::{json, Value};

fn policy(selectors: Value) -> AnyPolicy {
    AnyPolicy::Cluster(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": {"rules": [{"name": "r", "hook": "syscall", "selectors": selectors}]}
        }))
        .expect("valid TracingPolicy"),
    )
}

fn index(name: &str) -> u32 {
    call_index(target_arch(), name, false).expect("a call of the target")
}

#[test]
fn calls_are_numbered_natively_and_in_the_compat_table() {
    let rs = compile(
        &[policy(json!([{
            "matchSyscalls": [{"operator": "In", "values": ["ptrace", "connect"]}],
            "matchActions": [{"action": "Sigkill"}]
        }]))],
        &mut NamespaceIds::new(),
    )
    .unwrap();
    let s = &rs.syscall_selectors()[0];
    assert!(s.calls.contains(&index("ptrace")));
    if target_arch() == Arch::X86_64 {
        assert_eq!((index("ptrace"), index("connect")), (101, 42));
        // ptrace is 26 in i386; connect is reachable through socketcall (102) too.
        for compat in [26, 362, 102] {
            assert!(
                s.calls.contains(&(dc::SYSCALL_COMPAT_BASE + compat)),
                "{compat}"
            );
        }
        assert_eq!(s.calls.len(), 5, "{:?}", s.calls);
    }
    assert!(!s.at_exit());
    let e = rs.map_entries(1);
    let mut filter = vec![0u32; dc::SYSCALL_FILTER_LEN as usize];
    e.syscall_filter(&mut filter);
    assert_eq!(filter[index("ptrace") as usize], dc::SYSCALL_WANT_SYSCALL);
    assert_eq!(filter[index("read") as usize], 0);
    if target_arch() == Arch::X86_64 {
        // Native 26 (msync) is not named; i386 26 (ptrace) is.
        assert_eq!(filter[26], dc::SYSCALL_WANT_COMPAT);
        assert_eq!(
            filter[(dc::SYSCALL_COMPAT_BASE + 26) as usize],
            dc::SYSCALL_WANT_SYSCALL
        );
    }
    assert!(e
        .syscall_selectors
        .iter()
        .all(|(k, m)| k.table == 1 && *m == 1));
    assert_eq!(e.syscall_conds, vec![(64, s.kernel)]);
}

#[test]
fn return_conditions_move_the_decision_to_the_exit() {
    let rs = compile(
        &[policy(json!([{
            "matchSyscalls": [{"operator": "In", "values": ["ptrace"]}],
            "matchSyscallArgs": [{"index": 0, "operator": "Equal", "values": [16, "0x4206"]}],
            "matchReturn": [{"operator": "Equal", "values": ["-EPERM"]}]
        }]))],
        &mut NamespaceIds::new(),
    )
    .unwrap();
    let s = &rs.syscall_selectors()[0];
    assert!(s.at_exit());
    assert_eq!(s.kernel.count, 3);
    let e = rs.map_entries(0);
    let mut filter = vec![0u32; dc::SYSCALL_FILTER_LEN as usize];
    e.syscall_filter(&mut filter);
    assert_eq!(
        filter[index("ptrace") as usize],
        dc::SYSCALL_WANT_SYSCALL | dc::SYSCALL_WANT_EXIT
    );
    let call = |req: u64, ret: Option<i64>| SyscallFacts {
        index: index("ptrace"),
        args: [req, 1, 0, 0, 0, 0],
        ret,
    };
    assert_eq!(rs.evaluate_syscall(1, &call(16, Some(-1))), 1);
    assert_eq!(rs.evaluate_syscall(1, &call(0x4206, Some(-1))), 1);
    assert_eq!(rs.evaluate_syscall(1, &call(16, Some(0))), 0);
    assert_eq!(rs.evaluate_syscall(1, &call(0, Some(-1))), 0);
    // At entry a return condition cannot hold yet; a process without the bit never matches.
    assert_eq!(rs.evaluate_syscall(1, &call(16, None)), 0);
    assert_eq!(rs.evaluate_syscall(0, &call(16, Some(-1))), 0);
}

#[test]
fn refusals_name_what_to_change() {
    let e = |sel: Value| {
        compile(&[policy(json!([sel]))], &mut NamespaceIds::new())
            .expect_err("refused")
            .kind
    };
    assert_eq!(
        e(json!({"matchBinaries": [{"operator": "In", "values": ["/x"]}]})),
        ErrorKind::NoSyscalls
    );
    let many: Vec<i64> = (0..9).collect();
    assert!(matches!(
        e(
            json!({"matchSyscalls": [{"operator": "In", "values": ["ptrace"]}],
                 "matchSyscallArgs": [{"index": 1, "operator": "Equal", "values": many}]})
        ),
        ErrorKind::TooMany {
            limit: "MAX_SYSCALL_CONDS",
            ..
        }
    ));
    assert!(matches!(
        e(
            json!({"matchSyscalls": [{"operator": "In", "values": ["ptrace"]}],
                 "matchReturn": [{"operator": "Equal", "values": ["-ENOPE"]}]})
        ),
        ErrorKind::SyscallValue(_)
    ));
    assert_eq!(
        e(
            json!({"matchSyscalls": [{"operator": "In", "values": ["ptrace"]}],
                 "matchActions": [{"action": "Block"}]})
        ),
        ErrorKind::BlockOnExec
    );
}

/// What the kernel does with the entries (`conds_hold` in daemon-ebpf/src/syscall.rs).
fn kernel_conds_hold(c: &dc::SyscallSelectorConds, args: &[u64; 6], ret: Option<i64>) -> bool {
    let (mut present, mut hit, mut negated) = (0u32, 0u32, 0u32);
    for cond in &c.conds[..c.count as usize] {
        let g = 1u32 << (cond.group & 7);
        let v = if cond.what == dc::SYSCALL_COND_RETURN {
            match ret {
                Some(r) => r as u64,
                None => continue,
            }
        } else {
            args[cond.what as usize % 6]
        };
        present |= g;
        if cond.negated != 0 {
            negated |= g;
        }
        let t = match cond.op {
            dc::SYSCALL_OP_EQUAL => v == cond.value,
            dc::SYSCALL_OP_MASK => v & cond.value != 0,
            dc::SYSCALL_OP_GREATER => (v as i64) > (cond.value as i64),
            dc::SYSCALL_OP_LESS => (v as i64) < (cond.value as i64),
            _ => false,
        };
        if t {
            hit |= g;
        }
    }
    (hit ^ negated) & present == present
}

/// The kernel's decision at exit for selectors `process` of table 0: the `SYSCALL_SELECTORS`
/// lookup, then each candidate's conditions.
fn kernel_exit(e: &dc::MapEntries, process: u64, f: &SyscallFacts) -> u64 {
    let named = e
        .syscall_selectors
        .iter()
        .find(|(k, _)| k.index == f.index)
        .map_or(0, |(_, m)| *m);
    let mut out = 0;
    for (i, c) in &e.syscall_conds {
        let bit = 1u64 << (i % 64);
        if named & process & bit != 0 && kernel_conds_hold(c, &f.args, f.ret) {
            out |= bit;
        }
    }
    out
}

#[test]
fn map_entries_agree_with_the_reference_over_many_calls() {
    let rs = compile(
        &[policy(json!([
            {"matchSyscalls": [{"operator": "In", "values": ["ptrace", "kill"]}],
             "matchSyscallArgs": [{"index": 1, "operator": "NotEqual", "values": [1, 2]},
                                  {"index": 0, "operator": "Mask", "values": ["0x10"]}]},
            {"matchSyscalls": [{"operator": "NotIn", "values": ["read", "write"]}],
             "matchReturn": [{"operator": "LessThan", "values": [0]}]},
            {"matchSyscalls": [{"operator": "In", "values": ["kill"]}],
             "matchSyscallArgs": [{"index": 1, "operator": "GreaterThan", "values": [-5, 100]}],
             "matchReturn": [{"operator": "Equal", "values": ["-EPERM", 0]}]}
        ]))],
        &mut NamespaceIds::new(),
    )
    .unwrap();
    let e = rs.map_entries(0);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let calls = [
        index("ptrace"),
        index("kill"),
        index("read"),
        index("getppid"),
    ];
    let values = [
        0u64,
        1,
        2,
        0x10,
        0x11,
        u64::MAX,
        200,
        (-5i64) as u64,
        (-4i64) as u64,
    ];
    let mut matched = 0;
    for _ in 0..20_000 {
        let mut args = [0u64; 6];
        for a in &mut args {
            *a = values[(next() % values.len() as u64) as usize];
        }
        let ret = [0i64, -1, -13, 5][(next() % 4) as usize];
        let f = SyscallFacts {
            index: calls[(next() % 4) as usize],
            args,
            ret: Some(ret),
        };
        let process = next() & 0b111;
        let want = rs.evaluate_syscall(process, &f);
        assert_eq!(
            kernel_exit(&e, process, &f),
            want,
            "{f:?} process {process:#b}"
        );
        matched += (want != 0) as u32;
    }
    assert!(matched > 1000, "the sample exercises matches ({matched})");
}
