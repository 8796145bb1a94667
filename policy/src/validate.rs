//! Semantic checks on the typed policy model: names, value lists, binary paths, CIDRs, ports,
//! actions and fields valid for each hook, mode, duplicate rules, selectors that can never
//! match or that an earlier selector shadows, per-value kernel limits, and (for a whole set)
//! duplicate policy names and the kernel's total capacity. Diagnostics carry a JSON path
//! (`spec.rules[0].selectors[1].matchDestinations[0].cidrs[2]`) and no position: this module
//! has no file dependency, so the controller runs it on objects from the API server, and
//! `load` maps the paths to line:column.

use crate::diagnostics::{codes, Diagnostic, Severity};
use crate::model::*;
use daemon_common as limits;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain (Kubernetes object names): dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| !l.is_empty() && is_dns1123_label(l))
}

/// A close valid DNS-1123 name for a suggestion (`My_Rule` -> `my-rule`).
pub fn suggest_dns1123(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for c in mapped.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let t: String = out.trim_matches('-').chars().take(63).collect();
    let t = t.trim_end_matches('-').to_string();
    if t.is_empty() {
        "my-policy".into()
    } else {
        t
    }
}

/// A parsed CIDR: address, prefix length, and whether host bits were set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    fn bits(&self) -> (u128, u8) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(&self) -> u128 {
        let (_, width) = self.bits();
        if self.prefix == 0 {
            0
        } else {
            let all: u128 = if width == 32 {
                u128::from(u32::MAX)
            } else {
                u128::MAX
            };
            all & !all.checked_shr(u32::from(self.prefix)).unwrap_or(0)
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Cidr {
        let (v, _) = self.bits();
        let n = v & self.mask();
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(n)),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    pub fn has_host_bits(&self) -> bool {
        self.network() != *self
    }

    /// True when every address of `other` is in `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.prefix <= other.prefix
            && (self.bits().0 & self.mask()) == (other.bits().0 & self.mask())
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a single host).
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => width,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= width => n,
            _ => {
                return Err(format!(
                    "prefix length `/{p}` must be a number from 0 to {width}"
                ))
            }
        },
    };
    Ok(Cidr { addr, prefix })
}

/// Parses a port or an inclusive port range into `(low, high)`.
pub fn parse_port(p: &PortSpec) -> Result<(u16, u16), (crate::diagnostics::Code, String, String)> {
    let one = |n: i64, text: &str| -> Result<u16, (crate::diagnostics::Code, String, String)> {
        if (1..=65535).contains(&n) {
            Ok(n as u16)
        } else {
            Err((
                codes::INVALID_PORT,
                format!("port `{text}` is out of range: ports are 1 to 65535"),
                if n == 0 {
                    "port 0 never appears on a connection; omit `ports` to match any port".into()
                } else {
                    "use a port from 1 to 65535".into()
                },
            ))
        }
    };
    let parse = |t: &str| -> Result<u16, (crate::diagnostics::Code, String, String)> {
        let t = t.trim();
        match t.parse::<i64>() {
            Ok(n) => one(n, t),
            Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => one(i64::MAX, t),
            Err(_) => Err((
                codes::INVALID_PORT,
                format!("`{t}` is not a port number"),
                "write a number (`443`) or an inclusive range (`\"8000-8080\"`); service names are not resolved".into(),
            )),
        }
    };
    match p {
        PortSpec::Number(n) => one(*n, &n.to_string()).map(|v| (v, v)),
        PortSpec::Text(t) => match t.split_once('-') {
            None => parse(t).map(|v| (v, v)),
            Some((lo, hi)) => {
                if lo.trim().is_empty() || hi.trim().is_empty() {
                    return Err((
                        codes::INVALID_PORT_RANGE,
                        format!("port range `{t}` is missing an end"),
                        "write an inclusive range as `LOW-HIGH`, e.g. `\"8000-8080\"`".into(),
                    ));
                }
                let (a, b) = (parse(lo)?, parse(hi)?);
                if a > b {
                    Err((
                        codes::INVALID_PORT_RANGE,
                        format!("port range `{t}` starts above its end"),
                        format!("write it low to high: `\"{b}-{a}\"`"),
                    ))
                } else {
                    Ok((a, b))
                }
            }
        },
    }
}

/// Number of prefix blocks (LPM entries) an inclusive port range needs.
pub fn port_prefix_blocks(lo: u16, hi: u16) -> u32 {
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    let mut n = 0;
    while lo <= hi {
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        n += 1;
        lo += size;
    }
    n
}

fn allowed_actions(h: Hook) -> &'static [Action] {
    match h {
        Hook::Exec => &[Action::Post, Action::Sigkill],
        Hook::Connect | Hook::Egress => &[Action::Post, Action::Block],
    }
}

/// The actions of a selector; none written means `Post`.
pub fn selector_actions(s: &Selector) -> BTreeSet<u8> {
    if s.match_actions.is_empty() {
        return [Action::Post as u8].into();
    }
    s.match_actions.iter().map(|a| a.action as u8).collect()
}

