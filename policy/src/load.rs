//! Loading policy files: YAML text -> marked tree ([`crate::yaml`]) -> structural checks
//! against the CRD schema ([`crate::schema`]) -> JSON -> typed [`AnyPolicy`] -> semantic checks
//! ([`crate::validate`]) -> diagnostics with file, line and column. `lint_source` handles one
//! file's text; `lint_paths` walks files and directories (recursive `.yaml`/`.yml`, sorted) and
//! adds the cross-file checks. Both are pure and deterministic, and never panic on any input.
//! Their `_with` forms also run a [`SetCheck`] over the policies that would be loaded together
//! and place its findings in the files: that is how the compiler's kernel-capacity check
//! (BW092) joins the lint without this crate depending on the compiler.

use crate::diagnostics::{codes, Diagnostic};
use crate::protocol::{self, EncryptedProtocol, SignatureError};
use crate::schema::{self, Kind};
use crate::validate;
use crate::yaml::{self, Document, IssueKind, TreeIssue, Value};
use crate::{AnyPolicy, TracingPolicy, TracingPolicyNamespaced};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What linting produced: the policies of documents with no errors, and every diagnostic.
#[derive(Clone, Debug, Default)]
pub struct LintOutcome {
    /// Documents that passed every check with no error (warnings allowed), in file order.
    pub policies: Vec<AnyPolicy>,
    /// Every diagnostic, in file and line order.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read.
    pub files: usize,
    /// Non-empty YAML documents seen.
    pub documents: usize,
    /// Files in the order they were read (orders the diagnostics).
    pub file_names: Vec<String>,
    /// `EncryptedProtocol` declarations with no error, in file order.
    pub protocols: Vec<EncryptedProtocol>,
}

impl LintOutcome {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// An error finding the inputs: a path given on the command line that does not exist or a
/// directory that cannot be listed (not a problem in a policy). A file that cannot be read or
/// is not text is a diagnostic for that file, and the other files are still checked.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The message carries the OS error (not chained as `source`, so it is printed once).
    #[error("cannot read `{path}`: {error}")]
    Io { path: String, error: std::io::Error },
}

/// A check over the policies that would be loaded together (those with no errors so far):
/// diagnostics with paths and no positions, each with the index (into the slice) of the policy
/// it is about. `bulwark_compiler::capacity` is one.
pub type SetCheck<'a> = &'a dyn Fn(&[&AnyPolicy]) -> Vec<(usize, Diagnostic)>;

/// The [`SetCheck`] that finds nothing.
fn no_set_check(_: &[&AnyPolicy]) -> Vec<(usize, Diagnostic)> {
    Vec::new()
}

/// One typed document with where it came from, before set-level checks.
struct Loaded {
    file: String,
    doc: Document,
    /// Path of the document in its file: `items[2]` inside a `kind: List`, else empty.
    prefix: String,
    policy: AnyPolicy,
    has_errors: bool,
}

/// Fills in the file and the position of the node at the diagnostic's path, then prefixes the
/// path with where the document sits in its file (`items[2].spec...` in a `kind: List`).
fn place(d: &mut Diagnostic, file: &str, doc: &Document, prefix: &str) {
    d.file = Some(file.to_string());
    if d.line.is_none() {
        let pos = match &d.path {
            Some(p) => doc.root.locate(p, true).0,
            None => doc.root.pos,
        };
        d.line = Some(pos.line);
        d.column = Some(pos.column);
    }
    if !prefix.is_empty() {
        d.path = Some(match d.path.take() {
            Some(p) => format!("{prefix}.{p}"),
            None => prefix.to_string(),
        });
    }
}

fn issue_diagnostic(i: &TreeIssue) -> Diagnostic {
    let code = match i.kind {
        IssueKind::DuplicateKey => codes::DUPLICATE_KEY,
        IssueKind::Yaml11Scalar => codes::YAML11_SCALAR,
        IssueKind::BadMerge => codes::YAML_SYNTAX,
    };
    Diagnostic::new(code, i.message.clone())
        .hint(i.hint.clone())
        .at(i.pos.line, i.pos.column)
}

