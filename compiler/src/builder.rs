//! The [`Builder`]: lays policies out as one rule set — numbering selectors, giving each
//! distinct condition its bit, turning values into exact keys and LPM prefixes — and counts
//! what that uses of every kernel [`Limit`] (values come parsed from the policy crate,
//! [`bulwark_policy::values`]).

use crate::capacity::{Limit, Usage};
use crate::conditions::{DestCondition, ProcCondition, StringMatch};
use crate::error::{CompileError, ErrorKind, Location};
use crate::ids::NamespaceIds;
use crate::lpm::LpmBuilder;
use crate::ruleset::{Compiled, PolicyInfo, RuleSet, SelectorInfo};
use bulwark_policy::values::{Cidr, ValueLimit};
use bulwark_policy::{
    Action, AnyPolicy, ArgSelector, DestinationSelector, Encryption, ExecKind, Hook, MatchKind,
    Mode, Operator, Protocol, Selector,
};
use daemon_common as dc;
use std::collections::{BTreeMap, HashMap};

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
    /// The architecture whose call numbers `hook: syscall` selectors are compiled to.
    syscall_arch: bulwark_policy::syscalls::Arch,
}

/// The mask of bit `i`; none past 63 (only while counting past the limits).
pub(crate) fn bit(i: usize) -> u64 {
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
    pub(crate) fn new(ns: &'a mut NamespaceIds) -> Self {
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
            syscall_arch: crate::syscall::target_arch(),
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
                Limit::FilePathConds => self.rs.files.conditions.len(),
                Limit::FileValues => self.rs.files.values(),
            };
        }
        u
    }

    /// Refuses when `limit` is already full (before adding one more of it).
    fn ensure_room(&self, loc: &Location, limit: Limit) -> Result<(), CompileError> {
        if self.enforce_limits {
            limit.check(loc, self.usage().of(limit) + 1)?;
        }
        Ok(())
    }

    /// Refuses when `limit` is over (after adding).
    fn ensure_within(&self, loc: &Location, limit: Limit) -> Result<(), CompileError> {
        if self.enforce_limits {
            limit.check(loc, self.usage().of(limit))?;
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
            Hook::Exec => (dc::HOOK_EXEC, Some(&mut self.rs.meta.hook_exec)),
            Hook::Connect => (dc::HOOK_CONNECT, Some(&mut self.rs.meta.hook_connect)),
            Hook::Egress => (dc::HOOK_EGRESS, Some(&mut self.rs.meta.hook_egress)),
            Hook::Ingress => (dc::HOOK_INGRESS, Some(&mut self.rs.meta.hook_ingress)),
            Hook::Syscall => (dc::HOOK_SYSCALL, None),
            Hook::File => (dc::HOOK_FILE, None),
        };
        if let Some(mask) = hook_mask {
            *mask |= bit(index);
        }
        if hook == Hook::Syscall && index < dc::MAX_SELECTORS {
            let compiled =
                crate::syscall::compile_selector(loc, index as u8, sel, self.syscall_arch)?;
            self.rs.syscalls.push(compiled);
        }
        if hook == Hook::File {
            // Past 64 selectors only while counting: its path conditions still count.
            self.rs
                .files
                .add_selector(loc, index, sel, self.syscall_arch, self.enforce_limits)?;
        }
        // The socket guard covers processes of Block selectors on the outbound network hooks;
        // an ingress Block judges what a server receives, not the sockets it may create.
        if matches!(hook, Hook::Connect | Hook::Egress) && action_bits & dc::ACTION_BLOCK != 0 {
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

    pub(crate) fn finish(self) -> RuleSet {
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
    if !hook.classifies_payload() && sel.match_encryption.is_some() {
        return Err(loc.error(ErrorKind::EncryptionOffEgress));
    }
    let syscall_fields = !sel.match_syscalls.is_empty()
        || !sel.match_syscall_args.is_empty()
        || !sel.match_return.is_empty();
    if hook != Hook::Syscall && syscall_fields {
        return Err(loc.error(ErrorKind::SyscallFieldsOffSyscall));
    }
    if hook != Hook::File && (!sel.match_paths.is_empty() || !sel.match_access.is_empty()) {
        return Err(loc.error(ErrorKind::FileFieldsOffFile));
    }
    for a in &sel.match_actions {
        match (a.action, hook) {
            (Action::Sigkill, Hook::Connect | Hook::Egress | Hook::Ingress) => {
                return Err(loc.error(ErrorKind::SigkillOffExec))
            }
            (Action::Block, Hook::Exec | Hook::Syscall | Hook::File) => {
                return Err(loc.error(ErrorKind::BlockOnExec))
            }
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