fn op_name(o: Operator) -> &'static str {
    match o {
        Operator::In => "In",
        Operator::NotIn => "NotIn",
        Operator::Prefix => "Prefix",
        Operator::NotPrefix => "NotPrefix",
        Operator::Postfix => "Postfix",
        Operator::NotPostfix => "NotPostfix",
        Operator::Equal => "Equal",
    }
}

fn d(
    code: crate::diagnostics::Code,
    path: impl Into<String>,
    msg: impl Into<String>,
    hint: impl Into<String>,
) -> Diagnostic {
    Diagnostic::new(code, msg).path(path).hint(hint)
}

/// Semantic checks on one typed policy. Paths only, no positions.
pub fn validate_policy(p: &AnyPolicy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let name = p.name();
    if name.is_empty() {
        out.push(d(
            codes::MISSING_NAME,
            "metadata",
            "missing `metadata.name`",
            "add `name: <dns-1123-name>` under `metadata`",
        ));
    } else if !is_dns1123_subdomain(name) {
        out.push(d(
            codes::INVALID_NAME,
            "metadata.name",
            format!("policy name `{name}` is not a valid DNS-1123 subdomain (lowercase letters, digits, `-` and `.`, at most 253 characters, starting and ending with a letter or digit)"),
            format!("rename it, e.g. `{}`", suggest_dns1123(name)),
        ));
    }
    let ns = match p {
        AnyPolicy::Namespaced(tp) => tp.metadata.namespace.as_deref(),
        AnyPolicy::Cluster(_) => None,
    };
    if let Some(ns) = ns {
        if !is_dns1123_label(ns) {
            out.push(d(
                codes::INVALID_NAME,
                "metadata.namespace",
                format!("namespace `{ns}` is not a valid DNS-1123 label (lowercase letters, digits and `-`, at most 63 characters)"),
                format!("use the namespace's real name, e.g. `{}`", suggest_dns1123(ns)),
            ));
        }
    }
    let spec = p.spec();
    if spec.rules.is_empty() {
        out.push(d(
            codes::NO_RULES,
            "spec.rules",
            "the policy has no rules, so it does nothing",
            "add a rule with `name`, `hook` and `selectors`, or delete the policy",
        ));
    }
    let any_enforcing = spec
        .rules
        .iter()
        .flat_map(|r| &r.selectors)
        .flat_map(|s| &s.match_actions)
        .any(|a| a.action.is_enforcing());
    let any_selector = spec.rules.iter().any(|r| !r.selectors.is_empty());
    if spec.mode == Mode::Enforce && any_selector && !any_enforcing {
        out.push(d(
            codes::ENFORCE_WITHOUT_ACTION,
            "spec.mode",
            "`mode: enforce` but no selector has `Sigkill` or `Block`, so nothing is enforced (Tetragon silently treats this as monitoring; bulwark says so)",
            "add `matchActions: [{action: Sigkill}]` (exec) or `[{action: Block}]` (connect/egress) where you mean to enforce, or set `mode: monitor`",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (ri, rule) in spec.rules.iter().enumerate() {
        let rp = format!("spec.rules[{ri}]");
        if !is_dns1123_label(&rule.name) {
            out.push(d(
                codes::INVALID_NAME,
                format!("{rp}.name"),
                format!("rule name `{}` is not a valid DNS-1123 label (lowercase letters, digits and `-`, at most 63 characters)", rule.name),
                format!("rename it, e.g. `{}`", suggest_dns1123(&rule.name)),
            ));
        }
        if let Some(first) = seen.iter().position(|n| *n == rule.name) {
            out.push(d(
                codes::DUPLICATE_RULE,
                format!("{rp}.name"),
                format!(
                    "rule name `{}` is already used by rule {first} of this policy",
                    rule.name
                ),
                "give each rule a unique name: events and violations name the rule",
            ));
        }
        seen.push(&rule.name);
        if rule.selectors.is_empty() {
            out.push(d(
                codes::NO_SELECTORS,
                format!("{rp}.selectors"),
                format!("rule `{}` has no selectors, so it never matches", rule.name),
                "add a selector, e.g. `- matchBinaries: [{operator: In, values: [/usr/bin/curl]}]`",
            ));
        }
        let mut clean = Vec::new();
        for (si, sel) in rule.selectors.iter().enumerate() {
            let before = out.len();
            check_selector(p, rule, sel, &format!("{rp}.selectors[{si}]"), &mut out);
            let ok = out[before..].iter().all(|x| x.severity != Severity::Error);
            if ok {
                let never = never_matches(p, rule.hook, sel);
                if let Some((path, why)) = &never {
                    out.push(d(
                        codes::NEVER_MATCHES,
                        format!("{rp}.selectors[{si}]{path}"),
                        format!(
                            "selector {si} of rule `{}` can never match: {why}",
                            rule.name
                        ),
                        "fix the contradicting conditions, or delete the selector",
                    ));
                }
                if never.is_none() {
                    clean.push(si);
                }
            }
        }
        // Shadowing among selectors without errors.
        for (k, &j) in clean.iter().enumerate() {
            for &i in &clean[..k] {
                let (si, sj) = (&rule.selectors[i], &rule.selectors[j]);
                if broader(si, sj) && selector_actions(sj).is_subset(&selector_actions(si)) {
                    out.push(d(
                        codes::SHADOWED,
                        format!("{rp}.selectors[{j}]"),
                        format!("selector {j} of rule `{}` adds nothing: selector {i} matches whenever it does and already takes its actions", rule.name),
                        format!("delete selector {j}, or make it differ from selector {i}"),
                    ));
                    break;
                }
            }
        }
    }
    out
}

fn check_selector(p: &AnyPolicy, rule: &Rule, sel: &Selector, sp: &str, out: &mut Vec<Diagnostic>) {
    let hook = rule.hook;
    let namespaced = matches!(p, AnyPolicy::Namespaced(_));
    let has_conditions = !sel.match_binaries.is_empty()
        || !sel.match_args.is_empty()
        || !sel.match_namespaces.is_empty()
        || !sel.match_destinations.is_empty()
        || sel.match_encryption.is_some();
    let enforcing = sel.match_actions.iter().any(|a| a.action.is_enforcing());
    if !has_conditions && !namespaced {
        let ev = match hook {
            Hook::Exec => "exec on every host process and workload",
            Hook::Connect => "connect on the node",
            Hook::Egress => "outbound TCP connection on the node",
        };
        if enforcing {
            out.push(d(
                codes::NO_CONDITIONS_ENFORCING,
                sp,
                format!("this selector has no conditions, so its enforcing action applies to every {ev}"),
                "add conditions (matchBinaries, matchNamespaces, matchDestinations, ...) that narrow what it acts on",
            ));
        } else {
            out.push(d(
                codes::NO_CONDITIONS,
                sp,
                format!("this selector has no conditions and matches every {ev}"),
                "add conditions that narrow it, unless you mean to report everything",
            ));
        }
    }
    for (k, b) in sel.match_binaries.iter().enumerate() {
        let bp = format!("{sp}.matchBinaries[{k}]");
        if b.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{bp}.values"),
                "`values` is empty",
                "list at least one absolute path, e.g. `values: [/usr/bin/curl]`",
            ));
        }
        for (vi, v) in b.values.iter().enumerate() {
            check_binary_path(b.operator, v, &format!("{bp}.values[{vi}]"), out);
        }
    }
    for (k, a) in sel.match_args.iter().enumerate() {
        let ap = format!("{sp}.matchArgs[{k}]");
        if a.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{ap}.values"),
                "`values` is empty",
                "list at least one argument value",
            ));
        }
        if let Some(ix) = a.index {
            if ix as usize >= limits::MAX_ARGS {
                out.push(d(
                    codes::ARG_INDEX,
                    format!("{ap}.index"),
                    format!("argument index {ix} is beyond what the kernel examines: argv[0] to argv[{}] (MAX_ARGS = {})", limits::MAX_ARGS - 1, limits::MAX_ARGS),
                    format!("use an index below {}, or omit `index` to match any argument", limits::MAX_ARGS),
                ));
            }
        }
        for (vi, v) in a.values.iter().enumerate() {
            if v.len() > limits::ARG_LEN {
                out.push(d(
                    codes::VALUE_TOO_LONG,
                    format!("{ap}.values[{vi}]"),
                    format!("argument value is {} bytes; the kernel matches at most {} bytes (ARG_LEN)", v.len(), limits::ARG_LEN),
                    format!("shorten it to {} bytes or less (a `Prefix` of the value works for long arguments)", limits::ARG_LEN),
                ));
            }
            if v.contains('\0') {
                out.push(d(
                    codes::EMPTY_VALUES,
                    format!("{ap}.values[{vi}]"),
                    "argument value contains a NUL byte, which no argument can contain",
                    "remove the NUL (`\\0`) from the value",
                ));
            }
        }
    }
    for (k, n) in sel.match_namespaces.iter().enumerate() {
        let np = format!("{sp}.matchNamespaces[{k}]");
        if n.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{np}.values"),
                "`values` is empty",
                "list at least one Kubernetes namespace name",
            ));
        }
        for (vi, v) in n.values.iter().enumerate() {
            if !is_dns1123_label(v) {
                out.push(d(
                    codes::INVALID_NAME,
                    format!("{np}.values[{vi}]"),
                    format!("`{v}` is not a valid Kubernetes namespace name (DNS-1123 label), so it can never match"),
                    format!("use the namespace's name, e.g. `{}`", suggest_dns1123(v)),
                ));
            }
        }
    }
    if !sel.match_destinations.is_empty() && hook == Hook::Exec {
        out.push(d(
            codes::DESTINATIONS_ON_EXEC,
            format!("{sp}.matchDestinations"),
            format!(
                "`matchDestinations` on rule `{}` with `hook: exec`: an exec has no destination",
                rule.name
            ),
            "use `hook: connect` (or `egress`) to match destinations, or remove matchDestinations",
        ));
    }
    for (k, dest) in sel.match_destinations.iter().enumerate() {
        let dp = format!("{sp}.matchDestinations[{k}]");
        if dest.cidrs.is_empty() && dest.ports.is_empty() && dest.protocol.is_none() {
            let what = if dest.operator == SetOperator::In {
                "matches every destination"
            } else {
                "excludes every destination, so the selector never matches"
            };
            out.push(d(
                codes::EMPTY_VALUES,
                &dp,
                format!("this destination has no `cidrs`, `ports` or `protocol` and {what}"),
                "add `cidrs`, `ports` or `protocol`, or remove the entry",
            ));
        }
        for (ci, c) in dest.cidrs.iter().enumerate() {
            let cp = format!("{dp}.cidrs[{ci}]");
            match parse_cidr(c.trim()) {
                Err(e) => out.push(d(
                    codes::INVALID_CIDR,
                    cp,
                    format!("invalid CIDR `{c}`: {e}"),
                    "write an address with a prefix length, e.g. `10.0.0.0/8` or `2001:db8::/32`",
                )),
                Ok(cidr) if cidr.has_host_bits() => out.push(d(
                    codes::CIDR_HOST_BITS,
                    cp,
                    format!(
                        "CIDR `{c}` has host bits set; it means the network `{}`",
                        cidr.network()
                    ),
                    format!("write `{}`", cidr.network()),
                )),
                Ok(_) => {}
            }
        }
        for (pi, port) in dest.ports.iter().enumerate() {
            if let Err((code, msg, hint)) = parse_port(port) {
                out.push(d(code, format!("{dp}.ports[{pi}]"), msg, hint));
            }
        }
        if hook == Hook::Egress && dest.protocol == Some(Protocol::UDP) {
            let (msg, sev) = if dest.operator == SetOperator::In {
                ("`protocol: UDP` on the egress hook never matches: only TCP payloads are classified", Severity::Error)
            } else {
                ("`NotIn` with `protocol: UDP` on the egress hook always holds: only TCP payloads are classified", Severity::Warning)
            };
            out.push(
                d(
                    codes::UDP_ON_EGRESS,
                    format!("{dp}.protocol"),
                    msg,
                    "use `protocol: TCP` (or omit it) on egress; to act on UDP use `hook: connect`",
                )
                .severity(sev),
            );
        }
    }
    if sel.match_encryption.is_some() && hook != Hook::Egress {
        out.push(d(
            codes::ENCRYPTION_OFF_EGRESS,
            format!("{sp}.matchEncryption"),
            format!("`matchEncryption` on rule `{}` with `hook: {}`: encryption is decided from the first payload, which only the egress hook sees", rule.name, hook.as_str()),
            "use `hook: egress` for plaintext/TLS decisions, or remove matchEncryption",
        ));
    }
    for (k, a) in sel.match_actions.iter().enumerate() {
        if !allowed_actions(hook).contains(&a.action) {
            let allowed: Vec<_> = allowed_actions(hook)
                .iter()
                .map(|a| format!("`{}`", a.as_str()))
                .collect();
            let hint = match (hook, a.action) {
                (Hook::Exec, Action::Block) => "use `Sigkill` to stop an exec (it kills the new image before it runs)".to_string(),
                (_, Action::Sigkill) => "use `Block` to refuse the connection or send (killing the process on connect is not supported)".to_string(),
                _ => format!("use one of {}", allowed.join(", ")),
            };
            out.push(d(
                codes::ACTION_NOT_ALLOWED,
                format!("{sp}.matchActions[{k}].action"),
                format!(
                    "action `{}` is not allowed on `hook: {}`; it allows {}",
                    a.action.as_str(),
                    hook.as_str(),
                    allowed.join(", ")
                ),
                hint,
            ));
        }
    }
}

