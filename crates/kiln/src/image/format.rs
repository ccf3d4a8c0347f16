//! What an image file holds, read from its first bytes, and the names images go by.
//! Pure: no I/O.

/// A container or compression recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    Qcow2,
    /// Anything else: a raw disk.
    Raw,
}

/// Bytes [`detect`] needs to tell every format apart.
pub const MAGIC_LEN: usize = 6;

/// The format of data starting with `head` (fewer than [`MAGIC_LEN`] bytes only at
/// the end of a short input).
pub fn detect(head: &[u8]) -> Magic {
    match head {
        [0x1f, 0x8b, ..] => Magic::Gzip,
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Magic::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Magic::Zstd,
        // "BZh" and a block size digit: three bytes alone are too likely in a raw disk.
        [b'B', b'Z', b'h', b'1'..=b'9', ..] => Magic::Bzip2,
        [b'Q', b'F', b'I', 0xfb, ..] => Magic::Qcow2,
        _ => Magic::Raw,
    }
}

impl Magic {
    /// The usual file suffix, used to describe the source (`qcow2.gz`).
    pub fn suffix(self) -> &'static str {
        match self {
            Magic::Gzip => "gz",
            Magic::Xz => "xz",
            Magic::Zstd => "zst",
            Magic::Bzip2 => "bz2",
            Magic::Qcow2 => "qcow2",
            Magic::Raw => "raw",
        }
    }
}

/// What an import read: a disk format, maybe inside one compression (`raw`, `qcow2.xz`).
pub fn describe(compression: Option<Magic>, disk: Magic) -> String {
    match compression {
        Some(c) => format!("{}.{}", disk.suffix(), c.suffix()),
        None => disk.suffix().to_string(),
    }
}

/// Suffixes that say how an image is stored, never which image it is.
const FORMAT_SUFFIXES: &[&str] = &[".gz", ".xz", ".zst", ".bz2", ".qcow2", ".raw", ".img"];

/// The name an image file or URL gets by default: its last path segment, lower-cased,
/// without format suffixes (`ubuntu-2204-kube-v1.30.raw.gz` → `ubuntu-2204-kube-v1.30`).
/// A version's dots are kept, so v1.30 and v1.29 stay two images.
pub fn default_name(file_or_url: &str) -> String {
    let path = if file_or_url.contains("://") {
        file_or_url.split(['?', '#']).next().unwrap_or_default()
    } else {
        file_or_url
    };
    let mut name = path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    while let Some(suffix) = FORMAT_SUFFIXES.iter().find(|s| name.ends_with(**s)) {
        if name.len() == suffix.len() {
            break; // `.img` alone: keep something to name it by.
        }
        name.truncate(name.len() - suffix.len());
    }
    name
}

/// Longest image name: it becomes part of a file name (with `-<16 hex>.raw.zst`).
pub const NAME_MAX: usize = 128;

/// Image names are used in file names and URLs: lower-case letters, digits, '-', '.'
/// and '_', starting with a letter or digit, no "..".
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image name {name:?} must be 1 to {NAME_MAX} lower-case letters, digits, '-', '.' and '_', \
             start with a letter or digit and hold no \"..\""
        ))
    }
}

/// The file an image's bytes are stored in, under the images directory: named by
/// content, so a replaced image never changes the bytes behind a URL already handed out.
pub fn content_file_name(name: &str, sha256_hex: &str) -> String {
    format!("{name}-{}.raw.zst", &sha256_hex[..16.min(sha256_hex.len())])
}

/// `HEX` given by an operator as a sha256: 64 hex digits (either case).
pub fn parse_sha256(hex: &str) -> Result<String, String> {
    let hex = hex.trim();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!("--sha256 {hex:?}: expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide_the_format() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0, 0, 0]), Magic::Gzip);
        assert_eq!(detect(b"\xfd7zXZ\x00"), Magic::Xz);
        assert_eq!(detect(b"\xfd7zXZ\x01"), Magic::Raw);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]), Magic::Zstd);
        assert_eq!(detect(b"BZh91AY"), Magic::Bzip2);
        assert_eq!(detect(b"BZh"), Magic::Raw);
        assert_eq!(detect(b"QFI\xfb\0\0"), Magic::Qcow2);
        assert_eq!(detect(&[0; 6]), Magic::Raw);
        assert_eq!(detect(&[]), Magic::Raw);
        assert_eq!(describe(Some(Magic::Xz), Magic::Qcow2), "qcow2.xz");
        assert_eq!(describe(None, Magic::Raw), "raw");
    }

    #[test]
    fn default_names_drop_only_format_suffixes() {
        for (given, name) in [
            ("ubuntu-2204-kube-v1.30.gz", "ubuntu-2204-kube-v1.30"),
            ("ubuntu-2204-kube-v1.29.gz", "ubuntu-2204-kube-v1.29"),
            ("/srv/x.raw.zst", "x"),
            ("x.qcow2.bz2", "x"),
            ("disk.img.xz", "disk"),
            ("Debian-12.RAW", "debian-12"),
            (
                "http://h/p/ubuntu-2204-kube-v1.30.gz",
                "ubuntu-2204-kube-v1.30",
            ),
            ("https://h/a.raw.gz?token=1#frag", "a"),
            ("/srv/a#1.raw", "a#1"),
            ("rhel-9.4.tar", "rhel-9.4.tar"),
            (".img", ".img"),
        ] {
            assert_eq!(default_name(given), name, "{given}");
        }
    }

    #[test]
    fn names_are_safe_in_paths_and_urls() {
        for good in ["ubuntu-2204-kube-v1.30", "test-os", "a", "os_1.2", "9x"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "Bad", "a/b", "..", "a..b", ".hidden", "-x", "_x", "a b", "a%2f", "ä",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(NAME_MAX + 1)).is_err());
        assert_eq!(
            content_file_name("x", &"ab".repeat(32)),
            "x-abababababababab.raw.zst"
        );
        assert_eq!(parse_sha256(&"AB".repeat(32)), Ok("ab".repeat(32)));
        assert!(parse_sha256("abc").is_err());
    }
}
