//! The `kiln` binary as CI drives it: `-o json` with RFC 3339 times, exit statuses of the
//! commands that wait, cancel and retry, completions, the man page and `--version`. The
//! commands are clients of a `kiln serve` each test starts (tests/common).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;
use serde_json::Value;

const HARDWARE: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,,,,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
n2,,,,52:54:00:aa:00:02,10.9.0.12,255.255.255.0,10.9.0.1,10.9.0.1,role=spare,/dev/vda
";

const TEMPLATE: &str = "name: reach-agent
timeout: 1h
actions:
  - name: boot
    kind: reboot
";

const SPEC: &str = "kind: KilnCluster
name: c1
kubernetesVersion: \"1.30\"
controlPlane:
  count: 1
  endpoint: 10.9.0.90
  selector: {role: cp}
image: http://10.9.0.1/os.raw.zst#sha256=0000000000000000000000000000000000000000000000000000000000000000
";

const SERVER: &str = "http://10.9.0.1:8080";

fn kiln(data: &Path, args: &[&str]) -> Output {
    kiln_as(data, None, args)
}

/// `kiln ARGS --data-dir DATA`, with `KILN_TOKEN=token` when given (else the data dir's
/// admin token).
fn kiln_as(data: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("KILN_DATA_DIR")
        .env_remove("KILN_SERVER")
        .env_remove("KILN_TOKEN");
    if let Some(t) = token {
        cmd.env("KILN_TOKEN", t);
    }
    cmd.output().expect("running kiln")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("kiln exits, not killed")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON document of a command that must succeed.
fn json(data: &Path, args: &[&str]) -> Value {
    let o = kiln(data, args);
    assert_eq!(
        code(&o),
        0,
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn is_rfc3339(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s[..4].parse::<u32>().is_ok()
}

/// A temp dir with the input files, a server on `DIR/data`, and n1, n2 enrolled. The
/// server is dropped (killed) before the temp dir.
fn setup() -> (Server, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("hardware.csv");
    std::fs::write(&csv, HARDWARE).unwrap();
    std::fs::write(dir.path().join("t.yaml"), TEMPLATE).unwrap();
    std::fs::write(dir.path().join("c1.yaml"), SPEC).unwrap();
    let server = Server::start(&data);
    let v = json(&data, &["enroll", csv.to_str().unwrap(), "-o", "json"]);
    assert_eq!(v["enrolled"], true);
    assert_eq!(v["added"], serde_json::json!(["n1", "n2"]));
    (server, dir, data)
}

#[test]
fn without_a_server_a_command_says_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("hardware.csv");
    std::fs::write(&csv, HARDWARE).unwrap();
    for args in [
        vec!["hardware", "list"],
        vec!["enroll", csv.to_str().unwrap()],
    ] {
        let o = kiln(&data, &args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains("no Kiln server found")
                && err.contains("--server")
                && err.contains("KILN_SERVER"),
            "{args:?}: {err}"
        );
    }
    assert!(!data.join("kiln.db").exists(), "the client made no store");
}

#[test]
fn a_read_only_token_reads_but_every_change_is_refused_and_recorded() {
    let (_server, _dir, data) = setup();
    let made = kiln(&data, &["token", "create", "ci", "--scope", "read-only"]);
    assert_eq!(code(&made), 0, "{}", stderr(&made));
    let token = stdout(&made).trim().to_string();
    assert!(stderr(&made).contains("read-only"), "{}", stderr(&made));

    let list = kiln_as(&data, Some(&token), &["hardware", "list", "-o", "json"]);
    assert_eq!(code(&list), 0, "a read is allowed: {}", stderr(&list));
    let changes: [&[&str]; 3] = [
        &["hardware", "netboot", "n1", "on"],
        &["hardware", "update", "n1", "--label", "rack=r4"],
        &["hardware", "delete", "n2"],
    ];
    for args in changes {
        let o = kiln_as(&data, Some(&token), args);
        assert_eq!(code(&o), 1, "{args:?} must be refused: {}", stdout(&o));
        assert!(stderr(&o).contains("read-only"), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains(&token), "the token is never shown");
    }
    // Nothing changed.
    let n1 = json(&data, &["hardware", "show", "n1", "-o", "json"]);
    assert_eq!(
        (n1["netboot"].as_bool(), n1["labels"]["rack"].as_str()),
        (Some(false), None)
    );
    assert_eq!(
        json(&data, &["hardware", "list", "-o", "json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A token that is not one (or no longer is): 401, also for reads.
    let o = kiln_as(&data, Some("kiln_bogus_0000"), &["hardware", "list"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("unknown or revoked token"),
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&kiln(&data, &["token", "revoke", "ci"])), 0);
    let o = kiln_as(&data, Some(&token), &["hardware", "list"]);
    assert_eq!(code(&o), 1, "revoked: {}", stdout(&o));

    // Each refusal is an event (written in the background: wait for it), without the token.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let events = loop {
        let events = stdout(&kiln(&data, &["events", "--last", "1000"]));
        if events.matches("api.refused").count() >= 5 || std::time::Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(events.matches("api.refused").count(), 5, "{events}");
    assert!(!events.contains(&token), "{events}");
}

#[test]
fn hardware_update_and_delete() {
    let (_server, dir, data) = setup();
    // Labels: set, change, remove; the rest of the machine is untouched.
    let up = json(
        &data,
        &[
            "hardware", "update", "n2", "--label", "rack=r4", "--label", "role-", "-o", "json",
        ],
    );
    assert_eq!(up["labels"], serde_json::json!({"rack": "r4"}), "{up}");
    assert_eq!(up["mac"], "52:54:00:aa:00:02");
    let shown = json(&data, &["hardware", "show", "n2", "-o", "json"]);
    assert_eq!(shown["labels"], up["labels"]);
    // Bad input names the label; a machine without a BMC has no credentials to change.
    let o = kiln(&data, &["hardware", "update", "n2", "--label", "bad key=x"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("bad key"), "{}", stderr(&o));
    let o = kiln(
        &data,
        &["hardware", "update", "n2", "--bmc-username", "root"],
    );
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("has no BMC"), "{}", stderr(&o));
    assert_eq!(
        code(&kiln(
            &data,
            &["hardware", "update", "nope", "--label", "a=b"]
        )),
        1
    );

    // Netboot on and off.
    let o = kiln(&data, &["hardware", "netboot", "n2", "on"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "n2: netboot on\n"));
    assert_eq!(
        json(&data, &["hardware", "show", "n2", "-o", "json"])["netboot"],
        true
    );

    // Delete: refused while the machine has an unfinished workflow, done once it has none.
    let t = dir.path().join("t.yaml");
    let o = kiln(
        &data,
        &[
            "workflow",
            "create",
            "--template",
            t.to_str().unwrap(),
            "--hardware",
            "n1",
            "--server-url",
            SERVER,
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = kiln(&data, &["hardware", "delete", "n1"]);
    assert_eq!(code(&o), 1, "n1 has a pending workflow");
    assert!(stderr(&o).contains("n1"), "{}", stderr(&o));
    let o = kiln(&data, &["hardware", "delete", "n2"]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "n2: deleted\n"),
        "{}",
        stderr(&o)
    );
    let left = json(&data, &["hardware", "list", "-o", "json"]);
    let names: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1"]);
    let o = kiln(&data, &["hardware", "delete", "n2"]);
    assert_eq!(code(&o), 1, "already gone");
    assert!(
        stderr(&o).contains("no machine named \"n2\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn enroll_json_names_each_problem_and_enrols_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data);
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        HARDWARE.replace("52:54:00:aa:00:02", "zz:54:00:aa:00:02"),
    )
    .unwrap();
    let o = kiln(&data, &["enroll", csv.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["enrolled"], false);
    let e = &v["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["field"].as_str()),
        (Some(3), Some("mac"))
    );
    assert!(e["column"].as_u64().unwrap() > 1, "{e}");
    let list = json(&data, &["hardware", "list", "-o", "json"]);
    assert_eq!(list, serde_json::json!([]), "nothing enrolled");

    // A column EKS Anywhere users add (notes) is a warning in the JSON, and the file enrols.
    let noted = dir.path().join("noted.csv");
    let text: String = HARDWARE
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}\n", if i == 0 { "notes" } else { "rack 4" }))
        .collect();
    std::fs::write(&noted, text).unwrap();
    let v = json(&data, &["enroll", noted.to_str().unwrap(), "-o", "json"]);
    assert_eq!(v["enrolled"], true);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(
        warnings[0]["message"].as_str().unwrap().contains("notes"),
        "{v}"
    );
}

#[test]
fn workflows_wait_cancel_and_retry_with_the_right_exit_status() {
    let (_server, dir, data) = setup();
    let t = dir.path().join("t.yaml");
    let t = t.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["workflow", "create", "--template", t, "--hardware", "n1"];
        args.extend_from_slice(&["--server-url", SERVER]);
        args.extend_from_slice(extra);
        kiln(&data, &args)
    };
    // Nothing serves the machine: --wait gives up at --timeout with status 3.
    let o = create(&["--wait", "--timeout", "1s", "-o", "json"]);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let last: Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(last["total"], 1);
    assert_eq!(last["running"].as_array().unwrap().len(), 1);

    let shown = json(&data, &["workflow", "show", "n1", "-o", "json"]);
    let id = shown["id"].as_str().unwrap().to_string();
    assert!(
        is_rfc3339(&shown["created"]) && is_rfc3339(&shown["deadline"]),
        "{shown}"
    );
    assert!(
        shown["duration_seconds"].as_f64().unwrap() >= 1.0,
        "{shown}"
    );
    assert_eq!(shown["state"], "pending");

    // A second workflow on a busy machine is refused.
    assert_ne!(code(&create(&[])), 0);
    // Watching a workflow that does not end: status 3 at the timeout.
    assert_eq!(
        code(&kiln(
            &data,
            &["workflow", "watch", "n1", "--timeout", "1s"]
        )),
        3
    );

    // Cancel frees the machine at once; watch then says it did not succeed.
    let cancelled = json(&data, &["workflow", "cancel", "n1", "-o", "json"]);
    assert_eq!(cancelled[0]["state"], "failed");
    assert!(
        cancelled[0]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(code(&kiln(&data, &["workflow", "watch", &id])), 1);
    assert_eq!(
        code(&kiln(&data, &["workflow", "cancel", &id])),
        1,
        "already ended"
    );

    // Retry renders a new workflow; the machine is busy again.
    let retried = json(
        &data,
        &[
            "workflow",
            "retry",
            &id,
            "--server-url",
            SERVER,
            "-o",
            "json",
        ],
    );
    assert_eq!(retried[0]["retry_of"], id.as_str());
    assert_eq!(retried[0]["state"], "pending");
    assert_ne!(code(&create(&[])), 0);
    let listed = json(&data, &["workflow", "list", "--all", "-o", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let events = kiln(&data, &["events", "n1"]);
    assert!(
        stdout(&events).contains("workflow.cancelled"),
        "{}",
        stdout(&events)
    );
}

#[test]
fn cluster_create_status_and_forced_delete_free_the_machines() {
    let (_server, dir, data) = setup();
    let spec = dir.path().join("c1.yaml");
    let spec = spec.to_str().unwrap();
    let out = dir.path().join("dry");
    let dry = json(
        &data,
        &[
            "cluster",
            "create",
            spec,
            "--dry-run",
            "--out-dir",
            out.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(dry["dry_run"], true);
    assert!(out.join("n1").join("user-data").is_file());
    assert!(
        json(&data, &["cluster", "list", "-o", "json"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let created = json(
        &data,
        &[
            "cluster",
            "create",
            spec,
            "--server-url",
            SERVER,
            "-o",
            "json",
        ],
    );
    assert_eq!(created["nodes"][0]["hostname"], "n1");
    let node_wf = created["nodes"][0]["workflow"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created["spares"], serde_json::json!(["n2"]));

    let o = kiln(
        &data,
        &[
            "cluster",
            "status",
            "c1",
            "--wait",
            "--timeout",
            "1s",
            "-o",
            "json",
        ],
    );
    assert_eq!(code(&o), 3, "still provisioning");
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["state"], "provisioning");
    assert_eq!(st["api_server_confirmed"], false, "nobody phoned home yet");

    // The admin kubeconfig is minted from the stored CA as soon as the cluster exists.
    let printed = stdout(&kiln(&data, &["cluster", "kubeconfig", "c1"]));
    assert!(printed.starts_with("apiVersion: v1\n"), "{printed}");
    assert!(
        printed.contains("current-context: kubernetes-admin@c1\n"),
        "{printed}"
    );
    assert!(printed.contains("client-key-data: "), "{printed}");
    let minted = json(&data, &["cluster", "kubeconfig", "c1", "-o", "json"]);
    assert_eq!(minted["server"], "https://10.9.0.90:6443");
    assert_eq!(minted["user"], "kubernetes-admin");
    assert_eq!(minted["group"], "kubeadm:cluster-admins", "Kubernetes 1.30");
    assert_ne!(
        minted["kubeconfig"].as_str().unwrap(),
        printed,
        "a new key each time"
    );
    let file = dir.path().join("conf").join("admin.conf");
    std::fs::create_dir(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "old").unwrap();
    let written = json(
        &data,
        &[
            "cluster",
            "kubeconfig",
            "c1",
            "--out",
            file.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(written["file"], file.to_str().unwrap());
    assert!(written["kubeconfig"].is_null(), "not printed with --out");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("name: kubernetes-admin@c1\n"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["admin.conf"], "no temporary file left");
    let o = kiln(&data, &["cluster", "kubeconfig", "nope"]);
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no cluster named \"nope\""));

    // Deleting an installing cluster needs --force, which cancels its node workflows.
    assert_ne!(code(&kiln(&data, &["cluster", "delete", "c1"])), 0);
    let deleted = json(&data, &["cluster", "delete", "c1", "--force", "-o", "json"]);
    assert_eq!(deleted["cancelled"], serde_json::json!([node_wf]));
    let wf = json(&data, &["workflow", "show", &node_wf, "-o", "json"]);
    assert_eq!(wf["state"], "failed");
    // The machine is free for a new workflow at once.
    let t = dir.path().join("t.yaml");
    let o = kiln(
        &data,
        &[
            "workflow",
            "create",
            "--template",
            t.to_str().unwrap(),
            "--hardware",
            "n1",
            "--server-url",
            SERVER,
        ],
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn version_completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let v = stdout(&kiln(dir.path(), &["--version"]));
    let commit = v
        .trim()
        .strip_prefix(concat!("kiln ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match head {
        Some(o) => assert_eq!(commit, String::from_utf8_lossy(&o.stdout).trim()),
        None => assert!(!commit.is_empty()),
    }
    let bash = stdout(&kiln(dir.path(), &["completions", "bash"]));
    assert!(
        bash.contains("_kiln()") && bash.contains("workflow"),
        "{bash}"
    );
    let man = stdout(&kiln(dir.path(), &["man"]));
    assert!(man.contains(".TH kiln 1"), "{man}");
    let pages = dir.path().join("man");
    assert_eq!(
        code(&kiln(
            dir.path(),
            &["man", "--out-dir", pages.to_str().unwrap()]
        )),
        0
    );
    assert!(pages.join("kiln-workflow-cancel.1").is_file());
}
