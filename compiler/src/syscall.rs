//! `hook: syscall` selectors compiled: the calls each selector names as filter indices of the
//! target architecture (native numbers, and on x86_64 the i386 compat numbers at
//! `SYSCALL_COMPAT_BASE + nr`, see daemon-common's `syscall` module), and its argument and return
//! conditions, both as the reference form the evaluator reads ([`SyscallCondition`]) and as the
//! kernel's [`dc::SyscallSelectorConds`]. [`RuleSet::evaluate_syscall`] is the reference
//! semantics of one call; the kernel simulation in the tests checks the map entries against it.

use crate::error::{ErrorKind, Location};
use crate::ruleset::RuleSet;
use bulwark_policy::syscalls::{self, Arch};
use bulwark_policy::values::parse_int;
use bulwark_policy::{IntOperator, IntValue, Selector};
use daemon_common as dc;
use std::collections::BTreeSet;

/// i386 multiplexers: a call of the socket or SysV IPC families reaches the kernel through
/// these as well, under their own number, with the real arguments behind a pointer.
const SOCKETCALL_FAMILY: &[&str] = &[
    "socket",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "socketpair",
    "send",
    "sendto",
    "recv",
    "recvfrom",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "sendmsg",
    "recvmsg",
    "recvmmsg",
    "sendmmsg",
];
const IPC_FAMILY: &[&str] = &[
    "semop",
    "semget",
    "semctl",
    "semtimedop",
    "msgsnd",
    "msgrcv",
    "msgget",
    "msgctl",
    "shmat",
    "shmdt",
    "shmget",
    "shmctl",
];

/// What a condition compares: argument 0..=5 or the return value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyscallOperand {
    Arg(u8),
    Return,
}

/// One `matchSyscallArgs` / `matchReturn` entry, parsed: it holds when the operand compares
/// true with one of `values` (`NotEqual`: with none equal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallCondition {
    pub operand: SyscallOperand,
    pub op: IntOperator,
    pub values: Vec<i64>,
}

impl SyscallCondition {
    /// Does the condition hold for these arguments and return value? A return condition holds
    /// only when the return value is known (`ret`: the call has returned).
    pub fn holds(&self, args: &[u64; 6], ret: Option<i64>) -> bool {
        let v = match self.operand {
            SyscallOperand::Arg(i) => args[usize::from(i)] as i64,
            SyscallOperand::Return => match ret {
                Some(r) => r,
                None => return false,
            },
        };
        let any = |f: &dyn Fn(i64) -> bool| self.values.iter().any(|x| f(*x));
        match self.op {
            IntOperator::Equal => any(&|x| v == x),
            IntOperator::NotEqual => !any(&|x| v == x),
            IntOperator::Mask => any(&|x| v & x != 0),
            IntOperator::GreaterThan => any(&|x| v > x),
            IntOperator::LessThan => any(&|x| v < x),
        }
    }
}

/// A compiled `hook: syscall` selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallSelector {
    /// Selector index in the rule set.
    pub index: u8,
    /// Filter indices of the calls it names on the target architecture.
    pub calls: BTreeSet<u32>,
    pub conditions: Vec<SyscallCondition>,
    /// As the kernel reads them.
    pub kernel: dc::SyscallSelectorConds,
}

impl SyscallSelector {
    /// Decided at the call's exit: it has return conditions.
    pub fn at_exit(&self) -> bool {
        self.kernel.at_exit != 0
    }
}

/// The filter index of call `name` on `arch` (`compat`: in its compat table).
pub fn call_index(arch: Arch, name: &str, compat: bool) -> Option<u32> {
    if compat {
        let t = arch.compat()?;
        syscalls::table(t)
            .number(name)
            .map(|n| dc::SYSCALL_COMPAT_BASE + n)
    } else {
        syscalls::table(arch).number(name)
    }
}

/// The name of filter index `index` on `arch`, and whether it is a compat call.
pub fn call_name(arch: Arch, index: u32) -> Option<(&'static str, bool)> {
    if index >= dc::SYSCALL_COMPAT_BASE {
        let t = arch.compat()?;
        syscalls::table(t)
            .name(index - dc::SYSCALL_COMPAT_BASE)
            .map(|n| (n, true))
    } else {
        syscalls::table(arch).name(index).map(|n| (n, false))
    }
}

/// The architecture rule sets are compiled for: this build's, x86_64 when it has no table.
pub fn target_arch() -> Arch {
    Arch::host().unwrap_or(Arch::X86_64)
}

