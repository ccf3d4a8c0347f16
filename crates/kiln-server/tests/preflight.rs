//! `POST /api/v1/preflight` in-process: rows located `FILE:LINE`, an unreachable BMC bounded
//! in time, a missing image, the server's own set-up; read-only tokens may ask; nothing
//! changes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::Server;

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
m-gone,ipmi://127.0.0.1:9,admin,not-shown-secret,52:54:00:ab:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
m-nobmc,,,,52:54:00:ab:00:02,127.0.0.12,255.0.0.0,,,role=spare,/dev/vda
";

fn rows<'a>(report: &'a Value, machine: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["machine"].as_str() == Some(machine))
        .collect()
}

fn server_row<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["machine"].is_null())
        .unwrap_or_else(|| panic!("no {check} row in {report:#}"))
}

#[test]
fn rows_name_their_line_and_a_dead_bmc_or_missing_image_fails() {
    let s = Server::start();
    let read_only = s.token("ro", kiln_api::TokenScope::ReadOnly);
    let template = "name: t\nactions:\n  - name: img\n    kind: image2disk\n    with:\n      url: '{{ images[\"test-os\"].url }}'\n";
    let body = json!({
        "csv": {"file_name": "rack.csv", "text": CSV},
        "image": "no-such-image",
        "template": {"file_name": "install.yaml", "text": template},
    });
    let started = Instant::now();
    let (status, report) =
        s.request_json("POST", "/api/v1/preflight", Some(&read_only), Some(&body));
    assert_eq!(status, 200, "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "an unreachable BMC is bounded: {:?}",
        started.elapsed()
    );
    let gone = rows(&report, "m-gone");
    assert_eq!(gone[0]["check"], "machine_address");
    assert_eq!(
        gone[0]["status"], "warn",
        "10.9.0.11 is off Kiln's 127.0.0.1: {report:#}"
    );
    assert_eq!(gone[1]["check"], "bmc_reachable");
    assert_eq!(gone[1]["status"], "fail", "{report:#}");
    assert_eq!(gone[1]["source"], "rack.csv:2");
    let nobmc = rows(&report, "m-nobmc");
    assert_eq!(nobmc[0]["status"], "ok", "{report:#}");
    assert_eq!(nobmc[1]["check"], "bmc_reachable");
    assert_eq!(nobmc[1]["status"], "warn");
    assert_eq!(nobmc[1]["source"], "rack.csv:3");

    let images: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "image")
        .collect();
    assert_eq!(images.len(), 2, "{report:#}");
    assert_eq!(images[0]["source"], "install.yaml:6");
    assert!(images.iter().all(|i| i["status"] == "fail"), "{report:#}");
    assert!(
        images[1]["detail"]
            .as_str()
            .unwrap()
            .contains("no-such-image"),
        "{report:#}"
    );
    // The test server's artifacts directory is empty.
    let artifacts = server_row(&report, "artifacts");
    assert_eq!(artifacts["status"], "fail");
    assert!(
        artifacts["detail"]
            .as_str()
            .unwrap()
            .contains("missing or empty: vmlinuz, initrd.img"),
        "{artifacts}"
    );
    assert_eq!(server_row(&report, "other_dhcp")["status"], "warn");
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .count();
    assert_eq!(report["failed"], failed);
    assert!(!report.to_string().contains("not-shown-secret"));
    // Nothing was enrolled.
    let (_, hw) = s.request_json("GET", "/api/v1/hardware", Some(&s.admin), None);
    assert_eq!(hw, json!([]));
}

#[test]
fn a_bad_file_is_refused_with_located_problems() {
    let s = Server::start();
    let body =
        json!({"csv": {"file_name": "rack.csv", "text": CSV.replace("10.9.0.11,", "10.9.0.999,")}});
    let (status, err) = s.request_json("POST", "/api/v1/preflight", Some(&s.admin), Some(&body));
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["details"][0]["file"], "rack.csv");
    assert_eq!(err["details"][0]["line"], 2);
    let (status, err) = s.request_json(
        "POST",
        "/api/v1/preflight",
        Some(&s.admin),
        Some(&json!({"selector": ["role=nothing"]})),
    );
    assert_eq!(status, 422, "{err}");
}

