//! System call names and numbers per architecture, and errno names: the one home of the tables
//! `hook: syscall` policies are linted against and compiled with. The data are the kernel's own
//! tables, checked in under `policy/data/syscalls/` and regenerated from a Linux source tree by
//! `scripts/update-syscall-tables.sh` (never edited by hand). x86_64 and arm64 are the
//! architectures a policy names calls for; i386 is the compat table an x86_64 kernel runs for
//! `int 0x80` and 32-bit processes, which the compiler maps the same names into so that a
//! 32-bit entry cannot slip past number-based matching.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// An architecture whose system call table a policy's names are resolved in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
    /// x86's 32-bit table, which an x86_64 kernel also serves (compat syscalls).
    I386,
}

impl Arch {
    /// The architectures a policy's names must exist on (at least one of them).
    pub const POLICY: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// As the kernel and `uname -m` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::I386 => "i386",
        }
    }

    /// The architecture this binary was built for, when it has a table.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The compat table the kernel of this architecture also serves, if bulwark maps it.
    pub fn compat(self) -> Option<Arch> {
        match self {
            Arch::X86_64 => Some(Arch::I386),
            // arm64's AArch32 compat table is not mapped (docs/syscalls.md: a known gap).
            Arch::Arm64 | Arch::I386 => None,
        }
    }

    fn source(self) -> &'static str {
        match self {
            Arch::X86_64 => include_str!("../data/syscalls/x86_64.tsv"),
            Arch::Arm64 => include_str!("../data/syscalls/arm64.tsv"),
            Arch::I386 => include_str!("../data/syscalls/i386.tsv"),
        }
    }
}

/// One architecture's table, both ways.
#[derive(Debug, Default)]
pub struct Table {
    by_name: BTreeMap<&'static str, u32>,
    by_number: BTreeMap<u32, &'static str>,
}

impl Table {
    /// The number of `name`, when the architecture has that call.
    pub fn number(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
    /// The name of call `nr`.
    pub fn name(&self, nr: u32) -> Option<&'static str> {
        self.by_number.get(&nr).copied()
    }
    /// Every name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }
    /// Every number, ascending.
    pub fn numbers(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_number.keys().copied()
    }
}

/// `name<TAB>number` lines; `#` comments and blank lines skipped.
fn parse_tsv(text: &'static str) -> impl Iterator<Item = (&'static str, u32)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, nr) = l.split_once('\t')?;
            Some((name.trim(), nr.trim().parse().ok()?))
        })
}

/// The table of `arch`.
pub fn table(arch: Arch) -> &'static Table {
    static TABLES: OnceLock<[Table; 3]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        [Arch::X86_64, Arch::Arm64, Arch::I386].map(|a| {
            let mut t = Table::default();
            for (name, nr) in parse_tsv(a.source()) {
                t.by_name.insert(name, nr);
                t.by_number.entry(nr).or_insert(name);
            }
            t
        })
    });
    &tables[arch as usize]
}

/// Where a name a policy writes is a system call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// On both x86_64 and arm64.
    Both,
    /// On this architecture only (e.g. `open` is x86_64 only; arm64 has `openat`).
    Only(Arch),
    /// On neither; the closest name of either table, when one is close.
    Unknown { did_you_mean: Option<&'static str> },
}

/// Looks a policy's syscall name up in the policy architectures.
pub fn lookup(name: &str) -> Lookup {
    let on = |a| table(a).number(name).is_some();
    match (on(Arch::X86_64), on(Arch::Arm64)) {
        (true, true) => Lookup::Both,
        (true, false) => Lookup::Only(Arch::X86_64),
        (false, true) => Lookup::Only(Arch::Arm64),
        (false, false) => {
            let lower = name.trim().to_ascii_lowercase();
            let lower = lower.strip_prefix("sys_").unwrap_or(&lower);
            let names: Vec<&'static str> = Arch::POLICY
                .iter()
                .flat_map(|a| table(*a).names())
                .collect();
            let exact = names.iter().copied().find(|n| *n == lower);
            Lookup::Unknown {
                did_you_mean: exact.or_else(|| crate::schema::closest(lower, names)),
            }
        }
    }
}

/// The call numbers of `arch` a selector's `matchSyscalls` entries (ANDed) select: each `In`
/// entry keeps the calls it names, each `NotIn` entry drops them. Names the architecture lacks
/// select nothing on it. No entries select nothing (a `hook: syscall` selector must name calls).
pub fn select(entries: &[crate::model::SyscallSelector], arch: Arch) -> BTreeSet<u32> {
    use crate::model::SetOperator;
    if entries.is_empty() {
        return BTreeSet::new();
    }
    let t = table(arch);
    let mut set: BTreeSet<u32> = t.numbers().collect();
    for e in entries {
        let named: BTreeSet<u32> = e.values.iter().filter_map(|v| t.number(v)).collect();
        match e.operator {
            SetOperator::In => set.retain(|n| named.contains(n)),
            SetOperator::NotIn => set.retain(|n| !named.contains(n)),
        }
    }
    set
}

/// errno names (`EPERM`) and numbers, asm-generic (x86_64 and arm64 share them).
pub fn errnos() -> &'static BTreeMap<&'static str, u32> {
    static ERRNOS: OnceLock<BTreeMap<&'static str, u32>> = OnceLock::new();
    ERRNOS.get_or_init(|| parse_tsv(include_str!("../data/syscalls/errno.tsv")).collect())
}

/// The name of errno `n` (the first name listed for it: `EAGAIN` before `EWOULDBLOCK`).
pub fn errno_name(n: u32) -> Option<&'static str> {
    let mut first: Option<&'static str> = None;
    for line in parse_tsv(include_str!("../data/syscalls/errno.tsv")) {
        if line.1 == n {
            first = Some(line.0);
            break;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_the_kernels_numbers() {
        let x = table(Arch::X86_64);
        assert_eq!(x.number("read"), Some(0));
        assert_eq!(x.number("ptrace"), Some(101));
        assert_eq!(x.number("mount"), Some(165));
        assert_eq!(x.number("getppid"), Some(110));
        assert_eq!(x.name(272), Some("unshare"));
        let a = table(Arch::Arm64);
        assert_eq!(a.number("ptrace"), Some(117));
        assert_eq!(a.number("openat"), Some(56));
        assert_eq!(a.number("open"), None);
        let i = table(Arch::I386);
        assert_eq!(i.number("ptrace"), Some(26));
        assert_eq!(i.number("socketcall"), Some(102));
        assert!(x.numbers().count() > 350 && a.numbers().count() > 300);
    }

    #[test]
    fn lookup_says_where_a_name_exists_and_suggests_close_names() {
        assert_eq!(lookup("ptrace"), Lookup::Both);
        assert_eq!(lookup("open"), Lookup::Only(Arch::X86_64));
        assert_eq!(lookup("memfd_secret"), Lookup::Both);
        assert_eq!(
            lookup("ptrcae"),
            Lookup::Unknown {
                did_you_mean: Some("ptrace")
            }
        );
        assert_eq!(
            lookup("sys_mount"),
            Lookup::Unknown {
                did_you_mean: Some("mount")
            }
        );
        assert_eq!(
            lookup("zzzzzzzzzzzz"),
            Lookup::Unknown { did_you_mean: None }
        );
    }

    #[test]
    fn errno_names_round_trip() {
        assert_eq!(errnos().get("EPERM"), Some(&1));
        assert_eq!(errnos().get("ENOENT"), Some(&2));
        assert_eq!(errno_name(1), Some("EPERM"));
        assert_eq!(errno_name(11), Some("EAGAIN"));
    }
}
