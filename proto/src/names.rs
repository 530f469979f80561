//! What a valid user name, room name, password and chat message look like. Checked by
//! both sides: the client to give a clear error early, the directory because it trusts no
//! client, and every peer because it trusts no directory.
//!
//! [`UserName`] and [`RoomName`] are the only form a name takes in a wire message: they
//! are built only through [`check_username`] (by [`UserName::parse`], `TryFrom<String>`,
//! `FromStr`, and serde's `Deserialize`, which refuses a bad name as a decode error), so
//! code holding one cannot hold a name with spaces, line breaks, control or formatting
//! characters. On the wire a name is encoded exactly as the `String` it wraps.

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

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `name` against the rules and wraps it.
            pub fn parse(name: &str) -> Result<Self, NameError> {
                $check(name)?;
                Ok(Self(name.to_string()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                $check(&name)?;
                Ok(Self(name))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(name: &str) -> Result<Self, NameError> {
                Self::parse(name)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                Self::parse(name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

name_type!(
    /// A user name that passed [`check_username`]: 1–32 of `a-z 0-9 . _ -`, starting with
    /// a letter or digit. Safe to print, to use as a key in a line-based file and to
    /// compare byte for byte.
    UserName,
    check_username
);

name_type!(
    /// A room name that passed [`check_room`] (the same rules as a user name).
    RoomName,
    check_room
);

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
    fn name_types_refuse_bad_names_at_decode() {
        use crate::frame::{decode, encode};
        let ali = UserName::parse("ali").unwrap();
        assert_eq!(ali, "ali");
        assert_eq!(ali.to_string(), "ali");
        // Same bytes on the wire as the plain string.
        assert_eq!(encode(&ali).unwrap(), encode(&"ali".to_string()).unwrap());
        assert_eq!(
            decode::<UserName>(&encode(&ali).unwrap()[4..]).unwrap(),
            ali
        );
        for bad in [
            "",
            "zzz 00\nali",
            "ali\n",
            "al\u{202e}i",
            "Ali",
            "ali\u{200b}",
        ] {
            let bytes = encode(&bad.to_string()).unwrap();
            assert!(decode::<UserName>(&bytes[4..]).is_err(), "{bad:?}");
            assert!(decode::<RoomName>(&bytes[4..]).is_err(), "{bad:?}");
            assert!(UserName::parse(bad).is_err());
            assert!(bad.parse::<RoomName>().is_err());
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
