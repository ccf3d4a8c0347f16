use std::io::{self, BufRead, Write as _};
use std::net::TcpListener;
use std::process::Command as Process;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::format::{Magic, detect};
use super::*;

/// 1 MiB with runs of zeros and of varied bytes, like a disk.
pub(crate) fn disk() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| if i % 4096 < 2048 { 0 } else { (i % 251) as u8 })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn how(name: &str) -> ImportSpec {
    ImportSpec {
        name: name.into(),
        replace: false,
        level: 3,
        label: format!("{name} source"),
        sha256: None,
    }
}

/// Imports the local file `path` as a client's upload would be.
fn import(
    dir: &Path,
    store: &dyn Store,
    path: &Path,
    spec: &ImportSpec,
) -> Result<ImageRecord, ImageError> {
    let spec = ImportSpec {
        label: path.display().to_string(),
        ..spec.clone()
    };
    import_file(dir, store, path, &spec).map(|i| i.record)
}

/// The served file of `rec`: its digest is the record's and it decodes to `raw`.
fn assert_serves(data_dir: &Path, rec: &ImageRecord, raw: &[u8]) {
    let served = std::fs::read(images_dir(data_dir).join(&rec.file)).unwrap();
    assert_eq!(rec.sha256, sha256_hex(&served), "{}", rec.file);
    assert_eq!(rec.raw_size, raw.len() as u64);
    assert!(
        zstd::decode_all(&served[..]).unwrap() == raw,
        "{}",
        rec.file
    );
}

fn qemu_img_qcow2(raw: &Path, qcow2: &Path) {
    let status = Process::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(qcow2)
        .status()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(status.success());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn imports_raw_and_records_digest_of_served_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let raw = dir.path().join("disk.raw");
    let data = disk();
    std::fs::write(&raw, &data).unwrap();
    let rec = import(dir.path(), store, &raw, &how("disk")).unwrap();
    assert_serves(dir.path(), &rec, &data);
    assert_eq!(rec.source_format, "raw");
    assert_eq!(rec.file, format!("disk-{}.raw.zst", &rec.sha256[..16]));
    assert_eq!(store.images().unwrap(), vec![rec.clone()]);
    // Names are checked before anything is read.
    for bad in ["Bad Name", "../up"] {
        assert!(matches!(
            ImportSpec::new(bad, false, 3, "x", None),
            Err(ImageError::Invalid(_))
        ));
    }
    assert!(ImportSpec::new("ok", false, 0, "x", None).is_err());
    assert!(ImportSpec::new("ok", false, 3, "x", Some("abc")).is_err());
    // An image that is already raw+zstd is kept byte for byte.
    let served = std::fs::read(images_dir(dir.path()).join(&rec.file)).unwrap();
    let zst = dir.path().join("again.raw.zst");
    std::fs::write(&zst, &served).unwrap();
    let again = import(dir.path(), store, &zst, &how("again")).unwrap();
    assert_eq!(
        (again.sha256, again.raw_size, again.source_format.as_str()),
        (rec.sha256.clone(), rec.raw_size, "raw.zst")
    );
}

#[test]
fn every_format_is_told_by_content_and_stored_raw() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let data = disk();
    let raw = dir.path().join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let qcow2 = dir.path().join("src.qcow2");
    qemu_img_qcow2(&raw, &qcow2);
    let qcow2_bytes = std::fs::read(&qcow2).unwrap();
    assert_eq!(detect(&qcow2_bytes), Magic::Qcow2);
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    // Two gzip members, as pigz and `cat a.gz b.gz` make.
    let two_members = [gzip(&data[..1000]), gzip(&data[1000..])].concat();
    let inputs: Vec<(&str, Vec<u8>, &str)> = [
        ("gzip", gzip(&data), "raw.gz"),
        ("gzip-members", two_members, "raw.gz"),
        ("xz", xz, "raw.xz"),
        ("bzip2", bz2, "raw.bz2"),
        ("qcow2", qcow2_bytes.clone(), "qcow2"),
        ("qcow2-gz", gzip(&qcow2_bytes), "qcow2.gz"),
        (
            "qcow2-zst",
            zstd::encode_all(&qcow2_bytes[..], 1).unwrap(),
            "qcow2.zst",
        ),
    ]
    .into();
    for (name, bytes, source_format) in inputs {
        // File names that say nothing true: only the content decides.
        let path = dir.path().join(format!("{name}.raw"));
        std::fs::write(&path, &bytes).unwrap();
        let rec = import(dir.path(), store, &path, &how(name))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(rec.source_format, source_format, "{name}");
        assert_serves(dir.path(), &rec, &data);
    }
    // A damaged stream is an error naming the file and the format, not an image.
    let broken = dir.path().join("broken.gz");
    let mut bytes = gzip(&data);
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&broken, &bytes).unwrap();
    let e = import(dir.path(), store, &broken, &how("broken")).unwrap_err();
    assert!(matches!(e, ImageError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("broken.gz"), "{e}");
    assert!(store.image("broken").unwrap().is_none());
    // An HTML page (say, a login page served instead of the image) is not a disk.
    let page = dir.path().join("page.gz");
    std::fs::write(&page, gzip(b"<html><body>sign in</body></html>\n")).unwrap();
    let e = import(dir.path(), store, &page, &how("page")).unwrap_err();
    assert!(e.to_string().contains("not a disk image"), "{e}");
    // Compression inside compression is refused rather than stored as a disk.
    let twice = dir.path().join("twice.gz");
    std::fs::write(&twice, gzip(&gzip(&data))).unwrap();
    let e = import(dir.path(), store, &twice, &how("twice")).unwrap_err();
    assert!(e.to_string().contains("gz data inside gz"), "{e}");
}

