//! Administrators at work from their own peer session: `/adduser`, `/listusers`,
//! `/logoutuser`, `/lock`, `/unlock`, `/shutdown`, through the real app and the real
//! directory, and the same commands refused (and audited) for a plain user.

use peer::app::Start;
use peer::ui::Note;
use proto::message::AccountInfo;
use testkit::{PASSWORD, TestDirectory, TestPeer};

/// A directory with the administrator `root` and the users given.
async fn directory_with_admin(users: &[&str]) -> TestDirectory {
    let dir = TestDirectory::start().await.unwrap();
    dir.server.add_user("root", PASSWORD, true).await.unwrap();
    dir.add_users(users).await.unwrap();
    dir
}

fn info_containing(text: &str) -> impl Fn(&Note) -> bool + '_ {
    move |n| matches!(n, Note::Info(t) if t.contains(text))
}

fn error_containing(text: &str) -> impl Fn(&Note) -> bool + '_ {
    move |n| matches!(n, Note::Error(t) if t.contains(text))
}

fn warning_containing(text: &str) -> impl Fn(&Note) -> bool + '_ {
    move |n| matches!(n, Note::Warning(t) if t.contains(text))
}

/// Types `/listusers` and returns the accounts shown.
async fn list_users(admin: &mut TestPeer) -> Vec<AccountInfo> {
    admin.say("/listusers").await;
    match admin
        .expect("account list", |n| matches!(n, Note::Accounts { .. }))
        .await
    {
        Note::Accounts { users } => users,
        _ => unreachable!(),
    }
}

fn account<'a>(users: &'a [AccountInfo], name: &str) -> &'a AccountInfo {
    users
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("{name} not listed in {users:#?}"))
}

#[tokio::test]
async fn an_admin_adds_lists_locks_unlocks_and_logs_out_users() {
    let dir = directory_with_admin(&["bianca", "chloe"]).await;
    let mut root = TestPeer::start(&dir, "root", Start::Idle).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();

    // Every account, online or not.
    let users = list_users(&mut root).await;
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["bianca", "chloe", "root"]
    );
    assert!(account(&users, "root").admin && account(&users, "root").online);
    assert!(!account(&users, "bianca").admin && account(&users, "bianca").online);
    assert!(!account(&users, "chloe").online);
    assert!(users.iter().all(|u| !u.locked_by_admin));

    // /adduser: the password is the next line, never part of the command.
    root.say("/adduser dora").await;
    root.expect("password request", info_containing("password for dora"))
        .await;
    root.say(PASSWORD).await;
    root.expect("user added", info_containing("added user dora"))
        .await;
    let dora = TestPeer::start(&dir, "dora", Start::Idle).await.unwrap();
    dora.quit().await;
    // A password that breaks the rules adds nobody.
    root.say("/adduser erin --admin").await;
    root.expect("password request", info_containing("password for erin"))
        .await;
    root.say("short").await;
    root.expect("refused password", error_containing("erin was not added"))
        .await;
    root.say("/adduser dora").await;
    root.say(PASSWORD).await;
    root.expect("name taken", error_containing("taken")).await;

    // /lock ends the session at once and keeps the user out until /unlock.
    root.say("/lock bianca").await;
    root.expect("locked", info_containing("locked bianca"))
        .await;
    bianca
        .expect(
            "told why",
            warning_containing("account locked by an administrator"),
        )
        .await;
    let refused = TestPeer::start(&dir, "bianca", Start::Idle).await.err();
    let refused = format!("{:#}", refused.expect("a locked account cannot log in"));
    assert!(refused.contains("locked out"), "{refused}");
    let users = list_users(&mut root).await;
    assert!(account(&users, "bianca").locked_by_admin);
    assert!(!account(&users, "bianca").online);
    root.say("/unlock bianca").await;
    root.expect("unlocked", info_containing("unlocked bianca"))
        .await;
    // Bianca comes back with her own profile (her key is registered).
    let profile = std::mem::replace(&mut bianca.profile, tempfile::tempdir().unwrap());
    bianca.kill();
    let mut bianca = TestPeer::start_in(&dir, "bianca", profile, Start::Idle)
        .await
        .unwrap();

    // /logoutuser ends the session; the peer is told why.
    root.say("/logoutuser bianca").await;
    root.expect("logged out", info_containing("logged bianca out"))
        .await;
    bianca
        .expect(
            "told why",
            warning_containing("logged out by an administrator"),
        )
        .await;
    root.say("/logoutuser chloe").await;
    root.expect("not online", info_containing("chloe is not online"))
        .await;
    root.say("/lock nobody").await;
    root.expect("unknown user", error_containing("no such user: nobody"))
        .await;

    root.quit().await;
    let TestDirectory { server, data } = dir;
    server.shutdown().await;
    let audit = std::fs::read_to_string(data.path().join("audit.log")).unwrap();
    assert!(audit.contains("admin_request by=root"), "{audit}");
    assert!(audit.contains("action=lock target=bianca"), "{audit}");
    assert!(audit.contains("admin action=add user=dora"), "{audit}");
    assert!(
        audit.contains("forced_logout user=bianca reason=\"logged out by an administrator\""),
        "{audit}"
    );
    assert!(
        !audit.contains(PASSWORD),
        "a password reached the audit log"
    );
}

