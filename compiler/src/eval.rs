//! The reference semantics of a compiled rule set, evaluated in plain Rust from the
//! conditions (not from the map entries). Userspace uses it to compute the selector bits of
//! processes that were already running when a rule set is swapped in (the kernel evaluates only
//! at exec), from the same facts the exec program uses ([`ExecFacts`]); the tests use it as the
//! oracle the generated map entries must agree with, including what the payload hooks (egress,
//! ingress) decide at a first payload ([`RuleSet::evaluate_payload`]).

use crate::conditions::{DestCondition, ProcCondition};
use crate::identities::FileId;
use crate::ruleset::RuleSet;
use bulwark_policy::values::normalize_addr;
use bulwark_policy::{Action, Encryption, ExecKind, Hook, Mode, Protocol};
use daemon_common as dc;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The outcome of [`RuleSet::evaluate_payload`]: selector bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadMatch {
    /// Selectors that match (each is reported).
    pub matched: u64,
    /// The enforce-mode `Block` selectors among them: when not 0 the payload is dropped.
    pub blocking: u64,
}

/// `AF_INET` / `AF_INET6` as in [`dc::Destination::family`].
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What the exec program knows about one exec: the input of [`RuleSet::evaluate_exec`].
/// Userspace gathers the same facts from /proc for processes that exec'd before a rule set
/// existed (`bulwark run`'s reseed); the field docs say where the kernel takes each from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecFacts {
    /// Absolute path of the executed file as the process's mount namespace sees it
    /// (`mm->exe_file`; `/proc/PID/exe`).
    pub path: Vec<u8>,
    /// The filename given to execve, when the kernel matches it too (a script's own path, its
    /// interpreter being the executed file; the tracepoint's filename, `AT_EXECFN`). Binary
    /// conditions are hit when either path hits.
    pub filename: Option<Vec<u8>>,
    /// argv, argv[0] included (the new image's argument area; `/proc/PID/cmdline`).
    pub argv: Vec<Vec<u8>>,
    /// Interned Kubernetes namespace of the process's workload, 0 for host processes.
    pub namespace_id: u32,
    /// The executed file (`mm->exe_file->f_inode`; `stat /proc/PID/exe`), when known.
    pub file: Option<FileId>,
    /// The executed file has no link (`i_nlink == 0`).
    pub fileless: bool,
    /// The executed file is a dynamic loader run directly.
    pub loader: bool,
}

impl ExecFacts {
    /// Whether the kernel examines all of `argv`: at most `MAX_ARG_ELEMENTS` elements and
    /// `MAX_ARG_BYTES` bytes (NULs included). Otherwise the exec's arguments are incomplete.
    pub fn arguments_complete(&self) -> bool {
        self.argv.len() <= dc::MAX_ARG_ELEMENTS
            && self.argv.iter().map(|a| a.len() + 1).sum::<usize>() <= dc::MAX_ARG_BYTES
    }

    /// Facts of a process running `binary` (also the execve filename) with `argv`.
    pub fn new(binary: &[u8], argv: &[&[u8]], namespace_id: u32) -> ExecFacts {
        ExecFacts {
            path: binary.to_vec(),
            argv: argv.iter().map(|a| a.to_vec()).collect(),
            namespace_id,
            ..ExecFacts::default()
        }
    }

