//! image2disk against a local HTTP server: formats, resume, verification, sizes, failures.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kiln_agent::image2disk::{
    Error, Format, Image2Disk, Options, Outcome, Progress, ProgressReport, RetryPolicy, TargetKind,
    image2disk,
};

const MIB: usize = 1 << 20;

fn fast() -> Options {
    Options {
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            give_up_after: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
        },
        progress_interval: Duration::from_millis(20),
        ..Options::default()
    }
}

/// Collects events and reports.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    updates: Mutex<Vec<ProgressReport>>,
}

impl Progress for Recorder {
    fn update(&self, r: &ProgressReport) {
        self.updates.lock().unwrap().push(r.clone());
    }
    fn event(&self, m: &str) {
        self.events.lock().unwrap().push(m.to_string());
    }
}

fn job(url: &str, body_sha: [u8; 32], disk: &Path, size: Option<u64>) -> Image2Disk {
    Image2Disk {
        url: url.to_string(),
        sha256: body_sha,
        disk: disk.to_owned(),
        size,
    }
}

fn run(j: &Image2Disk) -> (Result<Outcome, Error>, Recorder) {
    let rec = Recorder::default();
    let r = image2disk(&j.clone(), &fast(), &rec);
    (r, rec)
}

fn encodings(img: &[u8]) -> Vec<(Format, Vec<u8>)> {
    vec![
        (Format::Raw, img.to_vec()),
        (Format::Gzip, compressed()[0].clone()),
        (Format::Xz, compressed()[1].clone()),
        (Format::Zstd, compressed()[2].clone()),
    ]
}

#[test]
fn each_format_is_written_exactly_and_sparse() {
    let server = Server::start();
    let scratch = Scratch::new("formats");
    let img = image();
    for (format, body) in encodings(&img) {
        let sha = sha256(&body);
        let url = server.add(&format!("/img.{format}"), body.clone());
        let disk = scratch.path(&format!("disk-{format}"));
        let (r, rec) = run(&job(&url, sha, &disk, None));
        let o = r.unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(o.format, format);
        assert_eq!(o.target_kind, TargetKind::NewFile);
        assert_eq!(o.downloaded, body.len() as u64);
        assert_eq!(o.image_size, img.len() as u64);
        assert_eq!(o.sha256, hex(&sha));
        assert!(
            o.skipped_zeros >= 3 * MIB as u64,
            "{format}: skipped {}",
            o.skipped_zeros
        );
        let written = std::fs::read(&disk).unwrap();
        assert!(written == img, "{format}: content differs");
        let allocated = std::fs::metadata(&disk).unwrap().blocks() * 512;
        assert!(
            allocated < img.len() as u64 - 2 * MIB as u64,
            "{format}: not sparse ({allocated})"
        );
        let events = rec.events.lock().unwrap();
        assert!(
            events.iter().any(|e| e
                == &format!(
                    "stream is {format}, image {}",
                    match format {
                        Format::Raw => format!("{} bytes", img.len()),
                        _ => "unknown size".to_string(),
                    }
                )),
            "{events:?}"
        );
    }
}

#[test]
fn declared_size_is_checked_and_reported() {
    let server = Server::start();
    let scratch = Scratch::new("declared");
    let img = image();
    let body = compressed()[2].clone();
    let url = server.add("/img.zst", body.clone());
    let disk = scratch.path("disk");
    let rec = Recorder::default();
    let o = image2disk(
        &job(&url, sha256(&body), &disk, Some(img.len() as u64)),
        &fast(),
        &rec,
    )
    .unwrap();
    assert_eq!(o.image_size, img.len() as u64);
    let done = rec.updates.lock().unwrap().last().cloned().unwrap();
    assert!(done.done);
    assert_eq!(done.image_size, Some(img.len() as u64));
    assert_eq!(done.downloaded, body.len() as u64);

    // A declared size that is wrong fails verification (and wipes).
    let disk2 = scratch.path("disk2");
    let e = image2disk(
        &job(&url, sha256(&body), &disk2, Some(img.len() as u64 + 1)),
        &fast(),
        &rec,
    )
    .unwrap_err();
    assert_eq!(e.stage(), "verify", "{e}");
    let e = image2disk(
        &job(&url, sha256(&body), &disk2, Some(img.len() as u64 - 1000)),
        &fast(),
        &rec,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "verify: the image is longer than its declared size of {} bytes",
            img.len() - 1000
        )
    );
}

