//! The admin API's image routes, against a server started in-process: uploads (raw, qcow2),
//! a URL import followed to its end, digests, names, deletion, and the token checks.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_api::{ImageImport, ImportPhase, ImportState};
use sha2::{Digest, Sha256};

mod common;
use common::Server;

/// Status and JSON body of an answer.
type Answer = (u16, serde_json::Value);

fn start() -> Server {
    Server::start()
}

impl Server {
    fn images_dir(&self) -> PathBuf {
        self.data.join("images")
    }
    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request_json("GET", path, token, None)
    }
    fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.request_json("DELETE", path, token, None)
    }
    fn post(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Answer {
        self.request_json("POST", path, token, Some(&body))
    }
    fn put(&self, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
        let body = ("application/octet-stream", body.to_vec());
        let (status, text) = self.request("PUT", path, token, Some(body));
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
    fn admin(&self) -> Option<&str> {
        Some(&self.admin)
    }
}

fn disk(n: u32) -> Vec<u8> {
    (0..n << 20)
        .map(|i| if i % 4096 < 2048 { 0 } else { (i % 251) as u8 })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn qcow2_of(raw: &[u8], dir: &Path) -> Vec<u8> {
    let (src, dst) = (dir.join("fixture.raw"), dir.join("fixture.qcow2"));
    std::fs::write(&src, raw).unwrap();
    let status = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&src)
        .arg(&dst)
        .status()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(status.success());
    std::fs::read(&dst).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Serves `body` at `/PATH` (404 elsewhere) on 127.0.0.1 for as long as the test runs.
fn serve(path: &'static str, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let asked = request_line.split(' ').nth(1).unwrap_or("");
            let _ = if asked.strip_prefix('/') == Some(path) {
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .and_then(|()| conn.write_all(&body))
            } else {
                conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
            };
        }
    });
    base
}

/// Polls an import until it ends.
fn follow(s: &Server, id: &str) -> ImageImport {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, json) = s.get(&format!("/api/v1/images/imports/{id}"), s.admin());
        assert_eq!(status, 200, "{json}");
        let now: ImageImport = serde_json::from_value(json).unwrap();
        if now.state != ImportState::Running {
            return now;
        }
        assert!(Instant::now() < deadline, "import {id} still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_rfc3339_ms(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && s.ends_with('Z')
}

