//! docs/events.md and this crate describe the same events: every ```json example of the
//! document is parsed into an [`Event`] and written back, and must come out as the same JSON
//! (so a field the document shows that the code lacks, or spells differently, fails here).

use bulwark_events::{Event, EventType};

/// The ```json blocks of a Markdown text, with the line each starts on.
fn json_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match current.take() {
            None if fence && line.trim() == "```json" => current = Some((i + 2, String::new())),
            None => {}
            Some(block) if fence => blocks.push(block),
            Some((start, mut text)) => {
                text.push_str(line);
                text.push('\n');
                current = Some((start, text));
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```json block");
    blocks
}

#[test]
fn every_documented_example_round_trips() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md");
    let doc = std::fs::read_to_string(path).expect("docs/events.md");
    let blocks = json_blocks(&doc);
    let mut types = Vec::new();
    for (line, text) in &blocks {
        let written: serde_json::Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("docs/events.md:{line}: not JSON: {e}\n{text}"));
        let event: Event = serde_json::from_value(written.clone())
            .unwrap_or_else(|e| panic!("docs/events.md:{line}: not an event: {e}\n{text}"));
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(
            back, written,
            "docs/events.md:{line}: the example does not read back as written"
        );
        types.push(event.event_type());
    }
    for t in EventType::ALL {
        assert!(
            types.contains(t),
            "docs/events.md has no ```json example of `{t}`"
        );
    }
}

#[test]
fn blocks_are_found_with_their_lines() {
    let md = "text\n```json\n{\"a\":1}\n```\n```yaml\nx: 1\n```\n```json\n[\n]\n```\n";
    assert_eq!(
        json_blocks(md),
        vec![(3, "{\"a\":1}\n".to_string()), (9, "[\n]\n".to_string())]
    );
}
