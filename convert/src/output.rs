//! Writing a converted policy as YAML with comments: a banner saying where it came from and
//! what was left out, the input's own comments, and above each rule the comments, `message`
//! and `tags` of the Tetragon hook it came from. The body is the project's YAML writer
//! ([`bulwark_policy::yaml::to_yaml`]), which writes keys in sorted order; `spec` is the last
//! top-level key and `rules` the last key of `spec`, so the rules can be appended one by one
//! with their comments in front.

use bulwark_policy::yaml::to_yaml;
use bulwark_policy::Rule;

/// A rule and the comment lines (without `#`) to write above it.
pub struct CommentedRule {
    pub comments: Vec<String>,
    pub rule: Rule,
}

fn comment_lines(out: &mut String, indent: &str, lines: &[String]) {
    for l in lines {
        if l.is_empty() {
            out.push_str(indent);
            out.push_str("#\n");
        } else {
            for part in l.lines() {
                out.push_str(&format!("{indent}# {part}\n"));
            }
        }
    }
}

/// The policy document: `header` comments, then `envelope` (apiVersion, kind, metadata and a
/// `spec` holding `mode` only), then `spec.rules`.
pub fn write(header: &[String], envelope: &serde_json::Value, rules: &[CommentedRule]) -> String {
    let mut out = String::new();
    comment_lines(&mut out, "", header);
    out.push_str(&to_yaml(envelope));
    out.push_str("  rules:\n");
    for r in rules {
        comment_lines(&mut out, "  ", &r.comments);
        let value = serde_json::to_value([&r.rule]).unwrap_or_default();
        for line in to_yaml(&value).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::{Action, ActionSelector, BinarySelector, Hook, Operator, Selector};

    #[test]
    fn rules_with_comments_read_back_as_the_policy() {
        let rule = |name: &str| Rule {
            name: name.into(),
            hook: Hook::Exec,
            selectors: vec![Selector {
                match_binaries: vec![BinarySelector {
                    operator: Operator::In,
                    values: vec!["/usr/bin/nc".into()],
                }],
                match_actions: vec![ActionSelector {
                    action: Action::Sigkill,
                }],
                ..Selector::default()
            }],
        };
        let envelope = serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": "p"}, "spec": {"mode": "enforce"}
        });
        let rules = vec![
            CommentedRule {
                comments: vec!["first # with hash".into(), String::new()],
                rule: rule("a"),
            },
            CommentedRule {
                comments: vec![],
                rule: rule("b"),
            },
        ];
        let text = write(&["banner".into()], &envelope, &rules);
        assert!(text.starts_with("# banner\n"), "{text}");
        // The comments sit right above their rule's list item (whichever key comes first:
        // serde_json's key order depends on the features the build unifies).
        assert!(text.contains("  # first # with hash\n  #\n  - "), "{text}");
        let parsed = bulwark_policy::yaml::parse(&text);
        assert!(parsed.error.is_none(), "{text}");
        let mut expected = envelope.clone();
        expected["spec"]["rules"] = serde_json::to_value([rule("a"), rule("b")]).unwrap();
        assert_eq!(parsed.documents[0].root.to_json(), expected, "{text}");
    }
}
