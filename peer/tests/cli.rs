//! The `peer` binary's command-line contract, tested by running the real binary.
//!
//! Each test starts a real [`directory::Directory`] in-process on 127.0.0.1 port 0 (its
//! data in a temporary directory), then runs `peer` as child processes with their own
//! profile directories, the password in `PEER_PASSWORD` and stdin/stdout piped, so the
//! program runs in its scripted mode (see `peer/src/ui/script.rs` for the line format).
//!
//! Nothing here sleeps to synchronise: a test reads a child's stdout line by line, with a
//! deadline, until the line it expects appears. Every child is killed when its guard is
//! dropped, so a failing test leaves no process behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use testkit::{PASSWORD, PeerProcess, TestDirectory, WAIT};
use tokio::process::Command;

/// The path of the binary under test.
const PEER: &str = env!("CARGO_BIN_EXE_peer");
/// argon2 cost of the vaults the tests make (`NATTER_VAULT_COST`): the cheapest, since a
/// real one takes seconds in a debug build.
const CHEAP_VAULT: &str = "8,1,1";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A directory in the test's runtime, with open registration or not, and `users`.
async fn start_directory(open_registration: bool, users: &[&str]) -> TestDirectory {
    let dir = TestDirectory::start_with(|c| c.open_registration = open_registration)
        .await
        .expect("directory starts");
    dir.add_users(users).await.expect("add users");
    dir
}

/// A user of the `peer` program: a name and a profile directory of their own.
struct User {
    name: String,
    profile: tempfile::TempDir,
}

impl User {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            profile: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn profile(&self) -> &Path {
        self.profile.path()
    }

    /// `peer --profile P --directory D --user NAME ARGS...` with the right password.
    fn cmd(&self, dir: &TestDirectory, args: &[&str]) -> Command {
        self.cmd_with(dir, PASSWORD, args)
    }

    fn cmd_with(&self, dir: &TestDirectory, password: &str, args: &[&str]) -> Command {
        let mut cmd = bare_cmd(self.profile());
        cmd.args(["--directory", &dir.addr().to_string(), "--user", &self.name])
            .args(args)
            .env("PEER_PASSWORD", password);
        cmd
    }

    /// Starts a long-running `peer` (listen, connect) as this user.
    fn spawn(&self, dir: &TestDirectory, args: &[&str]) -> PeerProcess {
        PeerProcess::spawn(&self.name, self.cmd(dir, args))
    }

    /// The fingerprint of this profile's identity key, as `peer fingerprint` prints it
    /// (read from the profile with the library, independently of the binary).
    fn key_fingerprint(&self) -> String {
        compact(
            &peer::profile::Profile::open(self.profile())
                .expect("profile opens")
                .public_key()
                .fingerprint()
                .to_string(),
        )
    }
}

/// `peer --profile P` with a clean environment: no inherited `PEER_*` or `RUST_LOG`.
fn bare_cmd(profile: &Path) -> Command {
    let mut cmd = Command::new(PEER);
    for var in [
        "PEER_PROFILE",
        "PEER_DIRECTORY",
        "PEER_USER",
        "PEER_PASSWORD",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("--profile")
        .arg(profile)
        .env("HOME", profile)
        .env("NATTER_VAULT_COST", CHEAP_VAULT)
        .kill_on_drop(true);
    cmd
}

fn compact(s: &str) -> String {
    s.replace(' ', "")
}

/// What a command that ran to completion left behind.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Asserts success and returns stdout's lines.
    fn ok(&self) -> Vec<&str> {
        assert!(self.status.success(), "expected success: {self:#?}");
        self.lines()
    }

    /// Asserts failure with exactly one line on stderr, and returns that line.
    fn failed_one_line(&self) -> &str {
        assert!(!self.status.success(), "expected failure: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr: {self:#?}"
        );
        assert!(!lines[0].trim().is_empty(), "empty reason: {self:#?}");
        lines[0]
    }
}

