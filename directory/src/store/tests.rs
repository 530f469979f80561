//! One storage test suite, run against every backend.
//!
//! Each test is written once against `&dyn Store` and instantiated by [`suite!`] for
//! SQLite (a temporary file) and PostgreSQL (a fresh schema in the database named by
//! `NATTER_TEST_POSTGRES`; without it the PostgreSQL half says "skipped" and passes,
//! unless `NATTER_REQUIRE_EXTRAS=1`). What SQLite passes, PostgreSQL must pass too.

use std::sync::Arc;

use proto::PublicKey;
use proto::sealed::SignedPrekey;

use super::postgres::{self, PostgresStore};
use super::sqlite::{DB_FILE, SqliteStore};
use super::*;
use crate::lockout::{LockState, LockoutPolicy, Reservation};
use crate::mailbox::MailboxPolicy;
use crate::ticket::{self, MAX_TICKETS_PER_USER, TicketRecord};

/// Where a test's data lives; [`Fixture::open`] may be called again to reopen it.
enum Fixture {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Fixture {
    async fn sqlite() -> Option<Self> {
        Some(Self::Sqlite(tempfile::tempdir().unwrap()))
    }

    async fn postgres() -> Option<Self> {
        let url = postgres::test_url_from_env()?;
        let (url, _) = postgres::create_scratch_schema(&url).await.unwrap();
        Some(Self::Postgres(url))
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(dir) => {
                Arc::new(SqliteStore::open(dir.path().join(DB_FILE)).await.unwrap())
            }
            Self::Postgres(url) => Arc::new(PostgresStore::open(url).await.unwrap()),
        }
    }
}

/// Instantiates each named test for both backends.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(f) = super::Fixture::sqlite().await {
                        super::$name(f).await;
                    }
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(f) = super::Fixture::postgres().await {
                        super::$name(f).await;
                    }
                }
            )*
        }
    };
}

suite!(
    accounts_round_trip_and_survive_reopen,
    failures_lock_and_unlock,
    password_is_replaced_and_failures_cleared,
    concurrent_failures_all_count,
    concurrent_attempts_are_reserved_before_checking,
    unknown_names_are_reserved_like_accounts,
    a_success_does_not_lift_an_admin_lock,
    a_password_change_or_logout_ends_tickets,
    tickets_are_redeemed_with_a_grace_and_expire,
    concurrent_redemptions_share_one_grace,
    rooms_are_durable_and_go_with_the_account,
    mail_is_queued_in_order_within_quota_acked_once_and_expires,
    one_sender_cannot_fill_a_mailbox_and_all_mail_is_bounded,
    newer_prekey_replaces_older_only,
    migrations_are_idempotent,
);

fn account(name: &str) -> Account {
    Account {
        name: name.into(),
        password_hash: "$argon2id$fake".into(),
        identity: None,
        admin: false,
        lock: LockState::default(),
        created_at: 1_700_000_000,
    }
}

fn ticket_for(user: &str, key: PublicKey, expires_at: i64) -> TicketRecord {
    TicketRecord {
        hash: ticket::hash(&ticket::generate()),
        user: user.into(),
        identity: key,
        expires_at,
    }
}

