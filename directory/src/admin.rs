//! Operator actions on accounts: add, list, remove, lock, unlock, reset a key.
//!
//! Used by the `directory user ...` CLI, which opens the store itself with
//! [`Admin::open`] and may run while a server is serving the same data directory (SQLite
//! in WAL mode allows that), and by [`crate::Directory`]'s methods, which share the
//! running server's store, and by administrators' requests from their peers
//! ([`crate::admin_requests`]). Every action is audited.
//!
//! An administrator's lock is a lockout that does not lift by itself: it is recorded
//! through the store's atomic [`Store::record_failure`] with a policy whose first failure
//! locks for [`ADMIN_LOCK`] (a century), so it needs no schema of its own and every
//! backend, and every check of a lockout (login and ticket resume), honours it. A lock
//! longer than [`ADMIN_LOCK_THRESHOLD`] is shown as "locked by an administrator";
//! [`crate::config::MAX_LOCKOUT`] keeps the lockout policy's own locks far shorter.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proto::PublicKey;
use proto::names::{self, NameError};

use crate::audit::{Audit, AuditEvent};
use crate::clock::unix_now;
use crate::config::Config;
use crate::keys;
use crate::lockout::{LockState, LockoutPolicy};
use crate::password::{PasswordError, PasswordHashing};
use crate::store::{Account, Store, StoreError};

/// How long an administrator's lock lasts: until unlocked, in practice.
pub const ADMIN_LOCK: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// Locks longer than this many seconds were set by an administrator.
pub const ADMIN_LOCK_THRESHOLD: u64 = 10 * 365 * 24 * 60 * 60;

/// An operator action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The user name breaks the name rules.
    #[error("invalid user name: {0}")]
    InvalidName(NameError),
    /// The password breaks the password rules.
    #[error("invalid password: {0}")]
    InvalidPassword(NameError),
    /// The name is taken.
    #[error("user {0} already exists")]
    Exists(String),
    /// No such account.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(name) => AdminError::Exists(name),
            other => AdminError::Store(other),
        }
    }
}

/// One account as `user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User name.
    pub name: String,
    /// Administrator flag.
    pub admin: bool,
    /// Registered identity key, if any yet.
    pub identity: Option<PublicKey>,
    /// Seconds until a lockout lifts, if locked now.
    pub locked_for: Option<u64>,
    /// Locked by an administrator (until unlocked).
    pub locked_by_admin: bool,
    /// Wrong passwords since the last success.
    pub failed_attempts: u32,
    /// Unix time of creation.
    pub created_at: i64,
}

/// Operator actions over one store.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    passwords: PasswordHashing,
    audit: Arc<Audit>,
    lockout: LockoutPolicy,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

