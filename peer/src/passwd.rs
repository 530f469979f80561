//! Changing the password, which guards two things at once: the account at the directory
//! and the profile's sealed keys and history (see [`crate::vault`]). Both must change
//! together, or the next login (one password for both) fails.
//!
//! Order, so that a failure leaves both as they were: log in with the old password
//! (which proves it for both), change it at the directory, re-seal the profile; if the
//! re-sealing fails, change the directory's back before reporting the error.
//!
//! The profile's vault is attacked offline when a laptop is stolen, so a password that
//! will seal it (a new profile's, a new one here) must pass [`check_strength`]: the
//! directory's length rule, not one of the most common passwords, not made of the user
//! name, not a run like `aaaaaa` or `123456`.

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
    if let Some(user) = &opts.credentials.user {
        check_strength(user, &new)?;
    }
    let old = login::password(&opts.credentials, false)?;
    let mut opts = opts.clone();
    opts.credentials.password = Some(old.clone());
    let online = login::login(&opts, "0.0.0.0:0".parse().expect("address")).await?;
    let link = online.link.clone();
    if let Err(e) = check_strength(&online.grant.user, &new) {
        link.logout().await;
        online.endpoint.close(0u32.into(), b"bye");
        return Err(e.into());
    }
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

/// Why a password is too weak to seal a profile with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error(transparent)]
    Rules(#[from] proto::names::NameError),
    #[error("that password is one of the most common ones, which attackers try first")]
    Common,
    #[error("the password must not be the user name, or the user name with a few characters added")]
    UserName,
    #[error("the password is a repeated or sequential run of characters (like aaaaaa or 123456)")]
    Run,
}

/// Very common passwords (from public breach statistics), lowercase. Short on purpose:
/// with the length rule it catches the guesses an attacker tries first.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "p@ssw0rd",
    "123456",
    "1234567",
    "12345678",
    "123456789",
    "1234567890",
    "0123456789",
    "qwerty",
    "qwerty1",
    "qwerty123",
    "qwertyuiop",
    "asdfgh",
    "asdfghjkl",
    "zxcvbn",
    "zxcvbnm",
    "1q2w3e",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "qazwsx",
    "letmein",
    "welcome",
    "welcome1",
    "monkey",
    "dragon",
    "master",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "iloveyou",
    "trustno1",
    "superman",
    "batman",
    "shadow",
    "michael",
    "jennifer",
    "charlie",
    "hunter2",
    "freedom",
    "whatever",
    "starwars",
    "secret",
    "secret1",
    "secret123",
    "changeme",
    "default",
    "admin",
    "admin123",
    "root123",
    "abc123",
    "abcd1234",
    "a1b2c3",
    "aa123456",
    "111111",
    "000000",
    "121212",
    "654321",
    "666666",
    "696969",
    "112233",
    "123123",
    "123321",
    "pokemon",
    "computer",
    "internet",
    "hello123",
    "loveme",
    "lovely",
    "flower",
    "cheese",
    "summer",
    "winter",
    "natter",
    "natter123",
];

/// Checks a password chosen to seal `user`'s profile (see the module docs).
pub fn check_strength(user: &str, password: &str) -> Result<(), WeakPassword> {
    proto::names::check_new_password(password)?;
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Err(WeakPassword::Common);
    }
    let user = user.to_lowercase();
    if !user.is_empty() && lower.contains(&user) {
        let rest = lower.chars().count() - user.chars().count();
        if rest < proto::names::MIN_PASSWORD {
            return Err(WeakPassword::UserName);
        }
    }
    let chars: Vec<char> = lower.chars().collect();
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| w[1] as i64 - w[0] as i64)
        .collect();
    if steps.iter().all(|s| *s == steps[0]) && steps[0].abs() <= 1 {
        return Err(WeakPassword::Run);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused() {
        for (pw, why) in [
            ("short", None),
            ("Password123", Some(WeakPassword::Common)),
            ("qwerty", Some(WeakPassword::Common)),
            ("ali", None),
            ("alice1", Some(WeakPassword::UserName)),
            ("ALICE2024", Some(WeakPassword::UserName)),
            ("zzzzzzzz", Some(WeakPassword::Run)),
            ("abcdefgh", Some(WeakPassword::Run)),
            ("98765432", Some(WeakPassword::Run)),
        ] {
            let e = check_strength("alice", pw).unwrap_err();
            if let Some(why) = why {
                assert_eq!(e, why, "{pw}");
            } else {
                assert!(matches!(e, WeakPassword::Rules(_)), "{pw}: {e:?}");
            }
        }
        for pw in [
            "correct horse battery",
            "secret-alice-7",
            "tr0ub4dor&3",
            "pw-123456",
        ] {
            assert_eq!(check_strength("alice", pw), Ok(()), "{pw}");
        }
    }
}
