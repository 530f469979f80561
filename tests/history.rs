//! Conversation history at rest: written while chatting (and for offline mail), read
//! back with the right password, refused with a wrong one, and never in clear on disk;
//! the identity key file is sealed too, and `peer fingerprint` still works offline.

use std::path::Path;

use peer::app::Start;
use peer::history::Direction;
use peer::profile::{Profile, ProfileError};
use peer::ui::Note;
use peer::vault::{VaultCost, VaultError};
use testkit::{PASSWORD, TestDirectory, TestPeer};

const MARKER: &str = "HISTORY-MARKER-c0ffee";

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runs `peer --profile DIR --password-file F history NAME ...` in-process.
async fn history_command(profile: &Path, password: &str, args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{password}\n")).unwrap();
    let mut argv = vec![
        "peer".to_string(),
        "--profile".into(),
        profile.display().to_string(),
        "--password-file".into(),
        file.path().display().to_string(),
        "history".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let cli = peer::cli::Cli::try_parse_from(argv).unwrap();
    peer::commands::run(cli).await
}

#[tokio::test]
async fn history_is_sealed_and_needs_the_password() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali", "bianca"]).await.unwrap();
    let mut bianca = TestPeer::start(&dir, "bianca", Start::Idle).await.unwrap();
    let mut ali = TestPeer::start(&dir, "ali", Start::Connect("bianca".into()))
        .await
        .unwrap();
    ali.expect("connected", |n| matches!(n, Note::Connected { .. }))
        .await;
    ali.say(&format!("{MARKER} from ali")).await;
    bianca
        .expect_message("ali", &format!("{MARKER} from ali"))
        .await;
    bianca.say(&format!("{MARKER} from bianca")).await;
    ali.expect_message("bianca", &format!("{MARKER} from bianca"))
        .await;
    let bianca_profile = bianca.quit().await;
    // bianca is offline now: this one is sealed mail, recorded as such.
    ali.expect("ended", |n| matches!(n, Note::Ended { .. }))
        .await;
    ali.say(&format!("/msg bianca {MARKER} while away")).await;
    ali.expect("queued", |n| matches!(n, Note::Queued { .. }))
        .await;
    let ali_profile = ali.quit().await;

    // Nothing on disk is in clear: not the messages, not the identity key.
    for p in [ali_profile.path(), bianca_profile.path()] {
        assert!(
            !contains(&all_bytes(p), MARKER),
            "plaintext in {}",
            p.display()
        );
        let key = std::fs::read(p.join("identity.key")).unwrap();
        assert!(
            key.starts_with(peer::vault::MAGIC),
            "identity.key is not sealed"
        );
        assert!(
            p.join("history")
                .join(if p == ali_profile.path() {
                    "bianca.log"
                } else {
                    "ali.log"
                })
                .exists()
        );
    }

    // The right password reads it back, in order.
    let profile = Profile::open(ali_profile.path())
        .unwrap()
        .unlock(PASSWORD)
        .unwrap();
    let (entries, damaged) =
        peer::history::read(profile.dir(), profile.vault().unwrap(), "bianca").unwrap();
    assert_eq!(damaged, 0);
    let got: Vec<(Direction, &str)> = entries
        .iter()
        .map(|e| (e.direction, e.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Direction::Out, &*format!("{MARKER} from ali")),
            (Direction::In, &*format!("{MARKER} from bianca")),
            (Direction::OutOffline, &*format!("{MARKER} while away")),
        ]
    );
    assert!(entries.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    // A wrong password is a clear error, not garbage.
    let locked = Profile::open(ali_profile.path()).unwrap();
    assert!(matches!(
        locked.unlock("not the password"),
        Err(ProfileError::Vault(VaultError::WrongPassword))
    ));
    // The same through `peer history`.
    history_command(ali_profile.path(), PASSWORD, &["bianca", "--last", "2"])
        .await
        .unwrap();
    let err = history_command(ali_profile.path(), "not the password", &["bianca"])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("wrong password"), "{err:#}");

    // `peer fingerprint` still works without the password (public key in clear).
    let locked = Profile::open(ali_profile.path()).unwrap();
    assert_eq!(locked.known_public_key(), Some(profile.identity().public()));

    // Changing the password re-encrypts: the old one no longer opens anything. It also
    // re-seals at the cost given (the profile was made at the tests' cheap one).
    assert!(
        profile
            .vault()
            .unwrap()
            .cost()
            .weaker_than(&VaultCost::default())
    );
    peer::profile::change_password(
        ali_profile.path(),
        PASSWORD,
        "a brand new password",
        VaultCost::default(),
    )
    .unwrap();
    let reopened = Profile::open(ali_profile.path()).unwrap();
    assert!(matches!(
        reopened.unlock(PASSWORD),
        Err(ProfileError::Vault(VaultError::WrongPassword))
    ));
    let reopened = Profile::open(ali_profile.path())
        .unwrap()
        .unlock("a brand new password")
        .unwrap();
    assert_eq!(reopened.vault().unwrap().cost(), VaultCost::default());
    assert_eq!(reopened.identity().public(), profile.identity().public());
    let (again, _) =
        peer::history::read(reopened.dir(), reopened.vault().unwrap(), "bianca").unwrap();
    assert_eq!(again, entries);
    assert!(!contains(&all_bytes(ali_profile.path()), MARKER));
}

#[tokio::test]
async fn a_plaintext_key_from_an_older_version_is_sealed_at_login() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    // What older versions wrote.
    let id = proto::Identity::generate();
    let hex: String = id
        .secret_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key_file = profile.path().join("identity.key");
    std::fs::write(&key_file, format!("natter-identity-v1\n{hex}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let ali = TestPeer::start_in(&dir, "ali", profile, Start::Idle)
        .await
        .unwrap();
    let profile = ali.quit().await;
    let raw = std::fs::read(&key_file).unwrap();
    assert!(!contains(&raw, &hex), "the key is still in clear");
    let p = Profile::open(profile.path())
        .unwrap()
        .unlock(PASSWORD)
        .unwrap();
    assert_eq!(p.identity().public(), id.public(), "the same key, sealed");
    // The directory registered that same key: logging in again works.
    TestPeer::start_in(&dir, "ali", profile, Start::Idle)
        .await
        .unwrap()
        .quit()
        .await;
}

#[tokio::test]
async fn a_refused_first_login_does_not_lock_the_profile() {
    let dir = TestDirectory::start().await.unwrap();
    dir.add_users(&["ali"]).await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    let opts = testkit::options(&dir, profile.path(), "ali", "mistyped password");
    assert!(
        peer::login::login(&opts, "127.0.0.1:0".parse().unwrap())
            .await
            .is_err()
    );
    assert!(!profile.path().join("vault").exists());
    TestPeer::start_in(&dir, "ali", profile, Start::Idle)
        .await
        .unwrap()
        .quit()
        .await;
}
