//! The `wipe` action: leave a disk with nothing to boot or mount, as when a machine leaves a
//! cluster.
//!
//! What identifies a disk's contents sits at a few known places: the partition table (MBR in
//! sector 0, GPT header and entries from LBA 1, the GPT backup in the last sectors) and, in
//! each partition, the file system, RAID or LVM signatures near its start (ext4, XFS, LVM,
//! md 1.1/1.2, ZFS labels 0–1) or its end (md 0.90/1.0, ZFS labels 2–3). So the agent
//! zeroes the first and last MiB of the disk and of every partition its MBR or GPT lists,
//! after asking the device to discard everything (TRIM/UNMAP, best effort: what discarded
//! blocks read back as is the device's choice, so the zeroes are what counts). Then it
//! flushes and has the kernel re-read the (now empty) partition table.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::OFlags;

use crate::image2disk::blk;

const MIB: u64 = 1 << 20;
/// GPT entry arrays larger than this are not believed (the usual one is 16 KiB).
const MAX_GPT_ENTRIES_BYTES: u64 = 1 << 20;

/// Why a wipe failed. Each message names the disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WipeError {
    /// The disk could not be opened (missing, in use, no permission).
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The path is neither a block device nor a regular file.
    #[error("{path} is not a block device or a regular file")]
    NotADisk { path: PathBuf },
    /// Reading the size or the partition table failed.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// Writing zeroes failed.
    #[error("cannot zero bytes {start}..{end} of {path}: {source}")]
    Write {
        path: PathBuf,
        start: u64,
        end: u64,
        source: io::Error,
    },
    /// The zeroes did not reach the device.
    #[error("cannot flush {path}: {source}")]
    Flush { path: PathBuf, source: io::Error },
}

/// What a wipe did.
#[derive(Debug, Clone)]
pub struct Wiped {
    /// Size of the disk in bytes.
    pub size: u64,
    /// The partition table found: "gpt", "mbr", or `None`.
    pub table: Option<&'static str>,
    /// Partitions the table listed.
    pub partitions: usize,
    /// Whether the whole disk was discarded, or why not.
    pub discard: Result<(), String>,
    /// Bytes zeroed (in `ranges` ranges).
    pub zeroed: u64,
    pub ranges: usize,
    /// Whether the kernel re-read the partition table, or why not (block devices only).
    pub reread: Result<(), String>,
    pub elapsed_secs: f64,
}

impl Wiped {
    /// One line for the action's result.
    pub fn summary(&self) -> String {
        format!(
            "{} bytes, {} with {} partition(s): zeroed {} ranges ({} bytes), discard {}, {:.1} s",
            self.size,
            self.table.unwrap_or("no partition table"),
            self.partitions,
            self.ranges,
            self.zeroed,
            match &self.discard {
                Ok(()) => "done".to_string(),
                Err(why) => format!("skipped ({why})"),
            },
            self.elapsed_secs
        )
    }
}

/// A partition table as read from the disk: its kind and the byte ranges of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub kind: Option<&'static str>,
    pub partitions: Vec<Range<u64>>,
}

/// Reads the disk's partition table through `read_at` (offset, buffer). GPT is looked for
/// at LBA 1 for each of `sectors` (the logical sector size when known; 512 and 4096 for
/// files); failing that, an MBR's four primary entries (an extended partition counts as
/// one: zeroing its start removes the chain of logical ones). Whatever does not parse is
/// ignored: the disk's own first and last MiB are zeroed regardless.
pub fn read_table(
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    disk_len: u64,
    sectors: &[u64],
) -> Table {
    for &sector in sectors {
        if let Some(parts) = read_gpt(read_at, disk_len, sector) {
            return Table {
                kind: Some("gpt"),
                partitions: parts,
            };
        }
    }
    let mut mbr = [0u8; 512];
    if disk_len < 512 || read_at(0, &mut mbr).is_err() || mbr[510..512] != [0x55, 0xaa] {
        return Table::default();
    }
    let partitions = (0..4)
        .filter_map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            let kind = e[4];
            let start = u64::from(u32::from_le_bytes(e[8..12].try_into().ok()?)) * 512;
            let len = u64::from(u32::from_le_bytes(e[12..16].try_into().ok()?)) * 512;
            // 0: unused; 0xee: a protective MBR whose GPT did not parse (its single entry
            // spans the disk, which the disk's own ranges cover).
            (kind != 0 && kind != 0xee && len > 0).then(|| start..(start + len).min(disk_len))
        })
        .filter(|r| r.start < r.end)
        .collect();
    Table {
        kind: Some("mbr"),
        partitions,
    }
}

