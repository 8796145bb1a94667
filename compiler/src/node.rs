//! The node layout (daemon-common "Groups"): a node's policies compiled into *groups* of at
//! most 64 selectors, so that the kernel evaluates only the group of a process's namespace.
//! Group 0 holds the policies that apply regardless of namespace (the group of host processes
//! and of namespaces without a group); every other group holds those too, plus the policies
//! confined to the namespaces assigned to it (namespaces are packed into a group while it
//! fits). The watch group holds one selector per distinct destination requirement of the
//! egress selectors, without process conditions: it decides which sockets are watched,
//! whoever connects. Each group is a [`RuleSet`] compiled by the one builder, so its limits,
//! reference evaluation and map entries are those of a rule set; this module only partitions
//! and numbers tables.

use crate::builder::Builder;
use crate::capacity::Limit;
use crate::error::{CompileError, ErrorKind, Location};
use crate::identities::{BinaryIdentities, TooManyIdentities};
use crate::ids::NamespaceIds;
use crate::ruleset::RuleSet;
use crate::ExecFacts;
use bulwark_policy::{
    AnyPolicy, Hook, Mode, PolicySpec, Rule, Selector, TracingPolicy, TracingPolicySpec,
};
use daemon_common::{self as dc, MapEntries, SlotEntries};
use std::collections::{BTreeMap, BTreeSet};

/// One group: the namespaces it serves (none for group 0) and its compiled rule set.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub namespaces: Vec<String>,
    pub rules: RuleSet,
}

/// A node's policies as the kernel holds them in one slot: groups by namespace, and the watch
/// group.
#[derive(Clone, Debug, Default)]
pub struct NodeRuleSet {
    groups: Vec<Group>,
    /// Namespace id -> group (namespaces without an entry are in group 0).
    group_of: BTreeMap<u32, u32>,
    watch: RuleSet,
}

/// A cluster-wide policy whose `In` matchNamespaces name more namespaces than this is placed
/// with the namespace-independent ones (its namespace condition still applies): copying it
/// into a group per namespace would cost more room than it saves.
pub const MAX_CONFINED_NAMESPACES: usize = 4;

/// The namespaces every selector of `policy` is confined to (by its own namespace, or an `In`
/// matchNamespaces entry naming at most [`MAX_CONFINED_NAMESPACES`]); `None` when some
/// selector applies regardless of namespace (or to many).
fn confined_to(policy: &AnyPolicy) -> Option<BTreeSet<String>> {
    if let Some(ns) = policy.scope_namespace() {
        return Some(BTreeSet::from([ns.to_owned()]));
    }
    let mut out = BTreeSet::new();
    for rule in &policy.spec().rules {
        for sel in &rule.selectors {
            // Every `In` entry must hold, so any one of them bounds the selector.
            let bound = sel
                .match_namespaces
                .iter()
                .find(|m| !m.operator.is_negated())?;
            out.extend(bound.values.iter().cloned());
        }
    }
    (out.len() <= MAX_CONFINED_NAMESPACES).then_some(out)
}

/// The policies (by index) that apply regardless of namespace, and those confined to each
/// namespace (a policy confined to several is under each).
pub(crate) fn partition<'p>(
    policies: impl Iterator<Item = &'p AnyPolicy>,
) -> (BTreeSet<usize>, BTreeMap<String, BTreeSet<usize>>) {
    let mut shared = BTreeSet::new();
    let mut by_namespace: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (i, p) in policies.enumerate() {
        match confined_to(p) {
            None => {
                shared.insert(i);
            }
            Some(names) => {
                for n in names {
                    by_namespace.entry(n).or_default().insert(i);
                }
            }
        }
    }
    (shared, by_namespace)
}

/// Compiles `policies` (by index into `all`, in order) as one group.
fn compile_group(
    all: &[AnyPolicy],
    members: &BTreeSet<usize>,
    ns: &mut NamespaceIds,
) -> Result<RuleSet, CompileError> {
    let mut b = Builder::new(ns);
    for (pid, &i) in members.iter().enumerate() {
        b.policy(pid, &all[i], &mut |_, _, _| {})?;
    }
    Ok(b.finish())
}

