//! The status page, `/metrics` and `/healthz`: what the directory is doing, over HTTP
//! (axum), for the operator and for monitoring.
//!
//! | path           | what                                                         |
//! |----------------|--------------------------------------------------------------|
//! | `/`            | HTML page; its inline script refreshes it from `/status.json` |
//! | `/status.json` | the same figures as JSON ([`Snapshot`])                      |
//! | `/metrics`     | the counters in the Prometheus text format (version 0.0.4)   |
//! | `/healthz`     | `200 ok` while the QUIC listener runs, `503` once stopping   |
//!
//! **Access.** The page shows who is online, so it is not for everyone: bound to a
//! loopback address it is open to local users (like the data directory's owner); bound
//! anywhere else it needs a token, the configured `status_token` or, when none is set,
//! one made up at start and printed by `directory serve`. A configured token is required
//! on loopback too. The token goes in an `Authorization: Bearer TOKEN` header (Prometheus'
//! `authorization` setting) or a `?token=TOKEN` query (a browser; the page passes it on to
//! its refreshes). `/healthz` tells nothing and needs no token.
//!
//! Nothing here blocks the directory: every figure is an atomic or a short lock, except
//! the locked-account count, which lists accounts from the store (its own thread).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use proto::message::OnlineUser;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::ADMIN_LOCK_THRESHOLD;
use crate::clock::{format_utc, unix_now};
use crate::cluster::InstanceStatus;
use crate::limits::ConnLimits;
use crate::metrics::Metrics;
use crate::state::Shared;

/// How often the page refreshes itself, in milliseconds.
const REFRESH_MS: u64 = 2000;

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
            bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// One locked account.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockedAccount {
    pub name: String,
    /// Locked by an administrator (until unlocked), rather than after failed logins.
    pub by_admin: bool,
    /// Seconds until a lockout after failed logins lifts (`None` when by an admin).
    pub secs_left: Option<u64>,
}

/// Everything the page shows, as `/status.json` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    /// Unix time the directory started, and the same as `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_at: i64,
    pub started_at_utc: String,
    pub uptime_secs: u64,
    /// Logged-in users, sorted by name.
    pub online: Vec<OnlineUser>,
    pub online_count: usize,
    /// Open QUIC connections (logged in or not).
    pub connections: usize,
    /// Of those, the ones not logged in yet (see [`crate::limits`]).
    pub connections_anonymous: usize,
    pub logins_last_hour: u64,
    pub login_failures_last_hour: u64,
    pub lookups_total: u64,
    pub lookups_per_sec: f64,
    /// Accounts in the store (`None` if the store could not be read).
    pub accounts: Option<usize>,
    pub locked_accounts: Vec<LockedAccount>,
    pub relay_sessions: u64,
    pub relay_bytes: u64,
    /// Whether the QUIC listener runs (false once shutdown has begun).
    pub listening: bool,
    /// With several instances on one database: this one, and all that run.
    pub cluster: Option<ClusterSnapshot>,
}

/// The instances of the service, as this one sees them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    /// This instance's id.
    pub instance: String,
    pub instances: Vec<InstanceStatus>,
}

impl Page {
    async fn snapshot(&self) -> Snapshot {
        let shared = &self.shared;
        let m = &shared.metrics;
        let now = unix_now();
        let (accounts, locked_accounts) = match shared.store.list_accounts().await {
            Ok(list) => {
                let locked = list
                    .iter()
                    .filter_map(|a| {
                        let secs = shared.config.lockout.locked_for(&a.lock, now)?;
                        let by_admin = secs > ADMIN_LOCK_THRESHOLD;
                        Some(LockedAccount {
                            name: a.name.clone(),
                            by_admin,
                            secs_left: (!by_admin).then_some(secs),
                        })
                    })
                    .collect();
                (Some(list.len()), locked)
            }
            Err(e) => {
                tracing::warn!("status page: cannot list accounts: {e}");
                (None, Vec::new())
            }
        };
        let online = shared.presence.list();
        let cluster = match shared.presence.cluster() {
            Some(c) => Some(ClusterSnapshot {
                instance: c.instance().to_string(),
                instances: c.instances().await,
            }),
            None => None,
        };
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            started_at: m.started_unix(),
            started_at_utc: format_utc(m.started_unix()),
            uptime_secs: m.uptime_secs(),
            online_count: online.len(),
            online,
            connections: self.limits.open(),
            connections_anonymous: self.limits.anonymous(),
            logins_last_hour: m.logins_last_hour(),
            login_failures_last_hour: m.failures_last_hour(),
            lookups_total: Metrics::get(&m.lookups),
            lookups_per_sec: m.lookups_per_sec(),
            accounts,
            locked_accounts,
            relay_sessions: Metrics::get(&m.relay_sessions),
            relay_bytes: Metrics::get(&m.relay_bytes),
            listening: !shared.shutdown.is_signalled(),
            cluster,
        }
    }

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
    let snapshot = page.snapshot().await;
    no_store(Html(render_html(&snapshot)).into_response())
}

