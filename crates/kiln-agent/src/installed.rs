//! Actions on the installed OS: find its root filesystem on the disk, mount
//! it, write files and the NoCloud seed, run commands chrooted into it.
//! The agent OS is busybox: `mount`, `umount` and `chroot` are its applets.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the installed OS is mounted while an action works on it.
pub const ROOT_MOUNT: &str = "/mnt/root";

/// The partitions of `disk` (`/dev/vda` → `/dev/vda1`, …; `/dev/nvme0n1` →
/// `/dev/nvme0n1p1`, …), from sysfs, in partition order.
pub fn partitions(sys_block: &Path, disk: &str) -> Vec<PathBuf> {
    let name = disk.trim_start_matches("/dev/");
    let mut parts: Vec<(u32, String)> = fs::read_dir(sys_block.join(name))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let num = fs::read_to_string(e.path().join("partition"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            n.starts_with(name).then_some((num, n))
        })
        .collect();
    parts.sort();
    parts
        .into_iter()
        .map(|(_, n)| PathBuf::from("/dev").join(n))
        .collect()
}

/// The machine's disks from sysfs (`/dev/vda`, `/dev/nvme0n1`, …), sorted; RAM,
/// loop, optical and network block devices left out.
pub fn disks(sys_block: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "sr", "fd", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .map(|n| format!("/dev/{n}"))
        .collect();
    out.sort();
    out
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The installed OS, mounted; unmounted (with everything under it) on drop.
pub struct MountedRoot {
    pub path: PathBuf,
    /// The partition mounted there.
    pub device: PathBuf,
    binds: Vec<PathBuf>,
}

impl MountedRoot {
    /// Mounts the partition of `disk` that holds an OS (`/etc/os-release`).
    pub fn find(disk: &str) -> Result<MountedRoot, String> {
        // The partition table was just written: have the kernel re-read it.
        let _ = Command::new("blockdev").args(["--rereadpt", disk]).status();
        let root = PathBuf::from(ROOT_MOUNT);
        fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let parts = partitions(Path::new("/sys/block"), disk);
        if parts.is_empty() {
            return Err(format!("{disk} has no partitions: is the image written?"));
        }
        for part in &parts {
            if run(Command::new("mount").arg(part).arg(&root)).is_err() {
                continue;
            }
            if root.join("etc/os-release").exists() || root.join("usr/lib/os-release").exists() {
                return Ok(MountedRoot {
                    path: root,
                    device: part.clone(),
                    binds: Vec::new(),
                });
            }
            let _ = run(Command::new("umount").arg(&root));
        }
        Err(format!(
            "no partition of {disk} holds an OS (looked for /etc/os-release on {})",
            parts.len()
        ))
    }

    /// Writes `content` to `path` inside the installed OS, creating parents.
    pub fn write_file(&self, path: &str, content: &[u8], mode: u32) -> Result<(), String> {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(format!(
                "{path:?} is not an absolute path inside the installed OS"
            ));
        }
        let full = self.path.join(rel);
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = full.with_extension("kiln-tmp");
        fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        fs::rename(&tmp, &full).map_err(|e| format!("{}: {e}", full.display()))
    }

    /// Mounts, read-only on the root's /boot, the other partition of `disk`
    /// that holds kernels (`vmlinuz-*`): for installs with a separate /boot.
    pub fn mount_boot(&mut self, disk: &str) -> Result<(), String> {
        let target = self.path.join("boot");
        fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        for part in partitions(Path::new("/sys/block"), disk) {
            if part == self.device
                || run(Command::new("mount")
                    .args(["-o", "ro"])
                    .arg(&part)
                    .arg(&target))
                .is_err()
            {
                continue;
            }
            let has_kernel = fs::read_dir(&target)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"));
            if has_kernel {
                self.binds.push(target);
                return Ok(());
            }
            let _ = run(Command::new("umount").arg(&target));
        }
        Err(format!(
            "no partition of {disk} holds the separate /boot (no vmlinuz-* found)"
        ))
    }

    /// Runs `command` with `sh -c` chrooted into the installed OS, /dev,
    /// /proc and /sys bound in; each output line goes to `line`.
    pub fn exec(&mut self, command: &str, mut line: impl FnMut(String)) -> Result<(), String> {
        for fs_dir in ["dev", "proc", "sys"] {
            let target = self.path.join(fs_dir);
            if !self.binds.contains(&target) {
                run(Command::new("mount")
                    .arg("-o")
                    .arg("bind")
                    .arg(format!("/{fs_dir}"))
                    .arg(&target))?;
                self.binds.push(target);
            }
        }
        let mut child = Command::new("chroot")
            .arg(&self.path)
            .args(["/bin/sh", "-c", &format!("exec 2>&1; {command}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("chroot: {e}"))?;
        if let Some(out) = child.stdout.take() {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                line(l);
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("waiting for the command: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("command exited with {status}"))
        }
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        for b in self.binds.iter().rev() {
            let _ = run(Command::new("umount").arg(b));
        }
        let _ = run(&mut Command::new("sync"));
        if let Err(e) = run(Command::new("umount").arg(&self.path)) {
            eprintln!("kiln-agent: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_from_sysfs_without_ram_loop_or_optical() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["vda", "loop0", "ram0", "sr0", "nvme0n1", "sda", "zram0"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        assert_eq!(disks(dir.path()), ["/dev/nvme0n1", "/dev/sda", "/dev/vda"]);
    }

    #[test]
    fn partitions_from_sysfs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for (disk, parts) in [
            ("vda", &["vda2", "vda10", "vda1"][..]),
            ("nvme0n1", &["nvme0n1p1"][..]),
        ] {
            for (i, p) in parts.iter().enumerate() {
                let d = dir.path().join(disk).join(p);
                fs::create_dir_all(&d).unwrap();
                let num = p.trim_start_matches(disk).trim_start_matches('p');
                fs::write(d.join("partition"), format!("{num}\n")).unwrap();
                let _ = i;
            }
            fs::create_dir_all(dir.path().join(disk).join("queue")).unwrap();
        }
        assert_eq!(
            partitions(dir.path(), "/dev/vda"),
            vec![
                PathBuf::from("/dev/vda1"),
                PathBuf::from("/dev/vda2"),
                PathBuf::from("/dev/vda10")
            ]
        );
        assert_eq!(
            partitions(dir.path(), "/dev/nvme0n1"),
            vec![PathBuf::from("/dev/nvme0n1p1")]
        );
        assert!(partitions(dir.path(), "/dev/sdz").is_empty());
    }
}