#[test]
fn fixed_size_file_is_written_in_place() {
    let server = Server::start();
    let scratch = Scratch::new("fixed");
    let img = image();
    for (format, body) in encodings(&img) {
        let url = server.add(&format!("/img.{format}"), body.clone());
        let disk = scratch.path(&format!("disk-{format}"));
        let old = patterned_file(&disk, 8 * MIB);
        let size = (format != Format::Raw && format != Format::Zstd).then_some(img.len() as u64);
        let (r, rec) = run(&job(&url, sha256(&body), &disk, size));
        let o = r.unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(o.target_kind, TargetKind::FixedFile);
        let after = std::fs::read(&disk).unwrap();
        assert_eq!(after.len(), 8 * MIB, "a fixed-size disk keeps its size");
        assert!(after[..img.len()] == img[..], "{format}: image differs");
        assert!(
            after[img.len()..] == old[img.len()..],
            "{format}: bytes past the image changed"
        );
        // With a known size the range is zeroed ahead and zeros skipped; without, written.
        let events = rec.events.lock().unwrap();
        if format == Format::Zstd {
            assert_eq!(o.skipped_zeros, 0);
            assert!(
                events.iter().any(|e| e.contains("writing zero blocks")),
                "{events:?}"
            );
        } else {
            assert!(o.skipped_zeros > 0, "{format}");
            assert!(
                events.iter().any(|e| e.starts_with("zeroed bytes 0..")),
                "{events:?}"
            );
        }
    }
}

/// Moves the download to `to` the first time it is asked (another server took over).
struct Relocating {
    to: String,
    asked: Mutex<Vec<String>>,
    inner: Recorder,
}

impl Progress for Relocating {
    fn event(&self, m: &str) {
        self.inner.event(m);
    }
    fn relocate(&self, url: &str) -> Option<String> {
        let mut asked = self.asked.lock().unwrap();
        asked.push(url.to_string());
        (asked.len() == 1).then(|| self.to.clone())
    }
}

#[test]
fn a_dead_server_s_download_resumes_where_another_server_serves_the_image() {
    let (dying, taking_over) = (Server::start(), Server::start());
    let scratch = Scratch::new("relocate");
    let img = image();
    let body = compressed()[2].clone();
    let from = dying.add("/images/os.raw.zst", body.clone());
    let to = taking_over.add("/images/os.raw.zst", body.clone());
    let cut = (body.len() / 3) as u64;
    dying.set_faults(Faults {
        cut_after: cut,
        cut_times: usize::MAX,
        ..Faults::default()
    });
    let disk = scratch.path("disk");
    let progress = Relocating {
        to: to.clone(),
        asked: Mutex::default(),
        inner: Recorder::default(),
    };
    let o = image2disk(&job(&from, sha256(&body), &disk, None), &fast(), &progress).unwrap();
    assert!(std::fs::read(&disk).unwrap() == img, "content differs");
    assert_eq!(o.downloaded, body.len() as u64);
    // Asked once, about the dying server's URL; never back to it.
    assert_eq!(*progress.asked.lock().unwrap(), [from]);
    assert_eq!(dying.requests().len(), 1);
    // The rest came from the other server, from the byte the first one stopped at.
    let rest = taking_over.requests();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        rest[0].contains(&format!("range=Some(\"bytes={cut}-\")")),
        "{rest:?}"
    );
    let events = progress.inner.events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.ends_with(&format!("the image is now served at {to}: resuming there"))),
        "{events:?}"
    );
}

