//! Operator-declared encrypted protocols: the `EncryptedProtocol` resource (group `bulwark.dev`,
//! `v1alpha1`, cluster-scoped; also the documents of a `--protocols` file), its checks, and
//! [`Signatures`], the compiled set the classifier matches.
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
//!
//! A first payload matches when, for every signature byte `i`,
//! `payload[offset + i] & mask[i] == signature[i] & mask[i]` (no mask: all bits). The checks
//! ([`Signature::new`], [`check_declarations`]) are the one definition of a valid declaration:
//! the daemon refuses a `--protocols` file that fails them, `bulwark lint` reports them with
//! their line, and the CRD's schema carries the part the API server can check.

use bulwark_events::Protocol;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind of the resource, as written in YAML.
pub const KIND: &str = "EncryptedProtocol";

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
    printcolumn = r#"{"name":"Signature","type":"string","jsonPath":".spec.signature"}"#,
    printcolumn = r#"{"name":"Offset","type":"integer","jsonPath":".spec.offset"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedProtocolSpec {
    /// Hex bytes the first payload carries at `offset` (blanks and `:` between bytes allowed),
    /// e.g. `"ac 3e"`. The protocol's name is the resource's `metadata.name`.
    pub signature: String,
    /// Where the signature starts in the first payload (bytes from its start).
    #[serde(default)]
    pub offset: u32,
    /// Hex, one byte per signature byte: only the bits set here are compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
}

/// A declaration that is not usable, in words that say how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("protocol name `{0}` is a built-in classification; choose another name (the built-ins are {builtins})", builtins = Protocol::BUILTIN.join(", "))]
    BuiltinName(String),
    #[error("protocol name `{0}` must be lower-case letters, digits and `-`, starting with a letter (at most 63 characters), e.g. `acme-tunnel`")]
    BadName(String),
    #[error("{field} `{text}` is not hex bytes: {why}; write two hex digits per byte, e.g. `16 03 01` or `160301`")]
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
}

/// One compiled declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    name: String,
    offset: usize,
    bytes: Vec<u8>,
    /// One byte per signature byte (`0xff` each when none was declared).
    mask: Vec<u8>,
}

impl Signature {
    /// Checks and compiles a declaration. Every problem is reported, not only the first.
    pub fn new(
        name: &str,
        offset: usize,
        bytes: Vec<u8>,
        mask: Option<Vec<u8>>,
    ) -> Result<Signature, Vec<SignatureError>> {
        let mut errors = Vec::new();
        if let Err(e) = check_name(name) {
            errors.push(e);
        }
        if bytes.is_empty() {
            errors.push(SignatureError::EmptySignature);
        }
        let mask = match mask {
            Some(m) if m.len() != bytes.len() => {
                errors.push(SignatureError::MaskLength {
                    signature: bytes.len(),
                    mask: m.len(),
                });
                m
            }
            Some(m) if !m.is_empty() && m.iter().all(|b| *b == 0) => {
                errors.push(SignatureError::MaskSelectsNothing);
                m
            }
            Some(m) => m,
            None => vec![0xff; bytes.len()],
        };
        let end = offset.saturating_add(bytes.len());
        if end > crate::INSPECTED_BYTES {
            errors.push(SignatureError::BeyondPrefix {
                end,
                limit: crate::INSPECTED_BYTES,
            });
        }
        if errors.is_empty() {
            Ok(Signature {
                name: name.to_string(),
                offset,
                bytes,
                mask,
            })
        } else {
            Err(errors)
        }
    }

    /// Compiles a declared resource (the name is its `metadata.name`).
    pub fn from_declaration(decl: &EncryptedProtocol) -> Result<Signature, Vec<SignatureError>> {
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
                // One stand-in byte and no mask, so the remaining checks (name, offset) still
                // run without reporting the signature as empty or the mask as the wrong length.
                (vec![0], None)
            }
        };
        let offset = usize::try_from(spec.offset).unwrap_or(usize::MAX);
        match Signature::new(name, offset, bytes, mask) {
            Ok(sig) if errors.is_empty() => Ok(sig),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// The protocol word events carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Does the first payload (or the prefix of it given) carry the signature?
    pub fn matches(&self, payload: &[u8]) -> bool {
        let Some(window) = payload.get(self.offset..self.offset + self.bytes.len()) else {
            return false;
        };
        window
            .iter()
            .zip(&self.bytes)
            .zip(&self.mask)
            .all(|((p, s), m)| p & m == s & m)
    }
}

