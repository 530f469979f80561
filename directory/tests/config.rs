//! `directory config print` and `serve` with a configuration file: the file over the
//! defaults, the environment over the file, flags over both; mistakes refused in one line;
//! JSON logs on request.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_directory");
const WAIT: Duration = Duration::from_secs(20);

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("NATTER_DIRECTORY_DATA")
        .env_remove("NATTER_DIRECTORY_CONFIG")
        .env_remove("NATTER_STATUS_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    timeout(WAIT, cmd.output())
        .await
        .expect("directory hung")
        .unwrap()
}

fn value<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} not printed:\n{printed}"))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn file_then_environment_then_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("directory.toml");
    let data = tmp.path().join("data");
    write(
        &file,
        &format!(
            "data = {:?}\nlisten = \"127.0.0.1:9000\"\nmax_connections = 50\nopen_registration = true\n\
             [lockout]\nmax_failures = 5\n[log]\nfilter = \"warn,directory::auth=debug\"\nformat = \"json\"\n",
            data.display().to_string()
        ),
    );
    let config = file.to_str().unwrap();

    // Defaults only (no file anywhere).
    let out = run(&["--data", data.to_str().unwrap(), "config", "print"], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(value(&printed, "listen"), "\"0.0.0.0:8888\"");
    assert_eq!(value(&printed, "max_connections"), "10000");
    assert_eq!(value(&printed, "filter"), "\"info\"");

    // The file.
    let out = run(&["--config", config, "config", "print"], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        value(&printed, "data"),
        format!("{:?}", data.display().to_string())
    );
    assert_eq!(value(&printed, "listen"), "\"127.0.0.1:9000\"");
    assert_eq!(value(&printed, "max_connections"), "50");
    assert_eq!(value(&printed, "open_registration"), "true");
    assert_eq!(value(&printed, "max_failures"), "5");
    assert_eq!(value(&printed, "filter"), "\"warn,directory::auth=debug\"");
    assert_eq!(value(&printed, "format"), "\"json\"");
    assert_eq!(value(&printed, "idle_timeout"), "10", "default kept");

    // The environment over the file, flags over both.
    let out = run(
        &[
            "--config",
            config,
            "--log-format",
            "text",
            "config",
            "print",
            "--listen",
            "127.0.0.1:9999",
            "--open-registration=false",
            "--max-connections",
            "7",
        ],
        &[
            ("RUST_LOG", "error"),
            ("NATTER_STATUS_TOKEN", "a-token-of-sixteen+"),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(value(&printed, "listen"), "\"127.0.0.1:9999\"");
    assert_eq!(value(&printed, "open_registration"), "false");
    assert_eq!(value(&printed, "max_connections"), "7");
    assert_eq!(value(&printed, "filter"), "\"error\"");
    assert_eq!(value(&printed, "format"), "\"text\"");
    assert!(
        printed.contains("# status_token = (set; not shown)"),
        "{printed}"
    );
    assert!(!printed.contains("a-token-of-sixteen+"));

    // The printed configuration is itself a valid configuration file.
    let again = tmp.path().join("again.toml");
    write(&again, &printed);
    let out = run(
        &["--config", again.to_str().unwrap(), "config", "print"],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        value(&String::from_utf8_lossy(&out.stdout), "max_connections"),
        "7"
    );
}

/// The settings of `printed`, without its comments.
fn settings(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

#[tokio::test]
async fn printed_configuration_reads_back_to_the_same_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = run(
        &[
            "--data",
            data.to_str().unwrap(),
            "--log-format",
            "json",
            "config",
            "print",
            "--listen",
            "[::1]:9000",
            "--idle-timeout",
            "25",
            "--max-anonymous-per-ip",
            "3",
            "--status",
            "127.0.0.1:8080",
        ],
        &[("NATTER_STATUS_TOKEN", "a-token-of-sixteen+")],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!first.contains("a-token-of-sixteen+"), "{first}");
    let file = tmp.path().join("printed.toml");
    write(&file, &first);
    let out = run(
        &["--config", file.to_str().unwrap(), "config", "print"],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(settings(&second), settings(&first), "{second}");
    assert_eq!(value(&second, "idle_timeout"), "25");
    assert_eq!(value(&second, "listen"), "\"[::1]:9000\"");
}

#[tokio::test]
async fn mistakes_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    for (text, expect) in [
        ("lisen = \"127.0.0.1:1\"\n", "unknown field"),
        (
            "max_connections = 0\n",
            "max_connections must be at least 1",
        ),
        ("status_token = \"short\"\n", "status_token"),
    ] {
        write(&file, text);
        let out = run(
            &[
                "--data",
                "/nonexistent",
                "--config",
                file.to_str().unwrap(),
                "config",
                "print",
            ],
            &[],
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{text}: {err}");
        assert!(err.contains("bad.toml"), "names the file: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[tokio::test]
async fn json_logs_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(BIN)
        .arg("--data")
        .arg(&data)
        .args(["--log-format", "json", "--log-filter", "info"])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = timeout(WAIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("stderr closed");
            if line.contains("directory started") {
                return line;
            }
        }
    })
    .await
    .expect("no start-up log line");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["level"], "INFO", "{line}");
    assert_eq!(event["message"], "directory started", "{line}");
    assert!(event["fingerprint"].is_string(), "{line}");
    child.kill().await.unwrap();
}
