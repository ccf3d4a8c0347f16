//! The one block-device ioctl that has no safe wrapper in rustix: BLKRRPART.
//!
//! The workspace denies `unsafe_code`; this module is the single exception. Everything else
//! the target needs has a safe API: the size by seeking to the end, the logical sector size
//! by `rustix::fs::ioctl_blksszget`, zeroing ahead by `fallocate(PUNCH_HOLE)` (which on a
//! block device is `blkdev_issue_zeroout` without the slow fallback).
#![allow(unsafe_code)] // ioctl(2) is an FFI call; the opcode below takes no argument.

use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{NoArg, Opcode, ioctl, opcode};

/// `BLKRRPART`, `_IO(0x12, 95)` in `<linux/fs.h>`: re-read the partition table.
const BLKRRPART: Opcode = opcode::none(0x12, 95);

/// Asks the kernel to re-read the partition table of the whole-disk device `fd`.
pub(crate) fn reread_partition_table<Fd: AsFd>(fd: Fd) -> io::Result<()> {
    // SAFETY: BLKRRPART is a no-argument ioctl (`_IO`): the kernel reads nothing from and
    // writes nothing to our memory, so `NoArg` describes it exactly. On a file that is not a
    // block device the kernel answers ENOTTY.
    unsafe { ioctl(fd, NoArg::<BLKRRPART>::new()) }.map_err(io::Error::from)
}
