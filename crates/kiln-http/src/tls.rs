//! The agent API over TLS: the same router on a second listener, and the switch that keeps
//! the agent routes off the plain one.
//!
//! Plain HTTP stays for what firmware fetches (iPXE scripts, kernels, images: firmware cannot
//! pin a CA) and for the installed OS's phone-home; the agent, which reads Kiln's CA
//! fingerprint from its kernel command line, talks to `/v1/agent/...` over TLS only, so a
//! passive listener on the provisioning network reads neither its token nor its user-data.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::HttpLimits;
use crate::limits::Admission;
use tower::ServiceExt;
use tracing::debug;

/// What [`server_config`] makes and [`serve_tls`] takes.
pub use rustls::ServerConfig;

/// Paths served to the agent over TLS only.
pub const AGENT_API_PREFIX: &str = "/v1/agent/";

/// A client that has not finished its TLS handshake by then is dropped: an idle connection
/// must not hold a slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request head must arrive within this (hyper's header read timeout).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections the TLS listener holds at once; more are closed as soon as they are accepted.
/// A rack of agents needs one or two each.
pub const MAX_TLS_CONNECTIONS: usize = 512;

/// The router for the plain-HTTP listener once the agent API is on TLS: every
/// `/v1/agent/...` request is refused with 421 (Misdirected Request) before any handler
/// runs, so no token or user-data ever crosses the network in clear. Everything else
/// (scripts, artifacts, images, phone-home, health, metrics) is served as before.
pub fn plain_only(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(refuse_agent_api))
}

async fn refuse_agent_api(request: Request, next: Next) -> Response {
    if request.uri().path().starts_with(AGENT_API_PREFIX) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "the agent API is served over TLS only (see kiln.api= on the kernel command line)\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Why the TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The certificate chain or key was refused by rustls.
    #[error("the agent API's TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS 1.2/1.3 server configuration (ring provider) presenting `chain` (DER, the server
/// certificate first, then the CA, which the agent needs to see to match its fingerprint)
/// with the PKCS#8 DER `key`. HTTP/1.1 only, as the plain listener.
pub fn server_config(
    chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets running
/// responses finish (idle connections close) and returns when every connection has ended.
///
/// Handlers can extract `ConnectInfo<SocketAddr>`, as on the plain listener. A connection
/// that does not complete its handshake within [`HANDSHAKE_TIMEOUT`] is dropped; beyond
/// [`MAX_TLS_CONNECTIONS`] open connections, new ones are closed at once.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    server_config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_tls_with_limits(
        listener,
        app,
        server_config,
        HttpLimits::default(),
        None,
        shutdown,
    )
    .await
}

/// [`serve_tls`] with the plain listener's connection caps: at most `limits.max_per_source`
/// connections from one address, and `limits.max_connections` (never above
/// [`MAX_TLS_CONNECTIONS`]) in all; more are closed as soon as they are accepted.
pub async fn serve_tls_with_limits(
    listener: TcpListener,
    app: Router,
    server_config: Arc<rustls::ServerConfig>,
    limits: HttpLimits,
    refusals: Option<Arc<dyn kiln_model::EventSink>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(server_config);
    let mut caps = limits;
    caps.max_connections = caps.max_connections.min(MAX_TLS_CONNECTIONS);
    let admission = Admission::with_events(&caps, refusals);
    crate::accept::accept_loop(
        "https",
        listener,
        admission,
        shutdown,
        |stream, peer, stop| connection(stream, peer, app.clone(), acceptor.clone(), stop),
    )
    .await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    acceptor: TlsAcceptor,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let tls = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "https: handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "https: handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "https connection");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use axum::routing::get;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/v1/agent/next", get(|| async { "secret action" }))
            .route("/v1/phone-home/{id}", get(|| async { "home" }))
    }

    async fn status(app: &Router, path: &str) -> StatusCode {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        app.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_plain_listener_refuses_the_agent_api_only() {
        let plain = plain_only(app());
        assert_eq!(
            status(&plain, "/v1/agent/next").await,
            StatusCode::MISDIRECTED_REQUEST
        );
        assert_eq!(status(&plain, "/healthz").await, StatusCode::OK);
        assert_eq!(status(&plain, "/v1/phone-home/w1").await, StatusCode::OK);
        // The same router, not wrapped (the TLS listener), still serves it.
        assert_eq!(status(&app(), "/v1/agent/next").await, StatusCode::OK);
    }

    fn config() -> (Arc<rustls::ServerConfig>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let tls =
            crate::tls_ca::load_or_create(dir.path(), "127.0.0.1", SystemTime::now()).unwrap();
        (
            server_config(tls.chain_der, tls.key_pkcs8_der).unwrap(),
            dir,
        )
    }

    /// Reads until the server closes; true when it closed without sending anything.
    async fn closed_silently(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(stream.read(&mut buf).await, Ok(0) | Err(_))
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_cap_a_connection_is_closed_at_once() {
        let (config, _dir) = config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let limits = HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        };
        let server = tokio::spawn(serve_tls_with_limits(
            listener,
            app(),
            config,
            limits,
            None,
            async {
                let _ = stop_rx.await;
            },
        ));
        // The first holds the only slot (it has not even started its handshake) ...
        let _first = TcpStream::connect(addr).await.unwrap();
        // ... so the server closes the second as soon as it accepts it, not when its
        // handshake would time out (the clock is paused: it moves only when idle).
        let before = tokio::time::Instant::now();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(closed_silently(&mut second).await);
        assert!(before.elapsed() < HANDSHAKE_TIMEOUT);
        let _ = stop_tx.send(());
        drop(_first);
        server.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_shakes_hands_is_dropped() {
        let (config, _dir) = config();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_tls(listener, app(), config, std::future::pending()));
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let before = tokio::time::Instant::now();
        assert!(closed_silently(&mut idle).await);
        assert!(before.elapsed() >= HANDSHAKE_TIMEOUT);
        server.abort();
    }
}