fn check_binary_path(op: Operator, v: &str, path: &str, out: &mut Vec<Diagnostic>) {
    let bad = |msg: String, hint: String, out: &mut Vec<Diagnostic>| {
        out.push(d(codes::INVALID_BINARY_PATH, path, msg, hint))
    };
    if v.is_empty() {
        return bad(
            "binary path is empty".into(),
            "write an absolute path such as `/usr/bin/curl`".into(),
            out,
        );
    }
    if v.contains('\0') {
        return bad(
            "binary path contains a NUL byte".into(),
            "remove the NUL (`\\0`) from the path".into(),
            out,
        );
    }
    let affix = matches!(
        op,
        Operator::Prefix | Operator::NotPrefix | Operator::Postfix | Operator::NotPostfix
    );
    let postfix = matches!(op, Operator::Postfix | Operator::NotPostfix);
    if !postfix && !v.starts_with('/') {
        return bad(
            format!("binary path `{v}` is not absolute; the kernel sees the executable's full path"),
            format!("write the absolute path, e.g. `/usr/bin/{v}`, or use `operator: Postfix` with `/{v}` to match the name anywhere"),
            out,
        );
    }
    if v.contains("//") {
        return bad(
            format!("binary path `{v}` contains `//`; the kernel's path never does, so it can never match"),
            format!("write `{}`", collapse_slashes(v)),
            out,
        );
    }
    if v.split('/').any(|c| c == "." || c == "..") {
        return bad(
            format!("binary path `{v}` contains `.` or `..`; the kernel sees the resolved path, so it can never match"),
            "write the resolved absolute path".into(),
            out,
        );
    }
    if v.len() > 1
        && v.ends_with('/')
        && matches!(op, Operator::In | Operator::NotIn | Operator::Equal)
    {
        return bad(
            format!("binary path `{v}` ends with `/`: that is a directory, not an executable"),
            format!(
                "use `operator: Prefix` to match everything under `{v}`, or name the executable"
            ),
            out,
        );
    }
    let (limit, name) = if affix {
        (limits::PATH_AFFIX_LEN, "PATH_AFFIX_LEN")
    } else {
        (limits::PATH_EXACT_LEN, "PATH_EXACT_LEN")
    };
    if v.len() > limit {
        out.push(d(
            codes::VALUE_TOO_LONG,
            path,
            format!("binary path is {} bytes; the kernel matches at most {limit} bytes for `{}` ({name})", v.len(), op_name(op)),
            format!("shorten it to {limit} bytes or less, e.g. match a shorter `Prefix` or `Postfix`"),
        ));
    }
}

