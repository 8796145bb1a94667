//! The compiled conditions: a process condition (binary, argument, namespace, exec kind) or a
//! destination condition, each one bit of a slot, and the words `bulwark compile` describes
//! them with. Identical conditions share a bit (the [`crate::builder`] dedupes them).

use bulwark_policy::values::{Cidr, PortRange};
use bulwark_policy::{ExecKind, MatchKind, Protocol};
use serde::{Serialize, Serializer};

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