    /// For a loader exec, the program it loads as the kernel finds it in argv: after argv[0],
    /// the loader's options (an element in `LOADER_OPTIONS_WITH_VALUE` takes the next one
    /// with it; `--` ends them), then the first other element; only if it fits
    /// the kernel's path buffer (at most `PATH_LEN - 1` bytes) and lies within the argument
    /// bounds the kernel walks.
    pub fn loader_target(&self) -> Option<&[u8]> {
        if !self.loader {
            return None;
        }
        let mut skip = false;
        let mut next_is_target = false;
        let mut area = 0usize;
        for (i, a) in self.argv.iter().enumerate().take(dc::MAX_ARG_ELEMENTS) {
            let at = area;
            area += a.len() + 1;
            if at >= dc::MAX_ARG_BYTES {
                return None;
            }
            if i == 0 {
                continue;
            }
            if skip {
                skip = false;
                continue;
            }
            if !next_is_target && a.starts_with(b"--") {
                if a.len() == 2 {
                    next_is_target = true;
                } else if dc::LOADER_OPTIONS_WITH_VALUE.contains(&a.as_slice()) {
                    skip = true;
                }
                continue;
            }
            return (!a.is_empty() && a.len() < dc::PATH_LEN).then_some(a.as_slice());
        }
        None
    }
}

impl ProcCondition {
    /// Is the condition hit (before negation) by this exec? Binary conditions are hit by the
    /// executed file's path, the execve filename and a loader's target; their files
    /// (`files`, from [`RuleSet::resolve_binaries`]) are hit by the executed file.
    pub fn hit_by(&self, facts: &ExecFacts, files: impl Iterator<Item = FileId>) -> bool {
        match self {
            ProcCondition::Binary(m) => {
                m.hits(&facts.path)
                    || facts.filename.as_deref().is_some_and(|f| m.hits(f))
                    || facts.loader_target().is_some_and(|t| m.hits(t))
                    || facts
                        .file
                        .is_some_and(|f| files.into_iter().any(|x| x == f))
            }
            ProcCondition::Arg {
                index: Some(i),
                matcher,
            } => facts
                .argv
                .get(usize::from(*i))
                .is_some_and(|a| matcher.hits(a)),
            ProcCondition::Arg {
                index: None,
                matcher,
            } => facts.argv.iter().skip(1).any(|a| matcher.hits(a)),
            ProcCondition::Namespace { ids, .. } => {
                facts.namespace_id != 0 && ids.contains(&facts.namespace_id)
            }
            ProcCondition::ExecKind { kinds, .. } => kinds.iter().any(|k| match k {
                ExecKind::Fileless => facts.fileless,
                ExecKind::Loader => facts.loader,
            }),
        }
    }
}

impl DestCondition {
    /// Is `dest` in this entry (before negation)?
    pub fn contains(&self, dest: &dc::Destination) -> bool {
        let addr_in = self.cidrs.is_empty()
            || destination_addr(dest)
                .is_some_and(|a| self.cidrs.iter().any(|c| c.contains_addr(a)));
        let port_in = self.ports.is_empty() || self.ports.iter().any(|p| p.contains(dest.port));
        let proto_in = match self.protocol {
            None => true,
            Some(Protocol::TCP) => dest.protocol == dc::PROTO_TCP,
            Some(Protocol::UDP) => dest.protocol == dc::PROTO_UDP,
        };
        addr_in && port_in && proto_in
    }
}

/// The destination's address, IPv4-mapped IPv6 folded to IPv4; `None` for unknown families.
pub fn destination_addr(dest: &dc::Destination) -> Option<IpAddr> {
    match dest.family {
        AF_INET => {
            let [a, b, c, d, ..] = dest.addr;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        AF_INET6 => Some(normalize_addr(IpAddr::V6(Ipv6Addr::from(dest.addr)))),
        _ => None,
    }
}

/// A [`dc::Destination`] for `addr:port` over `protocol` (`PROTO_TCP` / `PROTO_UDP`).
pub fn destination(addr: IpAddr, port: u16, protocol: u8) -> dc::Destination {
    match addr {
        IpAddr::V4(a) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&a.octets());
            dc::Destination {
                addr: bytes,
                port,
                family: AF_INET,
                protocol,
            }
        }
        IpAddr::V6(a) => dc::Destination {
            addr: a.octets(),
            port,
            family: AF_INET6,
            protocol,
        },
    }
}

