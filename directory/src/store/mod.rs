//! Durable state: accounts, session tickets, rooms and sealed mail, behind one trait.
//!
//! [`Store`] is what the rest of the directory sees. It is async (every method returns a
//! boxed future) so that a network database (PostgreSQL) can implement it directly and
//! the SQLite backend can run its blocking calls on its own thread; nothing in the
//! directory ever blocks a runtime thread on storage. The trait is object-safe: the
//! server holds an `Arc<dyn Store>`.
//!
//! Operations that read-modify-write (a failed login, redeeming a ticket) are single
//! methods so that each backend can make them atomic.
//!
//! [`open`] is the one place that picks the backend from the configuration. Failures are
//! [`StoreError`]s that keep the driver's error (SQLite, PostgreSQL, the pool) as their
//! source rather than a string.

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use proto::PublicKey;
use proto::sealed::SignedPrekey;

use crate::lockout::{LockState, LockoutPolicy, Reservation};
use crate::mailbox::MailboxPolicy;
use crate::ticket::TicketRecord;

/// Opens the store `config` names: PostgreSQL when `config.database` is set (see
/// [`postgres`]), else SQLite in the data directory. Runs pending migrations either way.
/// The one place that chooses the backend.
pub async fn open(config: &crate::config::Config) -> Result<Opened, StoreError> {
    match &config.database {
        Some(url) => Ok(Opened::Postgres(Arc::new(
            postgres::PostgresStore::open(&url.0).await?,
        ))),
        None => Ok(Opened::Sqlite(Arc::new(
            sqlite::SqliteStore::open(config.database_path()).await?,
        ))),
    }
}

/// A store [`open`] opened, by backend: the server needs the PostgreSQL one itself to
/// join the other instances on it ([`crate::cluster`]).
#[derive(Debug, Clone)]
pub enum Opened {
    /// One instance, SQLite in the data directory.
    Sqlite(Arc<sqlite::SqliteStore>),
    /// Several instances on one PostgreSQL database.
    Postgres(Arc<postgres::PostgresStore>),
}

impl Opened {
    /// The store as the rest of the directory sees it.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Opened::Sqlite(store) => store.clone(),
            Opened::Postgres(store) => store.clone(),
        }
    }
}

/// What every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A storage operation failed.
///
/// The backends' own errors are kept whole (`#[from]`), so `{:#}` and
/// [`std::error::Error::source`] show the chain down to the driver.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An account with that name already exists.
    #[error("user {0} already exists")]
    Exists(String),
    /// SQLite failed (I/O, corruption, constraint).
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (connection, statement, constraint); the SQLSTATE code shown
    /// when the server sent one.
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("cannot reach the database: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The PostgreSQL connection pool could not be made.
    #[error("cannot make a connection pool: {0}")]
    PoolSetup(#[from] deadpool_postgres::BuildError),
    /// The PostgreSQL URL does not parse.
    #[error("bad PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// A file or thread of the store could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        source: std::io::Error,
    },
    /// A cluster message could not be encoded or decoded ([`crate::cluster`]).
    #[error("cluster message: {0}")]
    Message(#[from] serde_json::Error),
    /// The database cannot be used as it is (a newer schema than this program's, a
    /// journal mode it will not take, a message too large, a panicked thread).
    #[error("storage error: {0}")]
    Unusable(String),
    /// The data on disk does not make sense (e.g. a key of the wrong length).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store has been closed.
    #[error("storage is closed")]
    Closed,
}

/// One account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name (primary key).
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The identity key, registered at registration or on first login.
    pub identity: Option<PublicKey>,
    /// Whether the user is a directory administrator.
    pub admin: bool,
    /// Lockout counters.
    pub lock: LockState,
    /// Unix time of creation.
    pub created_at: i64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("identity", &self.identity)
            .field("admin", &self.admin)
            .field("lock", &self.lock)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A sealed message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub recipient: String,
    pub sender: String,
    pub blob: Vec<u8>,
    pub deposited_at: i64,
    pub expires_at: i64,
}

