//! Telling the user something needs their attention: a terminal bell and, if configured,
//! a command (to play a sound or raise a desktop notification).
//!
//! Each kind of event can be switched on or off in the profile's `config.toml`:
//!
//! ```toml
//! [alerts]
//! bell = true             # ring the terminal bell (never when output is not a terminal)
//! on_connect = true       # someone calls
//! on_private = true       # a private message outside the current chat
//! on_mention = true       # a room message that mentions @you
//! on_presence = false     # a contact comes online or goes offline
//! command = "notify-send Natter"   # run as `sh -c COMMAND`, with NATTER_EVENT and NATTER_FROM set
//! ```
//!
//! The command gets the kind of event and who it is from, never the message text.

use serde::{Deserialize, Serialize};

/// What deserves an alert, and how to give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    pub bell: bool,
    pub on_connect: bool,
    pub on_private: bool,
    pub on_mention: bool,
    pub on_presence: bool,
    pub command: Option<String>,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            bell: true,
            on_connect: true,
            on_private: true,
            on_mention: true,
            on_presence: false,
            command: None,
        }
    }
}

/// The kinds of event that can raise an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    Connect,
    Private,
    Mention,
    Presence,
}

impl Alert {
    fn name(self) -> &'static str {
        match self {
            Alert::Connect => "connect",
            Alert::Private => "private",
            Alert::Mention => "mention",
            Alert::Presence => "presence",
        }
    }
}

impl Alerts {
    /// Whether `alert` is switched on.
    pub fn wants(&self, alert: Alert) -> bool {
        match alert {
            Alert::Connect => self.on_connect,
            Alert::Private => self.on_private,
            Alert::Mention => self.on_mention,
            Alert::Presence => self.on_presence,
        }
    }

    /// Runs the configured command for `alert` (in the background; its failure is only
    /// logged). The bell is rung by the terminal front end.
    pub fn run_command(&self, alert: Alert, from: &str) {
        let Some(command) = self.command.clone() else {
            return;
        };
        let from = from.to_string();
        tokio::spawn(async move {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .env("NATTER_EVENT", alert.name())
                .env("NATTER_FROM", &from)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .await;
            if let Err(e) = status {
                tracing::warn!(error = %e, "alert command failed");
            }
        });
    }
}

/// Whether `text` mentions `user` as `@user` (not as part of a longer name).
pub fn mentions(text: &str, user: &str) -> bool {
    let needle = format!("@{user}");
    text.match_indices(&needle).any(|(i, _)| {
        let after = text[i + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_detection() {
        assert!(mentions("hi @ali!", "ali"));
        assert!(mentions("@ali", "ali"));
        assert!(!mentions("hi @alice", "ali"));
        assert!(!mentions("hi ali", "ali"));
    }

    #[test]
    fn config_defaults_and_parse() {
        let a: Alerts = toml::from_str("bell = false\ncommand = 'true'").unwrap();
        assert!(!a.bell && a.on_private && a.command.as_deref() == Some("true"));
        assert!(toml::from_str::<Alerts>("belll = true").is_err());
    }
}
