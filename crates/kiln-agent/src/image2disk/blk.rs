//! The block-device ioctls that have no safe wrapper in rustix: BLKRRPART and BLKDISCARD.
//!
//! The workspace denies `unsafe_code`; this module is the single exception. Everything else
//! the target needs has a safe API: the size by seeking to the end, the logical sector size
//! by `rustix::fs::ioctl_blksszget`, zeroing ahead by `fallocate(PUNCH_HOLE)` (which on a
//! block device is `blkdev_issue_zeroout` without the slow fallback).
#![allow(unsafe_code)] // ioctl(2) is an FFI call; each opcode's argument is described below.

use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{NoArg, Opcode, Setter, ioctl, opcode};

/// `BLKRRPART`, `_IO(0x12, 95)` in `<linux/fs.h>`: re-read the partition table.
const BLKRRPART: Opcode = opcode::none(0x12, 95);
/// `BLKDISCARD`, `_IO(0x12, 119)` in `<linux/fs.h>`: discard a byte range given as
/// `uint64_t[2]` (start, length). Declared `_IO` although it reads its argument.
const BLKDISCARD: Opcode = opcode::none(0x12, 119);

/// Asks the kernel to re-read the partition table of the whole-disk device `fd`.
pub(crate) fn reread_partition_table<Fd: AsFd>(fd: Fd) -> io::Result<()> {
    // SAFETY: BLKRRPART is a no-argument ioctl (`_IO`): the kernel reads nothing from and
    // writes nothing to our memory, so `NoArg` describes it exactly. On a file that is not a
    // block device the kernel answers ENOTTY.
    unsafe { ioctl(fd, NoArg::<BLKRRPART>::new()) }.map_err(io::Error::from)
}

/// Tells the device that `len` bytes from `start` (both multiples of the logical sector
/// size) hold nothing worth keeping (TRIM, UNMAP, NVMe deallocate). What they read back as
/// afterwards depends on the device. Devices without discard answer EOPNOTSUPP.
pub(crate) fn discard<Fd: AsFd>(fd: Fd, start: u64, len: u64) -> io::Result<()> {
    // SAFETY: the kernel copies a `uint64_t[2]` from the pointer rustix passes, which points
    // at the `[u64; 2]` the `Setter` owns for the duration of the call; it writes nothing back.
    unsafe { ioctl(fd, Setter::<BLKDISCARD, [u64; 2]>::new([start, len])) }.map_err(io::Error::from)
}
