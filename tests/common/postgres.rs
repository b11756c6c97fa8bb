//! A real, throwaway PostgreSQL server for integration tests: `initdb` into a temporary
//! directory, `postgres` listening on a Unix socket in that directory (no TCP), stopped
//! and removed on drop. Debian's `postgresql` package provides the binaries
//! (`scripts/test-all.sh` installs it when missing).
//!
//! initdb and postgres refuse to run as root, so when the tests run as root the server
//! runs as `nobody` (through `setpriv`) in a directory handed to that user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server owned by the test.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    /// The port number used in the socket file name (`.s.PGSQL.<port>`), and of the
    /// loopback TCP listener when there is one.
    pub port: u16,
    /// Also listen on 127.0.0.1:`port` with TLS (`ssl=on`, this certificate).
    tls: bool,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KUBEDOJO_PG_BIN") {
        return PathBuf::from(dir);
    }
    for v in ["17", "16", "15", "14", "13"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("postgres").exists() {
            return p;
        }
    }
    panic!(
        "PostgreSQL server binaries not found (install Debian's `postgresql` package, or set KUBEDOJO_PG_BIN)"
    );
}

fn is_root() -> bool {
    // /proc/self belongs to the effective user (std has no euid accessor).
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn as_server_user(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

impl TestPostgres {
    /// initdb + start. Panics with the server's log when it cannot start.
    pub fn start() -> Self {
        Self::init(None)
    }

    /// As [`TestPostgres::start`], and also listening on 127.0.0.1:[`port`](Self::port)
    /// with `ssl=on` and the given PEM certificate (chain) and key.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::init(Some((cert_pem, key_pem)))
    }

    fn init(tls: Option<(&str, &str)>) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("kubedojo-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the test database directory");
        }
        let out = as_server_user(&bin, "initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = match tls {
            // A free loopback port (a small race with other processes is acceptable).
            Some((cert, key)) => {
                let data = dir.path().join("data");
                std::fs::write(data.join("server.crt"), cert).unwrap();
                std::fs::write(data.join("server.key"), key).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    data.join("server.key"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
                if is_root() {
                    let status = Command::new("chown")
                        .args(["nobody:nogroup"])
                        .arg(data.join("server.crt"))
                        .arg(data.join("server.key"))
                        .status()
                        .unwrap();
                    assert!(status.success(), "chown of the server certificate");
                }
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            }
            // A port number only names the socket file; there is no TCP listener.
            None => 20000 + (std::process::id() % 20000) as u16,
        };
        let mut pg = TestPostgres {
            dir,
            bin,
            child: None,
            port,
            tls: tls.is_some(),
        };
        pg.start_server();
        pg
    }

    fn start_server(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut command = as_server_user(&self.bin, "postgres");
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()]);
        if self.tls {
            command.args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]);
        } else {
            command.args(["-c", "listen_addresses="]);
        }
        let child = command
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let socket = self.dir.path().join(format!(".s.PGSQL.{}", self.port));
        loop {
            if socket.exists() && self.psql_ok("SELECT 1") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The directory holding the socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A libpq key/value DSN for database `postgres` as user `postgres`.
    pub fn dsn(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// A key/value DSN over TCP to `host` (which must resolve to 127.0.0.1; only for a
    /// server started with [`TestPostgres::start_tls`]).
    pub fn tcp_dsn(&self, host: &str) -> String {
        assert!(self.tls, "this server has no TCP listener");
        format!(
            "host={host} port={} user=postgres dbname=postgres",
            self.port
        )
    }

    fn psql_ok(&self, sql: &str) -> bool {
        Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.dsn(),
                "-c",
                sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs SQL through `psql` (as an operator would) and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.dsn(),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// True when `sql` fails in psql.
    pub fn psql_fails(&self, sql: &str) -> bool {
        !Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.dsn(),
                "-c",
                sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT = fast shutdown: disconnect clients, checkpoint, exit.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// Starts a stopped server again.
    pub fn resume(&mut self) {
        self.start_server();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
