//! YAML text -> marked tree: every node carries the line and column it starts at. Built on the
//! event API of `yaml-rust2`; plain scalars are resolved per the YAML 1.2 core schema
//! (null / bool / int / float / string), quoted and block scalars are strings, `!!str` forces a
//! string. kubectl reads YAML 1.1 (`on`, `yes`, `0755` octal, `1_000`), so every plain scalar
//! the two read differently is a [`TreeIssue`] ([`yaml11_reading`]); merge keys (`<<: *base`)
//! are merged and a leading byte-order mark is skipped, as kubectl does. Multi-document
//! streams give one [`Document`] each. Also turns a tree into JSON; writing JSON values as YAML
//! (for the generated CRDs) is [`write`]. Never panics; deep nesting and alias bombs are
//! refused with an error instead of exhausting the stack or memory.

use std::collections::{HashMap, HashSet};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

mod write;
pub use write::to_yaml;

/// Deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one document may expand to (aliases included).
pub const MAX_NODES: usize = 1_000_000;

/// 1-based source position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX).max(1),
            column: u32::try_from(m.col()).unwrap_or(u32::MAX).saturating_add(1),
        }
    }
}

/// A resolved YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key/value pair of a mapping, with the key's position.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// What kind of problem a [`TreeIssue`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueKind {
    /// A mapping has the same key twice (the last value is kept, as kubectl does).
    DuplicateKey,
    /// A plain scalar that YAML 1.1 (kubectl) and YAML 1.2 (this tree) read differently.
    Yaml11Scalar,
    /// A merge key (`<<`) whose value is not a mapping or a list of mappings.
    BadMerge,
}

/// A problem found while building a tree that does not stop parsing (e.g. a duplicate key).
#[derive(Clone, Debug, PartialEq)]
pub struct TreeIssue {
    pub kind: IssueKind,
    pub message: String,
    pub hint: String,
    pub pos: Pos,
}

/// One document of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub root: Node,
    /// Where the document starts (its `---` or first node).
    pub start: Pos,
    pub issues: Vec<TreeIssue>,
}

/// A syntax error; documents before it are still returned.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Pos,
}

/// Result of parsing a stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stream {
    pub documents: Vec<Document>,
    pub error: Option<SyntaxError>,
}

impl Value {
    /// Human name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null (empty value)",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }
}

impl Node {
    /// The value of `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// The entry for `key` (with the key's position) when this is a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The string value, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON. Floats that JSON cannot hold (NaN, infinities) become null.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut map = serde_json::Map::new();
                for e in entries {
                    map.insert(e.key.clone(), e.value.to_json());
                }
                J::Object(map)
            }
        }
    }

    /// Finds the node at a JSON path such as `spec.rules[0].selectors[1]`. Returns the deepest
    /// node reached and whether the whole path was found. A final key segment that names a
    /// mapping key resolves to the key's position when `key_pos` is true.
    pub fn locate(&self, path: &str, key_pos: bool) -> (Pos, bool) {
        let segments = parse_path(path);
        let mut node = self;
        let mut pos = self.pos;
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match (seg, &node.value) {
                (PathSeg::Key(k), Value::Map(entries)) => {
                    match entries.iter().find(|e| e.key == *k) {
                        Some(e) => {
                            pos = if last && key_pos {
                                e.key_pos
                            } else {
                                e.value.pos
                            };
                            node = &e.value;
                        }
                        None => return (pos, false),
                    }
                }
                (PathSeg::Index(ix), Value::Seq(items)) => match items.get(*ix) {
                    Some(n) => {
                        pos = n.pos;
                        node = n;
                    }
                    None => return (pos, false),
                },
                _ => return (pos, false),
            }
        }
        (pos, true)
    }
}