/// The watch group's policies: one per distinct (`matchDestinations`, `matchActions`, mode) of
/// an egress selector, without process conditions, named after the first policy and rule that
/// has it (the backstop's events name them).
fn watch_policies(policies: &[AnyPolicy]) -> Vec<AnyPolicy> {
    let mut seen: Vec<(Selector, Mode)> = Vec::new();
    let mut out = Vec::new();
    for p in policies {
        let mode = p.spec().mode;
        for rule in p.spec().rules.iter().filter(|r| r.hook == Hook::Egress) {
            for sel in &rule.selectors {
                let watch = Selector {
                    match_destinations: sel.match_destinations.clone(),
                    match_actions: sel.match_actions.clone(),
                    ..Selector::default()
                };
                if seen.iter().any(|(s, m)| *s == watch && *m == mode) {
                    continue;
                }
                seen.push((watch.clone(), mode));
                let spec = PolicySpec {
                    mode,
                    rules: vec![Rule {
                        name: rule.name.clone(),
                        hook: Hook::Egress,
                        selectors: vec![watch],
                    }],
                };
                out.push(AnyPolicy::Cluster(TracingPolicy::new(
                    p.name(),
                    TracingPolicySpec { policy: spec },
                )));
            }
        }
    }
    out
}

/// A group's capacity error restated for the namespace that did not fit.
fn for_namespace(e: CompileError, namespace: &str, shared: usize) -> CompileError {
    match e.kind {
        ErrorKind::Capacity { limit, used } => CompileError {
            kind: ErrorKind::GroupCapacity {
                namespace: namespace.to_owned(),
                limit,
                used,
                shared,
            },
            at: e.at,
        },
        _ => e,
    }
}

/// Compiles a node's `policies` (in order) into groups (see the module doc), interning the
/// namespace names they mention in `ns`. Fails like [`crate::compile`] on an invalid policy;
/// on capacity, when the namespace-independent policies do not fit one group, when one
/// namespace's policies with them do not (naming the namespace), or past [`dc::MAX_GROUPS`].
pub fn compile_node(
    policies: &[AnyPolicy],
    ns: &mut NamespaceIds,
) -> Result<NodeRuleSet, CompileError> {
    let (shared, by_namespace) = partition(policies.iter());
    let default = compile_group(policies, &shared, ns)?;
    let shared_selectors = default.selectors().len();
    let mut groups = vec![Group {
        namespaces: Vec::new(),
        rules: default,
    }];
    // The group being filled: its namespaces, policies and last successful compile.
    let mut open: Option<(Vec<String>, BTreeSet<usize>, RuleSet)> = None;
    for (name, members) in by_namespace {
        if let Some((names, set, _)) = &open {
            let mut grown = set.clone();
            grown.extend(&members);
            match compile_group(policies, &grown, ns) {
                Ok(rules) => {
                    let mut names = names.clone();
                    names.push(name);
                    open = Some((names, grown, rules));
                    continue;
                }
                Err(e) if e.kind.is_invalid() => return Err(e),
                Err(_) => {
                    let (namespaces, _, rules) = open.take().expect("checked above");
                    groups.push(Group { namespaces, rules });
                }
            }
        }
        let mut set = shared.clone();
        set.extend(&members);
        let rules = compile_group(policies, &set, ns)
            .map_err(|e| for_namespace(e, &name, shared_selectors))?;
        open = Some((vec![name], set, rules));
    }
    if let Some((namespaces, _, rules)) = open {
        groups.push(Group { namespaces, rules });
    }
    if groups.len() > dc::MAX_GROUPS {
        return Err(Location::default().error(ErrorKind::TooMany {
            what: "selector groups (namespaces with policies of their own, packed 64 selectors \
                   to a group); scope fewer policies to single namespaces, or merge selectors",
            limit: "MAX_GROUPS",
            max: dc::MAX_GROUPS as u64,
        }));
    }
    let watchers = watch_policies(policies);
    let watch = compile_group(&watchers, &(0..watchers.len()).collect(), ns)?;
    let mut group_of = BTreeMap::new();
    for (g, group) in groups.iter().enumerate().skip(1) {
        for name in &group.namespaces {
            group_of.insert(ns.id(name), g as u32);
        }
    }
    let node = NodeRuleSet {
        groups,
        group_of,
        watch,
    };
    node.check_map_totals(policies)?;
    Ok(node)
}

