//! Which addresses of another peer a peer may send packets to.
//!
//! A rendezvous makes a peer send QUIC packets to the addresses of someone else: the
//! address the directory observed for them and the addresses they reported at login.
//! Reported addresses are chosen freely by whoever logs in, so without a rule anyone
//! could make another user's program send packets to a service on that user's own host
//! (loopback), on their link (link-local), or to a multicast group or broadcast.
//!
//! The rule ([`dialable`]), seen from a vantage point `near` (where the one who would
//! send stands: the directory's address as the peer reaches it, or, at the directory,
//! the other peer's observed address):
//!
//! - never an unspecified, multicast or broadcast address, nor port 0;
//! - a loopback address only when it is the one the directory observed (so the peer
//!   really is on the directory's host) and `near` is loopback too (so is the sender);
//! - a link-local address only when `near` is link-local too, or is the very address the
//!   directory observed for the peer (both behind the same NAT: the same network);
//! - any other address (public, or a private LAN address) as it is.

use std::net::{IpAddr, SocketAddr};

use crate::message::PeerInfo;

/// An address in the form used for comparisons and dialing: IPv4-mapped IPv6 becomes
/// IPv4, and IPv6 flow labels and scope ids are dropped (only address and port identify a
/// peer).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Where an address reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nothing a peer should ever send to: unspecified, multicast, broadcast.
    Never,
    /// This host only.
    Loopback,
    /// This link only (IPv4 169.254/16, IPv6 fe80::/10).
    LinkLocal,
    /// Anything else: public addresses and private LAN ranges.
    Routed,
}

/// The scope of `ip` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn scope(ip: IpAddr) -> Scope {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() => {
            Scope::Never
        }
        IpAddr::V4(v4) if v4.is_loopback() => Scope::Loopback,
        IpAddr::V4(v4) if v4.is_link_local() => Scope::LinkLocal,
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Scope::Never,
        IpAddr::V6(v6) if v6.is_loopback() => Scope::Loopback,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Scope::LinkLocal,
        _ => Scope::Routed,
    }
}

/// Whether `addr`, one of `peer`'s addresses, may be sent to from `near` (see the
/// module docs).
pub fn may_send(peer: &PeerInfo, addr: SocketAddr, near: IpAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    let observed = peer.observed.ip().to_canonical();
    let canonical = canonical(addr);
    match scope(addr.ip()) {
        Scope::Never => false,
        Scope::Loopback => {
            scope(near) == Scope::Loopback
                && canonical == SocketAddr::new(observed, peer.observed.port())
        }
        Scope::LinkLocal => scope(near) == Scope::LinkLocal || near.to_canonical() == observed,
        Scope::Routed => true,
    }
}

/// The addresses of `peer` (observed first, then reported) that may be sent to from
/// `near`, without duplicates.
pub fn dialable(peer: &PeerInfo, near: IpAddr) -> Vec<SocketAddr> {
    peer.all_addresses()
        .into_iter()
        .filter(|a| may_send(peer, *a, near))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn info(observed: &str, reported: &[&str]) -> PeerInfo {
        PeerInfo {
            user: "ali".parse().unwrap(),
            identity: Identity::generate().public(),
            observed: observed.parse().unwrap(),
            addresses: reported.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn strings(v: Vec<SocketAddr>) -> Vec<String> {
        v.into_iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn scopes() {
        for (a, s) in [
            ("0.0.0.0", Scope::Never),
            ("224.0.0.1", Scope::Never),
            ("239.255.255.250", Scope::Never),
            ("255.255.255.255", Scope::Never),
            ("::", Scope::Never),
            ("ff02::1", Scope::Never),
            ("127.0.0.1", Scope::Loopback),
            ("127.8.9.10", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("::ffff:127.0.0.1", Scope::Loopback),
            ("169.254.1.2", Scope::LinkLocal),
            ("fe80::1", Scope::LinkLocal),
            ("192.168.1.9", Scope::Routed),
            ("10.0.0.1", Scope::Routed),
            ("203.0.113.5", Scope::Routed),
            ("2001:db8::1", Scope::Routed),
        ] {
            assert_eq!(scope(ip(a)), s, "{a}");
        }
    }

    #[test]
    fn a_remote_peer_cannot_aim_us_at_our_own_host_or_link() {
        let hostile = info(
            "203.0.113.5:4000",
            &[
                "127.0.0.1:22",
                "[::1]:22",
                "169.254.169.254:80",
                "[fe80::1]:53",
                "224.0.0.251:5353",
                "255.255.255.255:9",
                "0.0.0.0:4000",
                "192.168.1.9:4000",
            ],
        );
        // We reach the directory over the Internet.
        assert_eq!(
            strings(dialable(&hostile, ip("198.51.100.1"))),
            ["203.0.113.5:4000", "192.168.1.9:4000"]
        );
    }

    #[test]
    fn loopback_only_as_observed_and_only_from_loopback() {
        let local = info("127.0.0.1:4000", &["127.0.0.1:4000", "127.0.0.1:22"]);
        // Both on the directory's host: the observed address, not another port.
        assert_eq!(
            strings(dialable(&local, ip("127.0.0.1"))),
            ["127.0.0.1:4000"]
        );
        // A directory elsewhere telling us someone is at 127.0.0.1: that is us.
        assert!(dialable(&local, ip("203.0.113.1")).is_empty());
    }

    #[test]
    fn link_local_only_on_the_same_network() {
        let lan = info("203.0.113.5:4000", &["169.254.3.4:4000"]);
        assert_eq!(
            strings(dialable(&lan, ip("203.0.113.5"))),
            ["203.0.113.5:4000", "169.254.3.4:4000"]
        );
        assert_eq!(
            strings(dialable(&lan, ip("169.254.9.9"))),
            ["203.0.113.5:4000", "169.254.3.4:4000"]
        );
        assert_eq!(
            strings(dialable(&lan, ip("198.51.100.1"))),
            ["203.0.113.5:4000"]
        );
    }

    #[test]
    fn port_zero_and_mapped_addresses() {
        let p = info("203.0.113.5:4000", &["192.168.1.9:0"]);
        assert_eq!(
            strings(dialable(&p, ip("198.51.100.1"))),
            ["203.0.113.5:4000"]
        );
        let mapped = info("[::ffff:127.0.0.1]:4000", &[]);
        assert_eq!(dialable(&mapped, ip("127.0.0.1")).len(), 1);
    }
}
