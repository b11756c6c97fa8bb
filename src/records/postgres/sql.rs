//! List filters pushed down into SQL: namespace scope, `metadata.name` /
//! `metadata.namespace` field selectors, every label selector operator as jsonb
//! predicates the GIN index on `labels` serves (`@>` containment, `?` key existence),
//! and the keyset cursor `(namespace, name) > ($a, $b)` the primary key serves.

use serde_json::json;
use tokio_postgres::types::ToSql;

use crate::api::field_selector::{Field, FieldSelector};
use crate::api::label_selector::{LabelSelector, Operator};

/// A parameter of a built query.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// A `WHERE` clause and its parameters (`$1`...).
#[derive(Default)]
pub struct Filter {
    terms: Vec<String>,
    params: Vec<Param>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("sql", &self.where_sql())
            .field("params", &self.params.len())
            .finish()
    }
}

impl Filter {
    /// A placeholder for `value`.
    pub fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Adds one conjunct.
    pub fn and(&mut self, term: String) {
        self.terms.push(term);
    }

    /// `WHERE a AND b ...` (empty when there is no term).
    pub fn where_sql(&self) -> String {
        if self.terms.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.terms.join(" AND "))
        }
    }

    /// The parameters, as the driver takes them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    /// Namespace scope: `namespace = $n`.
    pub fn namespace(&mut self, namespace: Option<&str>) {
        if let Some(ns) = namespace {
            let p = self.param(ns.to_string());
            self.and(format!("namespace = {p}"));
        }
    }

    /// Keyset cursor: strictly after `(namespace, name)`.
    pub fn after(&mut self, after: Option<(&str, &str)>) {
        if let Some((ns, name)) = after {
            let a = self.param(ns.to_string());
            let b = self.param(name.to_string());
            self.and(format!("(namespace, name) > ({a}, {b})"));
        }
    }

    /// `metadata.name` / `metadata.namespace` terms.
    pub fn fields(&mut self, selector: &FieldSelector) {
        for t in selector.terms() {
            let column = match t.field {
                Field::Name => "name",
                Field::Namespace => "namespace",
            };
            let p = self.param(t.value.clone());
            let op = if t.equals { "=" } else { "<>" };
            self.and(format!("{column} {op} {p}"));
        }
    }

    /// Every label requirement as a jsonb predicate on `labels`.
    pub fn labels(&mut self, selector: &LabelSelector) {
        for r in selector.requirements() {
            let term = match r.op {
                Operator::In | Operator::NotIn => {
                    let any: Vec<String> = r
                        .values
                        .iter()
                        .map(|v| {
                            let p = self.param(json!({ r.key.clone(): v }));
                            format!("labels @> {p}")
                        })
                        .collect();
                    let any = format!("({})", any.join(" OR "));
                    if r.op == Operator::In {
                        any
                    } else {
                        format!("NOT {any}")
                    }
                }
                Operator::Exists => {
                    let p = self.param(r.key.clone());
                    format!("labels ? {p}")
                }
                Operator::DoesNotExist => {
                    let p = self.param(r.key.clone());
                    format!("NOT (labels ? {p})")
                }
                Operator::GreaterThan | Operator::LessThan => {
                    // As Go's selector: both sides must parse as 64-bit integers.
                    let bound: i64 = r.values.first().and_then(|v| v.parse().ok()).unwrap_or(0);
                    let k = self.param(r.key.clone());
                    let b = self.param(bound);
                    let cmp = if r.op == Operator::GreaterThan {
                        ">"
                    } else {
                        "<"
                    };
                    format!(
                        "(CASE WHEN (labels ->> {k}) ~ '^[+-]?[0-9]+$' THEN \
                         (labels ->> {k})::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 \
                         AND (labels ->> {k})::numeric {cmp} {b}::int8 ELSE false END)"
                    )
                }
            };
            self.and(term);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_becomes_an_indexable_predicate() {
        let mut f = Filter::default();
        f.namespace(Some("a"));
        f.labels(
            &LabelSelector::parse("app=web,tier in (x,y),env!=prod,team,!legacy,n>3").unwrap(),
        );
        f.fields(&FieldSelector::parse("metadata.name!=skip").unwrap());
        f.after(Some(("a", "m")));
        let sql = f.where_sql();
        assert!(
            sql.starts_with("WHERE namespace = $1 AND (labels @> $2)"),
            "{sql}"
        );
        assert!(sql.contains("(labels @> $3 OR labels @> $4)"), "{sql}");
        assert!(sql.contains("NOT (labels @> $5)"), "{sql}");
        assert!(sql.contains("labels ? $6"), "{sql}");
        assert!(sql.contains("NOT (labels ? $7)"), "{sql}");
        assert!(sql.contains("name <> $10"), "{sql}");
        assert!(sql.ends_with("(namespace, name) > ($11, $12)"), "{sql}");
        assert_eq!(f.params().len(), 12);
    }
}