fn read_gpt(
    read_at: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    disk_len: u64,
    sector: u64,
) -> Option<Vec<Range<u64>>> {
    let mut hdr = [0u8; 92];
    if disk_len < 2 * sector {
        return None;
    }
    read_at(sector, &mut hdr).ok()?;
    if &hdr[0..8] != b"EFI PART" {
        return None;
    }
    let u64_at = |o: usize| hdr[o..o + 8].try_into().ok().map(u64::from_le_bytes);
    let u32_at = |o: usize| hdr[o..o + 4].try_into().ok().map(u32::from_le_bytes);
    let entries_lba = u64_at(72)?;
    let count = u64::from(u32_at(80)?);
    let entry_size = u64::from(u32_at(84)?);
    let bytes = count.checked_mul(entry_size)?;
    if entry_size < 128 || bytes > MAX_GPT_ENTRIES_BYTES {
        return None;
    }
    let offset = entries_lba.checked_mul(sector)?;
    if offset.checked_add(bytes)? > disk_len {
        return None;
    }
    let mut entries = vec![0u8; bytes as usize];
    read_at(offset, &mut entries).ok()?;
    Some(
        entries
            .chunks_exact(entry_size as usize)
            .filter(|e| e[0..16].iter().any(|&b| b != 0))
            .filter_map(|e| {
                let first = u64::from_le_bytes(e[32..40].try_into().ok()?);
                let last = u64::from_le_bytes(e[40..48].try_into().ok()?);
                let start = first.checked_mul(sector)?;
                let end = last.checked_add(1)?.checked_mul(sector)?.min(disk_len);
                (start < end).then_some(start..end)
            })
            .collect(),
    )
}

