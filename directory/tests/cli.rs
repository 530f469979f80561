//! The `directory` binary's interface contract, as scripts use it: `user add` from stdin,
//! `user list/unlock/remove` (also while the server runs), `serve` printing its
//! fingerprint and address, SIGTERM ending it with status 0, the same key after a restart.

use std::process::{Output, Stdio};

use proto::Identity;
use proto::message::{Reply, Request, ServerMsg};
use tokio::process::Child;
use tokio::time::timeout;

mod common;

use common::run;
use testkit::{RawClient, WAIT};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn terminate(mut child: Child) {
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: sending a signal to a child process we started and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = timeout(WAIT, child.wait())
        .await
        .expect("serve did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test]
async fn user_commands_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");

    let out = run(
        &data,
        &["user", "add", "ali", "--admin", "--password-stdin"],
        Some("secret-ali\n"),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &data,
        &["user", "add", "ali", "--password-stdin"],
        Some("secret-ali\n"),
    )
    .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("already exists") && err.trim().lines().count() == 1,
        "{err}"
    );
    let out = run(&data, &["user", "add", "bob", "--password-stdin"], Some("")).await;
    assert!(!out.status.success());

    let testkit::DirectoryProcess {
        child: server,
        fingerprint,
        addr,
    } = common::serve(&data, &["--listen", "127.0.0.1:0"], Stdio::inherit()).await;
    // The printed fingerprint is the key file's.
    let seed: [u8; 32] = std::fs::read(data.join("directory.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = Identity::from_secret_bytes(&seed).public();
    assert_eq!(fingerprint, key.fingerprint());
    // `directory fingerprint` prints the same (the server is running; it only reads).
    let out = run(&data, &["fingerprint"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("directory fingerprint: {}", key.fingerprint())
    );

    // The CLI works on the database while the server runs.
    let out = run(&data, &["user", "list"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ali ") && l.contains("yes")),
        "{listed}"
    );
    let out = run(&data, &["user", "unlock", "ali"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&data, &["user", "remove", "nobody"], None).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));

    // The server answers on the printed address with the printed key.
    let mut raw = RawClient::connect(addr, key).await;
    let hello = Request::Hello {
        version: proto::PROTOCOL_VERSION,
        software: "cli-test".into(),
    };
    raw.send(&hello).await;
    let msg = raw.next().await;
    assert!(
        matches!(
            msg,
            Some(ServerMsg::Reply(Reply::Welcome {
                open_registration: false,
                ..
            }))
        ),
        "{msg:?}"
    );

    terminate(server).await;

    // Same data directory, same fingerprint.
    let testkit::DirectoryProcess {
        child: server,
        fingerprint: again,
        ..
    } = common::serve(&data, &["--listen", "127.0.0.1:0"], Stdio::inherit()).await;
    assert_eq!(again, fingerprint);
    terminate(server).await;

    let out = run(&data, &["user", "remove", "ali"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(audit.contains("admin action=add_admin user=ali"), "{audit}");
    assert!(audit.contains("admin action=remove user=ali"), "{audit}");
    assert!(!audit.contains("secret-ali"));
}

#[test]
fn help_names_environment_variables_without_showing_an_empty_value() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_directory"))
        .arg("--help")
        .env_remove("NATTER_DIRECTORY_DATA")
        .env_remove("NATTER_DIRECTORY_CONFIG")
        .output()
        .expect("directory --help runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for var in ["NATTER_DIRECTORY_DATA", "NATTER_DIRECTORY_CONFIG"] {
        assert!(help.contains(&format!("[env: {var}]")), "{help}");
    }
    assert!(!help.contains("=]"), "{help}");
}
