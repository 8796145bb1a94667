//! `bulwark events`: reads the JSON-lines events `bulwark run` writes (a file, or stdin), each
//! line as a typed [`Event`], filters them (all filter kinds ANDed, repeated values ORed),
//! optionally follows the file as it grows ([`crate::event_file`]), and prints them as JSON or as one compact human line each (like
//! `tetra getevents -o compact`).

use crate::event_file::{self, Flow, LineSink};
use bulwark::pipeline::filter::{compact, parse_action, parse_type, Filter};
use bulwark_events::Event;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The event lines as written.
    Json,
    /// One human line per event.
    Compact,
}

/// The filters on the process an event is about, shared by `bulwark events` and
/// `bulwark conns`.
#[derive(clap::Args, Debug, Default)]
pub struct ProcessArgs {
    /// Kubernetes namespace of the process. Repeatable.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Pod name (or namespace/pod). Repeatable.
    #[arg(long = "pod", value_name = "POD")]
    pub pods: Vec<String>,
    /// Binary path, or a bare name matching the last path component. Repeatable.
    #[arg(long = "binary", value_name = "PATH")]
    pub binaries: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Events file written by `bulwark run --events FILE` (default: read stdin).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Keep reading as the file grows (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Event type: process_exec (exec), process_exit (exit), process_connect (connect),
    /// process_close (close), conn_stats (stats), policy_match (match), status. Repeatable.
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
    /// Policy name (or namespace/name). Repeatable.
    #[arg(long = "policy", value_name = "P")]
    pub policies: Vec<String>,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Action (Sigkill, Block, Post) or outcome (killed, blocked, would_kill, would_block,
    /// reported), case-insensitive. Repeatable.
    #[arg(long = "action", value_name = "A")]
    pub actions: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    pub output: Output,
}

/// Applies filter and format to one line; `None` when filtered out. Lines that are not JSON
/// are reported on stderr (with their line number) and skipped. A JSON line that is no event
/// this version knows (a newer daemon's event type) cannot be judged by any filter: it is
/// shown, as written, only when no filter is given.
fn render(line: &str, lineno: u64, filter: &Filter, output: Output) -> Option<String> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return None;
    }
    let ev = match Event::from_json_line(line) {
        Ok(ev) => ev,
        Err(not_event) => {
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("bulwark events: line {lineno}: not a JSON event ({e}); skipped");
                    return None;
                }
            };
            if !filter.is_empty() {
                return None;
            }
            return Some(match output {
                Output::Json => line.to_string(),
                Output::Compact => {
                    let ty = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
                    format!("❓ {ty} {line} ({not_event})")
                }
            });
        }
    };
    if !filter.matches(&ev) {
        return None;
    }
    Some(match output {
        Output::Json => line.to_string(),
        Output::Compact => compact(&ev),
    })
}

/// Prints each line that passes the filter, in the chosen format.
struct Printer<'a> {
    filter: &'a Filter,
    output: Output,
    out: &'a mut dyn Write,
}

