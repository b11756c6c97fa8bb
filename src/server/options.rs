//! Secure-serving limits and shutdown flags, named and defaulted as k8s.io/apiserver's
//! (`--request-timeout`, `--max-requests-inflight`, `--http2-max-streams-per-connection`,
//! `--shutdown-delay-duration`, ...), plus a connection cap and idle timeout.

use std::time::Duration;

use clap::{ArgAction, Args};

/// Largest request head (request line + headers) accepted: 1 MiB, as Go's
/// `http.Server.MaxHeaderBytes` in k8s.io/apiserver.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// How the HTTPS server protects itself and shuts down.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct ServingOptions {
    /// Longest a non-long-running request (anything but a watch) may take; it is then
    /// answered 504 Timeout.
    #[arg(long, default_value = "1m", value_parser = crate::config::parse_duration_or_zero)]
    pub request_timeout: Duration,
    /// Most non-long-running requests served at once (0: no limit); beyond it 429
    /// TooManyRequests with Retry-After. Watches and health checks are exempt.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// HTTP/2 streams a client may open on one connection (0: 1000, as kube-apiserver
    /// sets for aggregated servers).
    #[arg(long, default_value_t = 0)]
    pub http2_max_streams_per_connection: u32,
    /// Serve HTTP/1.1 only (no h2 in ALPN).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_parser = crate::config::parse_go_bool)]
    pub disable_http2_serving: bool,
    /// Bind with SO_REUSEADDR (always set on Unix, as Go's listeners do).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_parser = crate::config::parse_go_bool)]
    pub permit_address_sharing: bool,
    /// Bind with SO_REUSEPORT (several processes on one address and port).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_parser = crate::config::parse_go_bool)]
    pub permit_port_sharing: bool,
    /// Most open client connections (0: no limit); further connections wait in the
    /// listen backlog.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Close a connection with no request in flight after this long without traffic
    /// (HTTP/1.1 keep-alive and HTTP/2 alike; k8s.io/apiserver uses 90s).
    #[arg(long, default_value = "90s", value_parser = crate::config::parse_duration)]
    pub idle_connection_timeout: Duration,
    /// Longest a client may take to send a request head (slowloris; k8s.io/apiserver's
    /// ReadHeaderTimeout is 32s).
    #[arg(long, default_value = "32s", value_parser = crate::config::parse_duration)]
    pub read_header_timeout: Duration,
    /// After SIGTERM, keep serving this long with /readyz failing (so the aggregator
    /// and Service endpoints drop this replica) before closing the listener.
    #[arg(long, default_value = "0s", value_parser = crate::config::parse_duration_or_zero)]
    pub shutdown_delay_duration: Duration,
    /// After the listener closes, longest in-flight requests may take to finish
    /// (watches are ended at once).
    #[arg(long, default_value = "20s", value_parser = crate::config::parse_duration)]
    pub shutdown_drain_timeout: Duration,
    /// Probability (0 to 0.02, as kube-apiserver's flag) that a request ends its connection
    /// after the response: HTTP/2 gets a graceful GOAWAY (in-flight streams finish), HTTP/1.1
    /// `Connection: close`. The client reconnects, so kube-aggregator's one connection per
    /// Service moves between the replicas over time. 0 (the default) never does.
    #[arg(long, default_value = "0", value_parser = parse_goaway_chance)]
    pub goaway_chance: GoawayChance,
    /// TLS cipher suites (Go / IANA names, comma separated; default: rustls's safe set).
    /// TLS 1.3 suites stay enabled unless some are listed, as in Go.
    #[arg(long, value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
}

impl Default for ServingOptions {
    fn default() -> Self {
        ServingOptions {
            request_timeout: Duration::from_secs(60),
            max_requests_inflight: 400,
            http2_max_streams_per_connection: 0,
            disable_http2_serving: false,
            permit_address_sharing: false,
            permit_port_sharing: false,
            max_connections: 10_000,
            idle_connection_timeout: Duration::from_secs(90),
            read_header_timeout: Duration::from_secs(32),
            shutdown_delay_duration: Duration::ZERO,
            shutdown_drain_timeout: Duration::from_secs(20),
            tls_cipher_suites: Vec::new(),
            goaway_chance: GoawayChance::NEVER,
        }
    }
}

impl ServingOptions {
    /// HTTP/2 max concurrent streams per connection.
    pub fn http2_max_streams(&self) -> u32 {
        match self.http2_max_streams_per_connection {
            0 => 1000,
            n => n,
        }
    }

    /// Binds the listener with the requested socket sharing options.
    pub fn bind(&self, addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // Go's listeners (kube-apiserver's, metrics-server's) always set SO_REUSEADDR on Unix,
        // so a restarted process (a container restart keeps the pod's address) binds at once
        // although connections the old one closed sit in TIME_WAIT; the kernel only allows it
        // when the old and the new listener both set it. --permit-address-sharing adds nothing
        // more on Linux, as upstream.
        socket.set_reuseaddr(cfg!(unix) || self.permit_address_sharing)?;
        #[cfg(unix)]
        socket.set_reuseport(self.permit_port_sharing)?;
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }
}

