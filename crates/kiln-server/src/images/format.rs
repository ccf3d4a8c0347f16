//! What an image file holds, read from its first bytes, and the file an image is stored in.
//! Pure: no I/O. (Image names are part of the wire contract: `kiln_api::images`.)

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

/// The file an image's bytes are stored in, under the images directory: named by
/// content, so a replaced image never changes the bytes behind a URL already handed out.
pub fn content_file_name(name: &str, sha256_hex: &str) -> String {
    format!("{name}-{}.raw.zst", &sha256_hex[..16.min(sha256_hex.len())])
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn stored_files_are_named_by_content() {
        assert_eq!(
            content_file_name("x", &"ab".repeat(32)),
            "x-abababababababab.raw.zst"
        );
        assert_eq!(hex(&[0, 0xff, 0x1a]), "00ff1a");
    }
}
