//! Checks of the `hook: syscall` fields of a selector: `matchSyscalls` names against the x86_64
//! and arm64 tables ([`crate::syscalls`], with "did you mean"), `matchSyscallArgs` indices and
//! integers, `matchReturn` integers and errno names, those fields on other hooks, and the clash
//! between bulwark's `matchArgs` (argv, on every hook) and Tetragon's `matchArgs` (a kernel
//! function's arguments). Also what these fields add to "can never match" and "broader".

use super::d;
use crate::diagnostics::{codes, Diagnostic, Severity};
use crate::model::*;
use crate::syscalls::{self, Arch, Lookup};
use crate::values::{parse_int, IntError};

/// Checks the syscall fields of selector `sel` (path `sp`) of a rule on `hook`.
pub(super) fn check(rule: &Rule, sel: &Selector, sp: &str, out: &mut Vec<Diagnostic>) {
    let hook = rule.hook;
    if hook != Hook::Syscall {
        for (field, used) in [
            ("matchSyscalls", !sel.match_syscalls.is_empty()),
            ("matchSyscallArgs", !sel.match_syscall_args.is_empty()),
            ("matchReturn", !sel.match_return.is_empty()),
        ] {
            if used {
                out.push(d(
                    codes::SYSCALL_FIELD_OFF_HOOK,
                    format!("{sp}.{field}"),
                    format!("`{field}` on rule `{}` with `hook: {}`: only `hook: syscall` sees system calls", rule.name, hook.as_str()),
                    format!("use `hook: syscall` with `matchSyscalls` to act on system calls, or remove `{field}`"),
                ));
            }
        }
        return;
    }
    if sel.match_syscalls.is_empty() {
        out.push(d(
            codes::NO_SYSCALLS,
            format!("{sp}.matchSyscalls"),
            format!("selector on rule `{}` with `hook: syscall` names no system call, so it would watch every call of every process", rule.name),
            "add `matchSyscalls: [{operator: In, values: [ptrace]}]` naming the calls to watch",
        ));
    }
    for (k, m) in sel.match_syscalls.iter().enumerate() {
        let mp = format!("{sp}.matchSyscalls[{k}]");
        if m.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{mp}.values"),
                "`values` is empty",
                "list at least one system call name, e.g. `values: [ptrace]`",
            ));
        }
        for (vi, v) in m.values.iter().enumerate() {
            let vp = format!("{mp}.values[{vi}]");
            match syscalls::lookup(v) {
                Lookup::Both => {}
                Lookup::Only(arch) => {
                    let other = if arch == Arch::X86_64 { Arch::Arm64 } else { Arch::X86_64 };
                    out.push(
                        d(
                            codes::SYSCALL_ONE_ARCH,
                            vp,
                            format!("`{v}` is a system call on {} only; on {} nodes this name selects nothing", arch.as_str(), other.as_str()),
                            one_arch_hint(v),
                        )
                        .severity(Severity::Warning),
                    );
                }
                Lookup::Unknown { did_you_mean } => out.push(d(
                    codes::UNKNOWN_SYSCALL,
                    vp,
                    format!("`{v}` is not a system call on x86_64 or arm64"),
                    match did_you_mean {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => "write the call's name as in the kernel's syscall table (`ptrace`, `mount`, `openat`), without `sys_`".into(),
                    },
                )),
            }
        }
    }
    for (k, a) in sel.match_syscall_args.iter().enumerate() {
        let ap = format!("{sp}.matchSyscallArgs[{k}]");
        if a.index > 5 {
            out.push(d(
                codes::ARG_INDEX,
                format!("{ap}.index"),
                format!(
                    "system call argument index {} does not exist: a call has arguments 0 to 5",
                    a.index
                ),
                "use an index from 0 to 5 (the position of the argument in the call's C signature)",
            ));
        }
        check_ints(&a.values, false, a.operator, &ap, out);
    }
    for (k, r) in sel.match_return.iter().enumerate() {
        check_ints(
            &r.values,
            true,
            r.operator,
            &format!("{sp}.matchReturn[{k}]"),
            out,
        );
    }
    // bulwark's matchArgs is argv on every hook; a Tetragon habit writes call arguments there.
    for (k, a) in sel.match_args.iter().enumerate() {
        let numeric = !a.values.is_empty()
            && a.values
                .iter()
                .all(|v| parse_int(&IntValue::Text(v.clone()), false).is_ok());
        if numeric && a.index.is_some_and(|i| i <= 5) {
            out.push(
                d(
                    codes::ARGV_NOT_SYSCALL_ARGS,
                    format!("{sp}.matchArgs[{k}]"),
                    "`matchArgs` compares the process's argv (its command-line words) on every hook, not the system call's arguments as in Tetragon; these integer values match only a command line with those words",
                    "to match the call's arguments write `matchSyscallArgs: [{index: N, operator: Equal, values: [...]}]`; keep `matchArgs` only if you mean the command line (this is a warning)",
                )
                .severity(Severity::Warning),
            );
        }
    }
}