/// Compiles the syscall fields of selector `index` for `arch`.
pub(crate) fn compile_selector(
    loc: &Location,
    index: u8,
    sel: &Selector,
    arch: Arch,
) -> Result<SyscallSelector, crate::error::CompileError> {
    if sel.match_syscalls.is_empty() {
        return Err(loc.error(ErrorKind::NoSyscalls));
    }
    let mut calls: BTreeSet<u32> = syscalls::select(&sel.match_syscalls, arch);
    if let Some(compat) = arch.compat() {
        let compat_calls = syscalls::select(&sel.match_syscalls, compat);
        let t = syscalls::table(compat);
        let mut extra = BTreeSet::new();
        // A call reachable through a multiplexer makes the multiplexer named too; with
        // argument conditions it would be judged on the multiplexer's own arguments, so then
        // the multiplexer is left out (a documented gap).
        if sel.match_syscall_args.is_empty() {
            for (family, mux) in [(SOCKETCALL_FAMILY, "socketcall"), (IPC_FAMILY, "ipc")] {
                let named = family
                    .iter()
                    .any(|n| t.number(n).is_some_and(|nr| compat_calls.contains(&nr)));
                if named {
                    extra.extend(t.number(mux));
                }
            }
        }
        calls.extend(
            compat_calls
                .into_iter()
                .chain(extra)
                .map(|n| dc::SYSCALL_COMPAT_BASE + n),
        );
    }
    let mut conditions = Vec::new();
    let int = |v: &IntValue, errno: bool| {
        parse_int(v, errno).map_err(|e| loc.error(ErrorKind::SyscallValue(e.to_string())))
    };
    for a in &sel.match_syscall_args {
        let i = u8::try_from(a.index)
            .ok()
            .filter(|i| *i <= 5)
            .ok_or_else(|| loc.error(ErrorKind::SyscallArgIndex { index: a.index }))?;
        let values = a
            .values
            .iter()
            .map(|v| int(v, false))
            .collect::<Result<_, _>>()?;
        conditions.push(SyscallCondition {
            operand: SyscallOperand::Arg(i),
            op: a.operator,
            values,
        });
    }
    for r in &sel.match_return {
        let values = r
            .values
            .iter()
            .map(|v| int(v, true))
            .collect::<Result<_, _>>()?;
        conditions.push(SyscallCondition {
            operand: SyscallOperand::Return,
            op: r.operator,
            values,
        });
    }
    let kernel = kernel_conds(loc, &conditions)?;
    Ok(SyscallSelector {
        index,
        calls,
        conditions,
        kernel,
    })
}

/// The kernel's form: one [`dc::SyscallCond`] per value, grouped by entry.
fn kernel_conds(
    loc: &Location,
    conditions: &[SyscallCondition],
) -> Result<dc::SyscallSelectorConds, crate::error::CompileError> {
    let count: usize = conditions.iter().map(|c| c.values.len()).sum();
    if count > dc::MAX_SYSCALL_CONDS {
        return Err(loc.error(ErrorKind::TooMany {
            what: "values in matchSyscallArgs and matchReturn of one selector",
            limit: "MAX_SYSCALL_CONDS",
            max: dc::MAX_SYSCALL_CONDS as u64,
        }));
    }
    let mut out = dc::SyscallSelectorConds::default();
    let mut n = 0;
    for (group, c) in conditions.iter().enumerate() {
        let (op, negated) = match c.op {
            IntOperator::Equal => (dc::SYSCALL_OP_EQUAL, 0),
            IntOperator::NotEqual => (dc::SYSCALL_OP_EQUAL, 1),
            IntOperator::Mask => (dc::SYSCALL_OP_MASK, 0),
            IntOperator::GreaterThan => (dc::SYSCALL_OP_GREATER, 0),
            IntOperator::LessThan => (dc::SYSCALL_OP_LESS, 0),
        };
        let what = match c.operand {
            SyscallOperand::Arg(i) => i,
            SyscallOperand::Return => {
                out.at_exit = 1;
                dc::SYSCALL_COND_RETURN
            }
        };
        for v in &c.values {
            out.conds[n] = dc::SyscallCond {
                value: *v as u64,
                what,
                op,
                group: group as u8,
                negated,
                _pad: [0; 4],
            };
            n += 1;
        }
    }
    out.count = n as u8;
    Ok(out)
}

/// One call as the syscall programs see it: the input of [`RuleSet::evaluate_syscall`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallFacts {
    /// Filter index ([`call_index`]).
    pub index: u32,
    pub args: [u64; 6],
    /// The return value, once the call has returned.
    pub ret: Option<i64>,
}

impl RuleSet {
    /// The compiled `hook: syscall` selectors, by selector index.
    pub fn syscall_selectors(&self) -> &[SyscallSelector] {
        &self.syscalls
    }

    /// The subset of `process` (a process's cached selector bits) whose `hook: syscall`
    /// selectors match this call: they name it and all their conditions hold. At entry
    /// (`ret: None`) selectors with return conditions never match; at exit all are judged.
    pub fn evaluate_syscall(&self, process: u64, facts: &SyscallFacts) -> u64 {
        self.syscalls
            .iter()
            .filter(|s| process & (1 << s.index) != 0 && s.calls.contains(&facts.index))
            .filter(|s| s.conditions.iter().all(|c| c.holds(&facts.args, facts.ret)))
            .fold(0, |bits, s| bits | (1 << s.index))
    }
}
