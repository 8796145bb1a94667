//! Kernel capacity: the limits of one rule-set slot ([`Limit`], from `daemon-common`), what a
//! set uses of each ([`Usage`], counted by the compiler's builder as it shares identical
//! conditions and map keys), and the lint's capacity check ([`capacity`], BW092), which lays the
//! set out with that same builder. `compile` refuses a set past a limit; `capacity` reports
//! every limit passed, at the selector that passes it, with the set's total need. One counter,
//! so the two cannot disagree. The node-wide limits (groups, matcher map totals,
//! `MAX_SYSCALL_KEYS`) are checked by compiling the node, and reported from its error.

use crate::builder::Builder;
use crate::error::{CompileError, ErrorKind, Location};
use crate::ids::NamespaceIds;
use crate::node::{compile_node, partition};
use bulwark_policy::diagnostics::codes;
use bulwark_policy::{AnyPolicy, Diagnostic};
use daemon_common as dc;
use std::collections::BTreeSet;

/// A per-slot kernel limit that a whole rule set shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Selectors (one bit each in every selector mask).
    Selectors,
    /// Distinct process conditions (one bit each).
    ProcConditions,
    /// Distinct destination conditions (one bit each).
    DestConditions,
    /// Entries of the largest binary matcher map (exact, prefix or postfix).
    BinaryValues,
    /// Entries of the largest argument matcher map.
    ArgValues,
    /// Namespace entries.
    Namespaces,
    /// Entries of the larger CIDR map (v4 or v6).
    Cidrs,
    /// Port prefix blocks.
    PortPrefixes,
    /// Distinct `matchPaths` entries of `hook: file` selectors (one path condition bit each).
    FilePathConds,
    /// Entries of the largest `hook: file` path map (exact, prefix or postfix).
    FileValues,
}

impl Limit {
    /// Every limit, in the order checks report them.
    pub const ALL: [Limit; 10] = [
        Limit::Selectors,
        Limit::ProcConditions,
        Limit::DestConditions,
        Limit::BinaryValues,
        Limit::ArgValues,
        Limit::Namespaces,
        Limit::Cidrs,
        Limit::PortPrefixes,
        Limit::FilePathConds,
        Limit::FileValues,
    ];

