//! TLS for the Redfish client: rustls with the ring provider. Certificates are verified against the
//! system trust store plus an optional site CA, unless the machine explicitly opts out.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
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
        Arc::new(AcceptAnyCertificate { provider })
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
            Err(e) => Arc::new(NoTrustAnchors {
                reason: e.to_string(),
                provider,
            }),
        }
    };
    Ok(builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The per-machine opt-out: any certificate, any name. Handshake signatures are still checked, so
/// the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Used when no trust anchors could be loaded: every certificate is refused, with the reason.
#[derive(Debug)]
struct NoTrustAnchors {
    reason: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoTrustAnchors {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(format!(
            "no trusted CA certificates ({})",
            self.reason
        )))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no trusted CA certificates".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no trusted CA certificates".into()))
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
