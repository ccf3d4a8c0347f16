//! The real router behind `serve_tls`, with Kiln's CA from `tls_ca`, reached by the
//! agent's pinned TLS client: the agent gets through with the CA's fingerprint and nowhere
//! else; the plain listener refuses the agent routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::routing::get;
use kiln_http::agent_apis::{AgentApis, AgentEndpoint};
use kiln_http::{HttpConfig, NoProvisioning, plain_only, router, serve, serve_tls, tls, tls_ca};
use kiln_model::{Inventory, NullSink, SharedInventory};
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Kiln {
    https: SocketAddr,
    http: SocketAddr,
    ca_sha256: [u8; 32],
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Kiln {
    let dir = tempfile::tempdir().unwrap();
    let agent_tls =
        tls_ca::load_or_create(&dir.path().join("tls"), "127.0.0.1", SystemTime::now()).unwrap();
    let app = router(
        HttpConfig {
            server_url: "http://127.0.0.1:8080".into(),
            artifacts_dir: dir.path().into(),
            images_dir: dir.path().into(),
            boot_dir: dir.path().into(),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            kernel_args: String::new(),
            agent_apis: Some(AgentApis::new(
                AgentEndpoint::new("https://127.0.0.1:8443", &agent_tls.ca_sha256_hex()).unwrap(),
            )),
            inspect: false,
        },
        SharedInventory::new(Inventory::new(Vec::new())),
        Arc::new(NullSink),
        Arc::new(String::new),
        Arc::new(NoProvisioning),
    )
    // Shows that handlers see the peer, as on the plain listener.
    .route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let config =
        tls::server_config(agent_tls.chain_der.clone(), agent_tls.key_pkcs8_der.clone()).unwrap();
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (https, http) = (
        tls_listener.local_addr().unwrap(),
        plain_listener.local_addr().unwrap(),
    );
    let servers = vec![
        tokio::spawn(serve_tls(
            tls_listener,
            app.clone(),
            config,
            stopped(rx.clone()),
        )),
        tokio::spawn(serve(plain_listener, plain_only(app), stopped(rx))),
    ];
    Kiln {
        https,
        http,
        ca_sha256: agent_tls.ca_sha256,
        stop,
        servers,
        _dir: dir,
    }
}

impl Kiln {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        for s in self.servers {
            s.await.unwrap().unwrap();
        }
    }
}

/// GET `url` with the agent's client pinned to `pin`: (status, body) or the error text.
async fn agent_get(pin: [u8; 32], url: String) -> Result<(u16, String), String> {
    tokio::task::spawn_blocking(move || {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(20)))
            .http_status_as_error(false)
            .build();
        let agent = kiln_agent::tls::agent_for(Some(pin), config);
        let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((response.status().as_u16(), body))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_kiln_over_tls_with_the_right_fingerprint_only() {
    let kiln = start().await;
    let https = |path: &str| format!("https://{}{path}", kiln.https);

    let (status, body) = agent_get(kiln.ca_sha256, https("/healthz")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = agent_get(kiln.ca_sha256, https("/peer")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "127.0.0.1"));

    let mut wrong = kiln.ca_sha256;
    wrong[31] ^= 0x80;
    let e = agent_get(wrong, https("/healthz")).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_routes_answer_over_tls_and_are_refused_in_clear() {
    let kiln = start().await;
    let path = "/v1/agent/0123456789abcdef/next";

    let (status, _) = agent_get(kiln.ca_sha256, format!("https://{}{path}", kiln.https))
        .await
        .unwrap();
    // Served (refused for want of a workflow, but by the agent API itself).
    assert_ne!(status, 421);
    assert!(status < 500, "{status}");

    let (status, body) = agent_get(kiln.ca_sha256, format!("http://{}{path}", kiln.http))
        .await
        .unwrap();
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("TLS only"), "{body}");
    // Everything else stays on plain HTTP.
    let (status, _) = agent_get(kiln.ca_sha256, format!("http://{}/healthz", kiln.http))
        .await
        .unwrap();
    assert_eq!(status, 200);

    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_makes_call_after_call_over_tls() {
    let kiln = start().await;
    let (pin, base) = (kiln.ca_sha256, format!("https://{}", kiln.https));
    let bodies = tokio::task::spawn_blocking(move || {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(20)))
            .http_status_as_error(false)
            .build();
        let agent = kiln_agent::tls::agent_for(Some(pin), config);
        (0..3)
            .map(|_| {
                let mut response = agent.get(&format!("{base}/peer")).call().unwrap();
                response.body_mut().read_to_string().unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(bodies, ["127.0.0.1"; 3]);
    kiln.stop().await;
}