async fn accounts_round_trip_and_survive_reopen(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    let mut b = account("bianca");
    b.admin = true;
    b.lock = LockState {
        failed_attempts: 2,
        locked_until: Some(42),
        lockout_count: 1,
    };
    store.create_account(b.clone()).await.unwrap();
    store.create_account(account("Zoe")).await.unwrap();
    assert!(matches!(
        store.create_account(account("ali")).await,
        Err(StoreError::Exists(n)) if n == "ali"
    ));
    assert_eq!(store.account("bianca").await.unwrap(), Some(b.clone()));
    assert_eq!(store.account("nobody").await.unwrap(), None);

    let key = proto::Identity::generate().public();
    let other = proto::Identity::generate().public();
    assert_eq!(
        store.set_identity_if_unset("ali", key).await.unwrap(),
        Some(key)
    );
    assert_eq!(
        store.set_identity_if_unset("ali", other).await.unwrap(),
        Some(key),
        "an existing key is never overwritten"
    );
    assert_eq!(
        store.set_identity_if_unset("nobody", key).await.unwrap(),
        None
    );
    store.close().await.unwrap();
    assert!(matches!(
        store.account("ali").await,
        Err(StoreError::Closed)
    ));

    let store = f.open().await;
    let names: Vec<_> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["Zoe", "ali", "bianca"], "sorted bytewise");
    assert_eq!(
        store.account("ali").await.unwrap().unwrap().identity,
        Some(key)
    );
    assert!(store.reset_identity("ali").await.unwrap());
    assert!(!store.reset_identity("nobody").await.unwrap());
    assert_eq!(store.account("ali").await.unwrap().unwrap().identity, None);
    assert_eq!(
        store.set_identity_if_unset("ali", other).await.unwrap(),
        Some(other),
        "after a reset the next key is taken"
    );
    assert!(store.remove_account("ali").await.unwrap());
    assert!(!store.remove_account("ali").await.unwrap());
    store.close().await.unwrap();
}

async fn password_is_replaced_and_failures_cleared(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    store
        .record_failure("ali", 1_000, LockoutPolicy::default())
        .await
        .unwrap();
    assert!(
        store
            .set_password("ali", "$argon2id$new".into(), None)
            .await
            .unwrap()
    );
    let stored = store.account("ali").await.unwrap().unwrap();
    assert_eq!(stored.password_hash, "$argon2id$new");
    assert_eq!(stored.lock.failed_attempts, 0);
    assert!(
        !store
            .set_password("nobody", "x".into(), None)
            .await
            .unwrap()
    );
    store.close().await.unwrap();
}

async fn failures_lock_and_unlock(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    let policy = LockoutPolicy::default();
    let now = 1_000;
    for expected in [1, 2] {
        let s = store
            .record_failure("ali", now, policy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.failed_attempts, expected);
    }
    let s = store
        .record_failure("ali", now, policy)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(policy.locked_for(&s, now), Some(30));
    let stored = store.account("ali").await.unwrap().unwrap();
    assert_eq!(stored.lock, s);
    assert_eq!(
        store.record_failure("nobody", now, policy).await.unwrap(),
        None
    );
    assert!(store.record_success("ali", now).await.unwrap());
    assert_eq!(
        store.account("ali").await.unwrap().unwrap().lock,
        LockState::default()
    );
    store.record_failure("ali", now, policy).await.unwrap();
    assert!(store.unlock("ali").await.unwrap());
    let stored = store.account("ali").await.unwrap().unwrap();
    assert_eq!(stored.lock, LockState::default());
    assert!(!store.unlock("nobody").await.unwrap());
    store.close().await.unwrap();
}

