//! Getting online: profile → password → vault → endpoint → directory (pinned) → login.
//!
//! Everything a command needs before it can do its job: the user name, the password
//! (from `PEER_PASSWORD`, `--password-file`, or a no-echo prompt; used to unlock the
//! profile and to log in, then wiped), the directory's address and pinned key, the one
//! endpoint, and the logged-in [`Link`]. The profile's secrets are sealed with the same
//! password ([`crate::vault`]): an existing vault is unlocked before anything goes on
//! the network (a wrong password stops there); a new profile gets its vault at once and
//! loses it if the directory refuses the password; an old plaintext key is sealed
//! after the directory has accepted the password. Once logged in, the peer publishes its
//! prekey for sealed mail ([`crate::mailbox`]).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use proto::message::Refusal;
use proto::{Fingerprint, PublicKey};
use zeroize::Zeroizing;

use crate::directory_addr::{directory_names, resolve_all};
use crate::directory_client::{ClientError, DirectoryClient, Grant};
use crate::endpoint;
use crate::link::Link;
use crate::pins::DirectoryAddr;
use crate::profile::{Locked, Profile, Secrets};
use crate::vault::VaultCost;

/// Where the password comes from.
#[derive(Clone, Default)]
pub struct Credentials {
    /// `--user` / `PEER_USER`; else the profile's, else a prompt.
    pub user: Option<String>,
    /// The password itself (library callers: tests, the demo). Wins over the rest.
    pub password: Option<Zeroizing<String>>,
    /// `--password-file`; else `PEER_PASSWORD`, else a prompt.
    pub password_file: Option<PathBuf>,
}

/// What every networked command needs to know.
#[derive(Clone)]
pub struct Options {
    pub profile: PathBuf,
    /// `--directory HOST[:PORT]`, else the profile's.
    pub directory: Option<String>,
    /// `--directory-fingerprint`: the key the directory must have (replaces a pin).
    pub directory_fingerprint: Option<Fingerprint>,
    pub credentials: Credentials,
    /// argon2id cost of a vault made now (a new profile, a password change):
    /// [`VaultCost::from_env`] for the `peer` program.
    pub vault_cost: VaultCost,
}

/// A peer that is logged in.
pub struct Online {
    pub profile: Profile,
    pub endpoint: quinn::Endpoint,
    pub link: Arc<Link>,
    pub grant: Grant,
    /// Whether the directory's key was pinned just now (first contact).
    pub first_contact: bool,
}

impl Online {
    /// Logs out and closes the directory connection, waiting (bounded) until the
    /// directory has been told, so a one-shot command frees its slot there at once.
    pub async fn close(self) {
        self.link.logout().await;
        crate::endpoint::close(&self.endpoint).await;
    }
}

/// Reads the password: `--password-file` (first line), `PEER_PASSWORD`, or a no-echo
/// prompt on the terminal (asked twice when `confirm`).
pub fn password(credentials: &Credentials, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Some(p) = &credentials.password {
        return Ok(p.clone());
    }
    if let Some(path) = &credentials.password_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        );
        return Ok(Zeroizing::new(
            text.lines().next().unwrap_or("").to_string(),
        ));
    }
    if let Ok(p) = std::env::var("PEER_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set PEER_PASSWORD or pass --password-file FILE");
    }
    let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Password (again): ")?);
        if first != again {
            bail!("the passwords do not match");
        }
    }
    Ok(first)
}