/// One step of a JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into segments. Malformed indices are treated as keys.
pub fn parse_path(path: &str) -> Vec<PathSeg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(PathSeg::Key(name.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else {
                out.push(PathSeg::Key(rest.to_string()));
                break;
            };
            match stripped[..end].parse::<usize>() {
                Ok(i) => out.push(PathSeg::Index(i)),
                Err(_) => out.push(PathSeg::Key(stripped[..end].to_string())),
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// Resolves a plain scalar per the YAML 1.2 core schema.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let bytes = s.as_bytes();
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => s
                .parse::<f64>()
                .map_or_else(|_| Value::Str(s.to_string()), Value::Float),
        };
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            if let Ok(i) = i64::from_str_radix(oct, 8) {
                return Value::Int(i);
            }
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return Value::Int(i);
            }
        }
    }
    if is_core_float(bytes) {
        if let Ok(f) = s.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(s.to_string())
}

/// How kubectl (sigs.k8s.io/yaml, a YAML 1.1 reader) reads a plain scalar, where that differs
/// from [`resolve_plain`].
#[derive(Clone, Debug, PartialEq)]
pub enum Yaml11 {
    /// A value of another type or another number (`on` is `true`, `0755` is 493).
    Value(Value),
    /// A float JSON cannot carry (`.inf`, `.nan`): kubectl refuses the file.
    Unsendable,
}

/// What kubectl reads for the plain scalar `s` when that differs from YAML 1.2's `core`
/// reading `v` ([`resolve_plain`]); `None` when both agree. Mirrors go-yaml v2's resolver:
/// the YAML 1.1 booleans, integers through Go's `ParseInt(_, 0, 64)` after removing `_`
/// (`0` octal, `0x`/`0X`, `0o`/`0O`, `0b`/`0B`, a sign), then YAML floats. Checked against
/// kubectl 1.36 (`kubectl create --dry-run=client -o json`).
pub fn yaml11_reading(s: &str, v: &Value) -> Option<Yaml11> {
    const TRUE: &[&str] = &["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"];
    const FALSE: &[&str] = &["n", "N", "no", "No", "NO", "off", "Off", "OFF"];
    if TRUE.contains(&s) {
        return Some(Yaml11::Value(Value::Bool(true)));
    }
    if FALSE.contains(&s) {
        return Some(Yaml11::Value(Value::Bool(false)));
    }
    if let Value::Float(f) = v {
        if !f.is_finite() {
            return Some(Yaml11::Unsendable);
        }
    }
    let first = s.bytes().next()?;
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return None;
    }
    let plain = s.replace('_', "");
    let kubectl = go_parse_int(&plain)
        .map(Value::Int)
        .or_else(|| {
            is_core_float(plain.as_bytes())
                .then(|| plain.parse::<f64>().ok().map(Value::Float))
                .flatten()
        })
        .unwrap_or_else(|| Value::Str(s.to_string()));
    let same = match (&kubectl, v) {
        (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => *a as f64 == *b,
        (a, b) => a == b,
    };
    (!same).then_some(Yaml11::Value(kubectl))
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, then `0x`/`0X` hex, `0o`/`0O` or a bare
/// leading `0` octal, `0b`/`0B` binary, else decimal.
fn go_parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if neg { -magnitude } else { magnitude }).ok()
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("the string \"{s}\""),
        Value::Seq(_) | Value::Map(_) => "a collection".into(),
    }
}