/// A sealed message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    /// Unique and increasing in deposit order; never reused.
    pub id: u64,
    pub deposited_at: i64,
    pub blob: Vec<u8>,
}

/// What [`Store::deposit_mail`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositOutcome {
    Stored {
        id: u64,
    },
    /// Over the recipient's quota; what already waits for them.
    Full {
        messages: u64,
        bytes: u64,
    },
    /// Over the quota of one sender for one recipient; what already waits from them.
    SenderFull {
        messages: u64,
        bytes: u64,
    },
    /// Over the bound on all waiting mail.
    StoreFull,
}

/// What became of one deposited message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub id: u64,
    pub recipient: String,
    /// `true`: acknowledged by the recipient; `false`: expired undelivered.
    pub delivered: bool,
}

/// Storage for accounts and tickets. See the module docs for the guarantees.
pub trait Store: Send + Sync + 'static {
    /// Creates an account; [`StoreError::Exists`] if the name is taken.
    fn create_account(&self, account: Account) -> StoreFuture<'_, ()>;

    /// The account called `name`, if any.
    fn account(&self, name: &str) -> StoreFuture<'_, Option<Account>>;

    /// Every account, sorted by name.
    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>>;

    /// Deletes an account and its tickets. `false` if there was no such account.
    fn remove_account(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Registers `identity` for `name` if it has none yet. Returns the key the account
    /// ends up with (the existing one when it already had one), `None` if no such account.
    fn set_identity_if_unset(
        &self,
        name: &str,
        identity: PublicKey,
    ) -> StoreFuture<'_, Option<PublicKey>>;

    /// Forgets the identity key of `name` (the next login registers a new one) and
    /// deletes its tickets. `false` if there was no such account.
    fn reset_identity(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Counts one wrong password for `name` at `now` under `policy`, atomically, and
    /// returns the new counters (`None` if no such account).
    fn record_failure(
        &self,
        name: &str,
        now: i64,
        policy: LockoutPolicy,
    ) -> StoreFuture<'_, Option<LockState>>;

    /// Reserves one password attempt for `name` at `now`, before the password is
    /// checked: [`LockoutPolicy::reserve`] applied and stored in one transaction, so
    /// concurrent attempts (on any instance) each see the others' counts. `None` if no
    /// such account.
    fn reserve_attempt(
        &self,
        name: &str,
        now: i64,
        policy: LockoutPolicy,
        past_lock: bool,
    ) -> StoreFuture<'_, Option<Reservation>>;

    /// [`Store::reserve_attempt`] for a name that has no account: on the counters of
    /// `bucket` (see [`crate::lockout::UnknownNames`]), kept in a table of their own the
    /// way an account's are, so that the attempt costs the same (a commit) and answers
    /// the same.
    fn reserve_unknown(
        &self,
        bucket: u32,
        now: i64,
        policy: LockoutPolicy,
    ) -> StoreFuture<'_, Reservation>;

    /// The counters of the unknown-name `bucket`, unchanged.
    fn unknown_lock(&self, bucket: u32) -> StoreFuture<'_, LockState>;

    /// Clears the failure and lockout counters after a password proved right at `now`,
    /// unless an administrator has locked the account (perhaps while the password was
    /// being checked): then nothing changes and the answer is `false`, as it is when
    /// there is no such account. The check and the write are one statement, so a login
    /// in flight cannot undo a lock set after it read the account.
    fn record_success(&self, name: &str, now: i64) -> StoreFuture<'_, bool>;

    /// Replaces the password hash of `name`, clears its failure counters and deletes
    /// its tickets except `keep` (the session that changed it), in one transaction.
    /// `false` if there was no such account.
    fn set_password(
        &self,
        name: &str,
        password_hash: String,
        keep: Option<[u8; 32]>,
    ) -> StoreFuture<'_, bool>;

    /// Lifts a lockout and clears all counters. `false` if there was no such account.
    fn unlock(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Stores a new ticket. Also drops the user's expired tickets and keeps at most
    /// [`crate::ticket::MAX_TICKETS_PER_USER`] live ones.
    fn insert_ticket(&self, ticket: TicketRecord, now: i64) -> StoreFuture<'_, ()>;

    /// The ticket stored under `hash`, if any (expired ones too: the caller checks).
    fn ticket(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<TicketRecord>>;

    /// Deletes the ticket stored under `hash` (a logout). `false` if there was none.
    fn delete_ticket(&self, hash: [u8; 32]) -> StoreFuture<'_, bool>;

    /// Redeems the ticket `old` for `new`, atomically: `old` now expires at `grace_until`
    /// at the latest, and `new` is stored. `false` (and nothing stored) if `old` is gone
    /// or expired at `now`. So a ticket is redeemed for good after a short grace, during
    /// which the same `Resume` can be repeated when its reply was lost. A ticket has at
    /// most one live successor: redeeming it again within the grace deletes the
    /// successor it was redeemed for before (and that one's successors), so the grace
    /// cannot fork a second chain of tickets.
    fn replace_ticket(
        &self,
        old: [u8; 32],
        new: TicketRecord,
        now: i64,
        grace_until: i64,
    ) -> StoreFuture<'_, bool>;

    /// Deletes tickets expired at `now`; returns how many.
    fn purge_expired_tickets(&self, now: i64) -> StoreFuture<'_, usize>;

    /// Makes `user` a member of `room`. `true` if they were not a member before.
    fn join_room(&self, room: &str, user: &str, now: i64) -> StoreFuture<'_, bool>;

    /// Removes `user` from `room`. `true` if they were a member.
    fn leave_room(&self, room: &str, user: &str) -> StoreFuture<'_, bool>;

    /// The members of `room`, sorted by name (empty: no such room).
    fn room_members(&self, room: &str) -> StoreFuture<'_, Vec<String>>;

    /// The rooms `user` is a member of, sorted.
    fn user_rooms(&self, user: &str) -> StoreFuture<'_, Vec<String>>;

    /// Every room with its member count, sorted by name.
    fn rooms(&self) -> StoreFuture<'_, Vec<(String, u32)>>;

    /// Stores `prekey` as `user`'s, unless the stored one is newer. `false` if not stored
    /// (older than the stored one, or no such account).
    fn set_prekey(&self, user: &str, prekey: SignedPrekey) -> StoreFuture<'_, bool>;

    /// `user`'s published prekey, if any.
    fn prekey(&self, user: &str) -> StoreFuture<'_, Option<SignedPrekey>>;

    /// Stores a sealed message unless waiting mail (unexpired at `mail.deposited_at`)
    /// would then exceed one of `policy`'s quotas: the recipient's, then the sender's
    /// for that recipient, then the total; atomic for one recipient.
    fn deposit_mail(&self, mail: NewMail, policy: MailboxPolicy)
    -> StoreFuture<'_, DepositOutcome>;

    /// Mail waiting for `user` and not expired at `now`, oldest first, at most
    /// `max_bytes` of blobs (but at least one message); and whether more waits.
    fn waiting_mail(
        &self,
        user: &str,
        now: i64,
        max_bytes: usize,
    ) -> StoreFuture<'_, (Vec<StoredMail>, bool)>;

    /// Deletes the blobs of `user`'s waiting mail among `ids`, keeping a "delivered"
    /// receipt for each sender until `keep_until`. Returns the senders, one per message
    /// acknowledged (ids that are not `user`'s waiting mail are ignored).
    fn ack_mail(
        &self,
        user: &str,
        ids: Vec<u64>,
        now: i64,
        keep_until: i64,
    ) -> StoreFuture<'_, Vec<String>>;

    /// Returns and forgets the receipts for mail `sender` deposited.
    fn take_receipts(&self, sender: &str) -> StoreFuture<'_, Vec<StoredReceipt>>;

    /// Turns mail expired at `now` into "expired" receipts kept until `keep_until`, and
    /// deletes receipts expired at `now`. Returns the senders of the newly expired mail.
    fn expire_mail(&self, now: i64, keep_until: i64) -> StoreFuture<'_, Vec<String>>;

    /// Finishes outstanding work and releases the backend. Later calls fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> StoreFuture<'_, ()>;
}
