//! One in-process server for the admin API's tests: its own data dir, every port picked by the
//! OS, DHCP off, called over TLS with Kiln's CA and bearer tokens, as the CLI calls it.
#![allow(dead_code)] // each test binary uses its part

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::TokenScope;
use kiln_server::{Running, ServeOptions};
use kiln_store::{EventRecord, Store};
use serde_json::Value;

/// How long anything asynchronous (an event reaching the store, a stream) may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running server and the two tokens tests call it with.
pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub running: Option<Running>,
    _dir: tempfile::TempDir,
    /// The data dir (store, CA, tokens, images).
    pub data: PathBuf,
    /// `https://127.0.0.1:PORT`, the admin API.
    pub base: String,
    pub agent: ureq::Agent,
    /// The token the first start made (admin).
    pub admin: String,
    pub read_only: String,
}

/// A test server's options: everything under `dir` (data in `dir/data`), every port 0, DHCP off.
pub fn options(dir: &Path) -> ServeOptions {
    let mut opts = ServeOptions::new(dir.join("data"), Ipv4Addr::LOCALHOST);
    opts.dhcp_mode = kiln_dhcp::Mode::Off;
    (opts.http_port, opts.agent_tls_port, opts.tftp_port) = (0, 0, 0);
    opts.api_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    opts.tftp_root = dir.join("tftp");
    opts.artifacts = dir.join("artifacts");
    for d in [&opts.tftp_root, &opts.artifacts] {
        std::fs::create_dir_all(d).unwrap();
    }
    opts
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(|_| {})
    }

    /// Starts with `adjust` applied to the test options.
    pub fn start_with(adjust: impl FnOnce(&mut ServeOptions)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        adjust(&mut opts);
        let data = opts.data_dir.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // One start at a time: two first starts at once race to install the process-wide
        // metrics recorder, and the second fails.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let running = {
            let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
            rt.block_on(kiln_server::start(opts))
                .expect("the server starts")
        };
        let base = format!("https://127.0.0.1:{}", running.admin_addr.port());
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let agent = client_config(&data).build().new_agent();
        let mut server = Server {
            rt,
            running: Some(running),
            _dir: dir,
            data,
            base,
            agent,
            admin,
            read_only: String::new(),
        };
        server.read_only = server.token("viewer", TokenScope::ReadOnly);
        server
    }

    /// Another connection to the server's store.
    pub fn store(&self) -> Arc<dyn Store> {
        kiln_store::open_sqlite(&self.data).unwrap()
    }

    /// A new token of `scope`, made as `kiln token create` makes it.
    pub fn token(&self, name: &str, scope: TokenScope) -> String {
        kiln_server::admin::auth::create(&*self.store(), name, scope, 1)
            .unwrap()
            .1
    }

    /// One request with a raw body: (status, body text).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some((content_type, bytes)) => self.agent.run(
                req.header("content-type", content_type)
                    .body(bytes)
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.into_body().read_to_string().unwrap())
    }

    /// One request with a JSON body (or none): (status, the JSON answer; null when empty,
    /// a string when not JSON).
    pub fn request_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
        let (status, text) = self.request(method, path, token, body);
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// The events stored so far: the writer batches, so waits until `until` holds (or
    /// [`PATIENCE`] runs out).
    pub fn events_until(&self, until: impl Fn(&[EventRecord]) -> bool) -> Vec<EventRecord> {
        let store = self.store();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let all = store.events(None, 0, 100_000).unwrap();
            if until(&all) || Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every (method, path) the OpenAPI document lists, with its `{parameters}` filled in.
pub fn documented_routes(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut concrete = String::new();
        let mut rest = path.as_str();
        while let Some(open) = rest.find('{') {
            concrete.push_str(&rest[..open]);
            let close = rest[open..].find('}').unwrap() + open;
            concrete.push_str("n1");
            rest = &rest[close + 1..];
        }
        concrete.push_str(rest);
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase(), concrete.clone()));
        }
    }
    out
}

/// A client configuration for the server whose data dir is `data`: trusts its CA only, one
/// connection per request as the CLI makes them (the server closes a connection whose
/// request body a refusal left unread, and a pooled one may be reused as it closes), and an
/// HTTP error status is an answer, not an error.
pub fn client_config(data: &Path) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let pem = std::fs::read(data.join("tls/ca.crt")).unwrap();
    let ca = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .max_idle_connections(0)
        .http_status_as_error(false)
}
