//! What a Tetragon hook and its selectors mean in bulwark's model. Tetragon hooks kernel
//! functions; bulwark hooks events, so a hook translates only when it *is* one of bulwark's
//! events: an exec (`execve`/`execveat` syscalls, the `security_bprm_*` functions and their LSM
//! hooks, the `sched_process_exec` and `sys_enter_execve*` tracepoints) or an outbound connect
//! (`tcp_connect`, `tcp_v4_connect`/`tcp_v6_connect`, `security_socket_connect`, the `connect`
//! syscall, the `socket_connect` LSM hook). Every other hook (files, other syscalls,
//! capabilities, uprobes) is reported with the reason.
//!
//! Selector by selector: the path argument of an exec hook becomes `matchBinaries`; the
//! destination of a connect (DAddr/DPort/Protocol/Family on a `sock`, SAddr/SPort/Family on the
//! `sockaddr` passed to connect) becomes `matchDestinations`; `matchBinaries` keeps its
//! meaning where the process it selects is the one bulwark sees; `matchActions` map to `Post`,
//! `Sigkill` and `Block`. Each condition that cannot be translated is a finding, and one whose
//! loss makes the selector match more than before is marked `broadens` (the policy is then
//! converted in monitor mode, see [`crate::convert_document`]).

use crate::report::{Finding, FindingKind, HookReport, Outcome, SelectorReport};
use crate::tetragon::{scalar_text, values, Hook};
use bulwark_policy::yaml::{Node, Value};
use bulwark_policy::{
    Action, ActionSelector, BinarySelector, DestinationSelector, Operator, PortSpec, Protocol,
    Selector, SetOperator,
};

/// The bulwark event a Tetragon hook is.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Exec {
        /// Which declared argument is the path of the executed file.
        path_arg: PathArg,
        /// True when the hook runs after the new image is in place, so Tetragon's
        /// `matchBinaries` selects the program being executed (as bulwark's does).
        binaries_select_new_image: bool,
    },
    Connect {
        /// The destination as the hook sees it.
        addr: AddrArg,
        /// What the hook itself implies (`tcp_connect` sees only TCP).
        implied: Option<DestinationSelector>,
    },
}

impl Target {
    pub fn hook(&self) -> bulwark_policy::Hook {
        match self {
            Target::Exec { .. } => bulwark_policy::Hook::Exec,
            Target::Connect { .. } => bulwark_policy::Hook::Connect,
        }
    }
}

/// Where an exec hook's path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathArg {
    /// The string argument with this index.
    Index(i64),
    /// The argument of type `linux_binprm` (Tetragon reads the file's path from it).
    Binprm,
}

/// How a connect hook's destination is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrArg {
    /// A `sock` argument: DAddr, DPort, Protocol, Family.
    Sock,
    /// The `sockaddr` passed to connect: its SAddr/SPort are the destination.
    Sockaddr,
}

/// The syscall name inside an architecture-prefixed symbol (`__x64_sys_execve` -> `execve`).
fn syscall_name(call: &str) -> &str {
    for prefix in [
        "__x64_sys_",
        "__arm64_sys_",
        "__ia32_sys_",
        "__se_sys_",
        "ksys_",
        "sys_",
    ] {
        if let Some(rest) = call.strip_prefix(prefix) {
            return rest;
        }
    }
    call
}

fn tcp(cidr: Option<&str>) -> Option<DestinationSelector> {
    Some(DestinationSelector {
        operator: SetOperator::In,
        cidrs: cidr.into_iter().map(String::from).collect(),
        ports: Vec::new(),
        protocol: Some(Protocol::TCP),
    })
}

