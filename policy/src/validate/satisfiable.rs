//! Satisfiability of selectors, by set reasoning over the parsed values: which selectors can
//! never match (conditions that contradict each other) and which an earlier selector of the
//! same rule shadows (it matches everything the later one does).

use crate::model::*;
use crate::values::{Cidr, DestinationSet, PortRange};
use std::collections::HashSet;

use super::op_name;

/// An operator as (kind, negated).
fn kind_of(op: Operator) -> (MatchKind, bool) {
    (op.kind(), op.is_negated())
}

/// A value list indexed for the questions the checks ask (is a string one of the values, does
/// one of them start or end it): one hash lookup per distinct value length, so comparing two
/// lists costs their total size, not the product of their sizes.
struct Values<'a> {
    set: HashSet<&'a str>,
    /// Distinct value lengths, ascending.
    lens: Vec<usize>,
}

impl<'a> Values<'a> {
    fn new(values: &'a [String]) -> Self {
        let set: HashSet<&str> = values.iter().map(String::as_str).collect();
        let mut lens: Vec<usize> = set.iter().map(|v| v.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        Values { set, lens }
    }

    /// Some value is a prefix of `s`.
    fn starts(&self, s: &str) -> bool {
        self.lens
            .iter()
            .take_while(|&&l| l <= s.len())
            .any(|&l| s.is_char_boundary(l) && self.set.contains(&s[..l]))
    }

    /// Some value is a suffix of `s`.
    fn ends(&self, s: &str) -> bool {
        self.lens.iter().take_while(|&&l| l <= s.len()).any(|&l| {
            let at = s.len() - l;
            s.is_char_boundary(at) && self.set.contains(&s[at..])
        })
    }

    /// `s` matches the positive form of (kind, these values).
    fn hit(&self, kind: MatchKind, s: &str) -> bool {
        match kind {
            MatchKind::Exact => self.set.contains(s),
            MatchKind::Prefix => self.starts(s),
            MatchKind::Postfix => self.ends(s),
        }
    }
}

/// Every string matching the positive form of `a` also matches the positive form of `b`.
fn positive_covered(a: (MatchKind, &[String]), b: (MatchKind, &[String])) -> bool {
    let bv = Values::new(b.1);
    match (a.0, b.0) {
        (MatchKind::Exact, _) => a.1.iter().all(|s| bv.hit(b.0, s)),
        (MatchKind::Prefix, MatchKind::Prefix) => a.1.iter().all(|s| bv.starts(s)),
        (MatchKind::Postfix, MatchKind::Postfix) => a.1.iter().all(|s| bv.ends(s)),
        _ => false,
    }
}

/// No string matches the positive forms of both `a` and `b`.
fn positive_disjoint(a: (MatchKind, &[String]), b: (MatchKind, &[String])) -> bool {
    match (a.0, b.0) {
        (MatchKind::Exact, _) => {
            let bv = Values::new(b.1);
            !a.1.iter().any(|s| bv.hit(b.0, s))
        }
        (_, MatchKind::Exact) => {
            let av = Values::new(a.1);
            !b.1.iter().any(|s| av.hit(a.0, s))
        }
        // Two prefixes share a string exactly when one starts the other.
        (MatchKind::Prefix, MatchKind::Prefix) => {
            let (av, bv) = (Values::new(a.1), Values::new(b.1));
            !a.1.iter().any(|x| bv.starts(x)) && !b.1.iter().any(|y| av.starts(y))
        }
        (MatchKind::Postfix, MatchKind::Postfix) => {
            let (av, bv) = (Values::new(a.1), Values::new(b.1));
            !a.1.iter().any(|x| bv.ends(x)) && !b.1.iter().any(|y| av.ends(y))
        }
        _ => false,
    }
}

/// Conditions on one string (ANDed). Returns the index of the entry that makes them
/// unsatisfiable, and why. `forall_negated`: negated entries constrain every argument while
/// positive ones need only some argument (matchArgs without index).
fn string_conflict(
    entries: &[(usize, Operator, &[String])],
    any_index: bool,
) -> Option<(usize, String)> {
    for (j, &(ej, opj, vj)) in entries.iter().enumerate() {
        let (kj, nj) = kind_of(opj);
        for &(_, opi, vi) in &entries[..j] {
            let (ki, ni) = kind_of(opi);
            let conflict = match (ni, nj) {
                // two positive conditions on the same string must overlap
                (false, false) => !any_index && positive_disjoint((ki, vi), (kj, vj)),
                // positive P and negated N: every P string is excluded by N
                (false, true) => positive_covered((ki, vi), (kj, vj)),
                (true, false) => positive_covered((kj, vj), (ki, vi)),
                (true, true) => false,
            };
            if conflict {
                return Some((
                    ej,
                    format!(
                        "`{} {}` contradicts the earlier `{} {}`",
                        op_name(opj),
                        show(vj),
                        op_name(opi),
                        show(vi)
                    ),
                ));
            }
        }
    }
    None
}

fn show(values: &[String]) -> String {
    let mut s = values
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > 3 {
        s.push_str(", ...");
    }
    format!("[{s}]")
}

/// CIDRs indexed for "does one of them cover / overlap this one": a hash set probed at each
/// shorter prefix, and the networks sorted so a range search finds one inside.
struct Cidrs {
    set: HashSet<Cidr>,
    sorted: Vec<Cidr>,
}

impl Cidrs {
    fn new(cidrs: &[Cidr]) -> Self {
        let mut sorted = cidrs.to_vec();
        sorted.sort_unstable();
        Cidrs {
            set: cidrs.iter().copied().collect(),
            sorted,
        }
    }

