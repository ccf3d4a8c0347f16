//! `/metrics` on a running server: every family Kiln exports says what it is (`# HELP`,
//! `# TYPE`), the build is there, machines are counted by state, and the bytes of served files
//! by root. Its own test binary: the metrics recorder is process-wide.

mod common;

use std::time::{Duration, Instant};

use common::{PATIENCE, Server};
use serde_json::json;

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
m1,,,,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,rack=a,/dev/sda
";

fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    ureq::get(&url)
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap()
}

/// The value of the sample `series` (name with its labels, as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `until` holds of the text (the states are counted every few seconds).
fn scrape_until(port: u16, until: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(port);
        if until(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_describe_themselves_and_count_machines_builds_and_bytes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kernel = vec![7u8; 300_000];
    let server = Server::start_with(|o| {
        o.http_port = port;
        o.version = "9.8.7 (abc123)".into();
        std::fs::write(o.artifacts.join("vmlinuz"), &kernel).unwrap();
    });
    let enroll = json!({"file_name": "rack.csv", "csv": CSV});
    let (status, _) = server.request_json(
        "POST",
        "/api/v1/hardware",
        Some(&server.admin),
        Some(&enroll),
    );
    assert_eq!(status, 200);
    let got = ureq::get(&format!("http://127.0.0.1:{port}/artifacts/vmlinuz"))
        .call()
        .unwrap()
        .into_body()
        .read_to_vec()
        .unwrap();
    assert_eq!(got.len(), kernel.len());

    let text = scrape_until(port, |t| {
        sample(t, "kiln_machines{state=\"idle\"}") == Some(1.0)
            && sample(t, "kiln_http_file_bytes_total{root=\"artifacts\"}").is_some()
    });
    assert_eq!(
        sample(
            &text,
            "kiln_build_info{version=\"9.8.7\",commit=\"abc123\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kiln_machines{state=\"idle\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kiln_machines{state=\"running\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kiln_workflows{state=\"succeeded\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kiln_http_file_bytes_total{root=\"artifacts\"}"),
        Some(kernel.len() as f64),
        "{text}"
    );
    // Every family shown is described: HELP and TYPE lines, and listed in kiln_server::meters.
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("kiln_"))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    assert!(families.len() >= 5, "{families:?}");
    for f in &families {
        assert!(
            text.contains(&format!("# HELP {f} ")),
            "no HELP for {f}:\n{text}"
        );
        assert!(text.contains(&format!("# TYPE {f} ")), "no TYPE for {f}");
        assert!(
            kiln_server::meters::METRICS.iter().any(|m| m.0 == *f),
            "{f} is not listed in kiln_server::meters::METRICS"
        );
    }
}
