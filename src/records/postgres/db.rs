//! One configured database: a bounded deadpool of query connections (with connect,
//! wait and statement timeouts), dedicated connections for LISTEN, TLS through
//! rustls (ring), and the mapping of database failures to API errors.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};

use super::config::{ConnectionConfig, TlsMode};
use crate::api::status::ApiError;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached, timed out, or refused the connection.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A query failed for another reason (SQL error, bad schema).
    #[error("database query failed: {0}")]
    Query(String),
}

impl DbError {
    /// Maps a driver error: connection-level failures and timeouts are `Unavailable`.
    pub fn from_pg(e: tokio_postgres::Error) -> Self {
        if e.is_closed() {
            return DbError::Unavailable(with_causes(&e));
        }
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            // 57014 query_canceled (statement_timeout), 57P0x shutdown/cannot connect,
            // 08xxx connection exceptions, 53xxx insufficient resources.
            if code == "57014"
                || code.starts_with("57P")
                || code.starts_with("08")
                || code.starts_with("53")
            {
                return DbError::Unavailable(db.message().to_string());
            }
            return DbError::Query(format!("{}: {}", db.code().code(), db.message()));
        }
        // No server error: an I/O failure, a timeout, a closed connection or a TLS
        // handshake that failed (the causes say why: an unknown issuer, a wrong name).
        DbError::Unavailable(with_causes(&e))
    }

    /// The message without the kind's prefix.
    pub fn message(&self) -> &str {
        match self {
            DbError::Unavailable(m) | DbError::Query(m) => m,
        }
    }
}

/// `e` and its sources, `outer: inner: ...` (tokio-postgres's own message for a failed
/// TLS handshake or connect does not say why).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let m = cause.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        source = cause.source();
    }
    out
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from_pg(e)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(why) => ApiError::unavailable_retry(
                format!("the DataRecords database is unavailable: {why}"),
                1,
            ),
            DbError::Query(why) => ApiError::internal(format!("DataRecords database query: {why}")),
        }
    }
}

#[derive(Clone)]
enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A configured database connection.
pub struct Database {
    name: String,
    pool: Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    connect_timeout: Duration,
    statement_timeout: Duration,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .finish()
    }
}

/// A pooled connection.
pub type PooledClient = deadpool_postgres::Object;

impl Database {
    /// Builds the pool (connections are opened lazily). Errors name the connection
    /// and never contain the DSN.
    pub fn new(cfg: &ConnectionConfig) -> Result<Arc<Self>, String> {
        let mut config: tokio_postgres::Config = cfg.dsn.parse().map_err(|e| {
            format!(
                "connection {:?}: the DSN is not a valid libpq connection string or URL: {e}",
                cfg.name
            )
        })?;
        config.connect_timeout(cfg.connect_timeout);
        let statement_ms = cfg.statement_timeout.as_millis().max(1);
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c statement_timeout={statement_ms}"),
            _ => format!("-c statement_timeout={statement_ms}"),
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("kubedojo-data-api");
        }
        let tls = match cfg.tls {
            TlsMode::Disable => Tls::None,
            TlsMode::Require | TlsMode::VerifyFull => Tls::Rustls(
                rustls_connector(cfg)
                    .map_err(|e| format!("connection {:?}: TLS: {e}", cfg.name))?,
            ),
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::None => Manager::from_config(config.clone(), NoTls, manager_config),
            Tls::Rustls(t) => Manager::from_config(config.clone(), t.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(cfg.max_connections.max(1))
            .wait_timeout(Some(cfg.connect_timeout))
            .create_timeout(Some(cfg.connect_timeout))
            .recycle_timeout(Some(cfg.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| format!("connection {:?}: {e}", cfg.name))?;
        Ok(Arc::new(Database {
            name: cfg.name.clone(),
            pool,
            config,
            tls,
            connect_timeout: cfg.connect_timeout,
            statement_timeout: cfg.statement_timeout,
        }))
    }

    /// The connection's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The statement timeout (also the client-side bound of one query).
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// The connect timeout (also the longest wait for a pooled connection).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// A pooled connection, or `Unavailable` within the connect timeout.
    pub async fn client(&self) -> Result<PooledClient, DbError> {
        match tokio::time::timeout(
            self.connect_timeout + Duration::from_millis(100),
            self.pool.get(),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(DbError::Unavailable(pool_error(e))),
            Err(_) => Err(DbError::Unavailable(format!(
                "no connection within {:?}",
                self.connect_timeout
            ))),
        }
    }

    /// Runs `f` within the statement timeout (plus a margin for the round trip), so a
    /// database that stops answering is an error, never a hang.
    pub async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let limit = self.statement_timeout + self.connect_timeout + Duration::from_millis(500);
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Unavailable(format!("no answer within {limit:?}"))),
        }
    }

    /// A dedicated connection outside the pool (for LISTEN): the client, and the
    /// notifications' payloads; the channel closes when the connection ends.
    /// `application_name` names it in `pg_stat_activity`.
    pub async fn connect_listener(
        &self,
        application_name: &str,
    ) -> Result<(Client, mpsc::UnboundedReceiver<String>), DbError> {
        let mut config = self.config.clone();
        config.application_name(application_name);
        let connect = async {
            match &self.tls {
                Tls::None => spawn_connection(&config, NoTls).await,
                Tls::Rustls(t) => spawn_connection(&config, t.clone()).await,
            }
        };
        match tokio::time::timeout(self.connect_timeout + Duration::from_millis(100), connect).await
        {
            Ok(r) => r,
            Err(_) => Err(DbError::Unavailable(format!(
                "no connection within {:?}",
                self.connect_timeout
            ))),
        }
    }
}

async fn spawn_connection<T>(
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<(Client, mpsc::UnboundedReceiver<String>), DbError>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    <T as MakeTlsConnect<Socket>>::TlsConnect: Send,
    <<T as MakeTlsConnect<Socket>>::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config.connect(tls).await.map_err(DbError::from_pg)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(AsyncMessage::Notice(notice)) => {
                    tracing::debug!(notice = %notice, "database notice");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "database listening connection ended");
                    return;
                }
            }
        }
    });
    Ok((client, rx))
}

fn pool_error(e: deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => DbError::from_pg(e).message().to_string(),
        PoolError::Timeout(_) => "timed out waiting for a connection".into(),
        other => other.to_string(),
    }
}

fn rustls_connector(
    cfg: &ConnectionConfig,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::ClientConfig;
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match cfg.tls {
        TlsMode::VerifyFull => {
            let path = cfg
                .ca_file
                .as_ref()
                .ok_or("mode verify-full needs caFile")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read caFile {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("caFile {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("caFile {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyServerCert::new(
                provider,
            )))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