    /// The constant in `daemon-common`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Selectors => "MAX_SELECTORS",
            Limit::ProcConditions => "MAX_PROC_CONDITIONS",
            Limit::DestConditions => "MAX_DEST_CONDITIONS",
            Limit::BinaryValues => "MAX_BINARY_VALUES",
            Limit::ArgValues => "MAX_ARG_VALUES",
            Limit::Namespaces => "MAX_NAMESPACES",
            Limit::Cidrs => "MAX_CIDRS",
            Limit::PortPrefixes => "MAX_PORT_PREFIXES",
            Limit::FilePathConds => "MAX_FILE_PATH_CONDS",
            Limit::FileValues => "MAX_FILE_VALUES",
        }
    }

    /// Its value.
    pub fn max(self) -> u64 {
        match self {
            Limit::Selectors => dc::MAX_SELECTORS as u64,
            Limit::ProcConditions => dc::MAX_PROC_CONDITIONS as u64,
            Limit::DestConditions => dc::MAX_DEST_CONDITIONS as u64,
            Limit::BinaryValues => u64::from(dc::MAX_BINARY_VALUES),
            Limit::ArgValues => u64::from(dc::MAX_ARG_VALUES),
            Limit::Namespaces => u64::from(dc::MAX_NAMESPACES),
            Limit::Cidrs => u64::from(dc::MAX_CIDRS),
            Limit::PortPrefixes => u64::from(dc::MAX_PORT_PREFIXES),
            Limit::FilePathConds => dc::MAX_FILE_PATH_CONDS as u64,
            Limit::FileValues => u64::from(dc::MAX_FILE_VALUES),
        }
    }

    /// What is counted, as the lint's capacity message says it.
    pub(crate) fn counted(self) -> &'static str {
        match self {
            Limit::Selectors => "selectors",
            Limit::ProcConditions => "distinct process conditions (matchBinaries/matchArgs/matchNamespaces entries, plus one per namespace of a TracingPolicyNamespaced; identical entries are shared)",
            Limit::DestConditions => "distinct destination conditions (matchDestinations entries; identical entries are shared)",
            Limit::BinaryValues => "distinct binary path values in one matcher map",
            Limit::ArgValues => "distinct argument values in one matcher map",
            Limit::Namespaces => "distinct namespace names",
            Limit::Cidrs => "distinct CIDRs of one address family",
            Limit::PortPrefixes => "distinct port prefix blocks",
            Limit::FilePathConds => "distinct matchPaths entries (`hook: file`; identical entries are shared)",
            Limit::FileValues => "distinct matchPaths values of one kind (exact, prefix or postfix) in one path map",
        }
    }

    /// Why `compile` refuses a set that needs `used` (so far) of this limit, and what to do.
    pub(crate) fn refusal(self, used: usize) -> String {
        let max = self.max();
        let in_map = |what: &str| {
            format!(
                "the policies need {used} distinct {what} in one matcher map, more than the kernel \
                 map holds; remove or merge values (a shorter Prefix or a CIDR covering several)"
            )
        };
        match self {
            Limit::Selectors => format!(
                "the policies need more than {max} selectors in total; merge selectors that differ \
                 only in values, or load fewer policies"
            ),
            Limit::ProcConditions => format!(
                "the policies need more than {max} distinct process conditions (matchBinaries, \
                 matchArgs and matchNamespaces entries, plus one per namespaced policy's \
                 namespace; identical entries are shared); merge values of entries with the \
                 same operator into one entry, or load fewer policies"
            ),
            Limit::DestConditions => format!(
                "the policies need more than {max} distinct matchDestinations entries (identical \
                 entries are shared); merge CIDRs and ports of entries with the same operator \
                 and protocol, or load fewer policies"
            ),
            Limit::BinaryValues => in_map("binary paths"),
            Limit::ArgValues => in_map("argument values"),
            Limit::Namespaces => in_map("namespaces"),
            Limit::Cidrs => in_map("CIDRs of one address family"),
            Limit::PortPrefixes => in_map("port prefix blocks"),
            Limit::FilePathConds => format!(
                "the policies need more than {max} distinct matchPaths entries of `hook: file` \
                 selectors (identical entries are shared); merge values of entries with the \
                 same operator into one entry, or load fewer file policies"
            ),
            Limit::FileValues => format!(
                "the policies need {used} distinct matchPaths values of one kind (exact, prefix \
                 or postfix) in one path map, more than the kernel map holds; remove or merge \
                 values (a shorter Prefix covering several)"
            ),
        }
    }

    /// Refuses a set that needs `used` of this limit when that is more than a slot holds.
    pub(crate) fn check(self, loc: &Location, used: usize) -> Result<(), CompileError> {
        if used as u64 > self.max() {
            return Err(loc.error(ErrorKind::Capacity { limit: self, used }));
        }
        Ok(())
    }
}

/// How much of each [`Limit`] a rule set uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage(pub(crate) [usize; Limit::ALL.len()]);

impl Usage {
    pub(crate) fn of(&self, limit: Limit) -> usize {
        self.0[limit as usize]
    }
}

/// The kernel-capacity check of the lint (BW092), a `bulwark_policy::load::SetCheck`: lays
/// `policies` out in selector groups exactly as `compile_node` does (`crate::node`) and reports
/// each limit a group passes, once, at the selector that passes it (path
/// `spec.rules[r].selectors[s]`, with the index of its policy), saying how much the group needs:
/// the namespace-independent policies' group first (the limit is then passed in every group),
/// then each namespace's (naming the namespace). Past the limits of the node as a whole
/// (groups, matcher maps) it reports at the last policy; past `MAX_SYSCALL_KEYS` at the
/// selector whose calls pass it. Meant for policies that passed
/// validation: a selector the compiler refuses as invalid ends the count of its policy there
/// (validation reports why).
pub fn capacity(policies: &[&AnyPolicy]) -> Vec<(usize, Diagnostic)> {
    let (shared, by_namespace) = partition(policies.iter().copied());
    let mut out = Vec::new();
    let shared_over = count_group(policies, &shared, None, &[], &mut out);
    let shared_selectors = {
        let mut ids = NamespaceIds::new();
        let mut b = Builder::counting(&mut ids);
        for (pid, &i) in shared.iter().enumerate() {
            let _ = b.policy(pid, policies[i], &mut |_, _, _| {});
        }
        b.usage().of(Limit::Selectors)
    };
    for (name, members) in &by_namespace {
        let mut set = shared.clone();
        set.extend(members);
        count_group(
            policies,
            &set,
            Some((name, shared_selectors)),
            &shared_over,
            &mut out,
        );
    }
    if out.is_empty() && !policies.is_empty() {
        // Each group fits: the node as a whole may still not (groups, maps).
        let owned: Vec<AnyPolicy> = policies.iter().map(|p| (*p).clone()).collect();
        if let Err(e) = compile_node(&owned, &mut NamespaceIds::new()) {
            // Only what no group shows: the node's own limits (other refusals, e.g. a value
            // too long, are validation's to report).
            let node_wide = match &e.kind {
                ErrorKind::NodeCapacity { .. }
                | ErrorKind::Capacity { .. }
                | ErrorKind::GroupCapacity { .. } => true,
                ErrorKind::TooMany { limit, .. } => {
                    matches!(*limit, "MAX_GROUPS" | "MAX_GROUPED_NAMESPACES")
                }
                _ => false,
            };
            if let ErrorKind::SyscallKeys { .. } = e.kind {
                out.push(at_selector(policies, &e.at, e.kind.to_string()));
            } else if node_wide {
                let last = policies.len() - 1;
                let d = Diagnostic::new(codes::CAPACITY, e.kind.to_string()).hint(
                    "scope cluster-wide policies to the namespaces they concern, merge \
                     selectors, or load fewer policies on this node",
                );
                out.push((last, d));
            }
        }
    }
    out
}