fn collapse_slashes(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

// ---------- satisfiability of string conditions ----------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Postfix,
}

fn kind_of(op: Operator) -> (Kind, bool) {
    match op {
        Operator::In | Operator::Equal => (Kind::Exact, false),
        Operator::NotIn => (Kind::Exact, true),
        Operator::Prefix => (Kind::Prefix, false),
        Operator::NotPrefix => (Kind::Prefix, true),
        Operator::Postfix => (Kind::Postfix, false),
        Operator::NotPostfix => (Kind::Postfix, true),
    }
}

/// Does the string `s` match the positive form of (kind, values)?
fn hits(kind: Kind, values: &[String], s: &str) -> bool {
    match kind {
        Kind::Exact => values.iter().any(|v| v == s),
        Kind::Prefix => values.iter().any(|v| s.starts_with(v.as_str())),
        Kind::Postfix => values.iter().any(|v| s.ends_with(v.as_str())),
    }
}

/// Every string matching the positive form of `a` also matches the positive form of `b`.
fn positive_covered(a: (Kind, &[String]), b: (Kind, &[String])) -> bool {
    match (a.0, b.0) {
        (Kind::Exact, _) => a.1.iter().all(|s| hits(b.0, b.1, s)),
        (Kind::Prefix, Kind::Prefix) => a.1.iter().all(|s| hits(Kind::Prefix, b.1, s)),
        (Kind::Postfix, Kind::Postfix) => a.1.iter().all(|s| hits(Kind::Postfix, b.1, s)),
        _ => false,
    }
}

