//! Faults, with the real `directory` binary: killed with SIGKILL in the middle of
//! registrations and logins, and run out of disk space.
//!
//! What must hold (see `docs/DURABILITY.md`): an account or a session ticket the directory
//! has acknowledged (`Registered`, `Granted`) is in the database after a SIGKILL, the
//! database passes `PRAGMA integrity_check`, and the restarted directory serves it. With
//! the disk full, clients get `Error{Internal}` at once (no hang, no crash), the server
//! goes on, and when space is back everything works again with nothing lost or half
//! written.
//!
//! The full-disk test mounts a 2 MiB tmpfs and so needs root; without it, it says
//! "skipped: needs root to mount a tmpfs" and passes, unless `NATTER_REQUIRE_EXTRAS=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::Identity;
use proto::message::{ErrorCode, Refusal, Reply, Request};
use testkit::RawClient;
use testkit::raw::endpoint;
use tokio::process::Child;
use tokio::time::timeout;

mod common;

const WAIT: Duration = Duration::from_secs(15);
const PASSWORD: &str = "correct horse battery";

/// Cheap hashing, and no per-source or per-connection limit in the way of a client that
/// registers hundreds of accounts (registrations count against the source like failed
/// logins).
const CONFIG: &str = "requests_per_sec = 1000000\nrequest_burst = 1000000\n\
    [password_cost]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n\
    [source_limit]\nmax_failures = 1000000\n";

/// A running `directory serve`; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `directory serve --open-registration` on `data` (on `listen`), with its
    /// log in `log`.
    async fn start(data: &Path, listen: SocketAddr, log: &Path) -> Server {
        std::fs::create_dir_all(data).unwrap();
        std::fs::write(data.join("directory.toml"), CONFIG).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let listen = listen.to_string();
        let serving = common::serve(data, &["--open-registration", "--listen", &listen], log).await;
        Server {
            child: serving.child,
            addr: serving.addr,
        }
    }

    /// kill -9: no shutdown, no flush, nothing.
    async fn kill(mut self) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: sending a signal to a child process we started and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let status = timeout(WAIT, self.child.wait()).await.unwrap().unwrap();
        assert!(!status.success(), "{status}");
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// The identity key of `user` (the same every time).
fn identity(user: &str) -> Identity {
    let mut seed = [3u8; 32];
    for (i, b) in user.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed[31] = user.len() as u8;
    Identity::from_secret_bytes(&seed)
}

/// A raw client from 127.0.0.1 (any directory key), past `Hello`; `Err` when the
/// directory cannot be reached.
async fn connect(addr: SocketAddr) -> Result<RawClient, String> {
    let mut client = RawClient::try_connect_on(endpoint("127.0.0.1"), addr, None, |_| {}).await?;
    client.try_hello().await?;
    Ok(client)
}

async fn register(client: &mut RawClient, user: &str) -> Result<Reply, String> {
    client
        .try_call(&Request::Register {
            user: user.parse().unwrap(),
            password: PASSWORD.into(),
            identity: identity(user).public(),
        })
        .await
}

async fn login(client: &mut RawClient, user: &str) -> Result<Reply, String> {
    let request = client.login_request(user, PASSWORD, &identity(user));
    client.try_call(&request).await
}

async fn resume(client: &mut RawClient, user: &str, ticket: &[u8]) -> Result<Reply, String> {
    let request = client.resume_request(user, ticket, &identity(user));
    client.try_call(&request).await
}

/// What the clients were told before the kill.
#[derive(Debug, Default)]
struct Acknowledged {
    /// Accounts answered `Registered`.
    accounts: BTreeSet<String>,
    /// The last ticket each user was `Granted`.
    tickets: BTreeMap<String, Vec<u8>>,
}