fn leftovers(s: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.images_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn uploads_list_and_delete_images() {
    let s = start();
    let work = tempfile::tempdir().unwrap();
    // Over the router's 2 MB default body limit: only the upload route lifts it.
    let raw = disk(3);
    let (status, json) = s.put(
        "/api/v1/images/raw-os?zstd_level=3&source=raw-os.img",
        s.admin(),
        &raw,
    );
    assert_eq!(status, 200, "{json}");
    let up: ImageImport = serde_json::from_value(json).unwrap();
    assert_eq!(
        (up.state, up.phase),
        (ImportState::Succeeded, ImportPhase::Done)
    );
    assert_eq!(up.bytes_done, raw.len() as u64);
    let image = up.image.unwrap();
    assert_eq!(
        (
            image.name.as_str(),
            image.source_format.as_str(),
            image.raw_size
        ),
        ("raw-os", "raw", raw.len() as u64)
    );
    let served = std::fs::read(s.images_dir().join(&image.file)).unwrap();
    assert_eq!(sha256_hex(&served), image.sha256);
    assert_eq!(up.compressed_size, Some(served.len() as u64));
    assert_eq!(zstd::decode_all(&served[..]).unwrap(), raw);

    let small = disk(1);
    let qcow2 = qcow2_of(&small, work.path());
    let q = format!(
        "/api/v1/images/qcow-os?zstd_level=3&sha256={}",
        sha256_hex(&qcow2)
    );
    let (status, json) = s.put(&q, s.admin(), &qcow2);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["image"]["source_format"], "qcow2");
    assert_eq!(json["image"]["raw_size"], small.len() as u64);

    // A digest that is not the upload's: refused, nothing stored, nothing left behind.
    let q = format!("/api/v1/images/wrong?sha256={}", "0".repeat(64));
    let (status, json) = s.put(&q, s.admin(), &small);
    assert_eq!(status, 422, "{json}");
    assert_eq!(json["code"], "sha256_mismatch");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains(&sha256_hex(&small)),
        "{json}"
    );
    let (status, _) = s.get("/api/v1/images/wrong", s.admin());
    assert_eq!(status, 404);
    // Neither a name taken (without replace), a bad name, nor a page that is no disk.
    // (Refused before the body is read: a small body, all in the socket's buffers.)
    let tiny = &small[..4096];
    let (status, json) = s.put("/api/v1/images/raw-os", s.admin(), tiny);
    assert_eq!(
        (status, json["code"].as_str()),
        (409, Some("conflict")),
        "{json}"
    );
    assert!(
        json["message"].as_str().unwrap().contains("--replace"),
        "{json}"
    );
    let (status, _) = s.put("/api/v1/images/Bad%20Name", s.admin(), tiny);
    // A dry run answers what the upload would get, with no body and nothing imported.
    let (status_taken, _) = s.put("/api/v1/images/raw-os?dry_run=true", s.admin(), b"");
    let (status_free, _) = s.put("/api/v1/images/free?dry_run=true", s.admin(), b"");
    let (status_ro, _) = s.put("/api/v1/images/free?dry_run=true", Some(&s.read_only), b"");
    assert_eq!((status_taken, status_free, status_ro), (409, 204, 403));
    assert_eq!(s.get("/api/v1/images/free", s.admin()).0, 404);
    assert_eq!(status, 422);
    let (status, json) = s.put("/api/v1/images/page", s.admin(), b"<html>sign in</html>");
    assert_eq!(status, 422, "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("not a disk image"),
        "{json}"
    );
    assert_eq!(leftovers(&s), Vec::<String>::new());

    let (status, json) = s.get("/api/v1/images", Some(&s.read_only));
    assert_eq!(status, 200, "{json}");
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qcow-os", "raw-os"]);
    for i in json.as_array().unwrap() {
        assert!(is_rfc3339_ms(i["created"].as_str().unwrap()), "{i}");
        assert_eq!(
            i["url_path"],
            format!("/images/{}", i["file"].as_str().unwrap())
        );
    }
    let (status, one) = s.get("/api/v1/images/raw-os", Some(&s.read_only));
    assert_eq!(
        (status, &one["sha256"]),
        (200, &serde_json::json!(image.sha256))
    );

    let (status, json) = s.delete("/api/v1/images/raw-os", s.admin());
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["file_removed"], true);
    assert!(!s.images_dir().join(&image.file).exists());
    let (status, json) = s.delete("/api/v1/images/raw-os", s.admin());
    assert_eq!((status, json["code"].as_str()), (404, Some("not_found")));
    let (_, json) = s.get("/api/v1/images", s.admin());
    assert_eq!(json.as_array().unwrap().len(), 1);
}

#[test]
fn imports_a_url_on_the_server_and_reports_progress() {
    let s = start();
    let data = disk(1);
    let body = gzip(&data);
    let base = serve("ubuntu-2204-kube-v1.30.gz", body.clone());
    let url = format!("{base}/ubuntu-2204-kube-v1.30.gz");

    let (status, json) = s.post(
        "/api/v1/images",
        s.admin(),
        serde_json::json!({"url": url, "sha256": sha256_hex(&body), "zstd_level": 3}),
    );
    assert_eq!(status, 202, "{json}");
    let started: ImageImport = serde_json::from_value(json).unwrap();
    assert_eq!(started.name, "ubuntu-2204-kube-v1.30");
    let ended = follow(&s, &started.id);
    assert_eq!(ended.state, ImportState::Succeeded, "{:?}", ended.error);
    assert_eq!(
        (ended.bytes_done, ended.bytes_total),
        (body.len() as u64, Some(body.len() as u64))
    );
    let image = ended.image.unwrap();
    assert_eq!(image.source_format, "raw.gz");
    let served = std::fs::read(s.images_dir().join(&image.file)).unwrap();
    assert_eq!(zstd::decode_all(&served[..]).unwrap(), data);

    // The digest is checked on the downloaded bytes; the outcome says why it failed.
    let (status, json) = s.post(
        "/api/v1/images",
        s.admin(),
        serde_json::json!({"url": url, "name": "other", "sha256": "0".repeat(64)}),
    );
    assert_eq!(status, 202, "{json}");
    let ended = follow(&s, json["id"].as_str().unwrap());
    let error = ended.error.unwrap();
    assert_eq!(
        (ended.state, error.code.as_str()),
        (ImportState::Failed, "sha256_mismatch")
    );
    assert!(error.message.contains(&sha256_hex(&body)), "{error}");

    // A signed URL's query is a credential: records and messages show the URL without it.
    let signed = format!("{base}/nope.raw?X-Amz-Signature=s3cr3t");
    let (_, json) = s.post(
        "/api/v1/images",
        s.admin(),
        serde_json::json!({"url": signed}),
    );
    let ended = follow(&s, json["id"].as_str().unwrap());
    let shown = serde_json::to_string(&ended).unwrap();
    assert!(
        shown.contains("nope.raw?…") && !shown.contains("s3cr3t"),
        "{shown}"
    );

    let missing = format!("{base}/nope.raw");
    let (_, json) = s.post(
        "/api/v1/images",
        s.admin(),
        serde_json::json!({"url": missing}),
    );
    let ended = follow(&s, json["id"].as_str().unwrap());
    let error = ended.error.unwrap();
    assert_eq!(error.code, "download_failed");
    assert!(
        error.message.contains("HTTP 404") && error.message.contains(&missing),
        "{error}"
    );

    // Refused before anything starts: a local path, a taken name, a malformed digest.
    for (req, code) in [
        (
            serde_json::json!({"url": "file:///etc/passwd", "name": "p"}),
            422,
        ),
        (serde_json::json!({"url": "/etc/passwd", "name": "p"}), 422),
        (serde_json::json!({"url": url}), 409),
        (
            serde_json::json!({"url": url, "name": "x", "sha256": "abc"}),
            422,
        ),
    ] {
        let (status, json) = s.post("/api/v1/images", s.admin(), req.clone());
        assert_eq!(status, code, "{req}: {json}");
    }
    let (status, _) = s.get("/api/v1/images/imports/nope", s.admin());
    assert_eq!(status, 404);
    let (_, json) = s.get("/api/v1/images", s.admin());
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(leftovers(&s), Vec::<String>::new());
}