#[test]
fn resumes_after_cuts_with_identical_result() {
    let server = Server::start();
    let scratch = Scratch::new("resume");
    let img = image();
    for (format, body) in encodings(&img) {
        let url = server.add(&format!("/img.{format}"), body.clone());
        let disk = scratch.path(&format!("disk-{format}"));
        server.set_faults(Faults {
            cut_after: (body.len() / 5) as u64 + 17,
            cut_times: 3,
            ..Faults::default()
        });
        let before = server.requests().len();
        let (r, rec) = run(&job(&url, sha256(&body), &disk, None));
        let o = r.unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(o.resumes, 3, "{format}");
        assert_eq!(o.downloaded, body.len() as u64);
        assert!(
            std::fs::read(&disk).unwrap() == img,
            "{format}: content differs"
        );
        let reqs = &server.requests()[before..];
        assert_eq!(reqs.len(), 4, "{reqs:?}");
        assert!(reqs[0].contains("range=None"), "{reqs:?}");
        let step = body.len() / 5 + 17;
        for (i, r) in reqs[1..].iter().enumerate() {
            assert!(
                r.contains(&format!("range=Some(\"bytes={}-\")", step * (i + 1))),
                "{r}"
            );
            assert!(r.contains("if-range=Some(\"\\\""), "{r}");
        }
        let events = rec.events.lock().unwrap();
        assert!(
            events.iter().any(|e| e.contains("retrying in")),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e == &format!("resumed at byte {step}")),
            "{events:?}"
        );
    }
}

#[test]
fn wrong_sha256_fails_and_wipes_first_and_last_mib() {
    let server = Server::start();
    let scratch = Scratch::new("sha");
    let img = image();
    let body = compressed()[0].clone();
    let url = server.add("/img.gz", body.clone());
    let disk = scratch.path("disk");
    let old = patterned_file(&disk, 10 * MIB);
    let wrong = [0x11; 32];
    let (r, _) = run(&job(&url, wrong, &disk, Some(img.len() as u64)));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "verify: sha256 mismatch: expected {}, got {}",
            hex(&wrong),
            hex(&sha256(&body))
        )
    );
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after.len(), 10 * MIB);
    assert!(after[..MIB].iter().all(|&b| b == 0), "first MiB not zeroed");
    assert!(
        after[9 * MIB..].iter().all(|&b| b == 0),
        "last MiB not zeroed"
    );
    // In between: the image as written, then the old contents.
    assert!(after[MIB..img.len()] == img[MIB..]);
    assert!(after[img.len()..9 * MIB] == old[img.len()..9 * MIB]);
}

#[test]
fn disk_too_small_fails_before_any_write() {
    let server = Server::start();
    let scratch = Scratch::new("small");
    let img = image();
    let zst = compressed()[2].clone();
    let zst_url = server.add("/img.zst", zst.clone());
    let raw_url = server.add("/img.raw", img.clone());
    let disk = scratch.path("disk");
    let old = patterned_file(&disk, 4 * MIB);

    // --size known: refused before connecting.
    let (r, _) = run(&job(&zst_url, sha256(&zst), &disk, Some(img.len() as u64)));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "disk: too small: the image is {} bytes, {} holds {} bytes",
            img.len(),
            disk.display(),
            4 * MIB
        )
    );
    assert!(server.requests().is_empty(), "no request expected");
    assert!(std::fs::read(&disk).unwrap() == old);

    // A raw stream: Content-Length is the image size.
    let (r, _) = run(&job(&raw_url, sha256(&img), &disk, None));
    let e = r.unwrap_err();
    assert!(
        matches!(e, Error::DiskTooSmall { needed, .. } if needed == img.len() as u64),
        "{e}"
    );
    assert!(std::fs::read(&disk).unwrap() == old, "the disk was touched");

    // Compressed without --size: found out while writing, so the disk is wiped.
    let (r, _) = run(&job(&zst_url, sha256(&zst), &disk, None));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "write: the image does not fit: {} holds {} bytes",
            disk.display(),
            4 * MIB
        )
    );
    let after = std::fs::read(&disk).unwrap();
    assert!(after[..MIB].iter().all(|&b| b == 0) && after[3 * MIB..].iter().all(|&b| b == 0));
}

