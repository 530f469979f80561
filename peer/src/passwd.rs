//! Changing the password, which guards two things at once: the account at the directory
//! and the profile's sealed keys and history (see [`crate::vault`]). Both must change
//! together, or the next login (one password for both) fails.
//!
//! Order, so that a failure leaves both as they were: log in with the old password
//! (which proves it for both), change it at the directory, re-seal the profile; if the
//! re-sealing fails, change the directory's back before reporting the error.

use std::sync::Arc;

use anyhow::Context;
use zeroize::Zeroizing;

use crate::link::Link;
use crate::login::{self, Options};
use crate::vault::VaultCost;

/// Changes the password of the profile and account in `opts` (whose credentials hold
/// the current password) to `new`, sealing the profile under `cost`.
pub async fn change(opts: &Options, new: Zeroizing<String>, cost: VaultCost) -> anyhow::Result<()> {
    proto::names::check_new_password(&new)?;
    let old = login::password(&opts.credentials, false)?;
    let mut opts = opts.clone();
    opts.credentials.password = Some(old.clone());
    let online = login::login(&opts, "0.0.0.0:0".parse().expect("address")).await?;
    let link = online.link.clone();
    let dir = online.profile.dir().to_path_buf();
    drop(online.profile);
    let result = async {
        link.client()
            .change_password(&old, &new)
            .await
            .context("the directory refused the new password")?;
        let (o, n) = (old.clone(), new.clone());
        let resealed = tokio::task::spawn_blocking(move || {
            crate::profile::change_password(&dir, &o, &n, cost)
        })
        .await
        .context("the key derivation task failed")
        .and_then(|r| r.context("cannot re-seal the profile"));
        if let Err(e) = resealed {
            revert(&link, &new, &old).await;
            return Err(e);
        }
        anyhow::Ok(())
    }
    .await;
    link.logout().await;
    crate::endpoint::close(&online.endpoint).await;
    result
}

/// Puts the directory's password back after the profile could not follow.
async fn revert(link: &Arc<Link>, new: &str, old: &str) {
    if let Err(e) = link.client().change_password(new, old).await {
        tracing::error!(
            error = %e,
            "could not restore the old password at the directory: log in with the new one \
             and run `peer passwd` again"
        );
    }
}