/// The issue for a plain scalar kubectl reads differently, with the quoting fix.
fn yaml11_issue(s: &str, v: &Value, pos: Pos) -> Option<TreeIssue> {
    let reading = yaml11_reading(s, v)?;
    let (message, hint) = match reading {
        Yaml11::Unsendable => (
            format!("`{s}` is {} in YAML 1.2, which kubectl cannot send (JSON has no such number), so kubectl refuses the file", show(v)),
            format!("quote it to make it a string: `\"{s}\"`"),
        ),
        Yaml11::Value(kubectl) => {
            let message = format!(
                "`{s}` is {} to kubectl (YAML 1.1), so that is what the API server gets, but {} in YAML 1.2",
                show(&kubectl),
                show(v)
            );
            let hint = match (&kubectl, v) {
                (Value::Bool(b), _) => {
                    format!("quote it to keep the string: `\"{s}\"`; write `{b}` for the boolean")
                }
                (Value::Int(k), Value::Int(y)) => format!(
                    "write `{k}` if you mean what kubectl reads, `{y}` if you mean decimal, or quote it: `\"{s}\"`"
                ),
                (Value::Int(_) | Value::Float(_), _) => format!(
                    "write `{}` for the number, or quote it to keep the string: `\"{s}\"`",
                    show(&kubectl)
                ),
                _ => format!("quote it to make it a string: `\"{s}\"`"),
            };
            (message, hint)
        }
    };
    Some(TreeIssue {
        kind: IssueKind::Yaml11Scalar,
        message,
        hint,
        pos,
    })
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(b: &[u8]) -> bool {
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

fn key_text(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Seq(_) | Value::Map(_) => "<complex key>".into(),
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<Entry>,
        pos: Pos,
        anchor: usize,
        /// The key whose value comes next, and whether it is a merge key (`<<`).
        key: Option<(String, Pos, bool)>,
        /// Where each key sits in `entries`, so a long mapping is built in linear time.
        index: HashMap<String, usize>,
        /// Keys that came from a merge: an explicit key may replace them without being a
        /// duplicate.
        merged: HashSet<String>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    issues: Vec<TreeIssue>,
    /// The scalar being completed is a plain `<<`: a merge key when it is a mapping's key.
    plain_merge_key: bool,
}

/// Merges the mapping (or list of mappings) `value` of a `<<` key into `entries` as kubectl
/// (go-yaml v2) does: the merged keys replace keys written before `<<`, keys written after it
/// replace merged ones, and in a list the first mapping wins.
fn merge(
    entries: &mut Vec<Entry>,
    index: &mut HashMap<String, usize>,
    merged: &mut HashSet<String>,
    value: Node,
    pos: Pos,
) -> Result<(), TreeIssue> {
    let sources: Vec<Vec<Entry>> = match value.value {
        Value::Map(es) => vec![es],
        Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Map(_))) => items
            .into_iter()
            .rev()
            .filter_map(|i| match i.value {
                Value::Map(es) => Some(es),
                _ => None,
            })
            .collect(),
        other => {
            return Err(TreeIssue {
                kind: IssueKind::BadMerge,
                message: format!(
                    "the merge key `<<` needs a mapping or a list of mappings, found {}; kubectl refuses the file",
                    other.type_name()
                ),
                hint: "merge an anchored mapping (`<<: *base`), or quote `\"<<\"` for a key of that name".into(),
                pos,
            })
        }
    };
    for e in sources.into_iter().flatten() {
        merged.insert(e.key.clone());
        match index.get(&e.key) {
            Some(&i) => entries[i].value = e.value,
            None => {
                index.insert(e.key.clone(), entries.len());
                entries.push(e);
            }
        }
    }
    Ok(())
}

fn count_nodes(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| 1 + count_nodes(&e.value))
                .sum::<usize>()
        }
        _ => 1,
    }
}

impl Builder {
    fn new() -> Self {
        Builder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            issues: Vec::new(),
            plain_merge_key: false,
        }
    }

    /// Adds a finished node to its parent; returns it when it is the document root.
    fn complete(&mut self, node: Node, anchor: usize) -> Option<Node> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let merge_key = std::mem::take(&mut self.plain_merge_key);
        match self.stack.last_mut() {
            None => Some(node),
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                None
            }
            Some(Frame::Map {
                entries,
                key,
                index,
                merged,
                ..
            }) => {
                match key.take() {
                    None => *key = Some((key_text(&node), node.pos, merge_key)),
                    Some((_, key_pos, true)) => {
                        if let Err(issue) = merge(entries, index, merged, node, key_pos) {
                            self.issues.push(issue);
                        }
                    }
                    Some((k, key_pos, false)) => {
                        // kubectl and the API server keep the last value of a repeated key
                        // without a word, so the tree does too. A key a merge brought in is
                        // meant to be replaced.
                        let at = index.get(&k).copied();
                        if merged.remove(&k) {
                            if let Some(e) = at.map(|i| &mut entries[i]) {
                                e.key_pos = key_pos;
                                e.value = node;
                            }
                        } else if let Some(first) = at.map(|i| &mut entries[i]) {
                            self.issues.push(TreeIssue {
                                kind: IssueKind::DuplicateKey,
                                message: format!(
                                    "duplicate key `{k}` (first at line {}); kubectl and the API server accept it silently and keep only this last value, so the earlier one is lost",
                                    first.key_pos.line
                                ),
                                hint: format!("keep one `{k}` in this mapping, with the value you mean"),
                                pos: key_pos,
                            });
                            first.value = node;
                        } else {
                            index.insert(k.clone(), entries.len());
                            entries.push(Entry {
                                key: k,
                                key_pos,
                                value: node,
                            });
                        }
                    }
                }
                None
            }
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                message: format!(
                    "document expands to more than {MAX_NODES} nodes (alias expansion?)"
                ),
                pos,
            });
        }
        Ok(())
    }
}

