//! Command-line arguments: every flag defined once, with the documentation `--help` shows.
//! The work is in [`crate::commands`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Natter: secure peer-to-peer terminal chat.
///
/// Logs in to a directory, then chats directly with other peers over QUIC, end-to-end
/// encrypted and verified against the directory and against keys pinned earlier.
/// The password comes from PEER_PASSWORD, --password-file, or a prompt.
///
/// Every flag except --profile can also be set in the profile's config.toml (the flag
/// wins); `peer config print` shows the result.
///
/// Exit status: 0 on success; 1 with a one-line reason on stderr on failure (wrong
/// password, locked out, directory unreachable, changed fingerprint); 2 on bad usage.
#[derive(Debug, Parser)]
#[command(name = "peer", version)]
pub struct Cli {
    /// Profile directory (identity key, pinned keys, settings) [default: the platform
    /// config dir's natter/profile]
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "PEER_PROFILE",
        hide_env_values = true
    )]
    pub profile: Option<PathBuf>,

    /// Directory address (remembered in the profile after the first use); several
    /// instances of one directory service separated by commas, to fail over between
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT[,...]",
        env = "PEER_DIRECTORY",
        hide_env_values = true
    )]
    pub directory: Option<String>,

    /// The directory's key fingerprint, as `directory serve` prints it; replaces any pin
    #[arg(long, global = true, value_name = "FINGERPRINT")]
    pub directory_fingerprint: Option<String>,

    /// User name to log in as (remembered in the profile after the first login)
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "PEER_USER",
        hide_env_values = true
    )]
    pub user: Option<String>,

    /// Read the password from the first line of FILE instead of PEER_PASSWORD or a prompt
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Where to listen for chats.
#[derive(Debug, Clone, Args)]
pub struct Listen {
    /// UDP address to listen on for chats (port 0 picks a free one) [default: 0.0.0.0:65000]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account (on a directory that allows open registration)
    Register {
        /// The user name to register
        name: String,
    },
    /// Log in, listen for chats, and ask whom to call
    Login(Listen),
    /// Log in and chat with NAME (Ctrl-C ends the chat; the program keeps listening)
    Connect {
        /// Who to chat with
        name: String,
        #[command(flatten)]
        listen: Listen,
    },
    /// Log in and only accept incoming chats
    Listen(Listen),
    /// List the users online
    Who,
    /// Show your key's fingerprint, or the safety number you share with NAME
    Fingerprint {
        /// A contact whose pinned key to compare
        name: Option<String>,
    },
    /// Accept NAME's current key (after their key changed and you checked it with them).
    /// Shows the key and its safety number and asks first; scripts give the fingerprint
    /// they checked, or --yes
    Trust {
        /// The contact whose new key to accept
        name: String,
        /// The fingerprint you checked with NAME: the key is pinned only if it is this one
        fingerprint: Option<String>,
        /// Pin the directory's current key without asking
        #[arg(long)]
        yes: bool,
    },
    /// Show your conversation with NAME, from the profile's encrypted history (asks for
    /// the password; a wrong one is refused)
    History {
        /// The contact
        name: String,
        /// Only the last N messages
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Change the password, at the directory and for this profile's sealed keys and
    /// history (re-encrypted). The current password comes as for login; the new one
    /// from PEER_NEW_PASSWORD or a prompt (asked twice)
    Passwd,
    /// Show the profile's configuration (`config.toml` with these flags over it)
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `peer config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective settings: built-in defaults, then the profile's `config.toml`,
    /// then the environment and flags
    Print(Listen),
}
