//! Files under a served root (the TFTP root, HTTP artifact directories):
//! which names a request may use, and which files they may open.
//!
//! Two checks. A lexical one before the disk is touched: no `..`, nothing
//! absolute, no NUL. And after opening: the file must lie under the root,
//! unless every symlink that led out of it belongs to root or to the root
//! directory's owner — the operator put it there (Debian's
//! `/usr/lib/ipxe/ipxe.efi` is a link to `/boot/ipxe.efi`). A link planted by
//! any other user cannot expose files only kiln may read.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a name was refused or could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// empty file name
    #[error("empty file name")]
    Empty,
    /// file name contains a NUL byte
    #[error("file name contains NUL")]
    Nul,
    /// absolute paths are not served
    #[error("absolute path")]
    Absolute,
    /// `..` components are not allowed
    #[error("path contains '..'")]
    Parent,
    /// the file resolves outside the root through a symlink the operator does not own
    #[error("path escapes the root through an untrusted symlink")]
    Escapes,
    /// not a regular file
    #[error("not a regular file")]
    NotAFile,
    /// no such file
    #[error("file not found")]
    NotFound,
    /// any other I/O error (permission denied, …)
    #[error("{0}")]
    Io(#[source] io::Error),
}

impl PathError {
    /// True when the request is refused for safety rather than simply absent.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, PathError::NotFound)
    }
}

/// The lexical check: turn `name` into a relative path with only normal
/// components. Both `/` and `\` separate components (PXE clients built for
/// Windows servers send `boot\x64\file`); empty and `.` components are
/// skipped.
pub fn sanitize(name: &str) -> Result<PathBuf, PathError> {
    if name.contains('\0') {
        return Err(PathError::Nul);
    }
    if name.starts_with(['/', '\\']) || has_drive_prefix(name) {
        return Err(PathError::Absolute);
    }
    let mut rel = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::Parent),
            p => rel.push(p),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(PathError::Empty);
    }
    Ok(rel)
}

fn has_drive_prefix(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// A file opened under the root, with what the cache keys on.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    /// Canonical path of the opened file.
    pub real: PathBuf,
    pub len: u64,
    pub mtime: Option<SystemTime>,
}

/// Open `name` under `canonical_root` (which must already be canonical).
/// Blocking: call from `spawn_blocking`.
pub fn open_under(canonical_root: &Path, name: &str) -> Result<Opened, PathError> {
    let path = canonical_root.join(sanitize(name)?);
    // Check the type before opening: opening a FIFO would block.
    let meta = std::fs::metadata(&path).map_err(io_error)?;
    if !meta.is_file() {
        return Err(PathError::NotAFile);
    }
    let file = File::open(&path).map_err(io_error)?;
    let real = real_path(&file, &path).map_err(io_error)?;
    if !real.starts_with(canonical_root) && !links_are_trusted(canonical_root, &sanitize(name)?)? {
        return Err(PathError::Escapes);
    }
    // Metadata of what we actually opened, not of what the name points to now.
    let meta: Metadata = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(PathError::NotAFile);
    }
    Ok(Opened {
        file,
        real,
        len: meta.len(),
        mtime: meta.modified().ok(),
    })
}

/// The path of the open file itself (immune to a symlink swapped in after
/// `open`); falls back to canonicalising the name where /proc is missing.
fn real_path(file: &File, path: &Path) -> io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(p);
        }
    }
    let _ = file;
    std::fs::canonicalize(path)
}

/// Whether every symlink met while resolving `rel` under `root` is owned by
/// root or by the owner of `root`.
fn links_are_trusted(root: &Path, rel: &Path) -> Result<bool, PathError> {
    use std::os::unix::fs::MetadataExt;
    let trusted = [0, std::fs::metadata(root).map_err(io_error)?.uid()];
    let mut cur = root.to_path_buf();
    let mut hops = 0;
    for part in rel.components() {
        cur.push(part);
        loop {
            let meta = std::fs::symlink_metadata(&cur).map_err(io_error)?;
            if !meta.file_type().is_symlink() {
                break;
            }
            if !trusted.contains(&meta.uid()) {
                return Ok(false);
            }
            hops += 1;
            if hops > 40 {
                return Err(PathError::Io(io::Error::other(
                    "too many levels of symbolic links",
                )));
            }
            let target = std::fs::read_link(&cur).map_err(io_error)?;
            cur = match cur.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
        }
    }
    Ok(true)
}