/// No string matches the positive forms of both `a` and `b`.
fn positive_disjoint(a: (Kind, &[String]), b: (Kind, &[String])) -> bool {
    match (a.0, b.0) {
        (Kind::Exact, _) => !a.1.iter().any(|s| hits(b.0, b.1, s)),
        (_, Kind::Exact) => !b.1.iter().any(|s| hits(a.0, a.1, s)),
        (Kind::Prefix, Kind::Prefix) => !a.1.iter().any(|x| {
            b.1.iter()
                .any(|y| x.starts_with(y.as_str()) || y.starts_with(x.as_str()))
        }),
        (Kind::Postfix, Kind::Postfix) => !a.1.iter().any(|x| {
            b.1.iter()
                .any(|y| x.ends_with(y.as_str()) || y.ends_with(x.as_str()))
        }),
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

/// A destination as sets: CIDRs (None = any), port ranges (None = any), protocol (None = any).
struct DestSet {
    cidrs: Option<Vec<Cidr>>,
    ports: Option<Vec<(u16, u16)>>,
    proto: Option<Protocol>,
}

fn dest_set(dest: &DestinationSelector) -> Option<DestSet> {
    let cidrs = if dest.cidrs.is_empty() {
        None
    } else {
        Some(
            dest.cidrs
                .iter()
                .map(|c| parse_cidr(c.trim()).map(|c| c.network()))
                .collect::<Result<Vec<_>, _>>()
                .ok()?,
        )
    };
    let ports = if dest.ports.is_empty() {
        None
    } else {
        Some(
            dest.ports
                .iter()
                .map(parse_port)
                .collect::<Result<Vec<_>, _>>()
                .ok()?,
        )
    };
    Some(DestSet {
        cidrs,
        ports,
        proto: dest.protocol,
    })
}

/// Every destination in `a` is in `b`.
fn dest_covered(a: &DestSet, b: &DestSet) -> bool {
    let cidrs = match (&a.cidrs, &b.cidrs) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(x), Some(y)) => x.iter().all(|c| y.iter().any(|d| d.contains(c))),
    };
    let ports = match (&a.ports, &b.ports) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(x), Some(y)) => x
            .iter()
            .all(|&(lo, hi)| y.iter().any(|&(l, h)| l <= lo && hi <= h)),
    };
    let proto = b.proto.is_none() || a.proto == b.proto;
    cidrs && ports && proto
}