#[test]
fn not_found_is_a_clear_error_and_creates_nothing() {
    let server = Server::start();
    let scratch = Scratch::new("404");
    let disk = scratch.path("disk");
    let url = server.url("/missing.img");
    let (r, _) = run(&job(&url, [0; 32], &disk, None));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("download: GET {url}: HTTP 404 Not Found")
    );
    assert!(
        !disk.exists(),
        "a new file target is removed when nothing was written"
    );
    assert_eq!(server.requests().len(), 1, "404 is not retried");
}

#[test]
fn connection_refused_is_retried_then_a_clear_error() {
    let scratch = Scratch::new("refused");
    let (_held, port) = refusing_port();
    let url = format!("http://127.0.0.1:{port}/img");
    let disk = scratch.path("disk");
    let mut opts = fast();
    opts.retry.give_up_after = Duration::from_millis(300);
    let rec = Recorder::default();
    let start = std::time::Instant::now();
    let e = image2disk(&job(&url, [0; 32], &disk, None), &opts, &rec).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("download: GET {url}: ")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(msg.contains("gave up after"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        rec.events.lock().unwrap().len() >= 2,
        "retries are reported"
    );
    assert!(!disk.exists());
}

#[test]
fn changed_file_before_writing_starts_over() {
    let server = Server::start();
    let scratch = Scratch::new("restart");
    let v1 = zstd(&random(3 * MIB, 7));
    let img2 = image();
    let v2 = zstd(&img2);
    let url = server.add("/img.zst", v1);
    server.set_faults(Faults {
        cut_after: 100_000,
        cut_times: 1,
        replace_after_first: Some(("/img.zst".into(), served(v2.clone(), "v2"))),
        ..Faults::default()
    });
    let disk = scratch.path("disk");
    let (r, rec) = run(&job(&url, sha256(&v2), &disk, None));
    let o = r.unwrap();
    assert_eq!(o.restarts, 1);
    assert!(std::fs::read(&disk).unwrap() == img2);
    let events = rec.events.lock().unwrap();
    assert!(
        events.iter().any(|e| e.contains("starting over")),
        "{events:?}"
    );
}

#[test]
fn changed_file_after_writing_fails_and_wipes() {
    let server = Server::start();
    let scratch = Scratch::new("changed");
    let img = image();
    let url = server.add("/img.raw", img.clone());
    let disk = scratch.path("disk");
    patterned_file(&disk, 8 * MIB);
    // The reconnect is answered only once the writer has started (the image's first bytes are
    // on the disk): waiting a fixed time for that was not enough on a loaded machine, and
    // before writing starts a changed image is rightly downloaded again from the start.
    let (written, head) = (disk.clone(), img[..4096].to_vec());
    server.set_faults(Faults {
        cut_after: 5 * MIB as u64,
        cut_times: 1,
        replace_after_first: Some(("/img.raw".into(), served(random(img.len(), 9), "v2"))),
        hold_after_first_until: Some(Arc::new(move || {
            let mut first = vec![0u8; head.len()];
            std::fs::File::open(&written)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut first))
                .is_ok_and(|()| first == head)
        })),
        ..Faults::default()
    });
    let e = image2disk(
        &job(&url, sha256(&img), &disk, None),
        &fast(),
        &Recorder::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("download: the image changed on the server during the download"),
        "{e}"
    );
    let after = std::fs::read(&disk).unwrap();
    assert!(after[..MIB].iter().all(|&b| b == 0) && after[7 * MIB..].iter().all(|&b| b == 0));
}

#[test]
fn corrupt_or_truncated_streams_fail_in_decompress_and_wipe() {
    let server = Server::start();
    let scratch = Scratch::new("corrupt");
    let mut gz = compressed()[0].clone();
    let at = gz.len() - 100;
    gz[at] ^= 0xff;
    let mut xzs = compressed()[1].clone();
    xzs.truncate(xzs.len() - 10);
    let mut zst = compressed()[2].clone();
    zst.truncate(zst.len() - 10);
    let mut early = compressed()[1].clone();
    early.truncate(early.len() / 3);
    for (name, body, format, wiped) in [
        ("img.gz", gz, "gzip", true),
        ("img.xz", xzs, "xz", true),
        ("img.zst", zst, "zstd", true),
        // Fails before the first 4 MiB buffer is full: nothing written, nothing wiped.
        ("early.xz", early, "xz", false),
    ] {
        let url = server.add(&format!("/{name}"), body.clone());
        let disk = scratch.path(name);
        let old = patterned_file(&disk, 8 * MIB);
        let (r, _) = run(&job(&url, sha256(&body), &disk, None));
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("decompress: {format} stream: ")),
            "{e}"
        );
        let after = std::fs::read(&disk).unwrap();
        if wiped {
            assert!(
                after[..MIB].iter().all(|&b| b == 0) && after[7 * MIB..].iter().all(|&b| b == 0),
                "{name}: not wiped"
            );
        } else {
            assert!(after == old, "{name}: touched");
        }
    }
}

