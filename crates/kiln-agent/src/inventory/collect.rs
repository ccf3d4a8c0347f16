//! Reads the inventory from `ROOT/proc`, `ROOT/sys` and `ROOT/dev`. Whatever is missing or
//! unreadable is left empty: a report with holes beats no report. Every list and text is
//! cut to the bounds the server accepts ([`kiln_api::inventory`]).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use kiln_api::inventory::{
    Cpu, Disk, Dmi, FirmwareKind, Inventory, MAX_DISKS, MAX_NICS, MAX_PARTITIONS, MAX_PCI,
    MAX_TEXT, Nic, Partition, PciDevice, Signature,
};

use super::signatures::{self, HEAD, TAIL};

/// A sysfs/procfs attribute, trimmed and cut to [`MAX_TEXT`]; empty when unreadable.
fn attr(path: &Path) -> String {
    let s = fs::read(path).unwrap_or_default();
    cut(String::from_utf8_lossy(&s[..s.len().min(4 * MAX_TEXT)]).trim())
}

/// `s` cut to at most [`MAX_TEXT`] bytes, on a character boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn number(path: &Path) -> Option<u64> {
    attr(path).parse().ok()
}

/// Sorted entry names of a directory (none when it is missing).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The last component of a symlink's target (`device/driver` → `virtio_net`).
fn link_name(path: &Path) -> String {
    fs::read_link(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// Everything the agent reports, read under `root`.
pub fn collect(root: &Path) -> Inventory {
    Inventory {
        cpu: cpu(&fs::read_to_string(root.join("proc/cpuinfo")).unwrap_or_default()),
        memory_bytes: memory(&fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default()),
        firmware: if root.join("sys/firmware/efi").exists() {
            FirmwareKind::Uefi
        } else {
            FirmwareKind::Bios
        },
        dmi: Dmi {
            vendor: attr(&root.join("sys/class/dmi/id/sys_vendor")),
            product: attr(&root.join("sys/class/dmi/id/product_name")),
            serial: attr(&root.join("sys/class/dmi/id/product_serial")),
        },
        disks: disks(root),
        nics: nics(root),
        unbound_pci: unbound_pci(root),
    }
}

/// Logical processors and the first model name from /proc/cpuinfo.
pub fn cpu(cpuinfo: &str) -> Cpu {
    let field = |line: &str, key: &str| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let cores = cpuinfo
        .lines()
        .filter(|l| field(l, "processor").is_some())
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| field(l, "model name"))
        .unwrap_or_default();
    Cpu {
        model: cut(&model),
        cores: u32::try_from(cores).unwrap_or(u32::MAX),
    }
}

/// `MemTotal` from /proc/meminfo, in bytes.
pub fn memory(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// Block devices that can be install targets: RAM, loop, optical, network and
/// device-mapper devices left out.
fn is_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn disks(root: &Path) -> Vec<Disk> {
    let sys_block = root.join("sys/block");
    let by_path = by_path_links(root);
    names(&sys_block)
        .into_iter()
        .filter(|n| is_disk(n))
        // NVMe multipath's per-path nodes (`nvme0c0n1`) are hidden: the namespace's own node
        // (`nvme0n1`) is the disk; counting both would make every hint ambiguous.
        .filter(|n| attr(&sys_block.join(n).join("hidden")) != "1")
        .take(MAX_DISKS)
        .map(|name| {
            let dir = sys_block.join(&name);
            let dev = root.join("dev").join(&name);
            let size_bytes = number(&dir.join("size")).unwrap_or(0).saturating_mul(512);
            // virtio-blk has `serial` on the block device; NVMe and SCSI on the device.
            let first = |files: &[&str]| {
                files
                    .iter()
                    .map(|f| attr(&dir.join(f)))
                    .find(|s| !s.is_empty())
                    .unwrap_or_default()
            };
            let partitions = names(&dir)
                .into_iter()
                .filter(|p| p.starts_with(&name) && dir.join(p).join("partition").exists())
                .take(MAX_PARTITIONS)
                .map(|p| Partition {
                    size_bytes: number(&dir.join(&p).join("size"))
                        .unwrap_or(0)
                        .saturating_mul(512),
                    signatures: read_signatures(&root.join("dev").join(&p)),
                    name: p,
                })
                .collect();
            Disk {
                by_path: by_path
                    .iter()
                    .find(|(_, target)| *target == name)
                    .map(|(link, _)| link.clone())
                    .unwrap_or_default(),
                size_bytes,
                model: first(&["device/model"]),
                serial: first(&["serial", "device/serial"]),
                wwn: first(&["wwid", "device/wwid"]),
                rotational: attr(&dir.join("queue/rotational")) == "1",
                removable: attr(&dir.join("removable")) == "1",
                signatures: read_signatures(&dev),
                partitions,
                name,
            }
        })
        .collect()
}

/// `/dev/disk/by-path` links of whole disks: (link name, kernel name).
fn by_path_links(root: &Path) -> Vec<(String, String)> {
    let dir = root.join("dev/disk/by-path");
    names(&dir)
        .into_iter()
        .filter(|n| !n.contains("-part"))
        .map(|n| {
            let target = link_name(&dir.join(&n));
            (n, target)
        })
        .collect()
}

/// Signatures in a device's first [`HEAD`] and last [`TAIL`] bytes; none when unreadable.
pub fn read_signatures(dev: &Path) -> Vec<Signature> {
    let Ok(file) = File::open(dev) else {
        return Vec::new();
    };
    // Block devices report length 0 through metadata: seek to the end instead.
    let len = match std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0)) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let read = |offset: u64, n: usize| {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        buf.truncate(got);
        buf
    };
    let head = read(0, HEAD.min(usize::try_from(len).unwrap_or(HEAD)));
    let tail_len = TAIL.min(usize::try_from(len).unwrap_or(TAIL));
    let tail = read(len - tail_len as u64, tail_len);
    signatures::detect(&head, &tail)
}

