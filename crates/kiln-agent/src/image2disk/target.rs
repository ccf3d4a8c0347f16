//! The disk the image goes to: a block device, or a regular file standing in for one.
//!
//! The rule for files: a file that does not exist or is empty is a *new* file — it grows to
//! the image's size, and zero blocks become holes. An existing non-empty file is a *fixed-size
//! disk* (a VM's raw disk made by `truncate -s 10G disk.img`): its length is its capacity, the
//! image must fit in it, and it is written in place like a block device.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FallocateFlags, OFlags};

use super::blk;

/// Alignment of write buffers (enough for O_DIRECT on any common device).
pub const ALIGN: usize = 4096;
/// Granularity of zero detection; also the hole size on files.
pub const ZERO_BLOCK: usize = 4096;
const MIB: u64 = 1 << 20;

/// What kind of target `--disk` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetKind {
    /// A block device: fixed size, written with O_DIRECT when possible.
    BlockDevice,
    /// An existing non-empty regular file: fixed size, written in place.
    FixedFile,
    /// A regular file that did not exist or was empty: grows to the image size, sparse.
    NewFile,
}

/// A heap buffer whose usable part starts on an [`ALIGN`] boundary (for O_DIRECT).
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "cannot align a u8 buffer");
        AlignedBuf { raw, start, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The ranges of `buf` to write. Runs of all-zero `block`-sized blocks (counted from the
/// buffer start, which the caller keeps aligned) that lie within the first `skippable` bytes
/// (where the target reads back zeros) are left out when the run is at least `min_skip` bytes
/// long; shorter zero runs are written with their neighbours so writes stay few and large.
/// `skippable == 0` writes everything.
pub fn plan_writes(
    buf: &[u8],
    skippable: usize,
    block: usize,
    min_skip: usize,
) -> Vec<Range<usize>> {
    if buf.is_empty() {
        return Vec::new();
    }
    if skippable == 0 {
        return std::iter::once(0..buf.len()).collect();
    }
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut zero_run: Option<usize> = None;
    let push_data = |out: &mut Vec<Range<usize>>, r: Range<usize>| match out.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => out.push(r),
    };
    for (i, chunk) in buf.chunks(block).enumerate() {
        let start = i * block;
        if start + chunk.len() <= skippable && is_zero(chunk) {
            zero_run.get_or_insert(start);
            continue;
        }
        if let Some(z) = zero_run.take().filter(|&z| start - z < min_skip) {
            push_data(&mut out, z..start);
        }
        push_data(&mut out, start..start + chunk.len());
    }
    if let Some(z) = zero_run.filter(|&z| buf.len() - z < min_skip) {
        push_data(&mut out, z..buf.len());
    }
    out
}

/// Whether every byte of `b` is zero (OR-folds 256-byte pieces, which vectorises).
pub fn is_zero(b: &[u8]) -> bool {
    b.chunks(256)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

/// The byte range to zero ahead of writing so zero blocks can be skipped, or `None` when the
/// target needs no zeroing (a new file reads back zeros already) or the image size is unknown
/// (then zeros are written). The range covers the image rounded *down* to the sector and
/// page, so nothing past the image is touched; the partial block at its end is written.
pub fn zero_ahead_range(
    kind: TargetKind,
    image_size: Option<u64>,
    capacity: Option<u64>,
    sector: u64,
) -> Option<Range<u64>> {
    if kind == TargetKind::NewFile {
        return None;
    }
    let size = image_size?;
    let align = sector.max(ALIGN as u64);
    let mut end = size / align * align;
    if let Some(cap) = capacity {
        end = end.min(cap / align * align);
    }
    (end > 0).then_some(0..end)
}

/// Up to which byte blocks the writer skips read back as zeros: anywhere in a new file
/// (holes), on a fixed target only within the range zeroed ahead, else nowhere (zeros are
/// written: when unsure, write).
pub fn zeros_read_back_until(kind: TargetKind, zeroed_ahead: Option<&Range<u64>>) -> u64 {
    match (kind, zeroed_ahead) {
        (TargetKind::NewFile, _) => u64::MAX,
        (_, Some(r)) if r.start == 0 => r.end,
        _ => 0,
    }
}

/// An opened target.
pub struct Target {
    path: PathBuf,
    kind: TargetKind,
    file: File,
    capacity: Option<u64>,
    sector: u64,
    direct: AtomicBool,
    created: bool,
}

/// Opens a block device with `flags`. Right after a partition-table re-read the kernel
/// (and udev, where it runs) holds the device for a moment: EBUSY then is transient. A
/// mounted partition keeps it busy, and that still fails, after about 2 s.
fn open_device(path: &Path, flags: i32) -> io::Result<File> {
    let mut tries = 0;
    loop {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)
        {
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                    && tries < 20 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

impl Target {
    /// Opens `path` for writing. Block devices are opened exclusively (O_EXCL: fails while a
    /// partition is mounted) and, with `direct_io`, with O_DIRECT.
    pub fn open(path: &Path, direct_io: bool) -> io::Result<Target> {
        let meta = match fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let target = |kind, file, capacity, created| Target {
            path: path.to_owned(),
            kind,
            file,
            capacity,
            sector: 512,
            direct: AtomicBool::new(false),
            created,
        };
        match meta {
            Some(m) if m.file_type().is_block_device() => {
                Target::open_block_device(path, direct_io)
            }
            Some(m) if m.is_file() && m.len() > 0 => {
                let file = OpenOptions::new().write(true).open(path)?;
                Ok(target(TargetKind::FixedFile, file, Some(m.len()), false))
            }
            Some(m) if m.is_file() => {
                let file = OpenOptions::new().write(true).open(path)?;
                Ok(target(TargetKind::NewFile, file, None, false))
            }
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a block device or a regular file",
            )),
            None => {
                let file = OpenOptions::new().write(true).create_new(true).open(path)?;
                Ok(target(TargetKind::NewFile, file, None, true))
            }
        }
    }

    fn open_block_device(path: &Path, direct_io: bool) -> io::Result<Target> {
        let excl = OFlags::EXCL.bits() as i32;
        let (mut file, direct) = if direct_io {
            match open_device(path, excl | OFlags::DIRECT.bits() as i32) {
                Ok(f) => (f, true),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    (open_device(path, excl)?, false)
                }
                Err(e) => return Err(busy(e)),
            }
        } else {
            (open_device(path, excl).map_err(busy)?, false)
        };
        let capacity = file.seek(SeekFrom::End(0))?;
        let sector = u64::from(rustix::fs::ioctl_blksszget(&file)?);
        // O_DIRECT needs buffers aligned to the sector; ours are aligned to ALIGN.
        let direct = direct && sector as usize <= ALIGN;
        let t = Target {
            path: path.to_owned(),
            kind: TargetKind::BlockDevice,
            file,
            capacity: Some(capacity),
            sector,
            direct: AtomicBool::new(direct),
            created: false,
        };
        if !direct {
            t.set_direct(false)?;
        }
        Ok(t)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// Size in bytes for fixed-size targets; `None` for a new file (grows freely).
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Whether writes currently bypass the page cache.
    pub fn direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// Shortest zero run worth skipping: with O_DIRECT every write waits for the device, so
    /// only long runs are worth splitting a write for.
    pub fn min_zero_skip(&self) -> usize {
        if self.direct() { 64 * 1024 } else { ZERO_BLOCK }
    }

    fn set_direct(&self, on: bool) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(&self.file, flags)?;
        self.direct.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Zeroes the image's range ahead of writing when the target can do it cheaply and
    /// guarantees zeros on read-back (`fallocate(PUNCH_HOLE)`: a hole in a file; on a block
    /// device the kernel's write-zeroes without fallback, so an unsupported device says so
    /// instead of slowly writing zeros). Returns up to which byte zero blocks may be skipped
    /// ([`zeros_read_back_until`]), and a note saying why.
    pub fn prepare(&self, image_size: Option<u64>) -> (u64, String) {
        let Some(range) = zero_ahead_range(self.kind, image_size, self.capacity, self.sector)
        else {
            let why = if self.kind == TargetKind::NewFile {
                "new file: zero blocks become holes"
            } else {
                "image size unknown: writing zero blocks too"
            };
            return (zeros_read_back_until(self.kind, None), why.into());
        };
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, flags, range.start, range.end - range.start) {
            Ok(()) => (
                zeros_read_back_until(self.kind, Some(&range)),
                format!(
                    "zeroed bytes {}..{} ahead: skipping zero blocks",
                    range.start, range.end
                ),
            ),
            Err(e) => (
                zeros_read_back_until(self.kind, None),
                format!("cannot zero ahead ({e}): writing zero blocks too"),
            ),
        }
    }

    /// Writes `data` at `offset`. With O_DIRECT on, a piece that is not sector-aligned (the
    /// image's tail) switches the target to buffered writes for the rest.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.direct()
            && (!aligned(offset, self.sector)
                || !aligned(data.len() as u64, self.sector)
                || data.as_ptr().align_offset(ALIGN) != 0)
        {
            self.set_direct(false)?;
        }
        self.file.write_all_at(data, offset)
    }

    /// Ends a successful write of `total` bytes: a new file gets its full length (a trailing
    /// zero run is a hole), then data reaches the device (fdatasync; on a block device that
    /// also flushes its write cache).
    pub fn finish(&self, total: u64) -> io::Result<()> {
        if self.kind == TargetKind::NewFile && self.file.metadata()?.len() < total {
            self.file.set_len(total)?;
        }
        self.file.sync_data()
    }

    /// Makes the disk unbootable after a failed or wrong write: zeroes its first and last MiB
    /// (MBR + GPT header, GPT backup header), flushes, and re-reads the partition table.
    pub fn wipe(&self) -> io::Result<()> {
        if self.direct() {
            self.set_direct(false)?;
        }
        let len = match self.capacity {
            Some(c) => c,
            None => self.file.metadata()?.len(),
        };
        let zeros = vec![0u8; MIB as usize];
        let head = len.min(MIB);
        self.file.write_all_at(&zeros[..head as usize], 0)?;
        let tail = len.saturating_sub(MIB).max(head);
        self.file
            .write_all_at(&zeros[..(len - tail) as usize], tail)?;
        self.file.sync_data()?;
        if self.kind == TargetKind::BlockDevice {
            // Best effort: the zeroes are what makes the disk unbootable.
            let _ = self.reread_partitions();
        }
        Ok(())
    }

    /// Re-reads the partition table of a block device (no-op for files). A device without
    /// partition support (EINVAL: a partition, a loop device without partscan) is fine.
    pub fn reread_partitions(&self) -> io::Result<()> {
        if self.kind != TargetKind::BlockDevice {
            return Ok(());
        }
        match blk::reread_partition_table(&self.file) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(()),
            r => r,
        }
    }

    /// Removes the file if this run created it (for failures before anything was written).
    pub fn remove_if_created(&self) {
        if self.created {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether `n` is a multiple of `align` (a power of two, as sector sizes are).
fn aligned(n: u64, align: u64) -> bool {
    n & (align - 1) == 0
}

fn busy(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
        io::Error::new(
            e.kind(),
            "device is in use (a partition mounted, or held by another program)",
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pattern: &[(bool, usize)]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(zero, blocks) in pattern {
            v.extend(std::iter::repeat_n(
                if zero { 0 } else { 0xa5 },
                blocks * ZERO_BLOCK,
            ));
        }
        v
    }

    const B: usize = ZERO_BLOCK;

    #[test]
    fn without_skipping_everything_is_written() {
        let buf = image(&[(true, 4), (false, 1)]);
        assert_eq!(plan_writes(&buf, 0, B, B), vec![0..5 * B]);
        assert!(plan_writes(&[], usize::MAX, B, B).is_empty());
    }

    #[test]
    fn zero_runs_are_skipped() {
        let buf = image(&[(false, 2), (true, 3), (false, 1), (true, 2)]);
        assert_eq!(
            plan_writes(&buf, usize::MAX, B, B),
            vec![0..2 * B, 5 * B..6 * B]
        );
        assert!(plan_writes(&image(&[(true, 8)]), usize::MAX, B, B).is_empty());
    }

    #[test]
    fn zeros_past_the_zeroed_range_are_written() {
        let buf = image(&[(false, 1), (true, 4), (false, 1), (true, 4)]);
        assert_eq!(plan_writes(&buf, 3 * B, B, B), vec![0..B, 3 * B..10 * B]);
        assert_eq!(
            plan_writes(&buf, 3 * B - 1, B, B),
            vec![0..B, 2 * B..10 * B]
        );
    }

    #[test]
    fn short_zero_runs_are_written_with_their_neighbours() {
        let buf = image(&[
            (true, 1),
            (false, 2),
            (true, 1),
            (false, 1),
            (true, 16),
            (false, 1),
        ]);
        assert_eq!(
            plan_writes(&buf, usize::MAX, B, 4 * B),
            vec![0..5 * B, 21 * B..22 * B]
        );
        // A short zero tail is written too.
        let buf = image(&[(false, 1), (true, 2)]);
        assert_eq!(plan_writes(&buf, usize::MAX, B, 4 * B), vec![0..3 * B]);
    }

    #[test]
    fn partial_last_block() {
        let mut buf = image(&[(false, 1), (true, 2)]);
        buf.extend_from_slice(&[0, 0, 7]);
        assert_eq!(
            plan_writes(&buf, usize::MAX, B, B),
            vec![0..B, 3 * B..3 * B + 3]
        );
        buf.truncate(3 * B + 2);
        assert_eq!(plan_writes(&buf, usize::MAX, B, B), vec![0..B]);
        // A fixed target zeroed ahead to the last whole block writes the partial one.
        assert_eq!(plan_writes(&buf, 3 * B, B, B), vec![0..B, 3 * B..3 * B + 2]);
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 5000]));
        let mut b = vec![0u8; 5000];
        b[4999] = 1;
        assert!(!is_zero(&b));
        b[4999] = 0;
        b[0] = 0x80;
        assert!(!is_zero(&b));
    }

    #[test]
    fn skipping_needs_zero_read_back() {
        use TargetKind::*;
        assert_eq!(zeros_read_back_until(NewFile, None), u64::MAX);
        assert_eq!(zeros_read_back_until(FixedFile, None), 0);
        assert_eq!(zeros_read_back_until(BlockDevice, None), 0);
        assert_eq!(zeros_read_back_until(BlockDevice, Some(&(0..8192))), 8192);
    }

    #[test]
    fn zero_ahead_covers_the_image_only() {
        use TargetKind::*;
        assert_eq!(zero_ahead_range(NewFile, Some(10), None, 512), None);
        assert_eq!(
            zero_ahead_range(BlockDevice, None, Some(1 << 30), 512),
            None
        );
        assert_eq!(
            zero_ahead_range(BlockDevice, Some(1000), Some(1 << 30), 512),
            None
        );
        assert_eq!(
            zero_ahead_range(BlockDevice, Some(9000), Some(1 << 30), 512),
            Some(0..8192)
        );
        assert_eq!(
            zero_ahead_range(FixedFile, Some(8192), Some(1 << 30), 512),
            Some(0..8192)
        );
        assert_eq!(
            zero_ahead_range(BlockDevice, Some(5 << 20), Some(6144), 512),
            Some(0..4096)
        );
        assert_eq!(
            zero_ahead_range(BlockDevice, Some(1 << 20), Some(1 << 30), 8192),
            Some(0..1 << 20)
        );
    }

    #[test]
    fn aligned_buffers() {
        let mut b = AlignedBuf::new(3 * ALIGN);
        assert_eq!(b.as_slice().as_ptr().align_offset(ALIGN), 0);
        assert_eq!(b.len(), 3 * ALIGN);
        b.as_mut_slice()[0] = 1;
        assert_eq!(b.as_slice()[0], 1);
    }
}
