//! The peer library's own directory client ([`DirectoryClient`]) on a real peer endpoint,
//! logged in: for tests of the directory through the client a peer uses, without an app.

use std::net::SocketAddr;

use peer::directory_client::DirectoryClient;
use proto::{Identity, PublicKey};

use crate::{PASSWORD, TestDirectory};

/// A peer endpoint with `identity` on 127.0.0.1 (any port).
pub fn peer_endpoint(identity: &Identity) -> quinn::Endpoint {
    peer::endpoint::bind(identity, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// `user` logged in (password [`PASSWORD`]) to the directory at `addr`, pinning `key` if
/// given, reporting the endpoint's own address.
pub async fn logged_in_at(
    addr: SocketAddr,
    key: Option<PublicKey>,
    user: &str,
    identity: &Identity,
) -> (quinn::Endpoint, DirectoryClient) {
    let ep = peer_endpoint(identity);
    let client = DirectoryClient::connect(&ep, addr, key).await.unwrap();
    let addrs = vec![ep.local_addr().unwrap()];
    client.login(user, PASSWORD, identity, addrs).await.unwrap();
    (ep, client)
}

/// `user` logged in to `dir`, its key pinned.
pub async fn logged_in(
    dir: &TestDirectory,
    user: &str,
    identity: &Identity,
) -> (quinn::Endpoint, DirectoryClient) {
    logged_in_at(dir.addr(), Some(dir.server.public_key()), user, identity).await
}