#[tokio::test]
async fn plain_users_are_not_permitted_and_the_attempts_are_audited() {
    let dir = directory_with_admin(&["bianca"]).await;
    let mut root = TestPeer::start(&dir, "root", Start::Idle).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();

    for command in [
        "/listusers",
        "/logoutuser root",
        "/lock root",
        "/unlock root",
        "/shutdown",
    ] {
        bianca.say(command).await;
        bianca
            .expect(command, error_containing("not permitted"))
            .await;
    }
    bianca.say("/adduser mallory").await;
    bianca
        .expect("password request", info_containing("password for mallory"))
        .await;
    bianca.say(PASSWORD).await;
    bianca
        .expect("/adduser", error_containing("not permitted"))
        .await;

    // Nothing happened: root is still online and unlocked, mallory does not exist, the
    // directory still runs.
    let users = list_users(&mut root).await;
    assert!(account(&users, "root").online && !account(&users, "root").locked_by_admin);
    assert!(users.iter().all(|u| u.name != "mallory"));
    assert_eq!(dir.server.online_count(), 2);

    bianca.quit().await;
    root.quit().await;
    let TestDirectory { server, data } = dir;
    server.shutdown().await;
    let audit = std::fs::read_to_string(data.path().join("audit.log")).unwrap();
    for line in [
        "admin_refused by=bianca ip=127.0.0.1 action=list_users target=-",
        "admin_refused by=bianca ip=127.0.0.1 action=logout_user target=root",
        "admin_refused by=bianca ip=127.0.0.1 action=lock target=root",
        "admin_refused by=bianca ip=127.0.0.1 action=unlock target=root",
        "admin_refused by=bianca ip=127.0.0.1 action=shutdown target=-",
        "admin_refused by=bianca ip=127.0.0.1 action=add_user target=mallory",
    ] {
        assert!(audit.contains(line), "missing {line:?} in\n{audit}");
    }
    assert!(!audit.contains(PASSWORD));
}

#[tokio::test]
async fn shutdown_from_an_admin_tells_every_peer_and_stops_the_directory() {
    let dir = directory_with_admin(&["bianca"]).await;
    let mut root = TestPeer::start(&dir, "root", Start::Idle).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();

    root.say("/shutdown").await;
    root.expect("acknowledged", info_containing("directory shutting down"))
        .await;
    for peer in [&mut root, &mut bianca] {
        peer.expect(
            "shutdown notice",
            warning_containing(
                "the directory is shutting down: directory shut down by an administrator",
            ),
        )
        .await;
    }
    // The owner of the directory learns it should stop, and finishes the job.
    let reason = tokio::time::timeout(testkit::WAIT, dir.server.stopped())
        .await
        .expect("the directory was asked to stop");
    assert!(reason.contains("administrator"), "{reason}");
    let TestDirectory { server, data } = dir;
    server.shutdown().await;

    // Everything written is there when the data directory is opened again.
    let admin = directory::Admin::open(data.path()).await.unwrap();
    let users = admin.list_users().await.unwrap();
    assert_eq!(users.len(), 2);
    admin.close().await;
    let audit = std::fs::read_to_string(data.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("admin_request by=root ip=127.0.0.1 action=shutdown"),
        "{audit}"
    );
    bianca.kill();
    root.kill();
}
