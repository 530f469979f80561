//! Stopping the real `directory` binary, four ways: an administrator's `/shutdown`
//! request, `directory shutdown` on the same machine, SIGTERM, Ctrl-C (SIGINT). Each time every logged-in
//! peer is told, the process exits 0 and the database opens clean afterwards. Also:
//! `directory user logout|lock` reaching the running server, and a second server on the
//! same data directory refusing to start.

use std::net::SocketAddr;
use std::path::Path;

use proto::Identity;
use proto::message::{AdminRequest, ErrorCode, Event, Reply, Request};
use tokio::process::Child;
use tokio::time::timeout;

mod common;

use common::{run, serve_cheap as serve};
use testkit::{RawClient, WAIT};
const PASSWORD: &str = "correct horse battery";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Creates the accounts: `root` (administrator) and `bianca`.
async fn accounts(data: &Path) {
    for (name, admin) in [("root", true), ("bianca", false)] {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if admin {
            args.push("--admin");
        }
        let out = run(data, &args, Some(&format!("{PASSWORD}\n"))).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// The same identity key for the same user every time (a user keeps their key).
fn identity(user: &str) -> Identity {
    let mut seed = [7u8; 32];
    seed[..user.len()].copy_from_slice(user.as_bytes());
    Identity::from_secret_bytes(&seed)
}

/// `user`, logged in with their key and the password every test user has.
async fn login(addr: SocketAddr, user: &str) -> RawClient {
    RawClient::logged_in_at(addr, None, user, PASSWORD, &identity(user), &[])
        .await
        .0
}

async fn exits_zero(mut child: Child) {
    let status = timeout(WAIT, child.wait())
        .await
        .expect("the directory did not exit")
        .unwrap();
    assert!(status.success(), "directory exited with {status}");
}

/// The database is whole, its write-ahead log checkpointed away (a clean close), the
/// control socket gone, and the logins' key registrations are in it.
async fn opens_clean(data: &Path) {
    assert!(
        !data.join("directory.db-wal").exists(),
        "the write-ahead log was not checkpointed: the database was not closed cleanly"
    );
    assert!(!data.join("control.sock").exists());
    let db = rusqlite::Connection::open(data.join("directory.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);
    let out = run(data, &["user", "list"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    for name in ["root", "bianca"] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{listed}"));
        assert!(
            !line.contains("  -  "),
            "no key registered for {name}: {line}"
        );
    }
}

#[tokio::test]
async fn an_administrators_shutdown_tells_every_peer_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");
    accounts(&data).await;
    let (server, addr) = serve(&data).await;
    let mut root = login(addr, "root").await;
    let mut bianca = login(addr, "bianca").await;

    // A plain user may not.
    let reply = bianca.request(Request::Admin(AdminRequest::Shutdown)).await;
    assert!(
        matches!(
            reply,
            Reply::Error {
                code: ErrorCode::NotPermitted,
                ..
            }
        ),
        "{reply:?}"
    );

    let reply = root.request(Request::Admin(AdminRequest::Shutdown)).await;
    assert!(matches!(reply, Reply::Done { .. }), "{reply:?}");
    for client in [&mut root, &mut bianca] {
        let event = client.event().await;
        assert_eq!(
            event,
            Event::Shutdown {
                reason: "directory shut down by an administrator".into()
            }
        );
    }
    exits_zero(server).await;
    opens_clean(&data).await;
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(audit.contains("admin_refused by=bianca"), "{audit}");
    assert!(audit.contains("admin_request by=root"), "{audit}");
}

#[tokio::test]
async fn operator_commands_reach_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");
    accounts(&data).await;
    let (server, addr) = serve(&data).await;

    // `user logout` ends a session; the peer is told why.
    let mut bianca = login(addr, "bianca").await;
    let out = run(&data, &["user", "logout", "bianca"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("logged bianca out"));
    assert_eq!(
        bianca.event().await,
        Event::ForcedLogout {
            reason: "logged out by the operator".into()
        }
    );

    // `user lock` locks the account and ends its session.
    let mut bianca = login(addr, "bianca").await;
    let out = run(&data, &["user", "lock", "bianca"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        bianca.event().await,
        Event::ForcedLogout {
            reason: "account locked by the operator".into()
        }
    );
    let out = run(&data, &["user", "list"], None).await;
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("bianca ") && l.contains("locked")),
        "{}",
        text(&out.stdout)
    );
    let out = run(&data, &["user", "unlock", "bianca"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut bianca = login(addr, "bianca").await;
    let _root = login(addr, "root").await;

    // `directory shutdown` stops it; it exits 0 once storage is flushed.
    let out = run(&data, &["shutdown"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("directory stopped"));
    assert_eq!(
        bianca.event().await,
        Event::Shutdown {
            reason: "directory shut down by the operator".into()
        }
    );
    exits_zero(server).await;
    opens_clean(&data).await;

    // Nothing runs any more: the commands that need the server say so in one line.
    for args in [&["shutdown"][..], &["user", "logout", "bianca"][..]] {
        let out = run(&data, args, None).await;
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("no directory is running") && err.trim().lines().count() == 1,
            "{err}"
        );
    }
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(audit.contains("operator action=shutdown"), "{audit}");
    assert!(
        audit.contains("operator action=logout target=bianca"),
        "{audit}"
    );
}

#[tokio::test]
async fn locking_an_account_takes_it_out_of_its_rooms_and_says_what_it_cannot_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");
    accounts(&data).await;
    let (server, addr) = serve(&data).await;
    let mut bianca = login(addr, "bianca").await;
    let mut root = login(addr, "root").await;
    for who in [&mut bianca, &mut root] {
        let reply = who
            .call(Request::JoinRoom {
                room: "ops".parse().unwrap(),
            })
            .await;
        assert!(matches!(reply, Reply::RoomMembers { .. }), "{reply:?}");
    }

    let out = run(&data, &["user", "lock", "bianca"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("ended their session"), "{said}");
    assert!(said.contains("ops"), "the rooms left are named: {said}");
    assert!(
        said.contains("cannot end") && said.contains("directly"),
        "it says plainly what it cannot end: {said}"
    );

    // Her room-mate is told she left the room (so his peer stops sending her the room's
    // messages), not only that she went offline.
    let left = timeout(WAIT, async {
        loop {
            match root.event().await {
                Event::RoomChanged { room, user, joined } => break (room, user, joined),
                _ => continue,
            }
        }
    })
    .await
    .expect("no RoomChanged for the locked user");
    assert_eq!(
        left,
        ("ops".parse().unwrap(), "bianca".parse().unwrap(), false)
    );
    // (Root's joining the room is still queued for her before the notice.)
    let notice = loop {
        match bianca.event().await {
            Event::RoomChanged { .. } | Event::Presence { .. } => continue,
            other => break other,
        }
    };
    assert_eq!(
        notice,
        Event::ForcedLogout {
            reason: "account locked by the operator".into()
        }
    );
    match root.call(Request::ListRooms).await {
        Reply::Rooms { rooms } => {
            let ops = rooms.iter().find(|r| r.room == "ops").expect("ops");
            assert_eq!(ops.members, 1, "{rooms:?}");
        }
        other => panic!("{other:?}"),
    }

    let out = run(&data, &["shutdown"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    exits_zero(server).await;
}

#[tokio::test]
async fn a_second_server_on_a_served_data_directory_refuses_to_start() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("natter");
    accounts(&data).await;
    let (server, addr) = serve(&data).await;
    let socket = data.join("control.sock");
    let inode = std::fs::metadata(&socket).unwrap().ino();

    let out = run(&data, &["serve", "--listen", "127.0.0.1:0"], None).await;
    assert!(!out.status.success(), "a second server started");
    let err = text(&out.stderr);
    let pid = server.id().unwrap().to_string();
    assert!(
        err.contains("already served") && err.contains(&pid) && !err.contains("  "),
        "the refusal says who serves it: {err}"
    );
    // The running server's control socket is untouched and still reaches it.
    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), inode);
    let mut bianca = login(addr, "bianca").await;
    let _root = login(addr, "root").await;
    let out = run(&data, &["shutdown"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        bianca.event().await,
        Event::Shutdown {
            reason: "directory shut down by the operator".into()
        }
    );
    exits_zero(server).await;
    opens_clean(&data).await;

    // Once it has stopped, the data directory can be served again.
    let (again, _) = serve(&data).await;
    let out = run(&data, &["shutdown"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    exits_zero(again).await;
}

#[tokio::test]
async fn sigterm_and_ctrl_c_tell_every_peer_and_exit_zero() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("natter");
        accounts(&data).await;
        let (server, addr) = serve(&data).await;
        let mut root = login(addr, "root").await;
        let mut bianca = login(addr, "bianca").await;
        let pid = server.id().unwrap() as libc::pid_t;
        // SAFETY: sending a signal to a child process we started and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        for client in [&mut root, &mut bianca] {
            assert_eq!(
                client.event().await,
                Event::Shutdown {
                    reason: "directory shutting down".into()
                }
            );
        }
        exits_zero(server).await;
        opens_clean(&data).await;
    }
}
