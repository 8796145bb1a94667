//! Diagnostics: the one record every check produces ([`Diagnostic`]), the table of stable codes
//! ([`CODES`]), and the renderers behind `bulwark lint --format` (text, JSON, SARIF 2.1.0,
//! GitHub workflow annotations). Codes never change meaning once published; docs/lint.md lists
//! them with examples.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// How bad a diagnostic is. Errors fail `bulwark lint`; warnings fail it only with `--strict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A stable diagnostic code and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    /// `BW` + three digits, e.g. `BW020`.
    pub id: &'static str,
    /// Short kebab-case name (SARIF rule name).
    pub name: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// One line saying what the check finds.
    pub summary: &'static str,
}

macro_rules! codes {
    ($($konst:ident = $id:literal, $name:literal, $sev:ident, $summary:literal;)*) => {
        /// The codes, one constant each.
        pub mod codes {
            use super::{Code, Severity};
            $(pub const $konst: Code = Code { id: $id, name: $name, severity: Severity::$sev, summary: $summary };)*
        }
        /// Every code, in order.
        pub const CODES: &[Code] = &[$(codes::$konst),*];
    };
}

codes! {
    YAML_SYNTAX = "BW001", "yaml-syntax", Error, "The file is not valid YAML, not UTF-8 text, or cannot be read.";
    DUPLICATE_KEY = "BW002", "duplicate-key", Error, "A mapping has the same key twice.";
    NOT_AN_OBJECT = "BW003", "not-an-object", Error, "A document is not a mapping (a Kubernetes object).";
    YAML11_SCALAR = "BW004", "yaml-1.1-scalar", Error, "A plain scalar that kubectl (YAML 1.1) reads differently from YAML 1.2 (`on`, `yes`, `0755`, `1_000`).";
    API_VERSION = "BW010", "api-version", Error, "apiVersion is missing or not bulwark.dev/v1alpha1.";
    KIND = "BW011", "kind", Error, "kind is missing or not TracingPolicy / TracingPolicyNamespaced.";
    TETRAGON_POLICY = "BW012", "tetragon-policy", Error, "A Cilium Tetragon policy was given instead of a bulwark policy.";
    MISSING_NAME = "BW013", "missing-name", Error, "metadata.name is missing.";
    INVALID_NAME = "BW014", "invalid-name", Error, "A policy, namespace or rule name is not a valid DNS-1123 name.";
    UNKNOWN_FIELD = "BW020", "unknown-field", Error, "A field that the schema does not have (often a misspelling).";
    WRONG_TYPE = "BW021", "wrong-type", Error, "A value has the wrong type (e.g. a string where a list is expected).";
    INVALID_ENUM = "BW022", "invalid-enum", Error, "A value is not one of the allowed values.";
    MISSING_FIELD = "BW023", "missing-field", Error, "A required field is missing.";
    OPERATOR_NOT_ALLOWED = "BW024", "operator-not-allowed", Error, "An operator that this field does not support.";
    NO_RULES = "BW030", "no-rules", Warning, "A policy has no rules and does nothing.";
    DUPLICATE_RULE = "BW031", "duplicate-rule", Error, "Two rules of a policy have the same name.";
    DUPLICATE_POLICY = "BW032", "duplicate-policy", Error, "Two policies of the same kind have the same name (and namespace).";
    EMPTY_VALUES = "BW040", "empty-values", Error, "A match list or its values are empty.";
    NO_SELECTORS = "BW041", "no-selectors", Error, "A rule has no selectors, so it never matches.";
    NO_CONDITIONS = "BW042", "no-conditions", Warning, "A selector has no conditions and matches every event of its hook.";
    NO_CONDITIONS_ENFORCING = "BW043", "no-conditions-enforcing", Error, "A selector with no conditions kills or blocks every event of its hook.";
    INVALID_CIDR = "BW050", "invalid-cidr", Error, "A CIDR or address does not parse.";
    CIDR_HOST_BITS = "BW051", "cidr-host-bits", Warning, "A CIDR has host bits set.";
    INVALID_PORT = "BW052", "invalid-port", Error, "A port is 0, over 65535, or not a number.";
    INVALID_PORT_RANGE = "BW053", "invalid-port-range", Error, "A port range is malformed or its low end is above its high end.";
    INVALID_BINARY_PATH = "BW054", "invalid-binary-path", Error, "A binary path is not absolute, contains NUL, `//`, a trailing `/`, or is empty.";
    PATTERN_IN_PATH = "BW055", "pattern-in-binary-path", Error, "A binary path holds glob or regular-expression characters (`*`, `?`, `[...]`, `^`, `$`); operators compare literal paths.";
    STRAY_CHARACTERS = "BW056", "stray-characters", Warning, "A binary path or argument value starts or ends with white space or holds a control character (an error where it makes a path relative).";
    INVALID_FILE_PATH = "BW057", "invalid-file-path", Error, "A matchPaths value is not absolute, contains `.`, `..`, `//`, NUL, or (with In / NotIn) ends with `/`.";
    PREFIX_WITHOUT_SLASH = "BW058", "prefix-without-slash", Warning, "A matchPaths Prefix that does not end with `/` also matches names that merely start with the same bytes (`/etc` matches `/etc-old`).";
    ACTION_NOT_ALLOWED = "BW060", "action-not-allowed", Error, "An action that the rule's hook cannot carry out.";
    DESTINATIONS_ON_EXEC = "BW061", "destinations-on-exec", Error, "matchDestinations on an exec hook (an exec has no destination).";
    ENCRYPTION_OFF_EGRESS = "BW062", "encryption-off-egress", Error, "matchEncryption on a hook other than egress and ingress (only they see a first payload).";
    UDP_ON_EGRESS = "BW063", "udp-on-egress", Error, "The egress and ingress hooks classify TCP payloads only; UDP never reaches them.";
    SYSCALL_FIELD_OFF_HOOK = "BW064", "syscall-field-off-syscall-hook", Error, "matchSyscalls, matchSyscallArgs or matchReturn on a hook other than syscall.";
    NO_SYSCALLS = "BW065", "syscall-hook-without-syscalls", Error, "A hook: syscall selector names no system call (matchSyscalls).";
    UNKNOWN_SYSCALL = "BW066", "unknown-syscall", Error, "A matchSyscalls name is no system call on x86_64 or arm64.";
    SYSCALL_ONE_ARCH = "BW067", "syscall-on-one-arch", Warning, "A matchSyscalls name exists on x86_64 or arm64 only, so on the other the selector does not see it.";
    INVALID_INTEGER = "BW068", "invalid-integer", Error, "A matchSyscallArgs or matchReturn value is not an integer (or, in matchReturn, a negated errno name).";
    ARGV_NOT_SYSCALL_ARGS = "BW069", "matchargs-is-argv", Warning, "On hook: syscall, a matchArgs entry with an index and integer values: matchArgs is the process's argv, not the call's arguments (matchSyscallArgs).";
    FILE_FIELD_OFF_HOOK = "BW072", "file-field-off-file-hook", Error, "matchPaths or matchAccess on a hook other than file.";
    NO_PATHS = "BW073", "file-hook-without-paths", Error, "A hook: file selector names no path (matchPaths).";
    ENFORCE_WITHOUT_ACTION = "BW070", "enforce-without-action", Warning, "mode: enforce, but no selector has Sigkill or Block.";
    NO_ACTIONS = "BW071", "no-actions", Warning, "In a mode: enforce policy whose other selectors enforce, a selector without matchActions takes the default Post (report only).";
    NEVER_MATCHES = "BW080", "never-matches", Error, "A selector's conditions contradict each other, so it can never match.";
    SHADOWED = "BW081", "shadowed-selector", Warning, "An earlier selector of the same rule matches whenever this one does and already takes its actions.";
    VALUE_TOO_LONG = "BW090", "value-too-long", Error, "A value is longer than the kernel map key can hold.";
    ARG_INDEX = "BW091", "arg-index-too-large", Error, "matchArgs.index is beyond the argv elements the kernel examines.";
    CAPACITY = "BW092", "kernel-capacity", Error, "The loaded policy set needs more selectors, conditions or map entries than the kernel maps hold.";
    TOO_MANY_ENTRIES = "BW093", "too-many-entries", Error, "A list has more entries than the CRD schema allows (what the kernel maps or the model hold); the API server refuses it too.";
    INVALID_SIGNATURE = "BW100", "invalid-signature", Error, "An EncryptedProtocol's signature or mask is not hex bytes, is empty, has a mask of another length, or a mask that selects no bit.";
    SIGNATURE_BEYOND_PREFIX = "BW101", "signature-beyond-prefix", Error, "An EncryptedProtocol's signature ends beyond the first-payload bytes the daemon inspects.";
    PROTOCOL_NAME = "BW102", "protocol-name", Error, "An EncryptedProtocol's name is a built-in classification word or not a lower-case DNS label starting with a letter.";
    DUPLICATE_PROTOCOL = "BW103", "duplicate-protocol", Error, "Two EncryptedProtocol declarations have the same name.";
    SIGNATURE_TOO_LONG = "BW104", "signature-too-long", Error, "An EncryptedProtocol's signature is longer than the kernel's matchEncryption table compares.";
    TOO_MANY_PROTOCOLS = "BW105", "too-many-protocols", Error, "More EncryptedProtocol declarations than the kernel's matchEncryption table holds.";
}

