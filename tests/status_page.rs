//! The status page as a person and a monitoring system see it: real peers log in and look
//! each other up through a real directory; the page, loaded in real headless Chromium,
//! shows them and a non-zero lookup count (and its script refreshes it); a screenshot is
//! written to `<target>/status-page.png`. `/metrics` parses as Prometheus text and its
//! counters move with traffic; `/healthz` answers while the directory runs; a token, when
//! set, is required.
//!
//! Without Chromium the browser part prints "skipped: chromium not installed" and passes,
//! unless NATTER_REQUIRE_EXTRAS=1 (CI), where that is a failure. `.ci/install-extras`
//! installs it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use peer::app::Start;
use peer::ui::Note;
use testkit::{PASSWORD, TestDirectory, TestPeer, http_get};
use tokio::net::TcpStream;
use tokio::time::timeout;

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Parses the Prometheus text exposition format strictly enough to catch a malformed
/// line: every sample named and typed, every value a number. Returns name → value
/// (labels dropped).
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let valid_name = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut values = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {line}");
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample: name value");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=\"v\"");
                    assert!(valid_name(k), "{line}");
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "{line}");
        assert!(types.contains_key(name), "sample before its TYPE: {line}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        values.insert(name.to_string(), value);
    }
    values
}

async fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics", &[]).await;
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body)
}

/// `chromium`, if installed.
fn chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.exists() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.exists())
    })
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
async fn run_chromium(chromium: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = timeout(CHROMIUM_TIMEOUT, cmd.output())
        .await
        .expect("chromium hung")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text inside the element with `id` (first occurrence; no nesting needed here).
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let open_end = start + dom[start..].find('>').unwrap() + 1;
    let tag = dom[..start].rfind('<').map(|i| &dom[i + 1..start]).unwrap();
    let tag = tag.split_whitespace().next().unwrap();
    let close = dom[open_end..]
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("#{id} not closed"));
    &dom[open_end..open_end + close]
}

/// The screenshot goes next to the build output: `<target>/status-page.png`.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .join("status-page.png")
}

