//! `bulwark events` filtering and compact rendering, over parsed JSON lines (so events written
//! by newer daemons with extra fields still filter). All filter kinds are ANDed; repeated values
//! of one kind are ORed.

use serde_json::Value;

/// Filters of `bulwark events`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub types: Vec<String>,
    pub policies: Vec<String>,
    pub namespaces: Vec<String>,
    pub pods: Vec<String>,
    pub binaries: Vec<String>,
    pub actions: Vec<String>,
}

/// Accepted `--type` values: the event type or a short alias.
pub const TYPES: &[(&str, &str)] = &[
    ("process_exec", "exec"),
    ("process_exit", "exit"),
    ("process_connect", "connect"),
    ("policy_match", "match"),
    ("status", "status"),
];

/// Canonical type name of a `--type` argument; an error lists the accepted values.
pub fn normalize_type(t: &str) -> Result<String, String> {
    let t = t.trim().to_ascii_lowercase();
    for (full, short) in TYPES {
        if t == *full || t == *short || (t == "policy" && *full == "policy_match") {
            return Ok(full.to_string());
        }
    }
    let names: Vec<String> = TYPES.iter().map(|(f, s)| format!("{f} ({s})")).collect();
    Err(format!(
        "unknown event type `{t}`; use one of: {}",
        names.join(", ")
    ))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn any_or_empty(wanted: &[String], f: impl Fn(&str) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| f(w))
}

impl Filter {
    /// True when the event passes every filter.
    pub fn matches(&self, ev: &Value) -> bool {
        let ty = s(ev, &["type"]).unwrap_or("");
        let ns = s(ev, &["process", "pod", "namespace"]);
        let pod = s(ev, &["process", "pod", "name"]);
        let binary = s(ev, &["process", "binary"]);
        any_or_empty(&self.types, |t| t == ty)
            && any_or_empty(&self.policies, |p| {
                let name = s(ev, &["policy_name"]);
                let pns = s(ev, &["policy_namespace"]);
                match p.split_once('/') {
                    Some((n, p)) => name == Some(p) && pns == Some(n),
                    None => name == Some(p),
                }
            })
            && any_or_empty(&self.namespaces, |n| ns == Some(n))
            && any_or_empty(&self.pods, |p| match p.split_once('/') {
                Some((n, p)) => ns == Some(n) && pod == Some(p),
                None => pod == Some(p),
            })
            && any_or_empty(&self.binaries, |b| match binary {
                // A bare name matches the last path component.
                Some(bin) if !b.contains('/') => bin.rsplit('/').next() == Some(b),
                Some(bin) => bin == b,
                None => false,
            })
            && any_or_empty(&self.actions, |a| {
                let action = s(ev, &["action"]).unwrap_or("");
                let outcome = s(ev, &["outcome"]).unwrap_or("");
                action.eq_ignore_ascii_case(a) || outcome.eq_ignore_ascii_case(a)
            })
    }
}

fn who(ev: &Value) -> String {
    match (
        s(ev, &["process", "pod", "namespace"]),
        s(ev, &["process", "pod", "name"]),
    ) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => s(ev, &["node_name"]).unwrap_or("?").to_string(),
    }
}

fn cmdline(ev: &Value) -> String {
    let bin = s(ev, &["process", "binary"]).unwrap_or("?");
    match s(ev, &["process", "arguments"]) {
        Some(a) if !a.is_empty() => format!("{bin} {a}"),
        _ => bin.to_string(),
    }
}

fn dest(ev: &Value) -> Option<String> {
    let d = ev.get("destination").filter(|d| !d.is_null())?;
    let ip = d.get("ip")?.as_str()?;
    let port = d.get("port")?.as_u64()?;
    let proto = d.get("protocol").and_then(Value::as_str).unwrap_or("");
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(format!("{host}:{port} {proto}"))
}

