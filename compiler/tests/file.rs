//! `hook: file` compiled: path conditions (one bit per distinct `matchPaths` entry), accesses,
//! identities of the `In` paths, the calls the hook watches as filter bits, the refusals; and
//! the map entries checked against the reference evaluator (`RuleSet::evaluate_file`) by a
//! simulation of the kernel's lookups (`daemon-ebpf/src/file.rs`) over many accesses.

use bulwark_compiler::{
    call_index, compile, compile_node, target_arch, BinaryIdentities, ErrorKind, FileFacts, FileId,
    Limit, NamespaceIds, RuleSet, TooManyIdentities,
};
use bulwark_policy::AnyPolicy;
use daemon_common as dc;
use serde_json::{json, Value};

fn policy(selectors: Value) -> AnyPolicy {
    AnyPolicy::Cluster(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": "p"},
            "spec": {"rules": [{"name": "r", "hook": "file", "selectors": selectors}]}
        }))
        .expect("valid TracingPolicy"),
    )
}

fn rules(selectors: Value) -> RuleSet {
    compile(&[policy(selectors)], &mut NamespaceIds::new()).unwrap()
}

fn facts(path: &str, access: u32) -> FileFacts {
    FileFacts {
        path: Some(path.into()),
        file: None,
        access,
    }
}

const READ: u32 = dc::FILE_ACCESS_READ;
const WRITE: u32 = dc::FILE_ACCESS_WRITE;
const DELETE: u32 = dc::FILE_ACCESS_DELETE;

#[test]
fn opens_unlinks_renames_and_metadata_calls_are_watched_with_their_arguments() {
    let rs = rules(json!([{"matchPaths": [{"operator": "In", "values": ["/etc/shadow"]}]}]));
    let e = rs.map_entries(0);
    let mut filter = vec![0u32; dc::SYSCALL_FILTER_LEN as usize];
    e.syscall_filter(&mut filter);
    let arch = target_arch();
    let at = |name: &str| filter[call_index(arch, name, false).unwrap() as usize];
    let openat = dc::FileCall::of(at("openat"));
    assert_eq!(
        (openat.op, openat.dirfd, openat.path, openat.flags),
        (dc::FILE_OP_OPEN, 0, 1, 2)
    );
    assert_ne!(
        at("openat") & dc::SYSCALL_WANT_EXIT,
        0,
        "opens are decided at exit"
    );
    assert_eq!(dc::FileCall::of(at("openat2")).op, dc::FILE_OP_OPEN_HOW);
    assert_eq!(dc::FileCall::of(at("unlinkat")).op, dc::FILE_OP_DELETE);
    assert_eq!(
        at("unlinkat") & dc::SYSCALL_WANT_EXIT,
        0,
        "deletes at entry"
    );
    let rename = dc::FileCall::of(at("renameat2"));
    assert_eq!(
        (rename.op, rename.dirfd, rename.path, rename.flags),
        (dc::FILE_OP_RENAME, 0, 1, 3)
    );
    assert_eq!(dc::FileCall::of(at("fchmodat")).op, dc::FILE_OP_METADATA);
    assert_eq!(dc::FileCall::of(at("fchown")).op, dc::FILE_OP_METADATA_FD);
    assert_eq!(
        dc::FileCall::of(at("open_by_handle_at")).op,
        dc::FILE_OP_OPEN
    );
    assert_eq!(at("read"), 0, "nothing else");
    assert_eq!(at("execve"), 0, "exec is the exec hook's");
    if arch == bulwark_policy::syscalls::Arch::X86_64 {
        assert_eq!(dc::FileCall::of(at("open")).op, dc::FILE_OP_OPEN);
        // 32-bit calls (int 0x80) are watched under their own numbers: i386 open is 5.
        let compat = filter[(dc::SYSCALL_COMPAT_BASE + 5) as usize];
        assert_eq!(dc::FileCall::of(compat).op, dc::FILE_OP_OPEN);
        assert_ne!(filter[5] & dc::SYSCALL_WANT_COMPAT, 0);
    }
    // No file selector: no calls.
    let none = compile(&[], &mut NamespaceIds::new())
        .unwrap()
        .map_entries(0);
    let mut f = vec![0u32; dc::SYSCALL_FILTER_LEN as usize];
    none.syscall_filter(&mut f);
    assert!(f.iter().all(|w| *w == 0));
}