async fn status_json(State(page): State<Arc<Page>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = page.refuse(&headers, &uri) {
        return refusal;
    }
    let snapshot = page.snapshot().await;
    match serde_json::to_string(&snapshot) {
        Ok(json) => no_store(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(page): State<Arc<Page>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refusal) = page.refuse(&headers, &uri) {
        return refusal;
    }
    let snapshot = page.snapshot().await;
    let text = render_prometheus(&snapshot, &page.shared.metrics);
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

/// The counters in the Prometheus text exposition format.
pub fn render_prometheus(s: &Snapshot, m: &Metrics) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    let count = |c: &std::sync::atomic::AtomicU64| Metrics::get(c).to_string();
    metric(
        "natter_start_time_seconds",
        "gauge",
        "Unix time the directory started.",
        s.started_at.to_string(),
    );
    metric(
        "natter_uptime_seconds",
        "gauge",
        "Seconds since the directory started.",
        s.uptime_secs.to_string(),
    );
    metric(
        "natter_users_online",
        "gauge",
        "Users logged in now.",
        s.online_count.to_string(),
    );
    metric(
        "natter_instances",
        "gauge",
        "Directory instances running on the shared database (1: this one, alone).",
        s.cluster
            .as_ref()
            .map_or(1, |c| c.instances.len())
            .to_string(),
    );
    metric(
        "natter_connections_open",
        "gauge",
        "Open QUIC connections, logged in or not.",
        s.connections.to_string(),
    );
    metric(
        "natter_connections_anonymous",
        "gauge",
        "Open QUIC connections not logged in yet.",
        s.connections_anonymous.to_string(),
    );
    if let Some(accounts) = s.accounts {
        metric(
            "natter_accounts",
            "gauge",
            "Accounts in the store.",
            accounts.to_string(),
        );
    }
    metric(
        "natter_accounts_locked",
        "gauge",
        "Accounts locked now (after failed logins or by an administrator).",
        s.locked_accounts.len().to_string(),
    );
    metric(
        "natter_logins_total",
        "counter",
        "Password logins that succeeded.",
        count(&m.logins),
    );
    metric(
        "natter_login_failures_total",
        "counter",
        "Password logins refused.",
        count(&m.login_failures),
    );
    metric(
        "natter_resumes_total",
        "counter",
        "Ticket logins that succeeded.",
        count(&m.resumes),
    );
    metric(
        "natter_resume_failures_total",
        "counter",
        "Ticket logins refused.",
        count(&m.resume_failures),
    );
    metric(
        "natter_registrations_total",
        "counter",
        "Accounts created by peers.",
        count(&m.registrations),
    );
    metric(
        "natter_lockouts_total",
        "counter",
        "Accounts locked after failed logins.",
        count(&m.lockouts),
    );
    metric(
        "natter_lookups_total",
        "counter",
        "Lookups answered.",
        count(&m.lookups),
    );
    metric(
        "natter_lookups_found_total",
        "counter",
        "Lookups that found the user online.",
        count(&m.lookups_found),
    );
    metric(
        "natter_admin_requests_total",
        "counter",
        "Administrator requests carried out.",
        count(&m.admin_requests),
    );
    metric(
        "natter_admin_refused_total",
        "counter",
        "Administrator requests refused (not permitted).",
        count(&m.admin_refused),
    );
    metric(
        "natter_anonymous_refused_total",
        "counter",
        "Requests refused for not being logged in (counted, not audited one by one).",
        count(&m.anonymous_refused),
    );
    metric(
        "natter_logins_last_hour",
        "gauge",
        "Logins (password and ticket) in the last hour.",
        s.logins_last_hour.to_string(),
    );
    metric(
        "natter_login_failures_last_hour",
        "gauge",
        "Failed logins (password and ticket) in the last hour.",
        s.login_failures_last_hour.to_string(),
    );
    metric(
        "natter_lookups_per_second",
        "gauge",
        "Lookups per second over the last 10 seconds.",
        format!("{}", s.lookups_per_sec),
    );
    metric(
        "natter_relay_sessions",
        "gauge",
        "Relay sessions open now.",
        s.relay_sessions.to_string(),
    );
    metric(
        "natter_relay_bytes_total",
        "counter",
        "Bytes relayed.",
        s.relay_bytes.to_string(),
    );
    out.push_str(&format!(
        "# HELP natter_build_info The directory's version.\n# TYPE natter_build_info gauge\nnatter_build_info{{version=\"{}\"}} 1\n",
        s.version
    ));
    out
}

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as "3 d 4 h", "5 h 6 min", "7 min", "8 s".
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        s => format!("{} d {} h", s / 86_400, s / 3600 % 24),
    }
}