impl NodeRuleSet {
    /// The groups, group 0 (namespace-independent policies only) first.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The watch group's rule set (one egress selector per distinct destination requirement).
    pub fn watch(&self) -> &RuleSet {
        &self.watch
    }

    /// The group of a process in namespace `namespace_id` (0: host): what the kernel finds in
    /// `GROUPS`, group 0 without an entry.
    pub fn group_for(&self, namespace_id: u32) -> u32 {
        self.group_of.get(&namespace_id).copied().unwrap_or(0)
    }

    /// The rule set of table-relative `group` ([`dc::WATCH_GROUP`]: the watch group).
    pub fn group(&self, group: u32) -> Option<&RuleSet> {
        if group as usize == dc::WATCH_GROUP {
            return Some(&self.watch);
        }
        self.groups.get(group as usize).map(|g| &g.rules)
    }

    /// Distinct selectors of the node (each namespace-independent one counted once).
    pub fn selector_count(&self) -> usize {
        let shared = self.groups[0].rules.selectors().len();
        shared
            + self.groups[1..]
                .iter()
                .map(|g| g.rules.selectors().len() - shared)
                .sum::<usize>()
    }

    /// The bits the kernel caches for an exec with these facts: its group's selectors whose
    /// process conditions hold (the group of `facts.namespace_id`).
    pub fn evaluate_exec(&self, facts: &ExecFacts) -> u64 {
        self.groups[self.group_for(facts.namespace_id) as usize]
            .rules
            .evaluate_exec(facts)
    }

