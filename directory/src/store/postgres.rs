//! The PostgreSQL backend (tokio-postgres + deadpool-postgres): for several directory
//! instances sharing one user base.
//!
//! Every method is one statement or one transaction on a pooled connection, so the
//! guarantees of [`Store`] hold across instances: a failed login locks the account row
//! (`SELECT ... FOR UPDATE`) before counting, a ticket is redeemed by the one `DELETE`
//! that finds it, a deposit locks its recipient's row before checking the quota.
//!
//! Schema changes are numbered migrations recorded in the table `natter_schema`, run at
//! start inside one transaction under an advisory lock, so instances starting together
//! migrate once. Tables live in the connection's current schema (`search_path`), so one
//! database can hold several independent deployments (the tests use one schema each).
//!
//! No TLS: the database is expected on loopback or a private network. The cross-instance
//! part (presence, notifications) is [`crate::cluster::postgres`], on the same database.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use proto::PublicKey;
use proto::sealed::SignedPrekey;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::{
    Account, DepositOutcome, NewMail, Store, StoreError, StoreFuture, StoredMail, StoredReceipt,
};
use crate::admin::ADMIN_LOCK_THRESHOLD;
use crate::lockout::{LockState, LockoutPolicy, Reservation};
use crate::mailbox::MailboxPolicy;
use crate::ticket::{MAX_TICKETS_PER_USER, TicketRecord};

/// Connections one instance keeps to the database at most.
pub const POOL_SIZE: usize = 16;

/// The migrations, in order. `natter_schema.version` records how many have run.
/// (`user` is a reserved word in PostgreSQL: the user columns are `username`.)
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: accounts and tickets.
    "CREATE TABLE accounts (
        name            TEXT PRIMARY KEY,
        password_hash   TEXT NOT NULL,
        identity        BYTEA,
        admin           BOOLEAN NOT NULL DEFAULT FALSE,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        locked_until    BIGINT,
        lockout_count   INTEGER NOT NULL DEFAULT 0,
        created_at      BIGINT NOT NULL
    );
    CREATE TABLE tickets (
        hash        BYTEA PRIMARY KEY,
        username    TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        identity    BYTEA NOT NULL,
        expires_at  BIGINT NOT NULL
    );
    CREATE INDEX tickets_by_user ON tickets(username, expires_at);
    CREATE INDEX tickets_by_expiry ON tickets(expires_at);",
    // 2: room membership (goes with the account).
    "CREATE TABLE room_members (
        room       TEXT NOT NULL,
        username   TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        joined_at  BIGINT NOT NULL,
        PRIMARY KEY (room, username)
    );
    CREATE INDEX room_members_by_user ON room_members(username, room);",
    // 3: sealed mail; see the SQLite backend for the row life cycle. Identity ids are
    // never reused.
    "CREATE TABLE prekeys (
        username    TEXT PRIMARY KEY REFERENCES accounts(name) ON DELETE CASCADE,
        key         BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        signature   BYTEA NOT NULL
    );
    CREATE TABLE mail (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        recipient     TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        sender        TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        state         SMALLINT NOT NULL DEFAULT 0,
        blob          BYTEA,
        size          BIGINT NOT NULL,
        deposited_at  BIGINT NOT NULL,
        expires_at    BIGINT NOT NULL
    );
    CREATE INDEX mail_waiting ON mail(recipient, id) WHERE state = 0;
    CREATE INDEX mail_receipts ON mail(sender, id) WHERE state <> 0;
    CREATE INDEX mail_expiry ON mail(expires_at);",
    // 4: presence across instances (see crate::cluster::postgres). An instance's rows go
    // when its heartbeat stops.
    "CREATE TABLE instances (
        id            TEXT PRIMARY KEY,
        started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE presence (
        username   TEXT PRIMARY KEY,
        instance   TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        conn       BIGINT NOT NULL,
        info       TEXT NOT NULL,
        since      TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX presence_by_instance ON presence(instance);",
    // 5: where each instance takes relay links from the others (crate::relay::forward).
    "ALTER TABLE instances ADD COLUMN relay_address TEXT;",
    // 6: the ticket a ticket was redeemed for (at most one live successor); lockout
    // counters of names without an account (crate::lockout::UnknownNames).
    "ALTER TABLE tickets ADD COLUMN successor BYTEA;
    CREATE TABLE unknown_logins (
        bucket          INTEGER PRIMARY KEY,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        locked_until    BIGINT,
        lockout_count   INTEGER NOT NULL DEFAULT 0
    );",
];

