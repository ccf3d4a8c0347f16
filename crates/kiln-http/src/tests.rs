use kiln_model::EventKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kiln_model::csv::parse_hardware_csv;
use kiln_model::{Event, EventSink, Inventory, SharedInventory};
use tower::ServiceExt;

use super::*;
use crate::artifacts::parse_range;

#[derive(Default)]
pub(crate) struct Recorder(pub(crate) Mutex<Vec<Event>>);
impl EventSink for Recorder {
    fn emit(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

pub(crate) struct Fixture {
    pub(crate) app: Router,
    pub(crate) events: Arc<Recorder>,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(false)
}

fn fixture_with(inspect: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifacts");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(
        art.join("vmlinuz"),
        (0..=255u8).cycle().take(10_000).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.txt"), "nope").unwrap();
    let csv = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
               on1,,,,52:54:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/vda\n\
               off1,,,,52:54:00:00:00:02,10.0.0.12,255.255.255.0,,,,/dev/vda\n";
    let mut hw = parse_hardware_csv("t.csv", csv).unwrap();
    hw[0].netboot = true;
    let events = Arc::new(Recorder::default());
    let app = router(
        HttpConfig {
            server_url: "http://10.0.0.1:8080".into(),
            artifacts_dir: art.clone(),
            boot_dir: art.clone(),
            images_dir: art,
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            kernel_args: "console=ttyS0".into(),
            agent_apis: None,
            inspect,
        },
        SharedInventory::new(Inventory::new(hw)),
        events.clone(),
        Arc::new(|| "kiln_up 1\n".to_string()),
        Arc::new(NoProvisioning),
    );
    Fixture {
        app,
        events,
        _dir: dir,
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = req;
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 11], 5555))));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn an_oversized_report_is_refused_before_it_is_read() {
    let f = fixture();
    let line = "x".repeat(1024);
    let lines: Vec<&str> =
        std::iter::repeat_n(line.as_str(), MAX_REQUEST_BODY / 1024 + 8).collect();
    let body = serde_json::json!({"index": 0, "attempt": 1, "report": "log", "lines": lines});
    let req = Request::post("/v1/agent/report")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, _) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn netboot_on_renders_kernel_and_identity() {
    let f = fixture();
    let (status, _, body) = send(&f.app, get("/ipxe/52:54:00:00:00:01/boot.ipxe")).await;
    assert_eq!(status, StatusCode::OK);
    let s = String::from_utf8(body).unwrap();
    assert!(s.starts_with("#!ipxe"));
    assert!(s.contains("kernel http://10.0.0.1:8080/artifacts/vmlinuz initrd=initrd.img console=ttyS0 kiln.server=http://10.0.0.1:8080 kiln.mac=52:54:00:00:00:01 kiln.hostname=on1"), "{s}");
    assert!(s.contains("initrd http://10.0.0.1:8080/artifacts/initrd.img"));
    assert!(!s.contains("{{"), "unfilled placeholder in {s}");
    assert!(
        !s.contains("token"),
        "no credential in a script anyone can fetch: {s}"
    );
    let ev = f.events.0.lock().unwrap();
    assert_eq!(ev[0].kind, EventKind::HttpScript);
    assert_eq!(ev[0].mac.unwrap().to_string(), "52:54:00:00:00:01");
}

