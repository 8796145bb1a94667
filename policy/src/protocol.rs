//! Operator-declared encrypted protocols: the `EncryptedProtocol` resource (group `bulwark.dev`,
//! `v1alpha1`, cluster-scoped; also the documents of a `bulwark run --protocols` file), its one
//! parser ([`parse_declaration`]) and its checks, which `bulwark lint` reports with file and
//! line ([`lint_document`]) and the CRD's schema partly mirrors ([`crd`]). The classifier that
//! uses the parsed signatures lives in the `bulwark-conns` crate.
//!
//! ```yaml
//! apiVersion: bulwark.dev/v1alpha1
//! kind: EncryptedProtocol
//! metadata:
//!   name: acme-tunnel          # the protocol word events and metrics carry
//! spec:
//!   signature: "ac 3e"         # hex bytes expected at `offset` of a first payload
//!   offset: 2                  # default 0
//!   mask: "ff f0"              # optional: only the bits set here are compared
//! ```

use crate::diagnostics::{codes, Code, Diagnostic};
use crate::yaml::{Document, Value};
use crate::API_VERSION;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the kernel's `matchEncryption` table holds (daemon-common's `signatures`): a
/// declaration must fit it, so the classifier and the kernel verdicts know the same protocols.
pub use daemon_common::{MAX_DECLARED_PROTOCOLS, MAX_SIGNATURE_BYTES};

/// The kind of the resource, as written in YAML.
pub const KIND: &str = "EncryptedProtocol";

/// How many bytes of each direction's first payload the classifier sees: the kernel captures
/// at least this many (fewer only when the first payload was shorter), and a declared
/// signature must end within them.
pub const INSPECTED_BYTES: usize = 256;

/// The words the built-in classifications use (events' `protocol`); a declared name cannot be
/// one of them. The event schema's `Protocol::BUILTIN` is checked against this list.
pub const BUILTIN_PROTOCOLS: &[&str] = &["tls", "ssh", "http", "h2c", "other", "none"];

/// Hex bytes as a declaration writes them: pairs of hex digits, optionally separated by one
/// blank or `:` (`16 03 01`, `16:03:01`, `160301`).
pub const HEX_BYTES: &str = "^[0-9A-Fa-f]{2}([ :]?[0-9A-Fa-f]{2})*$";

/// An encrypted protocol recognised by the bytes its first payload carries at an offset.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulwark.dev",
    version = "v1alpha1",
    kind = "EncryptedProtocol",
    plural = "encryptedprotocols",
    singular = "encryptedprotocol",
    shortname = "ep",
    category = "bulwark",
    status = "EncryptedProtocolStatus",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Signature","type":"string","jsonPath":".spec.signature"}"#,
    printcolumn = r#"{"name":"Offset","type":"integer","jsonPath":".spec.offset"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedProtocolSpec {
    /// Hex bytes the first payload carries at `offset`: pairs of hex digits, optionally
    /// separated by one blank or `:` (`"ac 3e"`). The protocol's name is `metadata.name`.
    pub signature: String,
    /// Where the signature starts in the first payload (bytes from its start).
    #[serde(default)]
    pub offset: u32,
    /// Hex, one byte per signature byte: only the bits set here are compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
}

/// What the cluster says about a declaration (Kubernetes only): written by the node that holds
/// the status Lease, from the same checks `bulwark lint` runs. Node-independent, so bounded: one
/// condition whatever the number of nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedProtocolStatus {
    /// `Accepted` (in force on every node, next to its `--protocols` file) or `Rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: `True`, or `False` with every lint finding (BW100-BW102) in the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::model::StatusCondition>,
}

impl EncryptedProtocol {
    /// A declaration as a file writes it (`mask` hex, optional).
    pub fn declare(name: &str, signature: &str, offset: u32, mask: Option<&str>) -> Self {
        EncryptedProtocol::new(
            name,
            EncryptedProtocolSpec {
                signature: signature.into(),
                offset,
                mask: mask.map(str::to_string),
            },
        )
    }
}