/// `mail.state` of a message waiting for its recipient.
const MAIL_WAITING: i16 = 0;
/// `mail.state` of a receipt: delivered.
const MAIL_DELIVERED: i16 = 1;
/// `mail.state` of a receipt: expired undelivered.
const MAIL_EXPIRED: i16 = 2;

/// Accounts, tickets, rooms and mail in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.write_str("PostgresStore")
    }
}

/// Parses a connection URL or key=value string.
pub fn parse_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    tokio_postgres::Config::from_str(url).map_err(StoreError::Url)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`) and runs
    /// pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(parse_config(url)?).await
    }

    /// Connects with an already built configuration and runs pending migrations.
    pub async fn open_with(config: tokio_postgres::Config) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(POOL_SIZE).build()?;
        let store = Self { pool, config };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool (the cluster part shares it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The connection settings (the cluster's listener opens its own connection).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    async fn conn(&self) -> Result<Object, StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            e => StoreError::Pool(e),
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        // One migrator per schema at a time; others wait here, then find nothing to do.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('natter_schema:' || current_schema()))",
            &[],
        )
        .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS natter_schema (version INTEGER NOT NULL)")
            .await?;
        let version: i32 = match tx
            .query_opt("SELECT version FROM natter_schema", &[])
            .await?
        {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO natter_schema (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        let known = MIGRATIONS.len() as i32;
        if version > known {
            return Err(StoreError::Unusable(format!(
                "database schema version {version} is newer than this program ({known}); upgrade the directory"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await?;
            tx.execute("UPDATE natter_schema SET version = $1", &[&(i as i32 + 1)])
                .await?;
            tracing::info!("database migrated to schema version {}", i + 1);
        }
        Ok(tx.commit().await?)
    }
}

/// A PostgreSQL error for [`StoreError`]'s message: the SQLSTATE code and the server's
/// message when the server sent one, else the driver's.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| StoreError::Corrupt(format!("{what} of {} bytes", b.len())))
}

fn count(n: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

const ACCOUNT_COLUMNS: &str = "name, password_hash, identity, admin, failed_attempts, locked_until, lockout_count, created_at";

fn account_from_row(row: &Row) -> Result<Account, StoreError> {
    let identity: Option<Vec<u8>> = row.get(2);
    Ok(Account {
        name: row.get(0),
        password_hash: row.get(1),
        identity: identity
            .map(|k| key32(k, "identity key").map(PublicKey))
            .transpose()?,
        admin: row.get(3),
        lock: LockState {
            failed_attempts: count(row.get(4), "failed_attempts")?,
            locked_until: row.get(5),
            lockout_count: count(row.get(6), "lockout_count")?,
        },
        created_at: row.get(7),
    })
}

fn ticket_from_row(row: &Row) -> Result<TicketRecord, StoreError> {
    Ok(TicketRecord {
        hash: key32(row.get(0), "ticket hash")?,
        user: row.get(1),
        identity: PublicKey(key32(row.get(2), "identity key")?),
        expires_at: row.get(3),
    })
}

/// The counters in a row of `failed_attempts, locked_until, lockout_count`.
fn lock_state_of(row: &Row) -> Result<LockState, StoreError> {
    Ok(LockState {
        failed_attempts: count(row.get(0), "failed_attempts")?,
        locked_until: row.get(1),
        lockout_count: count(row.get(2), "lockout_count")?,
    })
}

fn lock_state_params(s: &LockState) -> (i32, Option<i64>, i32) {
    (
        i32::try_from(s.failed_attempts).unwrap_or(i32::MAX),
        s.locked_until,
        i32::try_from(s.lockout_count).unwrap_or(i32::MAX),
    )
}

/// Stores `name`'s lockout counters (inside the transaction that read them).
async fn save_lock_state(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    state: &LockState,
) -> Result<(), StoreError> {
    let (failed, locked_until, lockouts) = lock_state_params(state);
    tx.execute(
        "UPDATE accounts SET failed_attempts = $2, locked_until = $3, lockout_count = $4
         WHERE name = $1",
        &[&name, &failed, &locked_until, &lockouts],
    )
    .await?;
    Ok(())
}

async fn insert_ticket(
    client: &deadpool_postgres::Transaction<'_>,
    ticket: &TicketRecord,
    now: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM tickets WHERE username = $1 AND expires_at <= $2",
            &[&ticket.user, &now],
        )
        .await?;
    client
        .execute(
            "INSERT INTO tickets (hash, username, identity, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &&ticket.hash[..],
                &ticket.user,
                &&ticket.identity.0[..],
                &ticket.expires_at,
            ],
        )
        .await?;
    // Keep only the newest few per user: tickets from many logins must not pile up.
    client
        .execute(
            "DELETE FROM tickets WHERE username = $1 AND hash NOT IN (
                 SELECT hash FROM tickets WHERE username = $1 ORDER BY expires_at DESC LIMIT $2)",
            &[&ticket.user, &(MAX_TICKETS_PER_USER as i64)],
        )
        .await?;
    Ok(())
}

impl Store for PostgresStore {
    fn create_account(&self, account: Account) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.conn().await?;
            let (failed, locked_until, lockouts) = lock_state_params(&account.lock);
            let identity = account.identity.map(|k| k.0.to_vec());
            let result = client
                .execute(
                    "INSERT INTO accounts (name, password_hash, identity, admin, failed_attempts,
                         locked_until, lockout_count, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &account.name,
                        &account.password_hash,
                        &identity,
                        &account.admin,
                        &failed,
                        &locked_until,
                        &lockouts,
                        &account.created_at,
                    ],
                )
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(StoreError::Exists(account.name))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn account(&self, name: &str) -> StoreFuture<'_, Option<Account>> {
        let name = name.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&name])
                .await?
                .as_ref()
                .map(account_from_row)
                .transpose()
        })
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            let client = self.conn().await?;
            client
                .query(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name COLLATE \"C\""),
                    &[],
                )
                .await?
                .iter()
                .map(account_from_row)
                .collect()
        })
    }

    fn remove_account(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            // Tickets, rooms and mail go with it (ON DELETE CASCADE).
            let n = client
                .execute("DELETE FROM accounts WHERE name = $1", &[&name])
                .await?;
            Ok(n > 0)
        })
    }

    fn set_identity_if_unset(
        &self,
        name: &str,
        identity: PublicKey,
    ) -> StoreFuture<'_, Option<PublicKey>> {
        let name = name.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            // One statement: the UPDATE takes the row lock, so of two racing first logins
            // exactly one sets its key and both read the winner's.
            let row = client
                .query_opt(
                    "WITH set AS (
                         UPDATE accounts SET identity = $2
                         WHERE name = $1 AND identity IS NULL RETURNING identity)
                     SELECT identity FROM set
                     UNION ALL
                     SELECT identity FROM accounts
                     WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM set)",
                    &[&name, &&identity.0[..]],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let key: Option<Vec<u8>> = row.get(0);
            key.map(|k| key32(k, "identity key").map(PublicKey))
                .transpose()
        })
    }

    fn reset_identity(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE accounts SET identity = NULL WHERE name = $1",
                    &[&name],
                )
                .await?;
            tx.execute("DELETE FROM tickets WHERE username = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    fn record_failure(
        &self,
        name: &str,
        now: i64,
        policy: LockoutPolicy,
    ) -> StoreFuture<'_, Option<LockState>> {
        let name = name.to_string();
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            // The row lock serialises failures from every instance: guessing against
            // two instances counts exactly like guessing against one.
            let row = tx
                .query_opt(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1 FOR UPDATE"),
                    &[&name],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let account = account_from_row(&row)?;
            let state = policy.after_failure(account.lock, now);
            save_lock_state(&tx, &name, &state).await?;
            tx.commit().await?;
            Ok(Some(state))
        })
    }

    fn reserve_attempt(
        &self,
        name: &str,
        now: i64,
        policy: LockoutPolicy,
        past_lock: bool,
    ) -> StoreFuture<'_, Option<Reservation>> {
        let name = name.to_string();
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            // The row lock serialises attempts from every instance.
            let row = tx
                .query_opt(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1 FOR UPDATE"),
                    &[&name],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let account = account_from_row(&row)?;
            let reservation = policy.reserve(account.lock, now, past_lock);
            if let Reservation::Granted(state) = reservation {
                save_lock_state(&tx, &name, &state).await?;
                tx.commit().await?;
            }
            Ok(Some(reservation))
        })
    }

    fn reserve_unknown(
        &self,
        bucket: u32,
        now: i64,
        policy: LockoutPolicy,
    ) -> StoreFuture<'_, Reservation> {
        let bucket = i32::try_from(bucket).unwrap_or(i32::MAX);
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO unknown_logins (bucket) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&bucket],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT failed_attempts, locked_until, lockout_count FROM unknown_logins
                     WHERE bucket = $1 FOR UPDATE",
                    &[&bucket],
                )
                .await?;
            let reservation = policy.reserve(lock_state_of(&row)?, now, false);
            if let Reservation::Granted(state) = reservation {
                let (failed, locked_until, lockouts) = lock_state_params(&state);
                tx.execute(
                    "UPDATE unknown_logins SET failed_attempts = $2, locked_until = $3,
                         lockout_count = $4
                     WHERE bucket = $1",
                    &[&bucket, &failed, &locked_until, &lockouts],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(reservation)
        })
    }

    fn unknown_lock(&self, bucket: u32) -> StoreFuture<'_, LockState> {
        let bucket = i32::try_from(bucket).unwrap_or(i32::MAX);
        Box::pin(async move {
            let client = self.conn().await?;
            let row = client
                .query_opt(
                    "SELECT failed_attempts, locked_until, lockout_count FROM unknown_logins
                     WHERE bucket = $1",
                    &[&bucket],
                )
                .await?;
            Ok(row
                .as_ref()
                .map(lock_state_of)
                .transpose()?
                .unwrap_or_default())
        })
    }

    fn record_success(&self, name: &str, now: i64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        let admin_lock = now.saturating_add(ADMIN_LOCK_THRESHOLD as i64);
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute(
                    "UPDATE accounts SET failed_attempts = 0, lockout_count = 0, locked_until = NULL
                     WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $2)",
                    &[&name, &admin_lock],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn set_password(
        &self,
        name: &str,
        password_hash: String,
        keep: Option<[u8; 32]>,
    ) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE accounts SET password_hash = $2, failed_attempts = 0
                     WHERE name = $1",
                    &[&name, &password_hash],
                )
                .await?;
            let keep = keep.map(|k| k.to_vec());
            tx.execute(
                "DELETE FROM tickets WHERE username = $1 AND hash IS DISTINCT FROM $2",
                &[&name, &keep],
            )
            .await?;
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    fn unlock(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute(
                    "UPDATE accounts SET failed_attempts = 0, lockout_count = 0, locked_until = NULL
                     WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn insert_ticket(&self, ticket: TicketRecord, now: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            insert_ticket(&tx, &ticket, now).await?;
            Ok(tx.commit().await?)
        })
    }

    fn ticket(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<TicketRecord>> {
        Box::pin(async move {
            let client = self.conn().await?;
            client
                .query_opt(
                    "SELECT hash, username, identity, expires_at FROM tickets WHERE hash = $1",
                    &[&&hash[..]],
                )
                .await?
                .as_ref()
                .map(ticket_from_row)
                .transpose()
        })
    }

    fn replace_ticket(
        &self,
        old: [u8; 32],
        new: TicketRecord,
        now: i64,
        grace_until: i64,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            // The row lock orders redemptions from every instance.
            let row = tx
                .query_opt(
                    "SELECT successor FROM tickets WHERE hash = $1 AND expires_at > $2
                     FOR UPDATE",
                    &[&&old[..], &now],
                )
                .await?;
            let Some(row) = row else { return Ok(false) };
            let mut successor: Option<Vec<u8>> = row.get(0);
            // Redeemed before (within the grace): that successor, and any it was
            // redeemed for in turn, die; the chain is bounded by the per-user cap.
            for _ in 0..=MAX_TICKETS_PER_USER {
                let Some(hash) = successor else { break };
                successor = tx
                    .query_opt(
                        "DELETE FROM tickets WHERE hash = $1 RETURNING successor",
                        &[&hash],
                    )
                    .await?
                    .and_then(|row| row.get::<_, Option<Vec<u8>>>(0));
            }
            tx.execute(
                "UPDATE tickets SET expires_at = LEAST(expires_at, $2), successor = $3
                 WHERE hash = $1",
                &[&&old[..], &grace_until, &&new.hash[..]],
            )
            .await?;
            insert_ticket(&tx, &new, now).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn delete_ticket(&self, hash: [u8; 32]) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute("DELETE FROM tickets WHERE hash = $1", &[&&hash[..]])
                .await?;
            Ok(n > 0)
        })
    }

    fn purge_expired_tickets(&self, now: i64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute("DELETE FROM tickets WHERE expires_at <= $1", &[&now])
                .await?;
            Ok(n as usize)
        })
    }

    fn join_room(&self, room: &str, user: &str, now: i64) -> StoreFuture<'_, bool> {
        let (room, user) = (room.to_string(), user.to_string());
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute(
                    "INSERT INTO room_members (room, username, joined_at) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&room, &user, &now],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn leave_room(&self, room: &str, user: &str) -> StoreFuture<'_, bool> {
        let (room, user) = (room.to_string(), user.to_string());
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute(
                    "DELETE FROM room_members WHERE room = $1 AND username = $2",
                    &[&room, &user],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn room_members(&self, room: &str) -> StoreFuture<'_, Vec<String>> {
        let room = room.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let rows = client
                .query(
                    "SELECT username FROM room_members WHERE room = $1
                     ORDER BY username COLLATE \"C\"",
                    &[&room],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn user_rooms(&self, user: &str) -> StoreFuture<'_, Vec<String>> {
        let user = user.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let rows = client
                .query(
                    "SELECT room FROM room_members WHERE username = $1 ORDER BY room COLLATE \"C\"",
                    &[&user],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn rooms(&self) -> StoreFuture<'_, Vec<(String, u32)>> {
        Box::pin(async move {
            let client = self.conn().await?;
            let rows = client
                .query(
                    "SELECT room, COUNT(*) FROM room_members GROUP BY room
                     ORDER BY room COLLATE \"C\"",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let n: i64 = r.get(1);
                    (r.get(0), u32::try_from(n).unwrap_or(u32::MAX))
                })
                .collect())
        })
    }

    fn set_prekey(&self, user: &str, prekey: SignedPrekey) -> StoreFuture<'_, bool> {
        let user = user.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let n = client
                .execute(
                    "INSERT INTO prekeys (username, key, created_at, signature)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM accounts WHERE name = $1)
                     ON CONFLICT (username) DO UPDATE SET
                         key = excluded.key, created_at = excluded.created_at,
                         signature = excluded.signature
                     WHERE excluded.created_at >= prekeys.created_at",
                    &[
                        &user,
                        &&prekey.key[..],
                        &prekey.created_at,
                        &&prekey.signature.0[..],
                    ],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn prekey(&self, user: &str) -> StoreFuture<'_, Option<SignedPrekey>> {
        let user = user.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let Some(row) = client
                .query_opt(
                    "SELECT key, created_at, signature FROM prekeys WHERE username = $1",
                    &[&user],
                )
                .await?
            else {
                return Ok(None);
            };
            let signature: Vec<u8> = row.get(2);
            let signature: [u8; 64] = signature
                .try_into()
                .map_err(|_| StoreError::Corrupt("prekey signature length".into()))?;
            Ok(Some(SignedPrekey {
                key: key32(row.get(0), "prekey")?,
                created_at: row.get(1),
                signature: proto::Signature(signature),
            }))
        })
    }

    fn deposit_mail(
        &self,
        mail: NewMail,
        policy: MailboxPolicy,
    ) -> StoreFuture<'_, DepositOutcome> {
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            // Deposits for one recipient queue on its account row, so two instances
            // cannot both squeeze in under the quota.
            tx.execute(
                "SELECT 1 FROM accounts WHERE name = $1 FOR NO KEY UPDATE",
                &[&mail.recipient],
            )
            .await?;
            let row = tx
                .query_one(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT FROM mail
                     WHERE recipient = $1 AND state = $2 AND expires_at > $3",
                    &[&mail.recipient, &MAIL_WAITING, &mail.deposited_at],
                )
                .await?;
            let (messages, bytes): (i64, i64) = (row.get(0), row.get(1));
            let (messages, bytes) = (messages as u64, bytes as u64);
            if messages + 1 > u64::from(policy.max_messages)
                || bytes + mail.blob.len() as u64 > policy.max_bytes
            {
                return Ok(DepositOutcome::Full { messages, bytes });
            }
            let row = tx
                .query_one(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT FROM mail
                     WHERE recipient = $1 AND sender = $2 AND state = $3 AND expires_at > $4",
                    &[
                        &mail.recipient,
                        &mail.sender,
                        &MAIL_WAITING,
                        &mail.deposited_at,
                    ],
                )
                .await?;
            let (messages, bytes): (i64, i64) = (row.get(0), row.get(1));
            let (messages, bytes) = (messages as u64, bytes as u64);
            if messages + 1 > u64::from(policy.max_messages_per_sender)
                || bytes + mail.blob.len() as u64 > policy.max_bytes_per_sender
            {
                return Ok(DepositOutcome::SenderFull { messages, bytes });
            }
            let row = tx
                .query_one(
                    "SELECT COALESCE(SUM(size), 0)::BIGINT FROM mail
                     WHERE state = $1 AND expires_at > $2",
                    &[&MAIL_WAITING, &mail.deposited_at],
                )
                .await?;
            let total: i64 = row.get(0);
            if total as u64 + mail.blob.len() as u64 > policy.max_total_bytes {
                return Ok(DepositOutcome::StoreFull);
            }
            let row = tx
                .query_one(
                    "INSERT INTO mail (recipient, sender, state, blob, size, deposited_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[
                        &mail.recipient,
                        &mail.sender,
                        &MAIL_WAITING,
                        &mail.blob,
                        &(mail.blob.len() as i64),
                        &mail.deposited_at,
                        &mail.expires_at,
                    ],
                )
                .await?;
            let id: i64 = row.get(0);
            tx.commit().await?;
            Ok(DepositOutcome::Stored { id: id as u64 })
        })
    }

    fn waiting_mail(
        &self,
        user: &str,
        now: i64,
        max_bytes: usize,
    ) -> StoreFuture<'_, (Vec<StoredMail>, bool)> {
        let user = user.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            // Sizes first, then only the blobs that fit: memory stays bounded by
            // `max_bytes` (plus one message) however much waits.
            let rows = client
                .query(
                    "SELECT id, size FROM mail
                     WHERE recipient = $1 AND state = $2 AND expires_at > $3 ORDER BY id",
                    &[&user, &MAIL_WAITING, &now],
                )
                .await?;
            let (mut ids, mut used, mut more) = (Vec::new(), 0usize, false);
            for row in &rows {
                let (id, size): (i64, i64) = (row.get(0), row.get(1));
                let size = size as usize;
                if !ids.is_empty() && used + size > max_bytes {
                    more = true;
                    break;
                }
                used += size;
                ids.push(id);
            }
            if ids.is_empty() {
                return Ok((Vec::new(), false));
            }
            let rows = client
                .query(
                    "SELECT id, deposited_at, blob FROM mail
                     WHERE id = ANY($1) AND recipient = $2 AND state = $3 ORDER BY id",
                    &[&ids, &user, &MAIL_WAITING],
                )
                .await?;
            let out = rows
                .iter()
                .map(|r| StoredMail {
                    id: r.get::<_, i64>(0) as u64,
                    deposited_at: r.get(1),
                    blob: r.get(2),
                })
                .collect();
            Ok((out, more))
        })
    }

    fn ack_mail(
        &self,
        user: &str,
        ids: Vec<u64>,
        now: i64,
        keep_until: i64,
    ) -> StoreFuture<'_, Vec<String>> {
        let user = user.to_string();
        Box::pin(async move {
            let ids: Vec<i64> = ids
                .into_iter()
                .filter_map(|i| i64::try_from(i).ok())
                .collect();
            let client = self.conn().await?;
            let rows = client
                .query(
                    "UPDATE mail SET state = $3, blob = NULL, expires_at = $4
                     WHERE id = ANY($1) AND recipient = $2 AND state = $5 AND expires_at > $6
                     RETURNING sender",
                    &[
                        &ids,
                        &user,
                        &MAIL_DELIVERED,
                        &keep_until,
                        &MAIL_WAITING,
                        &now,
                    ],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn take_receipts(&self, sender: &str) -> StoreFuture<'_, Vec<StoredReceipt>> {
        let sender = sender.to_string();
        Box::pin(async move {
            let client = self.conn().await?;
            let rows = client
                .query(
                    "DELETE FROM mail WHERE sender = $1 AND state <> $2
                     RETURNING id, recipient, state",
                    &[&sender, &MAIL_WAITING],
                )
                .await?;
            let mut receipts: Vec<StoredReceipt> = rows
                .iter()
                .map(|r| StoredReceipt {
                    id: r.get::<_, i64>(0) as u64,
                    recipient: r.get(1),
                    delivered: r.get::<_, i16>(2) == MAIL_DELIVERED,
                })
                .collect();
            receipts.sort_by_key(|r| r.id);
            Ok(receipts)
        })
    }

    fn expire_mail(&self, now: i64, keep_until: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM mail WHERE state <> $1 AND expires_at <= $2",
                &[&MAIL_WAITING, &now],
            )
            .await?;
            let rows = tx
                .query(
                    "UPDATE mail SET state = $1, blob = NULL, expires_at = $2
                     WHERE state = $3 AND expires_at <= $4 RETURNING sender",
                    &[&MAIL_EXPIRED, &keep_until, &MAIL_WAITING, &now],
                )
                .await?;
            tx.commit().await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.pool.close();
            Ok(())
        })
    }
}

/// Creates a fresh, empty schema in the database at `url` and returns a URL whose
/// connections use it (`options=-csearch_path=...`), with the schema's name. Tests and
/// trial runs use it to keep independent directories apart in one database.
pub async fn create_scratch_schema(url: &str) -> Result<(String, String), StoreError> {
    let (client, connection) = parse_config(url)?.connect(NoTls).await?;
    let task = tokio::spawn(connection);
    let schema = format!("natter_{:016x}", rand::random::<u64>());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await?;
    drop(client);
    let _ = task.await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok((
        format!("{url}{sep}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

/// For tests: the PostgreSQL URL in `NATTER_TEST_POSTGRES`. When it is unset, says
/// "skipped: NATTER_TEST_POSTGRES not set" and returns `None` — or panics when
/// `NATTER_REQUIRE_EXTRAS=1` (CI), where a skipped test is a failure.
#[doc(hidden)]
pub fn test_url_from_env() -> Option<String> {
    match std::env::var("NATTER_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("NATTER_REQUIRE_EXTRAS").as_deref() != Ok("1"),
                "NATTER_TEST_POSTGRES is not set and NATTER_REQUIRE_EXTRAS=1: run `eval \"$(bash .ci/postgres start)\"` first"
            );
            eprintln!("skipped: NATTER_TEST_POSTGRES not set");
            None
        }
    }
}