fn nics(root: &Path) -> Vec<Nic> {
    let class = root.join("sys/class/net");
    names(&class)
        .into_iter()
        // Physical NICs have a `device` link; lo, bridges and bonds do not.
        .filter(|n| class.join(n).join("device").exists())
        .take(MAX_NICS)
        .map(|name| {
            let dir = class.join(&name);
            let link = attr(&dir.join("carrier")) == "1";
            Nic {
                mac: attr(&dir.join("address")),
                driver: link_name(&dir.join("device/driver")),
                // `speed` is -1 or unreadable when the link is down.
                speed_mbps: if link {
                    attr(&dir.join("speed"))
                        .parse::<i64>()
                        .ok()
                        .and_then(|s| u32::try_from(s).ok())
                } else {
                    None
                },
                link,
                name,
            }
        })
        .collect()
}

fn unbound_pci(root: &Path) -> Vec<PciDevice> {
    let dir = root.join("sys/bus/pci/devices");
    names(&dir)
        .into_iter()
        .filter(|a| !dir.join(a).join("driver").exists())
        .take(MAX_PCI)
        .map(|address| {
            let d = dir.join(&address);
            let hex = |f: &str| attr(&d.join(f)).trim_start_matches("0x").to_string();
            PciDevice {
                id: format!("{}:{}", hex("vendor"), hex("device")),
                class: attr(&d.join("class")),
                address,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn link(root: &Path, path: &str, target: &str) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// A machine like the e2e's QEMU guest: a virtio disk with a GPT and an ext4
    /// partition, an NVMe disk, one virtio NIC, an unbound PCI device, UEFI.
    fn fake_machine() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().to_path_buf();
        write(
            &r,
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n",
        );
        write(
            &r,
            "proc/meminfo",
            "MemTotal:        1000000 kB\nMemFree: 1 kB\n",
        );
        fs::create_dir_all(r.join("sys/firmware/efi")).unwrap();
        write(&r, "sys/class/dmi/id/sys_vendor", "QEMU\n");
        write(
            &r,
            "sys/class/dmi/id/product_name",
            "Standard PC (Q35 + ICH9, 2009)\n",
        );
        write(&r, "sys/class/dmi/id/product_serial", "VM-1\n");
        // vda: 8 GiB virtio, serial on the block device, one ext4 partition.
        write(&r, "sys/block/vda/size", "16777216\n");
        write(&r, "sys/block/vda/serial", "VIRTIO-A\n");
        write(&r, "sys/block/vda/queue/rotational", "1\n");
        write(&r, "sys/block/vda/removable", "0\n");
        write(&r, "sys/block/vda/vda1/partition", "1\n");
        write(&r, "sys/block/vda/vda1/size", "2048\n");
        let mut vda = vec![0u8; 1 << 20];
        vda[512..520].copy_from_slice(b"EFI PART");
        write_bytes(&r, "dev/vda", &vda);
        let mut vda1 = vec![0u8; 1 << 20];
        vda1[0x438..0x43a].copy_from_slice(&[0x53, 0xef]);
        write_bytes(&r, "dev/vda1", &vda1);
        // nvme0n1: 16 GiB, serial and model on the controller, a WWID.
        write(&r, "sys/block/nvme0n1/size", "33554432\n");
        write(&r, "sys/block/nvme0n1/device/serial", "NVME-B   \n");
        write(&r, "sys/block/nvme0n1/device/model", "QEMU NVMe Ctrl\n");
        write(&r, "sys/block/nvme0n1/wwid", "nvme.1b36-4e564d452d42\n");
        write(&r, "sys/block/nvme0n1/queue/rotational", "0\n");
        write_bytes(&r, "dev/nvme0n1", &[0u8; 8192]);
        // Left out: loop and RAM devices, and NVMe multipath's hidden per-path node.
        write(&r, "sys/block/nvme0c0n1/size", "33554432\n");
        write(&r, "sys/block/nvme0c0n1/hidden", "1\n");
        write(&r, "sys/block/nvme0c0n1/device/serial", "NVME-B   \n");
        write(&r, "sys/block/loop0/size", "0\n");
        write(&r, "sys/block/ram0/size", "0\n");
        link(&r, "dev/disk/by-path/pci-0000:00:04.0", "../../nvme0n1");
        link(
            &r,
            "dev/disk/by-path/pci-0000:00:04.0-part1",
            "../../nvme0n1p1",
        );
        // eth0 with a driver and link; lo has no device.
        write(&r, "sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        write(&r, "sys/class/net/eth0/carrier", "1\n");
        write(&r, "sys/class/net/eth0/speed", "1000\n");
        fs::create_dir_all(r.join("sys/bus/virtio/drivers/virtio_net")).unwrap();
        fs::create_dir_all(r.join("sys/devices/virtio0")).unwrap();
        link(&r, "sys/class/net/eth0/device", "../../../devices/virtio0");
        link(
            &r,
            "sys/devices/virtio0/driver",
            "../../bus/virtio/drivers/virtio_net",
        );
        write(&r, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        // PCI: one bound, one without a driver.
        write(&r, "sys/bus/pci/devices/0000:00:02.0/vendor", "0x1af4\n");
        fs::create_dir_all(r.join("sys/bus/pci/devices/0000:00:02.0/driver")).unwrap();
        write(&r, "sys/bus/pci/devices/0000:00:05.0/vendor", "0x8086\n");
        write(&r, "sys/bus/pci/devices/0000:00:05.0/device", "0x100e\n");
        write(&r, "sys/bus/pci/devices/0000:00:05.0/class", "0x020000\n");
        (dir, r)
    }

    fn write_bytes(root: &Path, path: &str, bytes: &[u8]) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn reads_a_fake_machine() {
        let (_d, r) = fake_machine();
        let inv = collect(&r);
        assert_eq!(inv.cpu.cores, 2);
        assert_eq!(inv.cpu.model, "QEMU Virtual CPU version 2.5+");
        assert_eq!(inv.memory_bytes, 1_000_000 * 1024);
        assert_eq!(inv.firmware, FirmwareKind::Uefi);
        assert_eq!(inv.dmi.vendor, "QEMU");
        assert_eq!(inv.dmi.serial, "VM-1");
        let names: Vec<_> = inv.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
        let nvme = &inv.disks[0];
        assert_eq!(nvme.size_bytes, 16 << 30);
        assert_eq!(nvme.serial, "NVME-B");
        assert_eq!(nvme.model, "QEMU NVMe Ctrl");
        assert_eq!(nvme.wwn, "nvme.1b36-4e564d452d42");
        assert_eq!(nvme.by_path, "pci-0000:00:04.0");
        assert!(!nvme.rotational);
        assert!(nvme.signatures.is_empty() && !nvme.has_signatures());
        let vda = &inv.disks[1];
        assert_eq!(vda.size_bytes, 8 << 30);
        assert_eq!(vda.serial, "VIRTIO-A");
        assert!(vda.rotational && !vda.removable);
        assert_eq!(vda.signatures, [Signature::Gpt]);
        assert_eq!(vda.partitions.len(), 1);
        assert_eq!(vda.partitions[0].name, "vda1");
        assert_eq!(vda.partitions[0].size_bytes, 1 << 20);
        assert_eq!(vda.partitions[0].signatures, [Signature::Ext4]);
        assert_eq!(vda.signatures_text(), "vda: gpt; vda1: ext4");
        assert_eq!(inv.nics.len(), 1);
        let eth0 = &inv.nics[0];
        assert_eq!(eth0.mac, "52:54:00:12:34:56");
        assert_eq!(eth0.driver, "virtio_net");
        assert!(eth0.link);
        assert_eq!(eth0.speed_mbps, Some(1000));
        assert_eq!(inv.unbound_pci.len(), 1);
        assert_eq!(inv.unbound_pci[0].address, "0000:00:05.0");
        assert_eq!(inv.unbound_pci[0].id, "8086:100e");
        assert_eq!(inv.unbound_pci[0].class, "0x020000");
        assert_eq!(inv.check(), Ok(()));
    }

    #[test]
    fn an_empty_root_gives_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let inv = collect(dir.path());
        assert_eq!(inv, Inventory::default());
    }

    #[test]
    fn long_attributes_are_cut_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sys/block/sda/size", "1\n");
        write(
            dir.path(),
            "sys/block/sda/device/model",
            &"é".repeat(MAX_TEXT),
        );
        let inv = collect(dir.path());
        assert!(inv.disks[0].model.len() <= MAX_TEXT);
        assert_eq!(inv.check(), Ok(()));
    }

    #[test]
    fn cpuinfo_without_model_names() {
        let c = cpu("processor : 0\nBogoMIPS : 50\n\nprocessor : 1\n");
        assert_eq!((c.cores, c.model.as_str()), (2, ""));
    }
}