#[test]
fn a_qcow2_naming_another_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let secret = dir.path().join("secret.raw");
    std::fs::write(&secret, disk()).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let status = Process::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&secret)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(status.success());
    let e = import(dir.path(), store, &overlay, &how("overlay")).unwrap_err();
    assert!(e.to_string().contains("refers to another file"), "{e:#}");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn replacing_needs_replace_and_the_error_names_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let (old, new) = (disk(), disk().into_iter().rev().collect::<Vec<u8>>());
    let src = dir.path().join("src.raw");
    std::fs::write(&src, &old).unwrap();
    let first = import(dir.path(), store, &src, &how("os-v1.30")).unwrap();
    std::fs::write(&src, &new).unwrap();
    let e = how("os-v1.30").check_free(store).unwrap_err();
    let e2 = import(dir.path(), store, &src, &how("os-v1.30")).unwrap_err();
    for e in [e, e2] {
        assert!(matches!(e, ImageError::Exists(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("\"os-v1.30\"") && e.contains(&first.sha256) && e.contains("--replace"),
            "{e}"
        );
    }
    assert_eq!(store.image("os-v1.30").unwrap(), Some(first));
}

const TEMPLATE: &str = "name: install\nactions:\n  - name: stream\n    kind: image2disk\n    with:\n      url: '{{ images[\"os-v1.30\"].url }}'\n      sha256: '{{ images[\"os-v1.30\"].sha256 }}'\n";

#[test]
fn a_replaced_image_leaves_the_bytes_a_workflow_was_given_and_is_kept_while_used() {
    let dir = tempfile::tempdir().unwrap();
    let store_arc = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store_arc;
    let csv = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
               m1,,,,52:54:00:00:00:01,10.0.0.11,255.255.255.0,10.0.0.1,10.0.0.1,,/dev/vda\n\
               m2,,,,52:54:00:00:00:02,10.0.0.12,255.255.255.0,10.0.0.1,10.0.0.1,,/dev/vda\n";
    let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", csv).unwrap();
    store.enroll(&hw).unwrap();
    let template = kiln_model::template::parse_template("t.yaml", TEMPLATE).unwrap();
    let engine = kiln_engine::Engine::new(Arc::clone(&store_arc));
    let server = "http://10.0.0.1:8080";

    let (old, new) = (disk(), disk().into_iter().rev().collect::<Vec<u8>>());
    let src = dir.path().join("src.raw");
    std::fs::write(&src, &old).unwrap();
    let first = import(dir.path(), store, &src, &how("os-v1.30")).unwrap();
    let wf1 = engine
        .create(&template, &hw[..1], server, false)
        .unwrap()
        .remove(0);

    std::fs::write(&src, &new).unwrap();
    let replace = ImportSpec {
        replace: true,
        ..how("os-v1.30")
    };
    let second = import(dir.path(), store, &src, &replace).unwrap();
    assert_ne!(first.file, second.file);
    assert_eq!(store.images().unwrap(), vec![second.clone()]);
    let wf2 = engine
        .create(&template, &hw[1..], server, false)
        .unwrap()
        .remove(0);

    // Each workflow keeps the URL it was rendered with, and that URL's file its bytes.
    for (wf, rec, raw) in [(&wf1, &first, &old), (&wf2, &second, &new)] {
        let stored = store.workflow(&wf.id).unwrap().unwrap();
        let params = &stored.actions[0].spec.params;
        assert_eq!(params["url"], format!("{server}/images/{}", rec.file));
        assert_eq!(params["sha256"], rec.sha256);
        assert_serves(dir.path(), rec, raw);
    }

    // While wf2 is unfinished the image it streams is not deleted; a second record naming
    // the same file can go, keeping the file.
    let e = delete(dir.path(), store, "os-v1.30").unwrap_err();
    assert!(matches!(e, ImageError::InUse(_)), "{e:?}");
    assert!(e.to_string().contains(&wf2.id), "{e}");
    let alias = ImageRecord {
        name: "alias".into(),
        ..second.clone()
    };
    assert!(store.add_image(&alias).unwrap());
    let (gone, removed) = delete(dir.path(), store, "alias").unwrap();
    assert_eq!((gone.name.as_str(), removed), ("alias", false));
    assert!(images_dir(dir.path()).join(&second.file).exists());
    assert!(matches!(
        delete(dir.path(), store, "alias"),
        Err(ImageError::NotFound(_))
    ));
}

#[test]
fn deleting_an_unused_image_removes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let src = dir.path().join("src.raw");
    std::fs::write(&src, disk()).unwrap();
    let rec = import(dir.path(), store, &src, &how("os")).unwrap();
    let (gone, removed) = delete(dir.path(), store, "os").unwrap();
    assert_eq!((gone, removed), (rec.clone(), true));
    assert!(!images_dir(dir.path()).join(&rec.file).exists());
    assert!(store.images().unwrap().is_empty());
}