/// Runs a command to completion (stdin empty), killing it after `limit`.
async fn run_within(mut cmd: Command, limit: Duration) -> Outcome {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peer starts");
    // `kill_on_drop`: if the deadline passes, dropping the future kills the child.
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("peer did not finish within {limit:?}: {cmd:?}"))
        .expect("peer output");
    Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

async fn run(cmd: Command) -> Outcome {
    run_within(cmd, WAIT).await
}

/// Opens a chat from `caller` to the listening `callee`, waiting for both sides.
async fn chat(dir: &TestDirectory, caller: &User, callee: &mut PeerProcess) -> PeerProcess {
    let mut p = caller.spawn(dir, &["connect", &callee.name, "--listen", "127.0.0.1:0"]);
    p.online().await;
    let line = p.expect(&format!("connected peer={} ", callee.name)).await;
    assert!(line.contains("direction=outgoing"), "{line}");
    let line = callee
        .expect(&format!("connected peer={} ", caller.name))
        .await;
    assert!(line.contains("direction=incoming"), "{line}");
    p
}

/// A UDP port on 127.0.0.1 that nothing listens on (bound, then released).
fn free_udp_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("local addr")
}

/// The `key=value` field of a scripted line (not for the free-text last field).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

fn write_file(path: PathBuf, text: &str) {
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------
// 1. who, wrong passwords, lockout, unreachable directory
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_lists_the_users_online() {
    let dir = start_directory(false, &["ali", "bianca"]).await;
    let (ali, bianca) = (User::new("ali"), User::new("bianca"));
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;

    let out = run(ali.cmd(&dir, &["who"])).await;
    let lines = out.ok();
    assert!(
        lines.iter().any(|l| l.starts_with("online user=bianca ")),
        "{out:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("online user=ali ")),
        "{out:#?}"
    );
    assert_eq!(lines.last(), Some(&"who count=2"), "{out:#?}");

    // Global flags may come after the subcommand too; the user name is remembered.
    let mut cmd = Command::new(PEER);
    cmd.env("NATTER_VAULT_COST", CHEAP_VAULT);
    cmd.arg("who")
        .arg("--profile")
        .arg(ali.profile())
        .args(["--directory", &dir.addr().to_string()])
        .env_remove("PEER_USER")
        .env_remove("PEER_DIRECTORY")
        .env_remove("PEER_PROFILE")
        .env("PEER_PASSWORD", PASSWORD)
        .kill_on_drop(true);
    let out = run(cmd).await;
    assert_eq!(out.ok().last(), Some(&"who count=2"), "{out:#?}");

    // The user from PEER_USER, the password from --password-file (first line).
    let chloe = User::new("chloe");
    dir.server.add_user("chloe", PASSWORD, false).await.unwrap();
    let password_file = chloe.profile().join("password.txt");
    write_file(
        password_file.clone(),
        &format!("{PASSWORD}\nnot this line\n"),
    );
    let mut cmd = bare_cmd(chloe.profile());
    cmd.args([
        "--directory",
        &dir.addr().to_string(),
        "who",
        "--password-file",
    ])
    .arg(&password_file)
    .env("PEER_USER", "chloe");
    let out = run(cmd).await;
    let lines = out.ok();
    assert!(
        lines.iter().any(|l| l.starts_with("online user=chloe ")),
        "{out:#?}"
    );
    assert_eq!(
        lines.last(),
        Some(&"who count=2"),
        "ali has logged out: {out:#?}"
    );

    // No password anywhere and no terminal to ask on: one line saying so.
    let mut cmd = bare_cmd(chloe.profile());
    cmd.args(["--directory", &dir.addr().to_string(), "who"]);
    let line = run(cmd).await.failed_one_line().to_string();
    assert!(line.contains("PEER_PASSWORD"), "{line}");

    b.quit().await;
}

/// Waits (at most `within`) until the directory holds `n` connections.
async fn connections_back_to(dir: &TestDirectory, n: usize, within: Duration) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while dir.server.connection_count() != n {
        assert!(
            started.elapsed() < within,
            "the directory still holds {} connections {within:?} after the command, not {n}",
            dir.server.connection_count()
        );
        tick.tick().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_free_their_directory_connection_at_once() {
    let dir = start_directory(true, &["ali"]).await;
    let ali = User::new("ali");
    // Well under the directory's idle timeout (10 s), which is when it would notice a
    // connection that just went silent.
    const PROMPTLY: Duration = Duration::from_secs(2);

    // Before the fix the close raced the process exit (lost about two times in three),
    // so a few rounds.
    for _ in 0..3 {
        let out = run(ali.cmd(&dir, &["who"])).await;
        assert_eq!(out.ok().last(), Some(&"who count=1"), "{out:#?}");
        connections_back_to(&dir, 0, PROMPTLY).await;
    }

    let out = run(ali.cmd(&dir, &["trust", "nobody"])).await;
    out.failed_one_line();
    connections_back_to(&dir, 0, PROMPTLY).await;

    let chloe = User::new("chloe");
    let mut cmd = bare_cmd(chloe.profile());
    cmd.args(["--directory", &dir.addr().to_string(), "register", "chloe"])
        .env("PEER_PASSWORD", PASSWORD);
    run(cmd).await.ok();
    connections_back_to(&dir, 0, PROMPTLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_count_down_then_lock_the_account() {
    let dir = start_directory(false, &["ali"]).await;
    let ali = User::new("ali");
    for left in ["2 attempts left", "1 attempt left"] {
        let out = run(ali.cmd_with(&dir, "not the password", &["who"])).await;
        let line = out.failed_one_line();
        assert!(line.contains(left), "expected {left:?}: {line}");
    }
    let out = run(ali.cmd_with(&dir, "not the password", &["who"])).await;
    let line = out.failed_one_line();
    assert!(
        line.contains("locked"),
        "third failure must say it locked: {line}"
    );

    let out = run(ali.cmd(&dir, &["who"])).await;
    let line = out.failed_one_line().to_string();
    assert!(line.contains("locked out"), "{line}");
    assert!(line.contains("try again in"), "{line}");
    assert!(
        !line.contains("attempts left before lockout"),
        "a locked account has no attempts left to count: {line}"
    );
    assert!(out.stdout.is_empty(), "{out:#?}");
}

/// The right password from a second, new profile is refused like a wrong one (the
/// directory gives strangers no oracle), so the peer, which knows its key was made just
/// now, says what may be going on and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_profile_for_an_account_with_a_key_is_told_why_it_may_be_refused() {
    let dir = start_directory(false, &["ali"]).await;
    let first = User::new("ali");
    let out = run(first.cmd(&dir, &["who"])).await;
    assert_eq!(out.ok().last(), Some(&"who count=1"), "{out:#?}");
    let second = User::new("ali");
    let out = run(second.cmd(&dir, &["who"])).await;
    let line = out.failed_one_line();
    assert!(line.contains("wrong user name or password"), "{line}");
    assert!(line.contains("new profile"), "{line}");
    assert!(line.contains("directory user reset-key ali"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_directory_fails_fast_with_one_line() {
    let ali = User::new("ali");
    let nobody = free_udp_port().to_string();
    let mut cmd = bare_cmd(ali.profile());
    cmd.args(["--directory", &nobody, "--user", "ali", "who"])
        .env("PEER_PASSWORD", PASSWORD);
    let out = run_within(cmd, Duration::from_secs(20)).await;
    let line = out.failed_one_line();
    assert!(line.contains("cannot reach the directory"), "{line}");
    assert_eq!(line.matches(&nobody).count(), 1, "says it once: {line}");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?} to give up: {line}",
        out.elapsed
    );
}

// ---------------------------------------------------------------------------------------
// 2. A changed directory key is refused
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_directory_key_is_refused_naming_both_fingerprints() {
    let dir = start_directory(false, &["ali"]).await;
    let ali = User::new("ali");
    let real = dir.server.fingerprint().to_string();

    // First contact pins the key.
    run(ali.cmd(&dir, &["who"])).await.ok();
    let pins = std::fs::read_to_string(ali.profile().join("known_directories")).unwrap();
    assert!(
        pins.contains(&format!(
            "{} {}",
            dir.addr(),
            dir.server.public_key().to_hex()
        )),
        "{pins}"
    );

    // Someone else's key pinned for this address: refused.
    let other = proto::Identity::generate().public();
    write_file(
        ali.profile().join("known_directories"),
        &format!("{} {}\n", dir.addr(), other.to_hex()),
    );
    let out = run(ali.cmd(&dir, &["who"])).await;
    let line = out.failed_one_line();
    assert!(line.contains(&other.fingerprint().to_string()), "{line}");
    assert!(line.contains(&real), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");

    // The wrong key given on the command line: refused as well.
    let fp = other.fingerprint().to_string();
    let out = run(ali.cmd(&dir, &["--directory-fingerprint", &fp, "who"])).await;
    let line = out.failed_one_line();
    assert!(line.contains(&fp), "{line}");
    assert!(line.contains(&real), "{line}");
    // It says what was expected and what was presented, and does not advise passing the
    // flag the user just passed.
    assert!(
        line.contains("as given with --directory-fingerprint"),
        "{line}"
    );
    assert!(!line.contains("pass --directory-fingerprint"), "{line}");

    // The right key on the command line replaces the wrong pin.
    let out = run(ali.cmd(&dir, &["--directory-fingerprint", &compact(&real), "who"])).await;
    assert_eq!(out.ok().last(), Some(&"who count=1"), "{out:#?}");
    let out = run(ali.cmd(&dir, &["who"])).await;
    assert_eq!(out.ok().last(), Some(&"who count=1"), "{out:#?}");
}

// ---------------------------------------------------------------------------------------
// 3. Chat over stdin/stdout
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_stdin_and_stdout() {
    let dir = start_directory(false, &["ali", "bianca", "chloe"]).await;
    let (ali, bianca, chloe) = (User::new("ali"), User::new("bianca"), User::new("chloe"));
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;
    let mut a = chat(&dir, &ali, &mut b).await;

    a.send("Hello, how are you today?").await;
    b.expect_message("ali", "Hello, how are you today?").await;
    a.expect("delivered to=bianca id=1").await;

    b.send("Fine, thanks. And you?").await;
    a.expect_message("bianca", "Fine, thanks. And you?").await;
    b.expect("delivered to=ali id=1").await;

    let odd = "   Grüße aus Köln — 你好, мир 🙂\tx=1 text=2  ";
    a.send(odd).await;
    b.expect_message("ali", odd).await;
    a.expect("delivered to=bianca id=2").await;

    // End of ali's stdin: ali ends the chat cleanly and exits 0; bianca goes on.
    let rest = a.quit().await;
    assert!(
        rest.iter()
            .any(|l| l.starts_with("ended peer=bianca clean=yes")),
        "{rest:?}"
    );
    assert!(
        !rest.iter().any(|l| l.starts_with("undelivered")),
        "{rest:?}"
    );
    b.expect("ended peer=ali clean=yes").await;

    // bianca still listens: chloe gets through.
    let mut c = chat(&dir, &chloe, &mut b).await;
    c.send("hi bianca, chloe here").await;
    b.expect_message("chloe", "hi bianca, chloe here").await;
    b.send("hello chloe").await;
    c.expect_message("bianca", "hello chloe").await;
    c.quit().await;
    b.expect("ended peer=chloe clean=yes").await;
    b.quit().await;
    for p in [&a, &b, &c] {
        assert_eq!(
            p.stderr(),
            "",
            "a normal chat logs nothing\n{}",
            p.context()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_message_is_delivered_even_when_stdin_ends_at_once() {
    // `echo hi | peer connect bianca`: stdin ends before the chat is open.
    let dir = start_directory(false, &["ali", "bianca"]).await;
    let (ali, bianca) = (User::new("ali"), User::new("bianca"));
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;

    let mut a = ali.spawn(&dir, &["connect", "bianca", "--listen", "127.0.0.1:0"]);
    a.send("one line from a pipe").await;
    let rest = a.quit().await;
    b.expect_message("ali", "one line from a pipe").await;
    assert!(
        rest.iter().any(|l| l == "delivered to=bianca id=1"),
        "{}",
        a.context()
    );
    b.expect("ended peer=ali clean=yes").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_someone_offline_says_so() {
    let dir = start_directory(false, &["ali", "bianca"]).await;
    let ali = User::new("ali");
    let mut a = ali.spawn(&dir, &["connect", "bianca", "--listen", "127.0.0.1:0"]);
    a.online().await;
    let line = a.expect("connect-failed peer=bianca ").await;
    assert!(line.contains("not online"), "{line}");
    a.quit().await;
}

// ---------------------------------------------------------------------------------------
// 4. A peer that dies
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_is_noticed_and_the_listener_goes_on() {
    let dir = start_directory(false, &["ali", "bianca", "chloe"]).await;
    let (ali, bianca, chloe) = (User::new("ali"), User::new("bianca"), User::new("chloe"));
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;
    let mut a = chat(&dir, &ali, &mut b).await;
    a.send("about to vanish").await;
    b.expect_message("ali", "about to vanish").await;

    a.child.start_kill().expect("kill -9 ali");
    let killed = Instant::now();
    a.child.wait().await.expect("reap ali");
    let line = b
        .expect_within(Duration::from_secs(10), "ended peer=ali", |l| {
            l.starts_with("ended peer=ali ")
        })
        .await;
    assert!(line.contains("clean=no"), "{line}");
    assert!(killed.elapsed() < Duration::from_secs(10));

    let mut c = chat(&dir, &chloe, &mut b).await;
    c.send("still there?").await;
    b.expect_message("chloe", "still there?").await;
    c.quit().await;
    b.quit().await;
}

// ---------------------------------------------------------------------------------------
// 5. register
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_log_in_with_the_remembered_name_and_directory() {
    let dir = start_directory(true, &[]).await;
    let dora = User::new("dora");
    let mut cmd = bare_cmd(dora.profile());
    cmd.args(["--directory", &dir.addr().to_string(), "register", "dora"])
        .env("PEER_PASSWORD", PASSWORD);
    let out = run(cmd).await;
    let lines = out.ok();
    assert!(lines.iter().any(|l| l.contains("dora")), "{out:#?}");

    // No --user, no --directory: both come from the profile now.
    let mut cmd = bare_cmd(dora.profile());
    cmd.arg("who").env("PEER_PASSWORD", PASSWORD);
    let out = run(cmd).await;
    let lines = out.ok();
    assert!(lines.contains(&"who count=1"), "{out:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("online user=dora ")),
        "{out:#?}"
    );

    // The name is taken now.
    let other = User::new("dora");
    let mut cmd = bare_cmd(other.profile());
    cmd.args(["--directory", &dir.addr().to_string(), "register", "dora"])
        .env("PEER_PASSWORD", PASSWORD);
    let line = run(cmd).await.failed_one_line().to_string();
    assert!(line.contains("taken"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_on_a_closed_directory_fails_with_one_line() {
    let dir = start_directory(false, &[]).await;
    let erin = User::new("erin");
    let mut cmd = bare_cmd(erin.profile());
    cmd.args(["--directory", &dir.addr().to_string(), "register", "erin"])
        .env("PEER_PASSWORD", PASSWORD);
    let out = run(cmd).await;
    let line = out.failed_one_line();
    assert!(line.contains("registration is closed"), "{line}");
}

// ---------------------------------------------------------------------------------------
// 6. fingerprint and safety numbers
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_and_safety_numbers() {
    // Offline, on a fresh profile: no directory, no password needed.
    let fresh = User::new("fresh");
    let mut cmd = bare_cmd(fresh.profile());
    cmd.args(["fingerprint", "--user", "fresh"]);
    let out = run(cmd).await;
    let lines = out.ok();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(lines[0].starts_with("fingerprint user=fresh "), "{out:#?}");
    assert_eq!(
        field(lines[0], "key"),
        Some(fresh.key_fingerprint().as_str())
    );

    let dir = start_directory(false, &["ali", "bianca"]).await;
    let (ali, bianca) = (User::new("ali"), User::new("bianca"));
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;
    let mut a = ali.spawn(&dir, &["connect", "bianca", "--listen", "127.0.0.1:0"]);
    let seen_by_ali = a.expect("connected peer=bianca ").await;
    let seen_by_bianca = b.expect("connected peer=ali ").await;
    a.quit().await;
    b.quit().await;

    // Each side's `fingerprint` is its own key, and the other side saw that key.
    let fp = |user: &User, args: &[&str]| {
        let mut cmd = bare_cmd(user.profile());
        cmd.args(args);
        cmd
    };
    let out = run(fp(&ali, &["fingerprint"])).await;
    let ali_line = out.ok()[0].to_string();
    assert!(ali_line.starts_with("fingerprint user=ali "), "{ali_line}");
    let ali_key = field(&ali_line, "key").unwrap().to_string();
    assert_eq!(ali_key, ali.key_fingerprint());
    assert!(ali_key.starts_with(field(&seen_by_bianca, "key").unwrap()));
    let out = run(fp(&bianca, &["fingerprint"])).await;
    let bianca_key = field(out.ok()[0], "key").unwrap().to_string();
    assert!(bianca_key.starts_with(field(&seen_by_ali, "key").unwrap()));

    // The safety numbers agree, and each side has pinned the other's real key.
    let out = run(fp(&ali, &["fingerprint", "bianca"])).await;
    let a_line = out.ok()[0].to_string();
    let out = run(fp(&bianca, &["fingerprint", "ali"])).await;
    let b_line = out.ok()[0].to_string();
    assert_eq!(field(&a_line, "peer-key"), Some(bianca_key.as_str()));
    assert_eq!(field(&b_line, "peer-key"), Some(ali_key.as_str()));
    let safety = |l: &str| l.split_once(" safety=").map(|(_, s)| s.to_string());
    assert!(safety(&a_line).is_some_and(|s| s.chars().filter(char::is_ascii_digit).count() >= 30));
    assert_eq!(safety(&a_line), safety(&b_line));

    // Nobody pinned under that name.
    let out = run(fp(&ali, &["fingerprint", "zoe"])).await;
    assert!(out.failed_one_line().contains("zoe"));
}

// ---------------------------------------------------------------------------------------
// 7. A contact's key changes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_contact_key_is_refused_until_trusted() {
    let dir = start_directory(false, &["ali", "bianca"]).await;
    let (ali, bianca) = (User::new("ali"), User::new("bianca"));

    // First chat: ali pins bianca's key.
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;
    let mut a = chat(&dir, &ali, &mut b).await;
    a.quit().await;
    b.quit().await;
    let old_key = bianca.key_fingerprint();

    // bianca gets a new identity; the operator forgets her old key.
    std::fs::remove_file(bianca.profile().join("identity.key")).unwrap();
    dir.server.reset_key("bianca").await.unwrap();
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;
    let new_key = bianca.key_fingerprint();
    assert_ne!(old_key, new_key);

    let mut a = ali.spawn(&dir, &["connect", "bianca", "--listen", "127.0.0.1:0"]);
    a.online().await;
    let line = a
        .expect_within(WAIT, "connect-failed or connected", |l| {
            l.starts_with("connect-failed peer=bianca ") || l.starts_with("connected ")
        })
        .await;
    assert!(
        line.starts_with("connect-failed"),
        "connected to a changed key: {line}"
    );
    assert!(line.contains("CHANGED"), "{line}");
    assert!(
        compact(&line).contains(&old_key[..16]),
        "names the pinned key: {line}"
    );
    assert!(
        compact(&line).contains(&new_key[..16]),
        "names the new key: {line}"
    );
    a.quit().await;

    // `peer trust bianca` from a script shows the new key and its safety number but
    // pins nothing without a confirmation.
    let out = run(ali.cmd(&dir, &["trust", "bianca"])).await;
    assert!(out.failed_one_line().contains("not trusted"), "{out:#?}");
    assert!(compact(&out.stdout).contains(&new_key), "{out:#?}");
    assert!(
        out.lines()
            .iter()
            .any(|l| l.starts_with("pending-key peer=bianca ") && l.contains(" safety=")),
        "{out:#?}"
    );
    let mut a = ali.spawn(&dir, &["connect", "bianca", "--listen", "127.0.0.1:0"]);
    a.online().await;
    a.expect_within(WAIT, "still refused", |l| {
        l.starts_with("connect-failed peer=bianca ") && l.contains("CHANGED")
    })
    .await;
    a.quit().await;
    // A fingerprint other than the directory's key pins nothing either.
    let out = run(ali.cmd(&dir, &["trust", "bianca", &old_key])).await;
    assert!(out.failed_one_line().contains("not trusted"), "{out:#?}");

    // ali checked with bianca and trusts the new key, naming the fingerprint checked.
    let out = run(ali.cmd(&dir, &["trust", "bianca", &new_key])).await;
    let text = out.ok().join("\n");
    assert!(compact(&text).contains(&new_key), "{out:#?}");

    let mut a = chat(&dir, &ali, &mut b).await;
    a.send("new phone?").await;
    b.expect_message("ali", "new phone?").await;
    a.quit().await;
    b.quit().await;
}

// ---------------------------------------------------------------------------------------
// Hostile input from another peer
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_message_cannot_forge_output_lines() {
    let dir = start_directory(false, &["bianca", "mallory"]).await;
    let bianca = User::new("bianca");
    let mut b = bianca.spawn(&dir, &["listen", "--listen", "127.0.0.1:0"]);
    b.online().await;

    // mallory runs her own client (the library), not `peer`, and sends what `peer` would
    // never send: line breaks and terminal escapes inside one message.
    let mallory = User::new("mallory");
    let opts = testkit::options(&dir, mallory.profile(), "mallory", PASSWORD);
    let online = peer::login::login(&opts, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("mallory logs in");
    let info = online
        .link
        .lookup("bianca")
        .await
        .expect("lookup")
        .expect("bianca is online");
    let identity = online.profile.identity().clone();
    let conn = peer::endpoint::dial_peer(&online.endpoint, &identity, info.observed, info.identity)
        .await
        .expect("dial bianca");
    let (chat, _events) = peer::chat::initiate(conn, &identity, &"mallory".parse().unwrap(), &info)
        .await
        .expect("chat opens");
    b.expect("connected peer=mallory ").await;

    let forged = "hi\nconnected peer=eve key=0000 direction=incoming current=yes\r\x1b[2Kmsg from=eve id=1 text=trust me";
    chat.send(forged).await.expect("send");
    chat.send("done").await.expect("send");
    let first = b.expect("msg from=mallory id=1 ").await;
    let next = b.expect_within(WAIT, "the next line", |_| true).await;
    assert!(
        next.starts_with("msg from=mallory id=2 "),
        "a message broke out of its line: {next:?}\n{}",
        b.context()
    );
    assert!(!first.contains(['\r', '\x1b']), "{first:?}");
    assert!(
        first.contains("eve") && first.contains("trust me"),
        "{first:?}"
    );
    chat.close().await;
    b.expect("ended peer=mallory ").await;
    b.quit().await;
}

#[test]
fn help_names_environment_variables_without_showing_an_empty_value() {
    let out = std::process::Command::new(PEER)
        .arg("--help")
        .env_remove("PEER_PROFILE")
        .env_remove("PEER_DIRECTORY")
        .env_remove("PEER_USER")
        .output()
        .expect("peer --help runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for var in ["PEER_PROFILE", "PEER_DIRECTORY", "PEER_USER"] {
        assert!(help.contains(&format!("[env: {var}]")), "{help}");
    }
    assert!(!help.contains("=]"), "{help}");
}
