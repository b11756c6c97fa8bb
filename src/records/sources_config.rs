//! `--sources-config FILE`: the DataRecord sources, in order, and the named PostgreSQL
//! connections they use. The schema is documented in `docs/datarecords.md`.
//!
//! Unknown keys are rejected with the file, the key's path and its line. Secrets (a
//! DSN, a password) are never written in the file: a connection names a file or an
//! environment variable holding its DSN (`dsnFrom`), and a literal `dsn:` or
//! `password:` key is refused with a message that never repeats the value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The kinds of source, as written in `kind:`.
pub const KINDS: &[&str] = &["file", "postgres", "postgresQuery", "computed"];

/// The namespace of `node-headroom` records when the config names none.
pub const DEFAULT_COMPUTED_NAMESPACE: &str = "kubedojo-metrics";

/// The whole sources configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcesConfig {
    /// Named PostgreSQL connections.
    pub connections: Vec<ConnectionConfig>,
    /// The sources, in order: an earlier source wins a (namespace, name).
    pub sources: Vec<SourceConfig>,
}

/// One named PostgreSQL connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionConfig {
    /// The name sources refer to.
    pub name: String,
    /// Where the DSN (a libpq connection string or `postgres://` URL) is read from.
    pub dsn_from: SecretRef,
    /// Pool size.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Timeout to establish a connection.
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// `statement_timeout` for every query.
    #[serde(default, deserialize_with = "opt_duration")]
    pub statement_timeout: Option<Duration>,
    /// TLS to the server.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Refused: a DSN in clear.
    #[serde(default, rename = "dsn", deserialize_with = "reject_secret")]
    _dsn: Option<()>,
    /// Refused: a password in clear.
    #[serde(default, rename = "password", deserialize_with = "reject_secret")]
    _password: Option<()>,
}

/// Where a secret is read from: `{file: PATH}` or `{env: NAME}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSecretRef")]
pub enum SecretRef {
    /// A file holding the secret (trailing whitespace is trimmed); e.g. a mounted Secret.
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    env: Option<String>,
}

impl TryFrom<RawSecretRef> for SecretRef {
    type Error = String;

    fn try_from(raw: RawSecretRef) -> Result<Self, String> {
        match (raw.file, raw.env) {
            (Some(f), None) if !f.as_os_str().is_empty() => Ok(SecretRef::File(f)),
            (None, Some(e)) if !e.is_empty() => Ok(SecretRef::Env(e)),
            _ => Err("expected exactly one of {file: PATH} or {env: NAME}".into()),
        }
    }
}

impl SecretRef {
    /// Reads the secret. Errors name where it was looked for, never what it holds.
    pub fn read(&self) -> Result<SecretString, String> {
        let value = match self {
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?,
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                format!("the environment variable {name} (a secret) is not set or not UTF-8")
            })?,
        };
        let value = value.trim_end();
        if value.is_empty() {
            return Err(format!("the secret from {self} is empty"));
        }
        Ok(SecretString::from(value.to_string()))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file {}", p.display()),
            SecretRef::Env(n) => write!(f, "environment variable {n}"),
        }
    }
}

/// `tls:` of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// How the server is verified.
    pub mode: TlsMode,
    /// CA bundle for `verify-full` (default: the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS without verifying the server.
    Require,
    /// TLS, the certificate verified and its name matched.
    VerifyFull,
}

/// One source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `kind: file`.
    File(FileSourceConfig),
    /// `kind: postgres`: records are rows of a table.
    Postgres(PostgresSourceConfig),
    /// `kind: postgresQuery`: the lab's `spec.source`/`spec.query` model.
    PostgresQuery(PostgresQuerySourceConfig),
    /// `kind: computed`: records computed from the metrics store.
    Computed(ComputedSourceConfig),
}

impl SourceConfig {
    /// The `kind:` of this source.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::PostgresQuery(_) => "postgresQuery",
            SourceConfig::Computed(_) => "computed",
        }
    }
}