    /// Everything to write for this node rule set in `slot`.
    pub fn slot_entries(&self, slot: u8) -> SlotEntries {
        let slot32 = u32::from(slot & 1);
        let mut tables: Vec<(u32, MapEntries)> = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let t = dc::table(slot32, g as u32);
                (t, group.rules.table_entries(t as u8))
            })
            .collect();
        let t = dc::table(slot32, dc::WATCH_GROUP as u32);
        tables.push((t, self.watch.table_entries(t as u8)));
        // The socket guard's early exit: group 0's table says whether any group has some.
        let guarded = self
            .groups
            .iter()
            .any(|g| g.rules.meta.enforce_net | g.rules.meta.monitor_net != 0);
        tables[0].1.slot_meta.slot_guard = u32::from(guarded);
        let groups = self
            .group_of
            .iter()
            .map(|(&namespace_id, &g)| {
                (
                    dc::NamespaceKey {
                        slot: slot32,
                        namespace_id,
                    },
                    g,
                )
            })
            .collect();
        SlotEntries { tables, groups }
    }

    /// The `matchBinaries` paths every group needs resolved to files.
    pub fn binary_paths(&self) -> BTreeSet<String> {
        self.groups
            .iter()
            .flat_map(|g| g.rules.binary_paths())
            .collect()
    }

    /// [`RuleSet::resolve_binaries`] for every group; the groups' identities together must fit
    /// the one `BIN_INODE` map, and those of their `hook: file` `In` paths the one `FILE_INODE`
    /// map (how many files a path names is known only here, not to the lint).
    pub fn resolve_binaries(&mut self, ids: &BinaryIdentities) -> Result<(), TooManyIdentities> {
        let (mut binaries, mut files) = (0, 0);
        for g in &mut self.groups {
            g.rules.resolve_binaries(ids)?;
            binaries += g.rules.compiled.bin_inode.len();
            files += g.rules.files.inode.len();
        }
        if binaries > (dc::MAX_BINARY_IDENTITIES * dc::NODE_MAP_FACTOR) as usize {
            return Err(TooManyIdentities {
                needed: binaries,
                file_paths: false,
            });
        }
        if files > (dc::MAX_FILE_VALUES * dc::NODE_MAP_FACTOR) as usize {
            return Err(TooManyIdentities {
                needed: files,
                file_paths: true,
            });
        }
        Ok(())
    }

    /// The `SYSCALL_SELECTORS` entries of a slot (each group's distinct calls; the watch group
    /// has no syscall selectors) and, past [`dc::MAX_SYSCALL_KEYS`], the selector that passes
    /// it: taking the selectors in input order (`policies`, then rule and selector), each adds
    /// the (group, call) entries no earlier one made.
    fn syscall_keys(&self, policies: &[AnyPolicy]) -> (usize, Option<Location>) {
        let position = |i: &crate::SelectorInfo| {
            let at = policies.iter().position(|p| {
                p.name() == i.policy_name && p.scope_namespace() == i.policy_namespace.as_deref()
            });
            (at.unwrap_or(usize::MAX), i.rule_index, i.selector_index)
        };
        let mut named: Vec<_> = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| {
                group.rules.syscall_selectors().iter().filter_map(move |s| {
                    let info = group.rules.selector_info(s.index)?;
                    Some((g, &s.calls, info))
                })
            })
            .collect();
        named.sort_by_key(|(_, _, info)| position(info));
        let mut entries = BTreeSet::new();
        let mut past = None;
        for (g, calls, info) in named {
            entries.extend(calls.iter().map(|c| (g, *c)));
            if past.is_none() && entries.len() as u64 > u64::from(dc::MAX_SYSCALL_KEYS) {
                past = Some(Location {
                    policy: info.policy_name,
                    namespace: info.policy_namespace,
                    rule: Some(info.rule_name),
                    selector: Some(usize::from(info.selector_index)),
                });
            }
        }
        (entries.len(), past)
    }

    /// Every group's matcher entries together fit the kernel maps (`NODE_MAP_FACTOR` times a
    /// group's `MAX_*` entries per slot; the file hook's path maps too), and their syscall entries `SYSCALL_SELECTORS`
    /// (`MAX_SYSCALL_KEYS` per slot, reported at the selector of `policies` that passes it).
    fn check_map_totals(&self, policies: &[AnyPolicy]) -> Result<(), CompileError> {
        let all = self.slot_entries(0);
        let total = |f: &dyn Fn(&MapEntries) -> usize| -> usize {
            all.tables.iter().map(|(_, e)| f(e)).sum()
        };
        let checks: [(Limit, usize); 6] = [
            (
                Limit::BinaryValues,
                total(&|e| {
                    e.bin_exact
                        .len()
                        .max(e.bin_prefix.len())
                        .max(e.bin_postfix.len())
                }),
            ),
            (
                Limit::ArgValues,
                total(&|e| {
                    e.arg_exact
                        .len()
                        .max(e.arg_prefix.len())
                        .max(e.arg_postfix.len())
                }),
            ),
            (Limit::Namespaces, total(&|e| e.namespaces.len())),
            (
                Limit::Cidrs,
                total(&|e| e.dest_v4.len().max(e.dest_v6.len())),
            ),
            (Limit::PortPrefixes, total(&|e| e.ports.len())),
            (
                Limit::FileValues,
                total(&|e| {
                    e.file
                        .exact
                        .len()
                        .max(e.file.prefix.len())
                        .max(e.file.postfix.len())
                }),
            ),
        ];
        for (limit, used) in checks {
            if used as u64 > limit.max() * u64::from(dc::NODE_MAP_FACTOR) {
                return Err(Location {
                    policy: "(all groups)".into(),
                    ..Location::default()
                }
                .error(ErrorKind::NodeCapacity { limit, used }));
            }
        }
        let (keys, past) = self.syscall_keys(policies);
        if let Some(at) = past {
            return Err(at.error(ErrorKind::SyscallKeys { used: keys }));
        }
        if self.group_of.len() as u64 > u64::from(dc::MAX_GROUPED_NAMESPACES) {
            return Err(Location::default().error(ErrorKind::TooMany {
                what: "namespaces with policies of their own",
                limit: "MAX_GROUPED_NAMESPACES",
                max: u64::from(dc::MAX_GROUPED_NAMESPACES),
            }));
        }
        Ok(())
    }
}
