//! The HTTPS server: listener, TLS (rustls, ring), HTTP/1.1 and HTTP/2 by ALPN
//! (hyper-util's auto builder), graceful shutdown, and the request pipeline.

pub mod app;
pub mod audit;
pub mod health;
pub mod lifecycle;
pub mod limits;
pub mod options;
pub mod pki;
pub mod pprof;
pub mod sni;
pub mod tls;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use app::{App, ConnInfo, ExtraRoutes};
use limits::{ConnActivity, TrackedIo};
use options::{MAX_HEADER_BYTES, ServingOptions};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown` is cancelled, then drains
/// in-flight requests, with the default [`ServingOptions`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    shutdown: CancellationToken,
) {
    serve_with(listener, tls, app, shutdown, &ServingOptions::default()).await
}

/// Accepts connections until `shutdown` is cancelled; then closes the listener, ends
/// watches, lets every connection finish its in-flight requests (HTTP/2 GOAWAY,
/// HTTP/1.1 close after the response) and returns when all are done or after
/// `--shutdown-drain-timeout`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    shutdown: CancellationToken,
    opts: &ServingOptions,
) {
    let tls = if opts.disable_http2_serving {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    } else {
        tls
    };
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(opts.read_header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(opts.http2_max_streams())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let connections = (opts.max_connections > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(opts.max_connections)));
    let idle = opts.idle_connection_timeout;
    let goaway_chance = opts.goaway_chance;
    // Every connection task holds a clone; draining ends when all are dropped.
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let permit = match &connections {
            Some(sem) => tokio::select! {
                _ = shutdown.cancelled() => break,
                p = sem.clone().acquire_owned() => Some(p.expect("never closed")),
            },
            None => None,
        };
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _alive = alive;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer_certificates = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|certs| Arc::new(certs.iter().map(|c| c.clone().into_owned()).collect()));
            let conn = ConnInfo {
                remote: Some(remote),
                peer_certificates,
            };
            let activity = ConnActivity::new();
            let per_request = activity.clone();
            // --goaway-chance: a request that draws it asks its connection to end gracefully.
            let goaway = Arc::new(tokio::sync::Notify::new());
            let goaway_request = goaway.clone();
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let conn = conn.clone();
                let active = per_request.begin();
                let goaway = goaway_request.clone();
                let version = req.version();
                async move {
                    let mut resp = if app.audit_wants_request_bodies()
                        && audit::body::may_have_body(req.method())
                    {
                        let timeout = app.limits().request_timeout;
                        let req = audit::body::read_request(req, timeout).await;
                        app.handle_on(req, &conn, Some(active)).await
                    } else {
                        app.handle_on(req, &conn, Some(active)).await
                    };
                    if goaway_chance.roll() {
                        if version == hyper::Version::HTTP_2 {
                            // GOAWAY once this response is under way; the client's next
                            // request goes on a new connection.
                            goaway.notify_one();
                        } else {
                            resp.headers_mut().insert(
                                hyper::header::CONNECTION,
                                hyper::header::HeaderValue::from_static("close"),
                            );
                        }
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = TokioIo::new(TrackedIo::new(tls, activity.clone()));
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%remote, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = goaway.notified(), if !closing => {
                        tracing::debug!(%remote, "goaway-chance: ending the connection gracefully");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = tokio::time::sleep(tick), if !closing => {
                        if activity.idle_for(idle) {
                            tracing::debug!(%remote, "closing an idle connection");
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    drop(alive_tx);
    // Watches end now (cleanly, end of stream); other requests finish.
    app.limits().closing.cancel();
    tokio::select! {
        _ = alive_rx.recv() => {}
        _ = tokio::time::sleep(opts.shutdown_drain_timeout) => {
            tracing::warn!("shutdown: some connections did not finish in time");
        }
    }
}