/// The bulwark event `hook` is, or why it has none.
pub fn classify(hook: &Hook) -> Result<Target, String> {
    let pre_exec = |path_arg| Target::Exec {
        path_arg,
        binaries_select_new_image: false,
    };
    let connect = |addr, implied| Target::Connect { addr, implied };
    let call = hook.call.as_str();
    let target = match hook.section {
        "kprobes" => match syscall_name(call) {
            "execve" if hook.syscall || call != "execve" => Some(pre_exec(PathArg::Index(0))),
            "execveat" if hook.syscall || call != "execveat" => Some(pre_exec(PathArg::Index(1))),
            "connect" if hook.syscall || call != "connect" => {
                Some(connect(AddrArg::Sockaddr, None))
            }
            "__sys_connect" => Some(connect(AddrArg::Sockaddr, None)),
            _ => match call {
                "security_bprm_check"
                | "security_bprm_creds_for_exec"
                | "security_bprm_creds_from_file"
                | "security_bprm_committed_creds" => Some(pre_exec(PathArg::Binprm)),
                "tcp_connect" => Some(connect(AddrArg::Sock, tcp(None))),
                "tcp_v4_connect" => Some(connect(AddrArg::Sockaddr, tcp(Some("0.0.0.0/0")))),
                "tcp_v6_connect" => Some(connect(AddrArg::Sockaddr, tcp(Some("::/0")))),
                "security_socket_connect" => Some(connect(AddrArg::Sockaddr, None)),
                _ => None,
            },
        },
        "lsmhooks" => match call {
            "bprm_check_security"
            | "bprm_creds_for_exec"
            | "bprm_creds_from_file"
            | "bprm_committed_creds" => Some(pre_exec(PathArg::Binprm)),
            "socket_connect" => Some(connect(AddrArg::Sockaddr, None)),
            _ => None,
        },
        "tracepoints" => match call {
            // Tracepoint argument indexes count the common fields (0-3) first.
            "sched/sched_process_exec" => Some(Target::Exec {
                path_arg: PathArg::Index(4),
                binaries_select_new_image: true,
            }),
            "syscalls/sys_enter_execve" => Some(pre_exec(PathArg::Index(5))),
            "syscalls/sys_enter_execveat" => Some(pre_exec(PathArg::Index(6))),
            _ => None,
        },
        _ => None,
    };
    target.ok_or_else(|| why_no_target(hook))
}

/// Why a hook has no bulwark event, in terms of what it watches.
fn why_no_target(hook: &Hook) -> String {
    const EVENTS: &str =
        "bulwark hooks three events: exec, connect and the sends of egress connections";
    let call = hook.call.as_str();
    if matches!(hook.section, "uprobes" | "usdts") {
        return format!(
            "user-space probes (`{}`) have no bulwark counterpart; {EVENTS}",
            hook.section
        );
    }
    let file_words = [
        "file",
        "fd_install",
        "open",
        "read",
        "write",
        "unlink",
        "rename",
        "mmap",
        "path_",
        "inode",
        "truncate",
        "chmod",
        "chown",
        "mkdir",
        "link",
    ];
    let what = if file_words.iter().any(|w| call.contains(w)) {
        "bulwark has no file hook yet"
    } else if call.contains("cap_")
        || call.contains("capable")
        || call.contains("setuid")
        || call.contains("setgid")
        || call.contains("cred")
    {
        "bulwark has no privilege or credential hook"
    } else if call.contains("module") || call.contains("bpf") || call.contains("ptrace") {
        "bulwark has no kernel-integrity hook"
    } else if call.contains("sendmsg")
        || call.contains("accept")
        || call.contains("bind")
        || call.contains("listen")
        || call.contains("close")
        || call.contains("sock")
    {
        "bulwark's network hooks are the outbound connect and egress sends, not this one"
    } else if hook.syscall || hook.section == "tracepoints" {
        "bulwark has no hook on arbitrary syscalls or tracepoints"
    } else {
        "bulwark has no hook on arbitrary kernel functions"
    };
    format!("`{call}`: {what}; {EVENTS}")
}

/// A condition or action that did not translate: what it was and why.
struct Loss {
    path: String,
    line: u32,
    what: String,
    why: String,
    broadens: bool,
}

impl Loss {
    fn into_finding(self, kind: FindingKind) -> Finding {
        Finding {
            kind,
            path: self.path,
            line: self.line,
            what: self.what,
            why: self.why,
            broadens: self.broadens,
        }
    }
}

fn operator_text(entry: &Node) -> String {
    entry
        .get("operator")
        .and_then(scalar_text)
        .unwrap_or_default()
}

/// A Tetragon string operator as bulwark's (`Equal` -> `In`, `NotEqual` -> `NotIn`).
fn string_operator(op: &str) -> Option<Operator> {
    Some(match op {
        "Equal" | "In" => Operator::In,
        "NotEqual" | "NotIn" => Operator::NotIn,
        "Prefix" => Operator::Prefix,
        "NotPrefix" => Operator::NotPrefix,
        "Postfix" => Operator::Postfix,
        "NotPostfix" => Operator::NotPostfix,
        _ => return None,
    })
}