/// A declaration that is not usable, in words that say how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("protocol name `{0}` is a built-in classification; choose another name (the built-ins are {builtins})", builtins = BUILTIN_PROTOCOLS.join(", "))]
    BuiltinName(String),
    #[error("protocol name `{0}` must be lower-case letters, digits and `-`, starting with a letter (at most 63 characters), e.g. `acme-tunnel`")]
    BadName(String),
    #[error("{field} `{text}` is not hex bytes: {why}; write two hex digits per byte, optionally separated by one blank or `:`, e.g. `16 03 01` or `160301`")]
    BadHex {
        field: &'static str,
        text: String,
        why: &'static str,
    },
    #[error(
        "signature is empty; give at least one byte the protocol's first payload always carries"
    )]
    EmptySignature,
    #[error("mask has {mask} bytes but the signature has {signature}; give one mask byte per signature byte")]
    MaskLength { signature: usize, mask: usize },
    #[error(
        "mask is all zero, so the signature would match every payload; set the bits to compare"
    )]
    MaskSelectsNothing,
    #[error("signature ends at byte {end} of the first payload, beyond the {limit} bytes the daemon inspects; use an offset and signature within the first {limit} bytes")]
    BeyondPrefix { end: usize, limit: usize },
    #[error("protocol `{0}` is declared more than once; keep one declaration per name")]
    Duplicate(String),
    #[error("signature has {len} bytes; the kernel compares at most {limit} bytes per declared protocol (for `matchEncryption`)")]
    TooLong { len: usize, limit: usize },
    #[error("protocol `{name}` is declaration {count} of a set; the kernel holds at most {limit} declared protocols (for `matchEncryption`)")]
    TooMany {
        name: String,
        count: usize,
        limit: usize,
    },
}

impl SignatureError {
    /// The lint code that reports it.
    pub fn code(&self) -> Code {
        match self {
            SignatureError::BuiltinName(_) | SignatureError::BadName(_) => codes::PROTOCOL_NAME,
            SignatureError::BeyondPrefix { .. } => codes::SIGNATURE_BEYOND_PREFIX,
            SignatureError::Duplicate(_) => codes::DUPLICATE_PROTOCOL,
            SignatureError::TooLong { .. } => codes::SIGNATURE_TOO_LONG,
            SignatureError::TooMany { .. } => codes::TOO_MANY_PROTOCOLS,
            _ => codes::INVALID_SIGNATURE,
        }
    }

    /// How to fix it, for the lint's hint.
    pub fn hint(&self) -> String {
        match self {
            SignatureError::BuiltinName(_) => format!(
                "rename it, e.g. `acme-tunnel`; {} are the built-in classifications",
                BUILTIN_PROTOCOLS.join(", ")
            ),
            SignatureError::BadName(_) => {
                "use lower-case letters, digits and `-`, starting with a letter".into()
            }
            SignatureError::BadHex { .. } => {
                "write two hex digits per byte, optionally separated by one blank or `:`, e.g. `16 03 01`".into()
            }
            SignatureError::EmptySignature => {
                "give the bytes every first payload of the protocol carries at `offset`".into()
            }
            SignatureError::MaskLength { .. } => {
                "give one mask byte per signature byte, or drop `mask` to compare every bit".into()
            }
            SignatureError::MaskSelectsNothing => {
                "set the bits to compare (`ff` compares a whole byte), or drop `mask`".into()
            }
            SignatureError::BeyondPrefix { limit, .. } => {
                format!("lower `offset` or shorten the signature so offset + length is at most {limit}")
            }
            SignatureError::Duplicate(_) => "keep one declaration per name, or rename one".into(),
            SignatureError::TooLong { limit, .. } => format!(
                "keep the {limit} bytes (or fewer) that best identify the protocol, and raise `offset` if they start later"
            ),
            SignatureError::TooMany { limit, .. } => format!(
                "declare at most {limit} protocols; drop the ones no workload of this cluster speaks"
            ),
        }
    }

    /// Where in the document it is (a JSON path).
    pub fn path(&self) -> &'static str {
        match self {
            SignatureError::BuiltinName(_)
            | SignatureError::BadName(_)
            | SignatureError::Duplicate(_)
            | SignatureError::TooMany { .. } => "metadata.name",
            SignatureError::BadHex { field: "mask", .. }
            | SignatureError::MaskLength { .. }
            | SignatureError::MaskSelectsNothing => "spec.mask",
            SignatureError::BeyondPrefix { .. } => "spec.offset",
            _ => "spec.signature",
        }
    }
}

/// A declaration parsed: the name, and the bytes compared at `offset` under `mask` (one mask
/// byte per signature byte, `0xff` each when none was declared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSignature {
    pub name: String,
    pub offset: usize,
    pub bytes: Vec<u8>,
    pub mask: Vec<u8>,
}