/// The documents of a `kind: List` (`apiVersion: v1`), as `kubectl get -o yaml` writes and
/// `kubectl apply` reads them: each item becomes a document of its own, with the tree issues
/// that lie inside it. `None` when `doc` is not a List; a diagnostic when its `items` is not a
/// list.
fn list_items(doc: &Document) -> Option<Result<Vec<Document>, Diagnostic>> {
    let is_list = doc.root.get("apiVersion").and_then(|n| n.as_str()) == Some("v1")
        && doc.root.get("kind").and_then(|n| n.as_str()) == Some("List");
    if !is_list {
        return None;
    }
    let items = match doc.root.get("items").map(|n| &n.value) {
        None | Some(Value::Null) => return Some(Ok(Vec::new())),
        Some(Value::Seq(items)) => items,
        Some(other) => {
            return Some(Err(Diagnostic::new(
                codes::WRONG_TYPE,
                format!("`items` of a `kind: List` must be a list of policies, found {}", other.type_name()),
            )
            .hint("write each policy as an entry of `items:`, or write them as separate documents separated by `---`")
            .path("items")))
        }
    };
    let mut docs: Vec<Document> = items
        .iter()
        .map(|item| Document {
            root: item.clone(),
            start: item.pos,
            issues: Vec::new(),
        })
        .collect();
    for issue in &doc.issues {
        // The last item starting at or before the issue holds it (items are in source order,
        // so a binary search finds it).
        let after = docs.partition_point(|d| d.start <= issue.pos);
        if let Some(d) = after.checked_sub(1).and_then(|i| docs.get_mut(i)) {
            d.issues.push(issue.clone());
        }
    }
    Some(Ok(docs))
}

/// Checks one file's text without set-level checks. The caller lists `file` in
/// `out.file_names`.
fn check_source(file: &str, text: &str, out: &mut LintOutcome, loaded: &mut Vec<Loaded>) {
    let stream = yaml::parse(text);
    for doc in stream.documents {
        match list_items(&doc) {
            None => check_document(file, doc, "", out, loaded),
            Some(Err(mut d)) => {
                out.documents += 1;
                place(&mut d, file, &doc, "");
                out.diagnostics.push(d);
            }
            Some(Ok(items)) => {
                // Issues before the first item (in the List's own keys) are the List's.
                let first = items.first().map(|d| d.start);
                for i in doc
                    .issues
                    .iter()
                    .filter(|i| first.is_none_or(|f| i.pos < f))
                {
                    let mut d = issue_diagnostic(i);
                    place(&mut d, file, &doc, "");
                    out.diagnostics.push(d);
                }
                for (i, item) in items.into_iter().enumerate() {
                    check_document(file, item, &format!("items[{i}]"), out, loaded);
                }
            }
        }
    }
    if let Some(e) = stream.error {
        out.diagnostics.push(
            Diagnostic::new(codes::YAML_SYNTAX, format!("invalid YAML: {}", e.message))
                .hint("fix the syntax at this position (check indentation, `:` after keys, matching quotes and brackets)")
                .file(file)
                .at(e.pos.line, e.pos.column),
        );
    }
}

/// Checks one document (a whole document, or one item of a `kind: List` at `prefix`).
fn check_document(
    file: &str,
    doc: Document,
    prefix: &str,
    out: &mut LintOutcome,
    loaded: &mut Vec<Loaded>,
) {
    out.documents += 1;
    let mut diags: Vec<Diagnostic> = doc.issues.iter().map(issue_diagnostic).collect();
    if doc.root.get("kind").and_then(|k| k.as_str()) == Some(protocol::KIND) {
        let mut diags = check_protocol(&doc, diags, out);
        for d in &mut diags {
            place(d, file, &doc, prefix);
        }
        out.diagnostics.extend(diags);
        return;
    }
    let kind = schema::check_document(&doc, &mut diags);
    let structural_ok = !diags.iter().any(Diagnostic::is_error);
    let mut policy = None;
    if let (Some(kind), true) = (kind, structural_ok) {
        let json = doc.root.to_json();
        let typed = match kind {
            Kind::Cluster => serde_json::from_value::<TracingPolicy>(json).map(AnyPolicy::Cluster),
            Kind::Namespaced => {
                serde_json::from_value::<TracingPolicyNamespaced>(json).map(AnyPolicy::Namespaced)
            }
        };
        match typed {
            Ok(p) => {
                diags.extend(validate::validate_policy(&p));
                policy = Some(p);
            }
            Err(e) => diags.push(
                Diagnostic::new(
                    codes::WRONG_TYPE,
                    format!("the document does not match the policy model: {e}"),
                )
                .hint("compare the document with policies/examples/ and docs/lint.md"),
            ),
        }
    }
    for d in &mut diags {
        place(d, file, &doc, prefix);
    }
    let has_errors = diags.iter().any(Diagnostic::is_error);
    out.diagnostics.extend(diags);
    if let Some(policy) = policy {
        loaded.push(Loaded {
            file: file.to_string(),
            doc,
            prefix: prefix.to_string(),
            policy,
            has_errors,
        });
    }
}