#[tokio::test]
async fn the_status_page_shows_the_directory_at_work() {
    let dir = TestDirectory::start_with(|c| c.status = Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    dir.server.add_user("root", PASSWORD, true).await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let status = dir.server.status_addr().expect("status page on");
    assert_eq!(dir.server.status_token(), None, "loopback: no token");

    let (code, body) = http_get(status, "/healthz", &[]).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let before = metrics(status).await;
    assert_eq!(before["natter_users_online"], 0.0);

    // Two users log in; ali calls bianca (each looks the other up).
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect(
        "connected",
        |n| matches!(n, Note::Connected { peer, .. } if peer == "bianca"),
    )
    .await;
    bianca
        .expect(
            "connected",
            |n| matches!(n, Note::Connected { peer, .. } if peer == "ali"),
        )
        .await;

    let after = metrics(status).await;
    assert_eq!(after["natter_users_online"], 2.0);
    assert_eq!(
        after["natter_logins_total"],
        before["natter_logins_total"] + 2.0
    );
    assert!(after["natter_logins_last_hour"] >= 2.0);
    assert!(after["natter_lookups_total"] >= 1.0, "{after:?}");
    assert_eq!(after["natter_relay_bytes_total"], 0.0);
    // A failed login and another lookup move their counters.
    let wrong = testkit::options(
        &dir,
        tempfile::tempdir().unwrap().path(),
        "ali",
        "wrong password",
    );
    assert!(
        peer::login::login(&wrong, "127.0.0.1:0".parse().unwrap())
            .await
            .is_err()
    );
    ali.say("/connect nobody").await;
    ali.expect(
        "lookup answered",
        |n| matches!(n, Note::ConnectFailed { peer, .. } if peer == "nobody"),
    )
    .await;
    let later = metrics(status).await;
    assert_eq!(
        later["natter_login_failures_total"],
        after["natter_login_failures_total"] + 1.0
    );
    assert!(later["natter_lookups_total"] > after["natter_lookups_total"]);
    assert!(later["natter_uptime_seconds"] >= 0.0);

    // The JSON behind the page.
    let (code, json) = http_get(status, "/status.json", &[]).await;
    assert_eq!(code, 200);
    let snapshot: serde_json::Value = serde_json::from_str(&json).unwrap();
    let online: Vec<&str> = snapshot["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(online, ["ali", "bianca"]);
    assert!(snapshot["lookups_total"].as_u64().unwrap() >= 2);
    assert_eq!(snapshot["login_failures_last_hour"], 1);
    assert_eq!(snapshot["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(snapshot["listening"], true);

    // The page in a real browser.
    match chromium() {
        Some(chromium) => {
            let url = format!("http://{status}/");
            // Virtual time lets the page's script fetch and fill in before the DOM is
            // dumped.
            let dom = run_chromium(
                &chromium,
                &url,
                &["--virtual-time-budget=5000".into(), "--dump-dom".into()],
            )
            .await;
            let users = element(&dom, "users");
            assert!(
                users.contains(">ali<") && users.contains(">bianca<"),
                "users: {users}"
            );
            assert_eq!(element(&dom, "online-count"), "2");
            let lookups: u64 = element(&dom, "lookups").trim().parse().unwrap();
            assert!(lookups >= 2, "lookups shown: {lookups}");
            assert_eq!(element(&dom, "failures"), "1");
            assert!(
                element(&dom, "live").starts_with("live"),
                "the script did not refresh the page: {}",
                element(&dom, "live")
            );
            assert_eq!(element(&dom, "version"), env!("CARGO_PKG_VERSION"));

            let png = screenshot_path();
            let _ = std::fs::remove_file(&png);
            run_chromium(
                &chromium,
                &url,
                &[
                    "--virtual-time-budget=3000".into(),
                    "--window-size=1200,800".into(),
                    format!("--screenshot={}", png.display()),
                ],
            )
            .await;
            let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 5_000);
            println!("status page screenshot: {}", png.display());
        }
        None => {
            println!("skipped: chromium not installed");
            assert!(
                std::env::var("NATTER_REQUIRE_EXTRAS").as_deref() != Ok("1"),
                "chromium is required (NATTER_REQUIRE_EXTRAS=1): run .ci/install-extras"
            );
        }
    }

    // An administrator's /shutdown: /healthz turns 503 at once.
    let mut root = TestPeer::start(&dir, "root", Start::Idle).await.unwrap();
    root.say("/shutdown").await;
    root.expect(
        "acknowledged",
        |n| matches!(n, Note::Info(t) if t.contains("shutting down")),
    )
    .await;
    tokio::time::timeout(testkit::WAIT, dir.server.stopped())
        .await
        .unwrap();
    let (code, _) = http_get(status, "/healthz", &[]).await;
    assert_eq!(code, 503);
    let (_, json) = http_get(status, "/status.json", &[]).await;
    assert!(json.contains("\"listening\":false"), "{json}");
    dir.server.shutdown().await;
    assert!(
        TcpStream::connect(status).await.is_err(),
        "the status page stops with the directory"
    );
    for p in [ali, bianca, root] {
        p.kill();
    }
}

#[tokio::test]
async fn a_token_is_required_when_one_is_set() {
    const TOKEN: &str = "s3cret-status-token";
    let dir = TestDirectory::start_with(|c| {
        c.status = Some("127.0.0.1:0".parse().unwrap());
        c.status_token = Some(directory::config::Secret(TOKEN.into()));
    })
    .await
    .unwrap();
    let status = dir.server.status_addr().unwrap();
    assert_eq!(dir.server.status_token(), Some(TOKEN));
    for path in ["/", "/status.json", "/metrics"] {
        let (code, body) = http_get(status, path, &[]).await;
        assert_eq!(code, 401, "{path} without a token");
        assert!(body.contains("token"), "{body}");
        let (code, _) = http_get(status, &format!("{path}?token=wrong-token-0000000"), &[]).await;
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, _) = http_get(status, &format!("{path}?token={TOKEN}"), &[]).await;
        assert_eq!(code, 200, "{path} with ?token=");
        let bearer = format!("Bearer {TOKEN}");
        let (code, _) = http_get(status, path, &[("Authorization", &bearer)]).await;
        assert_eq!(code, 200, "{path} with a bearer token");
    }
    let (code, _) = http_get(status, "/healthz", &[]).await;
    assert_eq!(code, 200, "health needs no token");
    dir.server.shutdown().await;
}