/// Serves `body` at `/PATH` (404 elsewhere) on 127.0.0.1, one connection at a time,
/// for as long as the test runs; returns the base URL.
pub(crate) fn serve(path: &'static str, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = io::BufReader::new(conn.try_clone().unwrap());
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

#[test]
fn imports_from_a_url_checking_status_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let data = disk();
    let body = gzip(&data);
    let body_sha = sha256_hex(&body);
    let base = serve("ubuntu-2204-kube-v1.30.gz", body.clone());
    let url = format!("{base}/ubuntu-2204-kube-v1.30.gz");
    let imports = Imports::default();
    let spec = |sha: Option<&str>| {
        let name = kiln_api::images::default_name(&url);
        ImportSpec::new(&name, false, 3, &url, sha).unwrap()
    };

    let wrong = "0".repeat(64);
    let task = imports.begin("x", &url, 1);
    let e = import_url(dir.path(), store, &url, &spec(Some(&wrong)), &task).unwrap_err();
    assert!(matches!(e, ImageError::Sha256Mismatch(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains(&url) && e.contains(&body_sha), "{e}");
    assert!(store.images().unwrap().is_empty());

    let task = imports.begin("x", &url, 1);
    let got = import_url(dir.path(), store, &url, &spec(Some(&body_sha)), &task).unwrap();
    let rec = got.record;
    assert_eq!(
        (rec.name.as_str(), rec.source_format.as_str()),
        ("ubuntu-2204-kube-v1.30", "raw.gz")
    );
    assert_serves(dir.path(), &rec, &data);
    let seen = task.snapshot();
    assert_eq!(
        (seen.bytes_done, seen.bytes_total),
        (body.len() as u64, Some(body.len() as u64))
    );

    let missing = format!("{base}/nope.raw");
    let task = imports.begin("nope", &missing, 1);
    let e = import_url(dir.path(), store, &missing, &how("nope"), &task).unwrap_err();
    assert!(matches!(e, ImageError::Download(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains(&missing) && e.contains("HTTP 404"), "{e}");
    // The server never reads its own files for a caller.
    let e = import_url(dir.path(), store, "file:///etc/passwd", &how("p"), &task).unwrap_err();
    assert!(matches!(e, ImageError::Invalid(_)), "{e:?}");
    // Nothing of the downloads is left behind but the imported image.
    let left: Vec<String> = std::fs::read_dir(images_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [rec.file]);
}

#[test]
fn the_api_shows_the_url_path_and_an_rfc3339_time() {
    let rec = ImageRecord {
        name: "os-v1.30".into(),
        file: "os-v1.30-0123456789abcdef.raw.zst".into(),
        raw_size: 42,
        sha256: "ab".repeat(32),
        created_ms: 1_700_000_000_123,
        source_format: "qcow2.xz".into(),
    };
    let v = serde_json::to_value(image_resource(&rec)).unwrap();
    assert_eq!(v["url_path"], "/images/os-v1.30-0123456789abcdef.raw.zst");
    assert_eq!(v["created"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["source_format"], "qcow2.xz");
    assert_eq!(v["raw_size"], 42);
}

#[test]
fn a_download_stops_when_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_store::open_sqlite(dir.path()).unwrap();
    let store = &*store;
    let base = serve("os.gz", gzip(&disk()));
    let url = format!("{base}/os.gz");
    let imports = Imports::default();
    let task = imports.begin("os", &url, 1);
    // The registry goes with the admin API's state when the API stops.
    drop(imports);
    let e = import_url(dir.path(), store, &url, &how("os"), &task).unwrap_err();
    assert!(e.to_string().contains("the server is stopping"), "{e}");
    assert!(store.images().unwrap().is_empty());
    let left = std::fs::read_dir(images_dir(dir.path())).unwrap().count();
    assert_eq!(left, 0);
}
