//! The directory service seen from the peer's side (real directory, real client, loopback):
//! register, login, lookup, who, pinning of the directory's key, tickets across restarts.

use peer::directory_client::{ClientError, DirectoryClient};
use peer::login::{self, Options};
use peer::profile::Profile;
use proto::Identity;
use proto::message::Refusal;
use testkit::client::{logged_in, peer_endpoint};
use testkit::{PASSWORD, TestDirectory};

use zeroize::Zeroizing;

#[tokio::test]
async fn register_login_lookup_who_round_trip() {
    let dir = TestDirectory::start_with(|c| c.open_registration = true)
        .await
        .unwrap();
    let (ali_id, bianca_id) = (Identity::generate(), Identity::generate());

    // Both register themselves, then log in.
    for (name, id) in [("ali", &ali_id), ("bianca", &bianca_id)] {
        let ep = peer_endpoint(id);
        let c = DirectoryClient::connect(&ep, dir.addr(), None)
            .await
            .unwrap();
        assert_eq!(c.directory_key(), dir.server.public_key());
        assert!(c.open_registration());
        c.register(name, PASSWORD, &id.public()).await.unwrap();
        let again = c.register(name, PASSWORD, &id.public()).await.unwrap_err();
        assert!(
            matches!(
                again,
                ClientError::Refused {
                    reason: Refusal::UserExists,
                    ..
                }
            ),
            "{again}"
        );
    }
    let (ali_ep, ali) = logged_in(&dir, "ali", &ali_id).await;
    let (bianca_ep, bianca) = logged_in(&dir, "bianca", &bianca_id).await;

    let found = ali
        .lookup("bianca")
        .await
        .unwrap()
        .expect("bianca is online");
    assert_eq!(found.identity, bianca_id.public());
    assert_eq!(found.observed, bianca_ep.local_addr().unwrap());
    let found = bianca.lookup("ali").await.unwrap().expect("ali is online");
    assert_eq!(found.identity, ali_id.public());
    assert_eq!(found.observed, ali_ep.local_addr().unwrap());

    let who: Vec<String> = ali
        .who()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user.into_string())
        .collect();
    assert_eq!(who, ["ali", "bianca"]);

    // Offline and unknown users are NOTFOUND alike.
    dir.add_users(&["chloe"]).await.unwrap();
    assert_eq!(ali.lookup("chloe").await.unwrap(), None);
    assert_eq!(ali.lookup("nobody").await.unwrap(), None);

    // bianca logs out: she disappears.
    bianca.logout().await.unwrap();
    assert_eq!(ali.lookup("bianca").await.unwrap(), None);
}

#[tokio::test]
async fn lookup_before_login_is_notfound() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let bianca_id = Identity::generate();
    let (_ep, _bianca) = logged_in(&dir, "bianca", &bianca_id).await;
    let stranger = Identity::generate();
    let ep = peer_endpoint(&stranger);
    let c = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    assert_eq!(c.lookup("bianca").await.unwrap(), None);
}

#[tokio::test]
async fn wrong_password_counts_down_then_locks_until_unlocked() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let id = Identity::generate();
    let ep = peer_endpoint(&id);
    let c = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    for left in [2, 1, 0] {
        let e = c
            .login("ali", "wrong password", &id, vec![])
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Refused { reason: Refusal::BadCredentials, attempts_left: Some(n), .. } if n == left),
            "{e}"
        );
    }
    let e = c.login("ali", PASSWORD, &id, vec![]).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Refused {
                reason: Refusal::LockedOut,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("try again in"), "{e}");
    dir.server.unlock_user("ali").await.unwrap();
    c.login("ali", PASSWORD, &id, vec![]).await.unwrap();
}

#[tokio::test]
async fn another_identity_key_for_an_existing_user_is_refused() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let first = Identity::generate();
    let (_ep, c) = logged_in(&dir, "ali", &first).await;
    c.logout().await.unwrap();
    let other = Identity::generate();
    let ep = peer_endpoint(&other);
    let c = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    let e = c.login("ali", PASSWORD, &other, vec![]).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Refused {
                // Like a wrong password (issue 14: a right password with another key
                // must not be told apart from a wrong one).
                reason: Refusal::BadCredentials,
                ..
            }
        ),
        "{e}"
    );
}

fn opts(dir: &TestDirectory, profile: &std::path::Path) -> Options {
    testkit::options(dir, profile, "ali", PASSWORD)
}

