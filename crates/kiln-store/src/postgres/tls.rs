//! TLS to PostgreSQL when the URL asks for it, over rustls (ring, as the rest of Kiln):
//! `sslmode=require` encrypts without checking the server's certificate (libpq's meaning),
//! `verify-ca` checks it against the CA in `sslrootcert` (default `~/.postgresql/root.crt`,
//! as libpq), and `verify-full` checks the host name too. Any other `sslmode` (libpq's
//! default `prefer` included) connects without TLS: name `require` or stronger to get it.
//!
//! The client library knows only `disable|prefer|require` and refuses unknown keys, so
//! [`split_url`] takes the stronger modes and `sslrootcert` out of the URL first.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::Socket;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::StoreError;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// No TLS (`disable`, `prefer`, `allow`, or no `sslmode`).
    Off,
    /// Encrypted; the certificate is not checked (`require`).
    Encrypt,
    /// Signed by the root CA (`verify-ca`).
    Ca,
    /// Signed by the root CA and naming the host (`verify-full`).
    Full,
}

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsWanted {
    pub verify: Verify,
    pub root_cert: Option<PathBuf>,
}

/// `url` with `sslmode=verify-*` turned into `require` and `sslrootcert` taken out (URL and
/// key=value forms), and what they asked.
pub fn split_url(url: &str) -> (String, TlsWanted) {
    let mut wanted = TlsWanted {
        verify: Verify::Off,
        root_cert: None,
    };
    let mut take = |key: &str, value: &str| -> Option<String> {
        match key {
            "sslmode" => {
                wanted.verify = match value {
                    "require" => Verify::Encrypt,
                    "verify-ca" => Verify::Ca,
                    "verify-full" => Verify::Full,
                    _ => Verify::Off,
                };
                let kept = if wanted.verify == Verify::Off {
                    value
                } else {
                    "require"
                };
                Some(format!("sslmode={kept}"))
            }
            "sslrootcert" => {
                wanted.root_cert = Some(PathBuf::from(value));
                None
            }
            _ => Some(format!("{key}={value}")),
        }
    };
    let out = if let Some((base, query)) = url.split_once('?') {
        let kept: Vec<String> = query
            .split('&')
            .filter_map(|kv| match kv.split_once('=') {
                Some((k, v)) => take(k, v),
                None => Some(kv.to_string()),
            })
            .collect();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_string()
    } else {
        url.split_whitespace()
            .filter_map(|kv| match kv.split_once('=') {
                Some((k, v)) => take(k, v),
                None => Some(kv.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (out, wanted)
}

/// The connector for what `wanted` asks; `None` for no TLS.
pub fn connector(wanted: &TlsWanted) -> Result<Option<RustlsConnect>, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS to PostgreSQL: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match wanted.verify {
        Verify::Off => return Ok(None),
        Verify::Encrypt => Arc::new(Unchecked(provider)),
        Verify::Ca | Verify::Full => {
            let path = match &wanted.root_cert {
                Some(p) => p.clone(),
                None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".postgresql/root.crt"),
            };
            let bad = |why: String| {
                StoreError::Invalid(format!(
                    "sslrootcert {}: {why} (verify-ca and verify-full need the server's CA)",
                    path.display()
                ))
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
            if wanted.verify == Verify::Full {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(RustlsConnect(Arc::new(config))))
}

/// `require`: the handshake's signatures are checked, the certificate is not.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS hook, over tokio-rustls.
#[derive(Clone)]
pub struct RustlsConnect(Arc<rustls::ClientConfig>);

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnectTo;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnectTo> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnectTo(self.0.clone(), name))
    }
}

pub struct RustlsConnectTo(Arc<rustls::ClientConfig>, ServerName<'static>);

impl TlsConnect<Socket> for RustlsConnectTo {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let RustlsConnectTo(config, name) = self;
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_modes_and_the_root_cert_are_taken_out_of_the_url() {
        let (url, w) = split_url(
            "postgres://kiln@db.example/kiln?sslmode=verify-full&sslrootcert=/etc/kiln/pg-ca.pem&connect_timeout=5",
        );
        assert_eq!(
            url,
            "postgres://kiln@db.example/kiln?sslmode=require&connect_timeout=5"
        );
        assert_eq!(w.verify, Verify::Full);
        assert_eq!(w.root_cert, Some(PathBuf::from("/etc/kiln/pg-ca.pem")));
        let (url, w) = split_url("host=db user=kiln sslmode=verify-ca sslrootcert=/ca.pem");
        assert_eq!(url, "host=db user=kiln sslmode=require");
        assert_eq!(w.verify, Verify::Ca);
        let (url, w) = split_url("postgres://kiln@db/kiln?sslmode=require");
        assert_eq!(
            (url.as_str(), w.verify),
            ("postgres://kiln@db/kiln?sslmode=require", Verify::Encrypt)
        );
        let (url, w) = split_url("postgres://kiln@db/kiln?sslmode=prefer");
        assert_eq!(
            (url.as_str(), w.verify),
            ("postgres://kiln@db/kiln?sslmode=prefer", Verify::Off)
        );
        let (url, w) = split_url("postgres://kiln@/kiln?host=/run/pg");
        assert_eq!(
            (url.as_str(), w.verify),
            ("postgres://kiln@/kiln?host=/run/pg", Verify::Off)
        );
    }

    #[test]
    fn verifying_needs_a_readable_root_cert() {
        let wanted = TlsWanted {
            verify: Verify::Full,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let e = connector(&wanted).err().unwrap().to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        assert!(
            connector(&TlsWanted {
                verify: Verify::Off,
                root_cert: None
            })
            .unwrap()
            .is_none()
        );
        assert!(
            connector(&TlsWanted {
                verify: Verify::Encrypt,
                root_cert: None
            })
            .unwrap()
            .is_some()
        );
    }
}
