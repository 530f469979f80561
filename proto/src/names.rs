//! What a valid user name, password and chat message look like. Checked by both sides:
//! the client to give a clear error early, the directory because it trusts no client.

/// Longest user name, in bytes.
pub const MAX_USERNAME: usize = 32;
/// Shortest password accepted at registration, in characters.
pub const MIN_PASSWORD: usize = 6;
/// Longest password, in bytes (argon2 hashes any length; this bounds the work we accept).
pub const MAX_PASSWORD: usize = 1024;
/// Longest chat message text, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// A name, password or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("user name must be 1 to {MAX_USERNAME} characters")]
    UsernameLength,
    #[error(
        "user name may contain only lowercase letters, digits, '.', '_' and '-', and must start with a letter or digit"
    )]
    UsernameChars,
    #[error("password must be at least {MIN_PASSWORD} characters")]
    PasswordTooShort,
    #[error("password must be at most {MAX_PASSWORD} bytes")]
    PasswordTooLong,
    #[error("message must be at most {MAX_MESSAGE} bytes")]
    MessageTooLong,
}

/// Checks a user name: 1–32 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_username(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_USERNAME {
        return Err(NameError::UsernameLength);
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::UsernameChars)
    }
}

/// Checks a room name: the same rules as a user name.
pub fn check_room(name: &str) -> Result<(), NameError> {
    check_username(name)
}

/// Checks a password chosen at registration (login only checks the upper bound).
pub fn check_new_password(password: &str) -> Result<(), NameError> {
    check_password_len(password)?;
    if password.chars().count() < MIN_PASSWORD {
        return Err(NameError::PasswordTooShort);
    }
    Ok(())
}

/// Checks the upper bound on a password's length.
pub fn check_password_len(password: &str) -> Result<(), NameError> {
    if password.len() > MAX_PASSWORD {
        Err(NameError::PasswordTooLong)
    } else {
        Ok(())
    }
}

/// Checks a chat message's length.
pub fn check_message(text: &str) -> Result<(), NameError> {
    if text.len() > MAX_MESSAGE {
        Err(NameError::MessageTooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["ali", "bianca", "a", "user_1", "x.y-z", "9lives"] {
            check_username(ok).unwrap();
        }
        assert_eq!(check_username(""), Err(NameError::UsernameLength));
        assert_eq!(
            check_username(&"a".repeat(33)),
            Err(NameError::UsernameLength)
        );
        for bad in ["Ali", "_ali", "ali bianca", "ali/..", "élise", "-x"] {
            assert_eq!(check_username(bad), Err(NameError::UsernameChars), "{bad}");
        }
    }

    #[test]
    fn passwords_and_messages() {
        check_new_password("secret").unwrap();
        assert_eq!(
            check_new_password("short"),
            Err(NameError::PasswordTooShort)
        );
        assert_eq!(
            check_password_len(&"x".repeat(1025)),
            Err(NameError::PasswordTooLong)
        );
        assert_eq!(
            check_message(&"x".repeat(MAX_MESSAGE + 1)),
            Err(NameError::MessageTooLong)
        );
    }
}
