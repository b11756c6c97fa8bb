//! Proptest strategies for label and field selectors over a small vocabulary, shared by the
//! PostgreSQL differential tests (tests/postgres_differential.rs,
//! tests/postgres_union_differential.rs): each test names its own [`Vocabulary`]; [`escape`]
//! puts a selector into a query string.

use proptest::prelude::*;

/// What the generated selectors are made of.
pub struct Vocabulary {
    /// Namespaces (`metadata.namespace` terms).
    pub namespaces: &'static [&'static str],
    /// Record names are `r0` .. `r{names - 1}` (`metadata.name` terms).
    pub names: u8,
    /// Label keys.
    pub keys: &'static [&'static str],
    /// Label values.
    pub values: &'static [&'static str],
    /// Sizes of `in` / `notin` value sets.
    pub set_sizes: std::ops::Range<usize>,
    /// Equality operators of label requirements and field terms (`=`, `==`, `!=`).
    pub equals: &'static [&'static str],
    /// Comparison operators of label requirements (`>`, `<`)...
    pub compare: &'static [&'static str],
    /// ... and their bounds.
    pub bounds: &'static [&'static str],
    /// Weights of the empty label selector and of a non-empty one.
    pub label_weights: (u32, u32),
}

impl Vocabulary {
    /// One label requirement, in selector syntax: every operator, each equality and
    /// comparison operator as likely as `in`, `notin`, exists and not-exists.
    pub fn requirement(&'static self) -> impl Strategy<Value = String> {
        let key = prop::sample::select(self.keys);
        let value = prop::sample::select(self.values);
        let values = prop::collection::btree_set(value.clone(), self.set_sizes.clone())
            .prop_map(|s| s.into_iter().collect::<Vec<_>>().join(","));
        let equals = prop::sample::select(self.equals);
        let compare = prop::sample::select(self.compare);
        let bound = prop::sample::select(self.bounds);
        prop_oneof![
            self.equals.len() as u32 => (key.clone(), equals, value)
                .prop_map(|(k, op, v)| format!("{k}{op}{v}")),
            1 => (key.clone(), values.clone()).prop_map(|(k, v)| format!("{k} in ({v})")),
            1 => (key.clone(), values).prop_map(|(k, v)| format!("{k} notin ({v})")),
            1 => key.clone().prop_map(str::to_string),
            1 => key.clone().prop_map(|k| format!("!{k}")),
            self.compare.len() as u32 => (key, compare, bound)
                .prop_map(|(k, op, b)| format!("{k}{op}{b}")),
        ]
    }

    /// A label selector: empty, or one or two requirements.
    pub fn label_selector(&'static self) -> impl Strategy<Value = String> {
        let (empty, some) = self.label_weights;
        prop_oneof![
            empty => Just(String::new()),
            some => prop::collection::vec(self.requirement(), 1..3).prop_map(|v| v.join(",")),
        ]
    }

    /// A field selector: empty (3 in 4), or one or two `metadata.name` / `metadata.namespace`
    /// terms.
    pub fn field_selector(&'static self) -> impl Strategy<Value = String> {
        let term = prop_oneof![
            (0..self.names, prop::sample::select(self.equals))
                .prop_map(|(n, op)| format!("metadata.name{op}r{n}")),
            (
                prop::sample::select(self.namespaces),
                prop::sample::select(self.equals)
            )
                .prop_map(|(ns, op)| format!("metadata.namespace{op}{ns}")),
        ];
        prop_oneof![
            3 => Just(String::new()),
            1 => prop::collection::vec(term, 1..3).prop_map(|v| v.join(",")),
        ]
    }
}

/// `q` percent-encoded for a query string (every byte but `[A-Za-z0-9._-]`).
pub fn escape(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