/// The database as a fresh SQLite connection finds it: integrity checked, every account
/// name and every ticket hash.
fn inspect(db: &Path) -> (BTreeSet<String>, BTreeSet<Vec<u8>>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "integrity_check of {}", db.display());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the database stays in WAL mode");
    let mut names = conn.prepare("SELECT name FROM accounts").unwrap();
    let accounts = names
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut hashes = conn.prepare("SELECT hash FROM tickets").unwrap();
    let tickets = hashes
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (accounts, tickets)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One client's work until the server dies: register accounts, and log every third one
/// in (a ticket written) — each acknowledged result recorded the moment it arrives.
async fn churn(addr: SocketAddr, prefix: String, acked: Arc<Mutex<Acknowledged>>) {
    let Ok(mut client) = connect(addr).await else {
        return;
    };
    for i in 0.. {
        let user = format!("{prefix}{i}");
        match register(&mut client, &user).await {
            Ok(Reply::Registered { .. }) => {
                acked.lock().unwrap().accounts.insert(user.clone());
            }
            Ok(other) => panic!("registering {user}: {other:?}"),
            Err(_) => return, // killed
        }
        if i % 3 == 0 {
            match login(&mut client, &user).await {
                Ok(Reply::Granted { ticket, .. }) => {
                    acked.lock().unwrap().tickets.insert(user, ticket);
                }
                Ok(other) => panic!("logging {user} in: {other:?}"),
                Err(_) => return,
            }
            // A fresh connection for the next login (a logout would end the ticket,
            // which must stay for the check below).
            client = match connect(addr).await {
                Ok(client) => client,
                Err(_) => return,
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_registrations_and_logins_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("directory.log");
    let db = data.join("directory.db");
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();

    for round in 0..5u64 {
        let server = Server::start(&data, listen, &log).await;
        listen = server.addr;
        // The restarted directory serves what the last one acknowledged: a ticket from
        // before the kill resumes, an account from before logs in.
        let earlier_ticket = acked.lock().unwrap().tickets.pop_first();
        if let Some((user, ticket)) = earlier_ticket {
            let mut client = connect(server.addr).await.unwrap();
            let reply = resume(&mut client, &user, &ticket).await.unwrap();
            assert!(matches!(reply, Reply::Granted { .. }), "{user}: {reply:?}");
        }
        let some_account = acked.lock().unwrap().accounts.last().cloned();
        if let Some(user) = some_account {
            let mut client = connect(server.addr).await.unwrap();
            let reply = login(&mut client, &user).await.unwrap();
            assert!(matches!(reply, Reply::Granted { .. }), "{user}: {reply:?}");
        }

        // Four clients register and log in as fast as they can...
        let before = acked.lock().unwrap().accounts.len();
        let workers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(churn(server.addr, format!("r{round}w{w}u"), acked.clone())))
            .collect();
        // ... and at some point in the middle of it, the directory is killed.
        let deadline = Instant::now() + WAIT;
        while acked.lock().unwrap().accounts.len() < before + 60 {
            assert!(Instant::now() < deadline, "too slow\n{}", log_tail(&log));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..200))).await;
        server.kill().await;
        // Requests in flight now will never be answered (nothing tells a client that a
        // killed server is gone, until its idle timeout): they were not acknowledged.
        for w in workers {
            w.abort();
            if let Err(e) = w.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }

        let (accounts, tickets) = inspect(&db);
        let acked = acked.lock().unwrap();
        println!(
            "round {round}: {} accounts acknowledged, {} in the database, {} tickets",
            acked.accounts.len(),
            accounts.len(),
            acked.tickets.len()
        );
        let lost: Vec<_> = acked.accounts.difference(&accounts).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged accounts lost: {lost:?}"
        );
        for (user, ticket) in &acked.tickets {
            let hash = directory::ticket::hash(ticket).to_vec();
            assert!(
                tickets.contains(&hash),
                "round {round}: {user}'s ticket lost"
            );
        }
    }
    let server = Server::start(&data, listen, &log).await;
    server.kill().await;
}