/// A validated `--goaway-chance`: a probability in `[0, 0.02]`, never NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoawayChance(f64);

// Never NaN (parse_goaway_chance refuses it), so equality is total.
impl Eq for GoawayChance {}

impl GoawayChance {
    /// Never sends a GOAWAY.
    pub const NEVER: GoawayChance = GoawayChance(0.0);

    /// The probability.
    pub fn get(self) -> f64 {
        self.0
    }

    /// One draw: should this request end its connection?
    pub fn roll(self) -> bool {
        self.0 > 0.0 && rand::random::<f64>() < self.0
    }
}

/// Parses `--goaway-chance` (kube-apiserver allows 0 to 0.02).
pub fn parse_goaway_chance(s: &str) -> Result<GoawayChance, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("--goaway-chance: {s:?} is not a number"))?;
    if !(0.0..=0.02).contains(&v) {
        return Err(format!(
            "--goaway-chance: {s} is out of range; it must be between 0 and 0.02 (2%)"
        ));
    }
    Ok(GoawayChance(v))
}

/// Maps Go / IANA cipher suite names to rustls's (ring) suites. Names rustls does
/// not implement (CBC, RC4, 3DES, RSA key exchange) are an error naming them.
pub fn cipher_suites(names: &[String]) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut tls13 = Vec::new();
    let mut tls12 = Vec::new();
    let mut unknown = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match n {
            "TLS_AES_128_GCM_SHA256" => tls13.push(cs::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_256_GCM_SHA384" => tls13.push(cs::TLS13_AES_256_GCM_SHA384),
            "TLS_CHACHA20_POLY1305_SHA256" => tls13.push(cs::TLS13_CHACHA20_POLY1305_SHA256),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                tls12.push(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
            }
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                tls12.push(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
            }
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
            | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
                tls12.push(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
            }
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
                tls12.push(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
            }
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
                tls12.push(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
            }
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
            | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
                tls12.push(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
            }
            other => unknown.push(other.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "--tls-cipher-suites: not supported (rustls implements only AEAD suites with ECDHE): {}",
            unknown.join(", ")
        ));
    }
    if tls13.is_empty() {
        // Go always enables every TLS 1.3 suite; only TLS 1.2 suites are configurable there.
        tls13 = rustls::crypto::ring::DEFAULT_CIPHER_SUITES
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
    }
    tls13.extend(tls12);
    Ok(tls13)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_map_go_names() {
        let s = cipher_suites(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()]).unwrap();
        assert_eq!(s.len(), 4, "3 TLS 1.3 suites + the one TLS 1.2 suite");
        let e = cipher_suites(&["TLS_RSA_WITH_AES_128_CBC_SHA".into()]).unwrap_err();
        assert!(e.contains("TLS_RSA_WITH_AES_128_CBC_SHA"), "{e}");
        let s = cipher_suites(&["TLS_AES_256_GCM_SHA384".into()]).unwrap();
        assert_eq!(s.len(), 1);
    }

    /// A restarted server (a container restart keeps the pod's address) must bind its port
    /// while connections the old process closed are in TIME_WAIT, as Go's listeners do.
    #[tokio::test]
    async fn rebinds_a_port_whose_closed_connections_are_in_time_wait() {
        use tokio::io::AsyncReadExt;
        let o = ServingOptions::default();
        let listener = o.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        // The server closes first (as a drain does), so its side ends in TIME_WAIT.
        drop(server_side);
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        drop(client);
        drop(listener);
        tokio::time::sleep(Duration::from_millis(50)).await;
        o.bind(addr)
            .expect("bind while the old listener's connection is in TIME_WAIT");
    }

    #[test]
    fn goaway_chance_is_a_probability_up_to_two_percent() {
        assert_eq!(parse_goaway_chance("0").unwrap(), GoawayChance::NEVER);
        assert_eq!(parse_goaway_chance("0.02").unwrap().get(), 0.02);
        assert_eq!(parse_goaway_chance("0.001").unwrap().get(), 0.001);
        for bad in ["0.021", "-0.01", "1", "NaN", "x", ""] {
            let e = parse_goaway_chance(bad).unwrap_err();
            assert!(e.contains("--goaway-chance"), "{bad}: {e}");
        }
        assert!(!GoawayChance::NEVER.roll());
        let hits = (0..100_000)
            .filter(|_| parse_goaway_chance("0.02").unwrap().roll())
            .count();
        assert!((1_500..2_500).contains(&hits), "{hits} of 100000 at 2%");
    }

    #[test]
    fn streams_default_to_1000() {
        let o = ServingOptions::default();
        assert_eq!(o.http2_max_streams(), 1000);
        assert_eq!(o.shutdown_delay_duration, Duration::ZERO);
    }
}