/// Checks a signature given as bytes; every problem, not only the first.
pub fn check_signature(
    name: &str,
    offset: usize,
    bytes: &[u8],
    mask: Option<&[u8]>,
) -> Vec<SignatureError> {
    let mut errors = Vec::new();
    if let Err(e) = check_name(name) {
        errors.push(e);
    }
    if bytes.is_empty() {
        errors.push(SignatureError::EmptySignature);
    }
    match mask {
        Some(m) if m.len() != bytes.len() => errors.push(SignatureError::MaskLength {
            signature: bytes.len(),
            mask: m.len(),
        }),
        Some(m) if !m.is_empty() && m.iter().all(|b| *b == 0) => {
            errors.push(SignatureError::MaskSelectsNothing)
        }
        _ => {}
    }
    if bytes.len() > MAX_SIGNATURE_BYTES {
        errors.push(SignatureError::TooLong {
            len: bytes.len(),
            limit: MAX_SIGNATURE_BYTES,
        });
    }
    let end = offset.saturating_add(bytes.len());
    if end > INSPECTED_BYTES {
        errors.push(SignatureError::BeyondPrefix {
            end,
            limit: INSPECTED_BYTES,
        });
    }
    errors
}

/// Parses and checks a declared resource (its name is `metadata.name`).
pub fn parse_declaration(decl: &EncryptedProtocol) -> Result<ParsedSignature, Vec<SignatureError>> {
    let name = decl.metadata.name.as_deref().unwrap_or("");
    let spec = &decl.spec;
    let mut errors = Vec::new();
    let mask = match spec.mask.as_deref().map(|m| parse_hex("mask", m)) {
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        Some(Ok(m)) => Some(m),
        None => None,
    };
    let (bytes, mask) = match parse_hex("signature", &spec.signature) {
        Ok(bytes) => (bytes, mask),
        Err(e) => {
            errors.insert(0, e);
            // One stand-in byte and no mask, so the remaining checks (name, offset) still run
            // without reporting the signature as empty or the mask as the wrong length.
            (vec![0], None)
        }
    };
    let offset = usize::try_from(spec.offset).unwrap_or(usize::MAX);
    errors.extend(check_signature(name, offset, &bytes, mask.as_deref()));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ParsedSignature {
        name: name.to_string(),
        offset,
        mask: mask.unwrap_or_else(|| vec![0xff; bytes.len()]),
        bytes,
    })
}

/// Every problem of a set of declarations (each one's own, and names declared twice), with the
/// name of the declaration it is in.
pub fn check_declarations(decls: &[EncryptedProtocol]) -> Vec<(String, SignatureError)> {
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for d in decls {
        let name = d.metadata.name.clone().unwrap_or_default();
        if let Err(errs) = parse_declaration(d) {
            errors.extend(errs.into_iter().map(|e| (name.clone(), e)));
        }
        if !seen.insert(name.clone()) {
            errors.push((name.clone(), SignatureError::Duplicate(name)));
        } else if seen.len() > MAX_DECLARED_PROTOCOLS {
            let count = seen.len();
            errors.push((
                name.clone(),
                SignatureError::TooMany {
                    name,
                    count,
                    limit: MAX_DECLARED_PROTOCOLS,
                },
            ));
        }
    }
    errors
}

/// A protocol name: a word events, metrics labels and `bulwark conns` filters carry, and a
/// Kubernetes object name — a DNS-1123 label starting with a letter, not a built-in word.
pub fn check_name(name: &str) -> Result<(), SignatureError> {
    if BUILTIN_PROTOCOLS.contains(&name) {
        return Err(SignatureError::BuiltinName(name.to_string()));
    }
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SignatureError::BadName(name.to_string()))
    }
}

/// Hex bytes ([`HEX_BYTES`]): two digits per byte, optionally one blank or `:` between bytes.
/// Surrounding blanks are ignored; an empty text is no bytes.
pub fn parse_hex(field: &'static str, text: &str) -> Result<Vec<u8>, SignatureError> {
    let bad = |why| SignatureError::BadHex {
        field,
        text: text.to_string(),
        why,
    };
    let digit = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    };
    let t = text.trim().as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !out.is_empty() && matches!(t[i], b' ' | b':') {
            i += 1;
        }
        let (Some(&hi), lo) = (t.get(i), t.get(i + 1)) else {
            return Err(bad("a separator ends it"));
        };
        match (digit(hi), lo.and_then(|&l| digit(l))) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            (Some(_), None) if lo.is_none_or(|l| matches!(l, b' ' | b':')) => {
                return Err(bad("a byte has one hex digit"))
            }
            _ => {
                return Err(bad(
                    "it has characters other than hex digits and separators",
                ))
            }
        }
        i += 2;
    }
    Ok(out)
}

