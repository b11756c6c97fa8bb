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

/// Resolves a connection of the sources configuration: reads its DSN from the named
/// file or environment variable and applies the documented defaults. Errors name the
/// connection and where the DSN was looked for, never the DSN.
pub fn resolve_connection(
    c: &crate::records::sources_config::ConnectionConfig,
) -> Result<ConnectionConfig, String> {
    use crate::records::sources_config::TlsMode as Mode;
    use secrecy::ExposeSecret;
    let dsn = c
        .dsn_from
        .read()
        .map_err(|e| format!("connection {:?}: {e}", c.name))?;
    let mut out = ConnectionConfig::new(c.name.clone(), dsn.expose_secret().to_string());
    if let Some(n) = c.max_connections {
        out.max_connections = n as usize;
    }
    if let Some(t) = c.connect_timeout {
        out.connect_timeout = t;
    }
    if let Some(t) = c.statement_timeout {
        out.statement_timeout = t;
    }
    if let Some(tls) = &c.tls {
        out.tls = match tls.mode {
            Mode::Disable => TlsMode::Disable,
            Mode::Require => TlsMode::Require,
            Mode::VerifyFull => TlsMode::VerifyFull,
        };
        out.ca_file = tls.ca_file.clone();
    }
    Ok(out)
}