/// Bytes as "1.5 MiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn locked_label(l: &LockedAccount) -> String {
    match l.secs_left {
        Some(secs) => format!("{} (for {})", l.name, human_secs(secs)),
        None => format!("{} (by an administrator)", l.name),
    }
}

/// The page, filled with `s` (so it shows everything without script too); its script
/// then refreshes every figure from `/status.json` in place.
fn render_html(s: &Snapshot) -> String {
    let users: String = if s.online.is_empty() {
        "<li class=\"none\">nobody</li>".into()
    } else {
        s.online
            .iter()
            .map(|u| {
                format!(
                    "<li><span class=\"name\">{}</span> <span class=\"since\">{}</span></li>",
                    esc(&u.user),
                    esc(&human_secs(u.online_secs))
                )
            })
            .collect()
    };
    let locked: String = if s.locked_accounts.is_empty() {
        "<li class=\"none\">none</li>".into()
    } else {
        s.locked_accounts
            .iter()
            .map(|l| format!("<li>{}</li>", esc(&locked_label(l))))
            .collect()
    };
    let (instances_count, instances_note, instances) = match &s.cluster {
        Some(c) => (
            c.instances.len(),
            "sharing one database",
            c.instances
                .iter()
                .map(|i| {
                    let name = i.relay_address.as_deref().unwrap_or(&i.id);
                    let this = if i.id == c.instance { "this one " } else { "" };
                    format!(
                        "<li><span class=\"name\">{}{}</span> <span class=\"since\">{} online · heartbeat {:.1} s ago</span></li>",
                        this,
                        esc(name),
                        i.users,
                        i.heartbeat_age_secs
                    )
                })
                .collect(),
        ),
        None => (1, "this one alone (SQLite)", String::new()),
    };
    PAGE.replace("{{version}}", &esc(s.version))
        .replace("{{instances_count}}", &instances_count.to_string())
        .replace("{{instances_note}}", instances_note)
        .replace("{{instances}}", &instances)
        .replace("{{started}}", &esc(&s.started_at_utc))
        .replace("{{uptime}}", &esc(&human_secs(s.uptime_secs)))
        .replace("{{online_count}}", &s.online_count.to_string())
        .replace("{{connections}}", &s.connections.to_string())
        .replace("{{users}}", &users)
        .replace("{{logins}}", &s.logins_last_hour.to_string())
        .replace("{{failures}}", &s.login_failures_last_hour.to_string())
        .replace("{{lookups}}", &s.lookups_total.to_string())
        .replace("{{lookups_rate}}", &format!("{:.1}", s.lookups_per_sec))
        .replace("{{locked_count}}", &s.locked_accounts.len().to_string())
        .replace("{{locked}}", &locked)
        .replace("{{relay_sessions}}", &s.relay_sessions.to_string())
        .replace("{{relay_bytes}}", &esc(&human_bytes(s.relay_bytes)))
        .replace(
            "{{state}}",
            if s.listening {
                "listening"
            } else {
                "shutting down"
            },
        )
        .replace("{{refresh_ms}}", &REFRESH_MS.to_string())
}