/// `kind: file`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSourceConfig {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    /// The records file (YAML or JSON); absent means the lab's embedded records.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Re-read period (default `--records-refresh-interval`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub refresh_interval: Option<Duration>,
}

/// `kind: postgres`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresSourceConfig {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    /// The connection's name.
    pub connection: String,
    /// The schema holding the records table (default `kubedojo`, as `--postgres-schema`).
    #[serde(default)]
    pub schema: Option<String>,
    /// Create or upgrade the schema at start-up (as `--postgres-migrate`).
    #[serde(default)]
    pub migrate: bool,
    /// Keep at least this many changes in the change log (as `--postgres-keep-changes`).
    #[serde(default)]
    pub keep_changes: Option<i64>,
}

/// `kind: postgresQuery`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresQuerySourceConfig {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    /// The connection's name.
    pub connection: String,
    /// One record per query (inline; may be empty when `configMap` is given).
    #[serde(default)]
    pub records: Vec<QueryRecordConfig>,
    /// More record definitions in a ConfigMap, watched through the Kubernetes API.
    #[serde(default)]
    pub config_map: Option<ConfigMapRef>,
}

/// A ConfigMap key holding a YAML list of query record definitions (the same shape
/// as a `postgresQuery` source's `records`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapRef {
    /// The ConfigMap's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key holding the definitions (default `records.yaml`).
    #[serde(default = "default_configmap_key")]
    pub key: String,
}

fn default_configmap_key() -> String {
    "records.yaml".to_string()
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConfigMap {}/{} key {:?}",
            self.namespace, self.name, self.key
        )
    }
}

/// Checks one query record definition; the error starts with `at` (where it is).
pub fn validate_query_record(r: &QueryRecordConfig, at: &str) -> Result<(), String> {
    if !super::file::is_dns1123_label(&r.namespace) {
        return Err(format!(
            "{at}.namespace: must be a lowercase RFC 1123 label"
        ));
    }
    if !super::file::is_dns1123_subdomain(&r.name) {
        return Err(format!("{at}.name: must be a lowercase RFC 1123 subdomain"));
    }
    if r.query.trim().is_empty() {
        return Err(format!("{at}.query: must not be empty"));
    }
    if r.ttl.is_some_and(|t| t.is_zero()) {
        return Err(format!("{at}.ttl: must be more than 0"));
    }
    if r.timeout.is_some_and(|t| t.is_zero()) {
        return Err(format!("{at}.timeout: must be more than 0"));
    }
    for (k, v) in &r.labels {
        if !crate::api::label_selector::is_valid_label_key(k)
            || !crate::api::label_selector::is_valid_label_value(v)
        {
            return Err(format!("{at}.labels: {k:?}: {v:?} is not a valid label"));
        }
    }
    Ok(())
}

/// One record of a `postgresQuery` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryRecordConfig {
    /// The record's namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The record's name.
    pub name: String,
    /// The record's labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The SQL query.
    pub query: String,
    /// How rows become `spec.data`.
    #[serde(default)]
    pub shape: QueryShape,
    /// How long a result is served before the query runs again (default 30 s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// The query's `statement_timeout` (default: the connection's statement timeout).
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

/// A query record's TTL when it names none.
pub const DEFAULT_QUERY_TTL: Duration = Duration::from_secs(30);

/// `shape` of a query record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QueryShape {
    /// Two columns: each row is one key and its value.
    #[default]
    KeyValue,
    /// One row: each column is a key.
    Row,
}

/// `kind: computed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputedSourceConfig {
    #[serde(rename = "kind", default)]
    _kind: IgnoredAny,
    /// Where `node-headroom` records live.
    #[serde(default = "default_computed_namespace")]
    pub namespace: String,
    /// Per namespace `resource-usage` records.
    #[serde(default = "yes")]
    pub resource_usage: bool,
    /// Per node `node-headroom` records.
    #[serde(default = "yes")]
    pub node_headroom: bool,
}

