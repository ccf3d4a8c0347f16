//! `kiln why`, `kiln discovered` and `kiln enroll --from-discovered` against a `kiln serve`:
//! JSON output and exit statuses.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;
use serde_json::Value;

const HARDWARE: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,,,,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
";

fn kiln(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("KILN_DATA_DIR")
        .env_remove("KILN_SERVER")
        .env_remove("KILN_TOKEN")
        .output()
        .expect("running kiln")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("kiln exits")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn why_discovered_and_enrolment_from_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("hardware.csv");
    std::fs::write(&csv, HARDWARE).unwrap();
    let _server = Server::start(&data);
    assert_eq!(code(&kiln(&data, &["enroll", csv.to_str().unwrap()])), 0);

    // Nothing recorded yet: found, on time, exit 0.
    let o = kiln(&data, &["why", "n1", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let t = json(&o);
    assert_eq!(
        (t["machine"].as_str(), t["diagnosis"].is_null()),
        (Some("n1"), true)
    );
    let o = kiln(&data, &["why", "nope"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no machine named"));

    let o = kiln(&data, &["discovered", "-o", "json"]);
    assert_eq!((code(&o), json(&o)), (0, serde_json::json!([])));
    // Nothing discovered: nothing to enrol, the problem named, exit 1.
    let o = kiln(
        &data,
        &[
            "enroll",
            "--from-discovered",
            "--pool",
            "10.9.0.50-10.9.0.60/24",
            "-o",
            "json",
        ],
    );
    assert_eq!(code(&o), 1);
    assert_eq!(json(&o)["errors"][0]["field"], "macs");

    let store = kiln_store::open_sqlite(&data).unwrap();
    store
        .record_discovered(&[kiln_model::DiscoveredMac {
            mac: "52:54:00:bb:00:07".parse().unwrap(),
            first_seen_ms: 1,
            last_seen_ms: 2,
            count: 1,
            client: kiln_model::event::DhcpClient::Pxe,
            arch: Some(0),
            vendor_class: None,
            user_class: None,
            inspection: None,
        }])
        .unwrap();
    let o = kiln(&data, &["discovered"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("52:54:00:bb:00:07"));
    let o = kiln(
        &data,
        &[
            "enroll",
            "--from-discovered",
            "--pool",
            "10.9.0.50-10.9.0.60/24",
            "--rule",
            "arch=x86_64:role=worker",
            "-o",
            "json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["added"], serde_json::json!(["node-525400bb0007"]));
    let o = kiln(&data, &["discovered", "-o", "json"]);
    assert_eq!(json(&o), serde_json::json!([]));
}
