//! The admin API's clusters and BMC actions against a server started in-process (TLS with
//! Kiln's CA, bearer tokens), called as the CLI calls them. BMCs are loopback addresses:
//! closed UDP ports (unreachable), so nothing leaves this host.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::Server;

impl Server {
    /// One request: (status, JSON body or null). Changes carry a JSON body (`null` when none).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = (method != "GET" && method != "DELETE").then(|| body.unwrap_or(Value::Null));
        self.request_json(method, path, token, body.as_ref())
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin), body)
    }

    fn viewer(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.read_only), body)
    }

    /// The `api.refused` events recorded so far. The event writer is asynchronous: waits
    /// until `n` are there, at most 10 s.
    fn refusals(&self, n: usize) -> Vec<String> {
        let store = self.store();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found: Vec<String> = store
                .events(None, 0, 10_000)
                .unwrap()
                .into_iter()
                .filter(|e| e.event.kind == kiln_model::EventKind::ApiRefused)
                .map(|e| e.event.detail)
                .collect();
            if found.len() >= n || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// A UDP port on 127.0.0.1 where datagrams meet no socket (ICMP port unreachable) while the
/// returned socket lives: it holds the port, connected elsewhere, so it takes nothing sent to
/// it and no parallel test can bind the port meanwhile.
fn refusing_udp_port() -> (UdpSocket, u16) {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    holder.connect("127.0.0.1:9").unwrap();
    let port = holder.local_addr().unwrap().port();
    (holder, port)
}

fn example(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusters");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// examples/clusters/hardware.csv with every BMC moved to a refusing loopback port (the
/// sockets holding the ports come along).
fn loopback_hardware() -> (String, Vec<UdpSocket>) {
    let mut held = Vec::new();
    let csv = example("hardware.csv")
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                return format!("{line}\n");
            }
            let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
            let (holder, port) = refusing_udp_port();
            held.push(holder);
            cells[1] = format!("127.0.0.1:{port}");
            format!("{}\n", cells.join(","))
        })
        .collect();
    (csv, held)
}

