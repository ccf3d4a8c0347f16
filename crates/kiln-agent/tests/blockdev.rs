//! image2disk and wipe on a real block device: a loop device over a scratch file (needs root and
//! /dev/loop-control; skipped otherwise).

mod common;

use std::os::unix::fs::OpenOptionsExt;
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

fn run(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (apt-get install util-linux e2fsprogs)"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn wipe_leaves_a_partitioned_device_with_nothing_to_find() {
    let scratch = Scratch::new("blockdev-wipe");
    let backing = scratch.path("backing");
    patterned_file(&backing, 64 * MIB);
    // Two partitions (1–17 MiB, 17–63 MiB) with an ext4 file system in the first.
    let layout = "label: gpt\nstart=2048, size=32768\nstart=34816, size=94208\n";
    let o = Command::new("sfdisk")
        .args(["--quiet", backing.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(layout.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sfdisk (apt-get install fdisk)");
    assert!(o.status.success(), "sfdisk failed");
    // ext4 in the first partition, made in the file (this machine's kernel may lack the
    // partition parsers that would give the loop device a p1).
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "offset=1048576,nodiscard",
            backing.to_str().unwrap(),
            "16M",
        ],
    );
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("skipped: cannot attach a loop device (not root, or no /dev/loop-control)");
        return;
    };
    let found = |offset: &str| {
        let o = Command::new("blkid")
            .args(["-p", "-O", offset, &dev.0])
            .output()
            .expect("blkid (apt-get install util-linux)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(found("0").contains("PTTYPE=\"gpt\""), "{}", found("0"));
    assert!(
        found("1048576").contains("TYPE=\"ext4\""),
        "{}",
        found("1048576")
    );
    let p1 = format!("{}p1", dev.0);
    let had_p1 = std::path::Path::new(&p1).exists();

    let lines = std::cell::RefCell::new(Vec::new());
    let w = kiln_agent::wipe::wipe(dev.0.as_ref(), &|l| lines.borrow_mut().push(l))
        .unwrap_or_else(|e| panic!("wipe {}: {e}", dev.0));
    assert_eq!(w.table, Some("gpt"), "{:?}", lines.borrow());
    assert_eq!(w.partitions, 2);
    assert!(w.reread.is_ok(), "{:?}", w.reread);
    // Nothing identifies the disk or the old file system any more, and the kernel dropped
    // the partitions it had.
    assert_eq!(found("0"), "", "blkid still finds a signature");
    assert_eq!(found("1048576"), "", "blkid still finds the ext4");
    if had_p1 {
        assert!(
            !std::path::Path::new(&p1).exists(),
            "{p1} still there after the wipe"
        );
    }
    let after = std::fs::read(&dev.0).unwrap();
    for r in [0..2 * MIB, 16 * MIB..18 * MIB, 62 * MIB..64 * MIB] {
        assert!(after[r.clone()].iter().all(|&b| b == 0), "{r:?} not zero");
    }
    // A loop device passes discard to its backing file (holes): it reads back zeros.
    if w.discard.is_ok() {
        assert!(after.iter().all(|&b| b == 0), "discarded but not zero");
    }
    // A device in use is refused, naming it.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev.0)
        .unwrap();
    let e = kiln_agent::wipe::wipe(dev.0.as_ref(), &|_| {}).unwrap_err();
    assert!(e.to_string().contains(&dev.0), "{e}");
    drop(held);
}
