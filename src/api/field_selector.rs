//! `fieldSelector` parsing (k8s.io/apimachinery `pkg/fields/selector.go`) limited to
//! the fields every resource supports: `metadata.name` and `metadata.namespace`.

use super::meta::ObjectMeta;
use super::status::ApiError;

/// A parsed field selector over `metadata.name` / `metadata.namespace`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// One `field=value` or `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// Which field.
    pub field: Field,
    /// True for `=` / `==`, false for `!=`.
    pub equals: bool,
    /// The value compared against.
    pub value: String,
}

/// The fields a selector may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
}

impl FieldSelector {
    /// True when the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The parsed terms.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Parses a `fieldSelector` query value; errors are 400 BadRequest Status values.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        for raw in split_unescaped(input, ',') {
            let (field, equals, value) = split_term(&raw).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{raw}'"
                ))
            })?;
            let value = unescape(&value).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{raw}'"
                ))
            })?;
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "\"{other}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )));
                }
            };
            terms.push(FieldTerm {
                field,
                equals,
                value,
            });
        }
        Ok(Self { terms })
    }

    /// True when the object's metadata satisfies every term.
    pub fn matches(&self, meta: &ObjectMeta) -> bool {
        self.terms.iter().all(|t| {
            let actual = match t.field {
                Field::Name => meta.name.as_str(),
                Field::Namespace => meta.namespace_or_empty(),
            };
            (actual == t.value) == t.equals
        })
    }

    /// The single name this selector pins (`metadata.name=x`), if any.
    pub fn required_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == Field::Name && t.equals)
            .map(|t| t.value.as_str())
    }

    /// The single namespace this selector pins (`metadata.namespace=x`), if any.
    pub fn required_namespace(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == Field::Namespace && t.equals)
            .map(|t| t.value.as_str())
    }
}

/// The selector in the syntax [`FieldSelector::parse`] reads (apimachinery's
/// `Selector.String()`): `field=value` / `field!=value` terms joined by `,`, with `\`,
/// `,` and `=` in values escaped by a backslash, so that parsing the output gives the
/// same selector back.
impl std::fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let field = match t.field {
                Field::Name => "metadata.name",
                Field::Namespace => "metadata.namespace",
            };
            let op = if t.equals { "=" } else { "!=" };
            write!(f, "{field}{op}")?;
            for c in t.value.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(current);
    parts
}

/// Finds the operator scanning left to right, trying `!=`, `==`, `=` at each position.
fn split_term(term: &str) -> Option<(String, bool, String)> {
    // Only at character boundaries: slicing inside a multi-byte character panics.
    for (i, _) in term.char_indices() {
        for (op, equals) in [("!=", false), ("==", true), ("=", true)] {
            if term[i..].starts_with(op) {
                let field = &term[..i];
                if field.is_empty() {
                    return None;
                }
                return Some((field.to_string(), equals, term[i + op.len()..].to_string()));
            }
        }
    }
    None
}

fn unescape(value: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return Err(()),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn parses_and_matches() {
        let s = FieldSelector::parse("metadata.name=a,metadata.namespace!=kube-system").unwrap();
        assert!(s.matches(&meta("default", "a")));
        assert!(!s.matches(&meta("kube-system", "a")));
        assert!(!s.matches(&meta("default", "b")));
        assert_eq!(s.required_name(), Some("a"));
        let s = FieldSelector::parse("metadata.name==a").unwrap();
        assert!(s.matches(&meta("x", "a")));
    }

    #[test]
    fn non_ascii_before_the_operator_is_400_not_a_panic() {
        // Found by `cargo fuzz run field_selector`: the operator scan sliced the term
        // inside a multi-byte character.
        for s in [
            "\u{e9}",
            "metadata.name\u{e9}",
            "\u{e9}=x",
            "metadata.name\u{1F600}!=a",
        ] {
            let e = FieldSelector::parse(s).unwrap_err();
            assert_eq!(e.code, 400, "{s:?}");
        }
        let s = FieldSelector::parse("metadata.name=caf\u{e9}").unwrap();
        assert_eq!(s.required_name(), Some("caf\u{e9}"));
    }

    #[test]
    fn display_parses_back_to_the_same_selector() {
        for input in [
            "metadata.name=a,metadata.namespace!=kube-system",
            "metadata.name==x",
            "metadata.name=a\\,b\\=c\\\\d",
            "metadata.name=",
            "",
        ] {
            let s = FieldSelector::parse(input).unwrap();
            let printed = s.to_string();
            assert_eq!(
                FieldSelector::parse(&printed).unwrap(),
                s,
                "{input:?} -> {printed:?}"
            );
        }
        let s = FieldSelector::parse("metadata.name=a\\,b").unwrap();
        assert_eq!(s.to_string(), "metadata.name=a\\,b");
        assert_eq!(s.required_name(), Some("a,b"));
    }

    #[test]
    fn unknown_field_is_400_with_upstream_message() {
        let e = FieldSelector::parse("spec.foo=bar").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            r#""spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
    }

    #[test]
    fn malformed_terms_are_400() {
        for s in ["metadata.name", "=x", "metadata.name=a\\x"] {
            let e = FieldSelector::parse(s).unwrap_err();
            assert_eq!(e.code, 400, "{s}");
            assert!(
                e.message.starts_with("invalid selector"),
                "{s}: {}",
                e.message
            );
        }
    }

    #[test]
    fn escapes_are_decoded() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(s.required_name(), Some("a,b=c"));
    }
}