fn example(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusters");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn a_cluster_spec_is_checked_on_the_machines_it_would_take() {
    let s = Server::start();
    // examples/clusters/hardware.csv without BMCs: nothing to reach from a test.
    let csv: String = example("hardware.csv")
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut cells: Vec<&str> = line.split(',').collect();
            if i > 0 {
                cells[1..4].fill("");
            }
            format!("{}\n", cells.join(","))
        })
        .collect();
    let (status, v) = s.request_json(
        "POST",
        "/api/v1/hardware",
        Some(&s.admin),
        Some(&json!({"file_name": "hardware.csv", "csv": csv})),
    );
    assert_eq!(status, 200, "{v}");
    let spec = example("three-node.kiln.yaml");
    let ask = |text: &str| {
        let body = json!({"cluster": {"file_name": "three-node.kiln.yaml", "text": text}, "no_dhcp_probe": true});
        s.request_json("POST", "/api/v1/preflight", Some(&s.admin), Some(&body))
    };
    let (status, report) = ask(&spec);
    assert_eq!(status, 200, "{report}");
    let checks = report["checks"].as_array().unwrap();
    let machines: std::collections::BTreeSet<&str> = checks
        .iter()
        .filter_map(|c| c["machine"].as_str())
        .collect();
    assert_eq!(
        machines.len(),
        3,
        "one control plane, two workers: {report:#}"
    );
    assert!(
        checks
            .iter()
            .filter(|c| !c["machine"].is_null())
            .all(|c| c["source"] == "three-node.kiln.yaml"),
        "{report:#}"
    );
    let image = checks.iter().find(|c| c["check"] == "image").unwrap();
    assert_eq!(image["status"], "fail", "never imported: {image}");
    assert_eq!(image["source"], "three-node.kiln.yaml");
    assert!(
        !checks.iter().any(|c| c["check"] == "other_dhcp"),
        "no probe asked"
    );
    // More workers than machines: the placement itself fails, as a row.
    let (status, report) = ask(&spec.replace("count: 2", "count: 9"));
    assert_eq!(status, 200, "{report}");
    let first = &report["checks"][0];
    assert_eq!(
        (first["check"].as_str(), first["status"].as_str()),
        (Some("selection"), Some("fail")),
        "{report:#}"
    );
    // Nothing was created.
    let (_, clusters) = s.request_json("GET", "/api/v1/clusters", Some(&s.admin), None);
    assert_eq!(clusters, json!([]));
}

#[test]
fn one_preflight_runs_at_a_time() {
    let s = Server::start();
    // A BMC that never answers (a UDP socket that reads nothing) keeps the first run busy
    // for its timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let csv = CSV.replace(
        "ipmi://127.0.0.1:9",
        &format!("ipmi://{}", silent.local_addr().unwrap()),
    );
    let body = json!({"csv": {"file_name": "rack.csv", "text": csv}});
    std::thread::scope(|scope| {
        let first = scope
            .spawn(|| s.request_json("POST", "/api/v1/preflight", Some(&s.admin), Some(&body)));
        std::thread::sleep(Duration::from_millis(700));
        let (status, busy) =
            s.request_json("POST", "/api/v1/preflight", Some(&s.read_only), Some(&body));
        assert_eq!(status, 429, "{busy}");
        assert!(
            busy["message"]
                .as_str()
                .unwrap()
                .contains("already running"),
            "{busy}"
        );
        assert!(
            !first.is_finished(),
            "the first run outlived the second call"
        );
        let (status, report) = first.join().unwrap();
        assert_eq!(status, 200, "{report}");
    });
    // Once it has ended, the next may run.
    let (status, _) = s.request_json("POST", "/api/v1/preflight", Some(&s.admin), Some(&body));
    assert_eq!(status, 200);
}