#[test]
fn stalled_server_times_out_and_gives_up() {
    let server = Server::start();
    let scratch = Scratch::new("stall");
    let img = image();
    let url = server.add("/img.raw", img.clone());
    server.set_faults(Faults {
        stall_after: Some(5 * MIB as u64),
        ..Faults::default()
    });
    let disk = scratch.path("disk");
    let mut opts = fast();
    opts.retry.read_timeout = Duration::from_millis(200);
    opts.retry.give_up_after = Duration::from_millis(600);
    let e = image2disk(
        &job(&url, sha256(&img), &disk, None),
        &opts,
        &Recorder::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("download: "), "{msg}");
    assert!(msg.contains("gave up after"), "{msg}");
    // Writing had started (4 MiB buffer), so the new file was wiped, not removed.
    let after = std::fs::read(&disk).unwrap();
    assert!(after[..MIB].iter().all(|&b| b == 0));
}

#[test]
fn cancel_stops_the_run() {
    struct CancelOnFirstUpdate(Arc<AtomicBool>);
    impl Progress for CancelOnFirstUpdate {
        fn update(&self, r: &ProgressReport) {
            if r.downloaded > 0 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }
    let server = Server::start();
    let scratch = Scratch::new("cancel");
    let img = image();
    let url = server.add("/img.raw", img.clone());
    server.set_faults(Faults {
        stall_after: Some(MIB as u64),
        ..Faults::default()
    });
    let disk = scratch.path("disk");
    let cancel = Arc::new(AtomicBool::new(false));
    let mut opts = fast();
    opts.retry.read_timeout = Duration::from_millis(300);
    opts.retry.give_up_after = Duration::from_secs(30);
    opts.cancel = Some(cancel.clone());
    let start = std::time::Instant::now();
    let e = image2disk(
        &job(&url, sha256(&img), &disk, None),
        &opts,
        &CancelOnFirstUpdate(cancel),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        !disk.exists(),
        "nothing was written, so the new file is gone"
    );
}

#[test]
fn progress_reports_totals_and_eta() {
    let server = Server::start();
    let scratch = Scratch::new("progress");
    let img = image();
    let url = server.add("/img.raw", img.clone());
    // Slow the transfer down with cuts so several updates happen.
    server.set_faults(Faults {
        cut_after: 512 * 1024,
        cut_times: 6,
        ..Faults::default()
    });
    let disk = scratch.path("disk");
    let mut opts = fast();
    opts.retry.initial = Duration::from_millis(40);
    opts.retry.max = Duration::from_millis(40);
    let rec = Recorder::default();
    image2disk(&job(&url, sha256(&img), &disk, None), &opts, &rec).unwrap();
    let updates = rec.updates.lock().unwrap();
    assert!(updates.len() >= 3, "{}", updates.len());
    let mid = updates
        .iter()
        .find(|u| u.written > 0 && !u.done)
        .expect("a mid-run update");
    assert_eq!(mid.download_total, Some(img.len() as u64));
    assert_eq!(mid.image_size, Some(img.len() as u64));
    let last = updates.last().unwrap();
    assert!(last.done);
    assert_eq!(last.downloaded, img.len() as u64);
    assert_eq!(last.written, img.len() as u64);
    assert_eq!(last.resumes, 6);
    assert!(
        updates
            .windows(2)
            .all(|w| w[0].downloaded <= w[1].downloaded)
    );
}