/// The byte ranges to zero: the first and last MiB of the disk (`0..disk_len`) and of each
/// partition, clipped to the disk, sorted and merged.
pub fn zero_ranges(disk_len: u64, partitions: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut ranges = Vec::new();
    for r in std::iter::once(&(0..disk_len)).chain(partitions) {
        let (start, end) = (r.start.min(disk_len), r.end.min(disk_len));
        if start >= end {
            continue;
        }
        ranges.push(start..(start + MIB).min(end));
        ranges.push(end.saturating_sub(MIB).max(start)..end);
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Wipes `disk` (a block device, opened exclusively so a mounted disk is refused, or an
/// existing regular file standing in for one). `log` gets a line for each step.
pub fn wipe(disk: &Path, log: &dyn Fn(String)) -> Result<Wiped, WipeError> {
    let t0 = Instant::now();
    let read_err = |source| WipeError::Read {
        path: disk.to_owned(),
        source,
    };
    let (mut file, block) = open_disk(disk)?;
    let size = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    let sectors = if block {
        vec![u64::from(
            rustix::fs::ioctl_blksszget(&file).map_err(|e| read_err(e.into()))?,
        )]
    } else {
        vec![512, 4096]
    };
    let table = read_table(&|o, b| file.read_exact_at(b, o), size, &sectors);
    log(format!(
        "wipe: {}: {size} bytes, {} with {} partition(s)",
        disk.display(),
        table.kind.unwrap_or("no partition table"),
        table.partitions.len()
    ));

    let discard = discard_all(&file, block, size, log);
    if let Err(why) = &discard {
        log(format!("wipe: no discard: {why}"));
    }

    let ranges = zero_ranges(size, &table.partitions);
    let zeroed = write_zeros(&file, disk, &ranges)?;
    file.sync_all().map_err(|source| WipeError::Flush {
        path: disk.to_owned(),
        source,
    })?;
    log(format!(
        "wipe: zeroed {} ranges ({zeroed} bytes) and flushed",
        ranges.len()
    ));

    let reread = reread_table(&file, block);
    match &reread {
        Ok(()) if block => log("wipe: the kernel re-read the partition table".into()),
        Ok(()) => {}
        Err(why) => log(format!(
            "wipe: warning: the kernel did not re-read the partition table: {why}"
        )),
    }
    Ok(Wiped {
        size,
        table: table.kind,
        partitions: table.partitions.len(),
        discard,
        zeroed,
        ranges: ranges.len(),
        reread,
        elapsed_secs: t0.elapsed().as_secs_f64(),
    })
}

/// Opens the disk for reading and writing; `true` with it when it is a block device.
fn open_disk(disk: &Path) -> Result<(File, bool), WipeError> {
    let open_err = |source| WipeError::Open {
        path: disk.to_owned(),
        source,
    };
    let meta = fs::metadata(disk).map_err(open_err)?;
    let block = meta.file_type().is_block_device();
    if !block && !meta.is_file() {
        return Err(WipeError::NotADisk {
            path: disk.to_owned(),
        });
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if block {
        // O_EXCL on a block device: refused while a partition is mounted or held.
        opts.custom_flags(OFlags::EXCL.bits() as i32);
    }
    // EBUSY just after a partition-table re-read (an image written a moment ago) is the
    // kernel or udev still looking at the disk: retried for about 2 s before it counts.
    let mut tries = 0;
    let file: File = loop {
        match opts.open(disk) {
            Err(e)
                if block
                    && e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                    && tries < 20 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r.map_err(open_err)?,
        }
    };
    Ok((file, block))
}

/// Discards the whole device; why not, when it is not done.
fn discard_all(file: &File, block: bool, size: u64, log: &dyn Fn(String)) -> Result<(), String> {
    if !block {
        Err("a regular file".to_string())
    } else if size == 0 {
        Err("empty device".to_string())
    } else {
        log(format!("wipe: discarding all {size} bytes"));
        blk::discard(file, 0, size).map_err(|e| match e.raw_os_error() {
            Some(c) if c == rustix::io::Errno::OPNOTSUPP.raw_os_error() => {
                "the device does not support it".to_string()
            }
            _ => e.to_string(),
        })
    }
}

/// Writes zeros over `ranges`, a MiB at a time; returns the bytes zeroed.
fn write_zeros(file: &File, disk: &Path, ranges: &[Range<u64>]) -> Result<u64, WipeError> {
    let zeros = vec![0u8; MIB as usize];
    let mut zeroed = 0;
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(MIB);
            file.write_all_at(&zeros[..n as usize], at)
                .map_err(|source| WipeError::Write {
                    path: disk.to_owned(),
                    start: r.start,
                    end: r.end,
                    source,
                })?;
            at += n;
        }
        zeroed += r.end - r.start;
    }
    Ok(zeroed)
}

/// Asks the kernel to re-read a block device's (now empty) partition table.
fn reread_table(file: &File, block: bool) -> Result<(), String> {
    if !block {
        return Ok(());
    }
    match blk::reread_partition_table(file) {
        Ok(()) => Ok(()),
        // No partition support (a partition, a loop device without partscan): nothing to do.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A disk image of `len` bytes filled with 0xa5, as a scratch file.
    fn filled(dir: &tempfile::TempDir, len: u64) -> PathBuf {
        let path = dir.path().join("disk.img");
        let chunk = vec![0xa5u8; MIB as usize];
        let f = File::create(&path).unwrap();
        let mut at = 0;
        while at < len {
            let n = (len - at).min(MIB);
            f.write_all_at(&chunk[..n as usize], at).unwrap();
            at += n;
        }
        path
    }

    fn put_mbr_entry(f: &File, i: u64, kind: u8, start_lba: u32, sectors: u32) {
        let mut e = [0u8; 16];
        e[4] = kind;
        e[8..12].copy_from_slice(&start_lba.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
        f.write_all_at(&e, 446 + 16 * i).unwrap();
        f.write_all_at(&[0x55, 0xaa], 510).unwrap();
    }

    /// A GPT with `sector`-sized LBAs: header at LBA 1, 128 entries of 128 bytes at LBA 2.
    fn put_gpt(f: &File, sector: u64, parts: &[(u64, u64)]) {
        let mut hdr = [0u8; 92];
        hdr[0..8].copy_from_slice(b"EFI PART");
        hdr[72..80].copy_from_slice(&2u64.to_le_bytes());
        hdr[80..84].copy_from_slice(&128u32.to_le_bytes());
        hdr[84..88].copy_from_slice(&128u32.to_le_bytes());
        f.write_all_at(&hdr, sector).unwrap();
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, last)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = 0xaf; // any non-zero type GUID
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        f.write_all_at(&entries, 2 * sector).unwrap();
        // Protective MBR.
        put_mbr_entry(f, 0, 0xee, 1, u32::MAX);
    }

    fn zeros_at(path: &Path, r: Range<u64>) -> bool {
        let f = File::open(path).unwrap();
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        f.read_exact_at(&mut buf, r.start).unwrap();
        buf.iter().all(|&b| b == 0)
    }

    #[test]
    fn ranges_cover_both_ends_of_disk_and_partitions_merged() {
        assert_eq!(
            zero_ranges(100 * MIB, &[]),
            vec![0..MIB, 99 * MIB..100 * MIB]
        );
        // A partition starting at 1 MiB touches the disk's head: one range.
        assert_eq!(
            zero_ranges(100 * MIB, std::slice::from_ref(&(MIB..50 * MIB))),
            vec![0..2 * MIB, 49 * MIB..50 * MIB, 99 * MIB..100 * MIB]
        );
        // Small disk and small partition: no range twice, nothing past the end.
        assert_eq!(zero_ranges(MIB / 2, &[]), vec![0..MIB / 2]);
        assert_eq!(
            zero_ranges(10 * MIB, &[4 * MIB..4 * MIB + 4096, 9 * MIB..20 * MIB]),
            vec![0..MIB, 4 * MIB..4 * MIB + 4096, 9 * MIB..10 * MIB]
        );
        assert!(zero_ranges(0, std::slice::from_ref(&(0..MIB))).is_empty());
    }

    #[test]
    fn wipes_a_gpt_disk_file() {
        let dir = tempfile::tempdir().unwrap();
        let len = 64 * MIB;
        let path = filled(&dir, len);
        {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            // Partitions at 1..17 MiB and 17 MiB..63 MiB (LBAs of 512 bytes).
            put_gpt(&f, 512, &[(2048, 34815), (34816, 129023)]);
        }
        let lines = RefCell::new(Vec::new());
        let w = wipe(&path, &|l| lines.borrow_mut().push(l)).unwrap();
        assert_eq!(w.size, len);
        assert_eq!(w.table, Some("gpt"));
        assert_eq!(w.partitions, 2);
        assert!(w.discard.is_err(), "no discard on a file");
        for r in [
            0..2 * MIB,         // table, and partition 1's signatures
            16 * MIB..18 * MIB, // partition 1's end, partition 2's start
            62 * MIB..64 * MIB, // partition 2's end, GPT backup
        ] {
            assert!(zeros_at(&path, r.clone()), "{r:?} not zeroed");
        }
        // Data elsewhere is left alone (this is not a full erase).
        assert!(!zeros_at(&path, 2 * MIB..2 * MIB + 4096));
        assert_eq!(w.zeroed, 6 * MIB);
        assert_eq!(fs::metadata(&path).unwrap().len(), len, "size unchanged");
        let lines = lines.into_inner();
        assert!(lines[0].contains("gpt with 2 partition(s)"), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("zeroed 3 ranges")),
            "{lines:?}"
        );
        // Wiped: nothing left to find.
        let again = wipe(&path, &|_| {}).unwrap();
        assert_eq!((again.table, again.partitions), (None, 0));
    }

    #[test]
    fn reads_mbr_and_4k_gpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = filled(&dir, 32 * MIB);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        put_mbr_entry(&f, 0, 0x83, 2048, 8192);
        put_mbr_entry(&f, 2, 0x05, 20480, 1 << 30); // extended, clipped to the disk
        let read = |o: u64, b: &mut [u8]| f.read_exact_at(b, o);
        let t = read_table(&read, 32 * MIB, &[512, 4096]);
        assert_eq!(t.kind, Some("mbr"));
        assert_eq!(t.partitions, vec![MIB..5 * MIB, 10 * MIB..32 * MIB]);

        put_gpt(&f, 4096, &[(256, 1279)]);
        let t = read_table(&read, 32 * MIB, &[512, 4096]);
        assert_eq!(t.kind, Some("gpt"));
        assert_eq!(t.partitions, vec![MIB..5 * MIB]);
        // A header whose entries would lie past the end is not believed.
        let t = read_table(&read, 8192 + 4096, &[4096]);
        assert_eq!(t.kind, Some("mbr"));
    }

    #[test]
    fn refuses_what_is_not_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let err = wipe(dir.path(), &|_| {}).unwrap_err();
        assert!(matches!(err, WipeError::NotADisk { .. }), "{err}");
        let missing = dir.path().join("nope");
        let err = wipe(&missing, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("cannot open") && err.contains("nope"), "{err}");
    }
}
