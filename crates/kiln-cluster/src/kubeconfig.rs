//! The cluster's admin kubeconfig, minted by Kiln: it holds the cluster CA, so it signs the
//! admin client certificate itself and nothing has to come back from a node (no endpoint
//! accepts a kubeconfig from the network).
//!
//! What kubeadm writes to `/etc/kubernetes/admin.conf` (cmd/kubeadm/app/phases/kubeconfig):
//! a client certificate with CN `kubernetes-admin`, O = `kubeadm:cluster-admins` from 1.29
//! (bound to cluster-admin by the ClusterRoleBinding `kubeadm init` creates; before 1.29
//! `system:masters`), extended key usage client auth, key usages digital signature and key
//! encipherment, a random serial, one year of validity; a kubeconfig whose cluster entry is
//! the cluster's name with the control-plane endpoint and the CA, user `kubernetes-admin`,
//! context `kubernetes-admin@<cluster>`. Differences: the key is ECDSA P-256 (as the CAs
//! Kiln makes) in PKCS#8 PEM, which kubectl reads as kubeadm's SEC1 `EC PRIVATE KEY`; and the
//! certificate is backdated a day, as Kiln's CAs are, for clients whose clock runs behind.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

use crate::render::API_PORT;
use crate::secrets::{BACKDATE, ClusterSecrets, SecretText, SecretsError, to_offset};
use crate::spec::{ClusterSpec, KubernetesVersion};
use crate::yaml::Y;

/// The admin's user name (the certificate's CN), as kubeadm names it.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// kubeadm's `ClusterAdminsGroupAndClusterRoleBinding` (Kubernetes 1.29 and later).
pub const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";
/// kubeadm's `SystemPrivilegedGroup`: the admin's group before 1.29.
pub const SYSTEM_MASTERS_GROUP: &str = "system:masters";
/// kubeadm's `CertificateValidityPeriod`.
pub const ADMIN_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The group kubeadm puts the admin in for this Kubernetes version.
pub fn admin_group(version: &KubernetesVersion) -> &'static str {
    if version.minor >= 29 {
        CLUSTER_ADMINS_GROUP
    } else {
        SYSTEM_MASTERS_GROUP
    }
}

/// `https://<controlPlane endpoint>:6443`: kubeadm's controlPlaneEndpoint as a URL.
pub fn api_server_url(spec: &ClusterSpec) -> String {
    format!("https://{}:{API_PORT}", spec.control_plane.endpoint)
}

/// A freshly minted admin kubeconfig. Debug never shows it: it holds a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKubeconfig {
    /// The kubeconfig document (YAML, the shape of kubeadm's admin.conf).
    pub kubeconfig: SecretText,
    pub server: String,
    pub user: &'static str,
    pub group: &'static str,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl fmt::Debug for AdminKubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKubeconfig")
            .field("kubeconfig", &self.kubeconfig)
            .field("server", &self.server)
            .field("user", &self.user)
            .field("group", &self.group)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Mints a new admin client certificate (new key) signed by the cluster CA in `secrets`,
/// valid from a day before `now` for a year, and the kubeconfig around it.
pub fn admin_kubeconfig(
    spec: &ClusterSpec,
    secrets: &ClusterSecrets,
    now: SystemTime,
) -> Result<AdminKubeconfig, SecretsError> {
    let ca_key = KeyPair::from_pem(secrets.cluster_ca.key_pem.expose())
        .map_err(|e| SecretsError::Invalid(format!("cluster CA key: {e}")))?;
    // The issuer's name and key identifier are read from the stored CA certificate, so
    // the client certificate chains to exactly that certificate.
    let issuer = Issuer::from_ca_cert_pem(&secrets.cluster_ca.cert_pem, ca_key)
        .map_err(|e| SecretsError::Invalid(format!("cluster CA certificate: {e}")))?;
    let fail = |e: rcgen::Error| SecretsError::Generate {
        what: "admin client certificate",
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(fail)?;
    let group = admin_group(&spec.kubernetes_version);
    let not_before = now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH);
    let not_after = now + ADMIN_CERT_VALIDITY;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, group);
    params
        .distinguished_name
        .push(DnType::CommonName, ADMIN_USER);
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    let server = api_server_url(spec);
    let kubeconfig = kubeconfig_yaml(
        &spec.name,
        &server,
        &secrets.cluster_ca.cert_pem,
        &cert.pem(),
        &key.serialize_pem(),
    );
    Ok(AdminKubeconfig {
        kubeconfig: SecretText::new(kubeconfig),
        server,
        user: ADMIN_USER,
        group,
        not_before,
        not_after,
    })
}