/// The hint for a name that exists on one architecture: its counterpart on the other, when the
/// kernel has a well-known one.
fn one_arch_hint(name: &str) -> String {
    const PAIRS: &[(&str, &str)] = &[
        ("open", "openat"),
        ("creat", "openat"),
        ("unlink", "unlinkat"),
        ("rmdir", "unlinkat"),
        ("rename", "renameat2"),
        ("mkdir", "mkdirat"),
        ("chmod", "fchmodat"),
        ("chown", "fchownat"),
        ("link", "linkat"),
        ("symlink", "symlinkat"),
        ("fork", "clone"),
        ("vfork", "clone"),
        ("dup2", "dup3"),
        ("pipe", "pipe2"),
        ("access", "faccessat"),
        ("stat", "newfstatat"),
        ("lstat", "newfstatat"),
    ];
    match PAIRS.iter().find(|(n, _)| *n == name) {
        Some((_, other)) => format!("add `{other}`, which programs use for the same on both architectures, so the selector holds on every node (this is a warning)"),
        None => "if the policy runs on both architectures, name the other one's equivalent too (this is a warning)".into(),
    }
}

fn check_ints(
    values: &[IntValue],
    errno: bool,
    op: IntOperator,
    path: &str,
    out: &mut Vec<Diagnostic>,
) {
    if values.is_empty() {
        out.push(d(
            codes::EMPTY_VALUES,
            format!("{path}.values"),
            "`values` is empty",
            if errno {
                "list at least one value, e.g. `values: [\"-EPERM\"]`"
            } else {
                "list at least one integer"
            },
        ));
    }
    for (vi, v) in values.iter().enumerate() {
        if let Err(e) = parse_int(v, errno) {
            let hint = match &e {
                IntError::NotAnInteger { .. } => "write a decimal integer (`-1`, `4096`) or hex with `0x` (`0x10`)".to_string(),
                IntError::ErrnoNotAllowed { .. } => "write the number (a call's arguments are integers; errno names are for `matchReturn`)".to_string(),
                IntError::UnknownErrno { text, did_you_mean } => match did_you_mean {
                    Some(c) if !text.starts_with('-') => format!("a failing call returns the errno negated: write `-{c}`"),
                    Some(c) => format!("did you mean `-{c}`?"),
                    None => "write a negated errno name such as `-EPERM` or `-ENOENT`".to_string(),
                },
            };
            out.push(d(
                codes::INVALID_INTEGER,
                format!("{path}.values[{vi}]"),
                e.to_string(),
                hint,
            ));
        }
    }
    if op == IntOperator::Mask && values.iter().any(|v| parse_int(v, errno) == Ok(0)) {
        out.push(d(
            codes::NEVER_MATCHES,
            path,
            "`Mask` with 0 never holds: no value has a bit in common with 0",
            "give the bits to test, e.g. `0x1`",
        ));
    }
}

/// Why the syscall fields make a `hook: syscall` selector unmatchable: its `matchSyscalls`
/// entries select no call on either architecture.
pub(super) fn never_matches(hook: Hook, sel: &Selector) -> Option<(String, String)> {
    if hook != Hook::Syscall || sel.match_syscalls.is_empty() {
        return None;
    }
    let any = Arch::POLICY
        .iter()
        .any(|a| !syscalls::select(&sel.match_syscalls, *a).is_empty());
    (!any).then(|| {
        (
            ".matchSyscalls".into(),
            "its `matchSyscalls` entries (ANDed) leave no system call on x86_64 or arm64".into(),
        )
    })
}

/// `a` matches whenever `b` does, as far as the syscall fields go: `a` selects every call `b`
/// selects (on both architectures) and each of `a`'s argument and return conditions is also
/// one of `b`'s.
pub(super) fn broader(a: &Selector, b: &Selector) -> bool {
    let calls = Arch::POLICY.iter().all(|arch| {
        syscalls::select(&a.match_syscalls, *arch)
            .is_superset(&syscalls::select(&b.match_syscalls, *arch))
    }) || a.match_syscalls.is_empty();
    let args = a
        .match_syscall_args
        .iter()
        .all(|x| b.match_syscall_args.contains(x));
    let ret = a.match_return.iter().all(|x| b.match_return.contains(x));
    calls && args && ret
}