/// The user name: flag, else profile, else a prompt on the terminal.
pub fn user_name(credentials: &Credentials, profile: &Profile<Locked>) -> anyhow::Result<String> {
    if let Some(u) = credentials
        .user
        .clone()
        .or_else(|| profile.settings.user.clone())
    {
        return Ok(u);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no user name: pass --user NAME (it is then remembered in the profile)");
    }
    eprint!("Login: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let name = line.trim().to_string();
    proto::names::check_username(&name)?;
    Ok(name)
}

/// Connects to the directory, enforcing the pinned key (or `--directory-fingerprint`) and
/// pinning it on first contact. Returns the client, whether this was first contact, and
/// the directory's names (several when it runs as several instances).
///
/// Several names are one service with one key: a key pinned under any of them is
/// required of all, and the key is then pinned under each.
pub async fn connect_directory(
    profile: &mut Profile,
    endpoint: &quinn::Endpoint,
    opts: &Options,
) -> anyhow::Result<(DirectoryClient, bool, Vec<String>)> {
    let setting = opts
        .directory
        .clone()
        .or_else(|| profile.settings.directory.clone())
        .context(
            "no directory: pass --directory HOST:PORT (it is then remembered in the profile)",
        )?;
    let names = directory_names(&setting);
    let mut pins = names.iter().filter_map(|n| profile.directories.get(n));
    let pinned = pins.next();
    if let Some(other) = pins.find(|k| Some(*k) != pinned) {
        bail!(
            "the directory addresses {setting} have different pinned keys ({} and {}): \
             they are not one service; list them separately",
            pinned.expect("found one").fingerprint(),
            other.fingerprint()
        );
    }
    let pinned = match opts.directory_fingerprint {
        Some(_) => None,
        None => pinned,
    };
    let addrs = resolve_all(&names).await?;
    let client = DirectoryClient::connect_any(endpoint, &addrs, pinned).await?;
    let key = client.directory_key();
    if let Some(expected) = opts.directory_fingerprint
        && key.fingerprint() != expected
    {
        let addr = client.addr();
        client.close();
        return Err(ClientError::FingerprintMismatch {
            addr,
            expected,
            presented: key.fingerprint(),
        }
        .into());
    }
    let first_contact = pinned.is_none()
        && names
            .iter()
            .all(|n| profile.directories.get(n) != Some(key));
    for name in &names {
        profile.directories.pin(&DirectoryAddr::parse(name)?, key)?;
    }
    if profile.settings.directory.is_none() {
        profile.settings.directory = Some(setting);
        profile.save_settings()?;
    }
    Ok((client, first_contact, names))
}

/// The addresses to report to the directory besides the one it observes: our address on
/// the interface that routes to the directory (a LAN address behind NAT).
pub fn reported_addresses(endpoint: &quinn::Endpoint, directory: SocketAddr) -> Vec<SocketAddr> {
    let Ok(local) = endpoint.local_addr() else {
        return Vec::new();
    };
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let unspecified: IpAddr = match directory {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    // Connecting a UDP socket sends nothing; it only asks the kernel for a route.
    std::net::UdpSocket::bind((unspecified, 0))
        .and_then(|s| {
            s.connect(directory)?;
            s.local_addr()
        })
        .map(|a| vec![SocketAddr::new(a.ip(), local.port())])
        .unwrap_or_default()
}

/// Opens the profile's secrets with `password` (argon2, off the runtime): see
/// [`Profile::open_secrets`].
pub async fn open_secrets(
    profile: Profile<Locked>,
    password: &Zeroizing<String>,
    cost: VaultCost,
) -> anyhow::Result<(Profile, Secrets)> {
    let password = password.clone();
    let opened = tokio::task::spawn_blocking(move || profile.open_secrets(&password, cost))
        .await
        .context("the key derivation task failed")?;
    Ok(opened?)
}

/// The unlock path of a login or a registration: opens the profile's secrets with
/// `password`, runs `attempt` (the request to the directory) with the unlocked profile,
/// and settles the secrets by the directory's answer: a vault made just now for a new
/// profile is undone if it refused the password, a plaintext key from an older version
/// is sealed once it accepted it.
pub async fn with_secrets<T>(
    profile: Profile<Locked>,
    password: &Zeroizing<String>,
    cost: VaultCost,
    attempt: impl AsyncFnOnce(&mut Profile) -> anyhow::Result<T>,
) -> anyhow::Result<(Profile, T)> {
    let (mut profile, secrets) = open_secrets(profile, password, cost).await?;
    let done = match attempt(&mut profile).await {
        Ok(done) => done,
        Err(e) => {
            if secrets == Secrets::Created {
                profile.forget_new_vault();
            }
            return Err(e);
        }
    };
    if secrets == Secrets::Plaintext {
        let password = password.clone();
        profile = tokio::task::spawn_blocking(move || {
            profile.seal(&password, cost)?;
            tracing::info!("identity key sealed with the password (migrated from plaintext)");
            anyhow::Ok(profile)
        })
        .await
        .context("the key derivation task failed")??;
    }
    Ok((profile, done))
}

/// Opens the profile, unlocks it with the password, binds the endpoint on `listen`,
/// connects to the directory, logs in and publishes the prekey.
pub async fn login(opts: &Options, listen: SocketAddr) -> anyhow::Result<Online> {
    let profile = Profile::open(&opts.profile)?;
    let user = user_name(&opts.credentials, &profile)?;
    proto::names::check_username(&user)?;
    let password = password(&opts.credentials, false)?;
    // No account can have a longer one: say so instead of spending a login attempt.
    proto::names::check_password_len(&password)?;
    // A new profile seals its keys with this password: it must stand an offline attack.
    let new_profile = profile.is_new();
    if new_profile {
        crate::passwd::check_strength(&user, &password)?;
    }
    let attempt = async |profile: &mut Profile| {
        if let Some(vault) = profile.vault()
            && vault.cost().weaker_than(&VaultCost::default())
        {
            tracing::info!(
                "this profile's keys are sealed at an older, cheaper cost; `peer passwd` re-seals them"
            );
        }
        let endpoint = endpoint::bind(profile.identity(), listen)?;
        let (client, first_contact, names) = connect_directory(profile, &endpoint, opts).await?;
        let addresses = reported_addresses(&endpoint, client.addr());
        let identity = profile.identity().clone();
        let (link, grant) = Link::login(
            endpoint.clone(),
            client,
            names,
            &user,
            password.clone(),
            identity,
            addresses,
        )
        .await?;
        anyhow::Ok((endpoint, first_contact, link, grant))
    };
    let (mut profile, (endpoint, first_contact, link, grant)) =
        with_secrets(profile, &password, opts.vault_cost, attempt)
            .await
            .map_err(|e| explain_new_profile_refusal(e, new_profile, &user))?;
    drop(password);
    if let Some((created_at, secret)) = profile.current_prekey() {
        let prekey =
            proto::sealed::SignedPrekey::sign(profile.identity(), &grant.user, secret, created_at);
        if let Err(e) = link.publish_prekey(prekey).await {
            tracing::warn!(error = %e, "could not publish the prekey: offline messages to us may fail");
        }
    }
    if profile.settings.user.is_none() {
        profile.settings.user = Some(user);
        profile.save_settings()?;
    }
    Ok(Online {
        profile,
        endpoint,
        link,
        grant,
        first_contact,
    })
}

/// A login refused as bad credentials from a profile made just now may be an account
/// that already has a key, made by another profile: the directory answers that exactly
/// like a wrong password (so strangers learn nothing), so say it here, where we know the
/// key is new.
fn explain_new_profile_refusal(e: anyhow::Error, new_profile: bool, user: &str) -> anyhow::Error {
    let bad_credentials = matches!(
        e.downcast_ref::<ClientError>(),
        Some(ClientError::Refused {
            reason: Refusal::BadCredentials,
            ..
        })
    );
    if new_profile && bad_credentials {
        e.context(format!(
            "the directory refused this new profile (its identity key was made just now; if \
             {user} has logged in before from another profile, use that one with --profile DIR, \
             or ask the directory's operator for `directory user reset-key {user}`, which your \
             contacts will see as a key change)"
        ))
    } else {
        e
    }
}

/// The key to show for `name`: the pinned one.
pub fn pinned_key(profile: &Profile, name: &str) -> Option<PublicKey> {
    profile.peers.get(name)
}
