//! The compiled rule set and `compile()`: policies become numbered selectors, deduplicated
//! process and destination conditions (one bit each), and slot-independent matcher entries
//! (exact keys and LPM prefixes with their covering unions already applied). Values come
//! parsed from the policy crate ([`bulwark_policy::values`]). The [`Builder`] is the one
//! counter of kernel capacity: `compile` refuses a set past a limit, with errors naming the
//! policy and rule, and the lint's capacity check ([`crate::capacity`]) counts with it too.

use crate::capacity::{Limit, Usage};
use crate::error::{CompileError, ErrorKind, Location};
use crate::identities::FileId;
use crate::ids::NamespaceIds;
use crate::lpm::LpmBuilder;
use bulwark_policy::values::{Cidr, PortRange, ValueLimit};
use bulwark_policy::{
    Action, AnyPolicy, ArgSelector, DestinationSelector, Encryption, ExecKind, Hook, MatchKind,
    Mode, Operator, Protocol, Selector,
};
use daemon_common as dc;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A string condition: the value is hit when it equals / starts with / ends with one of
/// `values` (sorted, deduplicated); a `negated` condition holds when it is *not* hit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StringMatch {
    pub kind: MatchKind,
    pub negated: bool,
    pub values: Vec<String>,
}

impl StringMatch {
    /// Is `value` hit (before negation)?
    pub fn hits(&self, value: &[u8]) -> bool {
        self.values.iter().any(|v| {
            let v = v.as_bytes();
            match self.kind {
                MatchKind::Exact => value == v,
                MatchKind::Prefix => value.starts_with(v),
                MatchKind::Postfix => value.ends_with(v),
            }
        })
    }

    fn describe(&self, subject: &str) -> String {
        let verb = match (self.kind, self.negated) {
            (MatchKind::Exact, false) => "is one of",
            (MatchKind::Exact, true) => "is none of",
            (MatchKind::Prefix, false) => "starts with one of",
            (MatchKind::Prefix, true) => "starts with none of",
            (MatchKind::Postfix, false) => "ends with one of",
            (MatchKind::Postfix, true) => "ends with none of",
        };
        format!("{subject} {verb} {}", list(&self.values))
    }
}

/// A condition on the process, evaluated once at exec. Numbered 0..64 per rule set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProcCondition {
    /// `matchBinaries` entry on the executable path.
    Binary(StringMatch),
    /// `matchArgs` entry. `index: None` looks at every argument from `argv[1]` on: hit when
    /// any of them is hit.
    Arg {
        index: Option<u8>,
        #[serde(flatten)]
        matcher: StringMatch,
    },
    /// `matchNamespaces` entry (or the implicit one of a namespaced policy): hit when the
    /// workload's namespace is one of `names` (`ids` are their interned ids). Host processes
    /// (id 0) are in no namespace.
    Namespace {
        negated: bool,
        names: Vec<String>,
        ids: Vec<u32>,
    },
    /// `matchExecKinds` entry: hit when the exec is of one of `kinds` (sorted, deduplicated).
    ExecKind { negated: bool, kinds: Vec<ExecKind> },
}

impl ProcCondition {
    /// True for conditions that hold when not hit.
    pub fn negated(&self) -> bool {
        match self {
            ProcCondition::Binary(m) | ProcCondition::Arg { matcher: m, .. } => m.negated,
            ProcCondition::Namespace { negated, .. } | ProcCondition::ExecKind { negated, .. } => {
                *negated
            }
        }
    }

