//! Semantic checks on the typed policy model: names, value lists, binary paths, CIDRs, ports,
//! actions and fields valid for each hook, mode, duplicate rules, selectors that can never
//! match or that an earlier selector shadows, per-value kernel limits, and (for a whole set)
//! duplicate policy names. Values are parsed by [`crate::values`], the one parser the compiler
//! uses too; the kernel's capacity for a whole set is the compiler's to judge (it lays the set
//! out), so that check (BW092) lives there. Diagnostics carry a JSON path
//! (`spec.rules[0].selectors[1].matchDestinations[0].cidrs[2]`) and no position: this module
//! has no file dependency, so the controller runs it on objects from the API server, and
//! `load` maps the paths to line:column. The per-policy checks are here; `satisfiable` decides
//! which selectors can never match or are shadowed, `set` checks across policies.

use crate::diagnostics::{codes, Code, Diagnostic, Severity};
use crate::model::*;
use crate::values::{self, PortError, ValueLimit};
use daemon_common as limits;
use std::collections::BTreeSet;

mod file;
mod satisfiable;
mod set;
mod syscall;

use satisfiable::{broader, never_matches};
pub use set::{duplicates_indexed, validate_set};

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

fn allowed_actions(h: Hook) -> &'static [Action] {
    match h {
        Hook::Exec | Hook::Syscall | Hook::File => &[Action::Post, Action::Sigkill],
        Hook::Connect | Hook::Egress | Hook::Ingress => &[Action::Post, Action::Block],
    }
}

/// The actions of a selector; none written means `Post`.
pub fn selector_actions(s: &Selector) -> BTreeSet<u8> {
    if s.match_actions.is_empty() {
        return [Action::Post as u8].into();
    }
    s.match_actions.iter().map(|a| a.action as u8).collect()
}

pub(super) fn op_name(o: Operator) -> &'static str {
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

