//! Checks of the `hook: file` fields of a selector: `matchPaths` values (absolute, no `.` or
//! `..`, no `//`, no trailing `/` on an exact path, no glob, within what the kernel compares),
//! `matchAccess`, those fields on other hooks, and what they add to "can never match" and
//! "broader".

use super::{
    cleaned, collapse_slashes, d, op_name, pattern_characters, pattern_hint, quoted,
    stray_characters,
};
use crate::diagnostics::{codes, Diagnostic, Severity};
use crate::model::*;
use crate::values::ValueLimit;

/// Checks the file fields of selector `sel` (path `sp`) of a rule.
pub(super) fn check(rule: &Rule, sel: &Selector, sp: &str, out: &mut Vec<Diagnostic>) {
    if rule.hook != Hook::File {
        for (field, used) in [
            ("matchPaths", !sel.match_paths.is_empty()),
            ("matchAccess", !sel.match_access.is_empty()),
        ] {
            if used {
                out.push(d(
                    codes::FILE_FIELD_OFF_HOOK,
                    format!("{sp}.{field}"),
                    format!("`{field}` on rule `{}` with `hook: {}`: only `hook: file` sees file accesses", rule.name, rule.hook.as_str()),
                    format!("use `hook: file` with `matchPaths` to act on files, or remove `{field}`"),
                ));
            }
        }
        return;
    }
    if sel.match_paths.is_empty() {
        out.push(d(
            codes::NO_PATHS,
            format!("{sp}.matchPaths"),
            format!("selector on rule `{}` with `hook: file` names no path, so it would judge every file access of every process", rule.name),
            "add `matchPaths: [{operator: In, values: [/etc/shadow]}]` (or `Prefix` with a directory ending in `/`)",
        ));
    }
    for (k, m) in sel.match_paths.iter().enumerate() {
        let mp = format!("{sp}.matchPaths[{k}]");
        if m.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{mp}.values"),
                "`values` is empty",
                "list at least one absolute path, e.g. `values: [/etc/shadow]`",
            ));
        }
        for (vi, v) in m.values.iter().enumerate() {
            check_path(m.operator, v, &format!("{mp}.values[{vi}]"), out);
        }
    }
    for (k, a) in sel.match_access.iter().enumerate() {
        if a.values.is_empty() {
            out.push(d(
                codes::EMPTY_VALUES,
                format!("{sp}.matchAccess[{k}].values"),
                "`values` is empty",
                "list at least one access: read, write, create, delete, metadata",
            ));
        }
    }
}

/// Checks one `matchPaths` value.
fn check_path(op: Operator, v: &str, path: &str, out: &mut Vec<Diagnostic>) {
    let bad = |msg: String, hint: String, out: &mut Vec<Diagnostic>| {
        out.push(d(codes::INVALID_FILE_PATH, path, msg, hint))
    };
    if v.is_empty() {
        return bad(
            "file path is empty".into(),
            "write an absolute path such as `/etc/shadow`".into(),
            out,
        );
    }
    if v.contains('\0') {
        return bad(
            "file path contains a NUL byte".into(),
            "remove the NUL (`\\0`) from the path".into(),
            out,
        );
    }
    let kind = op.kind();
    if let Some(what) = stray_characters(v) {
        let never = kind != MatchKind::Postfix && !v.starts_with('/');
        out.push(
            d(
                codes::STRAY_CHARACTERS,
                path,
                format!(
                    "file path {} {what}{}",
                    quoted(v),
                    if never {
                        ", so it is not absolute and can never match"
                    } else {
                        ""
                    }
                ),
                format!("write {}", quoted(&cleaned(v))),
            )
            .severity(if never {
                Severity::Error
            } else {
                Severity::Warning
            }),
        );
        return;
    }
    if let Some(what) = pattern_characters(v) {
        return out.push(d(
            codes::PATTERN_IN_PATH,
            path,
            format!("file path `{v}` contains {what}, but `{}` compares literal paths (there are no wildcards), so it can never match", op_name(op)),
            pattern_hint(op, v),
        ));
    }
    if kind != MatchKind::Postfix && !v.starts_with('/') {
        return bad(
            format!("file path `{v}` is not absolute; the kernel judges the absolute path of the file it used, never the string a program passed"),
            format!("write the absolute path, e.g. `/{v}`, or use `operator: Postfix` with `/{v}` to match that name in any directory"),
            out,
        );
    }
    if v.contains("//") {
        return bad(
            format!("file path `{v}` contains `//`; the kernel's path never does, so it can never match"),
            format!("write `{}`", collapse_slashes(v)),
            out,
        );
    }
    if v.split('/').any(|c| c == "." || c == "..") {
        return bad(
            format!("file path `{v}` contains `.` or `..`; the kernel judges the resolved path, so it can never match"),
            "write the resolved absolute path (what `realpath` prints)".into(),
            out,
        );
    }
    if v.len() > 1 && v.ends_with('/') && kind == MatchKind::Exact {
        return bad(
            format!("file path `{v}` ends with `/`: `{}` compares whole paths, and no file's path ends with `/`", op_name(op)),
            format!("use `operator: {}` with `{v}` to match everything under the directory, or name the file", if op.is_negated() { "NotPrefix" } else { "Prefix" }),
            out,
        );
    }
    let ValueLimit { name, max: limit } = ValueLimit::binary(kind);
    if v.len() > limit {
        return out.push(d(
            codes::VALUE_TOO_LONG,
            path,
            format!(
                "file path is {} bytes; the kernel matches at most {limit} bytes for `{}` ({name})",
                v.len(),
                op_name(op)
            ),
            format!(
                "shorten it to {limit} bytes or less, e.g. match a shorter `Prefix` or `Postfix`"
            ),
        ));
    }
    if kind == MatchKind::Prefix && !v.ends_with('/') {
        out.push(
            d(
                codes::PREFIX_WITHOUT_SLASH,
                path,
                format!("`{}` `{v}` also matches `{v}-old`, `{v}.d/...` and every other path that starts with those bytes, not only what is under the directory `{v}`", op_name(op)),
                format!("write `{v}/` to mean the directory's contents (and add `In` `{v}` for the directory itself); keep it if a name prefix is meant (this is a warning)"),
            )
            .severity(Severity::Warning),
        );
    }
}

/// Why the file fields make a `hook: file` selector unmatchable: its `matchAccess` entries
/// leave no access.
pub(super) fn never_matches(hook: Hook, sel: &Selector) -> Option<(String, String)> {
    if hook != Hook::File || sel.match_access.is_empty() || sel.access_bits() != 0 {
        return None;
    }
    Some((
        ".matchAccess".into(),
        "its `matchAccess` entries (ANDed) leave no kind of access".into(),
    ))
}

/// `a` matches whenever `b` does, as far as the file fields go: each of `a`'s path entries is
/// also one of `b`'s, and `a` acts on every access `b` acts on.
pub(super) fn broader(a: &Selector, b: &Selector) -> bool {
    a.match_paths.iter().all(|x| b.match_paths.contains(x))
        && a.access_bits() & b.access_bits() == b.access_bits()
}