impl Default for ComputedSourceConfig {
    fn default() -> Self {
        ComputedSourceConfig {
            _kind: IgnoredAny,
            namespace: DEFAULT_COMPUTED_NAMESPACE.to_string(),
            resource_usage: true,
            node_headroom: true,
        }
    }
}

impl FileSourceConfig {
    /// A file source (the `--records-file` shorthand).
    pub fn new(path: PathBuf) -> Self {
        FileSourceConfig {
            _kind: IgnoredAny,
            path: Some(path),
            refresh_interval: None,
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}

fn default_computed_namespace() -> String {
    DEFAULT_COMPUTED_NAMESPACE.into()
}

fn yes() -> bool {
    true
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    crate::config::parse_duration(&text)
        .map(Some)
        .map_err(de::Error::custom)
}

fn reject_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    // Consume the value without keeping or echoing it.
    IgnoredAny::deserialize(d)?;
    Err(de::Error::custom(
        "secrets are never written in the sources config in clear: use dsnFrom: {file: PATH} (e.g. a mounted Secret) or dsnFrom: {env: NAME}",
    ))
}

/// A sources configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid sources config {file}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong: the key's path, and its line when the parser knows it.
    pub message: String,
}

impl SourcesConfig {
    /// Reads and validates a sources config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates a sources config; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            file: file.to_string(),
            message,
        };
        let located = |e: serde_path_to_error::Error<serde_yaml_ng::Error>| {
            let path = e.path().to_string();
            // serde_yaml_ng's message ends with "at line L column C" and usually starts
            // with the path already.
            let inner = e.into_inner().to_string();
            // Keep the more precise of the two paths.
            let message = match inner.split_once(": ") {
                Some((prefix, rest)) if !prefix.contains(' ') && path.starts_with(prefix) => {
                    format!("{path}: {rest}")
                }
                _ if path == "." => inner,
                _ => format!("{path}: {inner}"),
            };
            error(message)
        };
        // Pass 1: each source's kind (everything else ignored).
        let kinds: KindsOnly =
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
                .map_err(located)?;
        let kinds: Vec<String> = kinds.sources.into_iter().map(|k| k.kind).collect();
        // Pass 2: each source as the struct of its kind, straight from the YAML, so that
        // an unknown key is reported with its path and line.
        let mut track = serde_path_to_error::Track::new();
        let config = ConfigSeed(&kinds)
            .deserialize(serde_path_to_error::Deserializer::new(
                serde_yaml_ng::Deserializer::from_str(text),
                &mut track,
            ))
            .map_err(|e| located(serde_path_to_error::Error::new(track.path(), e)))?;
        config.validate().map_err(error)?;
        Ok(config)
    }

    /// The configuration of `--records-file`: one file source.
    pub fn single_file(path: PathBuf) -> Self {
        SourcesConfig {
            connections: Vec::new(),
            sources: vec![SourceConfig::File(FileSourceConfig::new(path))],
        }
    }

    /// The connection named `name`.
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            if c.name.trim().is_empty() {
                return Err(format!("connections[{i}].name: must not be empty"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(format!(
                    "connections[{i}].name: a second connection named {:?}",
                    c.name
                ));
            }
            if c.max_connections == Some(0) {
                return Err(format!(
                    "connections[{i}].maxConnections: must be at least 1"
                ));
            }
            if let Some(tls) = &c.tls
                && tls.ca_file.is_some()
                && tls.mode != TlsMode::VerifyFull
            {
                return Err(format!(
                    "connections[{i}].tls.caFile: only used with mode: verify-full"
                ));
            }
        }
        if self.sources.is_empty() {
            return Err("sources: lists no source".into());
        }
        let known = || {
            if names.is_empty() {
                "none is defined under connections".to_string()
            } else {
                format!(
                    "defined: {}",
                    names.iter().copied().collect::<Vec<_>>().join(", ")
                )
            }
        };
        let mut computed = 0;
        let mut tables = 0;
        let mut query_records = std::collections::BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            match s {
                SourceConfig::File(f) => {
                    if f.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                        return Err(format!("sources[{i}].path: must not be empty"));
                    }
                }
                SourceConfig::Postgres(p) => {
                    tables += 1;
                    if tables > 1 {
                        return Err(format!(
                            "sources[{i}]: a second postgres table source (one table serves them all)"
                        ));
                    }
                    if p.keep_changes.is_some_and(|k| k < 1) {
                        return Err(format!("sources[{i}].keepChanges: must be at least 1"));
                    }
                    if let Some(schema) = &p.schema
                        && let Err(e) = super::postgres::SchemaNames::new(schema)
                    {
                        return Err(format!("sources[{i}].schema: {e}"));
                    }
                    if !names.contains(p.connection.as_str()) {
                        return Err(format!(
                            "sources[{i}].connection: no connection named {:?} ({})",
                            p.connection,
                            known()
                        ));
                    }
                }
                SourceConfig::PostgresQuery(q) => {
                    if !names.contains(q.connection.as_str()) {
                        return Err(format!(
                            "sources[{i}].connection: no connection named {:?} ({})",
                            q.connection,
                            known()
                        ));
                    }
                    if q.records.is_empty() && q.config_map.is_none() {
                        return Err(format!(
                            "sources[{i}]: a postgresQuery source needs records, a configMap or both"
                        ));
                    }
                    if let Some(cm) = &q.config_map {
                        if !super::file::is_dns1123_label(&cm.namespace) {
                            return Err(format!(
                                "sources[{i}].configMap.namespace: must be a lowercase RFC 1123 label"
                            ));
                        }
                        if !super::file::is_dns1123_subdomain(&cm.name) {
                            return Err(format!(
                                "sources[{i}].configMap.name: must be a lowercase RFC 1123 subdomain"
                            ));
                        }
                        if cm.key.is_empty() {
                            return Err(format!("sources[{i}].configMap.key: must not be empty"));
                        }
                    }
                    for (j, r) in q.records.iter().enumerate() {
                        let at = format!("sources[{i}].records[{j}]");
                        validate_query_record(r, &at)?;
                        if !query_records.insert((r.namespace.clone(), r.name.clone())) {
                            return Err(format!(
                                "{at}: a second query record {}/{}",
                                r.namespace, r.name
                            ));
                        }
                    }
                }
                SourceConfig::Computed(c) => {
                    computed += 1;
                    if computed > 1 {
                        return Err(format!(
                            "sources[{i}]: a second computed source (one serves them all)"
                        ));
                    }
                    if !super::file::is_dns1123_label(&c.namespace) {
                        return Err(format!(
                            "sources[{i}].namespace: must be a lowercase RFC 1123 label"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct KindsOnly {
    sources: Vec<KindOnly>,
}

#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// Deserialises the top level, handing each source its kind.
struct ConfigSeed<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for ConfigSeed<'_> {
    type Value = SourcesConfig;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SourcesConfig, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConfigSeed<'_> {
    type Value = SourcesConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with connections and sources")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SourcesConfig, A::Error> {
        let mut connections = None;
        let mut sources = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "connections" => connections = Some(map.next_value::<Vec<ConnectionConfig>>()?),
                "sources" => sources = Some(map.next_value_seed(SourcesSeed(self.0))?),
                other => return Err(de::Error::unknown_field(other, &["connections", "sources"])),
            }
        }
        Ok(SourcesConfig {
            connections: connections.unwrap_or_default(),
            sources: sources.ok_or_else(|| de::Error::missing_field("sources"))?,
        })
    }
}

struct SourcesSeed<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for SourcesSeed<'_> {
    type Value = Vec<SourceConfig>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<SourceConfig>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SourcesSeed<'_> {
    type Value = Vec<SourceConfig>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of sources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<SourceConfig>, A::Error> {
        let mut out = Vec::new();
        while let Some(kind) = self.0.get(out.len()) {
            match seq.next_element_seed(SourceSeed(kind))? {
                Some(s) => out.push(s),
                None => break,
            }
        }
        Ok(out)
    }
}