/// The document's problems with their paths, and the declaration when it has none that stop
/// it being read (its own checks may still fail). `doc` is a document whose `kind` is
/// [`KIND`]; its apiVersion is checked here.
pub fn lint_document(doc: &Document) -> (Option<EncryptedProtocol>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let root = &doc.root;
    let api = root.get("apiVersion").and_then(|n| n.as_str());
    if api != Some(API_VERSION) {
        diags.push(
            Diagnostic::new(
                codes::API_VERSION,
                format!("an {KIND} needs `apiVersion: {API_VERSION}`"),
            )
            .hint(format!("use `apiVersion: {API_VERSION}`"))
            .path("apiVersion"),
        );
    }
    let known = |path: &str, keys: &[&str], diags: &mut Vec<Diagnostic>| {
        let node = if path.is_empty() {
            Some(root)
        } else {
            root.get(path)
        };
        if let Some(Value::Map(entries)) = node.map(|n| &n.value) {
            for e in entries.iter().filter(|e| !keys.contains(&e.key.as_str())) {
                let at = if path.is_empty() {
                    e.key.clone()
                } else {
                    format!("{path}.{}", e.key)
                };
                diags.push(
                    Diagnostic::new(
                        codes::UNKNOWN_FIELD,
                        format!("unknown field `{}` in an {KIND}", e.key),
                    )
                    .hint(format!("the fields here are: {}", keys.join(", ")))
                    .path(at),
                );
            }
        }
    };
    known("", &["apiVersion", "kind", "metadata", "spec"], &mut diags);
    known("spec", &["signature", "offset", "mask"], &mut diags);
    if root.get("metadata").and_then(|m| m.get("name")).is_none() {
        diags.push(
            Diagnostic::new(codes::MISSING_NAME, format!("an {KIND} needs `metadata.name`"))
                .hint("add `metadata:` with `name: <protocol-name>`; events and metrics carry it as the protocol word"),
        );
    }
    if root.get("spec").and_then(|s| s.get("signature")).is_none() {
        diags.push(
            Diagnostic::new(codes::MISSING_FIELD, "missing `spec.signature`").hint(
                "add `spec:` with `signature: \"<hex bytes>\"` (and `offset:`, `mask:` as needed)",
            ),
        );
    }
    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    let decl: EncryptedProtocol = match serde_json::from_value(root.to_json()) {
        Ok(d) => d,
        Err(e) => {
            diags.push(
                Diagnostic::new(
                    codes::WRONG_TYPE,
                    format!("the document does not match the {KIND} model: {e}"),
                )
                .hint("`signature` and `mask` are strings of hex bytes, `offset` a number from 0")
                .path("spec"),
            );
            return (None, diags);
        }
    };
    if let Err(errors) = parse_declaration(&decl) {
        diags.extend(errors.iter().map(diagnostic));
    }
    (Some(decl), diags)
}

/// A check's finding as a lint diagnostic at the field it is about.
pub fn diagnostic(e: &SignatureError) -> Diagnostic {
    Diagnostic::new(e.code(), e.to_string())
        .hint(e.hint())
        .path(e.path())
}

