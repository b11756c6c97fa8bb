//! The table source's DDL (`schema.sql`, documented in docs/datarecords.md) and the
//! idempotent migration behind `--postgres-migrate`.

use sha2::Digest;

use super::db::{Database, DbError};

/// The DDL with `@schema@`, `@channel@` and `@lock@` placeholders.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// A validated schema name and the names derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaNames {
    /// The schema (a plain lowercase identifier).
    pub schema: String,
}

impl SchemaNames {
    /// Validates `schema`: `[a-z_][a-z0-9_]*`, at most 48 characters (so derived
    /// names stay within PostgreSQL's 63).
    pub fn new(schema: &str) -> Result<Self, String> {
        let ok = !schema.is_empty()
            && schema.len() <= 48
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(SchemaNames {
                schema: schema.to_string(),
            })
        } else {
            Err(format!(
                "schema {schema:?} must be a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 48 characters)"
            ))
        }
    }

    /// The NOTIFY channel the triggers signal.
    pub fn channel(&self) -> String {
        format!("kubedojo_changes_{}", self.schema)
    }

    /// `<schema>.datarecords`.
    pub fn table(&self) -> String {
        format!("{}.datarecords", self.schema)
    }

    /// `<schema>.changes`.
    pub fn changes(&self) -> String {
        format!("{}.changes", self.schema)
    }

    /// `<schema>.log_state`.
    pub fn log_state(&self) -> String {
        format!("{}.log_state", self.schema)
    }

    /// The advisory lock key that orders commits (derived from the schema).
    pub fn lock_key(&self) -> i64 {
        let digest = sha2::Sha256::digest(format!("kubedojo-data-api/{}", self.schema));
        i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    /// The DDL for this schema.
    pub fn ddl(&self) -> String {
        SCHEMA_SQL
            .replace("@schema@", &self.schema)
            .replace("@channel@", &self.channel())
            .replace("@lock@", &self.lock_key().to_string())
    }
}

/// Creates or updates the schema in one transaction (concurrent replicas serialize on
/// an advisory lock).
pub async fn migrate(db: &Database, names: &SchemaNames) -> Result<(), DbError> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&(names.lock_key() ^ 1)],
    )
    .await?;
    tx.batch_execute(&names.ddl()).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        assert!(SchemaNames::new("kubedojo").is_ok());
        assert!(SchemaNames::new("_x1").is_ok());
        for bad in ["", "Kube", "a-b", "a;drop", "1a", &"x".repeat(49)] {
            assert!(SchemaNames::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ddl_has_no_placeholders_left() {
        let ddl = SchemaNames::new("kubedojo").unwrap().ddl();
        for placeholder in ["@schema@", "@channel@", "@lock@"] {
            assert!(!ddl.contains(placeholder), "{ddl}");
        }
        assert!(ddl.contains("kubedojo.datarecords"));
        assert!(ddl.contains("pg_notify('kubedojo_changes_kubedojo'"));
    }
}
