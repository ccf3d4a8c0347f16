//! Request and reply bodies of the admin API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a bearer token may do: `read-only` reads; `admin` also changes things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenScope {
    Admin,
    ReadOnly,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Admin => "admin",
            TokenScope::ReadOnly => "read-only",
        }
    }
    pub fn parse(s: &str) -> Option<TokenScope> {
        match s {
            "admin" => Some(TokenScope::Admin),
            "read-only" => Some(TokenScope::ReadOnly),
            _ => None,
        }
    }
    /// Whether a token of this scope may do what `needed` asks.
    pub fn allows(self, needed: TokenScope) -> bool {
        self == TokenScope::Admin || needed == TokenScope::ReadOnly
    }
}

/// Where a server's admin API is, as it writes it into its data directory for the CLI on
/// the same host (`DATA_DIR/api.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalServer {
    /// `https://127.0.0.1:9443`
    pub url: String,
    /// The CA that signed the admin API's certificate (PEM file).
    pub ca_file: String,
    /// The token made at first start (file, 0600).
    pub token_file: String,
}

/// `POST /api/v1/hardware`: a hardware.csv, all rows or none.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// The file's name, for diagnostics (`hardware.csv:3:17: ...`).
    pub file_name: String,
    /// The CSV text.
    pub csv: String,
    /// Replace machines already enrolled under the same hostname.
    #[serde(default)]
    pub replace: bool,
}

/// What an enrolment did (or, dry, would do); on refusal the error's details carry the
/// problems instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrollOutcome {
    pub file: String,
    pub enrolled: bool,
    pub dry_run: bool,
    /// Rows that passed validation.
    pub valid: usize,
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    /// What was read past without refusing the file (located like errors).
    pub warnings: Vec<crate::Detail>,
    pub errors: Vec<crate::Detail>,
}

/// `PATCH /api/v1/hardware/{name}`: what changes; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HardwareUpdate {
    /// Labels to set (a value) or remove (null).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_username: Option<String>,
    /// Write-only: never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netboot: Option<bool>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub name: String,
    pub scope: TokenScope,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    /// RFC 3339.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// A token just made: the secret appears here once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_tokens_only_read() {
        assert!(TokenScope::Admin.allows(TokenScope::Admin));
        assert!(TokenScope::Admin.allows(TokenScope::ReadOnly));
        assert!(TokenScope::ReadOnly.allows(TokenScope::ReadOnly));
        assert!(!TokenScope::ReadOnly.allows(TokenScope::Admin));
        for s in [TokenScope::Admin, TokenScope::ReadOnly] {
            assert_eq!(TokenScope::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