/// Checks an `EncryptedProtocol` document, keeping it in `out` when it has no error and its
/// name is not declared before; returns its diagnostics (`diags` and the checks'), unplaced.
fn check_protocol(
    doc: &Document,
    mut diags: Vec<Diagnostic>,
    out: &mut LintOutcome,
) -> Vec<Diagnostic> {
    let (decl, found) = protocol::lint_document(doc);
    diags.extend(found);
    if let Some(decl) = decl {
        let name = decl.metadata.name.clone().unwrap_or_default();
        if out
            .protocols
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        {
            diags.push(protocol::diagnostic(&SignatureError::Duplicate(name)));
        } else if out.protocols.len() >= protocol::MAX_DECLARED_PROTOCOLS {
            diags.push(protocol::diagnostic(&SignatureError::TooMany {
                name,
                count: out.protocols.len() + 1,
                limit: protocol::MAX_DECLARED_PROTOCOLS,
            }));
        }
        if !diags.iter().any(Diagnostic::is_error) {
            out.protocols.push(decl);
        }
    }
    diags
}

fn finish(mut out: LintOutcome, loaded: Vec<Loaded>, set_check: SetCheck) -> LintOutcome {
    let refs: Vec<&AnyPolicy> = loaded.iter().map(|l| &l.policy).collect();
    let mut failed: Vec<bool> = loaded.iter().map(|l| l.has_errors).collect();
    let mut set_diags = validate::duplicates_indexed(&refs);
    for (i, d, _) in &set_diags {
        failed[*i] |= d.is_error();
    }
    // The set check sees what would be loaded together: the policies without errors.
    let loadable: Vec<usize> = (0..loaded.len()).filter(|&i| !failed[i]).collect();
    let loadable_refs: Vec<&AnyPolicy> = loadable.iter().map(|&i| &loaded[i].policy).collect();
    set_diags.extend(
        set_check(&loadable_refs)
            .into_iter()
            .map(|(k, d)| (loadable[k], d, None)),
    );
    for (i, mut d, related) in set_diags {
        let l = &loaded[i];
        if let Some(r) = related {
            let first = &loaded[r];
            let (pos, _) = first.doc.root.locate("metadata.name", false);
            d.message
                .push_str(&format!(" (first defined at {}:{})", first.file, pos.line));
        }
        place(&mut d, &l.file, &l.doc, &l.prefix);
        if d.is_error() {
            failed[i] = true;
        }
        out.diagnostics.push(d);
    }
    out.policies = loaded
        .into_iter()
        .zip(failed)
        .filter(|(_, f)| !f)
        .map(|(l, _)| l.policy)
        .collect();
    // Stable order: by file (in the order read), then line, column, code.
    let order: HashMap<&str, usize> = out
        .file_names
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i))
        .collect();
    let keys: Vec<_> = out
        .diagnostics
        .iter()
        .map(|d| {
            let file = d.file.as_deref().and_then(|f| order.get(f).copied());
            (file, d.line, d.column, d.code)
        })
        .collect();
    let mut sorted: Vec<(usize, Diagnostic)> = out.diagnostics.drain(..).enumerate().collect();
    sorted.sort_by_key(|(i, _)| keys[*i]);
    out.diagnostics = sorted.into_iter().map(|(_, d)| d).collect();
    out
}

/// Parses and checks one file's text (all its documents, plus duplicate names within the
/// file). `file` is only used to label diagnostics.
pub fn lint_source(file: &str, text: &str) -> LintOutcome {
    lint_source_with(file, text, &no_set_check)
}