fn enroll(s: &Server, csv: &str) {
    let (status, v) = s.admin(
        "POST",
        "/api/v1/hardware",
        Some(json!({"file_name": "hardware.csv", "csv": csv})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enrolled"], true, "{v}");
}

fn create(s: &Server, file: &str, spec: &str, dry_run: bool) -> (u16, Value) {
    s.admin(
        "POST",
        "/api/v1/clusters",
        Some(json!({"file_name": file, "spec": spec, "dry_run": dry_run, "no_power": true})),
    )
}

fn is_rfc3339(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn clusters_are_created_followed_and_deleted_over_the_api() {
    let s = Server::start();
    let (csv, _ports) = loopback_hardware();
    enroll(&s, &csv);

    // Spec problems: 422, every one located file:line:column, nothing created.
    let (status, v) = create(
        &s,
        "broken.yaml",
        "kind: KilnCluster\nname: broken\nkubernetesVersion: \"1.30\"\ncontrolPlane:\n  count: two\n",
        false,
    );
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["code"], "invalid");
    let details = v["details"].as_array().unwrap();
    assert!(!details.is_empty(), "{v}");
    for d in details {
        assert_eq!(d["file"], "broken.yaml", "{v}");
        assert!(d["line"].as_u64().unwrap() >= 1, "{v}");
        assert!(d["column"].as_u64().unwrap() >= 1, "{v}");
    }
    assert!(
        details.iter().any(|d| d["line"] == 5),
        "count: two is on line 5: {v}"
    );

    // An EKS Anywhere spec, dry: the seeds come back, nothing is stored.
    let eksa = example("single-node.eksa.yaml");
    let (status, dry) = create(&s, "single-node.eksa.yaml", &eksa, true);
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["nodes"][0]["role"], "control-plane (init)");
    assert!(dry["nodes"][0]["workflow"].is_null());
    let seed = &dry["seeds"][0];
    assert_eq!(seed["hostname"], dry["nodes"][0]["hostname"]);
    let user_data = seed["user_data"].as_str().unwrap();
    assert!(user_data.starts_with("#cloud-config"), "{seed}");
    assert!(
        seed["network_config"]
            .as_str()
            .unwrap()
            .contains("10.77.0."),
        "{seed}"
    );
    assert_eq!(s.admin("GET", "/api/v1/clusters", None), (200, json!([])));

    // Without an OS image the EKS Anywhere spec cannot be installed: 422, nothing created.
    let (status, v) = create(&s, "single-node.eksa.yaml", &eksa, false);
    assert_eq!(status, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("names no OS image"),
        "{v}"
    );

    // A KilnCluster naming an image by URL: the imported image of that file name is used.
    s.store()
        .put_image(&kiln_store::ImageRecord {
            name: "ubuntu-2204-kube-1.31".into(),
            file: "ubuntu-2204-kube-1.31-0000000000000000.raw.zst".into(),
            raw_size: 1 << 30,
            sha256: "0".repeat(64),
            created_ms: 1,
            source_format: "raw".into(),
        })
        .unwrap();
    let three = example("three-node.kiln.yaml");
    let (status, made) = create(&s, "three-node.kiln.yaml", &three, false);
    assert_eq!(status, 200, "{made}");
    let nodes = made["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{made}");
    assert_eq!(nodes[0]["hostname"], "cp1");
    let wf = strings(&made["nodes"], "workflow");
    let (status, v) = create(&s, "three-node.kiln.yaml", &three, false);
    assert_eq!((status, v["code"].as_str()), (409, Some("conflict")), "{v}");

    // The EKS Anywhere spec with an image URL carrying its digest: on the next free cp.
    let with_image = eksa.replace(
        "  tinkerbellIP: \"10.77.0.1\"",
        &format!(
            "  tinkerbellIP: \"10.77.0.1\"\n  osImageURL: \"http://10.77.0.1:8080/os.raw.gz#sha256={}\"",
            "a".repeat(64)
        ),
    );
    let (status, single) = create(&s, "single-node.eksa.yaml", &with_image, false);
    assert_eq!(status, 200, "{single}");
    assert_eq!(single["nodes"][0]["hostname"], "cp2", "cp1 is taken");

    // List and status: read-only tokens read them.
    let (status, all) = s.viewer("GET", "/api/v1/clusters", None);
    assert_eq!(status, 200, "{all}");
    assert_eq!(strings(&all, "name"), ["single-node", "three-node"]);
    let (status, st) = s.viewer("GET", "/api/v1/clusters/three-node", None);
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["state"], "provisioning");
    assert_eq!(st["api_server_confirmed"], false);
    assert_eq!(st["nodes"][1]["role"], "worker");
    assert_eq!(st["nodes"][1]["role_detail"], "worker (md-0)");
    assert_eq!(strings(&st["nodes"], "workflow"), wf);
    let (status, v) = s.viewer("GET", "/api/v1/clusters/nope", None);
    assert_eq!(
        (status, v["message"].as_str()),
        (404, Some("no cluster named \"nope\""))
    );

    // The admin kubeconfig is a credential: admin tokens only, although a GET.
    let (status, v) = s.viewer("GET", "/api/v1/clusters/three-node/kubeconfig", None);
    assert_eq!(
        (status, v["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    assert!(
        s.refusals(1)
            .iter()
            .any(|r| r.contains("GET /api/v1/clusters/three-node/kubeconfig")),
        "the refusal is recorded"
    );
    let (status, k) = s.admin("GET", "/api/v1/clusters/three-node/kubeconfig", None);
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["server"], "https://10.77.0.90:6443");
    assert_eq!(k["user"], "kubernetes-admin");
    assert!(is_rfc3339(&k["not_before"]), "{k}");
    assert!(is_rfc3339(&k["not_after"]), "{k}");
    let text = k["kubeconfig"].as_str().unwrap();
    assert!(text.starts_with("apiVersion: v1\n"), "{text}");
    assert!(text.contains("client-key-data: "), "{text}");
    assert!(k["file"].is_null());

    // Deleting a cluster still installing needs force, which cancels the installs and
    // powers the machines off through their BMCs (closed ports here: error rows).
    let (status, v) = s.admin("DELETE", "/api/v1/clusters/three-node", None);
    assert_eq!(status, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("still being installed"),
        "{v}"
    );
    let (status, del) = s.admin("DELETE", "/api/v1/clusters/three-node?force=true", None);
    assert_eq!(status, 200, "{del}");
    assert_eq!(del["cancelled"], json!(wf));
    assert_eq!(del["wipe_workflows"], json!([]));
    let rows = del["power_off"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{del}");
    assert!(
        rows.iter()
            .all(|r| r["ok"] == false && r["error"].is_string()),
        "{del}"
    );
    assert!(!del.to_string().contains("bmc-pass"), "no password: {del}");
    let hw = s.store().hardware_by_name("cp1").unwrap().unwrap();
    assert!(!hw.netboot, "netboot off");

    // A cluster whose installs ended is deleted by wiping its disks.
    let engine = kiln_engine::Engine::new(s.store());
    let node_wf = single["nodes"][0]["workflow"].as_str().unwrap();
    engine.cancel(node_wf, "test").unwrap();
    let (status, del) = s.admin("DELETE", "/api/v1/clusters/single-node", None);
    assert_eq!(status, 200, "{del}");
    assert_eq!(del["wipe_workflows"][0][0], "cp2", "{del}");
    assert!(del.get("power_off").is_none(), "{del}");
    assert_eq!(s.admin("GET", "/api/v1/clusters", None), (200, json!([])));
    let (status, _) = s.admin("DELETE", "/api/v1/clusters/single-node", None);
    assert_eq!(status, 404);
}

#[test]
fn changes_need_an_admin_token_and_every_refusal_is_recorded() {
    let s = Server::start();
    let spec = json!({"file_name": "c.yaml", "spec": example("three-node.kiln.yaml")});
    let bmc = json!({"op": "on", "machines": ["cp1"]});
    for (method, path, body) in [
        ("GET", "/api/v1/clusters", None),
        ("GET", "/api/v1/clusters/x", None),
        ("GET", "/api/v1/clusters/x/kubeconfig", None),
        ("POST", "/api/v1/clusters", Some(spec.clone())),
        ("DELETE", "/api/v1/clusters/x", None),
        ("POST", "/api/v1/bmc/actions", Some(bmc.clone())),
    ] {
        let (status, v) = s.call(method, path, None, body.clone());
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
        let (status, v) = s.call(method, path, Some("kiln_nope_0000"), body);
        assert_eq!(status, 401, "{method} {path}: {v}");
    }
    for (method, path, body) in [
        ("POST", "/api/v1/clusters", Some(spec)),
        ("DELETE", "/api/v1/clusters/x?force=true", None),
        ("POST", "/api/v1/bmc/actions", Some(bmc)),
        ("GET", "/api/v1/clusters/x/kubeconfig", None),
    ] {
        let (status, v) = s.viewer(method, path, body);
        assert_eq!(
            (status, v["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {v}"
        );
    }
    // Reading a BMC's power state is a read, although a POST: a read-only token gets past
    // the check to the handler (which finds no such machine here).
    let (status, v) = s.viewer(
        "POST",
        "/api/v1/bmc/actions",
        Some(json!({"op": "status", "machines": ["cp1"]})),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let refused = s.refusals(16);
    assert_eq!(refused.len(), 16, "{refused:#?}");
    assert!(
        refused.iter().all(|r| r.contains("127.0.0.1")),
        "{refused:#?}"
    );
    assert!(
        !refused.iter().any(|r| r.contains(&s.read_only)),
        "no token in events"
    );
}

#[test]
fn bmc_actions_answer_one_row_per_machine() {
    let s = Server::start();
    let (_held, port_a) = refusing_udp_port();
    let csv = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
a1,PORT_A,admin,very-secret-1,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,rack=r1,/dev/vda
a2,,,,52:54:00:aa:00:02,10.9.0.12,255.255.255.0,10.9.0.1,10.9.0.1,rack=r1,/dev/vda
a3,,,,52:54:00:aa:00:03,10.9.0.13,255.255.255.0,10.9.0.1,10.9.0.1,rack=r2,/dev/vda
"
    .replace("PORT_A", &format!("127.0.0.1:{port_a}"));
    enroll(&s, &csv);
    let (status, rows) = s.admin(
        "POST",
        "/api/v1/bmc/actions",
        Some(json!({"op": "off", "selector": ["rack=r1"]})),
    );
    assert_eq!(status, 200, "{rows}");
    assert_eq!(strings(&rows, "machine"), ["a1", "a2"]);
    assert_eq!(rows[0]["ok"], false);
    assert_eq!(rows[0]["result"], "error");
    assert!(rows[0]["error"].is_string(), "{rows}");
    assert!(rows[0]["detail"].is_string(), "{rows}");
    assert_eq!(rows[1]["bmc"], "-");
    assert_eq!(rows[1]["error"], "unsupported");
    assert!(!rows.to_string().contains("very-secret"), "{rows}");
    // A change is an event of each machine.
    let events = s.store().events(Some("a1"), 0, 100).unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e.event.data,
            Some(kiln_model::event::EventData::BmcFailed {
                task: kiln_model::event::BmcTask::Op(kiln_api::BmcOp::Off),
                ..
            })
        ) && e.event.detail.starts_with("kiln bmc off failed: ")),
        "{events:?}"
    );

    for (body, status, code) in [
        (json!({"op": "status"}), 422, "invalid"),
        (
            json!({"op": "status", "machines": ["zz"]}),
            404,
            "not_found",
        ),
        (
            json!({"op": "status", "selector": ["rack"]}),
            422,
            "invalid",
        ),
        (
            json!({"op": "status", "selector": ["rack=r9"]}),
            422,
            "invalid",
        ),
    ] {
        let (got, v) = s.admin("POST", "/api/v1/bmc/actions", Some(body.clone()));
        assert_eq!(
            (got, v["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
}

#[test]
fn the_openapi_document_names_every_cluster_and_bmc_route() {
    let s = Server::start();
    let (status, doc) = s.viewer("GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let ops: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_string))
        .collect();
    for id in [
        "cluster_create",
        "cluster_list",
        "cluster_status",
        "cluster_kubeconfig",
        "cluster_delete",
        "bmc_action",
    ] {
        assert!(ops.iter().any(|o| o == id), "{id} in {ops:?}");
    }
    for schema in ["ClusterCreateRequest", "ClusterStatus", "BmcRow", "BmcOp"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

/// OpenIPMI's `ipmi_sim` on 127.0.0.1 (a port of its own choosing), with a chassis program
/// that keeps power and boot device in files; killed on drop. Needs the Debian package
/// `openipmi`, as kiln-bmc's tests do.
struct IpmiSim {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

const CHASSIS: &str = r#"#!/bin/sh
D=$(dirname "$0")/state
mkdir -p "$D"
mc=$1; op=$2; shift 2
echo "$op $*" >> "$D/log"
if [ "$op" = get ]; then
  for k in "$@"; do case $k in
    power) echo "power:$(cat "$D/power" 2>/dev/null || echo 0)" ;;
    boot)  echo "boot:$(cat "$D/boot" 2>/dev/null || echo default)" ;;
  esac; done
  exit 0
fi
while [ $# -ge 2 ]; do k=$1; v=$2; shift 2; case $k in
  power) echo "$v" > "$D/power" ;;
  boot)  echo "$v" > "$D/boot" ;;
esac; done
exit 0
"#;

impl IpmiSim {
    fn start() -> IpmiSim {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ctl = d.join("chassis-ctl.sh");
        std::fs::write(&ctl, CHASSIS).unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = d.join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                "name \"kiln-test\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 0\n    priv_limit admin\n    allowed_auths_admin none md2 md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  user 2 true  \"admin\"   \"sim-password\" admin  10  none md2 md5 straight\n",
                ctl.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let emu = d.join("bmc.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )
        .unwrap();
        let state = d.join("sim-state");
        std::fs::create_dir(&state).unwrap();
        let log = std::fs::File::create(d.join("ipmi_sim.log")).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(&conf)
            .arg("-f")
            .arg(&emu)
            .arg("-s")
            .arg(&state)
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting ipmi_sim (Debian package openipmi)");
        let mut sim = IpmiSim {
            child,
            port: 0,
            dir,
        };
        let start = Instant::now();
        while sim.port == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ipmi_sim bound no UDP port within 10 s"
            );
            if let Some(status) = sim.child.try_wait().unwrap() {
                panic!("ipmi_sim exited ({status})");
            }
            sim.port = udp_port_of(sim.child.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(20));
        }
        sim
    }

    fn chassis_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/log")).unwrap_or_default()
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The UDP port process `pid` bound: its sockets' inodes looked up in its UDP table.
fn udp_port_of(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9)) {
            return None;
        }
        let (_, port) = fields.get(1)?.split_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

#[test]
fn bmc_actions_drive_a_real_ipmi_bmc() {
    let sim = IpmiSim::start();
    let s = Server::start();
    let csv = format!(
        "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\nsim1,127.0.0.1:{},admin,sim-password,52:54:00:aa:00:21,10.9.0.21,255.255.255.0,10.9.0.1,10.9.0.1,rack=sim,/dev/vda\n",
        sim.port
    );
    enroll(&s, &csv);
    // ipmi_sim answers once it has set up its LAN channel: ask until it does (10 s at most).
    let start = Instant::now();
    let status = loop {
        let (code, rows) = s.admin(
            "POST",
            "/api/v1/bmc/actions",
            Some(json!({"op": "status", "machines": ["sim1"]})),
        );
        assert_eq!(code, 200, "{rows}");
        if rows[0]["ok"] == true || start.elapsed() > Duration::from_secs(10) {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status[0]["ok"], true, "{status}");
    assert_eq!(status[0]["result"], "off", "{status}");
    let (_, on) = s.admin(
        "POST",
        "/api/v1/bmc/actions",
        Some(json!({"op": "on", "selector": ["rack=sim"]})),
    );
    assert_eq!(on[0]["ok"], true, "{on}");
    assert!(
        on[0]["result"].as_str().unwrap().ends_with("now on"),
        "{on}"
    );
    let (_, pxe) = s.admin(
        "POST",
        "/api/v1/bmc/actions",
        Some(json!({"op": "pxe", "machines": ["sim1"], "persistent": true})),
    );
    assert_eq!(pxe[0]["ok"], true, "{pxe}");
    assert!(
        pxe[0]["result"].as_str().unwrap().contains("persistent"),
        "{pxe}"
    );
    let log = sim.chassis_log();
    assert!(log.contains("set power 1"), "{log}");
    assert!(log.contains("set boot pxe"), "{log}");
    assert!(!format!("{status}{on}{pxe}").contains("sim-password"));
}
