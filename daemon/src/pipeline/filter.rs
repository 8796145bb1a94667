//! `bulwark events` filtering and compact rendering, over typed events
//! ([`bulwark_events::Event`]; fields a newer daemon adds are ignored when reading). All filter
//! kinds are ANDed; repeated values of one kind are ORed. Types, actions and outcomes are the
//! schema's own words (their word tables), so a misspelt filter value is an error, not a filter
//! that silently matches nothing.

use bulwark_events::{Action, Body, Event, EventType, Outcome};

/// Filters of `bulwark events`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub types: Vec<EventType>,
    pub policies: Vec<String>,
    pub namespaces: Vec<String>,
    pub pods: Vec<String>,
    pub binaries: Vec<String>,
    pub actions: Vec<ActionOrOutcome>,
}

/// An `--action` value: what a selector does, or what came of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionOrOutcome {
    Action(Action),
    Outcome(Outcome),
}

/// Short forms of `--type` values (the full event type is always accepted too).
const SHORT_TYPES: &[(EventType, &[&str])] = &[
    (EventType::ProcessExec, &["exec"]),
    (EventType::ProcessExit, &["exit"]),
    (EventType::ProcessConnect, &["connect"]),
    (EventType::ProcessClose, &["close"]),
    (EventType::ProcessSyscall, &["syscall"]),
    (EventType::ProcessFile, &["file"]),
    (EventType::ConnStats, &["stats"]),
    (EventType::PolicyMatch, &["match", "policy"]),
    (EventType::Status, &[]),
];

/// The event type a `--type` argument names; an error lists the accepted values.
pub fn parse_type(t: &str) -> Result<EventType, String> {
    let t = t.trim().to_ascii_lowercase();
    for (ty, short) in SHORT_TYPES {
        if t == ty.as_str() || short.contains(&t.as_str()) {
            return Ok(*ty);
        }
    }
    let names: Vec<String> = SHORT_TYPES
        .iter()
        .map(|(ty, short)| match short.first() {
            Some(s) => format!("{ty} ({s})"),
            None => ty.to_string(),
        })
        .collect();
    Err(format!(
        "unknown event type `{t}`; use one of: {}",
        names.join(", ")
    ))
}

/// The action or outcome an `--action` argument names, case-insensitive; an error lists the
/// accepted values.
pub fn parse_action(a: &str) -> Result<ActionOrOutcome, String> {
    let a = a.trim();
    let action = Action::ALL
        .iter()
        .find(|x| x.as_str().eq_ignore_ascii_case(a))
        .map(|x| ActionOrOutcome::Action(*x));
    let outcome = Outcome::ALL
        .iter()
        .find(|x| x.as_str().eq_ignore_ascii_case(a))
        .map(|x| ActionOrOutcome::Outcome(*x));
    action.or(outcome).ok_or_else(|| {
        let words: Vec<&str> = Action::WORDS
            .iter()
            .chain(Outcome::WORDS)
            .copied()
            .collect();
        format!(
            "unknown action or outcome `{a}`; use one of: {}",
            words.join(", ")
        )
    })
}

fn any_or_empty<T>(wanted: &[T], f: impl Fn(&T) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(f)
}

impl Filter {
    /// True when no filter is given (everything passes).
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.policies.is_empty()
            && self.namespaces.is_empty()
            && self.pods.is_empty()
            && self.binaries.is_empty()
            && self.actions.is_empty()
    }

    /// True when the event passes every filter.
    pub fn matches(&self, ev: &Event) -> bool {
        let process = ev.process();
        let pod = process.and_then(|p| p.pod.as_ref());
        let ns = pod.map(|p| p.namespace.as_str());
        let pod_name = pod.map(|p| p.name.as_str());
        let binary = process.map(|p| p.binary.as_str());
        let matched = ev.policy_match();
        any_or_empty(&self.types, |t| *t == ev.event_type())
            && any_or_empty(&self.policies, |p| {
                let Some(m) = matched else { return false };
                let name = m.policy_name.as_deref();
                match p.split_once('/') {
                    Some((n, p)) => name == Some(p) && m.policy_namespace.as_deref() == Some(n),
                    None => name == Some(p.as_str()),
                }
            })
            && any_or_empty(&self.namespaces, |n| ns == Some(n.as_str()))
            && any_or_empty(&self.pods, |p| match p.split_once('/') {
                Some((n, p)) => ns == Some(n) && pod_name == Some(p),
                None => pod_name == Some(p.as_str()),
            })
            && any_or_empty(&self.binaries, |b| match binary {
                // A bare name matches the last path component.
                Some(bin) if !b.contains('/') => bin.rsplit('/').next() == Some(b.as_str()),
                Some(bin) => bin == b,
                None => false,
            })
            && any_or_empty(&self.actions, |a| match (a, matched) {
                (ActionOrOutcome::Action(a), Some(m)) => m.action == *a,
                (ActionOrOutcome::Outcome(o), Some(m)) => m.outcome == *o,
                (_, None) => false,
            })
    }
}

