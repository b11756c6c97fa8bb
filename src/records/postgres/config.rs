//! What the PostgreSQL sources need from the sources configuration: a resolved
//! connection (the DSN already read from its file or environment variable) and the
//! table source's schema.

use std::path::PathBuf;
use std::time::Duration;

/// How the connection to the database is secured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP or a Unix socket.
    #[default]
    Disable,
    /// TLS, without verifying the server's certificate.
    Require,
    /// TLS with the server's certificate verified against `ca_file` and its name.
    VerifyFull,
}

/// One database connection of the sources configuration.
#[derive(Clone)]
pub struct ConnectionConfig {
    /// The connection's name (sources refer to it).
    pub name: String,
    /// libpq key/value DSN or `postgres://` URL (a secret: never logged).
    pub dsn: String,
    /// Pool size (queries; the one listening connection is extra).
    pub max_connections: usize,
    /// Time allowed to connect (and to wait for a pooled connection).
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout`, also enforced on the client.
    pub statement_timeout: Duration,
    /// TLS mode.
    pub tls: TlsMode,
    /// CA bundle for `VerifyFull`.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("name", &self.name)
            .field("dsn", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl ConnectionConfig {
    /// A connection with the documented defaults (8 connections, 5 s timeouts, no TLS).
    pub fn new(name: impl Into<String>, dsn: impl Into<String>) -> Self {
        ConnectionConfig {
            name: name.into(),
            dsn: dsn.into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            tls: TlsMode::Disable,
            ca_file: None,
        }
    }
}

/// The `postgres` (table) source: records are the rows of `<schema>.datarecords`.
#[derive(Clone, Debug)]
pub struct TableSourceConfig {
    /// Schema holding the table and its change log.
    pub schema: String,
    /// Keep at least this many changes in the log (older resourceVersions get 410).
    pub keep_changes: i64,
}

impl TableSourceConfig {
    /// The table source in `schema` with the default log retention (100,000 changes).
    pub fn new(schema: impl Into<String>) -> Self {
        TableSourceConfig {
            schema: schema.into(),
            keep_changes: 100_000,
        }
    }
}
