//! The `kexec` action: start the installed OS's kernel straight from the agent,
//! skipping the firmware (POST, option ROMs, netboot attempts, the boot loader).
//!
//! [`find_boot_entry`] reads the installed root (kernel, initrd, command line)
//! and does nothing else, so it is tested on fake roots; [`load`] and
//! [`boot_loaded`] are the two system calls.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Component, Path, PathBuf};

/// What to boot: paths inside the mounted root, and the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Where the command line came from (for the log).
    pub cmdline_source: String,
}

/// Symlinks followed before giving up (a loop, or a chain gone wrong).
const MAX_LINKS: usize = 16;

/// Resolves `rel` under `root`, following symlinks as the installed OS would see
/// them (absolute targets are relative to `root`, `..` never leaves it).
/// Returns the path of the regular file it ends at.
fn resolve_in(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut rel = normalize(rel);
    for _ in 0..MAX_LINKS {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full).ok()?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).ok()?;
            rel = if target.is_absolute() {
                normalize(&target)
            } else {
                normalize(&rel.parent().unwrap_or(Path::new("")).join(target))
            };
        } else if meta.is_file() {
            return Some(full);
        } else {
            return None;
        }
    }
    None
}

/// `a/./b/../c` → `a/c`, leading `/` dropped, `..` at the top ignored.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Orders kernel versions naturally: `6.1.0-9` < `6.1.0-10`.
fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (num, tail) = rest.split_at(digits);
        let text_len = tail.len() - tail.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
        let (text, tail) = tail.split_at(text_len);
        key.push((num.parse().unwrap_or(0), text.to_string()));
        rest = tail;
    }
    key
}

/// The kernel to boot and the name GRUB-style configs would use for it.
struct Kernel {
    path: PathBuf,
    /// File names that may appear on a boot loader's `linux` line for it.
    names: Vec<String>,
    version: Option<String>,
    /// Found through the distribution's `vmlinuz` link (then `initrd.img` is its pair).
    via_link: Option<PathBuf>,
}

fn find_kernel(root: &Path) -> Option<Kernel> {
    // The distribution's "current kernel" links (Debian: /vmlinuz, Ubuntu: /boot/vmlinuz).
    for link in ["vmlinuz", "boot/vmlinuz"] {
        if let Some(path) = resolve_in(root, Path::new(link)) {
            let file = path.file_name()?.to_string_lossy().into_owned();
            return Some(Kernel {
                version: file.strip_prefix("vmlinuz-").map(str::to_string),
                names: vec!["vmlinuz".into(), file],
                path,
                via_link: Some(PathBuf::from(link)),
            });
        }
    }
    // Else the newest /boot/vmlinuz-VERSION.
    let mut versions: Vec<String> = fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("vmlinuz-")?.to_string();
            resolve_in(root, &Path::new("boot").join(&name))?;
            Some(v)
        })
        .collect();
    versions.sort_by_key(|v| version_key(v));
    let v = versions.pop()?;
    let file = format!("vmlinuz-{v}");
    Some(Kernel {
        path: resolve_in(root, &Path::new("boot").join(&file))?,
        names: vec![file],
        version: Some(v),
        via_link: None,
    })
}

fn find_initrd(root: &Path, k: &Kernel) -> Option<PathBuf> {
    if let Some(link) = &k.via_link {
        let pair = link.with_file_name("initrd.img");
        if let Some(p) = resolve_in(root, &pair) {
            return Some(p);
        }
    }
    let v = k.version.as_deref()?;
    [
        format!("boot/initrd.img-{v}"),
        format!("boot/initramfs-{v}.img"),
        format!("boot/initrd-{v}"),
    ]
    .iter()
    .find_map(|p| resolve_in(root, Path::new(p)))
}

/// The arguments of a boot loader line `linux PATH ARGS…` (GRUB) whose PATH
/// names `k`, or of the first such line when none does. GRUB variables
/// (`$vt_handoff`) are dropped: they are not known outside GRUB.
fn grub_cmdline(cfg: &str, k: &Kernel) -> Option<String> {
    let mut first = None;
    for line in cfg.lines() {
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("linux" | "linuxefi" | "linux16")) {
            continue;
        }
        let Some(path) = words.next() else { continue };
        let args: Vec<&str> = words.filter(|w| !w.contains('$')).collect();
        let args = args.join(" ");
        let file = path.rsplit('/').next().unwrap_or(path);
        if k.names.iter().any(|n| n == file) {
            return Some(args);
        }
        first.get_or_insert(args);
    }
    first
}