/// `namespace/pod` of the event's process, else the node name.
fn who(ev: &Event) -> String {
    match ev.process().and_then(|p| p.pod.as_ref()) {
        Some(pod) => format!("{}/{}", pod.namespace, pod.name),
        None => ev.node_name.clone(),
    }
}

fn cmdline(ev: &Event) -> String {
    ev.process()
        .map_or_else(|| "?".into(), |p| p.command_line())
}

/// One human line per event, `tetra getevents -o compact` style.
pub fn compact(ev: &Event) -> String {
    match &ev.body {
        Body::ProcessExec { .. } => format!("🚀 process  {} {}", who(ev), cmdline(ev)),
        Body::ProcessExit { status, signal, .. } => {
            let how = signal.clone().unwrap_or_else(|| status.to_string());
            format!("💥 exit     {} {} {how}", who(ev), cmdline(ev))
        }
        Body::ProcessConnect {
            destination,
            blocked,
            ..
        } => format!(
            "{} {} {} {destination}",
            if *blocked {
                "⛔ blocked "
            } else {
                "🔌 connect "
            },
            who(ev),
            cmdline(ev),
        ),
        Body::ProcessClose { connection: c, .. } | Body::ConnStats { connection: c, .. } => {
            let (icon, bytes) = match &ev.body {
                Body::ConnStats { window, .. } => {
                    ("📊 conn    ", (window.bytes_sent, window.bytes_received))
                }
                _ => ("🔒 close   ", (c.bytes_sent, c.bytes_received)),
            };
            format!(
                "{icon} {} {} {} {} -> {} {}/{} sent={} received={}",
                who(ev),
                cmdline(ev),
                c.role,
                c.local,
                c.remote,
                c.sent.protocol,
                c.received.protocol,
                bytes.0,
                bytes.1,
            )
        }
        Body::ProcessSyscall { syscall: c, .. } => {
            let args: Vec<String> = c
                .arguments
                .iter()
                .map(|a| a.decoded.clone().unwrap_or_else(|| a.value.to_string()))
                .collect();
            let mut line = format!(
                "☎️ syscall  {} {} {}({})",
                who(ev),
                cmdline(ev),
                c.name.as_deref().unwrap_or("?"),
                args.join(", ")
            );
            if let Some(r) = c.return_value {
                line.push_str(&format!(" = {r}"));
                if let Some(e) = &c.error {
                    line.push_str(&format!(" {e}"));
                }
            }
            line
        }
        Body::ProcessFile { file: f, .. } => {
            let access: Vec<&str> = f.access.iter().map(|a| a.as_str()).collect();
            let mut line = format!(
                "📄 file     {} {} {} {} {}",
                who(ev),
                cmdline(ev),
                f.syscall
                    .as_deref()
                    .or(f.io_uring.as_deref())
                    .unwrap_or("?"),
                access.join(","),
                f.path.as_deref().unwrap_or("?"),
            );
            if let Some(r) = f.return_value {
                line.push_str(&format!(" = {r}"));
            }
            line
        }
        Body::PolicyMatch(m) => {
            let icon = match m.outcome {
                Outcome::Killed => "💀 killed  ",
                Outcome::Blocked => "⛔ blocked ",
                Outcome::WouldKill => "👀 would_kill",
                Outcome::WouldBlock => "👀 would_block",
                Outcome::Reported => "📝 matched ",
            };
            let mut line = format!(
                "{icon} {} {} [{}/{}]",
                who(ev),
                cmdline(ev),
                m.policy_label(),
                m.rule.as_deref().unwrap_or("?")
            );
            if let Some(d) = &m.destination {
                line.push_str(&format!(" {d}"));
            }
            if let Some(e) = m.encryption {
                line.push_str(&format!(" {e}"));
            }
            line
        }
        Body::Status(st) => format!(
            "ℹ️  status   {} generation={} policies={} diagnostics={} lost_events={}",
            st.state,
            st.generation,
            st.policies.join(","),
            st.diagnostics.len(),
            st.lost_events,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_events::{Destination, Hook, Mode, Pod, PolicyMatch, Process, State, Status};

    fn process(ns: Option<&str>, pod: &str, bin: &str, args: &str) -> Process {
        Process {
            exec_id: "x".into(),
            pid: 1,
            uid: Some(0),
            binary: bin.into(),
            arguments: args.into(),
            start_time: "t".into(),
            pod: ns.map(|ns| Pod {
                namespace: ns.into(),
                name: pod.into(),
                container: "c".into(),
                labels: Default::default(),
            }),
            ..Process::default()
        }
    }

    fn event(body: Body) -> Event {
        Event {
            time: "t".into(),
            node_name: "n1".into(),
            body,
        }
    }

    fn exec(ns: Option<&str>, pod: &str, bin: &str) -> Event {
        event(Body::ProcessExec {
            process: process(ns, pod, bin, "http://x"),
            parent: None,
        })
    }

    fn kill(policy: &str, ns: &str) -> Event {
        event(Body::PolicyMatch(PolicyMatch {
            policy_name: Some(policy.into()),
            policy_namespace: None,
            rule: Some("r".into()),
            hook: Hook::Exec,
            action: Action::Sigkill,
            mode: Mode::Enforce,
            enforced: true,
            outcome: Outcome::Killed,
            process: process(Some(ns), "p", "/usr/bin/nc", ""),
            destination: None,
            encryption: None,
            reason: None,
            file: None,
            syscall: None,
        }))
    }

    fn actions(words: &[&str]) -> Vec<ActionOrOutcome> {
        words.iter().map(|w| parse_action(w).unwrap()).collect()
    }

    #[test]
    fn filters_and_or() {
        let e = exec(Some("prod"), "web-1", "/usr/bin/curl");
        let host = exec(None, "", "/usr/bin/curl");
        let k = kill("no-nc", "prod");
        assert!(Filter::default().matches(&e));
        let f = Filter {
            types: vec![parse_type("exec").unwrap()],
            ..Default::default()
        };
        assert!(f.matches(&e) && !f.matches(&k));
        // Repeated values OR.
        let f = Filter {
            types: vec![EventType::ProcessExec, EventType::PolicyMatch],
            ..Default::default()
        };
        assert!(f.matches(&e) && f.matches(&k));
        // Different kinds AND.
        let f = Filter {
            namespaces: vec!["prod".into()],
            binaries: vec!["curl".into()],
            ..Default::default()
        };
        assert!(f.matches(&e) && !f.matches(&k) && !f.matches(&host));
        let f = Filter {
            binaries: vec!["/usr/bin/curl".into()],
            ..Default::default()
        };
        assert!(f.matches(&e) && f.matches(&host));
        let f = Filter {
            binaries: vec!["/bin/curl".into()],
            ..Default::default()
        };
        assert!(!f.matches(&e));
        let f = Filter {
            pods: vec!["prod/web-1".into()],
            ..Default::default()
        };
        assert!(f.matches(&e) && !f.matches(&host));
        let f = Filter {
            pods: vec!["dev/web-1".into()],
            ..Default::default()
        };
        assert!(!f.matches(&e));
        let f = Filter {
            policies: vec!["no-nc".into()],
            actions: actions(&["sigkill"]),
            ..Default::default()
        };
        assert!(f.matches(&k) && !f.matches(&e));
        let f = Filter {
            actions: actions(&["would_kill"]),
            ..Default::default()
        };
        assert!(!f.matches(&k));
        let f = Filter {
            actions: actions(&["killed"]),
            ..Default::default()
        };
        assert!(f.matches(&k));
        let f = Filter {
            policies: vec!["other".into()],
            ..Default::default()
        };
        assert!(!f.matches(&k));
        let mut namespaced = kill("no-nc", "prod");
        if let Body::PolicyMatch(m) = &mut namespaced.body {
            m.policy_namespace = Some("prod".into());
        }
        let f = Filter {
            policies: vec!["prod/no-nc".into()],
            ..Default::default()
        };
        assert!(f.matches(&namespaced) && !f.matches(&k));
    }

    #[test]
    fn type_aliases_and_errors() {
        assert_eq!(parse_type("connect").unwrap(), EventType::ProcessConnect);
        assert_eq!(parse_type("policy").unwrap(), EventType::PolicyMatch);
        assert_eq!(parse_type("STATUS").unwrap(), EventType::Status);
        assert_eq!(parse_type("file").unwrap(), EventType::ProcessFile);
        let err = parse_type("bogus").unwrap_err();
        assert!(
            err.contains("bogus") && err.contains("process_exec"),
            "{err}"
        );
        for ty in EventType::ALL {
            assert_eq!(
                parse_type(ty.as_str()).unwrap(),
                *ty,
                "every type has a filter"
            );
        }
    }

    #[test]
    fn actions_and_outcomes_are_words_of_the_schema() {
        assert_eq!(
            parse_action("BLOCK").unwrap(),
            ActionOrOutcome::Action(Action::Block)
        );
        assert_eq!(
            parse_action("Would_Block").unwrap(),
            ActionOrOutcome::Outcome(Outcome::WouldBlock)
        );
        let err = parse_action("kill").unwrap_err();
        assert!(
            err.contains("`kill`") && err.contains("Sigkill") && err.contains("would_kill"),
            "{err}"
        );
    }

    #[test]
    fn compact_lines() {
        let e = exec(Some("prod"), "web-1", "/usr/bin/curl");
        assert_eq!(compact(&e), "🚀 process  prod/web-1 /usr/bin/curl http://x");
        let host = exec(None, "", "/usr/bin/curl");
        assert_eq!(compact(&host), "🚀 process  n1 /usr/bin/curl http://x");
        let p = process(Some("prod"), "web-1", "/usr/bin/curl", "http://x");
        let x = event(Body::ProcessExit {
            process: p.clone(),
            status: 0,
            signal: Some("SIGKILL".into()),
        });
        assert!(compact(&x).starts_with("💥 exit     prod/web-1 /usr/bin/curl http://x SIGKILL"));
        let mut destination = Destination {
            ip: "10.0.0.2".into(),
            port: 80,
            protocol: "TCP".into(),
        };
        let c = event(Body::ProcessConnect {
            process: p.clone(),
            destination: destination.clone(),
            blocked: false,
        });
        assert!(compact(&c).starts_with("🔌 connect "));
        assert!(compact(&c).ends_with("10.0.0.2:80 TCP"));
        destination.ip = "fd00::2".into();
        let c = event(Body::ProcessConnect {
            process: p,
            destination,
            blocked: true,
        });
        assert!(compact(&c).starts_with("⛔ blocked "));
        assert!(compact(&c).ends_with("[fd00::2]:80 TCP"));
        let f = event(Body::ProcessFile {
            process: process(Some("prod"), "web-1", "/usr/bin/cat", "../../etc/shadow"),
            file: bulwark_events::FileAccessed {
                path: Some("/etc/shadow".into()),
                path_resolved: true,
                access: vec![bulwark_policy::FileAccess::Read],
                syscall: Some("openat".into()),
                io_uring: None,
                unjudged: None,
                abi: "x86_64".into(),
                flags: Some("O_RDONLY".into()),
                return_value: Some(3),
                device: None,
                inode: None,
            },
        });
        assert_eq!(
            compact(&f),
            "📄 file     prod/web-1 /usr/bin/cat ../../etc/shadow openat read /etc/shadow = 3"
        );
        let k = kill("no-nc", "prod");
        assert_eq!(compact(&k), "💀 killed   prod/p /usr/bin/nc [no-nc/r]");
        let st = event(Body::Status(Status {
            state: State::Ready,
            generation: 1,
            policies: vec!["a".into(), "b".into()],
            diagnostics: vec![],
            lost_events: 0,
            warnings: vec![],
            stale_processes: 0,
            load_ms: None,
            apply_ms: None,
        }));
        assert!(compact(&st).contains("ready generation=1 policies=a,b"));
    }
}