/// Parses a YAML stream into marked documents. Empty documents are skipped.
pub fn parse(text: &str) -> Stream {
    // A UTF-8 byte-order mark is valid at the start of a stream (editors on Windows write it);
    // it is invisible, so columns are counted without it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut stream = Stream::default();
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::new();
    let mut doc_start = Pos { line: 1, column: 1 };
    let mut root: Option<Node> = None;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => {
                stream.error = Some(SyntaxError {
                    message: e.info().to_string(),
                    pos: Pos::from_marker(e.marker()),
                });
                return stream;
            }
        };
        let pos = Pos::from_marker(&marker);
        let step = match event {
            Event::StreamStart | Event::Nothing => Ok(None),
            Event::StreamEnd => return stream,
            Event::DocumentStart => {
                doc_start = pos;
                builder = Builder::new();
                root = None;
                Ok(None)
            }
            Event::DocumentEnd => {
                if let Some(node) = root.take() {
                    if node.value != Value::Null {
                        stream.documents.push(Document {
                            root: node,
                            start: doc_start,
                            issues: std::mem::take(&mut builder.issues),
                        });
                    }
                }
                Ok(None)
            }
            Event::Alias(id) => match builder.anchors.get(&id).cloned() {
                Some(mut node) => {
                    let n = count_nodes(&node);
                    node.pos = pos;
                    builder.count(n, pos).map(|_| builder.complete(node, 0))
                }
                None => Err(SyntaxError {
                    message: "alias refers to an unknown anchor".into(),
                    pos,
                }),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str");
                let value = if style != TScalarStyle::Plain || forced_str {
                    Value::Str(text)
                } else {
                    let value = resolve_plain(&text);
                    builder.plain_merge_key = text == "<<" && tag.is_none();
                    // An explicit tag says what the author means, in either version.
                    let issue = tag.is_none().then(|| yaml11_issue(&text, &value, pos));
                    if let Some(issue) = issue.flatten() {
                        builder.issues.push(issue);
                    }
                    value
                };
                builder
                    .count(1, pos)
                    .map(|_| builder.complete(Node { value, pos }, anchor))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if builder.stack.len() >= MAX_DEPTH {
                    Err(SyntaxError {
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        pos,
                    })
                } else {
                    let frame = if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq {
                            items: Vec::new(),
                            pos,
                            anchor,
                        }
                    } else {
                        Frame::Map {
                            entries: Vec::new(),
                            pos,
                            anchor,
                            key: None,
                            index: HashMap::new(),
                            merged: HashSet::new(),
                        }
                    };
                    builder.stack.push(frame);
                    builder.count(1, pos).map(|_| None)
                }
            }
            Event::SequenceEnd | Event::MappingEnd => match builder.stack.pop() {
                Some(Frame::Seq { items, pos, anchor }) => Ok(builder.complete(
                    Node {
                        value: Value::Seq(items),
                        pos,
                    },
                    anchor,
                )),
                Some(Frame::Map {
                    entries,
                    pos,
                    anchor,
                    ..
                }) => Ok(builder.complete(
                    Node {
                        value: Value::Map(entries),
                        pos,
                    },
                    anchor,
                )),
                None => Err(SyntaxError {
                    message: "unbalanced end of collection".into(),
                    pos,
                }),
            },
        };
        match step {
            Ok(Some(node)) => root = Some(node),
            Ok(None) => {}
            Err(e) => {
                stream.error = Some(e);
                return stream;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_nodes() {
        let s = parse("a: 1\nb:\n  - x\n  - \"y\"\n");
        assert!(s.error.is_none());
        let root = &s.documents[0].root;
        let b = root.entry("b").unwrap();
        assert_eq!(b.key_pos, Pos { line: 2, column: 1 });
        assert_eq!(
            root.locate("b[1]", false),
            (Pos { line: 4, column: 5 }, true)
        );
        assert_eq!(root.locate("a", false), (Pos { line: 1, column: 4 }, true));
        assert!(!root.locate("c", false).1);
    }

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve_plain("yes"), Value::Str("yes".into()));
        assert_eq!(resolve_plain("on"), Value::Str("on".into()));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("True"), Value::Bool(true));
        assert_eq!(resolve_plain("-12"), Value::Int(-12));
        assert_eq!(resolve_plain("0x1F"), Value::Int(31));
        assert_eq!(resolve_plain("0o17"), Value::Int(15));
        assert_eq!(resolve_plain("1.5e3"), Value::Float(1500.0));
        assert_eq!(resolve_plain("8000-8080"), Value::Str("8000-8080".into()));
        assert_eq!(resolve_plain("1.2.3"), Value::Str("1.2.3".into()));
        let s = parse("a: '1'\nb: !!str 2\nc: 3\n");
        let r = &s.documents[0].root;
        assert_eq!(r.get("a").unwrap().value, Value::Str("1".into()));
        assert_eq!(r.get("b").unwrap().value, Value::Str("2".into()));
        assert_eq!(r.get("c").unwrap().value, Value::Int(3));
    }

    #[test]
    fn yaml11_readings_match_kubectl() {
        // What kubectl 1.36 sends for each plain scalar (`kubectl create --dry-run=client -o
        // json`), where that differs from YAML 1.2.
        let differs = |s: &str| yaml11_reading(s, &resolve_plain(s));
        let v = |x: Value| Some(Yaml11::Value(x));
        for b in ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"] {
            assert_eq!(differs(b), v(Value::Bool(true)), "{b}");
        }
        for b in ["n", "N", "no", "No", "NO", "off", "Off", "OFF"] {
            assert_eq!(differs(b), v(Value::Bool(false)), "{b}");
        }
        assert_eq!(differs("0755"), v(Value::Int(493)));
        assert_eq!(differs("012"), v(Value::Int(10)));
        assert_eq!(differs("-012"), v(Value::Int(-10)));
        assert_eq!(differs("0b101"), v(Value::Int(5)));
        assert_eq!(differs("1_000"), v(Value::Int(1000)));
        assert_eq!(differs("1__0"), v(Value::Int(10)));
        assert_eq!(differs("0x_1F"), v(Value::Int(31)));
        assert_eq!(differs("0X1F"), v(Value::Int(31)));
        assert_eq!(differs("-0x1F"), v(Value::Int(-31)));
        assert_eq!(differs("0O17"), v(Value::Int(15)));
        assert_eq!(differs("1_0.5"), v(Value::Float(10.5)));
        assert_eq!(differs(".inf"), Some(Yaml11::Unsendable));
        assert_eq!(differs("-.Inf"), Some(Yaml11::Unsendable));
        assert_eq!(differs(".NaN"), Some(Yaml11::Unsendable));
        // Read the same by both.
        for same in [
            "true",
            "True",
            "FALSE",
            "~",
            "null",
            "0",
            "00",
            "08",
            "09",
            "+12",
            "-0",
            "443",
            "0x1F",
            "0o17",
            "1e3",
            "1E3",
            "12e03",
            "1.",
            ".5",
            "1.5",
            "0.1e2",
            "1:20",
            "2001-12-14",
            "0o8",
            "0b2",
            "_1",
            "=",
            "kill-curl",
            "/usr/bin/curl",
            "8000-8080",
            "10.0.0.0/8",
            "yesterday",
            "online",
            "nope",
        ] {
            assert_eq!(differs(same), None, "{same}");
        }
    }

    #[test]
    fn yaml11_scalars_are_issues_unless_quoted_or_tagged() {
        let s = parse("a: [on, 'on', \"yes\", !!str yes, 0755, kill]\n");
        let issues = &s.documents[0].issues;
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues.iter().all(|i| i.kind == IssueKind::Yaml11Scalar));
        assert_eq!(issues[0].pos, Pos { line: 1, column: 5 });
        assert!(issues[0].message.contains("the boolean true to kubectl"));
        assert!(issues[0].hint.contains("`\"on\"`"), "{}", issues[0].hint);
        assert!(issues[1].message.contains("493"), "{}", issues[1].message);
        // The tree keeps the YAML 1.2 reading.
        let a = s.documents[0].root.get("a").unwrap();
        assert_eq!(
            a.to_json(),
            serde_json::json!(["on", "on", "yes", "yes", 755, "kill"])
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_a_repeated_key_keeps_its_last_value() {
        let s = parse("\u{feff}apiVersion: v1\nkind: a\nkind: b\n");
        let root = &s.documents[0].root;
        assert_eq!(root.get("apiVersion").unwrap().as_str(), Some("v1"));
        assert_eq!(
            root.entry("apiVersion").unwrap().key_pos,
            Pos { line: 1, column: 1 }
        );
        assert_eq!(root.get("kind").unwrap().as_str(), Some("b"));
        assert_eq!(s.documents[0].issues[0].kind, IssueKind::DuplicateKey);
        assert_eq!(s.documents[0].issues[0].pos.line, 3);
    }

    #[test]
    fn merge_keys_merge_as_kubectl_does() {
        // kubectl 1.36 sends: m1 {a: 1, b: 2}, m2 {a: 0, b: 2}, m3 {a: 1, b: 2, c: 3}, m4 {"<<": ...}.
        let s = parse(
            "base: &b {a: 1, b: 2}\nm1: {a: 0, <<: *b}\nm2: {<<: *b, a: 0}\nm3: {<<: [*b, {a: 9, c: 3}]}\nm4: {\"<<\": *b}\nm5: {<<: 3}\n",
        );
        let d = &s.documents[0];
        let j = d.root.to_json();
        assert_eq!(j["m1"], serde_json::json!({"a": 1, "b": 2}));
        assert_eq!(j["m2"], serde_json::json!({"a": 0, "b": 2}));
        assert_eq!(j["m3"], serde_json::json!({"a": 1, "b": 2, "c": 3}));
        assert_eq!(j["m4"], serde_json::json!({"<<": {"a": 1, "b": 2}}));
        // Replacing a merged key is not a duplicate; a merge of a scalar is refused.
        assert_eq!(d.issues.len(), 1, "{:?}", d.issues);
        assert_eq!(d.issues[0].kind, IssueKind::BadMerge);
        assert_eq!(d.issues[0].pos.line, 6);
    }

    #[test]
    fn multi_document_and_errors() {
        let s = parse("a: 1\n---\n---\nb: 2\n");
        assert_eq!(s.documents.len(), 2, "empty document skipped");
        assert_eq!(s.documents[1].start.line, 3);
        let s = parse("a: 1\n---\nb: [1, 2\n");
        assert_eq!(s.documents.len(), 1);
        assert!(s.error.is_some());
        let s = parse("a: 1\na: 2\n");
        assert_eq!(s.documents[0].issues.len(), 1);
        assert_eq!(s.documents[0].issues[0].pos.line, 2);
    }

    #[test]
    fn limits_refuse_deep_nesting_and_alias_bombs() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).error.is_some());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            bomb.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = c;
        }
        let s = parse(&bomb);
        assert!(s.error.unwrap().message.contains("nodes"));
        let ok = parse("a: &x {k: v}\nb: *x\n");
        assert_eq!(
            ok.documents[0]
                .root
                .get("b")
                .unwrap()
                .get("k")
                .unwrap()
                .as_str(),
            Some("v")
        );
    }
}
