//! `kiln serve --config FILE` as the service runs it: the precedence of flags, `KILN_*`
//! variables, the file and the defaults (seen through `--print-config`), located errors,
//! and `--log-format json`.

use std::process::{Command, Output};

fn kiln_serve(config: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kiln.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("serve").arg("--config").arg(&file).args(args);
    // Only the variables a case sets: none inherited from whoever runs the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("KILN_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("running kiln")
}

/// The `KEY = VALUE  # SOURCE` line of --print-config for KEY.
fn setting(out: &Output, key: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"));
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let config = "address = \"10.9.0.1\"\nhttp_port = 9000\ntftp_port = 6900\n\
                  agent_tls_port = 9443\nlog_format = \"json\"\n";
    let out = kiln_serve(
        config,
        &["--print-config", "--http-port", "9001"],
        &[("KILN_HTTP_PORT", "9002"), ("KILN_TFTP_PORT", "6901")],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        setting(&out, "http_port"),
        "http_port = \"9001\" # command line"
    );
    assert_eq!(
        setting(&out, "tftp_port"),
        "tftp_port = \"6901\" # environment"
    );
    assert_eq!(
        setting(&out, "agent_tls_port"),
        "agent_tls_port = \"9443\" # file"
    );
    assert_eq!(setting(&out, "address"), "address = \"10.9.0.1\" # file");
    assert_eq!(setting(&out, "log_format"), "log_format = \"json\" # file");
    assert_eq!(
        setting(&out, "lease_secs"),
        "lease_secs = \"86400\" # default"
    );
}

#[test]
fn a_bad_value_names_file_line_column_and_key() {
    let out = kiln_serve(
        "address = \"10.9.0.1\"\n\nhttp_idle_timeout = \"forever\"\n",
        &[],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiln.toml:3:21: http_idle_timeout: invalid value 'forever'"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_refused_before_anything_starts() {
    let out = kiln_serve("adress = \"10.9.0.1\"\n", &[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln.toml:1:1: adress: unknown key"), "{err}");
}

#[test]
fn json_log_lines_are_json_objects() {
    // DHCP off and ports 0: nothing to bind that needs root; the first log line is enough,
    // and serve then fails on the missing TFTP root, which ends the process.
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "address = \"127.0.0.1\"\ndhcp_mode = \"off\"\nhttp_port = 0\nagent_tls_port = 0\n\
         tftp_port = 0\ntftp_root = \"/nonexistent-kiln-test\"\nlog_format = \"json\"\n\
         data_dir = \"{}\"\n",
        data.path().display()
    );
    let out = kiln_serve(&config, &[], &[]);
    assert!(!out.status.success(), "the TFTP root is missing");
    let err = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<&str> = err.lines().filter(|l| !l.starts_with("kiln: ")).collect();
    assert!(!logs.is_empty(), "{err}");
    for line in logs {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{err}"));
        assert!(v["fields"]["message"].is_string(), "{v}");
        assert!(v["level"].is_string(), "{v}");
    }
    assert!(
        data.path().join("kiln.db").exists(),
        "the file's data_dir holds the store: {err}"
    );
}
