//! Map a requested file name to a file under the root, and refuse anything
//! that could leave it.
//!
//! Two checks, because either alone is not enough: a lexical one before we
//! touch the disk (no `..`, nothing absolute, no NUL), and after opening, the
//! real path of the opened file must lie under the canonical root, so a
//! symlink inside the root cannot point outside it.

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
    /// the file resolves outside the root (symlink)
    #[error("path escapes the root")]
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
    if !real.starts_with(canonical_root) {
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
        let base = std::env::temp_dir().join(format!("kiln-tftp-path-{}", std::process::id()));
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
        assert!(matches!(
            open_under(&croot, "evil"),
            Err(PathError::Escapes)
        ));
        assert!(matches!(
            open_under(&croot, "evildir/secret"),
            Err(PathError::Escapes)
        ));
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