/// Looks a code up by id.
pub fn code_info(id: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.id == id)
}

/// One finding. `path` is a JSON path into the document (`spec.rules[0].selectors[1]`);
/// `file`/`line`/`column` are filled in when the policy came from text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub path: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code: code.id,
            severity: code.severity,
            message: message.into(),
            hint: None,
            file: None,
            line: None,
            column: None,
            path: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The JSON path; an empty one (the document itself) is no path.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.path = (!path.is_empty()).then_some(path);
        self
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn at(mut self, line: u32, column: u32) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn location(&self) -> String {
        let mut s = self.file.clone().unwrap_or_else(|| "<input>".into());
        if let Some(line) = self.line {
            let _ = write!(s, ":{line}");
            if let Some(col) = self.column {
                let _ = write!(s, ":{col}");
            }
        }
        s
    }
}

/// Counts of errors and warnings.
pub fn count(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors, diags.len() - errors)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Compiler-style text: `file:line:col: error[BW020]: message`, `  = hint: ...`, then a summary.
pub fn render_text(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let _ = writeln!(
            out,
            "{}: {}[{}]: {}",
            d.location(),
            d.severity.as_str(),
            d.code,
            d.message
        );
        if let Some(path) = d.path.as_deref().filter(|p| !p.is_empty()) {
            let _ = writeln!(out, "  = at: {path}");
        }
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
    }
    let (errors, warnings) = count(diags);
    let _ = writeln!(
        out,
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    summary: JsonSummary,
    diagnostics: &'a [Diagnostic],
}

