//! What a rule-set slot holds besides its matcher keys: the global switch ([`Config`]), the
//! per-slot summary ([`SlotMeta`] and its `LOOKUP_*` bits) and the selectors ([`SelectorEntry`]
//! and the values of its fields).

/// `Config::pending_slot` when no rule-set switch is in progress.
pub const NO_SLOT: u32 = u32::MAX;

/// Action bits in [`SelectorEntry::actions`].
pub const ACTION_POST: u8 = 1;
pub const ACTION_SIGKILL: u8 = 2;
pub const ACTION_BLOCK: u8 = 4;

/// [`SelectorEntry::hook`] values.
pub const HOOK_EXEC: u8 = 0;
pub const HOOK_CONNECT: u8 = 1;
pub const HOOK_EGRESS: u8 = 2;
pub const HOOK_INGRESS: u8 = 3;

/// [`SelectorEntry::mode`] values.
pub const MODE_ENFORCE: u8 = 0;
pub const MODE_MONITOR: u8 = 1;

/// [`SelectorEntry::encryption`] and [`SockState::verdict`](crate::SockState::verdict) values.
pub const ENC_ANY: u8 = 0;
pub const ENC_PLAINTEXT: u8 = 1;
pub const ENC_TLS: u8 = 2;
/// Verdict not decided yet (no payload, or too few bytes to tell).
pub const ENC_PENDING: u8 = 0;
/// Verdict only: an encrypted protocol other than TLS — SSH ([`ssh`](crate::ssh)) or a
/// declared one ([`SignatureEntry`](crate::SignatureEntry)). Matched by selectors without
/// `matchEncryption`, never by `plaintext` nor by `tls`.
pub const ENC_ENCRYPTED: u8 = 3;

/// Whether a selector with matchEncryption `encryption` matches a stream whose verdict so far
/// is `verdict`, and the encryption the event then reports. A selector without matchEncryption
/// matches any payload; `plaintext` needs the plaintext verdict (so neither TLS, nor SSH, nor a
/// declared protocol: [`ENC_ENCRYPTED`]); `tls` matches a TLS verdict and a stream that is still
/// a valid ClientHello prefix (blocking "TLS" fails closed). The
/// egress (sk_msg) and ingress (cgroup_skb) verdicts both use it; the compiler's reference
/// evaluator states the same rule independently.
#[inline(always)]
pub fn encryption_match(encryption: u8, verdict: u8) -> Option<u8> {
    match encryption {
        ENC_ANY => Some(verdict),
        ENC_PLAINTEXT => (verdict == ENC_PLAINTEXT).then_some(ENC_PLAINTEXT),
        ENC_TLS => (verdict == ENC_TLS || verdict == ENC_PENDING).then_some(ENC_TLS),
        _ => None,
    }
}

/// Global switch, `CONFIG[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Slot whose rule set is enforced.
    pub active_slot: u32,
    /// Slot being prepared, or [`NO_SLOT`]. While set, exec also evaluates this slot so that
    /// processes started during a switch are correct in both.
    pub pending_slot: u32,
    /// Bumped on every switch (diagnostics only).
    pub generation: u64,
}

/// Per-table summary, `SLOT_META[table]` (a table is a group of a slot: [`table`](crate::table)).
/// Masks let the kernel skip whole lookups; condition and selector bits are the table's own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotMeta {
    /// Process conditions that hold when *not* hit (NotIn, NotPrefix, NotPostfix).
    pub proc_negate: u64,
    /// Destination conditions that hold when *not* matched (NotIn).
    pub dest_negate: u64,
    /// Destination conditions without CIDRs (any address).
    pub dest_any_addr: u64,
    /// Destination conditions without ports (any port).
    pub dest_any_port: u64,
    /// Destination conditions that accept TCP / UDP.
    pub dest_tcp: u64,
    pub dest_udp: u64,
    /// Selectors per hook.
    pub hook_exec: u64,
    pub hook_connect: u64,
    pub hook_egress: u64,
    /// The ingress hook's selectors: judged at the first payload a server connection receives,
    /// for the process that called `listen()` (`ingress.rs`).
    pub hook_ingress: u64,
    /// Number of selectors used (0..=64).
    pub selector_count: u32,
    /// `LOOKUP_*` bits: which matcher maps have entries in this slot.
    pub lookups: u32,
    /// Enforce-mode selectors with a Block action on the connect or egress hook: a process
    /// whose cached bits include one is *covered* by the socket guard (see the crate doc).
    pub enforce_net: u64,
    /// The same in monitor mode: the socket guard only reports what it would have refused.
    pub monitor_net: u64,
    /// Written by userspace with every slot, never 0 once written (the engine counts applies):
    /// a process's bits for this slot are current when `ProcessState::slot_gen[slot]` equals it.
    pub generation: u32,
    /// In a slot's group-0 table: not 0 when some group of the slot has socket-guard
    /// selectors (`enforce_net | monitor_net`), so the guard skips the process lookup when none
    /// does.
    pub slot_guard: u32,
    /// Process conditions on arguments: all hold when an exec's arguments are incomplete.
    pub proc_args: u64,
    /// Process conditions hit by a fileless exec / by a loader exec (`matchExecKinds`).
    pub kind_fileless: u64,
    pub kind_loader: u64,
}

/// [`SlotMeta::lookups`] bits.
pub const LOOKUP_BIN_EXACT: u32 = 1;
pub const LOOKUP_BIN_PREFIX: u32 = 2;
pub const LOOKUP_BIN_POSTFIX: u32 = 4;
pub const LOOKUP_ARG_EXACT: u32 = 8;
pub const LOOKUP_ARG_PREFIX: u32 = 16;
pub const LOOKUP_ARG_POSTFIX: u32 = 32;
pub const LOOKUP_NAMESPACE: u32 = 64;
/// Some condition looks at an argument without an index.
pub const LOOKUP_ARG_ANY: u32 = 128;
pub const LOOKUP_BIN_INODE: u32 = 256;

/// One selector, `SELECTORS[table * MAX_SELECTORS + index]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelectorEntry {
    /// Process conditions that must all hold.
    pub proc_required: u64,
    /// Destination conditions that must all hold.
    pub dest_required: u64,
    /// Index of the policy in the userspace table of this slot.
    pub policy_id: u32,
    /// Index of the rule within the policy.
    pub rule_index: u16,
    /// Index of the selector within the rule.
    pub selector_index: u16,
    /// `HOOK_*`.
    pub hook: u8,
    /// `ACTION_*` bits.
    pub actions: u8,
    /// `MODE_*`.
    pub mode: u8,
    /// `ENC_*` required on the egress or ingress hook (`ENC_ANY` when no matchEncryption).
    pub encryption: u8,
    pub _pad: [u8; 4],
}

assert_sizes!(Config = 16, SlotMeta = 136, SelectorEntry = 32,);