impl Admin {
    /// Opens the store and audit log in `data_dir` (created 0700 if missing), with the
    /// default password cost and lockout policy.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open_config(&Config::new(data_dir)).await
    }

    /// Opens the store and audit log in `config.data_dir` (created 0700 if missing), with
    /// `config`'s password cost, lockout policy and audit rotation.
    pub async fn open_config(config: &Config) -> anyhow::Result<Self> {
        keys::ensure_data_dir(&config.data_dir)?;
        let store = crate::store::open(config).await?.store();
        let audit = Audit::open_with(&config.audit_path(), config.audit_rotation)?;
        Ok(Self::new(
            store,
            PasswordHashing::new(config.password_cost, 1),
            Arc::new(audit),
            config.lockout,
        ))
    }

    /// Actions over an open store (the running server's).
    pub fn new(
        store: Arc<dyn Store>,
        passwords: PasswordHashing,
        audit: Arc<Audit>,
        lockout: LockoutPolicy,
    ) -> Self {
        Self {
            store,
            passwords,
            audit,
            lockout,
        }
    }

    /// Creates an account with no identity key yet (its first login registers one).
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<(), AdminError> {
        names::check_username(name).map_err(AdminError::InvalidName)?;
        names::check_new_password(password).map_err(AdminError::InvalidPassword)?;
        if self.store.account(name).await?.is_some() {
            return Err(AdminError::Exists(name.to_string()));
        }
        let password_hash = self.passwords.hash(password).await?;
        self.store
            .create_account(Account {
                name: name.to_string(),
                password_hash,
                identity: None,
                admin,
                lock: LockState::default(),
                created_at: unix_now(),
            })
            .await?;
        self.audit.record(AuditEvent::Admin {
            action: if admin { "add_admin" } else { "add" },
            user: name.to_string(),
        });
        Ok(())
    }

    /// Every account, sorted by name.
    pub async fn list_users(&self) -> Result<Vec<UserSummary>, AdminError> {
        let now = unix_now();
        Ok(self
            .store
            .list_accounts()
            .await?
            .into_iter()
            .map(|a| UserSummary {
                locked_for: self.lockout.locked_for(&a.lock, now),
                locked_by_admin: self
                    .lockout
                    .locked_for(&a.lock, now)
                    .is_some_and(|secs| secs > ADMIN_LOCK_THRESHOLD),
                failed_attempts: a.lock.failed_attempts,
                name: a.name,
                admin: a.admin,
                identity: a.identity,
                created_at: a.created_at,
            })
            .collect())
    }

    /// Deletes an account and its tickets.
    pub async fn remove_user(&self, name: &str) -> Result<(), AdminError> {
        self.changed(name, "remove", self.store.remove_account(name).await?)
    }

    /// Locks an account until [`Admin::unlock_user`]. Its session, if any, is not ended
    /// here: the caller with presence at hand does that.
    pub async fn lock_user(&self, name: &str) -> Result<(), AdminError> {
        let forever = LockoutPolicy {
            max_failures: 1,
            base: ADMIN_LOCK,
            max: ADMIN_LOCK,
        };
        let state = self.store.record_failure(name, unix_now(), forever).await?;
        self.changed(name, "lock", state.is_some())
    }

    /// Lifts a lockout and clears the failure counters.
    pub async fn unlock_user(&self, name: &str) -> Result<(), AdminError> {
        self.changed(name, "unlock", self.store.unlock(name).await?)
    }

    /// Forgets the account's identity key (the next login registers a new one) and
    /// invalidates its tickets.
    pub async fn reset_key(&self, name: &str) -> Result<(), AdminError> {
        self.changed(name, "reset_key", self.store.reset_identity(name).await?)
    }

    /// Closes the store and the audit log (the CLI calls this before exiting).
    pub async fn close(&self) {
        if let Err(e) = self.store.close().await {
            tracing::warn!("closing the store: {e}");
        }
        self.audit.close().await;
    }

    fn changed(&self, name: &str, action: &'static str, existed: bool) -> Result<(), AdminError> {
        if !existed {
            return Err(AdminError::NoSuchUser(name.to_string()));
        }
        self.audit.record(AuditEvent::Admin {
            action,
            user: name.to_string(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_list_unlock_remove() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let admin = Admin::open(&data).await.unwrap();
        admin.add_user("ali", "secret1", true).await.unwrap();
        admin.add_user("bianca", "secret2", false).await.unwrap();
        assert!(matches!(
            admin.add_user("ali", "secret1", false).await,
            Err(AdminError::Exists(_))
        ));
        assert!(matches!(
            admin.add_user("Ali", "secret1", false).await,
            Err(AdminError::InvalidName(_))
        ));
        assert!(matches!(
            admin.add_user("carla", "short", false).await,
            Err(AdminError::InvalidPassword(_))
        ));
        let users = admin.list_users().await.unwrap();
        assert_eq!(users.len(), 2);
        assert!(users[0].admin && !users[1].admin);
        assert_eq!(users[0].identity, None);
        admin.lock_user("bianca").await.unwrap();
        let users = admin.list_users().await.unwrap();
        assert!(users[1].locked_by_admin && !users[0].locked_by_admin);
        assert!(matches!(
            admin.lock_user("nobody").await,
            Err(AdminError::NoSuchUser(_))
        ));
        admin.unlock_user("bianca").await.unwrap();
        assert!(!admin.list_users().await.unwrap()[1].locked_by_admin);
        admin.unlock_user("ali").await.unwrap();
        admin.reset_key("ali").await.unwrap();
        admin.remove_user("ali").await.unwrap();
        assert!(matches!(
            admin.remove_user("ali").await,
            Err(AdminError::NoSuchUser(_))
        ));
        admin.close().await;
        let log = std::fs::read_to_string(data.join(crate::audit::AUDIT_FILE)).unwrap();
        assert!(log.contains("admin action=add_admin user=ali"), "{log}");
        assert!(log.contains("admin action=remove user=ali"), "{log}");
        assert!(!log.contains("secret1"));
    }
}
