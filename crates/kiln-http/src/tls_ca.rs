//! Kiln's own CA for the agent API, made at first start, and the server certificate it
//! issues at every start.
//!
//! `DATA_DIR/tls/` (0700) holds `ca.crt` (0644), `ca.key`, `server.crt` and `server.key`
//! (0600), each written whole under a temporary name and renamed into place. The agent
//! does not carry the CA: the kernel command line carries the SHA-256 of its DER
//! (`kiln.ca-sha256=`, see `agent_apis`), and the server presents the CA after its own certificate so the
//! agent can find the one it pins.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// The CA's common name.
pub const CA_COMMON_NAME: &str = "Kiln provisioning CA";
/// How long the CA (and each server certificate) is valid.
pub const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before "now", for machines whose clocks lag a little.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The agent API's TLS material, ready for [`crate::tls::server_config`].
#[derive(Clone)]
pub struct AgentTls {
    /// The CA certificate, DER.
    pub ca_cert_der: Vec<u8>,
    /// SHA-256 of `ca_cert_der`: what the agent pins.
    pub ca_sha256: [u8; 32],
    /// The server certificate, then the CA (DER).
    pub chain_der: Vec<Vec<u8>>,
    /// The server's private key, PKCS#8 DER.
    pub key_pkcs8_der: Vec<u8>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls")
            .field("ca_sha256", &self.ca_sha256_hex())
            .finish_non_exhaustive()
    }
}

impl AgentTls {
    /// The CA fingerprint as 64 lower-case hex digits.
    pub fn ca_sha256_hex(&self) -> String {
        hex(&self.ca_sha256)
    }
}

/// What went wrong with the CA or the server certificate; names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("making the {what}: {why}")]
    Generate { what: &'static str, why: String },
}