/// Two stores on the same data (two directory instances) counting failures at once:
/// none is lost, so guessing against two instances gains nothing.
async fn concurrent_failures_all_count(f: Fixture) {
    let (a, b) = (f.open().await, f.open().await);
    a.create_account(account("ali")).await.unwrap();
    let policy = LockoutPolicy {
        max_failures: 1000,
        ..LockoutPolicy::default()
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.record_failure("ali", 1_000, policy).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lock = b.account("ali").await.unwrap().unwrap().lock;
    assert_eq!(lock.failed_attempts, 40);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Many attempts at once through two stores (instances): exactly `max_failures` are
/// granted a password check; the rest find the account locked.
async fn concurrent_attempts_are_reserved_before_checking(f: Fixture) {
    let (a, b) = (f.open().await, f.open().await);
    a.create_account(account("ali")).await.unwrap();
    let policy = LockoutPolicy::default();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .reserve_attempt("ali", 1_000, policy, false)
                .await
                .unwrap()
                .unwrap()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        if let Reservation::Granted(_) = t.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
    let lock = a.account("ali").await.unwrap().unwrap().lock;
    assert_eq!(policy.locked_for(&lock, 1_000), Some(30));
    // A known source passes the lockout (and is counted); nobody passes an admin lock.
    assert!(matches!(
        a.reserve_attempt("ali", 1_000, policy, true).await.unwrap(),
        Some(Reservation::Granted(s)) if s.failed_attempts == 1
    ));
    assert_eq!(
        a.reserve_attempt("nobody", 1_000, policy, false)
            .await
            .unwrap(),
        None
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

async fn unknown_names_are_reserved_like_accounts(f: Fixture) {
    let (a, b) = (f.open().await, f.open().await);
    let policy = LockoutPolicy::default();
    assert_eq!(a.unknown_lock(7).await.unwrap(), LockState::default());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.reserve_unknown(7, 1_000, policy).await.unwrap()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        if let Reservation::Granted(_) = t.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
    let lock = b.unknown_lock(7).await.unwrap();
    assert_eq!(policy.locked_for(&lock, 1_000), Some(30));
    assert_eq!(a.unknown_lock(8).await.unwrap(), LockState::default());
    // After the lock, counting starts again.
    assert!(matches!(
        a.reserve_unknown(7, 1_031, policy).await.unwrap(),
        Reservation::Granted(s) if s.failed_attempts == 1 && s.lockout_count == 1
    ));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A login whose password proved right after an administrator locked the account (it
/// read the account before) must not lift the lock.
async fn a_success_does_not_lift_an_admin_lock(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    let now = 1_000;
    let forever = LockoutPolicy {
        max_failures: 1,
        base: crate::admin::ADMIN_LOCK,
        max: crate::admin::ADMIN_LOCK,
    };
    store.record_failure("ali", now, forever).await.unwrap();
    let locked = store.account("ali").await.unwrap().unwrap().lock;
    assert!(locked.locked_by_admin(now));
    assert!(!store.record_success("ali", now).await.unwrap());
    assert_eq!(store.account("ali").await.unwrap().unwrap().lock, locked);
    assert!(!store.record_success("nobody", now).await.unwrap());
    // An ordinary lockout is lifted by a success.
    store.unlock("ali").await.unwrap();
    for _ in 0..3 {
        store
            .record_failure("ali", now, LockoutPolicy::default())
            .await
            .unwrap();
    }
    assert!(store.record_success("ali", now).await.unwrap());
    assert_eq!(
        store.account("ali").await.unwrap().unwrap().lock,
        LockState::default()
    );
    store.close().await.unwrap();
}

async fn a_password_change_or_logout_ends_tickets(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    store.create_account(account("bianca")).await.unwrap();
    let key = proto::Identity::generate().public();
    let now = crate::clock::unix_now();
    let tickets: Vec<_> = (0..3).map(|_| ticket_for("ali", key, now + 100)).collect();
    let hers = ticket_for("bianca", key, now + 100);
    for t in tickets.iter().chain([&hers]) {
        store.insert_ticket(t.clone(), now).await.unwrap();
    }
    assert!(
        store
            .set_password("ali", "$argon2id$new".into(), Some(tickets[0].hash))
            .await
            .unwrap()
    );
    assert!(
        store.ticket(tickets[0].hash).await.unwrap().is_some(),
        "kept"
    );
    for t in &tickets[1..] {
        assert_eq!(store.ticket(t.hash).await.unwrap(), None);
    }
    assert!(
        store.ticket(hers.hash).await.unwrap().is_some(),
        "not ali's"
    );
    assert!(store.delete_ticket(tickets[0].hash).await.unwrap());
    assert!(!store.delete_ticket(tickets[0].hash).await.unwrap());
    assert_eq!(store.ticket(tickets[0].hash).await.unwrap(), None);
    // Without a ticket to keep, all go.
    let t = ticket_for("ali", key, now + 100);
    store.insert_ticket(t.clone(), now).await.unwrap();
    store.set_password("ali", "x".into(), None).await.unwrap();
    assert_eq!(store.ticket(t.hash).await.unwrap(), None);
    store.close().await.unwrap();
}

async fn tickets_are_redeemed_with_a_grace_and_expire(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    let key = proto::Identity::generate().public();
    let now = crate::clock::unix_now();

    let t1 = ticket_for("ali", key, now + 100);
    store.insert_ticket(t1.clone(), now).await.unwrap();
    assert_eq!(store.ticket(t1.hash).await.unwrap(), Some(t1.clone()));

    // Redeemed: the old ticket lives on for the grace only (never longer than it had).
    let t2 = ticket_for("ali", key, now + 100);
    assert!(
        store
            .replace_ticket(t1.hash, t2.clone(), now, now + 30)
            .await
            .unwrap()
    );
    assert_eq!(store.ticket(t2.hash).await.unwrap(), Some(t2.clone()));
    assert_eq!(
        store.ticket(t1.hash).await.unwrap().unwrap().expires_at,
        now + 30
    );
    // Within the grace, the same redemption can be repeated (its reply was lost)...
    let t3 = ticket_for("ali", key, now + 100);
    assert!(
        store
            .replace_ticket(t1.hash, t3.clone(), now + 10, now + 40)
            .await
            .unwrap(),
        "redeemed again within the grace"
    );
    assert_eq!(
        store.ticket(t1.hash).await.unwrap().unwrap().expires_at,
        now + 30,
        "a repeat does not extend the grace"
    );
    // ...and replaces the successor it got before: one live successor at most.
    assert_eq!(store.ticket(t2.hash).await.unwrap(), None);
    assert_eq!(store.ticket(t3.hash).await.unwrap(), Some(t3.clone()));
    // A successor's own successor goes with it.
    let t3b = ticket_for("ali", key, now + 100);
    assert!(
        store
            .replace_ticket(t3.hash, t3b.clone(), now + 10, now + 40)
            .await
            .unwrap()
    );
    let t3c = ticket_for("ali", key, now + 100);
    assert!(
        store
            .replace_ticket(t1.hash, t3c.clone(), now + 10, now + 40)
            .await
            .unwrap()
    );
    for gone in [&t3, &t3b] {
        assert_eq!(store.ticket(gone.hash).await.unwrap(), None);
    }
    assert!(store.ticket(t3c.hash).await.unwrap().is_some());
    // ...after it, never.
    let t4 = ticket_for("ali", key, now + 100);
    assert!(
        !store
            .replace_ticket(t1.hash, t4.clone(), now + 30, now + 60)
            .await
            .unwrap(),
        "a ticket is dead once its grace is over"
    );
    assert_eq!(store.ticket(t4.hash).await.unwrap(), None, "nothing stored");
    assert!(
        !store
            .replace_ticket([0xEE; 32], t4.clone(), now, now + 30)
            .await
            .unwrap(),
        "unknown ticket"
    );

    let old = ticket_for("ali", key, now - 1);
    store.insert_ticket(old.clone(), now - 10).await.unwrap();
    assert!(
        store
            .ticket(old.hash)
            .await
            .unwrap()
            .unwrap()
            .is_expired(now)
    );
    assert_eq!(store.purge_expired_tickets(now).await.unwrap(), 1);
    assert_eq!(store.ticket(old.hash).await.unwrap(), None);

    // Per-user cap.
    for i in 0..(MAX_TICKETS_PER_USER as i64 + 5) {
        store
            .insert_ticket(ticket_for("ali", key, now + 200 + i), now)
            .await
            .unwrap();
    }
    assert_eq!(
        store.ticket(t3c.hash).await.unwrap(),
        None,
        "oldest dropped"
    );

    // A reset key takes the tickets with it; so does removing the account.
    let t4 = ticket_for("ali", key, now + 10_000);
    store.insert_ticket(t4.clone(), now).await.unwrap();
    store.reset_identity("ali").await.unwrap();
    assert_eq!(store.ticket(t4.hash).await.unwrap(), None);
    let t5 = ticket_for("ali", key, now + 10_000);
    store.insert_ticket(t5.clone(), now).await.unwrap();
    store.remove_account("ali").await.unwrap();
    assert_eq!(store.ticket(t5.hash).await.unwrap(), None);
    store.close().await.unwrap();
}

/// The same ticket redeemed through two stores (instances) at once: both redemptions
/// are serialised on the ticket's row, both fall in the grace, the grace is not
/// extended by the second, and only the second's successor lives (changed by issue 14:
/// the grace no longer forks a second live ticket).
async fn concurrent_redemptions_share_one_grace(f: Fixture) {
    let (a, b) = (f.open().await, f.open().await);
    a.create_account(account("ali")).await.unwrap();
    let key = proto::Identity::generate().public();
    let now = crate::clock::unix_now();
    for i in 0..5 {
        let t = ticket_for("ali", key, now + 100);
        a.insert_ticket(t.clone(), now).await.unwrap();
        let (n1, n2) = (
            ticket_for("ali", key, now + 100 + i),
            ticket_for("ali", key, now + 100 + i),
        );
        let (x, y) = tokio::join!(
            a.replace_ticket(t.hash, n1.clone(), now, now + 30),
            b.replace_ticket(t.hash, n2.clone(), now, now + 40),
        );
        assert!(x.unwrap() && y.unwrap(), "both within the grace");
        let left = a.ticket(t.hash).await.unwrap().unwrap().expires_at;
        assert_eq!(left, now + 30, "the earlier grace holds");
        let alive = [
            a.ticket(n1.hash).await.unwrap().is_some(),
            b.ticket(n2.hash).await.unwrap().is_some(),
        ];
        assert_eq!(alive.iter().filter(|x| **x).count(), 1, "{alive:?}");
        assert!(
            !a.replace_ticket(
                t.hash,
                ticket_for("ali", key, now + 100),
                now + 30,
                now + 60
            )
            .await
            .unwrap()
        );
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

async fn rooms_are_durable_and_go_with_the_account(f: Fixture) {
    let store = f.open().await;
    for name in ["ali", "bianca", "chloe"] {
        store.create_account(account(name)).await.unwrap();
    }
    assert!(store.join_room("general", "bianca", 1).await.unwrap());
    assert!(store.join_room("general", "ali", 2).await.unwrap());
    assert!(!store.join_room("general", "ali", 3).await.unwrap(), "once");
    assert!(store.join_room("books", "chloe", 4).await.unwrap());
    assert!(store.join_room("books", "ali", 5).await.unwrap());
    assert!(
        store.join_room("books", "nobody", 5).await.is_err(),
        "members are accounts"
    );
    store.close().await.unwrap();

    let store = f.open().await;
    assert_eq!(
        store.room_members("general").await.unwrap(),
        ["ali", "bianca"]
    );
    assert_eq!(store.user_rooms("ali").await.unwrap(), ["books", "general"]);
    assert_eq!(
        store.rooms().await.unwrap(),
        [("books".to_string(), 2), ("general".to_string(), 2)]
    );
    assert!(store.leave_room("general", "bianca").await.unwrap());
    assert!(!store.leave_room("general", "bianca").await.unwrap());
    assert!(store.room_members("nowhere").await.unwrap().is_empty());
    store.remove_account("ali").await.unwrap();
    assert_eq!(
        store.rooms().await.unwrap(),
        [("books".to_string(), 1)],
        "an empty room is gone"
    );
    store.close().await.unwrap();
}

fn mail(to: &str, from: &str, blob: &[u8], now: i64) -> NewMail {
    NewMail {
        recipient: to.into(),
        sender: from.into(),
        blob: blob.to_vec(),
        deposited_at: now,
        expires_at: now + 100,
    }
}

async fn one_sender_cannot_fill_a_mailbox_and_all_mail_is_bounded(f: Fixture) {
    let store = f.open().await;
    for name in ["ali", "bianca", "chloe", "dora"] {
        store.create_account(account(name)).await.unwrap();
    }
    let policy = MailboxPolicy {
        max_messages: 10,
        max_bytes: 1000,
        max_messages_per_sender: 3,
        max_bytes_per_sender: 100,
        max_total_bytes: 150,
        ..MailboxPolicy::default()
    };
    let now = 1_000;
    let deposit = |to: &str, from: &str, size: usize| {
        let m = mail(to, from, &vec![7; size], now);
        let store = &store;
        async move { store.deposit_mail(m, policy).await.unwrap() }
    };
    // Ali floods bianca: three messages, then no more from ali...
    for _ in 0..3 {
        assert!(matches!(
            deposit("bianca", "ali", 10).await,
            DepositOutcome::Stored { .. }
        ));
    }
    assert_eq!(
        deposit("bianca", "ali", 10).await,
        DepositOutcome::SenderFull {
            messages: 3,
            bytes: 30
        },
        "count per sender"
    );
    // ... while chloe still gets through to bianca, and ali to someone else.
    assert!(matches!(
        deposit("bianca", "chloe", 10).await,
        DepositOutcome::Stored { .. }
    ));
    assert!(matches!(
        deposit("chloe", "ali", 10).await,
        DepositOutcome::Stored { .. }
    ));
    // Bytes per sender too.
    assert_eq!(
        deposit("dora", "chloe", 101).await,
        DepositOutcome::SenderFull {
            messages: 0,
            bytes: 0
        },
        "bytes per sender"
    );
    // 50 bytes wait in all now; the total bound is 150.
    assert!(matches!(
        deposit("dora", "chloe", 100).await,
        DepositOutcome::Stored { .. }
    ));
    assert_eq!(
        deposit("dora", "bianca", 1).await,
        DepositOutcome::StoreFull,
        "total"
    );
    // Acknowledged mail no longer counts.
    let (batch, _) = store.waiting_mail("dora", now, 1000).await.unwrap();
    let ids: Vec<u64> = batch.iter().map(|m| m.id).collect();
    store.ack_mail("dora", ids, now, now + 100).await.unwrap();
    assert!(matches!(
        deposit("dora", "bianca", 1).await,
        DepositOutcome::Stored { .. }
    ));
}

async fn mail_is_queued_in_order_within_quota_acked_once_and_expires(f: Fixture) {
    let store = f.open().await;
    for name in ["ali", "bianca", "chloe"] {
        store.create_account(account(name)).await.unwrap();
    }
    let policy = MailboxPolicy {
        max_messages: 3,
        max_bytes: 100,
        ..MailboxPolicy::default()
    };
    let now = 1_000;
    let mut ids = Vec::new();
    for i in 0..3u8 {
        match store
            .deposit_mail(mail("bianca", "ali", &[i; 10], now), policy)
            .await
            .unwrap()
        {
            DepositOutcome::Stored { id } => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        store
            .deposit_mail(mail("bianca", "ali", &[9; 10], now), policy)
            .await
            .unwrap(),
        DepositOutcome::Full {
            messages: 3,
            bytes: 30
        },
        "count quota"
    );
    assert_eq!(
        store
            .deposit_mail(mail("chloe", "ali", &[9; 101], now), policy)
            .await
            .unwrap(),
        DepositOutcome::Full {
            messages: 0,
            bytes: 0
        },
        "byte quota"
    );
    // Survives a reopen; batches by bytes, oldest first.
    store.close().await.unwrap();
    let store = f.open().await;
    let (batch, more) = store.waiting_mail("bianca", now, 15).await.unwrap();
    assert!(more);
    assert_eq!(batch.len(), 1);
    let (batch, more) = store.waiting_mail("bianca", now, 5).await.unwrap();
    assert!(more);
    assert_eq!(
        batch.len(),
        1,
        "at least one message, however small the batch"
    );
    let (all, more) = store.waiting_mail("bianca", now, 1000).await.unwrap();
    assert!(!more);
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert_eq!(all[2].blob, vec![2u8; 10]);
    assert_eq!(all[2].deposited_at, now);
    assert!(
        store
            .waiting_mail("ali", now, 1000)
            .await
            .unwrap()
            .0
            .is_empty()
    );

    // Only the recipient acks, and only once.
    assert!(
        store
            .ack_mail("chloe", ids.clone(), now, now + 500)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .ack_mail("bianca", vec![ids[0], ids[1], u64::MAX], now, now + 500)
            .await
            .unwrap(),
        ["ali", "ali"]
    );
    assert!(
        store
            .ack_mail("bianca", vec![ids[0]], now, now + 500)
            .await
            .unwrap()
            .is_empty()
    );
    let left = store.waiting_mail("bianca", now, 1000).await.unwrap().0;
    assert_eq!(left.len(), 1);

    // The third expires: never handed out after that, and its sender hears of it.
    assert!(
        store
            .waiting_mail("bianca", now + 100, 1000)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        store.expire_mail(now + 100, now + 200).await.unwrap(),
        ["ali"]
    );
    let receipts = store.take_receipts("ali").await.unwrap();
    assert_eq!(
        receipts,
        [
            StoredReceipt {
                id: ids[0],
                recipient: "bianca".into(),
                delivered: true
            },
            StoredReceipt {
                id: ids[1],
                recipient: "bianca".into(),
                delivered: true
            },
            StoredReceipt {
                id: ids[2],
                recipient: "bianca".into(),
                delivered: false
            },
        ]
    );
    assert!(
        store.take_receipts("ali").await.unwrap().is_empty(),
        "reported once"
    );
    // An acked id is not reused.
    let DepositOutcome::Stored { id } = store
        .deposit_mail(mail("bianca", "ali", b"x", now), policy)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(id > ids[2]);
    // Receipts not collected expire too.
    store
        .ack_mail("bianca", vec![id], now, now + 10)
        .await
        .unwrap();
    assert!(
        store
            .expire_mail(now + 10, now + 20)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.take_receipts("ali").await.unwrap().is_empty());
    store.close().await.unwrap();
}

async fn newer_prekey_replaces_older_only(f: Fixture) {
    let store = f.open().await;
    store.create_account(account("ali")).await.unwrap();
    let id = proto::Identity::generate();
    let make = |at| SignedPrekey::sign(&id, "ali", &proto::sealed::StaticSecret::random(), at);
    let (old, new) = (make(10), make(20));
    assert!(store.set_prekey("ali", new.clone()).await.unwrap());
    assert!(!store.set_prekey("ali", old).await.unwrap());
    assert_eq!(store.prekey("ali").await.unwrap(), Some(new));
    assert!(!store.set_prekey("nobody", make(30)).await.unwrap());
    assert_eq!(store.prekey("nobody").await.unwrap(), None);
    store.close().await.unwrap();
}

/// Opening an up-to-date store again (a second instance, a restart) changes nothing;
/// two opening at once both succeed.
async fn migrations_are_idempotent(f: Fixture) {
    let (a, b) = tokio::join!(f.open(), f.open());
    a.create_account(account("ali")).await.unwrap();
    let c = f.open().await;
    assert!(c.account("ali").await.unwrap().is_some());
    for s in [a, b, c] {
        s.close().await.unwrap();
    }
}

/// A driver's failure reaches the caller whole: the driver's own error as the source, and
/// a message that names the backend.
#[tokio::test]
async fn a_backend_failure_keeps_the_drivers_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    assert!(err.to_string().starts_with("SQLite: "), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");

    let err = postgres::parse_config("postgres://natter@localhost:notaport/db").unwrap_err();
    assert!(matches!(err, StoreError::Url(_)), "{err:?}");
    assert!(err.to_string().starts_with("bad PostgreSQL URL: "), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}