fn dest_disjoint(a: &DestSet, b: &DestSet) -> bool {
    let cidrs = match (&a.cidrs, &b.cidrs) {
        (Some(x), Some(y)) => !x.iter().any(|c| y.iter().any(|d| c.overlaps(d))),
        _ => false,
    };
    let ports = match (&a.ports, &b.ports) {
        (Some(x), Some(y)) => !x
            .iter()
            .any(|&(lo, hi)| y.iter().any(|&(l, h)| lo <= h && l <= hi)),
        _ => false,
    };
    let proto = matches!((a.proto, b.proto), (Some(x), Some(y)) if x != y);
    cidrs || ports || proto
}

/// Why a selector can never match: a path suffix inside the selector and a reason.
fn never_matches(p: &AnyPolicy, hook: Hook, sel: &Selector) -> Option<(String, String)> {
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
    let sets: Vec<(usize, SetOperator, DestSet)> = sel
        .match_destinations
        .iter()
        .enumerate()
        .filter_map(|(i, dst)| dest_set(dst).map(|s| (i, dst.operator, s)))
        .collect();
    for (j, (ej, opj, sj)) in sets.iter().enumerate() {
        if hook == Hook::Egress && *opj == SetOperator::In && sj.proto == Some(Protocol::UDP) {
            return Some((
                format!(".matchDestinations[{ej}]"),
                "the egress hook sees TCP only".into(),
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
fn broader(a: &Selector, b: &Selector) -> bool {
    let str_implied =
        |(ka, na, va): (Kind, bool, &[String]), (kb, nb, vb): (Kind, bool, &[String])| -> bool {
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
            str_implied((Kind::Exact, na, &x.values), (Kind::Exact, nb, &y.values))
        })
    });
    let dests = a.match_destinations.iter().all(|x| {
        let Some(sx) = dest_set(x) else { return false };
        b.match_destinations.iter().any(|y| {
            let Some(sy) = dest_set(y) else { return false };
            match (x.operator, y.operator) {
                (SetOperator::In, SetOperator::In) => dest_covered(&sy, &sx),
                (SetOperator::NotIn, SetOperator::NotIn) => dest_covered(&sx, &sy),
                (SetOperator::NotIn, SetOperator::In) => dest_disjoint(&sx, &sy),
                (SetOperator::In, SetOperator::NotIn) => false,
            }
        })
    });
    let enc = a.match_encryption.is_none() || a.match_encryption == b.match_encryption;
    bins && args && nss && dests && enc
}

// ---------- whole-set checks ----------

/// Cross-policy checks: duplicate names and the kernel's total capacity. Diagnostics name the
/// policy in the message; `load::lint_paths` also places them in the file.
pub fn validate_set(ps: &[AnyPolicy]) -> Vec<Diagnostic> {
    let refs: Vec<&AnyPolicy> = ps.iter().collect();
    validate_set_indexed(&refs)
        .into_iter()
        .map(|(_, d, _)| d)
        .collect()
}

fn kind_word(p: &AnyPolicy) -> &'static str {
    match p {
        AnyPolicy::Cluster(_) => "TracingPolicy",
        AnyPolicy::Namespaced(_) => "TracingPolicyNamespaced",
    }
}

/// A process condition as the compiler dedupes it: (field, negated, match kind, index, values).
type ProcKey = (u8, bool, u8, Option<u32>, Vec<String>);
/// A destination condition: (negated, CIDRs, port ranges, protocol).
type DestKey = (bool, Vec<String>, Vec<(u16, u16)>, Option<u8>);

/// Distinct selectors, conditions and map keys of a set, as the compiler shares them.
#[derive(Default)]
struct Tally {
    selectors: u64,
    proc: BTreeSet<ProcKey>,
    dest: BTreeSet<DestKey>,
    bin: [BTreeSet<String>; 3],
    arg: [BTreeSet<(Option<u32>, String)>; 3],
    ns: BTreeSet<String>,
    v4: BTreeSet<String>,
    v6: BTreeSet<String>,
    ports: BTreeSet<(u16, u16)>,
}

impl Tally {
    fn add(&mut self, p: &AnyPolicy, s: &Selector) {
        self.selectors += 1;
        let norm = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        for b in &s.match_binaries {
            let (k, neg) = kind_of(b.operator);
            self.proc.insert((0, neg, k as u8, None, norm(&b.values)));
            self.bin[k as usize].extend(b.values.iter().cloned());
        }
        for a in &s.match_args {
            let (k, neg) = kind_of(a.operator);
            self.proc
                .insert((1, neg, k as u8, a.index, norm(&a.values)));
            self.arg[k as usize].extend(a.values.iter().map(|v| (a.index, v.clone())));
        }
        for n in &s.match_namespaces {
            self.proc.insert((
                2,
                n.operator == SetOperator::NotIn,
                0,
                None,
                norm(&n.values),
            ));
            self.ns.extend(n.values.iter().cloned());
        }
        if let Some(own) = p.scope_namespace() {
            self.proc.insert((2, false, 0, None, vec![own.to_string()]));
            self.ns.insert(own.to_string());
        }
        for dst in &s.match_destinations {
            let mut cidrs: Vec<String> = dst
                .cidrs
                .iter()
                .map(|c| {
                    parse_cidr(c.trim()).map_or_else(|_| c.clone(), |c| c.network().to_string())
                })
                .collect();
            cidrs.sort();
            cidrs.dedup();
            let mut ports: Vec<(u16, u16)> = dst
                .ports
                .iter()
                .filter_map(|pt| parse_port(pt).ok())
                .collect();
            ports.sort();
            ports.dedup();
            for c in &cidrs {
                if c.contains(':') {
                    self.v6.insert(c.clone());
                } else {
                    self.v4.insert(c.clone());
                }
            }
            for &(lo, hi) in &ports {
                let mut start = u32::from(lo);
                let end = u32::from(hi);
                while start <= end {
                    let mut size = if start == 0 {
                        1u32 << 16
                    } else {
                        1u32 << start.trailing_zeros().min(16)
                    };
                    while start + size - 1 > end {
                        size >>= 1;
                    }
                    self.ports
                        .insert((start as u16, size.trailing_zeros() as u16));
                    start += size;
                }
            }
            self.dest.insert((
                dst.operator == SetOperator::NotIn,
                cidrs,
                ports,
                dst.protocol.map(|p| p as u8),
            ));
        }
    }

    fn counts(&self) -> [u64; 8] {
        let max3 = |a: usize, b: usize, c: usize| a.max(b).max(c) as u64;
        [
            self.selectors,
            self.proc.len() as u64,
            self.dest.len() as u64,
            max3(self.bin[0].len(), self.bin[1].len(), self.bin[2].len()),
            max3(self.arg[0].len(), self.arg[1].len(), self.arg[2].len()),
            self.ns.len() as u64,
            self.v4.len().max(self.v6.len()) as u64,
            self.ports.len() as u64,
        ]
    }
}

/// Like [`validate_set`], with the index of the policy each diagnostic belongs to and, for
/// duplicates, the index of the first policy of that name.
pub fn validate_set_indexed(ps: &[&AnyPolicy]) -> Vec<(usize, Diagnostic, Option<usize>)> {
    let mut out = duplicates_indexed(ps);
    out.extend(capacity_indexed(ps).into_iter().map(|(i, d)| (i, d, None)));
    out
}

/// Duplicate policy names: `(policy, diagnostic, first policy of that name)`.
pub fn duplicates_indexed(ps: &[&AnyPolicy]) -> Vec<(usize, Diagnostic, Option<usize>)> {
    let mut out = Vec::new();
    for (j, pj) in ps.iter().enumerate() {
        if pj.name().is_empty() {
            continue;
        }
        let key = |p: &AnyPolicy| {
            (
                kind_word(p),
                p.scope_namespace().map(str::to_string),
                p.name().to_string(),
            )
        };
        if let Some(i) = ps[..j].iter().position(|pi| key(pi) == key(pj)) {
            let scope = pj
                .scope_namespace()
                .map(|n| format!(" in namespace `{n}`"))
                .unwrap_or_default();
            out.push((
                j,
                d(
                    codes::DUPLICATE_POLICY,
                    "metadata.name",
                    format!("{} `{}`{scope} is defined twice; the second replaces the first when applied", kind_word(pj), pj.name()),
                    "rename one of them, or merge their rules into one policy",
                ),
                Some(i),
            ));
        }
    }
    out
}

/// Kernel capacity of a set that is loaded together: `(policy, diagnostic)`.
pub fn capacity_indexed(ps: &[&AnyPolicy]) -> Vec<(usize, Diagnostic)> {
    let mut out = Vec::new();
    // Capacity, counted as the compiler lays the set out in one slot: one selector entry per
    // selector; identical conditions and map keys are shared.
    const BUDGETS: [(&str, &str, u64); 8] = [
        ("MAX_SELECTORS", "selectors", limits::MAX_SELECTORS as u64),
        ("MAX_PROC_CONDITIONS", "distinct process conditions (matchBinaries/matchArgs/matchNamespaces entries, plus one per namespace of a TracingPolicyNamespaced; identical entries are shared)", limits::MAX_PROC_CONDITIONS as u64),
        ("MAX_DEST_CONDITIONS", "distinct destination conditions (matchDestinations entries; identical entries are shared)", limits::MAX_DEST_CONDITIONS as u64),
        ("MAX_BINARY_VALUES", "distinct binary path values in one matcher map", limits::MAX_BINARY_VALUES as u64),
        ("MAX_ARG_VALUES", "distinct argument values in one matcher map", limits::MAX_ARG_VALUES as u64),
        ("MAX_NAMESPACES", "distinct namespace names", limits::MAX_NAMESPACES as u64),
        ("MAX_CIDRS", "distinct CIDRs of one address family", limits::MAX_CIDRS as u64),
        ("MAX_PORT_PREFIXES", "distinct port prefix blocks", limits::MAX_PORT_PREFIXES as u64),
    ];
    let totals = {
        let mut t = Tally::default();
        for p in ps {
            for r in &p.spec().rules {
                for s in &r.selectors {
                    t.add(p, s);
                }
            }
        }
        t.counts()
    };
    let mut reported = [false; 8];
    let mut t = Tally::default();
    for (pi, p) in ps.iter().enumerate() {
        for (ri, r) in p.spec().rules.iter().enumerate() {
            for (si, s) in r.selectors.iter().enumerate() {
                t.add(p, s);
                for (k, used) in t.counts().into_iter().enumerate() {
                    let (name, what, limit) = BUDGETS[k];
                    if !reported[k] && used > limit {
                        reported[k] = true;
                        out.push((
                            pi,
                            d(
                                codes::CAPACITY,
                                format!("spec.rules[{ri}].selectors[{si}]"),
                                format!(
                                    "the loaded policies need {} {what}; the kernel maps hold at most {limit} per rule set ({name}); this selector of policy `{}` passes the limit",
                                    totals[k], p.name()
                                ),
                                if k == 0 {
                                    "merge selectors and rules that do the same thing (several values in one entry, several entries in one selector), or load fewer policies on this node"
                                } else {
                                    "merge the values of entries with the same operator into one entry, or load fewer policies on this node"
                                },
                            ),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123() {
        assert!(is_dns1123_label("kill-curl-1"));
        assert!(!is_dns1123_label("Kill_Curl"));
        assert!(!is_dns1123_label("-x"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert_eq!(suggest_dns1123("Kill_Curl!"), "kill-curl");
    }

    #[test]
    fn cidrs() {
        let c = parse_cidr("10.1.2.3/8").unwrap();
        assert!(c.has_host_bits());
        assert_eq!(c.network().to_string(), "10.0.0.0/8");
        assert!(!parse_cidr("10.0.0.0/8").unwrap().has_host_bits());
        assert_eq!(parse_cidr("169.254.169.254").unwrap().prefix, 32);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("2001:db8::/32")
            .unwrap()
            .contains(&parse_cidr("2001:db8:1::/48").unwrap()));
        assert!(!parse_cidr("10.0.0.0/8")
            .unwrap()
            .contains(&parse_cidr("::/0").unwrap()));
        assert_eq!(parse_cidr("::/0").unwrap().network().to_string(), "::/0");
        assert!(!parse_cidr("::1/128").unwrap().has_host_bits());
        assert!(!parse_cidr("1.2.3.4/32").unwrap().has_host_bits());
        assert_eq!(
            parse_cidr("0.0.0.0/0").unwrap().network().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port(&PortSpec::Number(443)).unwrap(), (443, 443));
        assert_eq!(
            parse_port(&PortSpec::Text("8000-8080".into())).unwrap(),
            (8000, 8080)
        );
        assert_eq!(parse_port(&PortSpec::Number(0)).unwrap_err().0.id, "BW052");
        assert_eq!(
            parse_port(&PortSpec::Number(65536)).unwrap_err().0.id,
            "BW052"
        );
        assert_eq!(
            parse_port(&PortSpec::Text("99999999999999999999".into()))
                .unwrap_err()
                .0
                .id,
            "BW052"
        );
        assert_eq!(
            parse_port(&PortSpec::Text("9-1".into())).unwrap_err().0.id,
            "BW053"
        );
        assert_eq!(
            parse_port(&PortSpec::Text("9-".into())).unwrap_err().0.id,
            "BW053"
        );
        assert_eq!(
            parse_port(&PortSpec::Text("https".into()))
                .unwrap_err()
                .0
                .id,
            "BW052"
        );
        assert_eq!(port_prefix_blocks(1, 65535), 16);
        assert_eq!(port_prefix_blocks(443, 443), 1);
        assert_eq!(port_prefix_blocks(8000, 8007), 1);
        assert_eq!(port_prefix_blocks(8000, 8008), 2);
    }
}
