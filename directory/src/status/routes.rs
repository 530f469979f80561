//! The status page's HTTP side: binding, the routes, the token check, response headers.
//! What the routes serve is [`super::snapshot`], rendered by [`super::page`] and
//! [`super::prometheus`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::snapshot::Snapshot;
use super::{page, prometheus};
use crate::limits::ConnLimits;
use crate::state::Shared;

/// The running HTTP server.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Binds `listen` (TCP) and serves. `token`: the configured one; when `None` and the
    /// address is not loopback, a random one is made (see [`StatusServer::token`]).
    pub async fn start(
        shared: Arc<Shared>,
        limits: ConnLimits,
        listen: SocketAddr,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let token = token_for(listen, token);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot serve the status page on {listen}"))?;
        let addr = listener.local_addr()?;
        let app = router(Arc::new(Page {
            shared,
            limits,
            token: token.clone(),
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                tracing::warn!("status page stopped: {e}");
            }
        });
        tracing::info!(%addr, token = token.is_some(), "status page serving");
        Ok(Self {
            addr,
            token,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on (with the real port when started on 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token the page asks for, if it asks for one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Stops serving (requests in progress finish, bounded).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_err()
        {
            tracing::warn!("status page did not stop in time");
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The token a page on `listen` asks for: the configured one; else, off loopback, a
/// random one (128 bits, hex); else none.
fn token_for(listen: SocketAddr, configured: Option<String>) -> Option<String> {
    configured.or_else(|| {
        (!listen.ip().is_loopback()).then(|| {
            let bytes: [u8; 16] = rand::random();
            proto::hex::encode(&bytes)
        })
    })
}

/// What every handler reads.
struct Page {
    shared: Arc<Shared>,
    limits: ConnLimits,
    token: Option<String>,
}

/// The routes.
fn router(page: Arc<Page>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/status.json", get(status_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(page)
}

impl Page {
    /// `None` when the request may see the page; else the refusal.
    fn refuse(&self, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
        let expected = self.token.as_deref()?;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let query = uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "token")
                .map(|(_, v)| percent_decode(v))
        });
        let given = bearer.or(query);
        if given.is_some_and(|g| same(g.as_bytes(), expected.as_bytes())) {
            return None;
        }
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "this status page needs its token: add ?token=TOKEN to the address \
             (`directory serve` prints it, or it is status_token in the configuration)\n",
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"natter directory\""),
        );
        Some(response)
    }
}

async fn index(State(page): State<Arc<Page>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = page.refuse(&headers, &uri) {
        return refusal;
    }
    let snapshot = Snapshot::gather(&page.shared, &page.limits).await;
    no_store(Html(page::render(&snapshot)).into_response())
}

async fn status_json(State(page): State<Arc<Page>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = page.refuse(&headers, &uri) {
        return refusal;
    }
    let snapshot = Snapshot::gather(&page.shared, &page.limits).await;
    match serde_json::to_string(&snapshot) {
        Ok(json) => no_store(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(page): State<Arc<Page>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = page.refuse(&headers, &uri) {
        return refusal;
    }
    let snapshot = Snapshot::gather(&page.shared, &page.limits).await;
    let text = prometheus::render(&snapshot, &page.shared.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(page): State<Arc<Page>>) -> Response {
    if page.shared.shutdown.is_signalled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `%XX` escapes and `+` in a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_off_loopback_always_has_a_token() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "192.0.2.10:8080".parse().unwrap();
        assert_eq!(token_for(local, None), None);
        assert_eq!(token_for(local6, None), None);
        let made = token_for(anywhere, None).unwrap();
        assert_eq!(made.len(), 32);
        assert_ne!(token_for(lan, None), Some(made));
        let set = Some("configured-token-123".to_string());
        assert_eq!(token_for(local, set.clone()), set);
        assert_eq!(token_for(lan, set.clone()), set);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("a%20b+c%2F"), "a b c/");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
