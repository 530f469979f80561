//! The Natter peer: the user's program.
//!
//! # Layout
//! - [`profile`]: the user's profile directory: identity key (0600), pinned directory key,
//!   settings.
//! - [`pins`]: keys of other users pinned on first contact (trust on first use).
//! - [`endpoint`]: the one QUIC endpoint (one UDP socket) that listens for chats, dials
//!   other peers and talks to the directory.
//! - [`directory_client`]: the directory protocol from the peer's side: hello, login,
//!   lookup, who, events.
//! - [`chat`]: one end-to-end chat session with another peer: connect request, mutual
//!   verification, sealed messages with acknowledgements, over a direct QUIC stream or a
//!   relay stream through the directory ([`chat::transport`]).
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

pub mod admin;
pub mod alerts;
pub mod app;
pub mod calls;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod directory_client;
pub mod endpoint;
pub mod history;
pub mod joke;
pub mod link;
pub mod login;
pub mod mailbox;
pub mod passwd;
pub mod pins;
pub mod profile;
pub mod reach;
pub mod ui;
pub mod vault;
