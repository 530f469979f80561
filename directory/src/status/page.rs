//! The HTML page: [`render`] fills the template (`page.html`, beside this file) with a
//! [`Snapshot`], so the page shows everything without script too; its inline script then
//! refreshes every figure from `/status.json` in place.

use super::snapshot::{LockedAccount, Snapshot};

/// How often the page refreshes itself, in milliseconds.
const REFRESH_MS: u64 = 2000;

/// The page template. Values are filled in by [`render`] and kept current by the
/// script; element ids are what the script (and the tests) look for.
const PAGE: &str = include_str!("page.html");

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as "3 d 4 h", "5 h 6 min", "7 min", "8 s".
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        s => format!("{} d {} h", s / 86_400, s / 3600 % 24),
    }
}

/// Bytes as "1.5 MiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn locked_label(l: &LockedAccount) -> String {
    match l.secs_left {
        Some(secs) => format!("{} (for {})", l.name, human_secs(secs)),
        None => format!("{} (by an administrator)", l.name),
    }
}

/// The page, filled with `s` (so it shows everything without script too); its script
/// then refreshes every figure from `/status.json` in place.
pub fn render(s: &Snapshot) -> String {
    let users: String = if s.online.is_empty() {
        "<li class=\"none\">nobody</li>".into()
    } else {
        s.online
            .iter()
            .map(|u| {
                format!(
                    "<li><span class=\"name\">{}</span> <span class=\"since\">{}</span></li>",
                    esc(&u.user),
                    esc(&human_secs(u.online_secs))
                )
            })
            .collect()
    };
    let locked: String = if s.locked_accounts.is_empty() {
        "<li class=\"none\">none</li>".into()
    } else {
        s.locked_accounts
            .iter()
            .map(|l| format!("<li>{}</li>", esc(&locked_label(l))))
            .collect()
    };
    let (instances_count, instances_note, instances) = match &s.cluster {
        Some(c) => (
            c.instances.len(),
            "sharing one database",
            c.instances
                .iter()
                .map(|i| {
                    let name = i.relay_address.as_deref().unwrap_or(&i.id);
                    let this = if i.id == c.instance { "this one " } else { "" };
                    format!(
                        "<li><span class=\"name\">{}{}</span> <span class=\"since\">{} online · heartbeat {:.1} s ago</span></li>",
                        this,
                        esc(name),
                        i.users,
                        i.heartbeat_age_secs
                    )
                })
                .collect(),
        ),
        None => (1, "this one alone (SQLite)", String::new()),
    };
    PAGE.replace("{{version}}", &esc(s.version))
        .replace("{{instances_count}}", &instances_count.to_string())
        .replace("{{instances_note}}", instances_note)
        .replace("{{instances}}", &instances)
        .replace("{{started}}", &esc(&s.started_at_utc))
        .replace("{{uptime}}", &esc(&human_secs(s.uptime_secs)))
        .replace("{{online_count}}", &s.online_count.to_string())
        .replace("{{connections}}", &s.connections.to_string())
        .replace("{{users}}", &users)
        .replace("{{logins}}", &s.logins_last_hour.to_string())
        .replace("{{failures}}", &s.login_failures_last_hour.to_string())
        .replace("{{lookups}}", &s.lookups_total.to_string())
        .replace("{{lookups_rate}}", &format!("{:.1}", s.lookups_per_sec))
        .replace("{{locked_count}}", &s.locked_accounts.len().to_string())
        .replace("{{locked}}", &locked)
        .replace("{{relay_sessions}}", &s.relay_sessions.to_string())
        .replace("{{relay_bytes}}", &esc(&human_bytes(s.relay_bytes)))
        .replace(
            "{{state}}",
            if s.listening {
                "listening"
            } else {
                "shutting down"
            },
        )
        .replace("{{refresh_ms}}", &REFRESH_MS.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_and_humans() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(human_secs(59), "59 s");
        assert_eq!(human_secs(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(human_secs(2 * 86_400 + 3600), "2 d 1 h");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