    /// The condition in words, e.g. `binary path starts with one of ["/tmp/"]`.
    pub fn describe(&self) -> String {
        match self {
            ProcCondition::Binary(m) => m.describe("binary path"),
            ProcCondition::Arg {
                index: Some(i),
                matcher,
            } => matcher.describe(&format!("argv[{i}]")),
            ProcCondition::Arg {
                index: None,
                matcher,
            } => {
                let any = "argv[1..]";
                if matcher.negated {
                    // "no argument starts with one of" reads better than a double negative.
                    let positive = StringMatch {
                        negated: false,
                        ..matcher.clone()
                    };
                    format!(
                        "no argument in {any} {}",
                        positive.describe("").trim_start()
                    )
                } else {
                    format!(
                        "some argument in {any} {}",
                        matcher.describe("").trim_start()
                    )
                }
            }
            ProcCondition::ExecKind { negated, kinds } => {
                let words: Vec<String> = kinds.iter().map(|k| k.as_str().to_string()).collect();
                if *negated {
                    format!("exec kind is none of {}", list(&words))
                } else {
                    format!("exec kind is one of {}", list(&words))
                }
            }
            ProcCondition::Namespace { negated, names, .. } => {
                if *negated {
                    format!(
                        "Kubernetes namespace is none of {} (host processes included)",
                        list(names)
                    )
                } else {
                    format!("Kubernetes namespace is one of {}", list(names))
                }
            }
        }
    }
}

/// A `matchDestinations` entry: a destination is *in* it when its address lies in one of
/// `cidrs` (any address if empty), its port in one of `ports` (any if empty) and its protocol
/// is `protocol` (any if `None`); a `negated` (`NotIn`) condition holds when it is not in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct DestCondition {
    pub negated: bool,
    #[serde(serialize_with = "ser_cidrs")]
    pub cidrs: Vec<Cidr>,
    pub ports: Vec<PortRange>,
    pub protocol: Option<Protocol>,
}

fn ser_cidrs<S: Serializer>(cidrs: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(cidrs.iter().map(|c| c.to_string()))
}

impl DestCondition {
    /// The condition in words.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.cidrs.is_empty() {
            let cidrs: Vec<String> = self.cidrs.iter().map(|c| c.to_string()).collect();
            parts.push(format!("address in {}", list_plain(&cidrs)));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
            parts.push(format!("port in {}", list_plain(&ports)));
        }
        if let Some(p) = self.protocol {
            parts.push(format!("protocol {p:?}"));
        }
        let inner = if parts.is_empty() {
            "any destination".to_string()
        } else {
            parts.join(" and ")
        };
        if self.negated {
            format!("destination NOT ({inner})")
        } else {
            format!("destination ({inner})")
        }
    }
}

/// Shows at most 8 values, quoted; the JSON output of `bulwark compile` has them all.
fn list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    list_plain(&quoted)
}

/// Shows at most 8 values as they are (CIDRs, ports).
fn list_plain(values: &[String]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<&str> = values.iter().take(SHOWN).map(String::as_str).collect();
    if values.len() > SHOWN {
        format!("[{}, ... {} more]", shown.join(", "), values.len() - SHOWN)
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// One policy of the rule set (`SelectorEntry::policy_id` indexes these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    pub name: String,
    /// Namespace of a `TracingPolicyNamespaced`; `None` for cluster-wide policies.
    pub namespace: Option<String>,
    pub mode: Mode,
}

/// Everything userspace needs to turn a kernel match of selector `index` into an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorInfo {
    /// Selector index in the slot (0..64).
    pub index: u8,
    pub policy_id: u32,
    pub policy_name: String,
    /// Namespace of a `TracingPolicyNamespaced`; `None` for cluster-wide policies.
    pub policy_namespace: Option<String>,
    pub rule_name: String,
    pub rule_index: u16,
    /// Index within the rule's `selectors`.
    pub selector_index: u16,
    pub hook: Hook,
    /// As written (deduplicated); `[Post]` when the selector had no `matchActions`.
    pub actions: Vec<Action>,
    /// `ACTION_*` bits.
    pub action_bits: u8,
    pub mode: Mode,
    pub encryption: Option<Encryption>,
    /// Process conditions that must hold (bit i = `proc_conditions()[i]`).
    pub proc_required: u64,
    /// Destination conditions that must hold (bit i = `dest_conditions()[i]`).
    pub dest_required: u64,
}

