//! The admin API's workflow, template and event routes, served by an in-process server
//! (`kiln_server::start`, every port 0, DHCP off) and called over TLS with bearer tokens,
//! as the CLI calls them.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_api::sse::SseDecoder;
use kiln_api::{EventView, LogPage, TemplateCheck, TemplateInfo, TokenScope, WorkflowView};
use serde_json::{Value, json};

const HARDWARE: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,,,,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
n2,,,,52:54:00:aa:00:02,10.9.0.12,255.255.255.0,10.9.0.1,10.9.0.1,role=spare,/dev/vda
";

const TEMPLATE: &str =
    "name: reach-agent\ntimeout: 1h\nactions:\n  - name: boot\n    kind: reboot\n";

mod common;
use common::{PATIENCE, Server};

struct Reply {
    status: u16,
    body: Value,
}

impl Server {
    /// A request as the CLI sends it: a JSON body (`{}` when none) on everything but GET.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let body = (method != "GET").then(|| body.unwrap_or(json!({})));
        let (status, body) = self.request_json(method, path, token, body.as_ref());
        Reply { status, body }
    }

    fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, Some(&self.admin), None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(&self.admin), Some(body))
    }

    fn enroll(&self) {
        let r = self.post(
            "/api/v1/hardware",
            json!({"file_name": "hardware.csv", "csv": HARDWARE}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }

    fn create(&self, machines: &[&str]) -> Reply {
        self.post(
            "/api/v1/workflows",
            json!({"template_file": "t.yaml", "template": TEMPLATE, "hardware": machines,
                   "server_url": "http://10.9.0.1:8080"}),
        )
    }

    /// Events of a kind, waiting (a while) for the event writer to store at least `n`.
    fn events_of(&self, query: &str, kind: &str, n: usize) -> Vec<EventView> {
        let started = Instant::now();
        loop {
            let all: Vec<EventView> =
                serde_json::from_value(self.get(&format!("/api/v1/events?{query}"))).unwrap();
            let found: Vec<EventView> = all
                .into_iter()
                .filter(|e| e.kind.as_str() == kind)
                .collect();
            if found.len() >= n || started.elapsed() > PATIENCE {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn view(v: Value) -> WorkflowView {
    serde_json::from_value(v).unwrap()
}

#[test]
fn workflows_are_created_listed_shown_cancelled_and_retried() {
    let s = Server::start();
    s.enroll();

    // A bad template: nothing created, every problem located.
    let bad = s.post(
        "/api/v1/workflows",
        json!({"template_file": "bad.yaml", "hardware": ["n1"],
               "template": "name: bad\nactions:\n  - name: boot\n    kind: teleport\n"}),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.body["code"], "invalid");
    let d = &bad.body["details"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_u64()),
        (Some("bad.yaml"), Some(4)),
        "{d}"
    );
    assert!(
        s.get("/api/v1/workflows?all=true")
            .as_array()
            .unwrap()
            .is_empty()
    );

    // By selector, and refused on a busy machine.
    let r = s.post(
        "/api/v1/workflows",
        json!({"template_file": "t.yaml", "template": TEMPLATE, "selector": ["role=cp"],
               "server_url": "http://10.9.0.1:8080"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created: Vec<WorkflowView> = serde_json::from_value(r.body).unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].machine, "n1");
    let id = created[0].id.clone();
    assert_eq!(s.create(&["n1"]).status, 409);
    assert_eq!(s.create(&["n9"]).status, 404);

    let listed: Vec<WorkflowView> = serde_json::from_value(s.get("/api/v1/workflows")).unwrap();
    assert_eq!(listed.iter().map(|w| &w.id).collect::<Vec<_>>(), [&id]);
    let shown = view(s.get("/api/v1/workflows/n1"));
    assert_eq!(shown.id, id);
    assert!(shown.created.ends_with('Z') && shown.created.contains('T'));
    assert_eq!(
        view(s.get(&format!("/api/v1/workflows/{id}"))).machine,
        "n1"
    );
    let missing = s.call("GET", "/api/v1/workflows/nope", Some(&s.admin), None);
    assert_eq!(missing.status, 404);

    let logs: LogPage = serde_json::from_value(s.get("/api/v1/workflows/n1/logs?after=0")).unwrap();
    assert_eq!(
        (logs.workflow.as_str(), logs.lines.len(), logs.ended),
        (id.as_str(), 0, false)
    );
    // The agent's lines (as its reports store them), a page at a time.
    let store = kiln_store::open_sqlite(&s.data).unwrap();
    let lines = ["one", "two", "three"].map(String::from);
    store
        .with_workflow(kiln_store::WorkflowKey::Id(&id), |_, tx| {
            tx.log(&id, 0, 1, 1_000, &lines)
        })
        .unwrap();
    let logs: LogPage = serde_json::from_value(s.get("/api/v1/workflows/n1/logs")).unwrap();
    let texts: Vec<&str> = logs.lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(
        (logs.lines[0].action.as_str(), logs.lines[0].attempt),
        ("boot", 1)
    );
    assert_eq!(logs.lines[0].at, "1970-01-01T00:00:01.000Z");
    let next: LogPage =
        serde_json::from_value(s.get(&format!("/api/v1/workflows/{id}/logs?after={}", logs.after)))
            .unwrap();
    assert!(next.lines.is_empty());

    // Retry wants an ended workflow; cancel ends it (once).
    assert_eq!(s.post("/api/v1/workflows/n1/retry", json!({})).status, 409);
    let c = s.post(
        "/api/v1/workflows/n1/cancel",
        json!({"reason": "test over"}),
    );
    assert_eq!(c.status, 200, "{}", c.body);
    let cancelled = view(c.body);
    assert_eq!(cancelled.state.to_string(), "failed");
    assert!(
        cancelled.message.contains("test over"),
        "{}",
        cancelled.message
    );
    let again = s.post(&format!("/api/v1/workflows/{id}/cancel"), json!({}));
    assert_eq!(again.status, 409);
    assert!(
        again.body["message"].as_str().unwrap().starts_with(&id),
        "{}",
        again.body
    );
    let ended: LogPage = serde_json::from_value(s.get("/api/v1/workflows/n1/logs")).unwrap();
    assert!(ended.ended);

    let r = s.post(
        &format!("/api/v1/workflows/{id}/retry"),
        json!({"no_power": true}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let retried = view(r.body);
    assert_eq!(retried.retry_of.as_deref(), Some(id.as_str()));
    assert_eq!(retried.state.to_string(), "pending");
    assert_eq!(s.get("/api/v1/workflows").as_array().unwrap().len(), 1);
    assert_eq!(
        s.get("/api/v1/workflows?all=true")
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let cancelled_events = s.events_of("machine=n1", "workflow.cancelled", 1);
    assert_eq!(cancelled_events.len(), 1);
    assert!(cancelled_events[0].at.ends_with('Z'));
}

#[test]
fn templates_are_listed_and_validated() {
    let s = Server::start();
    let shipped: Vec<TemplateInfo> = serde_json::from_value(s.get("/api/v1/templates")).unwrap();
    let wipe = shipped.iter().find(|t| t.file == "wipe-disk.yaml").unwrap();
    assert!(!wipe.actions.is_empty() && wipe.source.contains("actions"));

    let r = s.post(
        "/api/v1/templates/validate",
        json!({"file_name": "t.yaml", "template": TEMPLATE}),
    );
    let ok: TemplateCheck = serde_json::from_value(r.body).unwrap();
    assert!(ok.valid);
    assert_eq!(ok.name.as_deref(), Some("reach-agent"));
    let r = s.post(
        "/api/v1/templates/validate",
        json!({"file_name": "bad.yaml", "template": "name: x\nactions: []\nextra: 1\n"}),
    );
    let bad: TemplateCheck = serde_json::from_value(r.body).unwrap();
    assert!(!bad.valid && !bad.diagnostics.is_empty());
    assert!(
        bad.diagnostics
            .iter()
            .all(|d| d.file.as_deref() == Some("bad.yaml") && d.line.is_some())
    );
}

#[test]
fn the_event_stream_delivers_new_events_and_ends_at_shutdown() {
    let mut s = Server::start();
    s.enroll();
    let (tx, rx) = mpsc::channel::<Option<EventView>>();
    let resp = s
        .agent
        .get(&format!("{}/api/v1/events/stream?machine=n2", s.base))
        .header("authorization", &format!("Bearer {}", s.admin))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let reader = std::thread::spawn(move || {
        let mut decoder = SseDecoder::default();
        for line in std::io::BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = decoder.push_line(&line) {
                assert_eq!(f.event, kiln_api::events::SSE_EVENT);
                let e: EventView = serde_json::from_str(&f.data).unwrap();
                assert_eq!(f.id.as_deref(), Some(e.id.to_string().as_str()));
                let _ = tx.send(Some(e));
            }
        }
        let _ = tx.send(None); // the stream ended
    });

    // n1's workflow is not n2's: only n2's event comes through.
    assert_eq!(s.create(&["n1"]).status, 201);
    assert_eq!(s.create(&["n2"]).status, 201);
    let e = rx
        .recv_timeout(PATIENCE)
        .unwrap()
        .expect("an event, not the end");
    assert_eq!(
        (e.machine.as_deref(), e.kind.as_str()),
        (Some("n2"), "workflow.created")
    );

    // The list agrees, and `after` pages on from an id.
    let listed: Vec<EventView> =
        serde_json::from_value(s.get("/api/v1/events?machine=n2&last=1")).unwrap();
    assert_eq!(listed, std::slice::from_ref(&e));
    let later: Vec<EventView> =
        serde_json::from_value(s.get(&format!("/api/v1/events?after={}", e.id))).unwrap();
    assert!(later.iter().all(|x| x.id > e.id));
    let unknown = s.call("GET", "/api/v1/events?machine=zz", Some(&s.admin), None);
    assert_eq!(unknown.status, 404);

    s.stop();
    loop {
        match rx
            .recv_timeout(PATIENCE)
            .expect("the stream ends at shutdown")
        {
            None => break,
            Some(e) => assert_eq!(e.machine.as_deref(), Some("n2")),
        }
    }
    reader.join().unwrap();
}

#[test]
fn a_revoked_tokens_event_stream_ends() {
    let s = Server::start();
    let token = s.token("wall-screen", TokenScope::ReadOnly);
    let resp = s
        .agent
        .get(&format!("{}/api/v1/events/stream", s.base))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(resp.into_body().into_reader()).lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = tx.send(()); // the stream ended
    });
    // Still open while the token is good.
    assert!(rx.recv_timeout(Duration::from_secs(3)).is_err());
    // As `kiln token revoke` does it: straight in the store, by name.
    assert_eq!(s.store().revoke_api_token("wall-screen", 2).unwrap(), 1);
    rx.recv_timeout(PATIENCE)
        .expect("the stream of a revoked token ends");
    reader.join().unwrap();
}

#[test]
fn every_route_refuses_a_missing_token_and_changes_need_an_admin_one() {
    let s = Server::start();
    s.enroll();
    let read_only = s.token("test", TokenScope::ReadOnly);
    let reads = [
        "/api/v1/workflows",
        "/api/v1/workflows/n1",
        "/api/v1/workflows/n1/logs",
        "/api/v1/templates",
        "/api/v1/events",
        "/api/v1/events/stream",
    ];
    let changes = [
        "/api/v1/workflows",
        "/api/v1/workflows/n1/cancel",
        "/api/v1/workflows/n1/retry",
    ];
    for path in reads {
        let r = s.call("GET", path, None, None);
        assert_eq!(r.status, 401, "GET {path}");
        assert_eq!(r.body["code"], "unauthorized");
    }
    for path in changes {
        let r = s.call("POST", path, None, Some(json!({})));
        assert_eq!(r.status, 401, "POST {path}");
        let r = s.call("POST", path, Some(&read_only), Some(json!({})));
        assert_eq!(r.status, 403, "POST {path}: {}", r.body);
        assert_eq!(r.body["code"], "forbidden");
    }
    // A read-only token reads (the stream is left out: it would not end), and checks a
    // template: a POST that changes nothing.
    for path in ["/api/v1/workflows", "/api/v1/templates", "/api/v1/events"] {
        let r = s.call("GET", path, Some(&read_only), None);
        assert_eq!(r.status, 200, "{path}");
    }
    let r = s.call("POST", "/api/v1/templates/validate", None, Some(json!({})));
    assert_eq!(r.status, 401, "{}", r.body);
    let check = json!({"file_name": "t.yaml", "template": TEMPLATE});
    let r = s.call(
        "POST",
        "/api/v1/templates/validate",
        Some(&read_only),
        Some(check),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        s.get("/api/v1/workflows?all=true")
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );

    // Every refusal is an event naming what was refused.
    let expected = reads.len() + 2 * changes.len() + 1;
    let refused = s.events_of("last=1000", "api.refused", expected);
    assert_eq!(refused.len(), expected);
    assert!(refused.iter().any(|e| matches!(
        &e.data,
        Some(kiln_api::EventData::ApiRefused { method, path, .. })
            if method == "POST" && path == "/api/v1/workflows/n1/cancel"
    )));

    // The OpenAPI document describes every route, each with its own operation id.
    let doc = s.get("/api/v1/openapi.json");
    for (path, method, op) in [
        ("/api/v1/workflows", "get", "workflow_list"),
        ("/api/v1/workflows", "post", "workflow_create"),
        ("/api/v1/workflows/{id}", "get", "workflow_get"),
        ("/api/v1/workflows/{id}/logs", "get", "workflow_logs"),
        ("/api/v1/workflows/{id}/cancel", "post", "workflow_cancel"),
        ("/api/v1/workflows/{id}/retry", "post", "workflow_retry"),
        ("/api/v1/templates", "get", "template_list"),
        ("/api/v1/templates/validate", "post", "template_validate"),
        ("/api/v1/events", "get", "event_list"),
        ("/api/v1/events/stream", "get", "event_stream"),
        (
            "/api/v1/hardware/{name}/inventory",
            "get",
            "hardware_inventory",
        ),
    ] {
        assert_eq!(
            doc["paths"][path][method]["operationId"], op,
            "{method} {path}"
        );
    }
    assert!(doc["components"]["schemas"]["WorkflowView"].is_object());
    // Events carry their typed data, described in the document too.
    let data = &doc["components"]["schemas"]["EventData"];
    assert!(
        data["oneOf"].as_array().is_some_and(|v| v.len() == 24),
        "{data}"
    );
}
