//! The compiled rule set and `compile()`: policies become numbered selectors, deduplicated
//! process and destination conditions (one bit each), and slot-independent matcher entries
//! (exact keys and LPM prefixes with their covering unions already applied). Everything a
//! kernel limit bounds is checked here, with errors naming the policy and rule.

use crate::error::{CompileError, Loc};
use crate::ids::NamespaceIds;
use crate::lpm::LpmBuilder;
use crate::parse::{parse_cidr, parse_port, port_blocks, Cidr};
use bulwark_policy::{
    Action, AnyPolicy, ArgSelector, DestinationSelector, Encryption, Hook, Mode, Operator,
    Protocol, Selector, SetOperator,
};
use daemon_common as dc;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};

/// How a string condition compares: whole value, start, or end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// `In`, `Equal`, `NotIn`.
    Exact,
    /// `Prefix`, `NotPrefix`.
    Prefix,
    /// `Postfix`, `NotPostfix`.
    Postfix,
}

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
    /// `matchArgs` entry. `index: None` looks at every argument from `argv[1]` up to
    /// `argv[MAX_ARGS-1]`: hit when any of them is hit.
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
}

impl ProcCondition {
    /// True for conditions that hold when not hit.
    pub fn negated(&self) -> bool {
        match self {
            ProcCondition::Binary(m) | ProcCondition::Arg { matcher: m, .. } => m.negated,
            ProcCondition::Namespace { negated, .. } => *negated,
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
                let any = format!("argv[1..{}]", dc::MAX_ARGS);
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
    /// Inclusive ranges.
    pub ports: Vec<(u16, u16)>,
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
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect();
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
        let mut loc = Loc {
            policy: policy.name().to_owned(),
            namespace: policy.scope_namespace().map(str::to_owned),
            ..Loc::default()
        };
        let policy_id = u32::try_from(pid).map_err(|_| loc.invalid("too many policies"))?;
        let spec = policy.spec();
        b.rs.policies.push(PolicyInfo {
            name: loc.policy.clone(),
            namespace: loc.namespace.clone(),
            mode: spec.mode,
        });
        for (ri, rule) in spec.rules.iter().enumerate() {
            loc.rule = Some(rule.name.clone());
            loc.selector = None;
            let rule_index = u16::try_from(ri).map_err(|_| {
                loc.limit(
                    "u16 rule index",
                    u64::from(u16::MAX),
                    "too many rules in one policy",
                )
            })?;
            for (si, sel) in rule.selectors.iter().enumerate() {
                loc.selector = Some(si);
                let selector_index = u16::try_from(si).map_err(|_| {
                    loc.limit(
                        "u16 selector index",
                        u64::from(u16::MAX),
                        "too many selectors in one rule",
                    )
                })?;
                b.selector(
                    &loc,
                    policy_id,
                    rule_index,
                    selector_index,
                    &rule.name,
                    rule.hook,
                    spec.mode,
                    sel,
                )?;
            }
        }
    }
    Ok(b.finish())
}

struct Builder<'a> {
    ns: &'a mut NamespaceIds,
    rs: RuleSet,
    proc_index: HashMap<ProcCondition, u8>,
    dest_index: HashMap<DestCondition, u8>,
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

