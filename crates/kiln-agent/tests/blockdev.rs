//! image2disk onto a real block device: a loop device over a scratch file (needs root and
//! /dev/loop-control; skipped otherwise).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use kiln_agent::image2disk::{
    Image2Disk, NoProgress, Options, RetryPolicy, TargetKind, image2disk,
};

const MIB: usize = 1 << 20;

struct Loop(String);

impl Loop {
    fn attach(file: &std::path::Path) -> Option<Loop> {
        let o = Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| Loop(String::from_utf8_lossy(&o.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["--detach", &self.0]).status();
    }
}

fn opts() -> Options {
    Options {
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            give_up_after: Duration::from_secs(3),
            ..RetryPolicy::default()
        },
        ..Options::default()
    }
}

#[test]
fn loop_device_written_with_direct_io_and_wiped_on_mismatch() {
    let scratch = Scratch::new("blockdev");
    let backing = scratch.path("backing");
    let old = patterned_file(&backing, 16 * MIB);
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("skipped: cannot attach a loop device (not root, or no /dev/loop-control)");
        return;
    };
    let server = Server::start();
    // A sector-aligned image (as real ones are) goes through O_DIRECT to the end.
    let mut img = image();
    img.truncate(img.len() / 512 * 512);
    for (name, body, size) in [
        ("img.raw", img.clone(), None),
        ("img.zst", zstd(&img), Some(img.len() as u64)),
    ] {
        let url = server.add(&format!("/{name}"), body.clone());
        let job = Image2Disk {
            url,
            sha256: sha256(&body),
            disk: dev.0.clone().into(),
            size,
        };
        let o = image2disk(&job, &opts(), &NoProgress).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(o.target_kind, TargetKind::BlockDevice);
        assert!(o.direct_io, "{name}: O_DIRECT expected");
        assert!(o.warnings.is_empty(), "{name}: {:?}", o.warnings);
        let after = std::fs::read(&dev.0).unwrap();
        assert_eq!(after.len(), 16 * MIB);
        assert!(after[..img.len()] == img[..], "{name}: image differs");
        assert!(
            after[img.len()..] == old[img.len()..],
            "{name}: past the image changed"
        );
        // Loop devices pass write-zeroes to the backing file: zeros were skipped.
        assert!(o.skipped_zeros > 0, "{name}: no zeros skipped");
    }

    // An unaligned tail falls back to buffered writes for the last piece.
    let odd = image();
    let url = server.add("/odd.raw", odd.clone());
    let job = Image2Disk {
        url,
        sha256: sha256(&odd),
        disk: dev.0.clone().into(),
        size: None,
    };
    let o = image2disk(&job, &opts(), &NoProgress).unwrap();
    assert!(!o.direct_io);
    let after = std::fs::read(&dev.0).unwrap();
    assert!(after[..odd.len()] == odd[..]);

    // Wrong digest: first and last MiB of the device zeroed.
    let job = Image2Disk {
        sha256: [7; 32],
        ..job
    };
    let e = image2disk(&job, &opts(), &NoProgress).unwrap_err();
    assert!(e.to_string().starts_with("verify: sha256 mismatch"), "{e}");
    let after = std::fs::read(&dev.0).unwrap();
    assert!(after[..MIB].iter().all(|&b| b == 0));
    assert!(after[15 * MIB..].iter().all(|&b| b == 0));

    // Too small: refused before writing.
    let big = Image2Disk {
        size: Some(17 * MIB as u64),
        ..job
    };
    let e = image2disk(&big, &opts(), &NoProgress).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("disk: too small: the image is 17825792 bytes"),
        "{e}"
    );
}
