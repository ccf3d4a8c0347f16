//! The admin API as an operator's tools meet it: a whole server started in-process (boot
//! services on loopback ports picked by the OS, DHCP off), reached over TLS with Kiln's CA.

use kiln_model::EventKind;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use kiln_server::{Running, ServeOptions};
use serde_json::{Value, json};

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,10.9.1.11,admin,hunter2-secret,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
n2,,,,52:54:00:aa:00:02,10.9.0.12,255.255.255.0,10.9.0.1,10.9.0.1,role=spare,/dev/vda
";

fn options(dir: &std::path::Path) -> ServeOptions {
    let mut opts = ServeOptions::new(dir.to_path_buf(), Ipv4Addr::LOCALHOST);
    opts.dhcp_mode = kiln_dhcp::Mode::Off;
    (opts.http_port, opts.agent_tls_port, opts.tftp_port) = (0, 0, 0);
    opts.api_listen = "127.0.0.1:0".parse().unwrap();
    opts
}

struct Server {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    dir: tempfile::TempDir,
    agent: ureq::Agent,
    base: String,
    admin_token: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let running = rt
            .block_on(kiln_server::start(options(dir.path())))
            .unwrap();
        let pem = std::fs::read(dir.path().join("tls/ca.crt")).unwrap();
        let ca = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
        let agent = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            )
            .http_status_as_error(false)
            .build()
            .new_agent();
        let local: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("api.json")).unwrap())
                .unwrap();
        let admin_token = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        Server {
            base: local["url"].as_str().unwrap().to_string(),
            running: Some(running),
            rt,
            dir,
            agent,
            admin_token,
        }
    }

    /// (status, JSON body or Null).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => self.agent.run(
                req.header("content-type", "application/json")
                    .body(serde_json::to_vec(&b).unwrap())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn token(&self, name: &str, scope: kiln_api::TokenScope) -> String {
        let store = kiln_store::Store::open(self.dir.path()).unwrap();
        kiln_server::admin::auth::create(&store, name, scope, 1)
            .unwrap()
            .1
    }

    /// The events recorded so far (the writer batches: waits until `until` holds, or 10 s).
    fn events_until(
        &self,
        until: impl Fn(&[kiln_store::EventRecord]) -> bool,
    ) -> Vec<kiln_store::EventRecord> {
        let store = kiln_store::Store::open(self.dir.path()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let all = store.events(None, 0, 100_000).unwrap();
            if until(&all) || std::time::Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }
}

/// Every (method, path) the OpenAPI document lists, with its `{parameters}` filled in.
fn documented_routes(doc: &Value) -> Vec<(String, String)> {
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

#[test]
fn every_route_is_documented_and_refuses_requests_without_the_right_token() {
    let s = Server::start();
    let (status, _) = s.call("GET", kiln_api::routes::OPENAPI, None, None);
    assert_eq!(status, 401, "even the document needs a token");
    let (status, doc) = s.call("GET", kiln_api::routes::OPENAPI, Some(&s.admin_token), None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let routes = documented_routes(&doc);
    assert!(
        routes.contains(&("GET".into(), "/api/v1/hardware".into())),
        "{routes:?}"
    );
    assert!(
        routes.contains(&("DELETE".into(), "/api/v1/hardware/n1".into())),
        "{routes:?}"
    );
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|i| i.as_object().unwrap().values())
        .map(|op| {
            op["operationId"]
                .as_str()
                .expect("every operation has an id")
        })
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "operation ids are unique");

    let read_only = s.token("dashboards", kiln_api::TokenScope::ReadOnly);
    let revoked = s.token("old", kiln_api::TokenScope::Admin);
    kiln_store::Store::open(s.dir.path())
        .unwrap()
        .revoke_api_token("old", 2)
        .unwrap();
    for (method, path) in &routes {
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        let (status, err) = s.call(method, path, None, body.clone());
        assert_eq!(status, 401, "{method} {path} without a token");
        assert_eq!(err["code"], "unauthorized", "{method} {path}");
        let (status, _) = s.call(method, path, Some("kiln_0_not-a-token"), body.clone());
        assert_eq!(status, 401, "{method} {path} with a made-up token");
        let (status, _) = s.call(method, path, Some(&revoked), body.clone());
        assert_eq!(status, 401, "{method} {path} with a revoked token");
        if path.ends_with("/stream") {
            continue; // an event stream answers a reader with no end (its own test reads it)
        }
        let (status, err) = s.call(method, path, Some(&read_only), body);
        if method == "GET" && !admin_only_read(path) {
            assert!(
                status != 401 && status != 403,
                "{method} {path}: a read-only token reads ({status})"
            );
        } else {
            assert_eq!(status, 403, "{method} {path} with a read-only token");
            assert_eq!(err["code"], "forbidden");
            assert!(
                err["message"].as_str().unwrap().contains("read-only"),
                "{err}"
            );
        }
    }
    // Each refusal is recorded as an event naming the source; never with the token.
    let writes = routes
        .iter()
        .filter(|(m, p)| m != "GET" || admin_only_read(p))
        .count();
    let expected = routes.len() * 3 + writes + 1;
    let refusals = |all: &[kiln_store::EventRecord]| {
        all.iter()
            .filter(|e| e.event.kind == EventKind::ApiRefused)
            .count()
    };
    let events = s.events_until(|all| refusals(all) >= expected);
    assert_eq!(refusals(&events), expected);
    let refused = events
        .iter()
        .filter(|e| e.event.kind == EventKind::ApiRefused);
    for e in refused {
        assert!(
            matches!(
                e.event.data,
                Some(kiln_model::event::EventData::ApiRefused { peer, .. })
                    if peer == std::net::IpAddr::from([127, 0, 0, 1])
            ),
            "{:?}",
            e.event
        );
        assert!(
            !e.event.detail.contains(&revoked) && !e.event.detail.contains(&read_only),
            "{:?}",
            e.event
        );
    }
}