/// A BW092 diagnostic at the selector `at` names (by policy name and namespace, rule name and
/// selector index); at the last policy, without a path, when none of `policies` is that one.
fn at_selector(policies: &[&AnyPolicy], at: &Location, message: String) -> (usize, Diagnostic) {
    let d = Diagnostic::new(codes::CAPACITY, message).hint(
        "name the calls with `In`, scope cluster-wide syscall policies to the namespaces they \
         concern, or load fewer syscall policies on this node",
    );
    let policy = policies
        .iter()
        .position(|p| p.name() == at.policy && p.scope_namespace() == at.namespace.as_deref());
    let Some(pi) = policy else {
        return (policies.len().saturating_sub(1), d);
    };
    let rule = policies[pi]
        .spec()
        .rules
        .iter()
        .position(|r| Some(&r.name) == at.rule.as_ref());
    match (rule, at.selector) {
        (Some(ri), Some(si)) => (pi, d.path(format!("spec.rules[{ri}].selectors[{si}]"))),
        _ => (pi, d),
    }
}

/// Counts one group (`members`, indices into `policies`, in order) and reports each limit it
/// passes that is not in `already` (passed by the namespace-independent group); returns the
/// limits passed. `namespace`: the namespace whose group this is, and the number of
/// namespace-independent selectors in it.
fn count_group(
    policies: &[&AnyPolicy],
    members: &BTreeSet<usize>,
    namespace: Option<(&str, usize)>,
    already: &[Limit],
    out: &mut Vec<(usize, Diagnostic)>,
) -> Vec<Limit> {
    let mut ids = NamespaceIds::new();
    let mut builder = Builder::counting(&mut ids);
    // (limit, policy, rule, selector) in the order they were passed.
    let mut passed: Vec<(Limit, usize, usize, usize)> = Vec::new();
    for (pid, &pi) in members.iter().enumerate() {
        let _refused_as_invalid = builder.policy(pid, policies[pi], &mut |usage, ri, si| {
            for limit in Limit::ALL {
                let over = usage.of(limit) as u64 > limit.max();
                if over && !already.contains(&limit) && !passed.iter().any(|p| p.0 == limit) {
                    passed.push((limit, pi, ri, si));
                }
            }
        });
    }
    let total = builder.usage();
    for &(limit, pi, ri, si) in &passed {
        let hint = match (namespace, limit) {
            (Some(_), _) => "move selectors out of this namespace's policies (several values in one entry, several entries in one selector), or scope cluster-wide policies to the namespaces they concern so they stop taking room in every group",
            (None, Limit::Selectors) => "merge selectors and rules that do the same thing (several values in one entry, several entries in one selector), scope policies to the namespaces they concern, or load fewer policies on this node",
            (None, _) => "merge the values of entries with the same operator into one entry, or load fewer policies on this node",
        };
        let whose = match namespace {
            Some((name, shared)) => format!(
                "namespace `{name}` needs {} {} in its selector group (which also holds the {shared} selectors that apply regardless of namespace)",
                total.of(limit),
                limit.counted()
            ),
            None => format!(
                "the loaded policies need {} {} that apply regardless of namespace (they take room in every selector group)",
                total.of(limit),
                limit.counted()
            ),
        };
        let message = format!(
            "{whose}; the kernel maps hold at most {} per selector group ({}); this selector of policy `{}` passes the limit",
            limit.max(),
            limit.name(),
            policies[pi].name()
        );
        let d = Diagnostic::new(codes::CAPACITY, message)
            .path(format!("spec.rules[{ri}].selectors[{si}]"))
            .hint(hint);
        out.push((pi, d));
    }
    passed.into_iter().map(|p| p.0).collect()
}
