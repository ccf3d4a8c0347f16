//! The admin API as an operator's tools meet it: a whole server started in-process (boot
//! services on loopback ports picked by the OS, DHCP off), reached over TLS with Kiln's CA.

use std::time::Duration;

use kiln_model::EventKind;
use serde_json::{Value, json};

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,10.9.1.11,admin,hunter2-secret,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
n2,,,,52:54:00:aa:00:02,10.9.0.12,255.255.255.0,10.9.0.1,10.9.0.1,role=spare,/dev/vda
";

mod common;
use common::{Server, documented_routes};

impl Server {
    /// (status, JSON body or null).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.request_json(method, path, token, body.as_ref())
    }
}

#[test]
fn every_route_is_documented_and_refuses_requests_without_the_right_token() {
    let s = Server::start();
    let (status, _) = s.call("GET", kiln_api::routes::OPENAPI, None, None);
    assert_eq!(status, 401, "even the document needs a token");
    let (status, doc) = s.call("GET", kiln_api::routes::OPENAPI, Some(&s.admin), None);
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
    kiln_store::open_sqlite(&s.data)
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
        if (method == "GET" && !admin_only_read(path)) || reading_post(method, path) {
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
        .filter(|(m, p)| (m != "GET" || admin_only_read(p)) && !reading_post(m, p))
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

/// POSTs a read-only token may make: they change nothing (a BMC action checks its op).
fn reading_post(method: &str, path: &str) -> bool {
    method == "POST"
        && (path.ends_with("/templates/validate")
            || path.ends_with("/bmc/actions")
            || path.ends_with("/preflight"))
}

#[test]
fn hardware_is_enrolled_changed_and_deleted_through_the_api_and_passwords_never_come_back() {
    let s = Server::start();
    let t = Some(s.admin.as_str());
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
    let stored = kiln_store::open_sqlite(&s.data)
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
    let running = kiln_server::start(common::options(dir.path()))
        .await
        .unwrap();
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