    /// One of them covers `c`.
    fn cover(&self, c: &Cidr) -> bool {
        let len = match *c {
            Cidr::V4 { len, .. } | Cidr::V6 { len, .. } => len,
        };
        (0..=len).any(|l| self.set.contains(&c.truncated(l)))
    }

    /// One of them shares an address with `c`: it covers `c`, or it starts inside `c` (then,
    /// prefixes being aligned, it lies inside `c`).
    fn overlap(&self, c: &Cidr) -> bool {
        let (lo, hi) = c.bounds();
        let i = self.sorted.partition_point(|d| *d < lo);
        self.cover(c) || self.sorted.get(i).is_some_and(|d| *d <= hi)
    }
}

/// Port ranges indexed for "does one of them cover / overlap this one": sorted by low end,
/// with the highest high end so far.
struct Ports {
    lo: Vec<u16>,
    max_hi: Vec<u16>,
}

impl Ports {
    fn new(ports: &[PortRange]) -> Self {
        let mut sorted = ports.to_vec();
        sorted.sort_unstable_by_key(|p| p.lo());
        let mut max_hi = Vec::with_capacity(sorted.len());
        let mut m = 0;
        for p in &sorted {
            m = m.max(p.hi());
            max_hi.push(m);
        }
        Ports {
            lo: sorted.iter().map(|p| p.lo()).collect(),
            max_hi,
        }
    }

    /// The highest high end of the ranges starting at or below `port`.
    fn reach(&self, port: u16) -> Option<u16> {
        let n = self.lo.partition_point(|&lo| lo <= port);
        n.checked_sub(1).map(|i| self.max_hi[i])
    }

    fn cover(&self, p: PortRange) -> bool {
        self.reach(p.lo()).is_some_and(|hi| hi >= p.hi())
    }