impl RuleSet {
    /// Selectors (of every hook) whose process conditions hold for a process running `binary`
    /// with `argv` in the namespace with id `namespace_id` (0: host). This is the value the
    /// kernel caches in `ProcessState::selectors` at exec.
    pub fn evaluate_process(&self, binary: &str, argv: &[&str], namespace_id: u32) -> u64 {
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        self.evaluate_process_bytes(binary.as_bytes(), &argv, namespace_id)
    }

    /// [`RuleSet::evaluate_process`] for non-UTF-8 paths and arguments (as read from /proc).
    pub fn evaluate_process_bytes(&self, binary: &[u8], argv: &[&[u8]], namespace_id: u32) -> u64 {
        self.evaluate_exec(&ExecFacts::new(binary, argv, namespace_id))
    }

    /// Selectors (of every hook) whose process conditions hold for an exec with these facts:
    /// what the kernel caches in `ProcessState::selectors` at that exec. When the arguments are
    /// incomplete ([`ExecFacts::arguments_complete`]) every argument condition holds (fail
    /// closed).
    pub fn evaluate_exec(&self, facts: &ExecFacts) -> u64 {
        let mut holds = 0u64;
        for (i, c) in self.proc.iter().enumerate() {
            if c.hit_by(facts, self.binary_files(i)) != c.negated() {
                holds |= 1 << i;
            }
        }
        if !facts.arguments_complete() {
            holds |= self.meta.proc_args;
        }
        self.select(|e| e.proc_required & holds == e.proc_required)
    }

    /// The subset of `selectors` whose destination conditions hold for `dest` (selectors
    /// without destination conditions always do). Encryption is not part of this.
    pub fn evaluate_destination(&self, selectors: u64, dest: &dc::Destination) -> u64 {
        let mut holds = 0u64;
        for (i, c) in self.dest.iter().enumerate() {
            if c.contains(dest) != c.negated {
                holds |= 1 << i;
            }
        }
        selectors & self.select(|e| e.dest_required & holds == e.dest_required)
    }

    /// What the kernel decides at the first payload of a connection on a hook that classifies
    /// payloads ([`Hook::classifies_payload`]): the selectors of `hook` among `process` (the
    /// process's cached bits: the sender's on egress, the listener's owner's on ingress) whose
    /// destination conditions hold for `dest` and whose `matchEncryption` accepts `verdict`.
    /// `dest` is the peer's address with the port the hook looks at: the peer's port on egress,
    /// the server's own (local) port on ingress. `verdict` is an `ENC_*` payload verdict
    /// (`ENC_PENDING` while undecided; `ENC_ENCRYPTED` for SSH or a declared protocol, which
    /// both hooks' kernel verdicts recognise the same way). The rule, stated here independently
    /// of the kernel's `encryption_match`: no `matchEncryption` matches any payload,
    /// `plaintext` needs the plaintext verdict (so neither TLS, nor SSH, nor a declared
    /// protocol), `tls` the TLS verdict or a still-undecided stream (fails closed).
    pub fn evaluate_payload(
        &self,
        hook: Hook,
        process: u64,
        dest: &dc::Destination,
        verdict: u8,
    ) -> PayloadMatch {
        let candidates = self.evaluate_destination(process & self.hook_mask(hook), dest);
        let mut out = PayloadMatch::default();
        for info in &self.selectors {
            let bit = 1u64 << info.index;
            if candidates & bit == 0 {
                continue;
            }
            let accepts = match info.encryption {
                None => true,
                Some(Encryption::Plaintext) => verdict == dc::ENC_PLAINTEXT,
                Some(Encryption::Tls) => verdict == dc::ENC_TLS || verdict == dc::ENC_PENDING,
            };
            if !accepts {
                continue;
            }
            out.matched |= bit;
            if info.mode == Mode::Enforce && info.actions.contains(&Action::Block) {
                out.blocking |= bit;
            }
        }
        out
    }

    fn select(&self, pred: impl Fn(&dc::SelectorEntry) -> bool) -> u64 {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| pred(e))
            .fold(0, |bits, (i, _)| bits | (1 << i))
    }
}
