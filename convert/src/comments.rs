//! The comments of a YAML file, with their lines, so a conversion can carry them over. The YAML
//! parser drops comments, so they are found in the text: a `#` at the start of a line or after
//! whitespace, outside quotes. Lines inside block scalars (`|`, `>`) are not told apart from
//! the rest; Tetragon policies rarely have them, and a `#` line there reads as a comment.

/// One comment: its line and its text without the `#` and surrounding spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub line: u32,
    pub text: String,
    /// True when nothing but whitespace precedes it on its line.
    pub whole_line: bool,
}

/// Every comment in `text`, in line order.
pub fn comments(text: &str) -> Vec<Comment> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(at) = comment_start(line) {
            out.push(Comment {
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                text: line[at + 1..].trim().to_string(),
                whole_line: line[..at].trim().is_empty(),
            });
        }
    }
    out
}

/// Byte offset of the `#` that starts a comment on this line, if any.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut prev_blank) = (false, false, true);
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            '#' if !single && !double && prev_blank => return Some(i),
            '\'' if !double => single = !single,
            '"' if !single && !escaped => double = !double,
            _ => {}
        }
        escaped = double && c == '\\' && !escaped;
        prev_blank = c == ' ' || c == '\t';
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_line_and_trailing_comments_outside_quotes() {
        let text = "# head\nkey: value # tail\nq: \"a # not\" # yes\ns: 'it''s # no'\nurl: a#b\n  # indented\n";
        let c = comments(text);
        let got: Vec<(u32, &str, bool)> = c
            .iter()
            .map(|c| (c.line, c.text.as_str(), c.whole_line))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "head", true),
                (2, "tail", false),
                (3, "yes", false),
                (6, "indented", true)
            ]
        );
    }
}