pub(super) fn d(
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
            let sp = format!("{rp}.selectors[{si}]");
            check_selector(p, rule, sel, &sp, &mut out);
            // In a policy that enforces elsewhere, a selector left without actions only
            // reports (when nothing enforces, BW070 says so for the whole policy).
            if sel.match_actions.is_empty() && spec.mode == Mode::Enforce && any_enforcing {
                out.push(no_actions(rule.hook, &sp));
            }
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

/// BW071: a selector without `matchActions` in a policy that enforces elsewhere.
fn no_actions(hook: Hook, sp: &str) -> Diagnostic {
    let (enforce, hint) = match hook {
        Hook::Exec => ("killed", "write `matchActions: [{action: Sigkill}]` to stop the exec, or `[{action: Post}]` to say you mean to report only"),
        Hook::Syscall | Hook::File => ("killed", "write `matchActions: [{action: Sigkill}]` to kill the caller, or `[{action: Post}]` to say you mean to report only"),
        Hook::Connect | Hook::Egress => ("blocked", "write `matchActions: [{action: Block}]` to refuse the connection, or `[{action: Post}]` to say you mean to report only"),
        Hook::Ingress => ("blocked", "write `matchActions: [{action: Block}]` to drop the connection's payload before the server reads it, or `[{action: Post}]` to say you mean to report only"),
    };
    d(
        codes::NO_ACTIONS,
        sp,
        format!("this selector has no `matchActions`, so it takes the default, `Post`: a match is reported and nothing is {enforce}, although the policy is `mode: enforce` and other selectors enforce"),
        hint,
    )
    .severity(Severity::Warning)
}

fn check_selector(p: &AnyPolicy, rule: &Rule, sel: &Selector, sp: &str, out: &mut Vec<Diagnostic>) {
    let hook = rule.hook;
    let namespaced = matches!(p, AnyPolicy::Namespaced(_));
    let has_conditions = !sel.match_binaries.is_empty()
        || !sel.match_args.is_empty()
        || !sel.match_namespaces.is_empty()
        || !sel.match_exec_kinds.is_empty()
        || !sel.match_destinations.is_empty()
        || sel.match_encryption.is_some()
        || !sel.match_syscall_args.is_empty()
        || !sel.match_return.is_empty()
        || !sel.match_paths.is_empty()
        || !sel.match_access.is_empty();
    let enforcing = sel.match_actions.iter().any(|a| a.action.is_enforcing());
    if !has_conditions && !namespaced {
        let ev = match hook {
            Hook::Exec => "exec on every host process and workload",
            Hook::Connect => "connect on the node",
            Hook::Egress => "outbound TCP connection on the node",
            Hook::Ingress => "inbound TCP connection to a listening process on the node",
            Hook::Syscall => {
                "call of the named system calls by any process on the node, host processes included"
            }
            Hook::File => "access to any file by any process on the node",
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
    syscall::check(rule, sel, sp, out);
    file::check(rule, sel, sp, out);
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
                    format!("argument index {ix} is beyond what an index can name: argv[0] to argv[{}] (MAX_ARGS = {})", limits::MAX_ARGS - 1, limits::MAX_ARGS),
                    format!("use an index below {}, or omit `index` to match any argument (every argument is examined)", limits::MAX_ARGS),
                ));
            }
        }
        for (vi, v) in a.values.iter().enumerate() {
            let limit = ValueLimit::ARG;
            if v.len() > limit.max {
                out.push(d(
                    codes::VALUE_TOO_LONG,
                    format!("{ap}.values[{vi}]"),
                    format!("argument value is {} bytes; the kernel matches at most {} bytes ({})", v.len(), limit.max, limit.name),
                    format!("shorten it to {} bytes or less (a `Prefix` of the value works for long arguments)", limit.max),
                ));
            }
            if v.contains('\0') {
                out.push(d(
                    codes::EMPTY_VALUES,
                    format!("{ap}.values[{vi}]"),
                    "argument value contains a NUL byte, which no argument can contain",
                    "remove the NUL (`\\0`) from the value",
                ));
            } else if let Some(what) = stray_characters(v) {
                out.push(
                    d(
                        codes::STRAY_CHARACTERS,
                        format!("{ap}.values[{vi}]"),
                        format!("argument value {} {what}; it matches only an argument that has exactly that, which is rarely meant (a copy-paste leftover?)", quoted(v)),
                        match cleaned(v) {
                            c if c.is_empty() => "give the argument's text, or remove the value (leave it if an argument of only white space is really meant: this is a warning)".to_string(),
                            c => format!("write {} (leave the value if the argument really has it: this is a warning)", quoted(&c)),
                        },
                    )
                    .severity(Severity::Warning),
                );
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
    for (k, e) in sel.match_exec_kinds.iter().enumerate() {
        if e.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{sp}.matchExecKinds[{k}].values"),
                "`values` is empty",
                "list at least one exec kind: `fileless` or `loader`",
            ));
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
            if let Some(what) = stray_characters(c) {
                // The API server's `format: cidr` refuses it; the kernel side would trim it.
                out.push(
                    d(
                        codes::STRAY_CHARACTERS,
                        cp,
                        format!(
                            "CIDR {} {what}; the API server refuses it (`must be of type cidr`)",
                            quoted(c)
                        ),
                        format!("write {}", quoted(&cleaned(c))),
                    )
                    .severity(Severity::Error),
                );
                continue;
            }
            match values::parse_cidr(c) {
                Err(e) => out.push(d(
                    codes::INVALID_CIDR,
                    cp,
                    e.to_string(),
                    "write an address with a prefix length, e.g. `10.0.0.0/8` or `2001:db8::/32`",
                )),
                Ok(cidr) if cidr.host_bits => out.push(d(
                    codes::CIDR_HOST_BITS,
                    cp,
                    format!(
                        "CIDR `{c}` has host bits set; it means the network `{}`",
                        cidr.network
                    ),
                    format!("write `{}`", cidr.network),
                )),
                Ok(_) => {}
            }
        }
        for (pi, port) in dest.ports.iter().enumerate() {
            if let Err(e) = values::parse_port(port) {
                let (code, hint) = port_error_code(&e);
                out.push(d(code, format!("{dp}.ports[{pi}]"), e.to_string(), hint));
            }
        }
        if hook.classifies_payload() && dest.protocol == Some(Protocol::UDP) {
            let h = hook.as_str();
            let (msg, sev) = if dest.operator == SetOperator::In {
                (format!("`protocol: UDP` on the {h} hook never matches: only TCP payloads are classified"), Severity::Error)
            } else {
                (format!("`NotIn` with `protocol: UDP` on the {h} hook always holds: only TCP payloads are classified"), Severity::Warning)
            };
            out.push(
                d(
                    codes::UDP_ON_EGRESS,
                    format!("{dp}.protocol"),
                    msg,
                    format!("use `protocol: TCP` (or omit it) on {h}; to act on UDP use `hook: connect`"),
                )
                .severity(sev),
            );
        }
    }
    if sel.match_encryption.is_some() && !hook.classifies_payload() {
        out.push(d(
            codes::ENCRYPTION_OFF_EGRESS,
            format!("{sp}.matchEncryption"),
            format!("`matchEncryption` on rule `{}` with `hook: {}`: encryption is decided from the first payload, which only the egress and ingress hooks see", rule.name, hook.as_str()),
            "use `hook: egress` (what a process sends) or `hook: ingress` (what a server receives) for plaintext/TLS decisions, or remove matchEncryption",
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
                (Hook::Syscall | Hook::File, Action::Block) => "use `Sigkill` to stop the caller (a tracepoint cannot make a system call fail)".to_string(),
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

/// The code and hint of a port that does not parse.
fn port_error_code(e: &PortError) -> (Code, String) {
    let hint = match e {
        PortError::OutOfRange { zero: true, .. } => {
            "port 0 never appears on a connection; omit `ports` to match any port".into()
        }
        PortError::OutOfRange { zero: false, .. } => "use a port from 1 to 65535".into(),
        PortError::NotANumber { .. } => "write a number (`443`) or an inclusive range (`\"8000-8080\"`); service names are not resolved".into(),
        PortError::MissingEnd { .. } => {
            "write an inclusive range as `LOW-HIGH`, e.g. `\"8000-8080\"`".into()
        }
        PortError::Reversed { lo, hi, .. } => format!("write it low to high: `\"{hi}-{lo}\"`"),
    };
    let code = if e.is_range_error() {
        codes::INVALID_PORT_RANGE
    } else {
        codes::INVALID_PORT
    };
    (code, hint)
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
    let postfix = op.kind() == MatchKind::Postfix;
    if let Some(what) = stray_characters(v) {
        // Leading white space makes a path relative, which only `Postfix` can match.
        let never = !postfix && !v.starts_with('/');
        let (sev, tail) = if never {
            (Severity::Error, "so it is not absolute and can never match")
        } else {
            (Severity::Warning, "so it matches only a file whose name has exactly that, which is rarely meant (a copy-paste leftover?)")
        };
        out.push(
            d(
                codes::STRAY_CHARACTERS,
                path,
                format!("binary path {} {what}, {tail}", quoted(v)),
                match cleaned(v) {
                    c if c.is_empty() => {
                        "write the executable's absolute path, e.g. `/usr/bin/curl`".to_string()
                    }
                    c => format!("write {}", quoted(&c)),
                },
            )
            .severity(sev),
        );
        return;
    }
    if let Some(what) = pattern_characters(v) {
        return out.push(d(
            codes::PATTERN_IN_PATH,
            path,
            format!("binary path `{v}` contains {what}, but `{}` compares literal paths (there are no wildcards or regular expressions), so it can never match the executable's path", op_name(op)),
            pattern_hint(op, v),
        ));
    }
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
    if v.len() > 1 && v.ends_with('/') && op.kind() == MatchKind::Exact {
        return bad(
            format!("binary path `{v}` ends with `/`: that is a directory, not an executable"),
            format!(
                "use `operator: Prefix` to match everything under `{v}`, or name the executable"
            ),
            out,
        );
    }
    let ValueLimit { name, max: limit } = ValueLimit::binary(op.kind());
    if v.len() > limit {
        out.push(d(
            codes::VALUE_TOO_LONG,
            path,
            format!("binary path is {} bytes; the kernel matches at most {limit} bytes for `{}` ({name})", v.len(), op_name(op)),
            format!("shorten it to {limit} bytes or less, e.g. match a shorter `Prefix` or `Postfix`"),
        ));
    }
}

/// What makes `v` look like a glob or regular expression rather than a literal path: `*`,
/// `?`, a `[...]` class, a `^` anchor at the start or a `$` at the end, or a `\\` escape.
pub(super) fn pattern_characters(v: &str) -> Option<&'static str> {
    if v.contains('*') {
        Some("`*`")
    } else if v.contains('?') {
        Some("`?`")
    } else if v.find('[').is_some_and(|i| v[i..].contains(']')) {
        Some("a `[...]` character class")
    } else if v.starts_with('^') || v.ends_with('$') {
        Some("a regular-expression anchor (`^` or `$`)")
    } else if v.contains('\\') {
        Some("a `\\` escape")
    } else {
        None
    }
}

/// How to say a glob in a binary path with an operator: a trailing `*` (or `.*`) is a
/// `Prefix`, a leading one a `Postfix`, anything else a list of the paths meant.
pub(super) fn pattern_hint(op: Operator, v: &str) -> String {
    let negated = op.is_negated();
    let literal = |s: &str| pattern_characters(s).is_none() && !s.is_empty();
    let head = v.strip_suffix(".*").or_else(|| v.strip_suffix('*'));
    let tail = v.strip_prefix(".*").or_else(|| v.strip_prefix('*'));
    match (head.filter(|h| literal(h)), tail.filter(|t| literal(t)), op.kind()) {
        (Some(h), _, MatchKind::Prefix) => {
            format!("drop the `*`: `{}` already matches every path that starts with `{h}`", op_name(op))
        }
        (Some(h), _, _) => format!(
            "use `operator: {}` with `{h}` to match every path that starts with it",
            if negated { "NotPrefix" } else { "Prefix" }
        ),
        (_, Some(t), MatchKind::Postfix) => {
            format!("drop the `*`: `{}` already matches every path that ends with `{t}`", op_name(op))
        }
        (_, Some(t), _) => format!(
            "use `operator: {}` with `{t}` to match every path that ends with it",
            if negated { "NotPostfix" } else { "Postfix" }
        ),
        _ => "list each executable's absolute path in `values`, or use `Prefix` / `Postfix` for what they start or end with".into(),
    }
}

/// What is stray in a value: leading or trailing white space, or a control character (NUL is
/// reported on its own).
pub(super) fn stray_characters(v: &str) -> Option<&'static str> {
    let starts = v.starts_with(char::is_whitespace);
    let ends = v.ends_with(char::is_whitespace);
    match (starts, ends) {
        (true, true) => Some("starts and ends with white space"),
        (true, false) => Some("starts with white space"),
        (false, true) => Some("ends with white space"),
        _ if v.chars().any(|c| c.is_control() && c != '\0') => Some("contains a control character"),
        _ => None,
    }
}

/// `v` without surrounding white space and control characters.
pub(super) fn cleaned(v: &str) -> String {
    v.trim().chars().filter(|c| !c.is_control()).collect()
}

/// A value in backquotes, with control characters escaped so the message shows them.
pub(super) fn quoted(v: &str) -> String {
    format!("`{}`", v.escape_debug().to_string().replace('`', "\\`"))
}

pub(super) fn collapse_slashes(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
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
    fn port_errors_map_to_their_codes() {
        let code = |p: PortSpec| port_error_code(&values::parse_port(&p).unwrap_err()).0.id;
        assert_eq!(code(PortSpec::Number(0)), "BW052");
        assert_eq!(code(PortSpec::Number(65536)), "BW052");
        assert_eq!(code(PortSpec::Text("99999999999999999999".into())), "BW052");
        assert_eq!(code(PortSpec::Text("https".into())), "BW052");
        assert_eq!(code(PortSpec::Text("9-1".into())), "BW053");
        assert_eq!(code(PortSpec::Text("9-".into())), "BW053");
        let hint = |p: PortSpec| port_error_code(&values::parse_port(&p).unwrap_err()).1;
        assert!(hint(PortSpec::Number(0)).starts_with("port 0 never appears"));
        assert_eq!(
            hint(PortSpec::Text("9-1".into())),
            "write it low to high: `\"1-9\"`"
        );
    }
}
