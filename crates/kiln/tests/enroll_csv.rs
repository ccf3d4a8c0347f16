//! `kiln enroll` on hardware.csv files in the shapes EKS Anywhere's docs and
//! test data use, run as the real binary against a `kiln serve` on a temp directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;

fn kiln(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("KILN_DATA_DIR")
        .env_remove("KILN_SERVER")
        .env_remove("KILN_TOKEN")
        .output()
        .expect("kiln runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `body` to `name` in `dir`; returns its path as text.
fn csv(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write csv");
    path.display().to_string()
}

#[test]
fn a_file_without_bmc_columns_enrolls_machines_without_bmcs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data);
    // EKS Anywhere's pkg/providers/tinkerbell/testdata/hardware_nobmc.csv shape,
    // with a dotted and an upper-case hyphenated MAC.
    let file = csv(
        dir.path(),
        "nobmc.csv",
        "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
         worker1,00:00:00:00:00:01,10.10.10.10,255.255.255.0,10.10.10.1,1.1.1.1,type=cp,/dev/sda\n\
         worker2,0000.0000.0002,10.10.10.11,255.255.255.0,10.10.10.1,1.1.1.1,type=worker,/dev/sda\n\
         worker3,00-00-00-00-00-0A,10.10.10.12,255.255.255.0,10.10.10.1,1.1.1.1,type=etcd,/dev/sda",
    );
    let out = kiln(&data, &["enroll", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "no warnings expected");

    let list = kiln(&data, &["hardware", "list", "-o", "json"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let machines: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let machines = machines.as_array().expect("an array");
    let mut seen: Vec<(String, String)> = machines
        .iter()
        .map(|m| {
            assert!(m["bmc"].is_null(), "{m}");
            (
                m["hostname"].as_str().unwrap().to_string(),
                m["mac"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let want = [
        ("worker1", "00:00:00:00:00:01"),
        ("worker2", "00:00:00:00:00:02"),
        ("worker3", "00:00:00:00:00:0a"),
    ]
    .map(|(h, m)| (h.to_string(), m.to_string()));
    assert_eq!(seen, want);
}

#[test]
fn unknown_columns_are_named_once_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data);
    // EKS Anywhere's test/e2e README inventory (vendor column), plus notes.
    let file = csv(
        dir.path(),
        "inventory.csv",
        "ip_address,gateway,nameservers,netmask,mac,hostname,vendor,bmc_ip,bmc_username,bmc_password,labels,disk,notes\n\
         10.24.32.110,10.24.32.1,8.8.8.8,255.255.255.0,3c:ec:ef:6e:a4:82,eksa-node01,supermicro,10.24.32.10,admin,s3cret-pw,type=cp,/dev/sda,rack 4\n\
         10.24.32.111,10.24.32.1,8.8.8.8,255.255.255.0,3c:ec:ef:6e:a5:7c,eksa-node02,supermicro,10.24.32.11,admin,s3cret-pw,type=worker,/dev/sda,rack 5\n",
    );
    let out = kiln(&data, &["enroll", &file]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{file}:1:53: warning: ignoring unknown columns \"vendor\", \"notes\" (EKS Anywhere ignores them too)\n"
        )
    );
    assert!(
        text(&out.stdout).contains("2 added"),
        "{}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("s3cret") && !text(&out.stdout).contains("s3cret"));
}

#[test]
fn a_placeholder_bmc_ip_fails_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data);
    let file = csv(
        dir.path(),
        "template.csv",
        "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
         eksa-cp01,10.10.44.1,root,pw,CC:48:3A:00:00:01,10.10.50.2,255.255.254.0,10.10.50.1,8.8.8.8|8.8.4.4,type=cp,/dev/sda\n\
         eksa-wk01,BMCIP,root,pw,CC:48:3A:00:00:02,10.10.50.3,255.255.254.0,10.10.50.1,8.8.8.8|8.8.4.4,type=worker,/dev/sda\n",
    );
    let out = kiln(&data, &["enroll", &file]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{file}:3:11: bmc_ip: \"BMCIP\" is not an IP address: expected an IP address"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was enrolled"), "{stderr}");
    // All or nothing: the valid first row was not stored either.
    let list = kiln(&data, &["hardware", "list", "-o", "json"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let machines: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(machines.as_array().map(Vec::len), Some(0), "{machines}");
}

#[test]
fn bmcs_whose_passwords_travel_readable_are_named_at_enrolment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data);
    let file = csv(
        dir.path(),
        "bmcs.csv",
        "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
         plain,redfish+http://10.10.44.1:8000,root,pw-plain-1,CC:48:3A:00:00:01,10.10.50.2,255.255.254.0,,,type=cp,/dev/sda\n\
         unverified,redfish+https://10.10.44.2,root,pw-unverified-2,CC:48:3A:00:00:02,10.10.50.3,255.255.254.0,,,kiln.dev/bmc-tls=insecure,/dev/sda\n\
         verified,redfish+https://10.10.44.3,root,pw-verified-3,CC:48:3A:00:00:03,10.10.50.4,255.255.254.0,,,type=worker,/dev/sda\n",
    );
    let out = kiln(&data, &["enroll", &file]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{file}:2:7: warning: plain: BMC redfish+http://10.10.44.1:8000 is reached over plain HTTP: its password travels readable (use redfish+https://)\n\
             {file}:3:105: warning: unverified: BMC redfish+https://10.10.44.2 is reached without certificate verification (kiln.dev/bmc-tls=insecure): its password travels readable to whoever answers in the BMC's place\n"
        )
    );
    assert!(
        text(&out.stdout).contains("3 added"),
        "{}",
        text(&out.stdout)
    );

    // The same warnings in JSON (a dry run: the machines are already there).
    let out = kiln(&data, &["enroll", "--dry-run", "-o", "json", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let warnings = outcome["warnings"].as_array().expect("warnings");
    let at: Vec<(u64, u64)> = warnings
        .iter()
        .map(|w| (w["line"].as_u64().unwrap(), w["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(at, [(2, 7), (3, 105)]);
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("plain: BMC redfish+http://10.10.44.1:8000 is reached over plain HTTP"),
        "{outcome}"
    );
    let all = format!("{stderr}{outcome}");
    assert!(!all.contains("pw-"), "a password was shown: {all}");
}
