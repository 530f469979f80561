//! What the status page shows, gathered from the shared state: [`Snapshot`], served as
//! `/status.json` and rendered by [`super::page`] and [`super::prometheus`].
//!
//! Nothing here blocks the directory: every figure is an atomic or a short lock, except
//! the locked-account count, which lists accounts from the store (its own thread).

use proto::message::OnlineUser;
use serde::Serialize;

use crate::admin::ADMIN_LOCK_THRESHOLD;
use crate::clock::{format_utc, unix_now};
use crate::cluster::InstanceStatus;
use crate::limits::ConnLimits;
use crate::metrics::Metrics;
use crate::state::Shared;

/// One locked account.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockedAccount {
    pub name: String,
    /// Locked by an administrator (until unlocked), rather than after failed logins.
    pub by_admin: bool,
    /// Seconds until a lockout after failed logins lifts (`None` when by an admin).
    pub secs_left: Option<u64>,
}

/// Everything the page shows, as `/status.json` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    /// Unix time the directory started, and the same as `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_at: i64,
    pub started_at_utc: String,
    pub uptime_secs: u64,
    /// Logged-in users, sorted by name.
    pub online: Vec<OnlineUser>,
    pub online_count: usize,
    /// Open QUIC connections (logged in or not).
    pub connections: usize,
    /// Of those, the ones not logged in yet (see [`crate::limits`]).
    pub connections_anonymous: usize,
    pub logins_last_hour: u64,
    pub login_failures_last_hour: u64,
    pub lookups_total: u64,
    pub lookups_per_sec: f64,
    /// Accounts in the store (`None` if the store could not be read).
    pub accounts: Option<usize>,
    pub locked_accounts: Vec<LockedAccount>,
    pub relay_sessions: u64,
    pub relay_bytes: u64,
    /// Whether the QUIC listener runs (false once shutdown has begun).
    pub listening: bool,
    /// With several instances on one database: this one, and all that run.
    pub cluster: Option<ClusterSnapshot>,
}

/// The instances of the service, as this one sees them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    /// This instance's id.
    pub instance: String,
    pub instances: Vec<InstanceStatus>,
}

impl Snapshot {
    /// Reads every figure now: atomics and short locks, and the account list from the
    /// store.
    pub async fn gather(shared: &Shared, limits: &ConnLimits) -> Snapshot {
        let m = &shared.metrics;
        let now = unix_now();
        let (accounts, locked_accounts) = match shared.store.list_accounts().await {
            Ok(list) => {
                let locked = list
                    .iter()
                    .filter_map(|a| {
                        let secs = shared.config.lockout.locked_for(&a.lock, now)?;
                        let by_admin = secs > ADMIN_LOCK_THRESHOLD;
                        Some(LockedAccount {
                            name: a.name.clone(),
                            by_admin,
                            secs_left: (!by_admin).then_some(secs),
                        })
                    })
                    .collect();
                (Some(list.len()), locked)
            }
            Err(e) => {
                tracing::warn!("status page: cannot list accounts: {e}");
                (None, Vec::new())
            }
        };
        let online = shared.presence.list();
        let cluster = match shared.presence.cluster() {
            Some(c) => Some(ClusterSnapshot {
                instance: c.instance().to_string(),
                instances: c.instances().await,
            }),
            None => None,
        };
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            started_at: m.started_unix(),
            started_at_utc: format_utc(m.started_unix()),
            uptime_secs: m.uptime_secs(),
            online_count: online.len(),
            online,
            connections: limits.open(),
            connections_anonymous: limits.anonymous(),
            logins_last_hour: m.logins_last_hour(),
            login_failures_last_hour: m.failures_last_hour(),
            lookups_total: Metrics::get(&m.lookups),
            lookups_per_sec: m.lookups_per_sec(),
            accounts,
            locked_accounts,
            relay_sessions: Metrics::get(&m.relay_sessions),
            relay_bytes: Metrics::get(&m.relay_bytes),
            listening: !shared.shutdown.is_signalled(),
            cluster,
        }
    }
}
