//! `kiln serve --store postgres://…`: a whole server started in-process on a PostgreSQL
//! cluster of the test's own (initdb in a temp dir, unix socket only), enrolling and creating
//! a workflow over the admin API, and carrying on when PostgreSQL restarts under it.
//! `KILN_SKIP_PG=1` skips it where PostgreSQL is not installed.

use std::net::Ipv4Addr;
use std::sync::Arc;

use kiln_server::ServeOptions;
use kiln_store::testing::{PgCluster, skip_pg};
use serde_json::{Value, json};

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,,,,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
n2,,,,52:54:00:aa:00:02,10.9.0.12,255.255.255.0,10.9.0.1,10.9.0.1,role=spare,/dev/vda
";
const TEMPLATE: &str =
    "name: reach-agent\ntimeout: 1h\nactions:\n  - name: boot\n    kind: reboot\n";

struct Api {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Api {
    fn new(dir: &std::path::Path) -> Api {
        let pem = std::fs::read(dir.join("tls/ca.crt")).unwrap();
        let ca = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
        let agent = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            )
            .http_status_as_error(false)
            .build()
            .new_agent();
        let local: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("api.json")).unwrap()).unwrap();
        Api {
            agent,
            base: local["url"].as_str().unwrap().to_string(),
            token: std::fs::read_to_string(dir.join("admin.token"))
                .unwrap()
                .trim()
                .to_string(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        let resp = match body {
            Some(b) => self.agent.run(
                req.header("content-type", "application/json")
                    .body(serde_json::to_vec(&b).unwrap())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[test]
fn a_server_on_postgres_enrolls_runs_workflows_and_survives_a_postgres_restart() {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
    // A password in the URL (trust auth ignores it) must never show.
    let url = cluster
        .create_database()
        .unwrap()
        .replace("kiln@", "kiln:db-secret-pw@");
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServeOptions::new(dir.path().to_path_buf(), Ipv4Addr::LOCALHOST);
    opts.dhcp_mode = kiln_dhcp::Mode::Off;
    (opts.http_port, opts.agent_tls_port, opts.tftp_port) = (0, 0, 0);
    opts.api_listen = "127.0.0.1:0".parse().unwrap();
    opts.store = Some(kiln_store::Location::Postgres { url: url.clone() });
    // kiln serve refuses to start without its artifacts and TFTP directories.
    let scratch = tempfile::tempdir().unwrap();
    (opts.artifacts, opts.tftp_root) = (scratch.path().join("a"), scratch.path().join("t"));
    for d in [&opts.artifacts, &opts.tftp_root] {
        std::fs::create_dir_all(d).unwrap();
    }
    assert!(!format!("{opts:?}").contains("db-secret-pw"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let running = rt.block_on(kiln_server::start(opts.clone())).unwrap();
    let api = Api::new(dir.path());
    // Nothing of the state went to the data directory: it is all in PostgreSQL.
    assert!(!dir.path().join(kiln_store::DB_FILE).exists());

    let (status, out) = api.call(
        "POST",
        "/api/v1/hardware",
        Some(json!({"file_name": "rack.csv", "csv": CSV})),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["added"], json!(["n1", "n2"]));
    let (status, created) = api.call(
        "POST",
        "/api/v1/workflows",
        Some(
            json!({"template_file": "t.yaml", "template": TEMPLATE, "hardware": ["n1"],
                    "server_url": "http://10.9.0.1:8080"}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let id = created[0]["id"].as_str().unwrap().to_string();

    // Another connection (another server) sees it all, committed.
    let other = kiln_store::open(&opts.store_location(), kiln_store::Durability::Full).unwrap();
    assert!(
        !other.describe().contains("db-secret-pw"),
        "{}",
        other.describe()
    );
    assert_eq!(other.hardware().unwrap().len(), 2);
    assert!(other.hardware_by_name("n1").unwrap().unwrap().netboot);
    assert_eq!(other.workflow(&id).unwrap().unwrap().hardware, "n1");

    // PostgreSQL restarts under the running server: its next calls reconnect.
    cluster.restart().unwrap();
    let (status, list) = api.call("GET", "/api/v1/workflows", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["id"], json!(id));
    let (status, again) = api.call(
        "POST",
        "/api/v1/workflows",
        Some(
            json!({"template_file": "t.yaml", "template": TEMPLATE, "hardware": ["n1"],
                    "server_url": "http://10.9.0.1:8080"}),
        ),
    );
    assert_eq!(
        status, 409,
        "still one unfinished workflow per machine: {again}"
    );
    let (status, _) = api.call("DELETE", "/api/v1/hardware/n2", None);
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(other.hardware().unwrap().len(), 1, "nothing lost, n2 gone");

    rt.block_on(running.stop());
}

/// Two servers on one PostgreSQL database (issue 13, point 2): a machine enrolled and its
/// netboot turned on through one server's admin API reach the other server's boot services
/// (its in-memory inventory) within a second, and each server beats in the `servers` table.
#[test]
fn a_change_through_one_server_reaches_the_other_within_a_second() {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let servers: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let mut opts = ServeOptions::new(dir.path().to_path_buf(), Ipv4Addr::LOCALHOST);
            opts.dhcp_mode = kiln_dhcp::Mode::Off;
            (opts.http_port, opts.agent_tls_port, opts.tftp_port) = (0, 0, 0);
            opts.api_listen = "127.0.0.1:0".parse().unwrap();
            opts.store = Some(kiln_store::Location::Postgres { url: url.clone() });
            opts.server_id = Some(format!("server-{i}"));
            // kiln serve refuses to start without its artifacts and TFTP directories.
            (opts.artifacts, opts.tftp_root) =
                (dir.path().join("artifacts"), dir.path().join("tftp"));
            for d in [&opts.artifacts, &opts.tftp_root] {
                std::fs::create_dir_all(d).unwrap();
            }
            rt.block_on(kiln_server::start(opts)).unwrap()
        })
        .collect();
    let api = Api::new(dirs[0].path());
    let mac: kiln_model::MacAddr = "52:54:00:aa:00:01".parse().unwrap();
    // Nothing is enrolled yet: the other server's inventory starts empty.
    let other = servers[1].inventory.clone();
    assert!(other.load().by_mac(&mac).is_none());

    let sent = std::time::Instant::now();
    let (status, out) = api.call(
        "POST",
        "/api/v1/hardware",
        Some(json!({"file_name": "rack.csv", "csv": CSV})),
    );
    assert_eq!(status, 200, "{out}");
    let committed = std::time::Instant::now();
    while other.load().by_mac(&mac).is_none() {
        assert!(
            committed.elapsed() < std::time::Duration::from_secs(1),
            "the other server's inventory has not seen the enrolment after 1 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    eprintln!(
        "enrolment seen by the other server {:?} after it was committed ({:?} after the request)",
        committed.elapsed(),
        sent.elapsed()
    );

    let store = kiln_store::open(
        &kiln_store::Location::Postgres { url },
        kiln_store::Durability::Full,
    )
    .unwrap();
    let ids: Vec<_> = store.servers().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["server-0", "server-1"]);
    for s in servers {
        rt.block_on(s.stop());
    }
}
