//! The SQLite backend (rusqlite, bundled): the default, zero set-up store.
//!
//! One connection lives on a dedicated thread; [`SqliteStore`] sends it closures over a
//! bounded channel and awaits their answers, so no runtime thread ever waits on SQLite
//! and a flood of requests queues (bounded) instead of spawning threads. Another process
//! (the `directory user ...` CLI) may use the same file at the same time: WAL mode lets
//! readers and one writer coexist, and a busy timeout makes writers wait their turn.
//!
//! Schema changes are numbered migrations recorded in `PRAGMA user_version`.

use std::os::unix::fs::OpenOptionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use proto::PublicKey;
use proto::sealed::SignedPrekey;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Account, DepositOutcome, NewMail, Store, StoreError, StoreFuture, StoredMail, StoredReceipt,
};
use crate::admin::ADMIN_LOCK_THRESHOLD;
use crate::lockout::{LockState, LockoutPolicy, Reservation};
use crate::mailbox::MailboxPolicy;
use crate::ticket::{MAX_TICKETS_PER_USER, TicketRecord};

pub use crate::config::DB_FILE;

/// Requests waiting for the database thread at most; further callers wait to enqueue.
const QUEUE: usize = 256;

/// How long a write waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order. `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: accounts and tickets.
    "CREATE TABLE accounts (
        name            TEXT PRIMARY KEY NOT NULL,
        password_hash   TEXT NOT NULL,
        identity        BLOB,
        admin           INTEGER NOT NULL DEFAULT 0,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        locked_until    INTEGER,
        lockout_count   INTEGER NOT NULL DEFAULT 0,
        created_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE tickets (
        hash        BLOB PRIMARY KEY NOT NULL,
        user        TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        identity    BLOB NOT NULL,
        expires_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX tickets_by_user ON tickets(user, expires_at);
    CREATE INDEX tickets_by_expiry ON tickets(expires_at);",
    // 2: room membership (goes with the account).
    "CREATE TABLE room_members (
        room       TEXT NOT NULL,
        user       TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        joined_at  INTEGER NOT NULL,
        PRIMARY KEY (room, user)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX room_members_by_user ON room_members(user, room);",
    // 3: sealed mail (see crate::mailbox). A row is waiting mail (state 0, blob set),
    // then a receipt for its sender (state 1 delivered / 2 expired, blob NULL) until
    // the sender collects it or it expires. AUTOINCREMENT: ids are never reused, so a
    // receipt can never be confused with a later message.
    "CREATE TABLE prekeys (
        user        TEXT PRIMARY KEY NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        key         BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        signature   BLOB NOT NULL
    ) STRICT;
    CREATE TABLE mail (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient     TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        sender        TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        state         INTEGER NOT NULL DEFAULT 0,
        blob          BLOB,
        size          INTEGER NOT NULL,
        deposited_at  INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX mail_waiting ON mail(recipient, id) WHERE state = 0;
    CREATE INDEX mail_receipts ON mail(sender, id) WHERE state != 0;
    CREATE INDEX mail_expiry ON mail(expires_at);",
    // 4: the ticket a ticket was redeemed for (at most one live successor); lockout
    // counters of names without an account (crate::lockout::UnknownNames).
    "ALTER TABLE tickets ADD COLUMN successor BLOB;
    CREATE TABLE unknown_logins (
        bucket          INTEGER PRIMARY KEY NOT NULL,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        locked_until    INTEGER,
        lockout_count   INTEGER NOT NULL DEFAULT 0
    ) STRICT;",
];