impl LineSink for Printer<'_> {
    fn line(&mut self, line: &str, lineno: u64) -> anyhow::Result<Flow> {
        if let Some(s) = render(line, lineno, self.filter, self.output) {
            if writeln!(self.out, "{s}").is_err() {
                // Reader went away (`| head`): stop quietly.
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    fn caught_up(&mut self) -> anyhow::Result<Flow> {
        self.out.flush()?;
        Ok(Flow::Continue)
    }
}

fn build_filter(args: &EventsArgs) -> anyhow::Result<Filter> {
    let types = args
        .types
        .iter()
        .map(|t| parse_type(t).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let actions = args
        .actions
        .iter()
        .map(|a| parse_action(a).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Filter {
        types,
        policies: args.policies.clone(),
        namespaces: args.process.namespaces.clone(),
        pods: args.process.pods.clone(),
        binaries: args.process.binaries.clone(),
        actions,
    })
}

pub fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let filter = build_filter(&args)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let Some(path) = &args.file else {
        let mut printer = Printer {
            filter: &filter,
            output: args.output,
            out: &mut out,
        };
        event_file::read_stdin(&mut printer)?;
        return Ok(ExitCode::SUCCESS);
    };
    follow_file(
        path,
        args.follow,
        &filter,
        args.output,
        &mut out,
        Duration::from_millis(200),
        &|| false,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a file's events; with `follow`, keeps reading as it grows (starting over when it is
/// truncated or replaced, waiting for it when it does not exist yet) until `stop()` is true.
fn follow_file(
    path: &Path,
    follow: bool,
    filter: &Filter,
    output: Output,
    out: &mut dyn Write,
    poll: Duration,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut printer = Printer {
        filter,
        output,
        out,
    };
    event_file::read_file(path, follow, poll, stop, "bulwark events", &mut printer)
}

/// Reads all of `r` through the same path as a file (tests).
#[cfg(test)]
fn run_on(input: &str, filter: &Filter, output: Output) -> String {
    let mut out = Vec::new();
    let mut printer = Printer {
        filter,
        output,
        out: &mut out,
    };
    let mut r = std::io::BufReader::new(input.as_bytes());
    event_file::Cursor::default()
        .pump(&mut r, &mut printer, true)
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = concat!(
        r#"{"type":"status","time":"t","node_name":"n","state":"ready","generation":1,"policies":[],"diagnostics":[],"lost_events":0}"#,
        "\n",
        "not json\n",
        r#"{"type":"process_exec","time":"t","node_name":"n","process":{"exec_id":"a","pid":1,"uid":0,"binary":"/usr/bin/curl","arguments":"http://x","cwd":null,"start_time":"t","parent_exec_id":null,"pod":{"namespace":"prod","name":"web-1","container":"c","labels":{}}},"parent":null}"#,
        "\n\n",
        r#"{"type":"process_exec","time":"t","node_name":"n","process":{"exec_id":"b","pid":2,"uid":0,"binary":"/bin/ls","arguments":"","cwd":null,"start_time":"t","parent_exec_id":null,"pod":null},"parent":null}"#,
    );

    #[test]
    fn filters_formats_and_skips_bad_lines() {
        let all = run_on(LINES, &Filter::default(), Output::Json);
        assert_eq!(all.lines().count(), 3, "{all}");
        let f = Filter {
            types: vec![bulwark_events::EventType::ProcessExec],
            ..Default::default()
        };
        assert_eq!(run_on(LINES, &f, Output::Json).lines().count(), 2);
        let f = Filter {
            namespaces: vec!["prod".into()],
            ..Default::default()
        };
        let out = run_on(LINES, &f, Output::Compact);
        assert_eq!(out, "🚀 process  prod/web-1 /usr/bin/curl http://x\n");
        let f = Filter {
            binaries: vec!["ls".into(), "curl".into()],
            ..Default::default()
        };
        assert_eq!(run_on(LINES, &f, Output::Json).lines().count(), 2);
        let f = Filter {
            binaries: vec!["ls".into()],
            namespaces: vec!["prod".into()],
            ..Default::default()
        };
        assert_eq!(run_on(LINES, &f, Output::Json), "");
    }

    #[test]
    fn events_of_unknown_types_pass_only_without_filters() {
        let newer = r#"{"type":"process_close","time":"t","node_name":"n","bytes":1}"#;
        let input = format!("{newer}\n{}", LINES);
        let all = run_on(&input, &Filter::default(), Output::Json);
        assert_eq!(all.lines().next(), Some(newer), "{all}");
        assert_eq!(all.lines().count(), 4, "{all}");
        let compact = run_on(newer, &Filter::default(), Output::Compact);
        assert!(compact.starts_with("❓ process_close "), "{compact}");
        let f = Filter {
            namespaces: vec!["prod".into()],
            ..Default::default()
        };
        assert!(!run_on(&input, &f, Output::Json).contains("process_close"));
    }

    #[test]
    fn follow_waits_reads_partial_lines_and_survives_truncation_and_rotation() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("bulwark-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let line = |state: &str| {
            format!(
                r#"{{"type":"status","time":"t","node_name":"n","state":"{state}","generation":1,"policies":[],"diagnostics":[],"lost_events":0}}"#
            )
        };
        let out = crate::event_file::SharedOut::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (o, st, p) = (out.clone(), stop.clone(), path.clone());
        let t = std::thread::spawn(move || {
            let mut o = o;
            follow_file(
                &p,
                true,
                &Filter::default(),
                Output::Compact,
                &mut o,
                Duration::from_millis(20),
                &|| st.load(Ordering::SeqCst),
            )
        });
        let seen = |n: usize| {
            for _ in 0..200 {
                let text = String::from_utf8(out.bytes()).unwrap();
                if text.lines().count() >= n {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("follow did not print {n} lines");
        };
        std::thread::sleep(Duration::from_millis(60)); // the file does not exist yet
        std::fs::write(&path, format!("{}\n", line("ready"))).unwrap();
        assert!(seen(1).contains("ready"));
        // A line written in two parts is printed once, whole.
        let l = line("reloaded");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&l.as_bytes()[..20]).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        f.write_all(format!("{}\n", &l[20..]).as_bytes()).unwrap();
        assert!(seen(2).lines().nth(1).unwrap().contains("reloaded"));
        // Truncated and rewritten.
        std::fs::write(&path, format!("{}\n", line("reload_failed"))).unwrap();
        assert!(seen(3).lines().nth(2).unwrap().contains("reload_failed"));
        // Replaced by a new file.
        let tmp = dir.join("new");
        std::fs::write(&tmp, format!("{}\n", line("stopping"))).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(seen(4).lines().nth(3).unwrap().contains("stopping"));
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_type_is_a_clear_error() {
        let args = EventsArgs {
            file: None,
            follow: false,
            types: vec!["nope".into()],
            policies: vec![],
            process: ProcessArgs::default(),
            actions: vec![],
            output: Output::Json,
        };
        let err = build_filter(&args).unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("policy_match"),
            "{err}"
        );
        let args = EventsArgs {
            types: vec![],
            actions: vec!["kill".into()],
            ..args
        };
        let err = build_filter(&args).unwrap_err().to_string();
        assert!(err.contains("kill") && err.contains("Sigkill"), "{err}");
    }
}