#[derive(Serialize)]
struct JsonSummary {
    errors: usize,
    warnings: usize,
}

/// JSON: `{"version":1,"summary":{"errors":N,"warnings":M},"diagnostics":[...]}` (docs/lint.md).
pub fn render_json(diags: &[Diagnostic]) -> String {
    let (errors, warnings) = count(diags);
    let report = JsonReport {
        version: 1,
        summary: JsonSummary { errors, warnings },
        diagnostics: diags,
    };
    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
}

/// Relative, forward-slash URI for SARIF (`./a/b.yaml` -> `a/b.yaml`).
fn sarif_uri(file: &str) -> String {
    let f = file.replace('\\', "/");
    let f = f.trim_start_matches("./");
    f.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// SARIF 2.1.0 as GitHub code scanning accepts it: one run, every code as a rule, one result
/// per diagnostic with ruleId, ruleIndex, level, message.text and a physical location.
pub fn render_sarif(diags: &[Diagnostic]) -> String {
    use serde_json::json;
    let rules: Vec<_> = CODES
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "shortDescription": {"text": c.summary},
                "fullDescription": {"text": c.summary},
                "help": {"text": format!("{}: {} See docs/lint.md.", c.id, c.summary)},
                "defaultConfiguration": {"level": c.severity.as_str()},
                "properties": {"tags": ["bulwark", "policy"]}
            })
        })
        .collect();
    let results: Vec<_> = diags
        .iter()
        .map(|d| {
            let mut text = d.message.clone();
            if let Some(h) = &d.hint {
                text.push_str("\nhint: ");
                text.push_str(h);
            }
            let mut region = serde_json::Map::new();
            region.insert("startLine".into(), json!(d.line.unwrap_or(1).max(1)));
            region.insert("startColumn".into(), json!(d.column.unwrap_or(1).max(1)));
            let locations = match &d.file {
                Some(f) => json!([{
                    "physicalLocation": {
                        "artifactLocation": {"uri": sarif_uri(f)},
                        "region": region
                    }
                }]),
                None => json!([]),
            };
            json!({
                "ruleId": d.code,
                "ruleIndex": CODES.iter().position(|c| c.id == d.code).unwrap_or(0),
                "level": d.severity.as_str(),
                "message": {"text": text},
                "locations": locations,
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "bulwark-lint",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules
            }},
            "results": results
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_escape_prop(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: `::error file=F,line=L,col=C,title=BW020::message`.
pub fn render_github(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let mut props = Vec::new();
        if let Some(f) = &d.file {
            props.push(format!("file={}", gh_escape_prop(f)));
        }
        if let Some(l) = d.line {
            props.push(format!("line={l}"));
        }
        if let Some(c) = d.column {
            props.push(format!("col={c}"));
        }
        props.push(format!("title={}", gh_escape_prop(d.code)));
        let mut msg = d.message.clone();
        if let Some(h) = &d.hint {
            msg.push_str("\nhint: ");
            msg.push_str(h);
        }
        let _ = writeln!(
            out,
            "::{} {}::{}",
            d.severity.as_str(),
            props.join(","),
            gh_escape_data(&msg)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Diagnostic> {
        vec![
            Diagnostic::new(codes::UNKNOWN_FIELD, "unknown field `matchBinary`")
                .hint("did you mean `matchBinaries`?")
                .file("./p/a, b.yaml")
                .at(3, 7)
                .path("spec.rules[0]"),
            Diagnostic::new(codes::CIDR_HOST_BITS, "100%\nsure")
                .file("b.yaml")
                .at(1, 1),
        ]
    }

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut ids: Vec<_> = CODES.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CODES.len());
        assert!(CODES
            .iter()
            .all(|c| c.id.len() == 5 && c.id.starts_with("BW")));
        assert_eq!(code_info("BW020").unwrap().name, "unknown-field");
        assert!(code_info("BW999").is_none());
    }

    #[test]
    fn text_format() {
        let t = render_text(&sample());
        assert!(
            t.starts_with("./p/a, b.yaml:3:7: error[BW020]: unknown field `matchBinary`\n"),
            "{t}"
        );
        assert!(t.contains("  = hint: did you mean `matchBinaries`?\n"));
        assert!(t.ends_with("1 error, 1 warning\n"), "{t}");
        assert_eq!(render_text(&[]), "0 errors, 0 warnings\n");
    }

    #[test]
    fn json_format_is_stable() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["summary"]["errors"], 1);
        assert_eq!(v["summary"]["warnings"], 1);
        let d = &v["diagnostics"][0];
        assert_eq!(d["code"], "BW020");
        assert_eq!(d["severity"], "error");
        assert_eq!(d["line"], 3);
        assert_eq!(d["column"], 7);
        assert_eq!(d["path"], "spec.rules[0]");
        assert_eq!(v["diagnostics"][1]["hint"], serde_json::Value::Null);
    }

    #[test]
    fn sarif_has_required_shape() {
        let v: serde_json::Value = serde_json::from_str(&render_sarif(&sample())).unwrap();
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), CODES.len());
        let r = &run["results"][0];
        assert_eq!(r["ruleId"], "BW020");
        assert_eq!(
            rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"],
            "BW020"
        );
        assert_eq!(r["level"], "error");
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "p/a%2C%20b.yaml");
        assert_eq!(loc["region"]["startLine"], 3);
        assert_eq!(loc["region"]["startColumn"], 7);
        assert_eq!(run["results"][1]["level"], "warning");
    }

    #[test]
    fn github_annotations_escape() {
        let g = render_github(&sample());
        let lines: Vec<_> = g.lines().collect();
        assert_eq!(
            lines[0],
            "::error file=./p/a%2C b.yaml,line=3,col=7,title=BW020::unknown field `matchBinary`%0Ahint: did you mean `matchBinaries`?"
        );
        assert_eq!(
            lines[1],
            "::warning file=b.yaml,line=1,col=1,title=BW051::100%25%0Asure"
        );
    }
}