/// One human line per event, `tetra getevents -o compact` style.
pub fn compact(ev: &Value) -> String {
    let ty = s(ev, &["type"]).unwrap_or("");
    match ty {
        "process_exec" => format!("🚀 process  {} {}", who(ev), cmdline(ev)),
        "process_exit" => {
            let how = match s(ev, &["signal"]) {
                Some(sig) => sig.to_string(),
                None => format!("{}", ev.get("status").and_then(Value::as_u64).unwrap_or(0)),
            };
            format!("💥 exit     {} {} {how}", who(ev), cmdline(ev))
        }
        "process_connect" => {
            let blocked = ev.get("blocked").and_then(Value::as_bool).unwrap_or(false);
            format!(
                "{} {} {} {}",
                if blocked {
                    "⛔ blocked "
                } else {
                    "🔌 connect "
                },
                who(ev),
                cmdline(ev),
                dest(ev).unwrap_or_default()
            )
        }
        "policy_match" => {
            let outcome = s(ev, &["outcome"]).unwrap_or("");
            let icon = match outcome {
                "killed" => "💀 killed  ",
                "blocked" => "⛔ blocked ",
                "would_kill" => "👀 would_kill",
                "would_block" => "👀 would_block",
                _ => "📝 matched ",
            };
            let policy = match (s(ev, &["policy_namespace"]), s(ev, &["policy_name"])) {
                (Some(ns), Some(p)) => format!("{ns}/{p}"),
                (None, Some(p)) => p.to_string(),
                _ => "?".into(),
            };
            let mut line = format!(
                "{icon} {} {} [{policy}/{}]",
                who(ev),
                cmdline(ev),
                s(ev, &["rule"]).unwrap_or("?")
            );
            if let Some(d) = dest(ev) {
                line.push_str(&format!(" {d}"));
            }
            if let Some(e) = s(ev, &["encryption"]) {
                line.push_str(&format!(" {e}"));
            }
            line
        }
        "status" => {
            let policies: Vec<&str> = ev
                .get("policies")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ndiag = ev
                .get("diagnostics")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!(
                "ℹ️  status   {} generation={} policies={} diagnostics={ndiag} lost_events={}",
                s(ev, &["state"]).unwrap_or("?"),
                ev.get("generation").and_then(Value::as_u64).unwrap_or(0),
                policies.join(","),
                ev.get("lost_events").and_then(Value::as_u64).unwrap_or(0),
            )
        }
        other => format!("❓ {other} {ev}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exec(ns: Option<&str>, pod: &str, bin: &str) -> Value {
        json!({"type":"process_exec","time":"t","node_name":"n1","process":{
            "exec_id":"x","pid":1,"uid":0,"binary":bin,"arguments":"http://x","cwd":null,
            "start_time":"t","parent_exec_id":null,
            "pod": ns.map(|ns| json!({"namespace":ns,"name":pod,"container":"c","labels":{}}))},
            "parent":null})
    }

    fn kill(policy: &str, ns: &str) -> Value {
        json!({"type":"policy_match","time":"t","node_name":"n1","policy_name":policy,
            "policy_namespace":null,"rule":"r","hook":"exec","action":"Sigkill","mode":"enforce",
            "enforced":true,"outcome":"killed","destination":null,"encryption":null,
            "process":{"exec_id":"x","pid":1,"uid":0,"binary":"/usr/bin/nc","arguments":"",
                "cwd":null,"start_time":"t","parent_exec_id":null,
                "pod":{"namespace":ns,"name":"p","container":"c","labels":{}}}})
    }

    #[test]
    fn filters_and_or() {
        let e = exec(Some("prod"), "web-1", "/usr/bin/curl");
        let host = exec(None, "", "/usr/bin/curl");
        let k = kill("no-nc", "prod");
        assert!(Filter::default().matches(&e));
        let f = Filter {
            types: vec![normalize_type("exec").unwrap()],
            ..Default::default()
        };
        assert!(f.matches(&e) && !f.matches(&k));
        // Repeated values OR.
        let f = Filter {
            types: vec!["process_exec".into(), "policy_match".into()],
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
            actions: vec!["sigkill".into()],
            ..Default::default()
        };
        assert!(f.matches(&k) && !f.matches(&e));
        let f = Filter {
            actions: vec!["would_kill".into()],
            ..Default::default()
        };
        assert!(!f.matches(&k));
        let f = Filter {
            actions: vec!["killed".into()],
            ..Default::default()
        };
        assert!(f.matches(&k));
        let f = Filter {
            policies: vec!["other".into()],
            ..Default::default()
        };
        assert!(!f.matches(&k));
    }

    #[test]
    fn type_aliases_and_errors() {
        assert_eq!(normalize_type("connect").unwrap(), "process_connect");
        assert_eq!(normalize_type("policy").unwrap(), "policy_match");
        assert_eq!(normalize_type("STATUS").unwrap(), "status");
        let err = normalize_type("bogus").unwrap_err();
        assert!(
            err.contains("bogus") && err.contains("process_exec"),
            "{err}"
        );
    }

    #[test]
    fn compact_lines() {
        let e = exec(Some("prod"), "web-1", "/usr/bin/curl");
        assert_eq!(compact(&e), "🚀 process  prod/web-1 /usr/bin/curl http://x");
        let host = exec(None, "", "/usr/bin/curl");
        assert_eq!(compact(&host), "🚀 process  n1 /usr/bin/curl http://x");
        let mut x = e.clone();
        x["type"] = json!("process_exit");
        x["signal"] = json!("SIGKILL");
        assert!(compact(&x).starts_with("💥 exit     prod/web-1 /usr/bin/curl http://x SIGKILL"));
        let mut c = e.clone();
        c["type"] = json!("process_connect");
        c["destination"] = json!({"ip":"10.0.0.2","port":80,"protocol":"TCP"});
        c["blocked"] = json!(false);
        assert!(compact(&c).starts_with("🔌 connect "));
        assert!(compact(&c).ends_with("10.0.0.2:80 TCP"));
        c["blocked"] = json!(true);
        c["destination"]["ip"] = json!("fd00::2");
        assert!(compact(&c).starts_with("⛔ blocked "));
        assert!(compact(&c).ends_with("[fd00::2]:80 TCP"));
        let k = kill("no-nc", "prod");
        assert_eq!(compact(&k), "💀 killed   prod/p /usr/bin/nc [no-nc/r]");
        let st = json!({"type":"status","state":"ready","generation":1,"policies":["a","b"],
            "diagnostics":[],"lost_events":0});
        assert!(compact(&st).contains("ready generation=1 policies=a,b"));
    }
}