const PATH_OPERATORS: &str = "bulwark compares paths with In, NotIn, Prefix, NotPrefix, Postfix, NotPostfix (Tetragon's Equal/NotEqual are In/NotIn)";

fn path_values(entry: &Node, op_text: &str) -> Result<(Operator, Vec<String>), String> {
    let op = string_operator(op_text).ok_or_else(|| {
        format!("operator `{op_text}` has no bulwark counterpart; {PATH_OPERATORS}")
    })?;
    let vals = values(entry)?;
    if vals.is_empty() {
        return Err("no `values`".into());
    }
    if let Some(list) = vals.iter().find(|v| v.starts_with("list:")) {
        return Err(format!(
            "`{list}` refers to a Tetragon `spec.lists` entry, which is not expanded; write the paths out in the bulwark policy"
        ));
    }
    Ok((op, vals))
}

fn arg_index(entry: &Node) -> i64 {
    match entry.get("index").map(|n| &n.value) {
        Some(Value::Int(i)) => *i,
        _ => 0,
    }
}

/// An exec hook's `matchArgs` entry: the path argument becomes a `matchBinaries` entry.
fn exec_arg(hook: &Hook, path_arg: PathArg, entry: &Node) -> Result<BinarySelector, String> {
    let index = arg_index(entry);
    let ty = hook.arg_type(index).unwrap_or("undeclared");
    let is_path = ty == "linux_binprm" || path_arg == PathArg::Index(index);
    if !is_path {
        return Err(format!(
            "argument {index} (`{ty}`) of `{}` is not the path of the executed file; on exec bulwark matches the executed file (matchBinaries) and argv (matchArgs), not other arguments",
            hook.call
        ));
    }
    let (operator, values) = path_values(entry, &operator_text(entry))?;
    Ok(BinarySelector { operator, values })
}

/// Tetragon's `min:max` port range as bulwark's `min-max`.
fn port_spec(v: &str) -> PortSpec {
    match v.parse::<i64>() {
        Ok(n) => PortSpec::Number(n),
        Err(_) => PortSpec::Text(v.replace(':', "-")),
    }
}

fn dest(negated: bool) -> DestinationSelector {
    DestinationSelector {
        operator: if negated {
            SetOperator::NotIn
        } else {
            SetOperator::In
        },
        cidrs: Vec::new(),
        ports: Vec::new(),
        protocol: None,
    }
}

/// A connect hook's `matchArgs` entry as a `matchDestinations` entry; `Ok(None)` when it holds
/// for everything bulwark's connect hook sees (e.g. `Family: [AF_INET, AF_INET6]`).
fn connect_arg(
    hook: &Hook,
    addr: AddrArg,
    entry: &Node,
) -> Result<Option<DestinationSelector>, String> {
    let index = arg_index(entry);
    let ty = hook.arg_type(index).unwrap_or("undeclared");
    let op = operator_text(entry);
    let negated = op.starts_with("Not");
    let base = op.strip_prefix("Not").unwrap_or(&op);
    let expected = match addr {
        AddrArg::Sock => "sock",
        AddrArg::Sockaddr => "sockaddr",
    };
    if ty != expected {
        return Err(format!(
            "argument {index} of `{}` is `{ty}`, not the `{expected}` that holds the destination; bulwark's connect rules match the destination only",
            hook.call
        ));
    }
    let vals = values(entry)?;
    let (addr_op, port_op) = match addr {
        AddrArg::Sock => ("DAddr", "DPort"),
        AddrArg::Sockaddr => ("SAddr", "SPort"),
    };
    let mut d = dest(negated);
    match base {
        b if b == addr_op => d.cidrs = vals,
        b if b == port_op => d.ports = vals.iter().map(|v| port_spec(v)).collect(),
        "DPortPriv" if addr == AddrArg::Sock => d.ports = vec![PortSpec::Text("1-1023".into())],
        "Protocol" if !negated => {
            let mut protocols = Vec::new();
            for v in &vals {
                protocols.push(match v.as_str() {
                    "IPPROTO_TCP" | "6" | "TCP" | "tcp" => Protocol::TCP,
                    "IPPROTO_UDP" | "17" | "UDP" | "udp" => Protocol::UDP,
                    other => {
                        return Err(format!(
                            "protocol `{other}`: bulwark's connect hook sees TCP and UDP only"
                        ))
                    }
                });
            }
            protocols.dedup();
            if protocols.len() != 1 {
                return Ok(None);
            }
            d.protocol = protocols.pop();
        }
        "Family" if !negated => {
            let mut cidrs = Vec::new();
            for v in &vals {
                cidrs.push(match v.as_str() {
                    "AF_INET" | "2" => "0.0.0.0/0",
                    "AF_INET6" | "10" => "::/0",
                    other => {
                        return Err(format!(
                        "address family `{other}`: bulwark's connect hook sees IPv4 and IPv6 only"
                    ))
                    }
                });
            }
            cidrs.sort_unstable();
            cidrs.dedup();
            if cidrs.len() != 1 {
                return Ok(None);
            }
            d.cidrs = cidrs.into_iter().map(String::from).collect();
        }
        _ => {
            let source =
                matches!(addr, AddrArg::Sock) && (base == "SAddr" || base.starts_with("SPort"));
            return Err(if source {
                format!("operator `{op}` selects the source address or port; bulwark's connect rules match the destination only")
            } else {
                format!("operator `{op}` on a `{ty}` has no bulwark counterpart; bulwark matches destination CIDRs, ports and protocol")
            });
        }
    }
    if d.cidrs.is_empty() && d.ports.is_empty() && d.protocol.is_none() {
        return Err("no `values`".into());
    }
    Ok(Some(d))
}