/// `options` of a Boot Loader Specification entry (`/boot/loader/entries/*.conf`)
/// whose `linux` names `k`.
fn bls_cmdline(root: &Path, k: &Kernel) -> Option<String> {
    let dir = fs::read_dir(root.join("boot/loader/entries")).ok()?;
    for e in dir.flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.trim().split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim().to_string())
            })
        };
        let names_k = field("linux")
            .map(|p| k.names.iter().any(|n| p.rsplit('/').next() == Some(n)))
            .unwrap_or(false);
        if names_k && let Some(opts) = field("options") {
            return Some(opts);
        }
    }
    None
}

/// `root=` for the file system mounted at `/` in the installed OS's fstab.
fn fstab_root(fstab: &str) -> Option<String> {
    fstab.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (dev, mnt) = (w.next()?, w.next()?);
        (!dev.starts_with('#') && mnt == "/").then(|| format!("root={dev}"))
    })
}

/// `KEY="value"` from a shell-style file such as /etc/default/grub.
fn shell_var(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// Finds the kernel, initrd and kernel command line of the OS installed under
/// `root` (mounted, /boot included). The command line comes from, in order:
/// /etc/kernel/cmdline, the GRUB menu entry for that kernel, a Boot Loader
/// Specification entry, /etc/default/grub; `root=` is added from /etc/fstab
/// when the source lacks it.
pub fn find_boot_entry(root: &Path) -> Result<BootEntry, String> {
    let k = find_kernel(root).ok_or_else(|| {
        format!(
            "no kernel in the installed OS at {} (looked for /vmlinuz, /boot/vmlinuz, /boot/vmlinuz-*)",
            root.display()
        )
    })?;
    let initrd = find_initrd(root, &k);
    let read = |p: &str| fs::read_to_string(root.join(p)).ok();
    let mut found = read("etc/kernel/cmdline")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .map(|s| (s, "/etc/kernel/cmdline".to_string()));
    for cfg in ["boot/grub/grub.cfg", "boot/grub2/grub.cfg"] {
        if found.is_none() {
            found = read(cfg)
                .and_then(|c| grub_cmdline(&c, &k))
                .map(|s| (s, format!("/{cfg}")));
        }
    }
    if found.is_none() {
        found = bls_cmdline(root, &k).map(|s| (s, "/boot/loader/entries".into()));
    }
    if found.is_none() {
        found = read("etc/default/grub").map(|g| {
            let args: Vec<String> = ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"]
                .iter()
                .filter_map(|key| shell_var(&g, key))
                .filter(|v| !v.is_empty())
                .collect();
            (args.join(" "), "/etc/default/grub".into())
        });
    }
    let (mut cmdline, mut source) = found.unwrap_or_default();
    if !cmdline.split_whitespace().any(|w| w.starts_with("root=")) {
        let root_arg = read("etc/fstab")
            .and_then(|f| fstab_root(&f))
            .ok_or_else(|| {
                format!(
                    "cannot tell the installed kernel its root file system: no root= in {} and no / in /etc/fstab",
                    if source.is_empty() { "any boot loader config" } else { &source }
                )
            })?;
        cmdline = format!("{root_arg} {cmdline}").trim().to_string();
        source = if source.is_empty() {
            "/etc/fstab".into()
        } else {
            format!("{source} + root from /etc/fstab")
        };
    }
    Ok(BootEntry {
        kernel: k.path,
        initrd,
        cmdline,
        cmdline_source: source,
    })
}

/// Whether the installed OS mounts a separate /boot (then the kernel is not on its root).
pub fn has_separate_boot(root: &Path) -> bool {
    fs::read_to_string(root.join("etc/fstab")).is_ok_and(|f| {
        f.lines().any(|l| {
            let mut w = l.split_whitespace();
            matches!((w.next(), w.next()), (Some(d), Some("/boot")) if !d.starts_with('#'))
        })
    })
}

/// `kexec_file_load(2)` flag: boot without an initramfs.
const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;

/// Loads `entry` as the kernel the next [`boot_loaded`] starts. The kernel
/// checks the image (and its signature when it is locked down).
pub fn load(entry: &BootEntry) -> io::Result<()> {
    let open = |p: &Path| {
        fs::File::open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let kernel = open(&entry.kernel)?;
    let initrd = entry.initrd.as_deref().map(open).transpose()?;
    let mut cmdline = entry.cmdline.clone().into_bytes();
    if cmdline.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the kernel command line contains a NUL byte",
        ));
    }
    cmdline.push(0);
    kexec_file_load(kernel.as_fd(), initrd.as_ref().map(|f| f.as_fd()), &cmdline)
}