#[test]
fn changes_need_an_admin_token_and_every_route_is_documented() {
    let s = start();
    // (Refused before the body is read: a small body, all in the socket's buffers.)
    let small = &disk(1)[..4096];
    // No token: refused, reads included.
    assert_eq!(s.get("/api/v1/images", None).0, 401);
    assert_eq!(s.get("/api/v1/images/x", None).0, 401);
    assert_eq!(s.get("/api/v1/images/imports/x", None).0, 401);
    assert_eq!(s.put("/api/v1/images/x", None, small).0, 401);
    assert_eq!(
        s.post(
            "/api/v1/images",
            None,
            serde_json::json!({"url": "http://h/x"})
        )
        .0,
        401
    );
    assert_eq!(s.delete("/api/v1/images/x", None).0, 401);
    assert_eq!(s.get("/api/v1/images", Some("kiln_bogus_token")).0, 401);
    // A read-only token reads, and changes nothing.
    let ro = Some(s.read_only.as_str());
    assert_eq!(s.get("/api/v1/images", ro).0, 200);
    let (status, json) = s.put("/api/v1/images/x", ro, small);
    assert_eq!((status, json["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = s.post(
        "/api/v1/images",
        ro,
        serde_json::json!({"url": "http://127.0.0.1:9/x.raw"}),
    );
    assert_eq!(status, 403);
    assert_eq!(s.delete("/api/v1/images/x", ro).0, 403);
    assert!(!s.images_dir().exists() || leftovers(&s).is_empty());
    let (_, json) = s.get("/api/v1/images", ro);
    assert_eq!(json, serde_json::json!([]));
    // Each refusal is an event.
    let store = kiln_store::open_sqlite(&s.data).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let n = store
            .events(None, 0, 10_000)
            .unwrap()
            .iter()
            .filter(|r| {
                matches!(
                    &r.event.data,
                    Some(kiln_model::event::EventData::ApiRefused { path, .. })
                        if path.starts_with("/api/v1/images")
                )
            })
            .count();
        if n >= 10 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused, 10);

    let (status, doc) = s.get("/api/v1/openapi.json", Some(&s.read_only));
    assert_eq!(status, 200);
    for (path, method, id) in [
        ("/api/v1/images", "get", "image_list"),
        ("/api/v1/images", "post", "image_import_url"),
        ("/api/v1/images/{name}", "get", "image_get"),
        ("/api/v1/images/{name}", "put", "image_upload"),
        ("/api/v1/images/{name}", "delete", "image_delete"),
        ("/api/v1/images/imports/{id}", "get", "image_import_status"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["operationId"], id,
            "{path} {method}"
        );
    }
    for schema in ["Image", "ImageImport", "ImportRequest", "DeletedImage"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