#[tokio::test]
async fn profile_pins_the_directory_and_refuses_a_changed_key() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let profile = tempfile::tempdir().unwrap();

    let online = login::login(&opts(&dir, profile.path()), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(online.first_contact);
    online.link.logout().await;
    let pinned = Profile::open(profile.path())
        .unwrap()
        .directories
        .get(&dir.addr().to_string());
    assert_eq!(pinned, Some(dir.server.public_key()));

    // A restart on the same data dir keeps the key: nothing to re-pin.
    let dir = dir.restart().await.unwrap();
    let online = login::login(&opts(&dir, profile.path()), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(!online.first_contact);
    online.link.logout().await;

    // Another directory (another key) on the same address is refused loudly.
    let addr = dir.addr();
    dir.server.shutdown().await;
    let impostor = TestDirectory::start_with(|c| c.listen = addr)
        .await
        .unwrap();
    impostor.add_users(&["ali"]).await.unwrap();
    let err = match login::login(
        &opts(&impostor, profile.path()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    {
        Ok(_) => panic!("a changed directory key was accepted"),
        Err(e) => e,
    };
    let text = format!("{err:#}");
    let fp_old = pinned.unwrap().fingerprint().to_string();
    let fp_new = impostor.server.fingerprint().to_string();
    assert!(text.contains(&fp_old) && text.contains(&fp_new), "{text}");
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::FingerprintChanged { .. }) => {}
        other => panic!("expected FingerprintChanged, got {other:?}"),
    }
}

#[tokio::test]
async fn ticket_resumes_after_a_directory_restart() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let id = Identity::generate();
    let ep = peer_endpoint(&id);
    let c = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    let grant = c.login("ali", PASSWORD, &id, vec![]).await.unwrap();
    drop(c);
    let dir = dir.restart().await.unwrap();
    let c = DirectoryClient::connect(&ep, dir.addr(), Some(dir.server.public_key()))
        .await
        .unwrap();
    // The ticket proves nothing without the identity key.
    let thief = Identity::generate();
    let e = c
        .resume("ali", &grant.ticket, &thief, vec![])
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Refused { .. }), "{e}");
    let again = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    let g2 = again
        .resume("ali", &grant.ticket, &id, vec![])
        .await
        .unwrap();
    assert_eq!(g2.user, "ali");
    assert_ne!(
        *g2.ticket, *grant.ticket,
        "tickets are renewed when redeemed"
    );
    assert!(again.lookup("ali").await.unwrap().is_some());

    // The reply to that Resume might have been lost: the same ticket works again for a
    // short grace, and its new successor replaces the one before (changed by issue 14:
    // the grace must not fork a second live ticket).
    drop(again);
    let retry = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    let g3 = retry
        .resume("ali", &grant.ticket, &id, vec![])
        .await
        .unwrap();
    assert_ne!(*g3.ticket, *g2.ticket);
    let later = DirectoryClient::connect(&ep, dir.addr(), None)
        .await
        .unwrap();
    let e = later
        .resume("ali", &g2.ticket, &id, vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Refused {
                reason: Refusal::TicketInvalid,
                ..
            }
        ),
        "{e}"
    );
    later.resume("ali", &g3.ticket, &id, vec![]).await.unwrap();
}

#[tokio::test]
async fn passwd_changes_the_directory_password_and_the_profile_together() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    let with = |password: &str| testkit::options(&dir, profile.path(), "ali", password);
    let online = login::login(&with(PASSWORD), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    online.link.logout().await;
    drop(online);

    // A wrong current password changes nothing (and counts as a failed login).
    let new = "a brand new passphrase";
    let e = peer::passwd::change(
        &with("not the password"),
        Zeroizing::new(new.into()),
        peer::vault::VaultCost::default(),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("password"), "{e:#}");
    // A weak new one is refused before anything happens.
    assert!(
        peer::passwd::change(
            &with(PASSWORD),
            Zeroizing::new("short".into()),
            peer::vault::VaultCost::default()
        )
        .await
        .is_err()
    );
    peer::passwd::change(
        &with(PASSWORD),
        Zeroizing::new(new.into()),
        peer::vault::VaultCost::default(),
    )
    .await
    .unwrap();

    // The new password opens the profile and logs in; the old one does neither.
    let online = login::login(&with(new), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    online.link.logout().await;
    assert!(
        login::login(&with(PASSWORD), "127.0.0.1:0".parse().unwrap())
            .await
            .is_err()
    );
    let id = Identity::generate();
    let c = DirectoryClient::connect(&peer_endpoint(&id), dir.addr(), None)
        .await
        .unwrap();
    let e = c.login("ali", PASSWORD, &id, vec![]).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Refused {
                reason: Refusal::BadCredentials,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_weak_password_is_refused_before_it_seals_a_new_profile() {
    let dir = TestDirectory::start().await.unwrap();
    // An account whose password passes the directory's length rule but is one of the
    // first an attacker with a stolen laptop would try.
    dir.server
        .add_user("ali", "qwerty123", false)
        .await
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let opts = testkit::options(&dir, profile.path(), "ali", "qwerty123");
    let e = match login::login(&opts, "127.0.0.1:0".parse().unwrap()).await {
        Ok(_) => panic!("a weak password sealed a new profile"),
        Err(e) => e,
    };
    assert!(format!("{e:#}").contains("most common"), "{e:#}");
    assert!(!peer::vault::Vault::exists(profile.path()), "no vault made");
    assert_eq!(
        dir.server.online_count(),
        0,
        "nothing sent to the directory"
    );
}
