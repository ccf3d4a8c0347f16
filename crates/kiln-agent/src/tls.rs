//! Talking to Kiln's agent API over TLS, trusting exactly one CA: the one whose SHA-256
//! (of its DER) the kernel command line names (`kiln.ca-sha256=`, beside
//! `kiln.api=https://IP:PORT`). With several servers the line names several APIs, paired by
//! position with their CAs (`kiln.api=U1,U2 kiln.ca-sha256=H1,H2`): each is trusted only with
//! its own.
//!
//! The command line carries only the hash, so the server sends its CA after its own
//! certificate; the agent picks from what it was sent the certificate with that hash, makes
//! it the only root, and lets webpki verify the server's certificate against it (signature,
//! name, validity) as for any TLS server. A listener on the network reads nothing; a host
//! that answers in Kiln's place has no certificate signed by that CA's key (the CA
//! certificate itself is public: sending it along proves nothing, the signature must
//! verify).
//!
//! ureq's public configuration takes root certificates, not a verifier, so HTTPS goes
//! through a small connector of our own (ureq's `unversioned` transport API, as its own
//! rustls connector does); `http://` URLs (image downloads) pass through untouched.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, StreamOwned,
};
use sha2::{Digest, Sha256};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

/// `kiln.api=` and `kiln.ca-sha256=` from a kernel command line: each agent API's base URL
/// (no trailing '/') with its CA fingerprint, in the line's order (the netbooting server's
/// first). `None` unless both are there, name as many of each, every URL is `https://` and
/// every fingerprint 64 hex digits.
pub fn api_from_cmdline(cmdline: &str) -> Option<Vec<(String, [u8; 32])>> {
    let get = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let urls: Vec<&str> = get("kiln.api")?.split(',').collect();
    let pins: Vec<&str> = get("kiln.ca-sha256")?.split(',').collect();
    if urls.len() != pins.len() {
        return None;
    }
    urls.iter()
        .zip(&pins)
        .map(|(url, pin)| {
            let url = url.trim_end_matches('/');
            let pin = parse_sha256(pin)?;
            (url.starts_with("https://") && url.len() > "https://".len())
                .then(|| (url.to_string(), pin))
        })
        .collect()
}

/// 64 hex digits (either case) as 32 bytes.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A ureq agent with `config`; with a `pin`, its HTTPS connections accept only a server
/// whose certificate is signed by the CA with that SHA-256 (plain `http://` is unchanged).
/// Without one, ureq's default TLS (the Web PKI roots).
pub fn agent_for(pin: Option<[u8; 32]>, config: ureq::config::Config) -> ureq::Agent {
    let Some(pin) = pin else {
        return config.into();
    };
    let connector = ().chain(TcpConnector::default()).chain(PinnedTlsConnector {
        config: pinned_client_config(pin),
    });
    ureq::Agent::with_parts(config, connector, DefaultResolver::default())
}

/// A rustls client configuration (ring) that trusts only the CA with SHA-256 `pin`.
pub fn pinned_client_config(pin: [u8; 32]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCa {
        pin,
        provider: provider.clone(),
    });
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            // Not dangerous: PinnedCa delegates to webpki with the pinned CA as the root.
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// Trusts the server when the CA with SHA-256 `pin`, found among the certificates it sent,
/// signed its certificate for the name the agent asked for.
#[derive(Debug)]
pub struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCa {
    pub fn new(pin: [u8; 32]) -> PinnedCa {
        PinnedCa {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| <[u8; 32]>::from(Sha256::digest(c.as_ref())) == self.pin)
        else {
            // No CA with the pinned fingerprint: not Kiln's server.
            return Err(CertificateError::UnknownIssuer.into());
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        match webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now) {
            // A netbooted machine's clock may be far behind (a reset RTC): the pinned CA, not
            // the clock, is what makes the server Kiln's, so a certificate that is merely
            // "not valid yet" is checked again as of its first valid second. Expiry still
            // counts.
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                not_before,
                ..
            })) => {
                webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, not_before)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Wraps `https://` connections in TLS with the pinned configuration.
#[derive(Debug)]
struct PinnedTlsConnector {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PinnedTlsConnector {
    type Out = Either<In, PinnedTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            ureq::Error::Tls("the server's host is neither an IP address nor a name")
        })?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PinnedTlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// One TLS connection, as ureq's own rustls transport.