#[test]
fn paths_accesses_and_negations_decide() {
    let rs = rules(json!([
        {"matchPaths": [{"operator": "In", "values": ["/etc/shadow"]}],
         "matchAccess": [{"operator": "In", "values": ["read"]}],
         "matchActions": [{"action": "Sigkill"}]},
        {"matchPaths": [{"operator": "Prefix", "values": ["/usr/bin/", "/etc/"]},
                        {"operator": "NotPostfix", "values": [".log"]}],
         "matchAccess": [{"operator": "NotIn", "values": ["read"]}]},
    ]));
    let all = 0b11;
    assert_eq!(rs.evaluate_file(all, &facts("/etc/shadow", READ)), 0b01);
    assert_eq!(rs.evaluate_file(all, &facts("/etc/shadow", WRITE)), 0b10);
    assert_eq!(
        rs.evaluate_file(all, &facts("/etc/shadow", READ | WRITE)),
        0b11
    );
    assert_eq!(rs.evaluate_file(all, &facts("/etc/x.log", WRITE)), 0);
    assert_eq!(rs.evaluate_file(all, &facts("/etc-old/passwd", WRITE)), 0);
    assert_eq!(rs.evaluate_file(all, &facts("/usr/bin/ls", DELETE)), 0b10);
    // The process's cached bits gate it.
    assert_eq!(rs.evaluate_file(0b10, &facts("/etc/shadow", READ)), 0);
    assert_eq!(rs.file_selectors()[0].access, READ);
    assert_eq!(rs.path_conditions().len(), 3);
}

#[test]
fn in_paths_match_the_file_they_named_when_resolved_so_a_hard_link_is_caught() {
    let mut rs = rules(json!([{"matchPaths": [{"operator": "In", "values": ["/etc/shadow"]}]}]));
    assert!(rs.binary_paths().contains("/etc/shadow"));
    let shadow = FileId {
        dev: 8 << 20 | 1,
        ino: 42,
    };
    let link = FileFacts {
        path: Some("/tmp/innocent".into()),
        file: Some(shadow),
        access: READ,
    };
    assert_eq!(rs.evaluate_file(1, &link), 0, "not resolved yet");
    let mut ids = BinaryIdentities::new();
    ids.insert("/etc/shadow", shadow);
    rs.resolve_binaries(&ids).unwrap();
    assert_eq!(rs.evaluate_file(1, &link), 1);
    let e = rs.map_entries(1).file;
    assert_eq!(e.inode.len(), 1);
    assert_eq!(e.inode[0].0.slot, 1);
    assert_ne!(e.table.lookups & dc::FILE_LOOKUP_INODE, 0);
    // Re-resolving replaces the identities (a reload sees the file as it is now).
    rs.resolve_binaries(&BinaryIdentities::new()).unwrap();
    assert_eq!(rs.evaluate_file(1, &link), 0);
}