/// A `matchActions` entry as a bulwark action, with a finding when its meaning changes.
fn action(target: &Target, entry: &Node) -> Result<(Action, Option<String>), String> {
    let name = entry
        .get("action")
        .and_then(scalar_text)
        .unwrap_or_default();
    let exec = matches!(target, Target::Exec { .. });
    let signal = entry
        .get("argSig")
        .and_then(scalar_text)
        .unwrap_or_default();
    let kill_signal = signal == "9" || signal.eq_ignore_ascii_case("SIGKILL");
    let arg_error = entry.get("argError").and_then(scalar_text);
    let lower = name.to_ascii_lowercase();
    Ok(match (lower.as_str(), exec) {
        ("post", _) => (Action::Post, None),
        ("sigkill", true) => (Action::Sigkill, None),
        ("sigkill", false) => (
            Action::Block,
            Some("`Sigkill` -> `Block`: bulwark refuses the connect (EPERM) instead of killing the process".into()),
        ),
        ("signal", true) if kill_signal => (Action::Sigkill, None),
        ("signal", false) if kill_signal => (
            Action::Block,
            Some("`Signal` SIGKILL -> `Block`: bulwark refuses the connect (EPERM) instead of killing the process".into()),
        ),
        ("override", true) => (
            Action::Sigkill,
            Some("`Override` -> `Sigkill`: bulwark kills the process at exec, before the new image runs, where Tetragon makes the exec fail with an error".into()),
        ),
        ("override", false) => match arg_error.as_deref() {
            Some("-1") => (Action::Block, None),
            other => (
                Action::Block,
                Some(format!(
                    "`Override` -> `Block`: the connect fails with EPERM (-1), not {}",
                    other.map_or("Tetragon's error".to_string(), |e| format!("error {e}"))
                )),
            ),
        },
        ("notifyenforcer", true) => (
            Action::Sigkill,
            Some("`NotifyEnforcer` -> `Sigkill`: bulwark kills the process at exec itself".into()),
        ),
        ("notifyenforcer", false) => (
            Action::Block,
            Some("`NotifyEnforcer` -> `Block`: bulwark refuses the connect (EPERM) itself".into()),
        ),
        ("signal", _) => {
            return Err(format!(
                "`Signal` with signal `{signal}`: bulwark sends no signal other than SIGKILL"
            ))
        }
        ("nopost", _) => {
            return Err("`NoPost`: bulwark reports every match of a selector (events say what was done)".into())
        }
        _ => {
            return Err(format!(
                "action `{name}` has no bulwark counterpart; bulwark's actions are Post, {} and the events it reports",
                if exec { "Sigkill" } else { "Block" }
            ))
        }
    })
}

