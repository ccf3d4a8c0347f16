//! Which disk an action works on: its `disk` parameter (a device path, or a root device hint
//! resolved against the inventory), and for a disk-writing action the wrong-disk guard the
//! server sent. Pure over the inventory's disks, so it is tested without disks.

use kiln_api::agent::DiskGuard;
use kiln_api::disk_hint::{DiskChoice, Resolved};
use kiln_api::inventory::Disk;

/// The disk an action is to work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// `/dev/...` (or the file a path parameter names).
    pub device: String,
    /// The disk as the inventory saw it, when it is one.
    pub disk: Option<Disk>,
}

/// Resolves `param` among `disks`; with a `guard`, refuses what the guard refuses (before
/// anything is written).
pub fn choose(param: &str, disks: &[Disk], guard: Option<&DiskGuard>) -> Result<Chosen, String> {
    // Any absolute path is used as given (`/dev/disk/by-id/...` from a template, a file in
    // tests); only what is not a path is a hint.
    let choice = if param.starts_with('/') {
        DiskChoice::Path(param.to_string())
    } else {
        DiskChoice::parse(param).map_err(|e| format!("disk: {e}"))?
    };
    let chosen = match choice.resolve(param, disks).map_err(|e| e.to_string())? {
        Resolved::Disk(d) => Chosen {
            device: d.device(),
            disk: Some(d.clone()),
        },
        Resolved::Path(p) => Chosen {
            device: p,
            disk: None,
        },
    };
    if let Some(guard) = guard {
        match &chosen.disk {
            Some(d) => guard.check(d)?,
            // A block device the inventory does not list cannot be vouched for.
            None if chosen.device.starts_with("/dev/") && !guard.overwrite_always => {
                return Err(format!(
                    "refusing to overwrite {}: it is not among the disks found ({})",
                    chosen.device,
                    kiln_api::disk_hint::seen(disks)
                ));
            }
            None => {}
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::inventory::{DiskIdentity, Signature};

    fn disk(name: &str, serial: &str, gib: u64, signatures: Vec<Signature>) -> Disk {
        Disk {
            name: name.into(),
            by_path: String::new(),
            size_bytes: gib << 30,
            model: "QEMU".into(),
            serial: serial.into(),
            wwn: String::new(),
            rotational: false,
            removable: false,
            signatures,
            partitions: vec![],
        }
    }

    fn installed(d: &Disk) -> DiskGuard {
        DiskGuard {
            installed: Some(d.identity()),
            written: None,
            overwrite_always: false,
        }
    }

    #[test]
    fn a_hint_picks_the_disk_and_the_guard_checks_it() {
        let vda = disk("vda", "VIRTIO-A", 8, vec![Signature::Gpt]);
        let nvme = disk("nvme0n1", "NVME-B", 16, vec![]);
        let disks = [vda.clone(), nvme.clone()];
        let c = choose("serial=NVME-B", &disks, Some(&DiskGuard::default())).unwrap();
        assert_eq!(c.device, "/dev/nvme0n1");
        assert_eq!(c.disk.as_ref(), Some(&nvme));
        // Installed on the NVMe disk before: the same hint finds it again after a reboot
        // renamed the devices.
        let renamed = [disk("nvme1n1", "NVME-B", 16, vec![Signature::Gpt])];
        let c = choose("serial=NVME-B", &renamed, Some(&installed(&nvme))).unwrap();
        assert_eq!(c.device, "/dev/nvme1n1");
    }

    #[test]
    fn a_swapped_disk_is_refused_before_any_write() {
        let old = disk("vda", "OLD", 8, vec![Signature::Gpt]);
        let new = disk("vda", "NEW", 8, vec![Signature::Gpt]);
        let e = choose(
            "/dev/vda",
            std::slice::from_ref(&new),
            Some(&installed(&old)),
        )
        .unwrap_err();
        assert!(
            e.contains("not the disk of this machine's last install"),
            "{e}"
        );
        let always = DiskGuard {
            overwrite_always: true,
            ..installed(&old)
        };
        assert!(choose("/dev/vda", &[new], Some(&always)).is_ok());
    }

    #[test]
    fn data_on_a_machine_never_installed_is_refused() {
        let used = disk("sda", "S", 100, vec![Signature::Gpt]);
        let e = choose("smallest", &[used], Some(&DiskGuard::default())).unwrap_err();
        assert!(
            e.contains("never installed") && e.contains("sda: gpt"),
            "{e}"
        );
    }

    #[test]
    fn unmatched_hints_and_unknown_devices_name_the_disks_seen() {
        let disks = [disk("vda", "A", 8, vec![])];
        let e = choose("serial=Z", &disks, None).unwrap_err();
        assert!(
            e.contains("no disk matches") && e.contains("/dev/vda (8 GiB"),
            "{e}"
        );
        let guard = DiskGuard {
            installed: Some(DiskIdentity::default()),
            written: None,
            overwrite_always: false,
        };
        let e = choose("/dev/sdq", &disks, Some(&guard)).unwrap_err();
        assert!(
            e.contains("not among the disks found") && e.contains("/dev/vda"),
            "{e}"
        );
        // Without a guard a path is used as given (a file standing in for a disk).
        assert_eq!(choose("/dev/sdq", &disks, None).unwrap().device, "/dev/sdq");
        assert_eq!(
            choose("/tmp/disk.img", &disks, Some(&guard))
                .unwrap()
                .device,
            "/tmp/disk.img"
        );
    }
}