/// `kexec_file_load(2)`; `cmdline` ends with its NUL.
#[allow(unsafe_code)]
fn kexec_file_load(
    kernel: BorrowedFd<'_>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &[u8],
) -> io::Result<()> {
    debug_assert_eq!(cmdline.last(), Some(&0));
    let flags = if initrd.is_none() {
        KEXEC_FILE_NO_INITRAMFS
    } else {
        0
    };
    let initrd_fd = initrd.map_or(-1, |f| f.as_raw_fd());
    // SAFETY: plain integer arguments except `cmdline`, a live NUL-terminated
    // buffer of exactly `cmdline.len()` bytes that the kernel only reads during
    // the call; the file descriptors are borrowed, so open for the whole call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            libc::c_long::from(kernel.as_raw_fd()),
            libc::c_long::from(initrd_fd),
            cmdline.len() as libc::c_ulong,
            cmdline.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts the kernel [`load`]ed earlier; returns only if that fails. Flush and
/// unmount the disks first: nothing is written back after this.
pub fn boot_loaded() -> io::Error {
    match rustix::system::reboot(rustix::system::RebootCommand::Kexec) {
        Ok(()) => io::Error::other("reboot(KEXEC) returned"),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A Debian install: /vmlinuz and /initrd.img links into /boot, update-grub's menu.
    fn debian_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64"] {
            write(r, &format!("boot/vmlinuz-{v}"), "kernel");
            write(r, &format!("boot/initrd.img-{v}"), "initrd");
        }
        symlink("boot/vmlinuz-6.1.0-9-amd64", r.join("vmlinuz")).unwrap();
        symlink("/boot/initrd.img-6.1.0-9-amd64", r.join("initrd.img")).unwrap();
        write(
            r,
            "boot/grub/grub.cfg",
            "menuentry 'Debian GNU/Linux' --class debian {\n\
             \tsearch --no-floppy --fs-uuid --set=root 1234\n\
             \tlinux\t/boot/vmlinuz-6.1.0-10-amd64 root=UUID=aaaa-new ro quiet\n\
             \tinitrd\t/boot/initrd.img-6.1.0-10-amd64\n}\n\
             submenu 'Advanced' {\n\
             \tmenuentry 'Debian, with Linux 6.1.0-9-amd64' {\n\
             \t\tlinux\t/boot/vmlinuz-6.1.0-9-amd64 root=UUID=bbbb-cur ro $vt_handoff quiet\n\
             \t}\n}\n",
        );
        write(r, "etc/fstab", "UUID=cccc-fstab / ext4 defaults 0 1\n");
        dir
    }

    #[test]
    fn debian_links_pick_the_kernel_its_initrd_and_its_grub_line() {
        let dir = debian_root();
        let r = dir.path();
        let e = find_boot_entry(r).unwrap();
        // The link names the current kernel, even though a newer one is installed.
        assert_eq!(e.kernel, r.join("boot/vmlinuz-6.1.0-9-amd64"));
        // An absolute link target is resolved inside the installed root.
        assert_eq!(e.initrd, Some(r.join("boot/initrd.img-6.1.0-9-amd64")));
        // That kernel's own GRUB line, GRUB variables dropped.
        assert_eq!(e.cmdline, "root=UUID=bbbb-cur ro quiet");
        assert_eq!(e.cmdline_source, "/boot/grub/grub.cfg");
    }

    #[test]
    fn etc_kernel_cmdline_wins() {
        let dir = debian_root();
        write(
            dir.path(),
            "etc/kernel/cmdline",
            "root=UUID=dddd rw\n  console=ttyS0\n",
        );
        let e = find_boot_entry(dir.path()).unwrap();
        assert_eq!(e.cmdline, "root=UUID=dddd rw console=ttyS0");
        assert_eq!(e.cmdline_source, "/etc/kernel/cmdline");
    }

    #[test]
    fn without_links_the_newest_versioned_kernel_and_its_initrd() {
        let dir = debian_root();
        let r = dir.path();
        fs::remove_file(r.join("vmlinuz")).unwrap();
        fs::remove_file(r.join("initrd.img")).unwrap();
        let e = find_boot_entry(r).unwrap();
        // 10 > 9: versions compare as numbers, not text.
        assert_eq!(e.kernel, r.join("boot/vmlinuz-6.1.0-10-amd64"));
        assert_eq!(e.initrd, Some(r.join("boot/initrd.img-6.1.0-10-amd64")));
        assert_eq!(e.cmdline, "root=UUID=aaaa-new ro quiet");
    }

    #[test]
    fn the_test_os_layout_a_link_named_on_the_grub_line() {
        // images/test-os: `linux /vmlinuz root=LABEL=kiln-root rw console=…`
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "boot/vmlinuz-6.1.0-56-amd64", "k");
        write(r, "boot/initrd.img-6.1.0-56-amd64", "i");
        symlink("boot/vmlinuz-6.1.0-56-amd64", r.join("vmlinuz")).unwrap();
        symlink("boot/initrd.img-6.1.0-56-amd64", r.join("initrd.img")).unwrap();
        write(
            r,
            "boot/grub/grub.cfg",
            "set default=0\nif [ \"$grub_platform\" = pc ]; then\n serial --unit=0\nfi\n\
             menuentry 'Debian' {\n\tlinux /vmlinuz root=LABEL=kiln-root rw console=tty0 console=ttyS0,115200\n\tinitrd /initrd.img\n}\n",
        );
        let e = find_boot_entry(r).unwrap();
        assert_eq!(e.kernel, r.join("boot/vmlinuz-6.1.0-56-amd64"));
        assert_eq!(e.initrd, Some(r.join("boot/initrd.img-6.1.0-56-amd64")));
        assert_eq!(
            e.cmdline,
            "root=LABEL=kiln-root rw console=tty0 console=ttyS0,115200"
        );
    }

    #[test]
    fn root_from_fstab_when_the_config_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "boot/vmlinuz-5.10.0-1", "k");
        write(
            r,
            "etc/default/grub",
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0\"\n",
        );
        write(
            r,
            "etc/fstab",
            "# / was on /dev/sda1\nUUID=1111-root / xfs defaults 0 1\nUUID=22 /boot ext4 defaults 0 2\n",
        );
        let e = find_boot_entry(r).unwrap();
        assert_eq!(e.initrd, None, "no initrd: the kernel boots without one");
        assert_eq!(e.cmdline, "root=UUID=1111-root console=ttyS0 quiet");
        assert_eq!(e.cmdline_source, "/etc/default/grub + root from /etc/fstab");
        assert!(has_separate_boot(r));
    }

    #[test]
    fn boot_loader_spec_entries() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "boot/vmlinuz-6.8.5-301.fc40.x86_64", "k");
        write(r, "boot/initramfs-6.8.5-301.fc40.x86_64.img", "i");
        write(
            r,
            "boot/loader/entries/abc-6.8.5-301.fc40.x86_64.conf",
            "title Fedora\nlinux /vmlinuz-6.8.5-301.fc40.x86_64\noptions root=UUID=ffff ro rhgb\n",
        );
        let e = find_boot_entry(r).unwrap();
        assert_eq!(
            e.initrd,
            Some(r.join("boot/initramfs-6.8.5-301.fc40.x86_64.img"))
        );
        assert_eq!(e.cmdline, "root=UUID=ffff ro rhgb");
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let e = find_boot_entry(r).unwrap_err();
        assert!(e.contains("no kernel in the installed OS"), "{e}");
        write(r, "boot/vmlinuz-6.1.0-1", "k");
        let e = find_boot_entry(r).unwrap_err();
        assert!(e.contains("no root= in any boot loader config"), "{e}");
        assert!(!has_separate_boot(r));
    }

    #[test]
    fn links_cannot_leave_the_root_or_loop() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("root");
        fs::create_dir_all(r.join("boot")).unwrap();
        // A file outside the installed root, named by a link that climbs out.
        write(dir.path(), "vmlinuz-host", "host kernel");
        symlink("../../vmlinuz-host", r.join("vmlinuz")).unwrap();
        assert_eq!(resolve_in(&r, Path::new("vmlinuz")), None);
        symlink("loop", r.join("boot/loop")).unwrap();
        assert_eq!(resolve_in(&r, Path::new("boot/loop")), None);
    }

    #[test]
    fn versions_sort_naturally() {
        let mut v = vec!["6.1.0-10-amd64", "6.1.0-9-amd64", "5.19.0-1", "6.10.1"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, ["5.19.0-1", "6.1.0-9-amd64", "6.1.0-10-amd64", "6.10.1"]);
    }
}