// ---------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------

/// A tmpfs mounted for the test; unmounted when dropped (lazily, should anything still
/// hold it).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `None` when mounting is not possible here (not root, no tmpfs).
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(path).unwrap();
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let options = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        (rc == 0).then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let target = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            // SAFETY: as above.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Fills the file system holding `dir` to the last byte (a file of zeros).
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Single bytes, for the last partial block.
    while let Ok(1) = file.write(&[0]) {}
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_errors_not_hangs_and_no_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(&tmp.path().join("disk"), "2m") else {
        assert!(
            std::env::var("NATTER_REQUIRE_EXTRAS").as_deref() != Ok("1"),
            "cannot mount a tmpfs (needs root) and NATTER_REQUIRE_EXTRAS=1"
        );
        println!("skipped: needs root to mount a tmpfs");
        return;
    };
    let data = mount.path.join("data");
    let log = tmp.path().join("directory.log");
    let mut server = Server::start(&data, "127.0.0.1:0".parse().unwrap(), &log).await;
    let mut client = connect(server.addr).await.unwrap();

    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        let user = format!("early{i}");
        let reply = register(&mut client, &user).await.unwrap();
        assert_eq!(
            reply,
            Reply::Registered {
                user: user.parse().unwrap()
            }
        );
        acknowledged.insert(user);
    }

    // No space left.
    let filler = fill(&mount.path);
    let mut failed = BTreeSet::new();
    for i in 0..100 {
        let user = format!("full{i}");
        let started = Instant::now();
        match register(&mut client, &user).await {
            Ok(Reply::Registered { .. }) => {
                // SQLite may still find room in pages it holds already.
                acknowledged.insert(user);
            }
            Ok(Reply::Error {
                code: ErrorCode::Internal,
                ..
            }) => {
                failed.insert(user);
            }
            other => panic!("{user}: {other:?}\n{}", log_tail(&log)),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "slow reply");
        if failed.len() >= 5 {
            break;
        }
    }
    assert!(
        failed.len() >= 5,
        "registrations kept succeeding on a full disk\n{}",
        log_tail(&log)
    );
    // A login needs to write its ticket: refused the same way, the account intact.
    let reply = login(&mut client, "early0").await.unwrap();
    assert!(
        matches!(
            reply,
            Reply::Error {
                code: ErrorCode::Internal,
                ..
            }
        ),
        "{reply:?}"
    );
    assert!(server.is_running(), "the directory died on a full disk");
    // Other clients can still connect and are told the same.
    let mut other = connect(server.addr).await.unwrap();
    let reply = register(&mut other, "late").await.unwrap();
    assert!(matches!(reply, Reply::Error { .. }), "{reply:?}");

    // Space again: the same process recovers without a restart.
    std::fs::remove_file(filler).unwrap();
    for i in 0..5 {
        let user = format!("after{i}");
        let reply = register(&mut client, &user).await.unwrap();
        assert_eq!(
            reply,
            Reply::Registered {
                user: user.parse().unwrap()
            }
        );
        acknowledged.insert(user);
    }
    let reply = login(&mut client, "early0").await.unwrap();
    assert!(matches!(reply, Reply::Granted { .. }), "{reply:?}");
    assert!(matches!(
        register(&mut client, "early1").await.unwrap(),
        Reply::Refused {
            reason: Refusal::UserExists,
            ..
        }
    ));
    drop(client);
    drop(other);
    server.kill().await;

    let (accounts, _) = inspect(&data.join("directory.db"));
    let lost: Vec<_> = acknowledged.difference(&accounts).collect();
    assert!(lost.is_empty(), "acknowledged accounts lost: {lost:?}");
    let half_written: Vec<_> = failed.intersection(&accounts).collect();
    assert!(
        half_written.is_empty(),
        "accounts that failed exist anyway: {half_written:?}"
    );
    drop(mount);
}
