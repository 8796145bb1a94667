//! `bulwark conns`: which workloads talk to where, in plaintext or encrypted, and how much —
//! from the `process_close` and `conn_stats` events `bulwark run` writes (a file, followed or
//! not, or stdin). The aggregation is the `bulwark-conns` crate's [`Report`]; this module reads
//! the lines ([`crate::event_file`]) and prints the [`Summary`] as a table or as JSON.

use crate::event_file::{self, Flow, LineSink};
use bulwark_conns::report::{Direction, Filter, GroupBy, Report, Summary};
use bulwark_events::{Event, Scope};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for a person.
    Table,
    /// One JSON object (`by`, `groups`, `total`) for a script; one per refresh with --follow.
    Json,
}

const EXAMPLES: &str = "\
Examples:
  # Who sent plaintext out of the cluster, to where, how much (the question this answers):
  bulwark conns --file /var/log/bulwark/events.jsonl --plaintext --internet --egress

  # Services that accepted plaintext from the internet, by pod and listening port:
  bulwark conns --file events.jsonl --plaintext --internet --ingress --by pod,destination

  # Plaintext share per namespace, as JSON for a script:
  bulwark conns --file events.jsonl --by namespace -o json | jq '.groups[]'

  # Keep a live view while the daemon runs (bulwark run --events events.jsonl):
  bulwark conns --file events.jsonl --follow --plaintext

A connection counts once, with the totals of its latest event (its close, or its last
conn_stats window while it is still open). A connection is plaintext when either direction's
first payload was (docs/conns.md says what is classified how).";

#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct ConnsArgs {
    /// Events file written by `bulwark run --events FILE` (default: read stdin).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Keep reading as the file grows and reprint the report when it changes (Ctrl-C to stop).
    #[arg(long, short = 'f', requires = "file")]
    pub follow: bool,
    /// With --follow: reprint at most this often, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Only connections where either direction's first payload was plaintext (http, h2c,
    /// other).
    #[arg(long, conflicts_with = "encrypted")]
    pub plaintext: bool,
    /// Only connections whose first payloads were encrypted (tls, ssh, declared protocols).
    #[arg(long)]
    pub encrypted: bool,
    /// Only connections whose remote end is outside the cluster CIDRs.
    #[arg(long, conflicts_with = "cluster")]
    pub internet: bool,
    /// Only connections whose remote end is inside the cluster CIDRs.
    #[arg(long)]
    pub cluster: bool,
    /// Only connections this node's processes opened (role client).
    #[arg(long, conflicts_with = "ingress")]
    pub egress: bool,
    /// Only connections this node's processes accepted (role server).
    #[arg(long)]
    pub ingress: bool,
    #[command(flatten)]
    pub process: crate::cmd_events::ProcessArgs,
    /// Connection protocol: tls, ssh, http, h2c, other, none, or a declared protocol's name
    /// (the client's first payload, else the server's). Repeatable.
    #[arg(long = "protocol", value_name = "P")]
    pub protocols: Vec<String>,
    /// Group by these, comma-separated: namespace, pod, binary, destination (remote ip:port
    /// for egress, the local listening ip:port for ingress), peer (the other end's address),
    /// protocol.
    #[arg(
        long,
        value_name = "KEYS",
        value_delimiter = ',',
        default_value = "pod,binary,destination"
    )]
    pub by: Vec<GroupBy>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

impl ConnsArgs {
    fn filter(&self) -> Filter {
        /// `a` for the first flag, `b` for the second, any without either (clap refuses both).
        fn either<T>(first: bool, second: bool, a: T, b: T) -> Option<T> {
            match (first, second) {
                (true, _) => Some(a),
                (_, true) => Some(b),
                _ => None,
            }
        }
        Filter {
            encrypted: either(self.encrypted, self.plaintext, true, false),
            scope: either(self.internet, self.cluster, Scope::Internet, Scope::Cluster),
            direction: either(
                self.egress,
                self.ingress,
                Direction::Egress,
                Direction::Ingress,
            ),
            namespaces: self.process.namespaces.clone(),
            pods: self.process.pods.clone(),
            binaries: self.process.binaries.clone(),
            protocols: self.protocols.clone(),
        }
    }
}

/// Collects the connection events; with a refresh interval, reprints when caught up.
struct Collector<'a> {
    report: Report,
    filter: Filter,
    by: Vec<GroupBy>,
    output: Output,
    out: &'a mut dyn Write,
    /// --follow: reprint when caught up, at most this often, when something changed.
    refresh: Option<Duration>,
    clear_screen: bool,
    changed: bool,
    printed: Option<Instant>,
}