    #[allow(clippy::too_many_arguments)]
    fn selector(
        &mut self,
        loc: &Loc,
        policy_id: u32,
        rule_index: u16,
        selector_index: u16,
        rule_name: &str,
        hook: Hook,
        mode: Mode,
        sel: &Selector,
    ) -> Result<(), CompileError> {
        let index = self.rs.selectors.len();
        if index >= dc::MAX_SELECTORS {
            return Err(loc.limit(
                "MAX_SELECTORS",
                dc::MAX_SELECTORS as u64,
                format!(
                    "the policies need more than {} selectors in total; merge selectors that differ \
                     only in values, or load fewer policies",
                    dc::MAX_SELECTORS
                ),
            ));
        }
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
            let cond =
                self.namespace_condition(loc, m.operator == SetOperator::NotIn, &m.values)?;
            proc_required |= self.add_proc(loc, cond)?;
        }
        if let Some(own) = &loc.namespace {
            if own.is_empty() {
                return Err(loc.invalid(
                    "a TracingPolicyNamespaced needs a non-empty metadata.namespace: it applies \
                     only to workloads in that namespace",
                ));
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
        *hook_mask |= 1u64 << index;
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
        loc: &Loc,
        negated: bool,
        values: &[String],
    ) -> Result<ProcCondition, CompileError> {
        let mut names: Vec<String> = Vec::with_capacity(values.len());
        for v in values {
            if v.is_empty() {
                return Err(loc.invalid(
                    "matchNamespaces has an empty namespace name; host processes are in no \
                     namespace: to exclude them use `operator: In` with the namespaces you mean",
                ));
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
    fn add_proc(&mut self, loc: &Loc, cond: ProcCondition) -> Result<u64, CompileError> {
        if let Some(&i) = self.proc_index.get(&cond) {
            return Ok(1u64 << i);
        }
        let i = self.rs.proc.len();
        if i >= dc::MAX_PROC_CONDITIONS {
            return Err(loc.limit(
                "MAX_PROC_CONDITIONS",
                dc::MAX_PROC_CONDITIONS as u64,
                format!(
                    "the policies need more than {} distinct process conditions (matchBinaries, \
                     matchArgs and matchNamespaces entries, plus one per namespaced policy's \
                     namespace; identical entries are shared); merge values of entries with the \
                     same operator into one entry, or load fewer policies",
                    dc::MAX_PROC_CONDITIONS
                ),
            ));
        }
        let bit = 1u64 << i;
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
                let n = self
                    .bin_exact
                    .len()
                    .max(self.bin_prefix.len())
                    .max(self.bin_postfix.len());
                check_map(
                    loc,
                    "MAX_BINARY_VALUES",
                    dc::MAX_BINARY_VALUES,
                    n,
                    "binary paths",
                )?;
            }
            ProcCondition::Arg { index, matcher } => {
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
                let n = self
                    .arg_exact
                    .len()
                    .max(self.arg_prefix.len())
                    .max(self.arg_postfix.len());
                check_map(
                    loc,
                    "MAX_ARG_VALUES",
                    dc::MAX_ARG_VALUES,
                    n,
                    "argument values",
                )?;
            }
            ProcCondition::Namespace { ids, .. } => {
                for &id in ids {
                    *self.namespaces.entry(id).or_default() |= bit;
                }
                check_map(
                    loc,
                    "MAX_NAMESPACES",
                    dc::MAX_NAMESPACES,
                    self.namespaces.len(),
                    "namespaces",
                )?;
            }
        }
        self.proc_index.insert(cond.clone(), i as u8);
        self.rs.proc.push(cond);
        Ok(bit)
    }

    fn add_dest(&mut self, loc: &Loc, cond: DestCondition) -> Result<u64, CompileError> {
        if let Some(&i) = self.dest_index.get(&cond) {
            return Ok(1u64 << i);
        }
        let i = self.rs.dest.len();
        if i >= dc::MAX_DEST_CONDITIONS {
            return Err(loc.limit(
                "MAX_DEST_CONDITIONS",
                dc::MAX_DEST_CONDITIONS as u64,
                format!(
                    "the policies need more than {} distinct matchDestinations entries (identical \
                     entries are shared); merge CIDRs and ports of entries with the same operator \
                     and protocol, or load fewer policies",
                    dc::MAX_DEST_CONDITIONS
                ),
            ));
        }
        let bit = 1u64 << i;
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
        for &(lo, hi) in &cond.ports {
            for (start, bits) in port_blocks(lo, hi) {
                self.ports
                    .insert(start.to_be_bytes().to_vec(), u32::from(bits), bit);
            }
        }
        check_map(
            loc,
            "MAX_CIDRS",
            dc::MAX_CIDRS,
            self.v4.len().max(self.v6.len()),
            "CIDRs of one address family",
        )?;
        check_map(
            loc,
            "MAX_PORT_PREFIXES",
            dc::MAX_PORT_PREFIXES,
            self.ports.len(),
            "port prefix blocks",
        )?;
        self.dest_index.insert(cond.clone(), i as u8);
        self.rs.dest.push(cond);
        Ok(bit)
    }

    fn finish(self) -> RuleSet {
        let mut rs = self.rs;
        let c = Compiled {
            bin_exact: self.bin_exact.into_iter().collect(),
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

fn check_map(
    loc: &Loc,
    limit: &'static str,
    max: u32,
    n: usize,
    what: &str,
) -> Result<(), CompileError> {
    if n > max as usize {
        return Err(loc.limit(
            limit,
            u64::from(max),
            format!(
                "the policies need {n} distinct {what} in one matcher map, more than the kernel map \
                 holds; remove or merge values (a shorter Prefix or a CIDR covering several)"
            ),
        ));
    }
    Ok(())
}

/// Refuses fields and actions the hook cannot honour.
fn check_hook(loc: &Loc, hook: Hook, sel: &Selector) -> Result<(), CompileError> {
    if hook == Hook::Exec && !sel.match_destinations.is_empty() {
        return Err(loc.invalid(
            "matchDestinations needs `hook: connect` or `hook: egress`; an exec has no destination",
        ));
    }
    if hook != Hook::Egress && sel.match_encryption.is_some() {
        return Err(loc.invalid(
            "matchEncryption needs `hook: egress`: only the first payload shows whether a \
             connection is TLS",
        ));
    }
    for a in &sel.match_actions {
        match (a.action, hook) {
            (Action::Sigkill, Hook::Connect | Hook::Egress) => {
                return Err(loc.invalid(
                    "action Sigkill is only available on `hook: exec`; on connect and egress use \
                     Block",
                ))
            }
            (Action::Block, Hook::Exec) => return Err(loc.invalid(
                "action Block is only available on `hook: connect` and `hook: egress`; on exec \
                     use Sigkill",
            )),
            _ => {}
        }
    }
    Ok(())
}

fn arg_index(loc: &Loc, m: &ArgSelector) -> Result<Option<u8>, CompileError> {
    match m.index {
        None => Ok(None),
        Some(i) if (i as usize) < dc::MAX_ARGS => Ok(Some(i as u8)),
        Some(i) => Err(loc.limit(
            "MAX_ARGS",
            dc::MAX_ARGS as u64,
            format!(
                "matchArgs index {i} is past the arguments the kernel examines (argv[0] to argv[{}])",
                dc::MAX_ARGS - 1
            ),
        )),
    }
}

fn string_condition(
    loc: &Loc,
    target: Target,
    op: Operator,
    values: &[String],
) -> Result<ProcCondition, CompileError> {
    let (kind, negated) = match op {
        Operator::In | Operator::Equal => (MatchKind::Exact, false),
        Operator::NotIn => (MatchKind::Exact, true),
        Operator::Prefix => (MatchKind::Prefix, false),
        Operator::NotPrefix => (MatchKind::Prefix, true),
        Operator::Postfix => (MatchKind::Postfix, false),
        Operator::NotPostfix => (MatchKind::Postfix, true),
    };
    let (field, limit_name, max) = match (target, kind) {
        (Target::Binary, MatchKind::Exact) => {
            ("matchBinaries", "PATH_EXACT_LEN", dc::PATH_EXACT_LEN)
        }
        (Target::Binary, _) => ("matchBinaries", "PATH_AFFIX_LEN", dc::PATH_AFFIX_LEN),
        (Target::Arg(_), _) => ("matchArgs", "ARG_LEN", dc::ARG_LEN),
    };
    let mut vals: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        if v.as_bytes().contains(&0) {
            return Err(loc.invalid(format!(
                "{field} value {v:?} contains a NUL byte; paths and arguments cannot contain NUL"
            )));
        }
        if v.len() > max {
            return Err(loc.limit(
                limit_name,
                max as u64,
                format!(
                    "{field} value of {} bytes ({:?}...) is longer than the kernel compares; \
                     shorten it (a Prefix or Postfix of it may do)",
                    v.len(),
                    v.chars().take(32).collect::<String>()
                ),
            ));
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

fn dest_condition(loc: &Loc, m: &DestinationSelector) -> Result<DestCondition, CompileError> {
    let mut cidrs = Vec::with_capacity(m.cidrs.len());
    for text in &m.cidrs {
        cidrs.push(parse_cidr(text).map_err(|e| loc.invalid(format!("matchDestinations: {e}")))?);
    }
    cidrs.sort();
    cidrs.dedup();
    let mut ports = Vec::with_capacity(m.ports.len());
    for p in &m.ports {
        ports.push(parse_port(p).map_err(|e| loc.invalid(format!("matchDestinations: {e}")))?);
    }
    ports.sort();
    ports.dedup();
    Ok(DestCondition {
        negated: m.operator == SetOperator::NotIn,
        cidrs,
        ports,
        protocol: m.protocol,
    })
}