/// The CRD, with what the API server can check itself: hex patterns, the offset bound, the
/// name rules (CEL, with the lint's codes).
pub fn crd() -> crate::CustomResourceDefinition {
    let mut crd = EncryptedProtocol::crd();
    let Ok(mut json) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(serde_json::Value::Array(versions)) = json.pointer_mut("/spec/versions") {
        for v in versions {
            let Some(schema) = v.pointer_mut("/schema/openAPIV3Schema") else {
                continue;
            };
            schema["description"] = json!(
                "An encrypted protocol bulwark recognises by its first bytes: connections whose first payload carries `signature` at `offset` (compared under `mask`) count as encrypted, under this object's name, in events, metrics and `bulwark conns`. `bulwark lint` checks a declaration offline."
            );
            let builtins: Vec<String> =
                BUILTIN_PROTOCOLS.iter().map(|w| format!("'{w}'")).collect();
            schema["x-kubernetes-validations"] = json!([
                {
                    "rule": format!("!(self.metadata.name in [{}])", builtins.join(", ")),
                    "message": format!("{}: the protocol name is a built-in classification; choose another name", codes::PROTOCOL_NAME.id),
                },
                {
                    "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",
                    "message": format!("{}: the protocol name must be lower-case letters, digits and `-`, starting with a letter", codes::PROTOCOL_NAME.id),
                },
            ]);
            if let Some(spec) = schema.pointer_mut("/properties/spec/properties") {
                for field in ["signature", "mask"] {
                    spec[field]["pattern"] = json!(HEX_BYTES);
                    // Two hex digits and one separator per byte, the last without one.
                    spec[field]["maxLength"] = json!(MAX_SIGNATURE_BYTES * 3 - 1);
                }
                spec["offset"]["maximum"] = json!(INSPECTED_BYTES - 1);
                if let Some(o) = spec["offset"].as_object_mut() {
                    o.remove("format");
                }
            }
        }
    }
    if let Ok(refined) = serde_json::from_value(json) {
        crd = refined;
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, signature: &str, offset: u32, mask: Option<&str>) -> EncryptedProtocol {
        EncryptedProtocol::declare(name, signature, offset, mask)
    }

    #[test]
    fn hex_is_pairs_of_digits_with_optional_single_separators() {
        assert_eq!(parse_hex("signature", "16 03 01"), Ok(vec![0x16, 3, 1]));
        assert_eq!(
            parse_hex("signature", "DE:ad:Be:ef"),
            Ok(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(parse_hex("signature", " ac3e "), Ok(vec![0xac, 0x3e]));
        assert_eq!(parse_hex("signature", ""), Ok(vec![]));
        for (bad, why) in [
            ("0xff", "other than hex"),
            ("abc", "one hex digit"),
            ("a b", "one hex digit"),
            ("ab  cd", "other than hex"),
            ("ab:", "separator ends"),
            ("zz", "other than hex"),
        ] {
            match parse_hex("mask", bad) {
                Err(SignatureError::BadHex {
                    field: "mask",
                    why: w,
                    ..
                }) => assert!(w.contains(why), "{bad}: {w}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn hex_pattern_and_parser_agree() {
        let re = regex::Regex::new(HEX_BYTES).unwrap();
        for text in [
            "16 03 01", "16:03:01", "160301", "ab", "abc", "ab  cd", "ab:", "0xff", "a b",
        ] {
            let parsed = parse_hex("signature", text);
            assert_eq!(re.is_match(text), parsed.is_ok(), "{text}: {parsed:?}");
        }
    }

    #[test]
    fn every_problem_of_a_declaration_is_reported_at_its_field() {
        let errs = parse_declaration(&decl("tls", "zz", 0, Some("f"))).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(
            errs.iter().map(SignatureError::path).collect::<Vec<_>>(),
            ["spec.signature", "spec.mask", "metadata.name"]
        );
        assert_eq!(errs[2], SignatureError::BuiltinName("tls".into()));
        let errs = parse_declaration(&decl("x", "01 02", 0, Some("ff"))).unwrap_err();
        assert_eq!(
            errs,
            vec![SignatureError::MaskLength {
                signature: 2,
                mask: 1
            }]
        );
        let errs = parse_declaration(&decl("far", "01 02", 255, None)).unwrap_err();
        assert_eq!(
            errs,
            vec![SignatureError::BeyondPrefix {
                end: 257,
                limit: INSPECTED_BYTES
            }]
        );
        assert_eq!(errs[0].code().id, "BW101");
        assert!(parse_declaration(&decl("edge", "01 02", 254, None)).is_ok());
        let errs = parse_declaration(&decl("all", "01", 0, Some("00"))).unwrap_err();
        assert_eq!(errs, vec![SignatureError::MaskSelectsNothing]);
        let errs = parse_declaration(&decl("empty", " ", 0, None)).unwrap_err();
        assert_eq!(errs, vec![SignatureError::EmptySignature]);
        let ok = parse_declaration(&decl("acme", "ac 3e", 2, None)).unwrap();
        assert_eq!(ok.mask, vec![0xff, 0xff]);
    }

    #[test]
    fn names_are_dns_labels_that_are_not_builtin_words() {
        for ok in ["acme-tunnel", "wg2", "a"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Acme", "2fast", "a_b", "trailing-", &"x".repeat(64)] {
            assert_eq!(check_name(bad), Err(SignatureError::BadName(bad.into())));
        }
        for builtin in BUILTIN_PROTOCOLS {
            assert_eq!(
                check_name(builtin),
                Err(SignatureError::BuiltinName(builtin.to_string()))
            );
        }
    }

    #[test]
    fn declarations_must_fit_the_kernel_table() {
        let long = vec!["ab"; MAX_SIGNATURE_BYTES + 1].join(" ");
        let errs = parse_declaration(&decl("long", &long, 0, None)).unwrap_err();
        assert_eq!(
            errs,
            vec![SignatureError::TooLong {
                len: MAX_SIGNATURE_BYTES + 1,
                limit: MAX_SIGNATURE_BYTES
            }]
        );
        assert_eq!(errs[0].code().id, "BW104");
        let fits = vec!["ab"; MAX_SIGNATURE_BYTES].join(" ");
        assert!(parse_declaration(&decl("fits", &fits, 0, None)).is_ok());
        let many: Vec<_> = (0..=MAX_DECLARED_PROTOCOLS)
            .map(|i| decl(&format!("p{i:02}"), "01", 0, None))
            .collect();
        assert!(check_declarations(&many[..MAX_DECLARED_PROTOCOLS]).is_empty());
        let errs = check_declarations(&many);
        assert_eq!(
            errs,
            vec![(
                format!("p{MAX_DECLARED_PROTOCOLS:02}"),
                SignatureError::TooMany {
                    name: format!("p{MAX_DECLARED_PROTOCOLS:02}"),
                    count: MAX_DECLARED_PROTOCOLS + 1,
                    limit: MAX_DECLARED_PROTOCOLS
                }
            )]
        );
        assert_eq!(errs[0].1.code().id, "BW105");
    }

    #[test]
    fn duplicates_are_found_across_declarations() {
        let errs = check_declarations(&[
            decl("dup", "01", 0, None),
            decl("dup", "02", 0, None),
            decl("ok", "q", 0, None),
        ]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0],
            ("dup".into(), SignatureError::Duplicate("dup".into()))
        );
        assert_eq!(errs[1].0, "ok");
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_patterns_and_name_rules() {
        let crd = crd();
        let text = crate::crd_yaml(&crd);
        let back = crate::yaml::parse(&text);
        assert!(back.error.is_none(), "{:?}", back.error);
        assert_eq!(
            back.documents[0].root.to_json(),
            serde_json::to_value(&crd).unwrap()
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let v = serde_json::to_value(&crd).unwrap();
        let schema = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["properties"]["signature"]["pattern"],
            HEX_BYTES
        );
        assert_eq!(
            schema["properties"]["spec"]["properties"]["offset"]["maximum"].as_f64(),
            Some(255.0)
        );
        let rules = schema["x-kubernetes-validations"].as_array().unwrap();
        assert!(rules
            .iter()
            .all(|r| r["message"].as_str().unwrap().starts_with("BW102: ")));
        assert!(rules[0]["rule"].as_str().unwrap().contains("'h2c'"));
    }

    #[test]
    fn errors_say_how_to_fix_them() {
        let text = SignatureError::BuiltinName("ssh".into()).to_string();
        assert!(
            text.contains("choose another name") && text.contains("tls, ssh"),
            "{text}"
        );
        let text = SignatureError::MaskLength {
            signature: 2,
            mask: 1,
        }
        .to_string();
        assert!(text.contains("one mask byte per signature byte"), "{text}");
    }

    #[test]
    fn the_lint_keeps_clean_declarations_and_places_problems_at_their_lines() {
        let text = "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: acme-tunnel\nspec:\n  signature: \"ac 3e\"\n  offset: 2\n---\napiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: typo\nspec:\n  signature: \"01\"\n  offest: 3\n";
        let out = crate::lint_source("p.yaml", text);
        assert_eq!(out.documents, 2);
        assert_eq!(out.protocols.len(), 1);
        assert_eq!(
            out.protocols[0].metadata.name.as_deref(),
            Some("acme-tunnel")
        );
        assert!(out.policies.is_empty());
        let d: Vec<_> = out
            .diagnostics
            .iter()
            .map(|d| (d.code, d.line, d.path.as_deref()))
            .collect();
        assert_eq!(d, [("BW020", Some(15), Some("spec.offest"))]);
        assert!(out.diagnostics[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("signature, offset, mask"));
    }
}
