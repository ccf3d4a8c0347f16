//! The `kiln` binary as CI drives it: `-o json` with RFC 3339 times, exit statuses of the
//! commands that wait, cancel and retry, completions, the man page and `--version`.

use std::path::Path;
use std::process::{Command, Output};

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
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("running kiln")
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

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("hardware.csv");
    std::fs::write(&csv, HARDWARE).unwrap();
    std::fs::write(dir.path().join("t.yaml"), TEMPLATE).unwrap();
    std::fs::write(dir.path().join("c1.yaml"), SPEC).unwrap();
    let v = json(&data, &["enroll", csv.to_str().unwrap(), "-o", "json"]);
    assert_eq!(v["enrolled"], true);
    assert_eq!(v["added"], serde_json::json!(["n1", "n2"]));
    (dir, data)
}

#[test]
fn enroll_json_names_each_problem_and_enrols_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        HARDWARE.replace("52:54:00:aa:00:02", "zz:54:00:aa:00:02"),
    )
    .unwrap();
    let o = kiln(dir.path(), &["enroll", csv.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["enrolled"], false);
    let e = &v["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["field"].as_str()),
        (Some(3), Some("mac"))
    );
    assert!(e["column"].as_u64().unwrap() > 1, "{e}");
    let list = json(dir.path(), &["hardware", "list", "-o", "json"]);
    assert_eq!(list, serde_json::json!([]), "nothing enrolled");

    // A column EKS Anywhere users add (notes) is a warning in the JSON, and the file enrols.
    let noted = dir.path().join("noted.csv");
    let text: String = HARDWARE
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{l},{}\n", if i == 0 { "notes" } else { "rack 4" }))
        .collect();
    std::fs::write(&noted, text).unwrap();
    let v = json(
        dir.path(),
        &["enroll", noted.to_str().unwrap(), "-o", "json"],
    );
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
    let (dir, data) = setup();
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
    let (dir, data) = setup();
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