struct SourceSeed<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for SourceSeed<'_> {
    type Value = SourceConfig;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SourceConfig, D::Error> {
        match self.0 {
            "file" => FileSourceConfig::deserialize(d).map(SourceConfig::File),
            "postgres" => PostgresSourceConfig::deserialize(d).map(SourceConfig::Postgres),
            "postgresQuery" => {
                PostgresQuerySourceConfig::deserialize(d).map(SourceConfig::PostgresQuery)
            }
            "computed" => ComputedSourceConfig::deserialize(d).map(SourceConfig::Computed),
            other => {
                IgnoredAny::deserialize(d)?;
                Err(de::Error::unknown_variant(other, KINDS))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const FULL: &str = r#"
connections:
  - name: main
    dsnFrom: {file: /etc/kubedojo/pg/dsn}
    maxConnections: 8
    connectTimeout: 5s
    statementTimeout: 5s
    tls: {mode: verify-full, caFile: /etc/ca.pem}
  - name: other
    dsnFrom: {env: KUBEDOJO_PG_DSN}
sources:
  - kind: file
    path: /etc/kubedojo/records.yaml
    refreshInterval: 30s
  - kind: postgres
    connection: main
    schema: kubedojo
  - kind: postgresQuery
    connection: other
    records:
      - {namespace: default, name: user-config, labels: {}, query: "SELECT k, v FROM t", shape: keyValue, ttl: 30s}
      - {name: one-row, query: "SELECT 1 AS a", shape: row}
  - kind: computed
    namespace: kubedojo-metrics
    resourceUsage: true
    nodeHeadroom: false
"#;

    #[test]
    fn the_documented_schema_parses() {
        let c = SourcesConfig::parse("s.yaml", FULL).unwrap();
        assert_eq!(c.connections.len(), 2);
        let main = c.connection("main").unwrap();
        assert_eq!(
            main.dsn_from,
            SecretRef::File("/etc/kubedojo/pg/dsn".into())
        );
        assert_eq!(main.max_connections, Some(8));
        assert_eq!(main.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(main.tls.as_ref().unwrap().mode, TlsMode::VerifyFull);
        assert_eq!(
            c.connection("other").unwrap().dsn_from,
            SecretRef::Env("KUBEDOJO_PG_DSN".into())
        );
        let kinds: Vec<&str> = c.sources.iter().map(SourceConfig::kind).collect();
        assert_eq!(kinds, vec!["file", "postgres", "postgresQuery", "computed"]);
        let SourceConfig::File(f) = &c.sources[0] else {
            panic!()
        };
        assert_eq!(f.refresh_interval, Some(Duration::from_secs(30)));
        assert_eq!(
            f.path.as_deref(),
            Some(Path::new("/etc/kubedojo/records.yaml"))
        );
        let embedded = SourcesConfig::parse("s.yaml", "sources: [{kind: file}]").unwrap();
        let SourceConfig::File(f) = &embedded.sources[0] else {
            panic!()
        };
        assert_eq!(f.path, None);
        let SourceConfig::PostgresQuery(q) = &c.sources[2] else {
            panic!()
        };
        assert_eq!(q.records[0].ttl, Some(Duration::from_secs(30)));
        assert_eq!(q.records[1].namespace, "default");
        assert_eq!(q.records[1].shape, QueryShape::Row);
        let SourceConfig::Computed(comp) = &c.sources[3] else {
            panic!()
        };
        assert!(comp.resource_usage && !comp.node_headroom);
        assert_eq!(comp.namespace, "kubedojo-metrics");
    }

    fn err(text: &str) -> String {
        SourcesConfig::parse("/etc/kubedojo/sources.yaml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_keys_name_the_file_the_key_and_the_line() {
        let e = err(
            "sources:\n  - kind: file\n    path: /r.yaml\n  - kind: postgres\n    conection: main\n",
        );
        assert!(e.contains("/etc/kubedojo/sources.yaml"), "{e}");
        assert!(e.contains("sources[1]"), "{e}");
        assert!(e.contains("unknown field `conection`"), "{e}");
        assert!(e.contains("line 5"), "{e}");

        let e = err("sources:\n  - kind: computed\n    nodeHedroom: true\n");
        assert!(
            e.contains("unknown field `nodeHedroom`") && e.contains("line 3"),
            "{e}"
        );

        let e = err(
            "connections:\n  - name: m\n    dsnFrom: {file: /x}\n    tls: {mode: require, ca: /x}\nsources:\n  - kind: postgres\n    connection: m\n",
        );
        assert!(
            e.contains("connections[0].tls")
                && e.contains("unknown field `ca`")
                && e.contains("line 4"),
            "{e}"
        );

        let e = err("sourcez: []\n");
        assert!(e.contains("sourcez") || e.contains("sources"), "{e}");

        let e = err("sources:\n  - kind: database\n    path: x\n");
        assert!(
            e.contains("unknown variant `database`") && e.contains("postgresQuery"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");

        let e = err("sources:\n  - path: /x\n");
        assert!(
            e.contains("sources[0]") && e.contains("missing field `kind`"),
            "{e}"
        );

        let e = err("sources:\n  - kind: file\n    path: /x\n    refreshInterval: soon\n");
        // A bad value is placed at its source's line.
        assert!(
            e.contains("sources[0].refreshInterval: invalid duration \"soon\""),
            "{e}"
        );
        assert!(e.contains("at line 2"), "{e}");
    }

    #[test]
    fn secrets_in_clear_are_refused_without_repeating_them() {
        let e = err(
            "connections:\n  - name: m\n    dsn: postgres://u:hunter2@db/x\nsources:\n  - kind: postgres\n    connection: m\n",
        );
        assert!(e.contains("connections[0].dsn"), "{e}");
        assert!(e.contains("dsnFrom"), "{e}");
        assert!(e.contains("at line "), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(
            "connections:\n  - name: m\n    dsnFrom: {env: X}\n    password: hunter2\nsources:\n  - kind: postgres\n    connection: m\n",
        );
        assert!(
            e.contains("connections[0].password") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn references_and_values_are_validated() {
        let e = err("sources:\n  - kind: postgres\n    connection: main\n");
        assert!(
            e.contains("sources[0].connection: no connection named \"main\""),
            "{e}"
        );
        let e = err(
            "connections:\n  - {name: a, dsnFrom: {env: X}}\n  - {name: a, dsnFrom: {env: Y}}\nsources:\n  - {kind: postgres, connection: a}\n",
        );
        assert!(e.contains("connections[1].name"), "{e}");
        let e = err("sources: []\n");
        assert!(e.contains("lists no source"), "{e}");
        let e = err("sources:\n  - {kind: computed}\n  - {kind: computed}\n");
        assert!(e.contains("a second computed source"), "{e}");
        let e = err("sources:\n  - {kind: computed, namespace: Bad_NS}\n");
        assert!(e.contains("sources[0].namespace"), "{e}");
        let e = err(
            "connections:\n  - {name: a, dsnFrom: {env: X}}\nsources:\n  - kind: postgresQuery\n    connection: a\n    records:\n      - {name: X, query: q}\n",
        );
        assert!(e.contains("sources[0].records[0].name"), "{e}");
    }

    #[test]
    fn secrets_are_read_from_files_and_env_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dsn");
        std::fs::write(&p, "postgres://u:hunter2@db/x\n").unwrap();
        let s = SecretRef::File(p.clone()).read().unwrap();
        assert_eq!(s.expose_secret(), "postgres://u:hunter2@db/x");
        assert!(!format!("{s:?}").contains("hunter2"));
        std::fs::write(&p, "\n").unwrap();
        assert!(SecretRef::File(p).read().unwrap_err().contains("empty"));
        let e = SecretRef::Env("KUBEDOJO_TEST_NO_SUCH_VAR".into())
            .read()
            .unwrap_err();
        assert!(e.contains("KUBEDOJO_TEST_NO_SUCH_VAR"), "{e}");
    }
}