/// [`lint_source`], then `set_check` over the file's policies without errors.
pub fn lint_source_with(file: &str, text: &str, set_check: SetCheck) -> LintOutcome {
    let mut out = LintOutcome {
        files: 1,
        file_names: vec![file.to_string()],
        ..Default::default()
    };
    let mut loaded = Vec::new();
    check_source(file, text, &mut out, &mut loaded);
    finish(out, loaded, set_check)
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn collect(
    path: &Path,
    explicit: bool,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), LoadError> {
    let io = |e: std::io::Error| LoadError::Io {
        path: path.display().to_string(),
        error: e,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A YAML entry of a directory that cannot be stat'ed (a dangling symlink) is listed
        // like the others: reading it reports it, and a caller that reads file by file (the
        // daemon) rejects that file alone.
        Err(_) if !explicit && is_yaml(path) => {
            files.push(path.to_path_buf());
            return Ok(());
        }
        Err(e) => return Err(io(e)),
    };
    if meta.is_dir() {
        // Symlinked directories may form loops: visit each real directory once.
        let real = std::fs::canonicalize(path).map_err(io)?;
        if !visited.insert(real) {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort();
        for e in entries {
            let hidden = e
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden && (e.is_dir() || is_yaml(&e)) {
                collect(&e, false, files, visited)?;
            }
        }
    } else if explicit || is_yaml(path) {
        // A file named on the command line is read whatever its extension.
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// The files [`lint_paths`] reads for `paths`: directories walked recursively (`.yaml`/`.yml`,
/// sorted, hidden entries skipped, each real directory once however symlinks loop), a file
/// named explicitly whatever its extension.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    for p in paths {
        collect(p, true, &mut files, &mut visited)?;
    }
    Ok(files)
}

/// A file's text, or why it has none as a diagnostic (BW001) at the offending byte: the file
/// cannot be read, is binary (holds a NUL byte) or is not UTF-8.
fn read_text(path: &Path) -> Result<String, Box<Diagnostic>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Box::new(
            Diagnostic::new(codes::YAML_SYNTAX, format!("cannot read the file: {e}"))
                .hint("check that the file exists and is readable, or leave it out of the paths given")
                .at(1, 1),
        )
    })?;
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        let (line, column) = line_column(&bytes, nul);
        return Err(Box::new(
            Diagnostic::new(
                codes::YAML_SYNTAX,
                "the file is binary (it holds a NUL byte), not a policy",
            )
            .hint("pass .yaml/.yml policy files or directories that hold them")
            .at(line, column),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        let (line, column) = line_column(&bytes, offset);
        Box::new(
            Diagnostic::new(
                codes::YAML_SYNTAX,
                format!(
                    "the file is not UTF-8 text: byte 0x{:02x} at offset {offset} is not valid UTF-8",
                    bytes[offset]
                ),
            )
            .hint("save the policy as UTF-8")
            .at(line, column),
        )
    })
}

/// 1-based line and column (in characters) of byte `offset`, all bytes before it valid UTF-8
/// up to the last line break.
fn line_column(bytes: &[u8], offset: usize) -> (u32, u32) {
    let before = &bytes[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// Lints files and directories (recursive, `.yaml`/`.yml`, sorted; a file named explicitly
/// is read whatever its extension). Cross-file checks (duplicate policy names) run over every
/// policy found. A file that cannot be read or is not text is a diagnostic for that file; only
/// a path that cannot be found or listed is an error.
pub fn lint_paths(paths: &[PathBuf]) -> Result<LintOutcome, LoadError> {
    lint_paths_with(paths, &no_set_check)
}

/// [`lint_paths`], then `set_check` over every policy found without errors.
pub fn lint_paths_with(paths: &[PathBuf], set_check: SetCheck) -> Result<LintOutcome, LoadError> {
    let files = policy_files(paths)?;
    let mut out = LintOutcome::default();
    let mut loaded = Vec::new();
    let mut listed = HashSet::new();
    for f in &files {
        out.files += 1;
        let name = f.display().to_string();
        if listed.insert(name.clone()) {
            out.file_names.push(name.clone());
        }
        match read_text(f) {
            Ok(text) => check_source(&name, &text, &mut out, &mut loaded),
            Err(d) => out.diagnostics.push((*d).file(name)),
        }
    }
    Ok(finish(out, loaded, set_check))
}