    fn overlap(&self, p: PortRange) -> bool {
        self.reach(p.hi()).is_some_and(|hi| hi >= p.lo())
    }
}

/// Every destination in `a` is in `b` (empty lists and no protocol mean any).
fn dest_covered(a: &DestinationSet, b: &DestinationSet) -> bool {
    let cidrs = b.cidrs.is_empty()
        || (!a.cidrs.is_empty() && {
            let bc = Cidrs::new(&b.cidrs);
            a.cidrs.iter().all(|c| bc.cover(c))
        });
    let ports = b.ports.is_empty()
        || (!a.ports.is_empty() && {
            let bp = Ports::new(&b.ports);
            a.ports.iter().all(|&p| bp.cover(p))
        });
    let proto = b.protocol.is_none() || a.protocol == b.protocol;
    cidrs && ports && proto
}

fn dest_disjoint(a: &DestinationSet, b: &DestinationSet) -> bool {
    let cidrs = !a.cidrs.is_empty() && !b.cidrs.is_empty() && {
        let bc = Cidrs::new(&b.cidrs);
        !a.cidrs.iter().any(|c| bc.overlap(c))
    };
    let ports = !a.ports.is_empty() && !b.ports.is_empty() && {
        let bp = Ports::new(&b.ports);
        !a.ports.iter().any(|&p| bp.overlap(p))
    };
    let proto = matches!((a.protocol, b.protocol), (Some(x), Some(y)) if x != y);
    cidrs || ports || proto
}

/// Why a selector can never match: a path suffix inside the selector and a reason.
pub(super) fn never_matches(p: &AnyPolicy, hook: Hook, sel: &Selector) -> Option<(String, String)> {
    if let Some(never) = super::syscall::never_matches(hook, sel) {
        return Some(never);
    }
    if let Some(never) = super::file::never_matches(hook, sel) {
        return Some(never);
    }
    let bins: Vec<_> = sel
        .match_binaries
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.operator, b.values.as_slice()))
        .collect();
    if let Some((i, why)) = string_conflict(&bins, false) {
        return Some((
            format!(".matchBinaries[{i}]"),
            format!("matchBinaries {why}"),
        ));
    }
    let mut indices: Vec<Option<u32>> = sel.match_args.iter().map(|a| a.index).collect();
    indices.sort();
    indices.dedup();
    for ix in indices {
        let args: Vec<_> = sel
            .match_args
            .iter()
            .enumerate()
            .filter(|(_, a)| a.index == ix)
            .map(|(i, a)| (i, a.operator, a.values.as_slice()))
            .collect();
        if let Some((i, why)) = string_conflict(&args, ix.is_none()) {
            return Some((format!(".matchArgs[{i}]"), format!("matchArgs {why}")));
        }
    }
    // Exec kinds: an exec can be of several kinds at once, so only an `In` whose kinds a
    // `NotIn` all excludes is a contradiction.
    for (j, y) in sel.match_exec_kinds.iter().enumerate() {
        for x in &sel.match_exec_kinds {
            let excluded = x.operator == SetOperator::In
                && y.operator == SetOperator::NotIn
                && !x.values.is_empty()
                && x.values.iter().all(|v| y.values.contains(v));
            if excluded {
                return Some((
                    format!(".matchExecKinds[{j}]"),
                    "matchExecKinds: a `NotIn` excludes every kind an `In` entry requires (entries are ANDed)".into(),
                ));
            }
        }
    }
    // Namespaces: exact sets; a namespaced policy carries an implicit `In [own namespace]`.
    let mut ns_entries: Vec<(usize, Operator, Vec<String>)> = Vec::new();
    let own = p.scope_namespace().map(str::to_string);
    for (i, n) in sel.match_namespaces.iter().enumerate() {
        let op = if n.operator == SetOperator::In {
            Operator::In
        } else {
            Operator::NotIn
        };
        ns_entries.push((i, op, n.values.clone()));
    }
    if let Some(own) = &own {
        for (i, op, values) in &ns_entries {
            let contains = values.contains(own);
            if (*op == Operator::In && !contains) || (*op == Operator::NotIn && contains) {
                return Some((
                    format!(".matchNamespaces[{i}]"),
                    format!("this TracingPolicyNamespaced only applies in its own namespace `{own}`, which this condition excludes"),
                ));
            }
        }
    }
    let ns_refs: Vec<_> = ns_entries
        .iter()
        .map(|(i, o, v)| (*i, *o, v.as_slice()))
        .collect();
    if let Some((i, why)) = string_conflict(&ns_refs, false) {
        return Some((
            format!(".matchNamespaces[{i}]"),
            format!("matchNamespaces {why}"),
        ));
    }
    // Destinations.
    let sets: Vec<(usize, SetOperator, DestinationSet)> = sel
        .match_destinations
        .iter()
        .enumerate()
        .filter_map(|(i, dst)| dst.parse().ok().map(|s| (i, dst.operator, s)))
        .collect();
    for (j, (ej, opj, sj)) in sets.iter().enumerate() {
        if hook.classifies_payload()
            && *opj == SetOperator::In
            && sj.protocol == Some(Protocol::UDP)
        {
            return Some((
                format!(".matchDestinations[{ej}]"),
                format!("the {} hook sees TCP only", hook.as_str()),
            ));
        }
        for (_, opi, si) in &sets[..j] {
            let conflict = match (opi, opj) {
                (SetOperator::In, SetOperator::In) => dest_disjoint(si, sj),
                (SetOperator::In, SetOperator::NotIn) => dest_covered(si, sj),
                (SetOperator::NotIn, SetOperator::In) => dest_covered(sj, si),
                (SetOperator::NotIn, SetOperator::NotIn) => false,
            };
            if conflict {
                let why = if *opi == SetOperator::In && *opj == SetOperator::In {
                    "two `In` destinations that no address, port and protocol satisfy together (destination entries are ANDed)"
                } else {
                    "a `NotIn` destination excludes everything an `In` destination allows"
                };
                return Some((format!(".matchDestinations[{ej}]"), why.into()));
            }
        }
    }
    None
}