/// GETs that return a credential (a cluster's admin kubeconfig): admin tokens only.
fn admin_only_read(path: &str) -> bool {
    path.ends_with("/kubeconfig")
}

#[test]
fn hardware_is_enrolled_changed_and_deleted_through_the_api_and_passwords_never_come_back() {
    let s = Server::start();
    let t = Some(s.admin_token.as_str());
    let bad = json!({"file_name": "rack.csv", "csv": CSV.replace("10.9.0.12,", "10.9.0.999,")});
    let (status, err) = s.call("POST", "/api/v1/hardware", t, Some(bad));
    assert_eq!(status, 422);
    assert_eq!(err["code"], "invalid");
    let d = &err["details"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_u64(), d["field"].as_str()),
        (Some("rack.csv"), Some(3), Some("ip_address")),
        "{err}"
    );
    assert!(d["column"].as_u64().unwrap() > 1, "{err}");
    let (_, list) = s.call("GET", "/api/v1/hardware", t, None);
    assert_eq!(list, json!([]), "nothing half-applied");

    let enroll = json!({"file_name": "rack.csv", "csv": CSV});
    let (status, dry) = s.call(
        "POST",
        "/api/v1/hardware?dry_run=true",
        t,
        Some(enroll.clone()),
    );
    assert_eq!(
        (status, dry["valid"].as_u64(), dry["enrolled"].as_bool()),
        (200, Some(2), Some(false))
    );
    let (status, out) = s.call("POST", "/api/v1/hardware", t, Some(enroll));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["added"], json!(["n1", "n2"]));

    let change = json!({"labels": {"rack": "r7", "role": null}, "bmc_password": "new-secret-pw"});
    let (status, hw) = s.call("PATCH", "/api/v1/hardware/n1", t, Some(change));
    assert_eq!(status, 200, "{hw}");
    assert_eq!(hw["labels"], json!({"rack": "r7"}));
    let stored = kiln_store::Store::open(s.dir.path())
        .unwrap()
        .hardware_by_name("n1")
        .unwrap()
        .unwrap();
    assert_eq!(stored.bmc.unwrap().password.expose(), "new-secret-pw");
    let no_bmc = json!({"bmc_username": "root"});
    let (status, err) = s.call("PATCH", "/api/v1/hardware/n2", t, Some(no_bmc));
    assert_eq!(status, 422, "{err}");
    assert!(err["message"].as_str().unwrap().contains("no BMC"), "{err}");
    let bad_label = json!({"labels": {"bad key!": "x"}});
    let (status, _) = s.call("PATCH", "/api/v1/hardware/n1", t, Some(bad_label));
    assert_eq!(status, 422);

    let (_, all) = s.call("GET", "/api/v1/hardware", t, None);
    let text = all.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("new-secret-pw"),
        "{text}"
    );
    assert_eq!(all[0]["bmc"]["username"], "admin");

    let (status, _) = s.call("DELETE", "/api/v1/hardware/n2", t, None);
    assert_eq!(status, 204);
    let (status, err) = s.call("GET", "/api/v1/hardware/n2", t, None);
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    let (status, _) = s.call("DELETE", "/api/v1/hardware/n2", t, None);
    assert_eq!(status, 404);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_nothing_is_dropped_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let running = kiln_server::start(options(dir.path())).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(running.admin_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    // Silent for longer than the header timeout (10 s on a paused clock): the server hangs up.
    let n = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf))
        .await
        .expect("closed by the server within 30 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    running.stop().await;
}