/// Slot-independent matcher entries: keys without the slot byte, LPM lengths without its 8 bits.
#[derive(Clone, Debug, Default)]
pub(crate) struct Compiled {
    pub bin_exact: Vec<(Vec<u8>, u64)>,
    /// Files of the `In`/`NotIn` binary values ([`RuleSet::resolve_binaries`]).
    pub bin_inode: Vec<(FileId, u64)>,
    /// (bytes, bits, mask); postfix bytes are reversed.
    pub bin_prefix: Vec<(Vec<u8>, u32, u64)>,
    pub bin_postfix: Vec<(Vec<u8>, u32, u64)>,
    pub arg_exact: Vec<((u8, Vec<u8>), u64)>,
    /// Bytes start with the argv index byte.
    pub arg_prefix: Vec<(Vec<u8>, u32, u64)>,
    pub arg_postfix: Vec<(Vec<u8>, u32, u64)>,
    pub namespaces: Vec<(u32, u64)>,
    pub v4: Vec<(Vec<u8>, u32, u64)>,
    pub v6: Vec<(Vec<u8>, u32, u64)>,
    pub ports: Vec<(Vec<u8>, u32, u64)>,
}

/// A compiled set of policies: what one slot of the kernel maps holds.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub(crate) policies: Vec<PolicyInfo>,
    pub(crate) selectors: Vec<SelectorInfo>,
    pub(crate) entries: Vec<dc::SelectorEntry>,
    pub(crate) proc: Vec<ProcCondition>,
    pub(crate) dest: Vec<DestCondition>,
    pub(crate) compiled: Compiled,
    /// Everything but nothing slot-specific (SlotMeta has no slot field).
    pub(crate) meta: dc::SlotMeta,
    /// The files each binary condition (by index) names, once resolved.
    pub(crate) binary_files: BTreeMap<usize, BTreeSet<FileId>>,
}

impl RuleSet {
    /// The policies, in input order (`policy_id` order).
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }
    /// All selectors, by index.
    pub fn selectors(&self) -> &[SelectorInfo] {
        &self.selectors
    }
    /// Process conditions, by bit.
    pub fn proc_conditions(&self) -> &[ProcCondition] {
        &self.proc
    }
    /// Destination conditions, by bit.
    pub fn dest_conditions(&self) -> &[DestCondition] {
        &self.dest
    }
    /// The selector table entries as the kernel sees them, by index.
    pub fn selector_entries(&self) -> &[dc::SelectorEntry] {
        &self.entries
    }
    /// Describes selector `selector` of this rule set (for events); `None` past the end.
    pub fn selector_info(&self, selector: u8) -> Option<SelectorInfo> {
        self.selectors.get(usize::from(selector)).cloned()
    }
    /// Bits of the selectors on `hook`.
    pub fn hook_mask(&self, hook: Hook) -> u64 {
        match hook {
            Hook::Exec => self.meta.hook_exec,
            Hook::Connect => self.meta.hook_connect,
            Hook::Egress => self.meta.hook_egress,
        }
    }
}

/// Compiles `policies` (in order; `policy_id` is the position) into one rule set, interning the
/// namespace names it mentions in `ns`. Fails on anything the kernel side cannot represent,
/// naming the policy and rule; never panics, whatever the input.
pub fn compile(policies: &[AnyPolicy], ns: &mut NamespaceIds) -> Result<RuleSet, CompileError> {
    let mut b = Builder::new(ns);
    for (pid, policy) in policies.iter().enumerate() {
        b.policy(pid, policy, &mut |_, _, _| {})?;
    }
    Ok(b.finish())
}

