//! The cluster's PKI and join token, made by Kiln before any machine boots, so every
//! node's cloud-init can be written up front: the control planes get the CAs (kubeadm
//! signs its own certificates with them and extra control planes need no certificate
//! upload), the others pin the cluster CA by its hash.
//!
//! Serializable so the caller can store it and render the same documents again later.
//! It is secret: Debug never shows a key or the token, and whoever stores it keeps it
//! 0600.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A secret string: serialized in clear (for storage), never in Debug.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub(crate) fn new(s: String) -> SecretText {
        SecretText(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A CA: certificate (public) and private key (secret), both PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: SecretText,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecrets {
    /// kubeadm's `ca.crt`/`ca.key` (CN kubernetes).
    pub cluster_ca: CaPem,
    /// `front-proxy-ca.crt`/`.key`.
    pub front_proxy_ca: CaPem,
    /// `etcd/ca.crt`/`.key`.
    pub etcd_ca: CaPem,
    /// `sa.pub` (PEM public key) and `sa.key`.
    pub service_account_pub_pem: String,
    pub service_account_key_pem: SecretText,
    /// `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstrap_token: SecretText,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    #[error("generating the {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error("the stored cluster secrets are unusable: {0}")]
    Invalid(String),
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// CA lifetime, as kubeadm's own CAs (10 years).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Nodes whose clock runs behind still accept the CAs.
pub(crate) const BACKDATE: Duration = Duration::from_secs(24 * 3600);

impl ClusterSecrets {
    /// Fresh CAs (ECDSA P-256), a service-account key pair and a bootstrap token.
    pub fn generate() -> Result<ClusterSecrets, SecretsError> {
        let now = SystemTime::now();
        ClusterSecrets {
            cluster_ca: make_ca("kubernetes", "cluster CA", now)?,
            front_proxy_ca: make_ca("front-proxy-ca", "front-proxy CA", now)?,
            etcd_ca: make_ca("etcd-ca", "etcd CA", now)?,
            service_account_pub_pem: String::new(),
            service_account_key_pem: SecretText(String::new()),
            bootstrap_token: SecretText(bootstrap_token()?),
        }
        .with_service_account()
    }

    fn with_service_account(mut self) -> Result<Self, SecretsError> {
        let key = KeyPair::generate().map_err(|e| SecretsError::Generate {
            what: "service-account key",
            reason: e.to_string(),
        })?;
        self.service_account_pub_pem = key.public_key_pem();
        self.service_account_key_pem = SecretText(key.serialize_pem());
        Ok(self)
    }

    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo: what joining nodes pin
    /// (kubeadm's `discovery.bootstrapToken.caCertHashes`).
    pub fn ca_cert_hash(&self) -> Result<String, SecretsError> {
        let key = KeyPair::from_pem(self.cluster_ca.key_pem.expose())
            .map_err(|e| SecretsError::Invalid(format!("cluster CA key: {e}")))?;
        let digest = Sha256::digest(key.subject_public_key_info());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("sha256:{hex}"))
    }

    /// Checks stored secrets before rendering from them.
    pub fn check(&self) -> Result<(), SecretsError> {
        for (what, ca) in [
            ("cluster CA", &self.cluster_ca),
            ("front-proxy CA", &self.front_proxy_ca),
            ("etcd CA", &self.etcd_ca),
        ] {
            KeyPair::from_pem(ca.key_pem.expose())
                .map_err(|e| SecretsError::Invalid(format!("{what} key: {e}")))?;
            if !ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----") {
                return Err(SecretsError::Invalid(format!(
                    "{what} certificate is not PEM"
                )));
            }
        }
        KeyPair::from_pem(self.service_account_key_pem.expose())
            .map_err(|e| SecretsError::Invalid(format!("service-account key: {e}")))?;
        if !is_bootstrap_token(self.bootstrap_token.expose()) {
            return Err(SecretsError::Invalid(
                "the bootstrap token is not [a-z0-9]{6}.[a-z0-9]{16}".into(),
            ));
        }
        Ok(())
    }
}

fn make_ca(cn: &str, what: &'static str, now: SystemTime) -> Result<CaPem, SecretsError> {
    let fail = |e: rcgen::Error| SecretsError::Generate {
        what,
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(fail)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH));
    params.not_after = to_offset(now + CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: SecretText(key.serialize_pem()),
    })
}

pub(crate) fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

const TOKEN_CHARS: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `[a-z0-9]{6}.[a-z0-9]{16}`, uniformly (bytes past the last multiple of 36 are dropped).
fn bootstrap_token() -> Result<String, SecretsError> {
    let mut out = String::with_capacity(23);
    let mut buf = [0u8; 64];
    while out.len() < 23 {
        getrandom::fill(&mut buf).map_err(|e| SecretsError::Random(e.to_string()))?;
        for b in buf {
            if out.len() == 6 {
                out.push('.');
            }
            if out.len() == 23 {
                break;
            }
            if b < 252 {
                out.push(TOKEN_CHARS[usize::from(b % 36)] as char);
            }
        }
    }
    Ok(out)
}

pub fn is_bootstrap_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(t.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_kubeadms_shape_and_differ() {
        let a = bootstrap_token().unwrap();
        let b = bootstrap_token().unwrap();
        assert!(is_bootstrap_token(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_bootstrap_token("abcdef.0123456789abcdeF"));
        assert!(!is_bootstrap_token("abcde.0123456789abcdef0"));
    }

    #[test]
    fn generated_secrets_check_and_never_debug_print() {
        let s = ClusterSecrets::generate().unwrap();
        s.check().unwrap();
        assert!(s.cluster_ca.key_pem.expose().contains("PRIVATE KEY"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(!dbg.contains(s.bootstrap_token.expose()), "{dbg}");
        let hash = s.ca_cert_hash().unwrap();
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{hash}"
        );
        // Stored and read back, it renders the same.
        let json = serde_json::to_string(&s).unwrap();
        let back: ClusterSecrets = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.ca_cert_hash().unwrap(), hash);
    }

    #[test]
    fn damaged_secrets_are_refused() {
        let mut s = ClusterSecrets::generate().unwrap();
        s.bootstrap_token = SecretText("nope".into());
        assert!(s.check().is_err());
        let mut s = ClusterSecrets::generate().unwrap();
        s.etcd_ca.key_pem = SecretText("garbage".into());
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("etcd CA key"), "{e}");
    }
}