/// `a` matches whenever `b` matches (every condition of `a` is implied by one of `b`).
pub(super) fn broader(a: &Selector, b: &Selector) -> bool {
    let str_implied = |(ka, na, va): (MatchKind, bool, &[String]),
                       (kb, nb, vb): (MatchKind, bool, &[String])|
     -> bool {
        // does condition b imply condition a?
        match (na, nb) {
            (false, false) => positive_covered((kb, vb), (ka, va)),
            (true, true) => positive_covered((ka, va), (kb, vb)),
            (true, false) => positive_disjoint((kb, vb), (ka, va)),
            (false, true) => false,
        }
    };
    let bins = a.match_binaries.iter().all(|x| {
        let (ka, na) = kind_of(x.operator);
        b.match_binaries.iter().any(|y| {
            let (kb, nb) = kind_of(y.operator);
            str_implied((ka, na, &x.values), (kb, nb, &y.values))
        })
    });
    let args = a.match_args.iter().all(|x| {
        let (ka, na) = kind_of(x.operator);
        b.match_args.iter().filter(|y| y.index == x.index).any(|y| {
            let (kb, nb) = kind_of(y.operator);
            str_implied((ka, na, &x.values), (kb, nb, &y.values))
        })
    });
    let nss = a.match_namespaces.iter().all(|x| {
        let na = x.operator == SetOperator::NotIn;
        b.match_namespaces.iter().any(|y| {
            let nb = y.operator == SetOperator::NotIn;
            str_implied(
                (MatchKind::Exact, na, &x.values),
                (MatchKind::Exact, nb, &y.values),
            )
        })
    });
    let dests = a.match_destinations.iter().all(|x| {
        let Ok(sx) = x.parse() else { return false };
        b.match_destinations.iter().any(|y| {
            let Ok(sy) = y.parse() else { return false };
            match (x.operator, y.operator) {
                (SetOperator::In, SetOperator::In) => dest_covered(&sy, &sx),
                (SetOperator::NotIn, SetOperator::NotIn) => dest_covered(&sx, &sy),
                (SetOperator::NotIn, SetOperator::In) => dest_disjoint(&sx, &sy),
                (SetOperator::In, SetOperator::NotIn) => false,
            }
        })
    });
    let kinds = a.match_exec_kinds.iter().all(|x| {
        b.match_exec_kinds
            .iter()
            .any(|y| match (x.operator, y.operator) {
                (SetOperator::In, SetOperator::In) => y.values.iter().all(|v| x.values.contains(v)),
                (SetOperator::NotIn, SetOperator::NotIn) => {
                    x.values.iter().all(|v| y.values.contains(v))
                }
                (SetOperator::NotIn, SetOperator::In) => {
                    y.values.iter().all(|v| !x.values.contains(v))
                }
                (SetOperator::In, SetOperator::NotIn) => false,
            })
    });
    let enc = a.match_encryption.is_none() || a.match_encryption == b.match_encryption;
    bins && args
        && nss
        && kinds
        && dests
        && enc
        && super::syscall::broader(a, b)
        && super::file::broader(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency, same inputs on every run).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// The indexes answer exactly what comparing every pair answers.
    #[test]
    fn indexes_agree_with_pairwise_comparison() {
        let mut r = Lcg(7);
        for _ in 0..300 {
            let word = |r: &mut Lcg| -> String {
                (0..r.next(4))
                    .map(|_| ["a", "b", "/", "é"][r.next(4) as usize])
                    .collect()
            };
            let a: Vec<String> = (0..r.next(6)).map(|_| word(&mut r)).collect();
            let b: Vec<String> = (0..r.next(6)).map(|_| word(&mut r)).collect();
            let bv = Values::new(&b);
            for s in &a {
                assert_eq!(bv.set.contains(s.as_str()), b.contains(s));
                assert_eq!(bv.starts(s), b.iter().any(|v| s.starts_with(v.as_str())));
                assert_eq!(bv.ends(s), b.iter().any(|v| s.ends_with(v.as_str())));
            }
            let cidr = |r: &mut Lcg| {
                let len = r.next(9) as u8;
                if r.next(5) == 0 {
                    Cidr::V6 {
                        addr: u128::from(r.next(4)) << 124,
                        len,
                    }
                    .truncated(len)
                } else {
                    Cidr::V4 {
                        addr: (r.next(256) as u32) << 24,
                        len,
                    }
                    .truncated(len)
                }
            };
            let ca: Vec<Cidr> = (0..r.next(6)).map(|_| cidr(&mut r)).collect();
            let cb: Vec<Cidr> = (0..r.next(6)).map(|_| cidr(&mut r)).collect();
            let ci = Cidrs::new(&cb);
            for c in &ca {
                assert_eq!(
                    ci.cover(c),
                    cb.iter().any(|d| d.covers(c)),
                    "{c:?} in {cb:?}"
                );
                assert_eq!(
                    ci.overlap(c),
                    cb.iter().any(|d| c.overlaps(d)),
                    "{c:?} in {cb:?}"
                );
            }
            let port = |r: &mut Lcg| {
                let lo = 1 + r.next(40) as u16;
                PortRange::new(lo, lo + r.next(10) as u16).unwrap()
            };
            let pa: Vec<PortRange> = (0..r.next(6)).map(|_| port(&mut r)).collect();
            let pb: Vec<PortRange> = (0..r.next(6)).map(|_| port(&mut r)).collect();
            let pi = Ports::new(&pb);
            for &p in &pa {
                assert_eq!(pi.cover(p), pb.iter().any(|&q| q.covers(p)));
                assert_eq!(pi.overlap(p), pb.iter().any(|&q| p.overlaps(q)));
            }
        }
    }
}
