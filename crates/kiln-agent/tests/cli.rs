//! The `kiln-agent image2disk` command: exit codes and one-line messages.

mod common;

use std::process::{Command, Output};

use common::*;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn success_prints_a_summary() {
    let server = Server::start();
    let scratch = Scratch::new("cli-ok");
    let body = compressed()[2].clone();
    let url = server.add("/img.zst", body.clone());
    let disk = scratch.path("disk");
    let size = image().len().to_string();
    let sha = hex(&sha256(&body));
    let o = agent(&[
        "image2disk",
        "--url",
        &url,
        "--sha256",
        &sha,
        "--disk",
        disk.to_str().unwrap(),
        "--size",
        &size,
        "--progress-interval",
        "50ms",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        out.starts_with("image2disk: wrote 6.00 MiB (zstd, "),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&format!("sha256 {sha} ok")),
        "{out}"
    );
    assert!(
        stderr(&o).contains("image2disk: stream is zstd"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read(&disk).unwrap() == image());
}

#[test]
fn failure_is_one_line_naming_the_stage() {
    let server = Server::start();
    let scratch = Scratch::new("cli-fail");
    let img = image();
    let url = server.add("/img.raw", img.clone());
    let disk = scratch.path("disk");
    let wrong = "ab".repeat(32);
    let o = agent(&[
        "image2disk",
        "--quiet",
        "--url",
        &url,
        "--sha256",
        &wrong,
        "--disk",
        disk.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "kiln-agent: image2disk: verify: sha256 mismatch: expected {wrong}, got {}",
            hex(&sha256(&img))
        )
    );
    assert!(o.stdout.is_empty());

    // Nothing listens on the port: retried briefly, then one line.
    let (_held, port) = refusing_port();
    let url = format!("http://127.0.0.1:{port}/img");
    let o = agent(&[
        "image2disk",
        "-q",
        "--url",
        &url,
        "--sha256",
        &wrong,
        "--disk",
        scratch.path("other").to_str().unwrap(),
        "--retry-for",
        "200ms",
        "--backoff-initial",
        "20ms",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("kiln-agent: image2disk: download: GET {url}: ")),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let o = agent(&[
        "image2disk",
        "--url",
        "http://127.0.0.1:1/x",
        "--sha256",
        "xyz",
        "--disk",
        "/nonexistent/d",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("sha256 must be 64 hex digits"),
        "{}",
        stderr(&o)
    );
    let o = agent(&["image2disk", "--url", "http://127.0.0.1:1/x"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unopenable_disk_is_a_disk_error() {
    let o = agent(&[
        "image2disk",
        "-q",
        "--url",
        "http://127.0.0.1:1/x",
        "--sha256",
        &"00".repeat(32),
        "--disk",
        "/nonexistent-dir/disk",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim_end(),
        "kiln-agent: image2disk: disk: /nonexistent-dir/disk: No such file or directory (os error 2)"
    );
}
