//! Partition tables and file system signatures from a device's first and last bytes. Pure:
//! the caller reads [`HEAD`] bytes from the start and [`TAIL`] from the end (less when the
//! device is smaller) and hands them in; any bytes at all are safe to parse.

use kiln_api::inventory::Signature;

/// Bytes read from the start: btrfs's superblock is at 64 KiB, the furthest in.
pub const HEAD: usize = 0x10000 + 0x1000;
/// Bytes read from the end: a backup GPT header sits in the last (4 KiB) sector.
pub const TAIL: usize = 4096;

fn at(buf: &[u8], offset: usize, magic: &[u8]) -> bool {
    buf.get(offset..offset + magic.len()) == Some(magic)
}

/// What `head` (the first bytes) and `tail` (the last bytes) hold, sorted.
pub fn detect(head: &[u8], tail: &[u8]) -> Vec<Signature> {
    let mut found = Vec::new();
    let gpt = [512, 4096].iter().any(|&o| at(head, o, b"EFI PART"))
        || [512, 4096]
            .iter()
            .any(|&n| tail.len() >= n && at(tail, tail.len() - n, b"EFI PART"));
    let boot_sig = at(head, 510, &[0x55, 0xaa]);
    let fat = boot_sig
        && (at(head, 0x36, b"FAT12") || at(head, 0x36, b"FAT16") || at(head, 0x52, b"FAT32"));
    if gpt {
        found.push(Signature::Gpt);
    } else if boot_sig && !fat && mbr_has_entries(head) {
        found.push(Signature::Mbr);
    }
    if fat {
        found.push(Signature::Vfat);
    }
    if at(head, 0x438, &[0x53, 0xef]) {
        found.push(Signature::Ext4);
    }
    if at(head, 0, b"XFSB") {
        found.push(Signature::Xfs);
    }
    if at(head, 0x10040, b"_BHRfS_M") {
        found.push(Signature::Btrfs);
    }
    // The swap signature ends the first page: 4 KiB pages here, 64 KiB on some arm64.
    if [4096, 65536]
        .iter()
        .any(|&p| at(head, p - 10, b"SWAPSPACE2") || at(head, p - 10, b"SWAP-SPACE"))
    {
        found.push(Signature::Swap);
    }
    // LVM2's label is in one of the first four sectors.
    if (0..4).any(|s| at(head, s * 512, b"LABELONE") && at(head, s * 512 + 0x18, b"LVM2 001")) {
        found.push(Signature::Lvm2);
    }
    if at(head, 0x8001, b"CD001") {
        found.push(Signature::Iso9660);
    }
    if at(head, 0, b"LUKS\xba\xbe") || at(head, 0, b"SKUL\xba\xbe") {
        found.push(Signature::Luks);
    }
    found.sort();
    found
}

/// Whether an MBR lists at least one partition (a boot sector alone is not a table).
fn mbr_has_entries(head: &[u8]) -> bool {
    (0..4).any(|i| {
        let e = 446 + 16 * i;
        head.get(e + 4).is_some_and(|&t| t != 0)
            && head.get(e + 12..e + 16).is_some_and(|n| n != [0, 0, 0, 0])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Vec<u8> {
        vec![0; HEAD]
    }

    fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn empty_and_short_input_hold_nothing() {
        assert!(detect(&[], &[]).is_empty());
        assert!(detect(&head(), &[0; TAIL]).is_empty());
        assert!(detect(&[0x55; 600], &[0xaa; 3]).is_empty());
    }

    #[test]
    fn mbr_needs_a_boot_signature_and_an_entry() {
        let mut h = head();
        put(&mut h, 510, &[0x55, 0xaa]);
        assert!(detect(&h, &[]).is_empty(), "a boot sector alone");
        put(&mut h, 446 + 4, &[0x83]);
        put(&mut h, 446 + 12, &[0, 8, 0, 0]);
        assert_eq!(detect(&h, &[]), vec![Signature::Mbr]);
    }

    #[test]
    fn gpt_from_the_primary_or_the_backup_header() {
        let mut h = head();
        put(&mut h, 510, &[0x55, 0xaa]);
        put(&mut h, 446 + 4, &[0xee]);
        put(&mut h, 446 + 12, &[1, 0, 0, 0]);
        put(&mut h, 512, b"EFI PART");
        assert_eq!(
            detect(&h, &[]),
            vec![Signature::Gpt],
            "protective MBR not listed"
        );
        let mut t = vec![0; TAIL];
        put(&mut t, TAIL - 512, b"EFI PART");
        assert_eq!(
            detect(&head(), &t),
            vec![Signature::Gpt],
            "backup header only"
        );
        let mut h4k = head();
        put(&mut h4k, 4096, b"EFI PART");
        assert_eq!(detect(&h4k, &[]), vec![Signature::Gpt], "4 KiB sectors");
    }

    #[test]
    fn file_systems() {
        let cases: [(usize, &[u8], Signature); 9] = [
            (0x438, &[0x53, 0xef], Signature::Ext4),
            (0, b"XFSB", Signature::Xfs),
            (0x10040, b"_BHRfS_M", Signature::Btrfs),
            (4086, b"SWAPSPACE2", Signature::Swap),
            (0x8001, b"CD001", Signature::Iso9660),
            (0, b"LUKS\xba\xbe", Signature::Luks),
            (0x52, b"FAT32   ", Signature::Vfat),
            (0x36, b"FAT16   ", Signature::Vfat),
            (0x36, b"FAT12   ", Signature::Vfat),
        ];
        for (offset, magic, want) in cases {
            let mut h = head();
            put(&mut h, offset, magic);
            if want == Signature::Vfat {
                put(&mut h, 510, &[0x55, 0xaa]);
                // A FAT boot sector's bytes would read as MBR entries: not a table.
                put(&mut h, 446 + 4, &[0x83]);
                put(&mut h, 446 + 12, &[1, 0, 0, 0]);
            }
            assert_eq!(detect(&h, &[]), vec![want], "{want}");
        }
    }

    #[test]
    fn lvm_label_in_the_second_sector() {
        let mut h = head();
        put(&mut h, 512, b"LABELONE");
        put(&mut h, 512 + 0x18, b"LVM2 001");
        assert_eq!(detect(&h, &[]), vec![Signature::Lvm2]);
        let mut wrong = head();
        put(&mut wrong, 512, b"LABELONE");
        assert!(detect(&wrong, &[]).is_empty());
    }

    #[test]
    fn any_bytes_parse() {
        // A cheap stand-in for the fuzz target: every truncation of a busy buffer.
        let mut h = head();
        put(&mut h, 512, b"EFI PART");
        put(&mut h, 0x438, &[0x53, 0xef]);
        put(&mut h, 0x10040, b"_BHRfS_M");
        for len in [0, 1, 511, 512, 520, 0x439, 0x8005, 0x10047, HEAD] {
            let _ = detect(&h[..len], &h[..len.min(TAIL)]);
        }
        assert_eq!(
            detect(&h, &[]),
            vec![Signature::Gpt, Signature::Ext4, Signature::Btrfs]
        );
    }
}
