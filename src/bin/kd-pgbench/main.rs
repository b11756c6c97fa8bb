//! `kd-pgbench`: the client of the 1,000,000-row PostgreSQL table-source benchmark
//! (issue #11 §4), used by `bench/postgres/run.sh`.
//!
//! - `rows`: writes the benchmark table (`--namespaces` × `--per-namespace` records) to
//!   stdout in COPY text format, for `COPY ... FROM STDIN`.
//! - `get`, `labels`: `get` of random records and label-selected lists, one request at a
//!   time (latency, not throughput), every answer checked.
//! - `pages`: full `-A` lists with `limit`, page by page (every page timed, keys checked to
//!   be strictly increasing and complete), the server's RSS sampled meanwhile; then the
//!   first page and pages near the end, each requested again `--samples` times.
//! - `sql-paging`: keyset versus OFFSET straight on the table (tokio-postgres, prepared
//!   statements), at the start, the middle and the end.
//! - `watch`: `--watchers` concurrent watches; commits changes one at a time and records
//!   each watcher's delay from COMMIT to the event's arrival.
//! - `throughput`: changes committed as fast as `--writers` connections can, one watcher
//!   counting them through the server's one listener.
//!
//! Each measuring command prints one JSON object. Loopback only.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod data;
mod http;
mod sql;
mod watch;

// The same percentile rules as kd-load's results (one implementation for both tools).
#[path = "../kd-load/summary.rs"]
mod summary;
pub use summary::summary;

#[derive(Parser)]
#[command(
    name = "kd-pgbench",
    about = "Benchmark client of the PostgreSQL table source"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The server under test.
#[derive(clap::Args, Clone)]
struct Server {
    /// Server base URL (https://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// Bearer token.
    #[arg(long, env = "KD_PGBENCH_TOKEN", hide_env_values = true)]
    token: String,
}

/// The benchmark table's shape.
#[derive(clap::Args, Clone, Copy)]
struct Shape {
    /// Namespaces.
    #[arg(long, default_value_t = 10_000)]
    namespaces: u32,
    /// Records per namespace.
    #[arg(long, default_value_t = 100)]
    per_namespace: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// The table's rows in COPY text format (namespace, name, labels, data, resource_version).
    Rows {
        #[command(flatten)]
        shape: Shape,
    },
    /// `get` of random records.
    Get {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value_t = 2000)]
        samples: usize,
    },
    /// Label-selected lists (`bucket=b-K`: 1 record in 10,000, across namespaces).
    Labels {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value_t = 2000)]
        samples: usize,
    },
    /// Full `-A` lists page by page, RSS sampled; first and deep pages repeated.
    Pages {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        shape: Shape,
        /// Page size.
        #[arg(long, default_value_t = 500)]
        limit: usize,
        /// Full passes through the table.
        #[arg(long, default_value_t = 1)]
        passes: usize,
        /// Repetitions of the first page and of each deep page.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// The server's process id (RSS sampled from /proc/PID/status).
        #[arg(long)]
        pid: u32,
    },
    /// Keyset versus OFFSET paging straight in SQL.
    SqlPaging {
        /// libpq DSN.
        #[arg(long)]
        dsn: String,
        #[arg(long, default_value = "kubedojo")]
        schema: String,
        #[arg(long, default_value_t = 500)]
        limit: i64,
        /// Samples per (method, depth).
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Time allowed for OFFSET samples per depth.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        offset_budget: Duration,
    },
    /// Watch fan-out: commit-to-delivery delay for every watcher.
    Watch {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        dsn: String,
        #[arg(long, default_value = "kubedojo")]
        schema: String,
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Changes committed one at a time.
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// Pause between changes.
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        gap: Duration,
    },
    /// Changes per second through one listener.
    Throughput {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        dsn: String,
        #[arg(long, default_value = "kubedojo")]
        schema: String,
        /// Single-row update transactions.
        #[arg(long, default_value_t = 20_000)]
        changes: usize,
        /// Writing connections.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Rows updated by the one bulk transaction afterwards.
        #[arg(long, default_value_t = 10_000)]
        bulk: usize,
    },
}

fn client(server: &Server, http1_only: bool) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(2000)
        .no_proxy();
    if http1_only {
        b = b.http1_only();
    }
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", server.token)
            .parse()
            .context("token is not a valid header value")?,
    );
    Ok(b.default_headers(headers).build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let out = match cli.command {
        Cmd::Rows { shape } => {
            data::write_rows(shape.namespaces, shape.per_namespace)?;
            return Ok(());
        }
        Cmd::Get {
            server,
            shape,
            samples,
        } => http::get(&client(&server, false)?, &server.url, shape, samples).await?,
        Cmd::Labels {
            server,
            shape,
            samples,
        } => http::labels(&client(&server, false)?, &server.url, shape, samples).await?,
        Cmd::Pages {
            server,
            shape,
            limit,
            passes,
            samples,
            pid,
        } => {
            let c = client(&server, false)?;
            http::pages(&c, &server.url, shape, limit, passes, samples, pid).await?
        }
        Cmd::SqlPaging {
            dsn,
            schema,
            limit,
            samples,
            offset_budget,
        } => sql::paging(&dsn, &schema, limit, samples, offset_budget).await?,
        Cmd::Watch {
            server,
            dsn,
            schema,
            watchers,
            changes,
            gap,
        } => {
            let c = client(&server, true)?;
            watch::fan_out(&c, &server.url, &dsn, &schema, watchers, changes, gap).await?
        }
        Cmd::Throughput {
            server,
            dsn,
            schema,
            changes,
            writers,
            bulk,
        } => {
            let c = client(&server, true)?;
            watch::throughput(&c, &server.url, &dsn, &schema, changes, writers, bulk).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