struct PinnedTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedTlsTransport")
            .field("chained", &self.stream.sock.inner())
            .finish()
    }
}

impl Transport for PinnedTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    /// A CA named as Kiln names its own (an impostor copies the name too).
    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Kiln provisioning CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Ca { params, key, der }
    }

    fn fingerprint(der: &[u8]) -> [u8; 32] {
        Sha256::digest(der).into()
    }

    /// A server certificate for `host` signed by `ca`, valid from `from` to `until` (years).
    fn leaf(ca: &Ca, host: &str, from: i32, until: i32) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        (der, key.serialize_der())
    }

    /// A TLS server on 127.0.0.1 presenting `chain`; answers every request with "ok".
    fn https_server(chain: Vec<Vec<u8>>, key: Vec<u8>) -> u16 {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    chain.into_iter().map(CertificateDer::from).collect(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                )
                .unwrap(),
        );
        serve(move |tcp| {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            respond(StreamOwned::new(conn, tcp));
        })
    }

    fn http_server() -> u16 {
        serve(respond)
    }

    fn serve(handle: impl Fn(std::net::TcpStream) + Send + 'static) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                handle(tcp);
            }
        });
        port
    }

    /// Reads a request head, answers "ok" and closes (a failed handshake just ends).
    fn respond(mut stream: impl Read + Write) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
        let _ = stream.flush();
    }

    fn config() -> ureq::config::Config {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(20)))
            .http_status_as_error(false)
            .build()
    }

    fn get(pin: [u8; 32], url: &str) -> Result<String, String> {
        let agent = agent_for(Some(pin), config());
        let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_server_signed_by_the_pinned_ca_is_trusted() {
        let kiln = ca();
        let (cert, key) = leaf(&kiln, "127.0.0.1", 2020, 2090);
        let port = https_server(vec![cert, kiln.der.clone()], key);
        let url = format!("https://127.0.0.1:{port}/healthz");
        assert_eq!(get(fingerprint(&kiln.der), &url).unwrap(), "ok\n");
    }

    #[test]
    fn another_fingerprint_is_refused() {
        let kiln = ca();
        let (cert, key) = leaf(&kiln, "127.0.0.1", 2020, 2090);
        let port = https_server(vec![cert, kiln.der.clone()], key);
        let url = format!("https://127.0.0.1:{port}/healthz");
        let mut pin = fingerprint(&kiln.der);
        pin[0] ^= 1;
        let e = get(pin, &url).unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn an_impostor_with_its_own_ca_is_refused() {
        let (kiln, impostor) = (ca(), ca());
        let (cert, key) = leaf(&impostor, "127.0.0.1", 2020, 2090);
        let port = https_server(vec![cert, impostor.der.clone()], key);
        let url = format!("https://127.0.0.1:{port}/healthz");
        let e = get(fingerprint(&kiln.der), &url).unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn an_impostor_sending_kilns_public_ca_certificate_is_refused() {
        // ca.crt is public: sending it along must not be enough.
        let (kiln, impostor) = (ca(), ca());
        let (cert, key) = leaf(&impostor, "127.0.0.1", 2020, 2090);
        let port = https_server(vec![cert, kiln.der.clone()], key);
        let url = format!("https://127.0.0.1:{port}/healthz");
        let e = get(fingerprint(&kiln.der), &url).unwrap_err();
        assert!(e.contains("BadSignature"), "{e}");
    }

    #[test]
    fn a_certificate_for_another_address_is_refused() {
        let kiln = ca();
        let (cert, key) = leaf(&kiln, "10.77.0.1", 2020, 2090);
        let port = https_server(vec![cert, kiln.der.clone()], key);
        let url = format!("https://127.0.0.1:{port}/healthz");
        let e = get(fingerprint(&kiln.der), &url).unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
    }

    #[test]
    fn a_clock_behind_the_certificate_is_forgiven_an_expired_certificate_is_not() {
        let kiln = ca();
        let ee = |from, until| CertificateDer::from(leaf(&kiln, "127.0.0.1", from, until).0);
        let verifier = PinnedCa::new(fingerprint(&kiln.der));
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let intermediates = [CertificateDer::from(kiln.der.clone())];
        let at = |year: i32| {
            let t = rcgen::date_time_ymd(year, 6, 1).unix_timestamp();
            UnixTime::since_unix_epoch(Duration::from_secs(t as u64))
        };
        let check = |cert: &CertificateDer<'_>, now| {
            verifier.verify_server_cert(cert, &intermediates, &name, &[], now)
        };
        // A machine whose clock reads 2001 (a reset RTC) still trusts Kiln's certificate.
        check(&ee(2025, 2035), at(2001)).unwrap();
        check(&ee(2025, 2035), at(2030)).unwrap();
        let expired = check(&ee(2025, 2035), at(2036)).unwrap_err();
        assert!(
            matches!(
                expired,
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{expired:?}"
        );
        // Without the pinned CA among the certificates sent, nothing is trusted.
        let alone = verifier.verify_server_cert(&ee(2025, 2035), &[], &name, &[], at(2030));
        assert!(alone.is_err());
    }

    #[test]
    fn plain_http_goes_through_the_pinned_agent_unchanged() {
        let port = http_server();
        let url = format!("http://127.0.0.1:{port}/images/x");
        assert_eq!(get([7; 32], &url).unwrap(), "ok\n");
    }

    #[test]
    fn the_command_line_names_the_api_and_the_fingerprint() {
        let hex = "381ddd029dc29f5de2497ab661759cd6c080b1410c406faa97698eb6b7086317";
        let line = format!(
            "console=ttyS0 kiln.server=http://10.77.0.1:8080 kiln.api=https://10.77.0.1:8443/ kiln.ca-sha256={hex} kiln.mac=52:54:00:00:00:01"
        );
        let apis = api_from_cmdline(&line).unwrap();
        let [(api, pin)] = apis.as_slice() else {
            panic!("{apis:?}")
        };
        let pin = *pin;
        assert_eq!(api, "https://10.77.0.1:8443");
        assert_eq!(pin[0], 0x38);
        assert_eq!(pin[31], 0x17);
        assert_eq!(parse_sha256(&hex.to_uppercase()), Some(pin));

        let without_pin = "kiln.server=http://10.77.0.1:8080 kiln.api=https://10.77.0.1:8443";
        assert_eq!(api_from_cmdline(without_pin), None);
        let without_api = format!("kiln.server=http://10.77.0.1:8080 kiln.ca-sha256={hex}");
        assert_eq!(api_from_cmdline(&without_api), None);
        // Not HTTPS, or not a SHA-256: no pinned API.
        let plain = format!("kiln.api=http://10.77.0.1:8443 kiln.ca-sha256={hex}");
        assert_eq!(api_from_cmdline(&plain), None);
        for bad in [&hex[..62], &format!("{hex}00"), &hex.replace('d', "g")] {
            let line = format!("kiln.api=https://10.77.0.1:8443 kiln.ca-sha256={bad}");
            assert_eq!(api_from_cmdline(&line), None, "{bad}");
        }
        // `kiln.api` does not match a longer key.
        let longer = format!("kiln.apix=https://h:1 kiln.ca-sha256={hex}");
        assert_eq!(api_from_cmdline(&longer), None);
        // Several servers: paired by position, the first is the netbooting server's.
        let other = "ab".repeat(32);
        let two = format!(
            "kiln.api=https://10.77.0.1:8443,https://10.77.0.2:8443/ kiln.ca-sha256={hex},{other}"
        );
        assert_eq!(
            api_from_cmdline(&two),
            Some(vec![
                ("https://10.77.0.1:8443".to_string(), pin),
                ("https://10.77.0.2:8443".to_string(), [0xab; 32])
            ])
        );
        // Unpaired, or one of them bad: no pinned API at all.
        for bad in [
            format!("kiln.api=https://a:1,https://b:1 kiln.ca-sha256={hex}"),
            format!("kiln.api=https://a:1 kiln.ca-sha256={hex},{other}"),
            format!("kiln.api=https://a:1,http://b:1 kiln.ca-sha256={hex},{other}"),
            format!("kiln.api=https://a:1,https://b:1 kiln.ca-sha256={hex},12"),
            format!("kiln.api=https://a:1, kiln.ca-sha256={hex},{other}"),
        ] {
            assert_eq!(api_from_cmdline(&bad), None, "{bad}");
        }
        // Multi-byte text of the right length is not hex.
        assert_eq!(parse_sha256(&"é".repeat(32)), None);
    }
}