/// The page template. Values are filled in by [`render_html`] and kept current by the
/// script; element ids are what the script (and the tests) look for.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Natter directory status</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #2f6fed; --bad: #c0392b; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
         color: var(--fg); background: #f6f7f9; }
  header { background: #1d2330; color: #fff; padding: 18px 28px; display: flex; align-items: baseline; gap: 18px; }
  header h1 { margin: 0; font-size: 20px; font-weight: 600; }
  header .meta { color: #c8cdd8; font-size: 13px; }
  header .live { margin-left: auto; font-size: 13px; color: #9fe0b0; }
  header .live.stale { color: #ffb4a8; }
  main { padding: 22px 28px; display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 16px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
  section h2 { margin: 0 0 6px; font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; }
  .big { font-size: 30px; font-weight: 600; }
  .sub { color: var(--muted); font-size: 13px; }
  .wide { grid-column: span 2; }
  ul { list-style: none; margin: 6px 0 0; padding: 0; }
  li { padding: 4px 0; border-top: 1px solid var(--line); }
  li:first-child { border-top: 0; }
  li .since { color: var(--muted); font-size: 13px; float: right; }
  li.none { color: var(--muted); }
  #failures.nonzero { color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>Natter directory</h1>
  <span class="meta">version <span id="version">{{version}}</span> · up since <span id="started">{{started}}</span> (<span id="uptime">{{uptime}}</span>) · <span id="state">{{state}}</span></span>
  <span id="live" class="live">snapshot</span>
</header>
<main>
  <section class="wide">
    <h2>Connected users</h2>
    <div><span class="big" id="online-count">{{online_count}}</span> <span class="sub">online · <span id="connections">{{connections}}</span> connections</span></div>
    <ul id="users">{{users}}</ul>
  </section>
  <section>
    <h2>Logins, last hour</h2>
    <div class="big" id="logins">{{logins}}</div>
    <div class="sub"><span id="failures">{{failures}}</span> failed</div>
  </section>
  <section>
    <h2>Lookups</h2>
    <div class="big" id="lookups-rate">{{lookups_rate}}</div>
    <div class="sub">per second · <span id="lookups">{{lookups}}</span> in total</div>
  </section>
  <section>
    <h2>Locked accounts</h2>
    <div class="big" id="locked-count">{{locked_count}}</div>
    <ul id="locked">{{locked}}</ul>
  </section>
  <section>
    <h2>Relay</h2>
    <div class="big" id="relay-sessions">{{relay_sessions}}</div>
    <div class="sub">sessions · <span id="relay-bytes">{{relay_bytes}}</span> relayed</div>
  </section>
  <section>
    <h2>Instances</h2>
    <div class="big" id="instances-count">{{instances_count}}</div>
    <div class="sub" id="instances-note">{{instances_note}}</div>
    <ul id="instances">{{instances}}</ul>
  </section>
</main>
<script>
"use strict";
(function () {
  const REFRESH_MS = {{refresh_ms}};
  const $ = (id) => document.getElementById(id);
  const human = (s) => s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min"
    : s < 86400 ? Math.floor(s / 3600) + " h " + Math.floor(s / 60) % 60 + " min"
    : Math.floor(s / 86400) + " d " + Math.floor(s / 3600) % 24 + " h";
  const bytes = (b) => { const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; } return i ? b.toFixed(1) + " " + u[i] : b + " B"; };
  function list(el, items, empty) {
    el.replaceChildren();
    if (items.length === 0) { const li = document.createElement("li"); li.className = "none"; li.textContent = empty; el.appendChild(li); return; }
    for (const [name, extra] of items) {
      const li = document.createElement("li");
      const n = document.createElement("span"); n.className = "name"; n.textContent = name; li.appendChild(n);
      if (extra) { const x = document.createElement("span"); x.className = "since"; x.textContent = extra; li.append(" ", x); }
      el.appendChild(li);
    }
  }
  async function refresh() {
    try {
      const r = await fetch("status.json" + location.search, { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const s = await r.json();
      $("version").textContent = s.version;
      $("started").textContent = s.started_at_utc;
      $("uptime").textContent = human(s.uptime_secs);
      $("state").textContent = s.listening ? "listening" : "shutting down";
      $("online-count").textContent = s.online_count;
      $("connections").textContent = s.connections;
      list($("users"), s.online.map((u) => [u.user, human(u.online_secs)]), "nobody");
      $("logins").textContent = s.logins_last_hour;
      $("failures").textContent = s.login_failures_last_hour;
      $("failures").classList.toggle("nonzero", s.login_failures_last_hour > 0);
      $("lookups").textContent = s.lookups_total;
      $("lookups-rate").textContent = s.lookups_per_sec.toFixed(1);
      $("locked-count").textContent = s.locked_accounts.length;
      list($("locked"), s.locked_accounts.map((l) => [l.name, l.by_admin ? "by an administrator" : "for " + human(l.secs_left)]), "none");
      $("relay-sessions").textContent = s.relay_sessions;
      $("relay-bytes").textContent = bytes(s.relay_bytes);
      if (s.cluster) {
        $("instances-count").textContent = s.cluster.instances.length;
        $("instances-note").textContent = "sharing one database";
        list($("instances"), s.cluster.instances.map((i) => [
          (i.id === s.cluster.instance ? "this one " : "") + (i.relay_address || i.id),
          i.users + " online · heartbeat " + i.heartbeat_age_secs.toFixed(1) + " s ago"]), "none");
      }
      $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
      $("live").classList.remove("stale");
    } catch (e) {
      $("live").textContent = "not updating: " + e.message;
      $("live").classList.add("stale");
    }
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
</script>
</body>
</html>
"#;

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

    #[test]
    fn html_escapes_and_humans() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(human_secs(59), "59 s");
        assert_eq!(human_secs(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(human_secs(2 * 86_400 + 3600), "2 d 1 h");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
