//! `GET /api/v1/hardware/{name}/timeline` (`kiln why`) and `GET /api/v1/discovered`
//! (`kiln discovered`) on an in-process server.

use kiln_model::Event;
use kiln_model::event::{BmcTask, EventData};
use serde_json::{Value, json};

mod common;
use common::Server;

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,10.9.1.11,admin,hunter2-secret,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
";

fn get(s: &Server, path: &str) -> (u16, Value) {
    s.request_json("GET", path, Some(&s.read_only), None)
}

fn enroll(s: &Server) {
    let body = json!({"file_name": "rack.csv", "csv": CSV});
    let (status, out) = s.request_json("POST", "/api/v1/hardware", Some(&s.admin), Some(&body));
    assert_eq!(status, 200, "{out}");
}

fn at(ms: u64, data: EventData) -> Event {
    Event {
        at_ms: ms,
        ..Event::of(data).with_machine("n1")
    }
}

#[test]
fn a_machine_powered_long_ago_without_dhcp_is_diagnosed_through_the_api() {
    let s = Server::start();
    enroll(&s);
    let (status, _) = get(&s, "/api/v1/hardware/nope/timeline");
    assert_eq!(status, 404);

    // Powered on through the BMC ten minutes ago; no DHCP since.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let long_ago = now - 600_000;
    let events = [
        at(
            long_ago,
            EventData::WorkflowCreated {
                workflow: "wf-9".into(),
                template: "debian".into(),
                retry_of: None,
            },
        ),
        at(
            long_ago + 1000,
            EventData::BmcPower {
                was: "off".into(),
                sending: "on".into(),
            },
        ),
        at(
            long_ago + 2000,
            EventData::BmcDone {
                task: BmcTask::Netboot,
                result: "was off: powered on (confirmed)".into(),
            },
        ),
    ];
    s.store().append_events(&events).unwrap();
    let (status, t) = get(&s, "/api/v1/hardware/n1/timeline");
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["workflow"], "wf-9");
    assert_eq!(t["phases"][0]["phase"], "power-on");
    assert_eq!(t["phases"][1]["phase"], "first-dhcp");
    assert_eq!(t["phases"][1]["status"], "running");
    assert_eq!(t["current"], 1);
    assert_eq!(t["diagnosis"]["phase"], "first-dhcp");
    let summary = t["diagnosis"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("powered on 59") && summary.ends_with("no DHCP from 52:54:00:aa:00:01"),
        "{summary}"
    );
    assert!(!t.to_string().contains("hunter2"), "{t}");

    let doc = get(&s, kiln_api::routes::OPENAPI).1;
    assert_eq!(
        doc["paths"]["/api/v1/hardware/{name}/timeline"]["get"]["operationId"],
        "hardware_timeline"
    );
    assert!(doc["components"]["schemas"]["TimelineView"].is_object());
}
