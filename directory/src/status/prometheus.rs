//! `/metrics`: a [`Snapshot`] and the counters in the Prometheus text exposition format
//! (version 0.0.4).

use super::snapshot::Snapshot;
use crate::metrics::Metrics;

/// The counters in the Prometheus text exposition format.
pub fn render(s: &Snapshot, m: &Metrics) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    let count = |c: &std::sync::atomic::AtomicU64| Metrics::get(c).to_string();
    metric(
        "natter_start_time_seconds",
        "gauge",
        "Unix time the directory started.",
        s.started_at.to_string(),
    );
    metric(
        "natter_uptime_seconds",
        "gauge",
        "Seconds since the directory started.",
        s.uptime_secs.to_string(),
    );
    metric(
        "natter_users_online",
        "gauge",
        "Users logged in now.",
        s.online_count.to_string(),
    );
    metric(
        "natter_instances",
        "gauge",
        "Directory instances running on the shared database (1: this one, alone).",
        s.cluster
            .as_ref()
            .map_or(1, |c| c.instances.len())
            .to_string(),
    );
    metric(
        "natter_connections_open",
        "gauge",
        "Open QUIC connections, logged in or not.",
        s.connections.to_string(),
    );
    metric(
        "natter_connections_anonymous",
        "gauge",
        "Open QUIC connections not logged in yet.",
        s.connections_anonymous.to_string(),
    );
    if let Some(accounts) = s.accounts {
        metric(
            "natter_accounts",
            "gauge",
            "Accounts in the store.",
            accounts.to_string(),
        );
    }
    metric(
        "natter_accounts_locked",
        "gauge",
        "Accounts locked now (after failed logins or by an administrator).",
        s.locked_accounts.len().to_string(),
    );
    metric(
        "natter_logins_total",
        "counter",
        "Password logins that succeeded.",
        count(&m.logins),
    );
    metric(
        "natter_login_failures_total",
        "counter",
        "Password logins refused.",
        count(&m.login_failures),
    );
    metric(
        "natter_resumes_total",
        "counter",
        "Ticket logins that succeeded.",
        count(&m.resumes),
    );
    metric(
        "natter_resume_failures_total",
        "counter",
        "Ticket logins refused.",
        count(&m.resume_failures),
    );
    metric(
        "natter_registrations_total",
        "counter",
        "Accounts created by peers.",
        count(&m.registrations),
    );
    metric(
        "natter_lockouts_total",
        "counter",
        "Accounts locked after failed logins.",
        count(&m.lockouts),
    );
    metric(
        "natter_lookups_total",
        "counter",
        "Lookups answered.",
        count(&m.lookups),
    );
    metric(
        "natter_lookups_found_total",
        "counter",
        "Lookups that found the user online.",
        count(&m.lookups_found),
    );
    metric(
        "natter_admin_requests_total",
        "counter",
        "Administrator requests carried out.",
        count(&m.admin_requests),
    );
    metric(
        "natter_admin_refused_total",
        "counter",
        "Administrator requests refused (not permitted).",
        count(&m.admin_refused),
    );
    metric(
        "natter_anonymous_refused_total",
        "counter",
        "Requests refused for not being logged in (counted, not audited one by one).",
        count(&m.anonymous_refused),
    );
    metric(
        "natter_logins_last_hour",
        "gauge",
        "Logins (password and ticket) in the last hour.",
        s.logins_last_hour.to_string(),
    );
    metric(
        "natter_login_failures_last_hour",
        "gauge",
        "Failed logins (password and ticket) in the last hour.",
        s.login_failures_last_hour.to_string(),
    );
    metric(
        "natter_lookups_per_second",
        "gauge",
        "Lookups per second over the last 10 seconds.",
        format!("{}", s.lookups_per_sec),
    );
    metric(
        "natter_relay_sessions",
        "gauge",
        "Relay sessions open now.",
        s.relay_sessions.to_string(),
    );
    metric(
        "natter_relay_bytes_total",
        "counter",
        "Bytes relayed.",
        s.relay_bytes.to_string(),
    );
    out.push_str(&format!(
        "# HELP natter_build_info The directory's version.\n# TYPE natter_build_info gauge\nnatter_build_info{{version=\"{}\"}} 1\n",
        s.version
    ));
    out
}