impl LineSink for Collector<'_> {
    fn line(&mut self, line: &str, lineno: u64) -> anyhow::Result<Flow> {
        if line.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        match Event::from_json_line(line) {
            Ok(ev) => self.changed |= self.report.add(&ev),
            // A newer daemon's event type: not a connection this version can read.
            Err(_) if serde_json::from_str::<serde_json::Value>(line).is_ok() => {}
            Err(e) => eprintln!("bulwark conns: line {lineno}: not a JSON event ({e}); skipped"),
        }
        Ok(Flow::Continue)
    }

    fn caught_up(&mut self) -> anyhow::Result<Flow> {
        let Some(every) = self.refresh else {
            return Ok(Flow::Continue);
        };
        let due = self.printed.is_none_or(|t| t.elapsed() >= every);
        if !(due && (self.changed || self.printed.is_none())) {
            return Ok(Flow::Continue);
        }
        self.changed = false;
        self.printed = Some(Instant::now());
        Ok(self.print())
    }
}

impl Collector<'_> {
    fn print(&mut self) -> Flow {
        let summary = self.report.summarize(&self.filter, &self.by);
        let text = match self.output {
            Output::Table => table(&summary, self.report.len()),
            Output::Json => json(&summary),
        };
        let prefix = if self.clear_screen {
            "\x1b[H\x1b[2J"
        } else if self.refresh.is_some() && self.output == Output::Table {
            "\n"
        } else {
            ""
        };
        match write!(self.out, "{prefix}{text}").and_then(|_| self.out.flush()) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// The summary as one JSON line.
fn json(summary: &Summary) -> String {
    match serde_json::to_string(summary) {
        Ok(s) => format!("{s}\n"),
        Err(e) => format!("{{\"error\":\"cannot serialize the report: {e}\"}}\n"),
    }
}

/// The summary as aligned columns: the `--by` keys in the order given, then the counts, then a
/// TOTAL line.
fn table(summary: &Summary, read: usize) -> String {
    if summary.total.connections == 0 {
        return format!(
            "no connections match ({read} connection(s) read; process_close and conn_stats \
             events come from `bulwark run`)\n"
        );
    }
    let mut header: Vec<String> = summary
        .by
        .iter()
        .map(|k| k.as_str().to_uppercase())
        .collect();
    header.extend(
        [
            "CONNS",
            "PLAINTEXT",
            "ENCRYPTED",
            "PLAINTEXT%",
            "SENT",
            "RECEIVED",
            "PROTOCOLS",
        ]
        .map(String::from),
    );
    let counts = |r: &bulwark_conns::report::Row| {
        let ratio = r
            .plaintext_ratio
            .map(|x| format!("{:.0}%", x * 100.0))
            .unwrap_or_else(|| "-".into());
        let protocols: Vec<&str> = r.protocols.iter().map(String::as_str).collect();
        [
            r.connections.to_string(),
            r.plaintext.to_string(),
            r.encrypted.to_string(),
            ratio,
            r.bytes_sent.to_string(),
            r.bytes_received.to_string(),
            protocols.join(","),
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![header];
    for g in &summary.groups {
        let mut row: Vec<String> = summary
            .by
            .iter()
            .map(|k| match g.key.get(k.as_str()) {
                Some(Some(v)) => v.clone(),
                _ => "(host)".into(),
            })
            .collect();
        row.extend(counts(g));
        rows.push(row);
    }
    let mut total: Vec<String> = summary.by.iter().map(|_| String::new()).collect();
    match total.first_mut() {
        Some(first) => *first = "TOTAL".into(),
        None => total.push("TOTAL".into()),
    }
    total.extend(counts(&summary.total));
    rows.push(total);
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn run(args: ConnsArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut out = stdout.lock();
    let mut collector = Collector {
        report: Report::new(),
        filter: args.filter(),
        by: args.by.clone(),
        output: args.output,
        out: &mut out,
        refresh: args.follow.then(|| Duration::from_secs(args.interval)),
        clear_screen: args.follow && tty && args.output == Output::Table,
        changed: false,
        printed: None,
    };
    match &args.file {
        None => event_file::read_stdin(&mut collector)?,
        Some(path) => event_file::read_file(
            path,
            args.follow,
            Duration::from_millis(200),
            &|| false,
            "bulwark conns",
            &mut collector,
        )?,
    }
    if !args.follow {
        collector.print();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const STREAM: &str = include_str!("../../conns/tests/fixtures/stream.jsonl");

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        conns: ConnsArgs,
    }

    fn args(argv: &[&str]) -> ConnsArgs {
        Cli::try_parse_from(std::iter::once("conns").chain(argv.iter().copied()))
            .unwrap()
            .conns
    }

    /// Runs the command's reading and printing over `input` (as a file read once).
    fn run_on(input: &str, argv: &[&str]) -> String {
        let a = args(argv);
        let mut out = Vec::new();
        let mut c = Collector {
            report: Report::new(),
            filter: a.filter(),
            by: a.by.clone(),
            output: a.output,
            out: &mut out,
            refresh: None,
            clear_screen: false,
            changed: false,
            printed: None,
        };
        let mut r = std::io::BufReader::new(input.as_bytes());
        event_file::Cursor::default()
            .pump(&mut r, &mut c, true)
            .unwrap();
        c.print();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_headline_query_names_who_sent_plaintext_out_and_how_much() {
        let text = run_on(STREAM, &["--plaintext", "--internet", "--egress"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[0]),
            [
                "POD",
                "BINARY",
                "DESTINATION",
                "CONNS",
                "PLAINTEXT",
                "ENCRYPTED",
                "PLAINTEXT%",
                "SENT",
                "RECEIVED",
                "PROTOCOLS"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "batch/worker-0",
                "/usr/bin/python3",
                "198.51.100.9:8080",
                "1",
                "1",
                "0",
                "100%",
                "24000",
                "90000",
                "http"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "(host)",
                "/usr/bin/curl",
                "93.184.215.14:80",
                "1",
                "1",
                "0",
                "100%",
                "78",
                "1024",
                "http"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["TOTAL", "2", "2", "0", "100%", "24078", "91024", "http"]
        );
        // Columns line up: every line's SENT column starts where the header's does.
        let at = lines[0].find("SENT").unwrap();
        assert!(
            lines[1..]
                .iter()
                .all(|l| l[at..].starts_with(char::is_numeric)),
            "{text}"
        );
    }

    #[test]
    fn the_example_in_the_docs_is_what_the_command_prints() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/conns.md"),
        )
        .unwrap();
        let text = run_on(STREAM, &["--plaintext", "--internet", "--egress"]);
        let indented: String = text.lines().map(|l| format!("    {l}\n")).collect();
        assert!(
            doc.contains(&indented),
            "docs/conns.md should show:\n{indented}"
        );
    }

    #[test]
    fn json_is_one_object_with_exact_counts() {
        let text = run_on(STREAM, &["--by", "namespace", "-o", "json"]);
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["by"], serde_json::json!(["namespace"]));
        assert_eq!(v["total"]["connections"], 6);
        assert_eq!(v["total"]["open"], 1);
        let batch = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"]["namespace"] == "batch")
            .unwrap();
        assert_eq!(batch["bytes_sent"], 24_000 + 10_240);
        assert_eq!(batch["plaintext_ratio"], 1.0);
        let host = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"]["namespace"].is_null())
            .unwrap();
        assert_eq!(host["connections"], 3);
        assert_eq!(host["unclassified"], 1);
        assert_eq!(host["plaintext_ratio"], 0.5);
    }

    #[test]
    fn nothing_matching_says_so_and_bad_lines_are_skipped() {
        let text = run_on(
            &format!("not json\n{STREAM}"),
            &["--encrypted", "--ingress"],
        );
        assert!(
            text.starts_with("no connections match (6 connection(s) read"),
            "{text}"
        );
    }

    #[test]
    fn flags_parse_and_contradictions_are_refused() {
        let a = args(&["--by", "namespace,peer", "--by", "protocol"]);
        assert_eq!(a.by, [GroupBy::Namespace, GroupBy::Peer, GroupBy::Protocol]);
        assert_eq!(
            args(&[]).by,
            [GroupBy::Pod, GroupBy::Binary, GroupBy::Destination]
        );
        for both in [
            ["--plaintext", "--encrypted"],
            ["--internet", "--cluster"],
            ["--egress", "--ingress"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("conns").chain(both))
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot be used with"), "{both:?}: {err}");
        }
        let err = Cli::try_parse_from(["conns", "--by", "port"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("port") && err.contains("destination"), "{err}");
        let err = Cli::try_parse_from(["conns", "--follow"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--file"), "{err}");
    }

    #[test]
    fn follow_reprints_when_new_connections_arrive() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("bulwark-conns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let lines: Vec<&str> = STREAM.lines().collect();
        std::fs::write(&path, format!("{}\n", lines[..4].join("\n"))).unwrap();
        let out = crate::event_file::SharedOut::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (o, st, p) = (out.clone(), stop.clone(), path.clone());
        let t = std::thread::spawn(move || {
            let mut o = o;
            let mut c = Collector {
                report: Report::new(),
                filter: Filter::default(),
                by: vec![],
                output: Output::Json,
                out: &mut o,
                refresh: Some(Duration::from_millis(10)),
                clear_screen: false,
                changed: false,
                printed: None,
            };
            event_file::read_file(
                &p,
                true,
                Duration::from_millis(20),
                &|| st.load(Ordering::SeqCst),
                "test",
                &mut c,
            )
        });
        let totals = |n: usize| {
            for _ in 0..500 {
                let text = String::from_utf8(out.bytes()).unwrap();
                let last = text.lines().last().map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["total"]["connections"].as_u64().unwrap()
                });
                if last == Some(n as u64) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("follow did not report {n} connections");
        };
        totals(3);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "{}", lines[4..].join("\n")).unwrap();
        totals(6);
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