/// Lays policies out as one rule set, sharing identical conditions and map keys, and counts
/// what that uses of every kernel limit.
pub(crate) struct Builder<'a> {
    ns: &'a mut NamespaceIds,
    /// False when only counting ([`Builder::counting`]): nothing is refused over a [`Limit`],
    /// and conditions and selectors past 64 get no bit (the rule set is not used).
    enforce_limits: bool,
    rs: RuleSet,
    proc_index: HashMap<ProcCondition, usize>,
    dest_index: HashMap<DestCondition, usize>,
    bin_exact: BTreeMap<Vec<u8>, u64>,
    bin_prefix: LpmBuilder,
    bin_postfix: LpmBuilder,
    arg_exact: BTreeMap<(u8, Vec<u8>), u64>,
    arg_prefix: LpmBuilder,
    arg_postfix: LpmBuilder,
    arg_any: bool,
    namespaces: BTreeMap<u32, u64>,
    v4: LpmBuilder,
    v6: LpmBuilder,
    ports: LpmBuilder,
}

/// The mask of bit `i`; none past 63 (only while counting past the limits).
fn bit(i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .unwrap_or(0)
}

/// Which `match*` field a string condition comes from.
#[derive(Clone, Copy)]
enum Target {
    Binary,
    Arg(Option<u8>),
}

impl<'a> Builder<'a> {
    fn new(ns: &'a mut NamespaceIds) -> Self {
        Builder {
            ns,
            enforce_limits: true,
            rs: RuleSet::default(),
            proc_index: HashMap::new(),
            dest_index: HashMap::new(),
            bin_exact: BTreeMap::new(),
            bin_prefix: LpmBuilder::default(),
            bin_postfix: LpmBuilder::default(),
            arg_exact: BTreeMap::new(),
            arg_prefix: LpmBuilder::default(),
            arg_postfix: LpmBuilder::default(),
            arg_any: false,
            namespaces: BTreeMap::new(),
            v4: LpmBuilder::default(),
            v6: LpmBuilder::default(),
            ports: LpmBuilder::default(),
        }
    }

    /// A builder that counts usage past every [`Limit`] instead of refusing.
    pub(crate) fn counting(ns: &'a mut NamespaceIds) -> Self {
        Builder {
            enforce_limits: false,
            ..Builder::new(ns)
        }
    }

