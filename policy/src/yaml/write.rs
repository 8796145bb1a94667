//! JSON values written as block-style YAML (the generated CRDs): plain scalars where they read
//! back as the same value under the core schema, JSON-quoted strings otherwise.

use super::{resolve_plain, Value};

/// Writes a JSON value as block-style YAML. Strings are plain when that reads back as the same
/// string, else JSON-quoted (JSON string escapes are valid YAML double-quoted escapes).
pub fn to_yaml(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn scalar_yaml(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value as J;
    Some(match value {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => yaml_string(s),
        J::Array(a) if a.is_empty() => "[]".into(),
        J::Object(o) if o.is_empty() => "{}".into(),
        _ => return None,
    })
}

fn yaml_string(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && matches!(resolve_plain(s), Value::Str(_))
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && s.chars().all(|c| c != '\t' && (' '..='~').contains(&c));
    if plain_ok {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

fn write_yaml(value: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match value {
        J::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.push_str(&pad);
                out.push_str(&yaml_string(k));
                out.push(':');
                match scalar_yaml(v) {
                    Some(s) => {
                        out.push(' ');
                        out.push_str(&s);
                        out.push('\n');
                    }
                    None => {
                        out.push('\n');
                        let child = if matches!(v, J::Array(_)) {
                            indent
                        } else {
                            indent + 2
                        };
                        write_yaml(v, child, out);
                    }
                }
            }
        }
        J::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match scalar_yaml(item) {
                    Some(s) => {
                        out.push(' ');
                        out.push_str(&s);
                        out.push('\n');
                    }
                    None => {
                        // Write the child at indent+2, then put its first line after "- ".
                        let mut child = String::new();
                        write_yaml(item, indent + 2, &mut child);
                        out.push(' ');
                        out.push_str(&child[indent + 2..]);
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar_yaml(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    #[test]
    fn yaml_writer_round_trips() {
        let v = serde_json::json!({
            "a": "plain", "b": "yes", "c": "123", "d": "has: colon", "e": "", "f": [1, {"x": "y", "z": [true]}],
            "g": {"h": null, "i": [[1, 2], []], "j": {}}, "k": "line\nbreak", "l": "- dash", "m": 1.5,
            "n": [{"a": {"b": 1}}], "o": "#hash", "p": "*star", "q": "ünïcode"
        });
        let text = to_yaml(&v);
        let s = parse(&text);
        assert!(s.error.is_none(), "{text}");
        assert_eq!(s.documents[0].root.to_json(), v, "{text}");
    }
}
