//! TLS for the Redfish client: rustls with the ring provider. Certificates are verified against the
//! system trust store plus an optional site CA, unless the machine explicitly opts out.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

pub fn client_config(
    insecure_skip_verify: bool,
    ca_pem: Option<&str>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = if insecure_skip_verify {
        Arc::new(FixedVerifier::accept_any(provider))
    } else {
        let extra: Vec<CertificateDer<'static>> = match ca_pem {
            Some(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("CA certificate (PEM): {e}"))?,
            None => Vec::new(),
        };
        if ca_pem.is_some() && extra.is_empty() {
            return Err("CA certificate (PEM): no CERTIFICATE block".into());
        }
        match rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()) {
            Ok(v) => Arc::new(v),
            // No system CA store and no site CA: plain HTTP still works; HTTPS fails with this text.
            Err(e) => Arc::new(FixedVerifier::no_trust_anchors(e.to_string(), provider)),
        }
    };
    Ok(builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// What a [`FixedVerifier`] does with every certificate.
#[derive(Debug)]
enum FixedTrust {
    /// The per-machine opt-out: any certificate, any name. Handshake signatures are still checked,
    /// so the peer must hold the key of the certificate it shows.
    AnyCertificate,
    /// No trust anchors could be loaded: every certificate is refused, with the reason.
    NoTrustAnchors { reason: String },
}

/// A verifier used instead of the platform one: one verdict for every certificate, so the opt-out
/// and the no-anchors case share the signature plumbing.
#[derive(Debug)]
struct FixedVerifier {
    trust: FixedTrust,
    provider: Arc<CryptoProvider>,
}

impl FixedVerifier {
    fn accept_any(provider: Arc<CryptoProvider>) -> Self {
        FixedVerifier {
            trust: FixedTrust::AnyCertificate,
            provider,
        }
    }

    fn no_trust_anchors(reason: String, provider: Arc<CryptoProvider>) -> Self {
        FixedVerifier {
            trust: FixedTrust::NoTrustAnchors { reason },
            provider,
        }
    }

    /// Runs `verify` (a TLS 1.2 or 1.3 signature check) with the provider's algorithms, unless
    /// every certificate is refused anyway.
    fn check_signature(
        &self,
        verify: impl FnOnce(
            &WebPkiSupportedAlgorithms,
        ) -> Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.trust {
            FixedTrust::AnyCertificate => verify(&self.provider.signature_verification_algorithms),
            FixedTrust::NoTrustAnchors { .. } => {
                Err(rustls::Error::General("no trusted CA certificates".into()))
            }
        }
    }
}

impl ServerCertVerifier for FixedVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            FixedTrust::AnyCertificate => Ok(ServerCertVerified::assertion()),
            FixedTrust::NoTrustAnchors { reason } => Err(rustls::Error::General(format!(
                "no trusted CA certificates ({reason})"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(|algorithms| verify_tls12_signature(message, cert, dss, algorithms))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(|algorithms| verify_tls13_signature(message, cert, dss, algorithms))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_each_variant_and_rejects_bad_ca_pem() {
        assert!(client_config(false, None).is_ok());
        assert!(client_config(true, None).is_ok());
        let err = client_config(false, Some("not a pem")).unwrap_err();
        assert!(err.contains("CA certificate"), "{err}");
    }
}
