//! The declared encrypted protocols the classifier knows: [`Signatures`], compiled from
//! `EncryptedProtocol` declarations. The declaration itself — the resource, its one parser and
//! its checks, which `bulwark lint` reports and the CRD partly mirrors — is the policy crate's
//! `protocol` module, re-exported here.
//!
//! A first payload matches a signature when, for every signature byte `i`,
//! `payload[offset + i] & mask[i] == signature[i] & mask[i]` (no mask: all bits).

pub use bulwark_policy::protocol::{
    check_declarations, check_name, parse_hex, EncryptedProtocol, EncryptedProtocolSpec,
    SignatureError, KIND,
};
use bulwark_policy::protocol::{check_signature, parse_declaration, ParsedSignature};

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
    /// Checks and compiles a signature given as bytes. Every problem is reported.
    pub fn new(
        name: &str,
        offset: usize,
        bytes: Vec<u8>,
        mask: Option<Vec<u8>>,
    ) -> Result<Signature, Vec<SignatureError>> {
        let errors = check_signature(name, offset, &bytes, mask.as_deref());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Signature {
            name: name.to_string(),
            offset,
            mask: mask.unwrap_or_else(|| vec![0xff; bytes.len()]),
            bytes,
        })
    }

    /// Compiles a declared resource (the name is its `metadata.name`).
    pub fn from_declaration(decl: &EncryptedProtocol) -> Result<Signature, Vec<SignatureError>> {
        let ParsedSignature {
            name,
            offset,
            bytes,
            mask,
        } = parse_declaration(decl)?;
        Ok(Signature {
            name,
            offset,
            bytes,
            mask,
        })
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

    /// The entries of the kernel's `matchEncryption` table (`DECLARED_PROTOCOLS`), in match
    /// order, so the payload verdicts count the same protocols as encrypted as the classifier.
    /// Fails when the set does not fit the table (more than `MAX_DECLARED_PROTOCOLS`, or a
    /// signature longer than `MAX_SIGNATURE_BYTES`), which the declarations' checks refuse
    /// first (BW104, BW105) for a set that went through them.
    pub fn kernel_table(&self) -> Result<Vec<daemon_common::SignatureEntry>, SignatureError> {
        if self.signatures.len() > daemon_common::MAX_DECLARED_PROTOCOLS {
            let last = &self.signatures[daemon_common::MAX_DECLARED_PROTOCOLS];
            return Err(SignatureError::TooMany {
                name: last.name.clone(),
                count: self.signatures.len(),
                limit: daemon_common::MAX_DECLARED_PROTOCOLS,
            });
        }
        self.signatures
            .iter()
            .map(|s| {
                daemon_common::SignatureEntry::new(s.offset, &s.bytes, &s.mask).ok_or(
                    SignatureError::TooLong {
                        len: s.bytes.len(),
                        limit: daemon_common::MAX_SIGNATURE_BYTES,
                    },
                )
            })
            .collect()
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

    /// Reads the declarations of `bulwark run --protocols`: files and directories walked as
    /// `bulwark lint` walks them, every document an `EncryptedProtocol`, checked by the lint's
    /// checks. Any error refuses the whole set; the message lists every diagnostic
    /// (`file:line:col: error[BW100]: ...`).
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Signatures, String> {
        let out = bulwark_policy::load::lint_paths(paths).map_err(|e| e.to_string())?;
        let shown = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if out.errors() > 0 {
            return Err(format!(
                "the encrypted protocol declarations in {shown} have errors (run `bulwark lint {shown}`):\n{}",
                bulwark_policy::diagnostics::render_text(&out.diagnostics)
            ));
        }
        if !out.policies.is_empty() {
            return Err(format!(
                "{shown} holds policies; --protocols takes `kind: {KIND}` documents only (policies go in --policy-dir or the API server)"
            ));
        }
        let compiled = out
            .protocols
            .iter()
            .map(Signature::from_declaration)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{e:?}"))?;
        Ok(Signatures::new(compiled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, signature: &str, offset: u32, mask: Option<&str>) -> EncryptedProtocol {
        EncryptedProtocol::declare(name, signature, offset, mask)
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

    /// The kernel sees the payload bytes from a signature's offset on (at most
    /// `MAX_SIGNATURE_BYTES`, fewer where the payload ends).
    fn kernel_matches(e: &daemon_common::SignatureEntry, payload: &[u8]) -> bool {
        let mut window = [0u8; daemon_common::MAX_SIGNATURE_BYTES];
        let from = usize::from(e.offset).min(payload.len());
        let n = (payload.len() - from).min(window.len());
        window[..n].copy_from_slice(&payload[from..from + n]);
        e.matches(&window, n)
    }

    #[test]
    fn the_kernel_table_matches_what_the_classifier_matches() {
        let set = Signatures::from_declarations(&[
            decl("acme-tunnel", "ac 3e", 2, Some("ff f0")),
            decl(
                "wide",
                "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
                0,
                None,
            ),
            decl("late", "5a", 200, Some("f0")),
        ])
        .unwrap();
        let table = set.kernel_table().unwrap();
        assert_eq!(table.len(), 3);
        // A small deterministic generator; payloads built around the signatures so that both
        // matches and near misses occur.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut hits, mut tried) = (0, 0);
        for _ in 0..20_000 {
            let len = (next() % 260) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let sig = set.iter().nth((next() % 3) as usize).unwrap();
            if next() % 2 == 0 && sig.offset + sig.bytes.len() <= len {
                p[sig.offset..sig.offset + sig.bytes.len()].copy_from_slice(&sig.bytes);
                if next() % 3 == 0 {
                    let i = sig.offset + (next() as usize % sig.bytes.len());
                    p[i] ^= 1 << (next() % 8);
                }
            }
            for (s, e) in set.iter().zip(&table) {
                tried += 1;
                let want = s.matches(&p);
                hits += usize::from(want);
                assert_eq!(kernel_matches(e, &p), want, "{} on {p:02x?}", s.name());
            }
        }
        assert!(hits * 20 > tried / 10, "{hits} matches of {tried}");
    }

    #[test]
    fn a_set_larger_than_the_kernel_table_is_refused() {
        let sigs = (0..=daemon_common::MAX_DECLARED_PROTOCOLS)
            .map(|i| Signature::new(&format!("p{i:02}"), 0, vec![i as u8], None).unwrap())
            .collect();
        let err = Signatures::new(sigs).kernel_table().unwrap_err();
        assert_eq!(err.code().id, "BW105");
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

        // The declarations' checks (bulwark_policy::protocol) refuse the whole set.
        let errs = Signatures::from_declarations(&[
            decl("dup", "01", 0, None),
            decl("dup", "02", 0, None),
        ])
        .unwrap_err();
        assert_eq!(
            errs,
            [("dup".into(), SignatureError::Duplicate("dup".into()))]
        );
    }

    #[test]
    fn declared_names_cannot_be_the_event_schemas_builtin_words() {
        assert_eq!(
            bulwark_policy::protocol::BUILTIN_PROTOCOLS,
            bulwark_events::Protocol::BUILTIN
        );
    }

    #[test]
    fn load_reads_declarations_and_refuses_any_error_or_a_policy() {
        let dir = std::env::temp_dir().join(format!("bulwark-protocols-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let good = "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: acme-tunnel\nspec:\n  signature: \"ac 3e\"\n";
        std::fs::write(dir.join("a.yaml"), good).unwrap();
        let set = Signatures::load(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(set.matching(&[0xac, 0x3e, 0]), Some("acme-tunnel"));
        std::fs::write(dir.join("b.yaml"), good.replace("acme-tunnel", "tls")).unwrap();
        let err = Signatures::load(std::slice::from_ref(&dir)).unwrap_err();
        assert!(err.contains("b.yaml:4:") && err.contains("BW102"), "{err}");
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        let policy = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/lint-cases/bw051-cidr-host-bits.yaml"),
        )
        .unwrap();
        std::fs::write(dir.join("c.yaml"), policy).unwrap();
        let err = Signatures::load(std::slice::from_ref(&dir)).unwrap_err();
        assert!(err.contains("holds policies"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
