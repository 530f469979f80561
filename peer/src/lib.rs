//! The Natter peer: the user's program.
//!
//! # Layout
//! - [`profile`]: the user's profile directory: identity key (0600), pinned directory key,
//!   settings; locked ([`profile::Locked`]) until the password opens its secrets.
//! - [`login`]: getting online: profile, password, the one unlock path, endpoint,
//!   directory, login.
//! - [`link`]: staying logged in to the directory (reconnects, events).
//! - [`pins`]: keys of other users pinned on first contact (trust on first use).
//! - [`private_file`]: atomic 0600 writes, the one way a profile file is written.
//! - [`endpoint`]: the one QUIC endpoint (one UDP socket) that listens for chats, dials
//!   other peers and talks to the directory.
//! - [`directory_addr`]: where the directory is: `--directory` values and their resolution.
//! - [`directory_client`]: the directory protocol from the peer's side: hello, login,
//!   lookup, who, events.
//! - [`chat`]: one end-to-end chat session with another peer: connect request, mutual
//!   verification, sealed messages with acknowledgements, over a direct QUIC stream or a
//!   relay stream through the directory ([`chat::transport`]).
//! - [`app`]: the chat runtime after login: conversation state ([`app`]'s `chats`,
//!   `rooms`, `mail`) turned into [`ui::Note`]s.
//! - [`calls`]: the calls service: the endpoint's accept loop (held to [`calls::gate`]'s
//!   bounds), hole punching, relay calls and dialing; hands out opened sessions.
//! - [`reach`]: finding a path to a peer: rendezvous, simultaneous open through NATs
//!   (hole punching), relay fallback.
//! - [`vault`]: the password-derived key that seals the profile's secrets at rest.
//! - [`history`]: each conversation's history, append-only and sealed, per contact.
//! - [`mailbox`]: sealed mail for offline users: sending (seal, deposit, receipts) and
//!   receiving (fetch, open, acknowledge).
//! - [`joke`]: `/joke`: a joke from a configurable HTTP API, or a bundled one.
//! - [`admin`]: administrators' slash commands (`/adduser`, `/lock`, `/shutdown`...),
//!   the client side.
//! - [`passwd`]: changing the password at the directory and in the profile together.
//! - [`alerts`]: the bell and the alert command.
//! - [`ui`]: what the app tells the user ([`ui::Note`]) and the user the app
//!   ([`ui::Input`]): the terminal and the script line format.
//! - [`cli`]: command-line arguments; [`commands`]: what each subcommand does.
//! - [`clock`]: the wall clock, read in one place.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod calls;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod directory_addr;
pub mod directory_client;
pub mod endpoint;
pub mod history;
pub mod joke;
pub mod link;
pub mod login;
pub mod mailbox;
pub mod passwd;
pub mod pins;
pub mod private_file;
pub mod profile;
pub mod reach;
pub mod ui;
pub mod vault;