/// Why a Tetragon selector field cannot be translated (each is a condition, so dropping it
/// broadens the selector), or `None` for fields handled elsewhere.
fn untranslatable_field(key: &str) -> Option<&'static str> {
    Some(match key {
        "matchPIDs" => "bulwark selects processes by binary, arguments and Kubernetes namespace, not by PID",
        "matchNamespaces" => "Tetragon's matchNamespaces are Linux namespaces (Pid, Mnt, Net, ...); bulwark's are Kubernetes namespaces, and it has no Linux-namespace selector",
        "matchCapabilities" | "matchCapabilityChanges" => "bulwark has no capability selector",
        "matchNamespaceChanges" => "bulwark has no namespace-change selector",
        "matchReturnArgs" => "bulwark decides before the call and never sees its return value",
        "matchArgs" | "matchBinaries" | "matchActions" | "matchReturnActions" => return None,
        _ => "not a Tetragon selector field bulwark knows",
    })
}

/// One translated selector and its report.
pub struct SelectorOut {
    pub selector: Option<Selector>,
    pub report: SelectorReport,
}

/// Translates `selectors[i]` of `hook`.
pub fn selector(hook: &Hook, target: &Target, i: usize, node: &Node) -> SelectorOut {
    let path = format!("{}.selectors[{i}]", hook.path);
    let none = |path: String, reason: String, findings: Vec<Finding>| SelectorOut {
        selector: None,
        report: SelectorReport {
            path,
            line: node.pos.line,
            outcome: Outcome::None,
            reason: Some(reason),
            findings,
        },
    };
    let Value::Map(entries) = &node.value else {
        return none(
            path,
            format!(
                "the selector is a {}, expected a mapping",
                node.value.type_name()
            ),
            Vec::new(),
        );
    };
    let mut sel = Selector::default();
    let mut findings = Vec::new();
    let mut had_conditions = false;
    let mut actions: Option<Vec<Action>> = None;
    for e in entries {
        let key_path = format!("{path}.{}", e.key);
        let items: Vec<&Node> = match &e.value.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![&e.value],
        };
        let mut lose = |j: usize, n: &Node, what: String, why: String, broadens: bool, kind| {
            findings.push(
                Loss {
                    path: format!("{key_path}[{j}]"),
                    line: n.pos.line,
                    what,
                    why,
                    broadens,
                }
                .into_finding(kind),
            )
        };
        match e.key.as_str() {
            "matchArgs" => {
                had_conditions |= !items.is_empty();
                for (j, n) in items.into_iter().enumerate() {
                    let what = format!("matchArgs index {} {}", arg_index(n), operator_text(n));
                    let r = match target {
                        Target::Exec { path_arg, .. } => exec_arg(hook, *path_arg, n).map(|b| {
                            sel.match_binaries.push(b);
                        }),
                        Target::Connect { addr, .. } => connect_arg(hook, *addr, n).map(|d| {
                            sel.match_destinations.extend(d);
                        }),
                    };
                    if let Err(why) = r {
                        lose(j, n, what, why, true, FindingKind::Dropped);
                    }
                }
            }
            "matchBinaries" => {
                had_conditions |= !items.is_empty();
                for (j, n) in items.into_iter().enumerate() {
                    let op = operator_text(n);
                    let what = format!("matchBinaries {op}");
                    if let Target::Exec {
                        binaries_select_new_image: false,
                        ..
                    } = target
                    {
                        lose(j, n, what, format!("on `{}` Tetragon's matchBinaries selects the program that calls exec (the image being replaced); bulwark's matchBinaries selects the program being executed, and bulwark has no selector on the caller", hook.call), true, FindingKind::Dropped);
                        continue;
                    }
                    match path_values(n, &op) {
                        Ok((operator, values)) => {
                            sel.match_binaries.push(BinarySelector { operator, values });
                            if matches!(
                                n.get("followChildren").map(|f| &f.value),
                                Some(Value::Bool(true))
                            ) {
                                lose(j, n, "matchBinaries followChildren".into(), "bulwark matches the binary's own process, not its descendants, so the rule matches less than in Tetragon".into(), false, FindingKind::Dropped);
                            }
                        }
                        Err(why) => lose(j, n, what, why, true, FindingKind::Dropped),
                    }
                }
            }
            "matchActions" => {
                let list = actions.get_or_insert_with(Vec::new);
                for (j, n) in items.into_iter().enumerate() {
                    let name = n.get("action").and_then(scalar_text).unwrap_or_default();
                    match action(target, n) {
                        Ok((a, changed)) => {
                            if !list.contains(&a) {
                                list.push(a);
                            }
                            if let Some(why) = changed {
                                lose(
                                    j,
                                    n,
                                    format!("action {name}"),
                                    why,
                                    false,
                                    FindingKind::Changed,
                                );
                            }
                            for extra in [
                                "rateLimit",
                                "rateLimitScope",
                                "kernelStackTrace",
                                "userStackTrace",
                                "imaHash",
                            ] {
                                if n.get(extra).is_some() {
                                    lose(j, n, format!("action {name} {extra}"), format!("`{extra}`: bulwark's Post has no such option; every match is reported"), false, FindingKind::Dropped);
                                }
                            }
                        }
                        Err(why) => lose(
                            j,
                            n,
                            format!("action {name}"),
                            why,
                            false,
                            FindingKind::Dropped,
                        ),
                    }
                }
            }
            "matchReturnActions" => {
                for (j, n) in items.into_iter().enumerate() {
                    let name = n.get("action").and_then(scalar_text).unwrap_or_default();
                    lose(
                        j,
                        n,
                        format!("matchReturnActions {name}"),
                        "bulwark acts before the call, never on its return".into(),
                        false,
                        FindingKind::Dropped,
                    );
                }
            }
            key => {
                had_conditions = true;
                let why = untranslatable_field(key).unwrap_or("not translated");
                findings.push(Finding {
                    kind: FindingKind::Dropped,
                    path: key_path,
                    line: e.key_pos.line,
                    what: key.to_string(),
                    why: why.to_string(),
                    broadens: true,
                });
            }
        }
    }
    // A selector without matchActions posts an event in Tetragon.
    let actions = actions.unwrap_or_else(|| vec![Action::Post]);
    if actions.is_empty() {
        return none(path, "no action bulwark can take is left".into(), findings);
    }
    let conditions = sel.match_binaries.len() + sel.match_destinations.len();
    if had_conditions && conditions == 0 {
        return none(
            path,
            format!(
                "every condition was dropped; the selector would match every {} event",
                target.hook()
            ),
            findings,
        );
    }
    if let Target::Connect {
        implied: Some(d), ..
    } = target
    {
        if !sel.match_destinations.contains(d) {
            sel.match_destinations.push(d.clone());
        }
    }
    sel.match_actions = actions
        .into_iter()
        .map(|action| ActionSelector { action })
        .collect();
    let outcome = if findings.iter().any(Finding::is_loss) {
        Outcome::Partial
    } else {
        Outcome::Full
    };
    SelectorOut {
        selector: Some(sel),
        report: SelectorReport {
            path,
            line: node.pos.line,
            outcome,
            reason: None,
            findings,
        },
    }
}