#[tokio::test]
async fn netboot_off_and_unknown_leave_for_disk_on_both_firmwares() {
    let f = fixture();
    for uri in [
        "/ipxe/52:54:00:00:00:02/boot.ipxe",
        "/ipxe/52:54:00:00:00:99/boot.ipxe",
    ] {
        let (status, _, body) = send(&f.app, get(uri)).await;
        assert_eq!(status, StatusCode::OK);
        let s = String::from_utf8(body).unwrap();
        assert!(!s.contains("kernel "), "{s}");
        assert!(
            s.contains("sanboot --no-describe --drive 0x80"),
            "BIOS path: {s}"
        );
        assert!(
            s.contains("iseq ${platform} efi") && s.contains("exit 1"),
            "UEFI path: {s}"
        );
    }
    let (status, _, _) = send(&f.app, get("/ipxe/not-a-mac/boot.ipxe")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_inspection_an_unknown_mac_gets_the_agent_in_inspection_only_mode() {
    let f = fixture_with(true);
    let (status, _, body) = send(&f.app, get("/ipxe/52:54:00:00:00:99/boot.ipxe")).await;
    assert_eq!(status, StatusCode::OK);
    let s = String::from_utf8(body).unwrap();
    assert!(
        s.contains("console=ttyS0 kiln.inspect=1 kiln.server=http://10.0.0.1:8080 kiln.mac=52:54:00:00:00:99 kiln.hostname=inspect-525400000099"),
        "{s}"
    );
    // An enrolled machine is not inspected; netboot off still leaves for its disk.
    let (_, _, body) = send(&f.app, get("/ipxe/52:54:00:00:00:01/boot.ipxe")).await;
    assert!(!String::from_utf8(body).unwrap().contains("kiln.inspect"));
    let (_, _, body) = send(&f.app, get("/ipxe/52:54:00:00:00:02/boot.ipxe")).await;
    assert!(String::from_utf8(body).unwrap().contains("sanboot"));
    let scripts: Vec<_> = f.events.0.lock().unwrap().iter().map(|e| e.mac).collect();
    assert!(
        !scripts
            .iter()
            .any(|m| m.is_some_and(|m| m.to_string().ends_with(":99"))),
        "no event for a MAC anyone can name"
    );
    // Without a server that inspects, the ticket is refused (and the refusal recorded).
    let claim = Request::post("/v1/agent/inspect/claim")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"mac":"52:54:00:00:00:99","run":"r1"}"#))
        .unwrap();
    let (status, _, _) = send(&f.app, claim).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn artifacts_range_etag_head() {
    let f = fixture();
    let (status, h, body) = send(&f.app, get("/artifacts/vmlinuz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 10_000);
    let etag = h[header::ETAG].to_str().unwrap().to_string();

    let req = Request::get("/artifacts/vmlinuz")
        .header(header::RANGE, "bytes=100-199")
        .body(Body::empty())
        .unwrap();
    let (status, h, part) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h[header::CONTENT_RANGE], "bytes 100-199/10000");
    assert_eq!(part, body[100..200]);

    let req = Request::get("/artifacts/vmlinuz")
        .header(header::RANGE, "bytes=9990-")
        .body(Body::empty())
        .unwrap();
    let (_, _, tail) = send(&f.app, req).await;
    assert_eq!(tail, body[9990..]);

    let req = Request::get("/artifacts/vmlinuz")
        .header(header::RANGE, "bytes=20000-")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, req).await.0, StatusCode::RANGE_NOT_SATISFIABLE);

    let req = Request::get("/artifacts/vmlinuz")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, req).await.0, StatusCode::NOT_MODIFIED);

    let req = Request::get("/artifacts/vmlinuz")
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"stale\"")
        .body(Body::empty())
        .unwrap();
    let (status, _, whole) = send(&f.app, req).await;
    assert_eq!((status, whole.len()), (StatusCode::OK, 10_000));

    let req = Request::head("/artifacts/vmlinuz")
        .body(Body::empty())
        .unwrap();
    let (status, h, body) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_LENGTH], "10000");
    assert!(body.is_empty());
}

#[tokio::test]
async fn traversal_is_refused() {
    let f = fixture();
    for uri in [
        "/artifacts/../secret.txt",
        "/artifacts/%2e%2e/secret.txt",
        "/artifacts/..%2fsecret.txt",
        "/artifacts/a%00b",
    ] {
        let (status, _, body) = send(&f.app, get(uri)).await;
        assert!(
            status == StatusCode::FORBIDDEN
                || status == StatusCode::NOT_FOUND
                || status == StatusCode::BAD_REQUEST,
            "{uri}: {status}"
        );
        assert_ne!(body, b"nope", "{uri} leaked the file");
    }
}

#[tokio::test]
async fn symlinks_out_of_the_root_follow_the_owner_rule() {
    let f = fixture();
    let art = f._dir.path().join("artifacts");
    std::os::unix::fs::symlink(f._dir.path().join("secret.txt"), art.join("link")).unwrap();
    // The operator's link (like Debian's /usr/lib/ipxe/ipxe.efi) is served.
    let (status, _, body) = send(&f.app, get("/artifacts/link")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"nope"[..]));
    // Another user's link is not (handing it over needs root; CI is root).
    if std::os::unix::fs::lchown(art.join("link"), Some(4242), Some(4242)).is_ok() {
        let (status, _, _) = send(&f.app, get("/artifacts/link")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

#[test]
fn ranges() {
    assert_eq!(parse_range("bytes=0-0", 10), Ok(Some((0, 0))));
    assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
    assert_eq!(parse_range("bytes=5-100", 10), Ok(Some((5, 9))));
    assert_eq!(parse_range("bytes=0-1,5-6", 10), Ok(None));
    assert_eq!(parse_range("items=0-1", 10), Ok(None));
    assert_eq!(parse_range("bytes=10-", 10), Err(()));
    assert_eq!(parse_range("bytes=5-2", 10), Err(()));
    assert_eq!(parse_range("bytes=x-", 10), Err(()));
}

#[tokio::test]
async fn health_and_metrics() {
    let f = fixture();
    let (status, _, body) = send(&f.app, get("/healthz")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok\n"[..]));
    let (_, _, body) = send(&f.app, get("/metrics")).await;
    assert_eq!(body, b"kiln_up 1\n");
}