/// A positive serial below 2^63, like kubeadm's `[1, MaxInt64)`.
fn random_serial() -> Result<SerialNumber, SecretsError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| SecretsError::Random(e.to_string()))?;
    bytes[0] &= 0x7f;
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

/// client-go's `clientcmd.Write` layout of kubeadm's admin.conf (keys sorted, lists of
/// named entries).
fn kubeconfig_yaml(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let context = format!("{ADMIN_USER}@{cluster}");
    let b64 = |s: &str| Y::s(BASE64.encode(s.as_bytes()));
    Y::map([
        ("apiVersion", Y::s("v1")),
        (
            "clusters",
            Y::Seq(vec![Y::map([
                (
                    "cluster",
                    Y::map([
                        ("certificate-authority-data", b64(ca_pem)),
                        ("server", Y::s(server)),
                    ]),
                ),
                ("name", Y::s(cluster)),
            ])]),
        ),
        (
            "contexts",
            Y::Seq(vec![Y::map([
                (
                    "context",
                    Y::map([("cluster", Y::s(cluster)), ("user", Y::s(ADMIN_USER))]),
                ),
                ("name", Y::s(&context)),
            ])]),
        ),
        ("current-context", Y::s(&context)),
        ("kind", Y::s("Config")),
        ("preferences", Y::Map(Vec::new())),
        (
            "users",
            Y::Seq(vec![Y::map([
                ("name", Y::s(ADMIN_USER)),
                (
                    "user",
                    Y::map([
                        ("client-certificate-data", b64(cert_pem)),
                        ("client-key-data", b64(key_pem)),
                    ]),
                ),
            ])]),
        ),
    ])
    .to_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::pem::parse_x509_pem;

    fn spec(version: &str) -> ClusterSpec {
        let text = format!(
            "kind: KilnCluster\nname: lab\nkubernetesVersion: \"{version}\"\n\
             controlPlane:\n  count: 1\n  endpoint: 10.77.0.11\n  selector: {{type: cp}}\n\
             network:\n  pods: 192.168.0.0/16\n  services: 10.96.0.0/12\nosFamily: debian\nimage: test-os\n"
        );
        ClusterSpec::parse(&text, "lab.yaml").unwrap()
    }

    #[derive(Deserialize)]
    struct Kubeconfig {
        #[serde(rename = "apiVersion")]
        api_version: String,
        kind: String,
        clusters: Vec<Named<ClusterEntry>>,
        contexts: Vec<Named<ContextEntry>>,
        users: Vec<Named<UserEntry>>,
        #[serde(rename = "current-context")]
        current_context: String,
    }

    #[derive(Deserialize)]
    struct Named<T> {
        name: String,
        #[serde(alias = "cluster", alias = "context", alias = "user")]
        entry: T,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct ClusterEntry {
        server: String,
        certificate_authority_data: String,
    }

    #[derive(Deserialize)]
    struct ContextEntry {
        cluster: String,
        user: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct UserEntry {
        client_certificate_data: String,
        client_key_data: String,
    }

    fn unbase64(s: &str) -> String {
        String::from_utf8(BASE64.decode(s).unwrap()).unwrap()
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    /// (kubeconfig, its client certificate DER, the CA certificate DER)
    fn minted(version: &str, secrets: &ClusterSecrets) -> (Kubeconfig, Vec<u8>, Vec<u8>) {
        let now = SystemTime::now();
        let admin = admin_kubeconfig(&spec(version), secrets, now).unwrap();
        let k: Kubeconfig = serde_saphyr::from_str(admin.kubeconfig.expose()).unwrap();
        let cert = pem_der(&unbase64(&k.users[0].entry.client_certificate_data));
        let ca = pem_der(&unbase64(&k.clusters[0].entry.certificate_authority_data));
        (k, cert, ca)
    }

    #[test]
    fn the_kubeconfig_has_kubeadms_admin_conf_shape() {
        let secrets = ClusterSecrets::generate().unwrap();
        let (k, _, ca) = minted("1.31", &secrets);
        assert_eq!((k.api_version.as_str(), k.kind.as_str()), ("v1", "Config"));
        assert_eq!(k.clusters.len(), 1);
        assert_eq!(k.clusters[0].name, "lab");
        assert_eq!(k.clusters[0].entry.server, "https://10.77.0.11:6443");
        assert_eq!(ca, pem_der(&secrets.cluster_ca.cert_pem), "the cluster CA");
        assert_eq!(k.users.len(), 1);
        assert_eq!(k.users[0].name, "kubernetes-admin");
        let key = unbase64(&k.users[0].entry.client_key_data);
        assert!(KeyPair::from_pem(&key).is_ok(), "a usable private key");
        assert_eq!(k.contexts.len(), 1);
        assert_eq!(k.contexts[0].name, "kubernetes-admin@lab");
        assert_eq!(k.contexts[0].entry.cluster, "lab");
        assert_eq!(k.contexts[0].entry.user, "kubernetes-admin");
        assert_eq!(k.current_context, "kubernetes-admin@lab");
    }

    #[test]
    fn the_client_certificate_is_signed_by_the_cluster_ca_for_client_auth() {
        let secrets = ClusterSecrets::generate().unwrap();
        let (k, cert_der, ca_der) = minted("1.30", &secrets);
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer().to_string(), ca.subject().to_string());
        assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
        cert.verify_signature(Some(ca.public_key())).unwrap();
        // Not by some other key (the check above can fail).
        let other = ClusterSecrets::generate().unwrap();
        let other_der = pem_der(&other.cluster_ca.cert_pem);
        let (_, other_ca) = x509_parser::parse_x509_certificate(&other_der).unwrap();
        assert!(cert.verify_signature(Some(other_ca.public_key())).is_err());
        // The key in the kubeconfig is the certificate's.
        let key = KeyPair::from_pem(&unbase64(&k.users[0].entry.client_key_data)).unwrap();
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth, "{eku:?}");
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        assert!(!cert.is_ca());
        let aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
                _ => None,
            });
        let ski = ca
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(s) => Some(s.clone()),
                _ => None,
            });
        assert_eq!(aki.map(|a| a.0.to_vec()), ski.map(|s| s.0.to_vec()));
        assert!(
            cert.tbs_certificate.raw_serial()[0] & 0x80 == 0,
            "positive serial"
        );
    }

    #[test]
    fn the_admin_group_follows_kubeadm_by_kubernetes_version() {
        let secrets = ClusterSecrets::generate().unwrap();
        for (version, group) in [
            ("1.28", "system:masters"),
            ("1.28.9", "system:masters"),
            ("1.29", "kubeadm:cluster-admins"),
            ("1.31.2", "kubeadm:cluster-admins"),
        ] {
            let (_, der, _) = minted(version, &secrets);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let o: Vec<&str> = cert
                .subject()
                .iter_organization()
                .map(|a| a.as_str().unwrap())
                .collect();
            let cn: Vec<&str> = cert
                .subject()
                .iter_common_name()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(o, [group], "Kubernetes {version}");
            assert_eq!(cn, ["kubernetes-admin"], "Kubernetes {version}");
        }
    }

    #[test]
    fn valid_for_a_year_from_a_day_back() {
        let secrets = ClusterSecrets::generate().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let admin = admin_kubeconfig(&spec("1.30"), &secrets, now).unwrap();
        assert_eq!(admin.not_before, now - BACKDATE);
        assert_eq!(admin.not_after, now + ADMIN_CERT_VALIDITY);
        let k: Kubeconfig = serde_saphyr::from_str(admin.kubeconfig.expose()).unwrap();
        let der = pem_der(&unbase64(&k.users[0].entry.client_certificate_data));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.validity().not_before.timestamp(),
            1_900_000_000 - 86_400
        );
        assert_eq!(
            cert.validity().not_after.timestamp(),
            1_900_000_000 + 365 * 86_400
        );
    }

    #[test]
    fn each_call_mints_a_new_key_and_debug_shows_none() {
        let secrets = ClusterSecrets::generate().unwrap();
        let a = admin_kubeconfig(&spec("1.30"), &secrets, SystemTime::now()).unwrap();
        let b = admin_kubeconfig(&spec("1.30"), &secrets, SystemTime::now()).unwrap();
        assert_ne!(a.kubeconfig, b.kubeconfig);
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("client-key-data"), "{dbg}");
        assert!(dbg.contains("kubeadm:cluster-admins"), "{dbg}");
    }

    #[test]
    fn a_damaged_ca_is_refused_by_name() {
        let mut secrets = ClusterSecrets::generate().unwrap();
        secrets.cluster_ca.cert_pem = "not a certificate".into();
        let e = admin_kubeconfig(&spec("1.30"), &secrets, SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("cluster CA certificate"), "{e}");
    }
}