/// The declared encrypted protocols the classifier knows, matched in name order (so the result
/// does not depend on the order files or the API server listed them). Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signatures {
    signatures: Vec<Signature>,
}

impl Signatures {
    /// The set of `signatures` (sorted by name).
    pub fn new(mut signatures: Vec<Signature>) -> Signatures {
        signatures.sort_by(|a, b| a.name.cmp(&b.name));
        Signatures { signatures }
    }

    /// Compiles declarations; on any problem, every problem with the name of the declaration it
    /// is in.
    pub fn from_declarations(
        decls: &[EncryptedProtocol],
    ) -> Result<Signatures, Vec<(String, SignatureError)>> {
        let errors = check_declarations(decls);
        if !errors.is_empty() {
            return Err(errors);
        }
        let compiled = decls
            .iter()
            .filter_map(|d| Signature::from_declaration(d).ok())
            .collect();
        Ok(Signatures::new(compiled))
    }

    /// The name of the first declared protocol whose signature the payload carries.
    pub fn matching(&self, payload: &[u8]) -> Option<&str> {
        self.signatures
            .iter()
            .find(|s| s.matches(payload))
            .map(Signature::name)
    }

    /// The declared protocols, in the order they are matched.
    pub fn iter(&self) -> impl Iterator<Item = &Signature> {
        self.signatures.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    pub fn len(&self) -> usize {
        self.signatures.len()
    }
}

/// Every problem of a set of declarations (each one's own, and names declared twice), with the
/// name of the declaration it is in.
pub fn check_declarations(decls: &[EncryptedProtocol]) -> Vec<(String, SignatureError)> {
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for d in decls {
        let name = d.metadata.name.clone().unwrap_or_default();
        if let Err(errs) = Signature::from_declaration(d) {
            errors.extend(errs.into_iter().map(|e| (name.clone(), e)));
        }
        if !seen.insert(name.clone()) {
            errors.push((name.clone(), SignatureError::Duplicate(name)));
        }
    }
    errors
}

/// A protocol name: a word events, metrics labels and `bulwark conns` filters carry, and a
/// Kubernetes object name — a DNS-1123 label, not one of the built-in words.
pub fn check_name(name: &str) -> Result<(), SignatureError> {
    if Protocol::BUILTIN.contains(&name) {
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

/// Hex bytes: two digits per byte; blanks and `:` between bytes are ignored.
pub fn parse_hex(field: &'static str, text: &str) -> Result<Vec<u8>, SignatureError> {
    let bad = |why| SignatureError::BadHex {
        field,
        text: text.to_string(),
        why,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if digits.iter().any(|b| !b.is_ascii_hexdigit()) {
        return Err(bad("it has characters other than hex digits"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(bad("it has an odd number of hex digits"));
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    };
    Ok(digits
        .chunks(2)
        .map(|pair| value(pair[0]) << 4 | value(pair[1]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, signature: &str, offset: u32, mask: Option<&str>) -> EncryptedProtocol {
        EncryptedProtocol::new(
            name,
            EncryptedProtocolSpec {
                signature: signature.into(),
                offset,
                mask: mask.map(str::to_string),
            },
        )
    }

    #[test]
    fn hex_allows_blanks_and_colons_between_bytes() {
        assert_eq!(parse_hex("signature", "16 03 01"), Ok(vec![0x16, 3, 1]));
        assert_eq!(
            parse_hex("signature", "DE:ad:Be:ef"),
            Ok(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(parse_hex("signature", "ac3e"), Ok(vec![0xac, 0x3e]));
        assert!(matches!(
            parse_hex("mask", "0xff"),
            Err(SignatureError::BadHex { field: "mask", .. })
        ));
        assert!(matches!(
            parse_hex("signature", "abc"),
            Err(SignatureError::BadHex { why, .. }) if why.contains("odd")
        ));
    }

    #[test]
    fn a_declaration_matches_its_bytes_at_its_offset_under_its_mask() {
        let sig =
            Signature::from_declaration(&decl("acme-tunnel", "ac 3e", 2, Some("ff f0"))).unwrap();
        assert_eq!(sig.name(), "acme-tunnel");
        assert!(sig.matches(&[9, 9, 0xac, 0x3f]));
        assert!(sig.matches(&[9, 9, 0xac, 0x30, 1, 2, 3]));
        assert!(!sig.matches(&[9, 9, 0xac, 0x4f]));
        assert!(!sig.matches(&[0xac, 0x3e]), "wrong offset");
        assert!(!sig.matches(&[9, 9, 0xac]), "too short to tell");
        let exact = Signature::from_declaration(&decl("x", "ac3e", 0, None)).unwrap();
        assert!(exact.matches(&[0xac, 0x3e]));
        assert!(!exact.matches(&[0xac, 0x3f]));
    }

    #[test]
    fn every_problem_of_a_declaration_is_reported() {
        let errs = Signature::from_declaration(&decl("tls", "zz", 0, Some("f"))).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(matches!(
            errs[0],
            SignatureError::BadHex {
                field: "signature",
                ..
            }
        ));
        assert!(matches!(
            errs[1],
            SignatureError::BadHex { field: "mask", .. }
        ));
        assert_eq!(errs[2], SignatureError::BuiltinName("tls".into()));
        let errs = Signature::from_declaration(&decl("x", "01 02", 0, Some("ff"))).unwrap_err();
        assert_eq!(
            errs,
            vec![SignatureError::MaskLength {
                signature: 2,
                mask: 1
            }]
        );
        let errs = Signature::from_declaration(&decl("far", "01 02", 255, None)).unwrap_err();
        assert_eq!(
            errs,
            vec![SignatureError::BeyondPrefix {
                end: 257,
                limit: crate::INSPECTED_BYTES
            }]
        );
        assert!(Signature::from_declaration(&decl("edge", "01 02", 254, None)).is_ok());
        let errs = Signature::from_declaration(&decl("all", "01", 0, Some("00"))).unwrap_err();
        assert_eq!(errs, vec![SignatureError::MaskSelectsNothing]);
        let errs = Signature::from_declaration(&decl("empty", " ", 0, None)).unwrap_err();
        assert_eq!(errs, vec![SignatureError::EmptySignature]);
    }

    #[test]
    fn names_are_dns_labels_that_are_not_builtin_words() {
        for ok in ["acme-tunnel", "wg2", "a"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Acme", "2fast", "a_b", "trailing-", &"x".repeat(64)] {
            assert_eq!(check_name(bad), Err(SignatureError::BadName(bad.into())));
        }
        for builtin in Protocol::BUILTIN {
            assert_eq!(
                check_name(builtin),
                Err(SignatureError::BuiltinName(builtin.to_string()))
            );
        }
    }

    #[test]
    fn signatures_from_declarations_match_in_name_order_and_refuse_duplicates() {
        let set = Signatures::from_declarations(&[
            decl("zeta", "01", 0, None),
            decl("alpha", "01 02", 0, None),
        ])
        .unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.matching(&[1, 2, 3]), Some("alpha"));
        assert_eq!(set.matching(&[1, 3]), Some("zeta"));
        assert_eq!(set.matching(&[2]), None);
        assert!(Signatures::default().is_empty());
        assert_eq!(Signatures::default().matching(&[1]), None);

        let errs = Signatures::from_declarations(&[
            decl("dup", "01", 0, None),
            decl("dup", "02", 0, None),
            decl("ok", "q", 0, None),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0],
            ("dup".into(), SignatureError::Duplicate("dup".into()))
        );
        assert_eq!(errs[1].0, "ok");
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
}