/// `mail.state` of a message waiting for its recipient.
const MAIL_WAITING: i64 = 0;
/// `mail.state` of a receipt: delivered.
const MAIL_DELIVERED: i64 = 1;
/// `mail.state` of a receipt: expired undelivered.
const MAIL_EXPIRED: i64 = 2;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Accounts and tickets in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStore({})", self.path.display())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, sets it up and runs pending
    /// migrations. The opening itself runs on the database thread.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite".into())
            .spawn(move || run(&thread_path, rx, ready_tx))
            .map_err(|source| StoreError::Io {
                what: "cannot start the database thread".into(),
                source,
            })?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => return Err(StoreError::Closed),
        }
        Ok(Self {
            path,
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` on the database thread and returns its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The database thread: open, migrate, then serve jobs until every sender is gone.
fn run(path: &Path, mut jobs: mpsc::Receiver<Job>, ready: oneshot::Sender<Result<(), StoreError>>) {
    let mut conn = match open_connection(path) {
        Ok(conn) => {
            let _ = ready.send(Ok(()));
            conn
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Some(job) = jobs.blocking_recv() {
        // A panic inside one job must not take the store down for everyone; its caller
        // sees its reply channel dropped, i.e. `StoreError::Closed`.
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("database job panicked");
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!("closing the database: {e}");
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    // The file holds password hashes: create it 0600 (SQLite gives its -wal and -shm
    // files the same mode).
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Io {
            what: format!("cannot create {}", path.display()),
            source,
        })?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unusable(format!(
            "cannot switch the database to WAL mode (got {mode})"
        )));
    }
    // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so a power loss
    // can roll back the last commits. A registration, a lockout or a ticket we have
    // answered for must survive kill -9 and power loss alike; these writes are rare
    // enough (one per login) that an fsync each is cheap.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Unusable(format!(
            "database schema version {version} is newer than this program ({known}); upgrade the directory"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tracing::info!("database migrated to schema version {}", i + 1);
    }
    Ok(tx.commit()?)
}

const ACCOUNT_COLUMNS: &str = "name, password_hash, identity, admin, failed_attempts, locked_until, lockout_count, created_at";

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    let identity: Option<[u8; 32]> = row.get(2)?;
    Ok(Account {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        identity: identity.map(PublicKey),
        admin: row.get(3)?,
        lock: LockState {
            failed_attempts: row.get(4)?,
            locked_until: row.get(5)?,
            lockout_count: row.get(6)?,
        },
        created_at: row.get(7)?,
    })
}

fn ticket_from_row(row: &Row<'_>) -> rusqlite::Result<TicketRecord> {
    Ok(TicketRecord {
        hash: row.get(0)?,
        user: row.get(1)?,
        identity: PublicKey(row.get(2)?),
        expires_at: row.get(3)?,
    })
}

/// Stores `name`'s lockout counters (inside the transaction that read them).
fn save_lock_state(conn: &Connection, name: &str, state: &LockState) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE accounts SET failed_attempts = ?2, locked_until = ?3, lockout_count = ?4
         WHERE name = ?1",
        params![
            name,
            state.failed_attempts,
            state.locked_until,
            state.lockout_count
        ],
    )?;
    Ok(())
}

fn load_account(conn: &Connection, name: &str) -> Result<Option<Account>, StoreError> {
    conn.query_row(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"),
        [name],
        account_from_row,
    )
    .optional()
    .map_err(StoreError::from)
}

impl Store for SqliteStore {
    fn create_account(&self, account: Account) -> StoreFuture<'_, ()> {
        Box::pin(self.call(move |conn| {
            let result = conn.execute(
                "INSERT INTO accounts (name, password_hash, identity, admin, failed_attempts,
                     locked_until, lockout_count, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    account.name,
                    account.password_hash,
                    account.identity.map(|k| k.0),
                    account.admin,
                    account.lock.failed_attempts,
                    account.lock.locked_until,
                    account.lock.lockout_count,
                    account.created_at,
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Exists(account.name))
                }
                Err(e) => Err(e.into()),
            }
        }))
    }

    fn account(&self, name: &str) -> StoreFuture<'_, Option<Account>> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| load_account(conn, &name)))
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(self.call(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"
            ))?;
            let rows = stmt.query_map([], account_from_row)?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)
        }))
    }

    fn remove_account(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            // Tickets go with it (ON DELETE CASCADE).
            let n = conn.execute("DELETE FROM accounts WHERE name = ?1", [&name])?;
            Ok(n > 0)
        }))
    }

    fn set_identity_if_unset(
        &self,
        name: &str,
        identity: PublicKey,
    ) -> StoreFuture<'_, Option<PublicKey>> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE accounts SET identity = ?2 WHERE name = ?1 AND identity IS NULL",
                params![name, identity.0],
            )?;
            let key: Option<Option<[u8; 32]>> = tx
                .query_row(
                    "SELECT identity FROM accounts WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            Ok(key.flatten().map(PublicKey))
        }))
    }

    fn reset_identity(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE accounts SET identity = NULL WHERE name = ?1",
                [&name],
            )?;
            tx.execute("DELETE FROM tickets WHERE user = ?1", [&name])?;
            tx.commit()?;
            Ok(n > 0)
        }))
    }

    fn record_failure(
        &self,
        name: &str,
        now: i64,
        policy: LockoutPolicy,
    ) -> StoreFuture<'_, Option<LockState>> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(account) = load_account(&tx, &name)? else {
                return Ok(None);
            };
            let state = policy.after_failure(account.lock, now);
            save_lock_state(&tx, &name, &state)?;
            tx.commit()?;
            Ok(Some(state))
        }))
    }

    fn reserve_attempt(
        &self,
        name: &str,
        now: i64,
        policy: LockoutPolicy,
        past_lock: bool,
    ) -> StoreFuture<'_, Option<Reservation>> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(account) = load_account(&tx, &name)? else {
                return Ok(None);
            };
            let reservation = policy.reserve(account.lock, now, past_lock);
            if let Reservation::Granted(state) = reservation {
                save_lock_state(&tx, &name, &state)?;
                tx.commit()?;
            }
            Ok(Some(reservation))
        }))
    }

    fn reserve_unknown(
        &self,
        bucket: u32,
        now: i64,
        policy: LockoutPolicy,
    ) -> StoreFuture<'_, Reservation> {
        Box::pin(self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state = unknown_lock(&tx, bucket)?;
            let reservation = policy.reserve(state, now, false);
            if let Reservation::Granted(state) = reservation {
                tx.execute(
                    "INSERT INTO unknown_logins (bucket, failed_attempts, locked_until, lockout_count)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (bucket) DO UPDATE SET failed_attempts = ?2,
                         locked_until = ?3, lockout_count = ?4",
                    params![
                        bucket,
                        state.failed_attempts,
                        state.locked_until,
                        state.lockout_count
                    ],
                )?;
                tx.commit()?;
            }
            Ok(reservation)
        }))
    }

    fn unknown_lock(&self, bucket: u32) -> StoreFuture<'_, LockState> {
        Box::pin(self.call(move |conn| unknown_lock(conn, bucket)))
    }

    fn record_success(&self, name: &str, now: i64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        let admin_lock = now.saturating_add(ADMIN_LOCK_THRESHOLD as i64);
        Box::pin(self.call(move |conn| {
            let n = conn.execute(
                "UPDATE accounts SET failed_attempts = 0, lockout_count = 0, locked_until = NULL
                     WHERE name = ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
                params![name, admin_lock],
            )?;
            Ok(n > 0)
        }))
    }

    fn set_password(
        &self,
        name: &str,
        password_hash: String,
        keep: Option<[u8; 32]>,
    ) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE accounts SET password_hash = ?2, failed_attempts = 0
                     WHERE name = ?1",
                params![name, password_hash],
            )?;
            tx.execute(
                "DELETE FROM tickets WHERE user = ?1 AND hash IS NOT ?2",
                params![name, keep],
            )?;
            tx.commit()?;
            Ok(n > 0)
        }))
    }

    fn unlock(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(self.call(move |conn| {
            let n = conn.execute(
                "UPDATE accounts SET failed_attempts = 0, lockout_count = 0, locked_until = NULL
                     WHERE name = ?1",
                [&name],
            )?;
            Ok(n > 0)
        }))
    }

    fn insert_ticket(&self, ticket: TicketRecord, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_ticket(&tx, &ticket, now)?;
            Ok(tx.commit()?)
        }))
    }

    fn ticket(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<TicketRecord>> {
        Box::pin(self.call(move |conn| {
            conn.query_row(
                "SELECT hash, user, identity, expires_at FROM tickets WHERE hash = ?1",
                [hash],
                ticket_from_row,
            )
            .optional()
            .map_err(StoreError::from)
        }))
    }

    fn replace_ticket(
        &self,
        old: [u8; 32],
        new: TicketRecord,
        now: i64,
        grace_until: i64,
    ) -> StoreFuture<'_, bool> {
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let successor: Option<Option<[u8; 32]>> = tx
                .query_row(
                    "SELECT successor FROM tickets WHERE hash = ?1 AND expires_at > ?2",
                    params![old, now],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(mut successor) = successor else {
                return Ok(false);
            };
            // Redeemed before (within the grace): that successor, and any it was
            // redeemed for in turn, die; the chain is bounded by the per-user cap.
            for _ in 0..=MAX_TICKETS_PER_USER {
                let Some(hash) = successor else { break };
                successor = tx
                    .query_row(
                        "DELETE FROM tickets WHERE hash = ?1 RETURNING successor",
                        [hash],
                        |r| r.get(0),
                    )
                    .optional()?
                    .flatten();
            }
            tx.execute(
                "UPDATE tickets SET expires_at = MIN(expires_at, ?2), successor = ?3
                 WHERE hash = ?1",
                params![old, grace_until, new.hash],
            )?;
            insert_ticket(&tx, &new, now)?;
            tx.commit()?;
            Ok(true)
        }))
    }

    fn delete_ticket(&self, hash: [u8; 32]) -> StoreFuture<'_, bool> {
        Box::pin(self.call(move |conn| {
            conn.execute("DELETE FROM tickets WHERE hash = ?1", [hash])
                .map(|n| n > 0)
                .map_err(StoreError::from)
        }))
    }

    fn purge_expired_tickets(&self, now: i64) -> StoreFuture<'_, usize> {
        Box::pin(self.call(move |conn| {
            conn.execute("DELETE FROM tickets WHERE expires_at <= ?1", [now])
                .map_err(StoreError::from)
        }))
    }

    fn join_room(&self, room: &str, user: &str, now: i64) -> StoreFuture<'_, bool> {
        let (room, user) = (room.to_string(), user.to_string());
        Box::pin(self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO room_members (room, user, joined_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![room, user, now],
            )
            .map(|n| n > 0)
            .map_err(StoreError::from)
        }))
    }

    fn leave_room(&self, room: &str, user: &str) -> StoreFuture<'_, bool> {
        let (room, user) = (room.to_string(), user.to_string());
        Box::pin(self.call(move |conn| {
            conn.execute(
                "DELETE FROM room_members WHERE room = ?1 AND user = ?2",
                [&room, &user],
            )
            .map(|n| n > 0)
            .map_err(StoreError::from)
        }))
    }

    fn room_members(&self, room: &str) -> StoreFuture<'_, Vec<String>> {
        let room = room.to_string();
        Box::pin(self.call(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT user FROM room_members WHERE room = ?1 ORDER BY user")?;
            let rows = stmt.query_map([&room], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(StoreError::from)
        }))
    }

    fn user_rooms(&self, user: &str) -> StoreFuture<'_, Vec<String>> {
        let user = user.to_string();
        Box::pin(self.call(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT room FROM room_members WHERE user = ?1 ORDER BY room")?;
            let rows = stmt.query_map([&user], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(StoreError::from)
        }))
    }

    fn rooms(&self) -> StoreFuture<'_, Vec<(String, u32)>> {
        Box::pin(self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT room, COUNT(*) FROM room_members GROUP BY room ORDER BY room",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<(String, u32)>, _>>()
                .map_err(StoreError::from)
        }))
    }

    fn set_prekey(&self, user: &str, prekey: SignedPrekey) -> StoreFuture<'_, bool> {
        let user = user.to_string();
        Box::pin(self.call(move |conn| {
            let n = conn.execute(
                "INSERT INTO prekeys (user, key, created_at, signature)
                     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM accounts WHERE name = ?1)
                     ON CONFLICT (user) DO UPDATE SET
                         key = excluded.key, created_at = excluded.created_at,
                         signature = excluded.signature
                     WHERE excluded.created_at >= prekeys.created_at",
                params![user, prekey.key, prekey.created_at, prekey.signature.0],
            )?;
            Ok(n > 0)
        }))
    }

    fn prekey(&self, user: &str) -> StoreFuture<'_, Option<SignedPrekey>> {
        let user = user.to_string();
        Box::pin(self.call(move |conn| {
            conn.query_row(
                "SELECT key, created_at, signature FROM prekeys WHERE user = ?1",
                [&user],
                |r| {
                    Ok(SignedPrekey {
                        key: r.get(0)?,
                        created_at: r.get(1)?,
                        signature: proto::Signature(r.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(StoreError::from)
        }))
    }

    fn deposit_mail(
        &self,
        mail: NewMail,
        policy: MailboxPolicy,
    ) -> StoreFuture<'_, DepositOutcome> {
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (messages, bytes): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM mail
                     WHERE recipient = ?1 AND state = ?2 AND expires_at > ?3",
                params![mail.recipient, MAIL_WAITING, mail.deposited_at],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (messages, bytes) = (messages as u64, bytes as u64);
            if messages + 1 > u64::from(policy.max_messages)
                || bytes + mail.blob.len() as u64 > policy.max_bytes
            {
                return Ok(DepositOutcome::Full { messages, bytes });
            }
            let (messages, bytes): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM mail
                     WHERE recipient = ?1 AND sender = ?2 AND state = ?3 AND expires_at > ?4",
                params![mail.recipient, mail.sender, MAIL_WAITING, mail.deposited_at],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (messages, bytes) = (messages as u64, bytes as u64);
            if messages + 1 > u64::from(policy.max_messages_per_sender)
                || bytes + mail.blob.len() as u64 > policy.max_bytes_per_sender
            {
                return Ok(DepositOutcome::SenderFull { messages, bytes });
            }
            let total: i64 = tx.query_row(
                "SELECT COALESCE(SUM(size), 0) FROM mail WHERE state = ?1 AND expires_at > ?2",
                params![MAIL_WAITING, mail.deposited_at],
                |r| r.get(0),
            )?;
            if total as u64 + mail.blob.len() as u64 > policy.max_total_bytes {
                return Ok(DepositOutcome::StoreFull);
            }
            tx.execute(
                "INSERT INTO mail (recipient, sender, state, blob, size, deposited_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    mail.recipient,
                    mail.sender,
                    MAIL_WAITING,
                    mail.blob,
                    mail.blob.len() as i64,
                    mail.deposited_at,
                    mail.expires_at
                ],
            )?;
            let id = tx.last_insert_rowid() as u64;
            tx.commit()?;
            Ok(DepositOutcome::Stored { id })
        }))
    }

    fn waiting_mail(
        &self,
        user: &str,
        now: i64,
        max_bytes: usize,
    ) -> StoreFuture<'_, (Vec<StoredMail>, bool)> {
        let user = user.to_string();
        Box::pin(self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, deposited_at, blob FROM mail
                     WHERE recipient = ?1 AND state = ?2 AND expires_at > ?3 ORDER BY id",
            )?;
            let mut rows = stmt.query(params![user, MAIL_WAITING, now])?;
            let (mut out, mut used) = (Vec::new(), 0usize);
            while let Some(row) = rows.next()? {
                let blob: Vec<u8> = row.get(2)?;
                if !out.is_empty() && used + blob.len() > max_bytes {
                    return Ok((out, true));
                }
                used += blob.len();
                out.push(StoredMail {
                    id: row.get::<_, i64>(0)? as u64,
                    deposited_at: row.get(1)?,
                    blob,
                });
            }
            Ok((out, false))
        }))
    }

    fn ack_mail(
        &self,
        user: &str,
        ids: Vec<u64>,
        now: i64,
        keep_until: i64,
    ) -> StoreFuture<'_, Vec<String>> {
        let user = user.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut senders = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE mail SET state = ?3, blob = NULL, expires_at = ?4
                         WHERE id = ?1 AND recipient = ?2 AND state = ?5 AND expires_at > ?6
                         RETURNING sender",
                )?;
                for id in ids {
                    let Ok(id) = i64::try_from(id) else { continue };
                    let sender: Option<String> = stmt
                        .query_row(
                            params![id, user, MAIL_DELIVERED, keep_until, MAIL_WAITING, now],
                            |r| r.get(0),
                        )
                        .optional()?;
                    senders.extend(sender);
                }
            }
            tx.commit()?;
            Ok(senders)
        }))
    }

    fn take_receipts(&self, sender: &str) -> StoreFuture<'_, Vec<StoredReceipt>> {
        let sender = sender.to_string();
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let receipts = {
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM mail WHERE sender = ?1 AND state != ?2
                         RETURNING id, recipient, state",
                )?;
                let rows = stmt.query_map(params![sender, MAIL_WAITING], |r| {
                    Ok(StoredReceipt {
                        id: r.get::<_, i64>(0)? as u64,
                        recipient: r.get(1)?,
                        delivered: r.get::<_, i64>(2)? == MAIL_DELIVERED,
                    })
                })?;
                let mut v = rows.collect::<Result<Vec<_>, _>>()?;
                v.sort_by_key(|r| r.id);
                v
            };
            tx.commit()?;
            Ok(receipts)
        }))
    }

    fn expire_mail(&self, now: i64, keep_until: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM mail WHERE state != ?1 AND expires_at <= ?2",
                params![MAIL_WAITING, now],
            )?;
            let senders = {
                let mut stmt = tx.prepare_cached(
                    "UPDATE mail SET state = ?1, blob = NULL, expires_at = ?2
                         WHERE state = ?3 AND expires_at <= ?4 RETURNING sender",
                )?;
                let rows = stmt
                    .query_map(params![MAIL_EXPIRED, keep_until, MAIL_WAITING, now], |r| {
                        r.get(0)
                    })?;
                rows.collect::<Result<Vec<String>, _>>()?
            };
            tx.commit()?;
            Ok(senders)
        }))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Dropping the last sender ends the thread once queued jobs are done.
            drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
            let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(thread) = thread {
                tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .map_err(|e| StoreError::Unusable(format!("database thread: {e}")))?
                    .map_err(|_| StoreError::Unusable("database thread panicked".into()))?;
            }
            Ok(())
        })
    }
}

fn unknown_lock(conn: &Connection, bucket: u32) -> Result<LockState, StoreError> {
    conn.query_row(
        "SELECT failed_attempts, locked_until, lockout_count FROM unknown_logins
         WHERE bucket = ?1",
        [bucket],
        |r| {
            Ok(LockState {
                failed_attempts: r.get(0)?,
                locked_until: r.get(1)?,
                lockout_count: r.get(2)?,
            })
        },
    )
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(StoreError::from)
}

fn insert_ticket(conn: &Connection, ticket: &TicketRecord, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM tickets WHERE user = ?1 AND expires_at <= ?2",
        params![ticket.user, now],
    )?;
    conn.execute(
        "INSERT INTO tickets (hash, user, identity, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            ticket.hash,
            ticket.user,
            ticket.identity.0,
            ticket.expires_at
        ],
    )?;
    // Keep only the newest few per user: tickets from many logins must not pile up.
    conn.execute(
        "DELETE FROM tickets WHERE user = ?1 AND hash NOT IN (
             SELECT hash FROM tickets WHERE user = ?1 ORDER BY expires_at DESC LIMIT ?2)",
        params![ticket.user, MAX_TICKETS_PER_USER as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What only SQLite has. Everything a store must do is tested for every backend by
    //! the shared suite in `store/tests.rs`.
    use super::*;

    #[tokio::test]
    async fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let store = SqliteStore::open(&path).await.unwrap();
        let (mode, sync, version) = store
            .call(|conn| {
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok((mode, sync, version))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(version, MIGRATIONS.len() as i64);
        store.close().await.unwrap();
    }
}
