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

#[test]
fn discovered_macs_are_listed_hinted_at_and_enrolled_from_a_pool() {
    let s = Server::start();
    enroll(&s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stranger = kiln_model::DiscoveredMac {
        mac: "52:54:00:bb:00:07".parse().unwrap(),
        first_seen_ms: now - 100_000,
        last_seen_ms: now - 90_000,
        count: 4,
        client: kiln_model::event::DhcpClient::Pxe,
        arch: Some(0),
        vendor_class: Some("PXEClient:Arch:00000:UNDI:002001".into()),
        user_class: None,
        inspection: None,
    };
    let store = s.store();
    store.record_discovered(&[stranger]).unwrap();
    store
        .append_events(&[
            at(
                now - 300_000,
                EventData::WorkflowCreated {
                    workflow: "wf-1".into(),
                    template: "t".into(),
                    retry_of: None,
                },
            ),
            at(
                now - 299_000,
                EventData::BmcDone {
                    task: BmcTask::Netboot,
                    result: "powered on".into(),
                },
            ),
        ])
        .unwrap();
    let (status, list) = get(&s, "/api/v1/discovered");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["mac"], "52:54:00:bb:00:07");
    assert_eq!(list[0]["count"], 4);

    // The machine whose NIC never asked: the stranger is the first suspect.
    let t = get(&s, "/api/v1/hardware/n1/timeline").1;
    let cause = t["diagnosis"]["causes"][0].as_str().unwrap();
    assert!(
        cause.contains("52:54:00:bb:00:07") && cause.contains("differs from hardware.csv"),
        "{t}"
    );

    let bad = json!({"pool": "10.9.0.50-10.9.0.40/24"});
    let (status, err) = s.request_json(
        "POST",
        "/api/v1/discovered/enroll",
        Some(&s.admin),
        Some(&bad),
    );
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["details"][0]["field"], "pool");
    let req = json!({"pool": "10.9.0.50-10.9.0.60/24", "gateway": "10.9.0.1", "rules": ["firmware=bios:boot=legacy"]});
    let (status, out) = s.request_json(
        "POST",
        "/api/v1/discovered/enroll",
        Some(&s.read_only),
        Some(&req),
    );
    assert_eq!(status, 403, "a read-only token enrols nothing: {out}");
    let (status, out) = s.request_json(
        "POST",
        "/api/v1/discovered/enroll",
        Some(&s.admin),
        Some(&req),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["added"], json!(["node-525400bb0007"]));
    let hw = get(&s, "/api/v1/hardware/node-525400bb0007").1;
    assert_eq!(
        (hw["ip"].as_str(), hw["labels"]["boot"].as_str()),
        (Some("10.9.0.50"), Some("legacy"))
    );
    assert_eq!(get(&s, "/api/v1/discovered").1, json!([]));
    let doc = get(&s, kiln_api::routes::OPENAPI).1;
    assert_eq!(
        doc["paths"]["/api/v1/discovered"]["get"]["operationId"],
        "discovered_list"
    );
}