fn io_error(e: io::Error) -> PathError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => PathError::NotFound,
        _ => PathError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        assert_eq!(
            sanitize("undionly.kpxe").unwrap(),
            PathBuf::from("undionly.kpxe")
        );
        assert_eq!(sanitize("a/./b//c").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(
            sanitize("boot\\x64\\ipxe.efi").unwrap(),
            PathBuf::from("boot/x64/ipxe.efi")
        );
        assert_eq!(sanitize("a..b").unwrap(), PathBuf::from("a..b"));
    }

    #[test]
    fn traversal_refused() {
        for name in [
            "../",
            "..",
            "a/../../b",
            "a/..",
            "..\\x",
            "a\\..\\..\\b",
            "x/../y",
        ] {
            assert!(matches!(sanitize(name), Err(PathError::Parent)), "{name}");
        }
    }

    #[test]
    fn absolute_refused() {
        for name in ["/etc/passwd", "\\windows", "C:\\boot.ini", "c:foo"] {
            assert!(matches!(sanitize(name), Err(PathError::Absolute)), "{name}");
        }
    }

    #[test]
    fn nul_and_empty_refused() {
        assert!(matches!(sanitize("a\0b"), Err(PathError::Nul)));
        for name in ["", ".", "./", "//"] {
            let r = sanitize(name);
            assert!(
                matches!(r, Err(PathError::Empty) | Err(PathError::Absolute)),
                "{name}: {r:?}"
            );
        }
    }

    #[test]
    fn open_under_root_and_symlink_escape() {
        let base = std::env::temp_dir().join(format!("kiln-root-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("sub/f"), b"hello").unwrap();
        std::fs::write(outside.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("evil")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/f"), root.join("good")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evildir")).unwrap();
        let croot = std::fs::canonicalize(&root).unwrap();

        let o = open_under(&croot, "sub/f").unwrap();
        assert_eq!(o.len, 5);
        assert!(o.real.starts_with(&croot));
        assert!(
            open_under(&croot, "good").is_ok(),
            "symlink inside the root is fine"
        );
        // Links owned by root or the root's owner (the operator) are followed out of the root,
        assert_eq!(open_under(&croot, "evil").unwrap().len, 2);
        assert!(open_under(&croot, "evildir/secret").is_ok());
        // links owned by anyone else are not (needs root to hand a link to another user).
        if std::os::unix::fs::lchown(root.join("evil"), Some(4242), Some(4242)).is_ok() {
            std::os::unix::fs::lchown(root.join("evildir"), Some(4242), Some(4242)).unwrap();
            assert!(matches!(
                open_under(&croot, "evil"),
                Err(PathError::Escapes)
            ));
            assert!(matches!(
                open_under(&croot, "evildir/secret"),
                Err(PathError::Escapes)
            ));
            // A link inside the root stays fine whoever owns it.
            std::os::unix::fs::lchown(root.join("good"), Some(4242), Some(4242)).unwrap();
            assert!(open_under(&croot, "good").is_ok());
        } else {
            eprintln!("not root: untrusted-link checks skipped");
        }
        assert!(matches!(
            open_under(&croot, "missing"),
            Err(PathError::NotFound)
        ));
        assert!(matches!(
            open_under(&croot, "sub/f/x"),
            Err(PathError::NotFound)
        ));
        assert!(matches!(
            open_under(&croot, "sub"),
            Err(PathError::NotAFile)
        ));
        assert!(matches!(
            open_under(&croot, "../outside/secret"),
            Err(PathError::Parent)
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