/// Loads the CA from `dir` (making it, and `dir`, when `ca.key` does not exist yet), then
/// issues a fresh server certificate for `host` (an IP address or a DNS name) and checks
/// that it verifies against the CA for that name.
pub fn load_or_create(dir: &Path, host: &str, now: SystemTime) -> Result<AgentTls, CaError> {
    make_private_dir(dir)?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !ca_key.exists() {
        let (cert_pem, key_pem) = make_ca(now)?;
        // The certificate first: a crash between the two leaves no ca.key, so the next
        // start makes both again.
        write_atomic(&ca_crt, cert_pem.as_bytes(), 0o644)?;
        write_atomic(&ca_key, key_pem.as_bytes(), 0o600)?;
    }
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| CaError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let invalid = |path: &Path, why: String| CaError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let ca_key_pair = KeyPair::from_pem(&read(&ca_key)?)
        .map_err(|e| invalid(&ca_key, format!("not a private key in PEM: {e}")))?;
    let ca_cert_der = CertificateDer::from_pem_slice(read(&ca_crt)?.as_bytes())
        .map_err(|e| invalid(&ca_crt, format!("not a certificate in PEM: {e}")))?
        .to_vec();

    let (server_pem, server_key, server_der) =
        issue_server(&ca_key_pair, &[host.to_string()], now)?;
    write_atomic(&dir.join("server.crt"), server_pem.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join("server.key"),
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    verify_server(&ca_cert_der, &server_der, host, now).map_err(|why| {
        invalid(
            &ca_crt,
            format!("the server certificate issued with ca.key does not verify against it: {why}"),
        )
    })?;
    Ok(AgentTls {
        ca_sha256: Sha256::digest(&ca_cert_der).into(),
        chain_der: vec![server_der, ca_cert_der.clone()],
        ca_cert_der,
        key_pkcs8_der: server_key.serialize_der(),
    })
}

/// A certificate and key for another of Kiln's listeners (the admin API), issued by the CA
/// in `dir` (which [`load_or_create`] made) for `hosts`, written to `dir/STEM.crt` and
/// `dir/STEM.key` (0600): the chain (certificate, CA) and the PKCS#8 key, DER.
pub fn issue_listener(
    dir: &Path,
    stem: &str,
    hosts: &[String],
    now: SystemTime,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), CaError> {
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| CaError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let ca_key_pair = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| CaError::Invalid {
        path: ca_key.clone(),
        why: format!("not a private key in PEM: {e}"),
    })?;
    let ca_cert_der = CertificateDer::from_pem_slice(read(&ca_crt)?.as_bytes())
        .map_err(|e| CaError::Invalid {
            path: ca_crt.clone(),
            why: format!("not a certificate in PEM: {e}"),
        })?
        .to_vec();
    let (pem, key, der) = issue_server(&ca_key_pair, hosts, now)?;
    write_atomic(&dir.join(format!("{stem}.crt")), pem.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join(format!("{stem}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    Ok((vec![der, ca_cert_der], key.serialize_der()))
}

/// The CA's parameters. The issuer of every server certificate is rebuilt from these and
/// the stored key, so they must stay as they were when the CA was made.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params
}

/// A new ECDSA P-256 CA: (certificate PEM, key PEM).
fn make_ca(now: SystemTime) -> Result<(String, String), CaError> {
    let fail = |e: rcgen::Error| CaError::Generate {
        what: "agent API CA",
        why: e.to_string(),
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = ca_params();
    params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH));
    params.not_after = to_offset(now + VALIDITY);
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A server certificate for `hosts` (the first is its common name) signed by the CA:
/// (PEM, key, DER).
fn issue_server(
    ca_key: &KeyPair,
    hosts: &[String],
    now: SystemTime,
) -> Result<(String, KeyPair, Vec<u8>), CaError> {
    let fail = |e: rcgen::Error| CaError::Generate {
        what: "agent API server certificate",
        why: e.to_string(),
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    // An IP address becomes an IP SAN (what the agent, addressing Kiln by IP, checks).
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(fail)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(host) = hosts.first() {
        params.distinguished_name.push(DnType::CommonName, host);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH));
    params.not_after = to_offset(now + VALIDITY);
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    Ok((cert.pem(), key, cert.der().to_vec()))
}

/// Verifies `server_der` for `host` with `ca_der` as the only root (ring provider), at `now`.
pub fn verify_server(
    ca_der: &[u8],
    server_der: &[u8],
    host: &str,
    now: SystemTime,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?,
    };
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            &CertificateDer::from(server_der.to_vec()),
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(since),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Creates `dir` 0700 (or forces an existing one to 0700).
fn make_private_dir(dir: &Path) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Writes `bytes` to `path` with `mode`: a temporary file in the same directory (created
/// 0600, so nothing secret is ever readable by others), synced, then renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode)).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn first_start_makes_the_ca_with_private_modes() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("tls");
        let tls = load_or_create(&dir, "10.77.0.1", SystemTime::now()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.crt")), 0o644);
        for f in ["ca.key", "server.crt", "server.key"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        // No temporary file is left behind.
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "ca.key", "server.crt", "server.key"]);
        // The fingerprint is the SHA-256 of the CA certificate on disk.
        let pem = fs::read_to_string(dir.join("ca.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(tls.ca_sha256, <[u8; 32]>::from(Sha256::digest(&der)));
        assert_eq!(tls.ca_cert_der, der.to_vec());
        assert_eq!(tls.chain_der.len(), 2);
        assert_eq!(tls.chain_der[1], tls.ca_cert_der);
        assert_eq!(tls.ca_sha256_hex().len(), 64);
        assert!(
            crate::agent_apis::AgentEndpoint::new("https://10.77.0.1:8443", &tls.ca_sha256_hex())
                .is_some()
        );
    }

    #[test]
    fn an_existing_dir_is_forced_private() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("tls");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        load_or_create(&dir, "10.77.0.1", SystemTime::now()).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_second_start_keeps_the_ca_and_issues_a_new_server_certificate() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("tls");
        let first = load_or_create(&dir, "10.77.0.1", SystemTime::now()).unwrap();
        let key_before = fs::read(dir.join("ca.key")).unwrap();
        let second = load_or_create(&dir, "10.77.0.1", SystemTime::now()).unwrap();
        assert_eq!(first.ca_sha256, second.ca_sha256);
        assert_eq!(first.ca_cert_der, second.ca_cert_der);
        assert_eq!(fs::read(dir.join("ca.key")).unwrap(), key_before);
        assert_ne!(first.key_pkcs8_der, second.key_pkcs8_der);
        assert_ne!(first.chain_der[0], second.chain_der[0]);
        // The new server certificate is signed by the kept CA.
        verify_server(
            &first.ca_cert_der,
            &second.chain_der[0],
            "10.77.0.1",
            SystemTime::now(),
        )
        .unwrap();
    }

    #[test]
    fn the_server_certificate_names_the_provisioning_address() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("tls");
        let now = SystemTime::now();
        let tls = load_or_create(&dir, "10.77.0.1", now).unwrap();
        let (ca, server) = (&tls.ca_cert_der, &tls.chain_der[0]);
        verify_server(ca, server, "10.77.0.1", now).unwrap();
        let other = verify_server(ca, server, "10.77.0.2", now).unwrap_err();
        assert!(other.contains("not valid for name"), "{other}");
        assert!(verify_server(ca, server, "kiln.example", now).is_err());

        let named = load_or_create(&dir, "kiln.example", now).unwrap();
        verify_server(ca, &named.chain_der[0], "kiln.example", now).unwrap();
        assert!(verify_server(ca, &named.chain_der[0], "10.77.0.1", now).is_err());
    }

    #[test]
    fn the_chain_does_not_verify_against_another_ca_or_outside_its_validity() {
        let now = SystemTime::now();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ta = load_or_create(a.path(), "10.77.0.1", now).unwrap();
        let tb = load_or_create(b.path(), "10.77.0.1", now).unwrap();
        assert_ne!(ta.ca_sha256, tb.ca_sha256);
        let wrong = verify_server(&tb.ca_cert_der, &ta.chain_der[0], "10.77.0.1", now).unwrap_err();
        // Both CAs carry the same name: the other one's key does not match the signature.
        assert!(wrong.contains("BadSignature"), "{wrong}");
        let late = now + VALIDITY + Duration::from_secs(86_400);
        assert!(verify_server(&ta.ca_cert_der, &ta.chain_der[0], "10.77.0.1", late).is_err());
    }

    #[test]
    fn a_ca_key_that_does_not_match_ca_crt_is_refused_naming_the_file() {
        let now = SystemTime::now();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        load_or_create(a.path(), "10.77.0.1", now).unwrap();
        load_or_create(b.path(), "10.77.0.1", now).unwrap();
        fs::copy(b.path().join("ca.key"), a.path().join("ca.key")).unwrap();
        let e = load_or_create(a.path(), "10.77.0.1", now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.crt") && e.contains("does not verify"), "{e}");

        fs::write(a.path().join("ca.key"), "garbage").unwrap();
        let e = load_or_create(a.path(), "10.77.0.1", now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca.key") && e.contains("not a private key"),
            "{e}"
        );
    }

    #[test]
    fn debug_shows_no_key() {
        let data = tempfile::tempdir().unwrap();
        let tls = load_or_create(data.path(), "10.77.0.1", SystemTime::now()).unwrap();
        let shown = format!("{tls:?}");
        assert!(shown.contains(&tls.ca_sha256_hex()), "{shown}");
        assert!(!shown.contains("key_pkcs8_der"), "{shown}");
    }
}