#[test]
fn what_the_kernel_cannot_hold_is_refused() {
    let many: Vec<Value> = (0..=dc::MAX_FILE_PATH_CONDS)
        .map(|i| json!({"operator": "In", "values": [format!("/f{i}")]}))
        .collect();
    let err = compile(
        &[policy(json!([{"matchPaths": many}]))],
        &mut NamespaceIds::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Capacity {
            limit: Limit::FilePathConds,
            used: dc::MAX_FILE_PATH_CONDS + 1
        },
        "{err}"
    );
    assert_eq!(
        err.kind.limit(),
        Some(("MAX_FILE_PATH_CONDS", dc::MAX_FILE_PATH_CONDS as u64))
    );
    let err = compile(
        &[policy(
            json!([{"matchBinaries": [{"operator": "In", "values": ["/bin/cat"]}]}]),
        )],
        &mut NamespaceIds::new(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoPaths);
}

/// The kernel's lookups over a table's entries (`daemon-ebpf/src/file.rs`: exact hash, the
/// longest prefix and postfix of the LPM tries, the identity hash; negation; the selectors).
fn kernel(e: &dc::FileEntries, table: u32, process: u64, f: &FileFacts) -> u64 {
    let mut hits = 0u64;
    let lpm = |entries: &[(u32, dc::PathLpmData, u64)], key: &[u8]| -> u64 {
        let l = key.len().min(dc::PATH_AFFIX_LEN);
        entries
            .iter()
            .filter(|(bits, d, _)| {
                let n = (*bits / 8 - 1) as usize;
                u32::from(d.slot) == table && n <= l && d.bytes[..n] == key[..n]
            })
            .max_by_key(|(bits, _, _)| *bits)
            .map_or(0, |(_, _, m)| *m)
    };
    if let Some(p) = &f.path {
        let mut key = [0u8; dc::PATH_LEN];
        key[..p.len()].copy_from_slice(p.as_bytes());
        hits |= e
            .exact
            .iter()
            .find(|(k, _)| k.slot == table && k.path == key)
            .map_or(0, |(_, m)| *m);
        hits |= lpm(&e.prefix, p.as_bytes());
        let rev: Vec<u8> = p.bytes().rev().collect();
        hits |= lpm(&e.postfix, &rev);
    }
    if let Some(id) = f.file {
        hits |= e
            .inode
            .iter()
            .find(|(k, _)| k.slot == table && k.dev == id.dev && k.ino == id.ino)
            .map_or(0, |(_, m)| *m);
    }
    let holds = hits ^ e.table.path_negate;
    let mut out = 0;
    for (i, s) in &e.selectors {
        let bit = 1u64 << (i % 64);
        if e.table.selectors & process & bit != 0
            && s.access & f.access != 0
            && s.path_required & !holds == 0
        {
            out |= bit;
        }
    }
    out
}

#[test]
fn the_kernel_lookups_agree_with_the_reference_evaluator() {
    let mut rs = rules(json!([
        {"matchPaths": [{"operator": "In", "values": ["/etc/shadow", "/etc/gshadow"]}],
         "matchAccess": [{"operator": "In", "values": ["read"]}]},
        {"matchPaths": [{"operator": "Prefix", "values": ["/etc/", "/etc/ssl/", "/usr/bin/"]}],
         "matchAccess": [{"operator": "NotIn", "values": ["read"]}]},
        {"matchPaths": [{"operator": "Postfix", "values": [".pem", "key.pem", "/id_rsa"]},
                        {"operator": "NotPrefix", "values": ["/etc/ssl/certs/"]}]},
        {"matchPaths": [{"operator": "NotIn", "values": ["/tmp/ok"]},
                        {"operator": "Prefix", "values": ["/tmp/"]}],
         "matchAccess": [{"operator": "In", "values": ["delete", "metadata"]}]},
        {"matchPaths": [{"operator": "Prefix", "values": ["/var/run/secrets/kubernetes.io/serviceaccount/"]}]},
    ]));
    let shadow = FileId {
        dev: 1 << 20,
        ino: 7,
    };
    let mut ids = BinaryIdentities::new();
    ids.insert("/etc/shadow", shadow);
    rs.resolve_binaries(&ids).unwrap();
    let paths = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/shadow-",
        "/etc/passwd",
        "/etc",
        "/etcd/x",
        "/etc/ssl/private/key.pem",
        "/etc/ssl/certs/ca.pem",
        "/home/u/.ssh/id_rsa",
        "/home/u/id_rsa.pub",
        "/usr/bin/ls",
        "/usr/bin",
        "/tmp/ok",
        "/tmp/x",
        "/tmp",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "/",
        "/x.pem",
    ];
    let files = [
        None,
        Some(shadow),
        Some(FileId {
            dev: 1 << 20,
            ino: 8,
        }),
    ];
    let mut checked = 0;
    for table in [0u8, 1, 5] {
        let e = rs.table_entries(table).file;
        for p in paths {
            for file in files {
                for access in 1..=dc::FILE_ACCESS_ALL {
                    for process in [u64::MAX, 0b10101, 0] {
                        let f = FileFacts {
                            path: Some(p.to_string()),
                            file,
                            access,
                        };
                        assert_eq!(
                            kernel(&e, u32::from(table), process, &f),
                            rs.evaluate_file(process, &f),
                            "{p} {file:?} access {access:#b} process {process:#b}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10_000);
}

/// `FILE_INODE` holds `MAX_FILE_VALUES` x `NODE_MAP_FACTOR` identities per slot: `In` paths
/// naming exactly that many files (a path names one file per mount namespace it differs in)
/// resolve; one more is refused when the rules are resolved, saying which map, not when they
/// are written.
#[test]
fn file_identities_of_all_groups_fit_the_identity_map_or_are_refused() {
    let values = dc::MAX_FILE_VALUES as usize;
    let per_path = dc::NODE_MAP_FACTOR as usize;
    let paths: Vec<String> = (0..values).map(|i| format!("/f{i}")).collect();
    let policies = [policy(
        json!([{"matchPaths": [{"operator": "In", "values": paths}]}]),
    )];
    let mut node = compile_node(&policies, &mut NamespaceIds::new()).unwrap();
    let identities = |extra: usize| {
        let mut ids = BinaryIdentities::new();
        for (i, p) in paths.iter().enumerate() {
            for n in 0..per_path + usize::from(i < extra) {
                ids.insert(
                    p,
                    FileId {
                        dev: n as u32 + 1,
                        ino: i as u64 + 1,
                    },
                );
            }
        }
        ids
    };
    node.resolve_binaries(&identities(0)).expect("at the limit");
    let inode: usize = node
        .slot_entries(0)
        .tables
        .iter()
        .map(|(_, e)| e.file.inode.len())
        .sum();
    assert_eq!(inode, values * per_path);
    let e = node
        .resolve_binaries(&identities(1))
        .expect_err("one past the limit");
    assert_eq!(
        e,
        TooManyIdentities {
            needed: values * per_path + 1,
            file_paths: true
        }
    );
    assert!(
        e.to_string()
            .contains("MAX_FILE_VALUES x NODE_MAP_FACTOR = 8192"),
        "{e}"
    );
}
