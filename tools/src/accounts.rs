//! The accounts a load run logs in with: made once, cached under `target/`, copied fresh
//! into a temporary data directory for every run.
//!
//! Three kinds, all with the password [`PASSWORD`]:
//! - *bulk* users `lg00000`, `lg00001`, ... (the simulated crowd). Their password hashes
//!   use [`PasswordCost::insecure_fast`] (argon2id, 8 KiB, 1 pass) so that creating and
//!   logging in 10,000 of them takes seconds, not minutes; their identity keys are
//!   derived from their index and registered up front. Every report says so.
//! - *real* users `pw000`, ... with the directory's default cost (argon2id, 19 MiB, 2
//!   passes): the password-login latency figure uses only these.
//! - *app* users `app0`, ... with no identity key yet: real peer programs (with their own
//!   profile and key) log in as them.
//!
//! The cache is a complete data directory (database, directory key, audit log) built by
//! the directory's own library calls ([`Admin::add_user`], [`Store::set_identity_if_unset`]),
//! never by writing SQL. The directory key in it stays the same from run to run.
//!
//! A run on PostgreSQL copies the cached accounts, hashes and keys as they are, into its
//! database ([`copy_accounts`]) and the key into each instance's data directory
//! ([`copy_key_into`]): nothing is hashed twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use directory::audit::Audit;
use directory::lockout::LockoutPolicy;
use directory::password::PasswordHashing;
use directory::store::Store;
use directory::store::sqlite::SqliteStore;
use directory::{Admin, AdminError, Config, PasswordCost};
use proto::Identity;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Password of every generated account.
pub const PASSWORD: &str = "loadgen correct horse";

/// Bumped whenever the way accounts are made changes (invalidates old caches).
const CACHE_VERSION: u32 = 1;

/// How many accounts of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub bulk: usize,
    pub real: usize,
    pub app: usize,
}

/// Name of bulk user `i`.
pub fn bulk_name(i: usize) -> String {
    format!("lg{i:05}")
}

/// Identity key of bulk user `i` (derived from `i`, so it is the same on every run).
pub fn bulk_identity(i: usize) -> Identity {
    let mut seed = [0x4e_u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Identity::from_secret_bytes(&seed)
}

/// Name of real-cost user `i`.
pub fn real_name(i: usize) -> String {
    format!("pw{i:03}")
}

/// Identity key of real-cost user `i`.
pub fn real_identity(i: usize) -> Identity {
    let mut seed = [0x52_u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Identity::from_secret_bytes(&seed)
}

/// Name of app user `i`.
pub fn app_name(i: usize) -> String {
    format!("app{i}")
}

/// The target directory this tool was built into (`.../target`), found from the
/// running executable (`target/release/NAME`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    exe.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("the executable is not inside a cargo target directory")
}

/// A data directory template holding `plan`'s accounts, made on first use.
pub async fn cached(plan: Plan) -> anyhow::Result<PathBuf> {
    let root = target_dir()?.join("natter-bench");
    let dir = root.join(format!(
        "accounts-v{CACHE_VERSION}-b{}-r{}-a{}",
        plan.bulk, plan.real, plan.app
    ));
    if dir.join("complete").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root)?;
    let building = tempfile::tempdir_in(&root)?;
    let started = std::time::Instant::now();
    eprintln!(
        "creating {} accounts once (cached in {})...",
        plan.bulk + plan.real + plan.app,
        dir.display()
    );
    create_in(building.path(), plan).await?;
    std::fs::write(building.path().join("complete"), b"")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(building.keep(), &dir)?;
    eprintln!(
        "accounts created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// Copies the template's files into `dest` (created), for one run.
pub fn copy_into(template: &Path, dest: &Path) -> anyhow::Result<()> {
    directory::keys::ensure_data_dir(dest)?;
    for entry in std::fs::read_dir(template)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "complete" {
            std::fs::copy(entry.path(), dest.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Copies only the template's directory key into `dest` (created): the data directory
/// of an instance whose accounts live in PostgreSQL. Every instance of one service
/// serves with this same key (peers pin one).
pub fn copy_key_into(template: &Path, dest: &Path) -> anyhow::Result<()> {
    directory::keys::ensure_data_dir(dest)?;
    let from = Config::new(template).key_path();
    let to = Config::new(dest).key_path();
    std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

/// Copies every account of the template (password hash, identity key, flags) into
/// `store` through the store API ([`Store::list_accounts`], [`Store::create_account`]),
/// `concurrency` at a time. Returns how many.
pub async fn copy_accounts(
    template: &Path,
    store: Arc<dyn Store>,
    concurrency: usize,
) -> anyhow::Result<usize> {
    // Read from a copy: opening the cached database would write next to it.
    let scratch = tempfile::tempdir()?;
    copy_into(template, scratch.path())?;
    let sqlite = SqliteStore::open(Config::new(scratch.path()).database_path()).await?;
    let accounts = sqlite.list_accounts().await?;
    sqlite.close().await?;
    let count = accounts.len();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut jobs = JoinSet::new();
    for account in accounts {
        let permit = slots.clone().acquire_owned().await?;
        let store = store.clone();
        jobs.spawn(async move {
            let _permit = permit;
            let name = account.name.clone();
            store
                .create_account(account)
                .await
                .with_context(|| format!("cannot copy the account {name}"))
        });
        while let Some(done) = jobs.try_join_next() {
            done??;
        }
    }
    while let Some(done) = jobs.join_next().await {
        done??;
    }
    Ok(count)
}

/// Creates `plan`'s accounts in the data directory `data` (which a directory may be
/// serving at the same time). Accounts that exist already are kept.
pub async fn create_in(data: &Path, plan: Plan) -> anyhow::Result<()> {
    let config = Config::new(data);
    directory::keys::ensure_data_dir(data)?;
    directory::keys::load_or_create(&config.key_path())?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(config.database_path()).await?);
    let audit = Arc::new(Audit::open(&config.audit_path())?);
    let admin = |cost| {
        Admin::new(
            store.clone(),
            PasswordHashing::new(cost, 4),
            audit.clone(),
            LockoutPolicy::default(),
        )
    };
    let fast = admin(PasswordCost::insecure_fast());
    let real = admin(PasswordCost::default());

    let mut jobs = JoinSet::new();
    let slots = Arc::new(Semaphore::new(64));
    let kinds = (0..plan.bulk)
        .map(|i| (bulk_name(i), Some(bulk_identity(i).public()), fast.clone()))
        .chain((0..plan.real).map(|i| (real_name(i), None, real.clone())))
        .chain((0..plan.app).map(|i| (app_name(i), None, fast.clone())));
    for (name, key, admin) in kinds {
        let permit = slots.clone().acquire_owned().await?;
        let store = store.clone();
        jobs.spawn(async move {
            let _permit = permit;
            match admin.add_user(&name, PASSWORD, false).await {
                Ok(()) | Err(AdminError::Exists(_)) => {}
                Err(e) => anyhow::bail!("cannot add {name}: {e}"),
            }
            if let Some(key) = key {
                let now = store.set_identity_if_unset(&name, key).await?;
                anyhow::ensure!(now == Some(key), "{name} has another identity key");
            }
            Ok(())
        });
        while let Some(done) = jobs.try_join_next() {
            done??;
        }
    }
    while let Some(done) = jobs.join_next().await {
        done??;
    }
    fast.close().await;
    Ok(())
}
