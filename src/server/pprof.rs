//! `/debug/pprof/` (`--profiling`, on by default as in metrics-server and
//! k8s.io/apiserver, whose `routes.Profiling` installs Go's net/http/pprof handlers).
//! They sit behind the same authentication and authorization as every other
//! non-resource path (a SubjectAccessReview for `get` on `/debug/pprof/profile`).
//!
//! What is real here: the CPU profile, `/debug/pprof/profile?seconds=N` (default 30, as
//! Go's), sampled at 100 Hz by SIGPROF (the `pprof` crate) and written as Go writes it:
//! gzip-compressed `perftools.profiles.Profile` protobuf, so `go tool pprof` reads ours
//! as it reads metrics-server's. Also `/debug/pprof/cmdline` and the index. Go's other
//! profiles (heap, allocs, goroutine, block, mutex, threadcreate, trace) have no honest
//! equivalent (the system allocator keeps no allocation sites; there are no goroutines)
//! and answer Go's 404 `Unknown profile`.

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use pprof::protos::Message;

use crate::api::query::Query;
use crate::api::request_info::RequestInfo;
use crate::api::response::{self, Body};

use super::app::ExtraRoutes;

/// Samples per second, as Go's runtime/pprof (`SetCPUProfileRate(100)`).
pub const FREQUENCY_HZ: i32 = 100;
/// Profile length without `seconds`, as Go's handler.
pub const DEFAULT_SECONDS: u64 = 30;

/// The `/debug/pprof/` routes.
pub struct Profiling {
    /// A profile must end before the per-request timeout (Go refuses a duration over its
    /// server's WriteTimeout with 400, and k8s.io/apiserver's request timeout would cut it).
    max: Duration,
}

impl Profiling {
    /// Routes whose CPU profiles are shorter than `max` (the request timeout).
    pub fn new(max: Duration) -> Self {
        Profiling { max }
    }

    fn profile(&self, query: &Query) -> Response<Body> {
        // Go: `sec, err := strconv.ParseInt(r.FormValue("seconds"), 10, 64); if sec <= 0 ||
        // err != nil { sec = 30 }`.
        let seconds = query
            .get("seconds")
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_SECONDS, |s| s as u64);
        let duration = Duration::from_secs(seconds);
        if duration >= self.max {
            return plain(
                StatusCode::BAD_REQUEST,
                "profile duration exceeds server's WriteTimeout\n".into(),
            );
        }
        // The profiler runs on its own thread: it starts there (its guard is not Send),
        // says whether it could, sleeps, then hands the encoded profile to the body.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (data_tx, data_rx) = tokio::sync::oneshot::channel::<Result<Vec<u8>, String>>();
        let spawned = std::thread::Builder::new()
            .name("pprof-cpu".into())
            .spawn(move || {
                let guard = match pprof::ProfilerGuardBuilder::default()
                    .frequency(FREQUENCY_HZ)
                    .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                    .build()
                {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                std::thread::sleep(duration);
                let encoded = guard
                    .report()
                    .build()
                    .and_then(|r| r.pprof())
                    .map_err(|e| e.to_string())
                    .and_then(|p| gzip(&p.encode_to_vec()).map_err(|e| e.to_string()));
                drop(guard);
                let _ = data_tx.send(encoded);
            });
        if let Err(e) = spawned {
            return could_not_start(&e.to_string());
        }
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return could_not_start(&e),
            Err(_) => return could_not_start("the profiler thread ended"),
        }
        // Headers now, the profile when it is done (as Go's handler, which writes after
        // StopCPUProfile); a failure after the start can only cut the body short.
        let body = BodyExt::boxed(StreamBody::new(futures::stream::once(data_rx.map(
            |r| match r {
                Ok(Ok(bytes)) => Ok::<_, Infallible>(Frame::data(Bytes::from(bytes))),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "CPU profile could not be encoded");
                    Ok(Frame::data(Bytes::new()))
                }
                Err(_) => Ok(Frame::data(Bytes::new())),
            },
        ))));
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"profile\""),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

impl ExtraRoutes for Profiling {
    fn handle(
        &self,
        info: &RequestInfo,
        query: &Query,
        _accept: Option<&str>,
    ) -> Option<Response<Body>> {
        let rest = info.path.strip_prefix("/debug/pprof")?;
        Some(match rest {
            "" => {
                let mut r = plain(
                    StatusCode::MOVED_PERMANENTLY,
                    "<a href=\"/debug/pprof/\">Moved Permanently</a>.\n".into(),
                );
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/debug/pprof/"));
                r
            }
            "/" => {
                let mut r = response::text(StatusCode::OK, INDEX);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            "/profile" => self.profile(query),
            "/cmdline" => {
                let args: Vec<String> = std::env::args().collect();
                plain(StatusCode::OK, args.join("\0"))
            }
            other => plain(
                StatusCode::NOT_FOUND,
                format!(
                    "Unknown profile: {}\n",
                    other.trim_start_matches('/').trim_end_matches('/')
                ),
            ),
        })
    }
}

const INDEX: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n<br>\n\
<p>Set debug=1 as a query parameter to export in legacy text format</p>\n<br>\n\
Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\
<tr><td></td><td><a href='cmdline'>cmdline</a></td></tr>\n\
<tr><td></td><td><a href='profile'>profile</a></td></tr>\n</table>\n\
<p>\n<ul>\n<li><div class=profile-name>cmdline: </div> The command line invocation of the current program</li>\n\
<li><div class=profile-name>profile: </div> CPU profile. You can specify the duration in the seconds GET parameter. \
After you get the profile file, use the go tool pprof command to investigate the profile.</li>\n</ul>\n\
</p>\n<p>Heap, goroutine, block, mutex and trace profiles are Go runtime features without an equivalent here.</p>\n\
</body>\n</html>\n";

/// A `text/plain` answer as Go's `http.Error` writes it.
fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = response::text(status, text);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Go's answer when `StartCPUProfile` fails (one CPU profile at a time).
fn could_not_start(why: &str) -> Response<Body> {
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Could not enable CPU profiling: {why}\n"),
    )
}

fn gzip(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(raw)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str) -> RequestInfo {
        RequestInfo::new(&http::Method::GET, path, &Query::parse(None))
    }

    async fn body(r: Response<Body>) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn other_go_profiles_are_unknown_and_long_profiles_refused() {
        let p = Profiling::new(Duration::from_secs(60));
        let q = Query::parse(None);
        for (path, code) in [
            ("/debug/pprof/heap", 404),
            ("/debug/pprof/goroutine", 404),
            ("/debug/pprof/", 200),
            ("/debug/pprof", 301),
            ("/debug/pprof/cmdline", 200),
        ] {
            let r = p.handle(&info(path), &q, None).unwrap();
            assert_eq!(r.status().as_u16(), code, "{path}");
        }
        let r = p.handle(&info("/debug/pprof/heap"), &q, None).unwrap();
        assert_eq!(body(r).await, b"Unknown profile: heap\n");
        assert!(p.handle(&info("/metrics"), &q, None).is_none());
        let q = Query::parse(Some("seconds=60"));
        let r = p.handle(&info("/debug/pprof/profile"), &q, None).unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
