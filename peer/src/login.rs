//! Getting online: profile → endpoint → directory (pinned) → password login.
//!
//! Everything a command needs before it can do its job: the user name, the password
//! (from `PEER_PASSWORD`, `--password-file`, or a no-echo prompt; used once, then wiped),
//! the directory's address and pinned key, the one endpoint, and the logged-in [`Link`].

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use proto::{Fingerprint, PublicKey};
use zeroize::Zeroizing;

use crate::directory_client::{ClientError, DirectoryClient, Grant};
use crate::endpoint;
use crate::link::Link;
use crate::profile::Profile;

/// The directory's default port.
pub const DEFAULT_DIRECTORY_PORT: u16 = 8888;

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
pub fn user_name(credentials: &Credentials, profile: &Profile) -> anyhow::Result<String> {
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

/// Resolves `HOST[:PORT]` (port 8888 when missing).
pub async fn resolve(directory: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if directory.parse::<SocketAddr>().is_ok()
        || directory
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
    {
        directory.to_string()
    } else {
        format!("{directory}:{DEFAULT_DIRECTORY_PORT}")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("cannot resolve directory address {directory}"))?
        .next()
        .with_context(|| format!("directory address {directory} resolves to nothing"))
}

/// Connects to the directory, enforcing the pinned key (or `--directory-fingerprint`) and
/// pinning it on first contact. Returns the client and whether this was first contact.
pub async fn connect_directory(
    profile: &mut Profile,
    endpoint: &quinn::Endpoint,
    opts: &Options,
) -> anyhow::Result<(DirectoryClient, bool)> {
    let name = opts
        .directory
        .clone()
        .or_else(|| profile.settings.directory.clone())
        .context(
            "no directory: pass --directory HOST:PORT (it is then remembered in the profile)",
        )?;
    let addr = resolve(&name).await?;
    let pinned = match opts.directory_fingerprint {
        Some(_) => None,
        None => profile.directories.get(&name),
    };
    let client = DirectoryClient::connect(endpoint, addr, pinned).await?;
    let key = client.directory_key();
    if let Some(expected) = opts.directory_fingerprint
        && key.fingerprint() != expected
    {
        client.close();
        return Err(ClientError::FingerprintChanged {
            addr,
            pinned: expected,
            presented: key.fingerprint(),
        }
        .into());
    }
    let first_contact = pinned.is_none() && profile.directories.get(&name) != Some(key);
    profile.directories.pin(&name, key)?;
    if profile.settings.directory.is_none() {
        profile.settings.directory = Some(name);
        profile.save_settings()?;
    }
    Ok((client, first_contact))
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

/// Opens the profile, binds the endpoint on `listen`, connects to the directory and logs
/// in with the password.
pub async fn login(opts: &Options, listen: SocketAddr) -> anyhow::Result<Online> {
    let mut profile = Profile::open(&opts.profile)?;
    let user = user_name(&opts.credentials, &profile)?;
    proto::names::check_username(&user)?;
    let endpoint = endpoint::bind(profile.identity(), listen)?;
    let (client, first_contact) = connect_directory(&mut profile, &endpoint, opts).await?;
    let password = password(&opts.credentials, false)?;
    let addresses = reported_addresses(&endpoint, client.addr());
    let identity = profile.identity().clone();
    let (link, grant) = Link::login(
        endpoint.clone(),
        client,
        &user,
        password,
        identity,
        addresses,
    )
    .await?;
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

/// The key to show for `name`: the pinned one.
pub fn pinned_key(profile: &Profile, name: &str) -> Option<PublicKey> {
    profile.peers.get(name)
}
