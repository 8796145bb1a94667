//! Word enums: closed sets of values that are written as fixed words in policies and events
//! (`hook: egress`, `"outcome":"would_kill"`). [`words!`] declares such an enum together with
//! its one word table; everything that reads or writes the words (serde, the CRD schema and so
//! the lint's allowed values, `Display`/`FromStr`, `bulwark events` filters) goes through that
//! table, so a word cannot be spelt two ways.

/// A word that is not one of an enum's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownWord {
    /// What the enum is (e.g. `hook`).
    pub what: &'static str,
    /// The word given.
    pub word: String,
    /// The words that would have been accepted.
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown {} `{}`; use one of: {}",
            self.what,
            self.word,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownWord {}

/// The schema `#[derive(JsonSchema)]` gives a unit enum whose variants are documented (kept
/// identical so the generated CRDs do not change): `oneOf` one `const` word per variant with its
/// description, the enum's doc comment as description. Doc lines lose the one space after `///`
/// and are joined by newlines, as schemars does.
#[doc(hidden)]
pub fn word_schema(doc: &[&str], words: &[&str], variant_docs: &[&[&str]]) -> schemars::Schema {
    fn text(lines: &[&str]) -> String {
        lines
            .iter()
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    }
    let variants: Vec<serde_json::Value> = words
        .iter()
        .zip(variant_docs)
        .map(|(word, doc)| {
            let mut v = serde_json::json!({"type": "string", "const": word});
            if !doc.is_empty() {
                v["description"] = text(doc).into();
            }
            v
        })
        .collect();
    let mut schema = serde_json::json!({ "oneOf": variants });
    if !doc.is_empty() {
        schema["description"] = text(doc).into();
    }
    schemars::Schema::try_from(schema).unwrap_or_default()
}

/// Declares a field-less enum whose values are words, with its word table:
///
/// ```ignore
/// words! {
///     /// Whether a policy's enforcing actions are carried out.
///     pub enum Mode ("mode", default Enforce) {
///         /// Carry out `Sigkill` and `Block`.
///         Enforce = "enforce",
///         Monitor = "monitor",
///     }
/// }
/// ```
///
/// generates `Mode::ALL`, `Mode::WORDS`, `as_str`, `Display`, `FromStr` (exact words; the
/// error names `what` and lists the words), serde `Serialize`/`Deserialize`, a `JsonSchema`
/// (see [`word_schema`]) and, with `default`, `Default`. The enum derives `Clone, Copy, Debug,
/// PartialEq, Eq, Hash`; its only attributes, and its variants', are doc comments.
#[macro_export]
macro_rules! words {
    (
        $(#[doc = $doc:literal])*
        $vis:vis enum $name:ident ($what:literal $(, default $default:ident)?) {
            $(
                $(#[doc = $vdoc:literal])*
                $variant:ident = $word:literal
            ),+ $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[doc = $vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word of this value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        $(
            impl ::std::default::Default for $name {
                fn default() -> Self {
                    $name::$default
                }
            }
        )?

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::words::UnknownWord;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err($crate::words::UnknownWord {
                        what: $what,
                        word: s.to_string(),
                        expected: Self::WORDS,
                    }),
                }
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                struct Visitor;
                impl $crate::__private::serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(f, "one of: {}", $name::WORDS.join(", "))
                    }
                    fn visit_str<E: $crate::__private::serde::de::Error>(
                        self,
                        s: &str,
                    ) -> ::std::result::Result<$name, E> {
                        s.parse()
                            .map_err(|_| E::unknown_variant(s, $name::WORDS))
                    }
                }
                d.deserialize_str(Visitor)
            }
        }

        impl $crate::__private::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(
                _: &mut $crate::__private::schemars::SchemaGenerator,
            ) -> $crate::__private::schemars::Schema {
                $crate::words::word_schema(&[$($doc),*], $name::WORDS, &[$(&[$($vdoc),*]),+])
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::model::{Action, Encryption, Hook, Mode};

    /// Each value's word is what serde writes and reads, and what `FromStr` accepts.
    fn agrees<T>(all: &[T])
    where
        T: Copy + std::fmt::Display + std::str::FromStr + serde::Serialize + PartialEq,
        T: serde::de::DeserializeOwned + std::fmt::Debug,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        for v in all {
            let word = v.to_string();
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(word));
            assert_eq!(
                serde_json::from_value::<T>(word.clone().into()).unwrap(),
                *v
            );
            assert_eq!(word.parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn words_round_trip_through_every_reader_and_writer() {
        agrees(Hook::ALL);
        agrees(Action::ALL);
        agrees(Mode::ALL);
        agrees(Encryption::ALL);
        agrees(crate::model::FileAccess::ALL);
        assert_eq!(
            Hook::WORDS,
            ["exec", "connect", "egress", "ingress", "syscall", "file"]
        );
        assert_eq!(
            crate::model::FileAccess::WORDS,
            ["read", "write", "create", "delete", "metadata"]
        );
        assert_eq!(Action::WORDS, ["Post", "Sigkill", "Block"]);
        assert_eq!(Mode::WORDS, ["enforce", "monitor"]);
        assert_eq!(Encryption::WORDS, ["plaintext", "tls"]);
    }

    #[test]
    fn unknown_words_are_refused_with_the_accepted_ones() {
        let err = "sigkill".parse::<Action>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown action `sigkill`; use one of: Post, Sigkill, Block"
        );
        let err = serde_json::from_str::<Hook>(r#""open""#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("open") && err.contains("egress"), "{err}");
        assert!(serde_json::from_str::<Mode>("1").is_err());
    }
}