    /// What the selectors added so far use of each limit.
    pub(crate) fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for limit in Limit::ALL {
            u.0[limit as usize] = match limit {
                Limit::Selectors => self.rs.selectors.len(),
                Limit::ProcConditions => self.rs.proc.len(),
                Limit::DestConditions => self.rs.dest.len(),
                Limit::BinaryValues => self
                    .bin_exact
                    .len()
                    .max(self.bin_prefix.len())
                    .max(self.bin_postfix.len()),
                Limit::ArgValues => self
                    .arg_exact
                    .len()
                    .max(self.arg_prefix.len())
                    .max(self.arg_postfix.len()),
                Limit::Namespaces => self.namespaces.len(),
                Limit::Cidrs => self.v4.len().max(self.v6.len()),
                Limit::PortPrefixes => self.ports.len(),
            };
        }
        u
    }

    /// Refuses when `limit` is already full (before adding one more of it).
    fn ensure_room(&self, loc: &Location, limit: Limit) -> Result<(), CompileError> {
        let used = self.usage().of(limit);
        if self.enforce_limits && used as u64 >= limit.max() {
            return Err(loc.error(ErrorKind::Capacity {
                limit,
                used: used + 1,
            }));
        }
        Ok(())
    }

    /// Refuses when `limit` is over (after adding).
    fn ensure_within(&self, loc: &Location, limit: Limit) -> Result<(), CompileError> {
        let used = self.usage().of(limit);
        if self.enforce_limits && used as u64 > limit.max() {
            return Err(loc.error(ErrorKind::Capacity { limit, used }));
        }
        Ok(())
    }

    /// Adds every selector of `policy` (numbered `pid`), calling `after_selector` with the usage
    /// so far and the rule and selector index after each one.
    pub(crate) fn policy(
        &mut self,
        pid: usize,
        policy: &AnyPolicy,
        after_selector: &mut dyn FnMut(Usage, usize, usize),
    ) -> Result<(), CompileError> {
        let mut loc = Location {
            policy: policy.name().to_owned(),
            namespace: policy.scope_namespace().map(str::to_owned),
            ..Location::default()
        };
        let policy_id = u32::try_from(pid).map_err(|_| {
            loc.error(ErrorKind::TooMany {
                what: "policies",
                limit: "u32 policy id",
                max: u64::from(u32::MAX),
            })
        })?;
        let spec = policy.spec();
        self.rs.policies.push(PolicyInfo {
            name: loc.policy.clone(),
            namespace: loc.namespace.clone(),
            mode: spec.mode,
        });
        for (ri, rule) in spec.rules.iter().enumerate() {
            loc.rule = Some(rule.name.clone());
            loc.selector = None;
            let rule_index = u16::try_from(ri).map_err(|_| {
                loc.error(ErrorKind::TooMany {
                    what: "rules in one policy",
                    limit: "u16 rule index",
                    max: u64::from(u16::MAX),
                })
            })?;
            for (si, sel) in rule.selectors.iter().enumerate() {
                loc.selector = Some(si);
                let selector_index = u16::try_from(si).map_err(|_| {
                    loc.error(ErrorKind::TooMany {
                        what: "selectors in one rule",
                        limit: "u16 selector index",
                        max: u64::from(u16::MAX),
                    })
                })?;
                self.selector(
                    &loc,
                    policy_id,
                    rule_index,
                    selector_index,
                    &rule.name,
                    rule.hook,
                    spec.mode,
                    sel,
                )?;
                after_selector(self.usage(), ri, si);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn selector(
        &mut self,
        loc: &Location,
        policy_id: u32,
        rule_index: u16,
        selector_index: u16,
        rule_name: &str,
        hook: Hook,
        mode: Mode,
        sel: &Selector,
    ) -> Result<(), CompileError> {
        let index = self.rs.selectors.len();
        self.ensure_room(loc, Limit::Selectors)?;
        check_hook(loc, hook, sel)?;

        let mut proc_required = 0u64;
        for m in &sel.match_binaries {
            let cond = string_condition(loc, Target::Binary, m.operator, &m.values)?;
            proc_required |= self.add_proc(loc, cond)?;
        }
        for m in &sel.match_args {
            let index = arg_index(loc, m)?;
            let cond = string_condition(loc, Target::Arg(index), m.operator, &m.values)?;
            proc_required |= self.add_proc(loc, cond)?;
        }
        for m in &sel.match_namespaces {
            let cond = self.namespace_condition(loc, m.operator.is_negated(), &m.values)?;
            proc_required |= self.add_proc(loc, cond)?;
        }
        for m in &sel.match_exec_kinds {
            let mut kinds = m.values.clone();
            kinds.sort_by_key(|k| k.as_str());
            kinds.dedup();
            let cond = ProcCondition::ExecKind {
                negated: m.operator.is_negated(),
                kinds,
            };
            proc_required |= self.add_proc(loc, cond)?;
        }
        if let Some(own) = &loc.namespace {
            if own.is_empty() {
                return Err(loc.error(ErrorKind::NamespacedWithoutNamespace));
            }
            let cond = self.namespace_condition(loc, false, std::slice::from_ref(own))?;
            proc_required |= self.add_proc(loc, cond)?;
        }
        let mut dest_required = 0u64;
        for m in &sel.match_destinations {
            let cond = dest_condition(loc, m)?;
            dest_required |= self.add_dest(loc, cond)?;
        }

        let mut actions: Vec<Action> = Vec::new();
        for a in &sel.match_actions {
            if !actions.contains(&a.action) {
                actions.push(a.action);
            }
        }
        if actions.is_empty() {
            actions.push(Action::Post);
        }
        let action_bits = actions.iter().fold(0u8, |bits, a| {
            bits | match a {
                Action::Post => dc::ACTION_POST,
                Action::Sigkill => dc::ACTION_SIGKILL,
                Action::Block => dc::ACTION_BLOCK,
            }
        });
        let (hook_byte, hook_mask) = match hook {
            Hook::Exec => (dc::HOOK_EXEC, &mut self.rs.meta.hook_exec),
            Hook::Connect => (dc::HOOK_CONNECT, &mut self.rs.meta.hook_connect),
            Hook::Egress => (dc::HOOK_EGRESS, &mut self.rs.meta.hook_egress),
        };
        *hook_mask |= bit(index);
        // The socket guard covers processes of Block selectors on the network hooks.
        if hook != Hook::Exec && action_bits & dc::ACTION_BLOCK != 0 {
            match mode {
                Mode::Enforce => self.rs.meta.enforce_net |= bit(index),
                Mode::Monitor => self.rs.meta.monitor_net |= bit(index),
            }
        }
        let entry = dc::SelectorEntry {
            proc_required,
            dest_required,
            policy_id,
            rule_index,
            selector_index,
            hook: hook_byte,
            actions: action_bits,
            mode: match mode {
                Mode::Enforce => dc::MODE_ENFORCE,
                Mode::Monitor => dc::MODE_MONITOR,
            },
            encryption: match sel.match_encryption {
                None => dc::ENC_ANY,
                Some(Encryption::Plaintext) => dc::ENC_PLAINTEXT,
                Some(Encryption::Tls) => dc::ENC_TLS,
            },
            _pad: [0; 4],
        };
        self.rs.entries.push(entry);
        self.rs.selectors.push(SelectorInfo {
            // Past 64 only while counting (the rule set is not used).
            index: index as u8,
            policy_id,
            policy_name: loc.policy.clone(),
            policy_namespace: loc.namespace.clone(),
            rule_name: rule_name.to_owned(),
            rule_index,
            selector_index,
            hook,
            actions,
            action_bits,
            mode,
            encryption: sel.match_encryption,
            proc_required,
            dest_required,
        });
        Ok(())
    }

    fn namespace_condition(
        &mut self,
        loc: &Location,
        negated: bool,
        values: &[String],
    ) -> Result<ProcCondition, CompileError> {
        let mut names: Vec<String> = Vec::with_capacity(values.len());
        for v in values {
            if v.is_empty() {
                return Err(loc.error(ErrorKind::EmptyNamespaceName));
            }
            names.push(v.clone());
        }
        names.sort();
        names.dedup();
        let ids = names.iter().map(|n| self.ns.id(n)).collect();
        Ok(ProcCondition::Namespace {
            negated,
            names,
            ids,
        })
    }

    /// The bit of `cond`, adding it (and its map entries) if it is new.
    fn add_proc(&mut self, loc: &Location, cond: ProcCondition) -> Result<u64, CompileError> {
        if let Some(&i) = self.proc_index.get(&cond) {
            return Ok(bit(i));
        }
        let i = self.rs.proc.len();
        self.ensure_room(loc, Limit::ProcConditions)?;
        let bit = bit(i);
        if cond.negated() {
            self.rs.meta.proc_negate |= bit;
        }
        match &cond {
            ProcCondition::Binary(m) => {
                for v in &m.values {
                    let bytes = v.as_bytes().to_vec();
                    match m.kind {
                        MatchKind::Exact => *self.bin_exact.entry(bytes).or_default() |= bit,
                        MatchKind::Prefix => {
                            let bits = 8 * bytes.len() as u32;
                            self.bin_prefix.insert(bytes, bits, bit);
                        }
                        MatchKind::Postfix => {
                            let bits = 8 * bytes.len() as u32;
                            self.bin_postfix
                                .insert(bytes.into_iter().rev().collect(), bits, bit);
                        }
                    };
                }
                self.ensure_within(loc, Limit::BinaryValues)?;
            }
            ProcCondition::Arg { index, matcher } => {
                self.rs.meta.proc_args |= bit;
                let idx = index.unwrap_or(dc::ARG_ANY_INDEX);
                if index.is_none() && !matcher.values.is_empty() {
                    self.arg_any = true;
                }
                for v in &matcher.values {
                    let value = v.as_bytes();
                    match matcher.kind {
                        MatchKind::Exact => {
                            *self.arg_exact.entry((idx, value.to_vec())).or_default() |= bit
                        }
                        MatchKind::Prefix | MatchKind::Postfix => {
                            let mut key = Vec::with_capacity(1 + value.len());
                            key.push(idx);
                            if matcher.kind == MatchKind::Prefix {
                                key.extend_from_slice(value);
                            } else {
                                key.extend(value.iter().rev());
                            }
                            let bits = 8 * key.len() as u32;
                            let trie = if matcher.kind == MatchKind::Prefix {
                                &mut self.arg_prefix
                            } else {
                                &mut self.arg_postfix
                            };
                            trie.insert(key, bits, bit);
                        }
                    }
                }
                self.ensure_within(loc, Limit::ArgValues)?;
            }
            ProcCondition::Namespace { ids, .. } => {
                for &id in ids {
                    *self.namespaces.entry(id).or_default() |= bit;
                }
                self.ensure_within(loc, Limit::Namespaces)?;
            }
            ProcCondition::ExecKind { kinds, .. } => {
                for k in kinds {
                    match k {
                        ExecKind::Fileless => self.rs.meta.kind_fileless |= bit,
                        ExecKind::Loader => self.rs.meta.kind_loader |= bit,
                    }
                }
            }
        }
        self.proc_index.insert(cond.clone(), i);
        self.rs.proc.push(cond);
        Ok(bit)
    }

    fn add_dest(&mut self, loc: &Location, cond: DestCondition) -> Result<u64, CompileError> {
        if let Some(&i) = self.dest_index.get(&cond) {
            return Ok(bit(i));
        }
        let i = self.rs.dest.len();
        self.ensure_room(loc, Limit::DestConditions)?;
        let bit = bit(i);
        let meta = &mut self.rs.meta;
        if cond.negated {
            meta.dest_negate |= bit;
        }
        if cond.cidrs.is_empty() {
            meta.dest_any_addr |= bit;
        }
        if cond.ports.is_empty() {
            meta.dest_any_port |= bit;
        }
        match cond.protocol {
            None => {
                meta.dest_tcp |= bit;
                meta.dest_udp |= bit;
            }
            Some(Protocol::TCP) => meta.dest_tcp |= bit,
            Some(Protocol::UDP) => meta.dest_udp |= bit,
        }
        for c in &cond.cidrs {
            match *c {
                Cidr::V4 { addr, len } => {
                    self.v4
                        .insert(addr.to_be_bytes().to_vec(), u32::from(len), bit);
                }
                Cidr::V6 { addr, len } => {
                    self.v6
                        .insert(addr.to_be_bytes().to_vec(), u32::from(len), bit);
                }
            }
        }
        for range in &cond.ports {
            for (start, bits) in range.prefix_blocks() {
                self.ports
                    .insert(start.to_be_bytes().to_vec(), u32::from(bits), bit);
            }
        }
        self.ensure_within(loc, Limit::Cidrs)?;
        self.ensure_within(loc, Limit::PortPrefixes)?;
        self.dest_index.insert(cond.clone(), i);
        self.rs.dest.push(cond);
        Ok(bit)
    }

    fn finish(self) -> RuleSet {
        let mut rs = self.rs;
        let c = Compiled {
            bin_exact: self.bin_exact.into_iter().collect(),
            bin_inode: Vec::new(),
            bin_prefix: self.bin_prefix.finish(),
            bin_postfix: self.bin_postfix.finish(),
            arg_exact: self.arg_exact.into_iter().collect(),
            arg_prefix: self.arg_prefix.finish(),
            arg_postfix: self.arg_postfix.finish(),
            namespaces: self.namespaces.into_iter().collect(),
            v4: self.v4.finish(),
            v6: self.v6.finish(),
            ports: self.ports.finish(),
        };
        let mut lookups = 0;
        for (present, bit) in [
            (!c.bin_exact.is_empty(), dc::LOOKUP_BIN_EXACT),
            (!c.bin_prefix.is_empty(), dc::LOOKUP_BIN_PREFIX),
            (!c.bin_postfix.is_empty(), dc::LOOKUP_BIN_POSTFIX),
            (!c.arg_exact.is_empty(), dc::LOOKUP_ARG_EXACT),
            (!c.arg_prefix.is_empty(), dc::LOOKUP_ARG_PREFIX),
            (!c.arg_postfix.is_empty(), dc::LOOKUP_ARG_POSTFIX),
            (!c.namespaces.is_empty(), dc::LOOKUP_NAMESPACE),
            (self.arg_any, dc::LOOKUP_ARG_ANY),
        ] {
            if present {
                lookups |= bit;
            }
        }
        rs.meta.lookups = lookups;
        rs.meta.selector_count = rs.selectors.len() as u32;
        rs.compiled = c;
        rs
    }
}

/// Refuses fields and actions the hook cannot honour.
fn check_hook(loc: &Location, hook: Hook, sel: &Selector) -> Result<(), CompileError> {
    if hook == Hook::Exec && !sel.match_destinations.is_empty() {
        return Err(loc.error(ErrorKind::DestinationsOnExec));
    }
    if hook != Hook::Egress && sel.match_encryption.is_some() {
        return Err(loc.error(ErrorKind::EncryptionOffEgress));
    }
    for a in &sel.match_actions {
        match (a.action, hook) {
            (Action::Sigkill, Hook::Connect | Hook::Egress) => {
                return Err(loc.error(ErrorKind::SigkillOffExec))
            }
            (Action::Block, Hook::Exec) => return Err(loc.error(ErrorKind::BlockOnExec)),
            _ => {}
        }
    }
    Ok(())
}

fn arg_index(loc: &Location, m: &ArgSelector) -> Result<Option<u8>, CompileError> {
    match m.index {
        None => Ok(None),
        Some(i) if (i as usize) < dc::MAX_ARGS => Ok(Some(i as u8)),
        Some(index) => Err(loc.error(ErrorKind::ArgIndex { index })),
    }
}

fn string_condition(
    loc: &Location,
    target: Target,
    op: Operator,
    values: &[String],
) -> Result<ProcCondition, CompileError> {
    let (kind, negated) = (op.kind(), op.is_negated());
    let (field, limit) = match target {
        Target::Binary => ("matchBinaries", ValueLimit::binary(kind)),
        Target::Arg(_) => ("matchArgs", ValueLimit::ARG),
    };
    let mut vals: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        if v.as_bytes().contains(&0) {
            return Err(loc.error(ErrorKind::NulByte {
                field,
                value: v.clone(),
            }));
        }
        if v.len() > limit.max {
            return Err(loc.error(ErrorKind::ValueTooLong {
                field,
                limit,
                len: v.len(),
                preview: v.chars().take(32).collect(),
            }));
        }
        vals.push(v.clone());
    }
    vals.sort();
    vals.dedup();
    let matcher = StringMatch {
        kind,
        negated,
        values: vals,
    };
    Ok(match target {
        Target::Binary => ProcCondition::Binary(matcher),
        Target::Arg(index) => ProcCondition::Arg { index, matcher },
    })
}

/// The condition of a destination entry: its parsed values with CIDRs folded as the kernel
/// matches them, and both lists sorted and deduplicated so identical entries share a bit.
fn dest_condition(loc: &Location, m: &DestinationSelector) -> Result<DestCondition, CompileError> {
    let set = m.parse().map_err(|e| loc.error(e))?;
    let mut cidrs: Vec<Cidr> = set.cidrs.into_iter().map(Cidr::folded).collect();
    cidrs.sort();
    cidrs.dedup();
    let mut ports = set.ports;
    ports.sort();
    ports.dedup();
    Ok(DestCondition {
        negated: set.negated,
        cidrs,
        ports,
        protocol: set.protocol,
    })
}