/// Translates a hook: its selectors (a hook without selectors reports every call: one selector
/// with no conditions) and its report. The rule name is filled in by the caller.
pub fn hook(hook: &Hook) -> (Option<(Target, Vec<Selector>)>, HookReport) {
    let mut report = HookReport {
        path: hook.path.clone(),
        line: hook.line,
        call: hook.call.clone(),
        outcome: Outcome::None,
        rule: None,
        hook: None,
        reason: None,
        selectors: Vec::new(),
    };
    if let Some(e) = &hook.error {
        report.reason = Some(e.clone());
        return (None, report);
    }
    let target = match classify(hook) {
        Ok(t) => t,
        Err(why) => {
            report.reason = Some(why);
            return (None, report);
        }
    };
    let mut selectors = Vec::new();
    if hook.selectors.is_empty() {
        let mut sel = Selector::default();
        if let Target::Connect {
            implied: Some(d), ..
        } = &target
        {
            sel.match_destinations.push(d.clone());
        }
        sel.match_actions = vec![ActionSelector {
            action: Action::Post,
        }];
        selectors.push(sel);
        report.outcome = Outcome::Full;
    } else {
        for (i, node) in hook.selectors.iter().enumerate() {
            let out = selector(hook, &target, i, node);
            selectors.extend(out.selector);
            report.selectors.push(out.report);
        }
        report.outcome = Outcome::combine(report.selectors.iter().map(|s| s.outcome));
    }
    if selectors.is_empty() {
        report.reason = Some("no selector could be translated".into());
        return (None, report);
    }
    report.hook = Some(target.hook().to_string());
    (Some((target, selectors)), report)
}
