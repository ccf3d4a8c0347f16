//! User name and password. The password never prints and is wiped from memory on drop.

use crate::Error;
use std::fmt;
use zeroize::Zeroizing;

/// IPMI 2.0 limits (IPMI v2.0 §13.28: user names up to 16 bytes, "20-byte" passwords).
pub const MAX_USERNAME: usize = 16;
pub const MAX_PASSWORD: usize = 20;

/// A BMC password: `Debug`/`Display` print `<redacted>`, memory is zeroed on drop.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    pub fn new(password: impl AsRef<[u8]>) -> Self {
        Password(Zeroizing::new(password.as_ref().to_vec()))
    }

    /// The clear bytes, for the key exchange only.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A validated user name and password.
#[derive(Clone, Debug)]
pub struct Credentials {
    username: Vec<u8>,
    password: Password,
}

impl Credentials {
    /// Checks the IPMI 2.0 limits: user name ≤ 16 bytes, password ≤ 20 bytes.
    pub fn new(username: &str, password: Password) -> Result<Self, Error> {
        if username.len() > MAX_USERNAME {
            return Err(Error::Credentials(format!(
                "user name {username:?} is {} bytes; IPMI allows at most {MAX_USERNAME}",
                username.len()
            )));
        }
        if password.expose().len() > MAX_PASSWORD {
            return Err(Error::Credentials(format!(
                "password is {} bytes; IPMI 2.0 allows at most {MAX_PASSWORD}",
                password.expose().len()
            )));
        }
        Ok(Credentials {
            username: username.as_bytes().to_vec(),
            password,
        })
    }

    pub fn username(&self) -> &[u8] {
        &self.username
    }

    pub(crate) fn password(&self) -> &Password {
        &self.password
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_prints() {
        let creds = Credentials::new("admin", Password::new("hunter2-secret")).unwrap();
        let shown = format!("{creds:?} {}", creds.password());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn limits() {
        assert!(Credentials::new(&"u".repeat(16), Password::new("p".repeat(20))).is_ok());
        let e = Credentials::new(&"u".repeat(17), Password::new("p")).unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
        let e = Credentials::new("u", Password::new("sekrit-sekrit-sekrit-x")).unwrap_err();
        assert!(!e.to_string().contains("sekrit"), "{e}");
    }
}
