//! What the served stream is, decided from its first bytes.

use std::fmt;

/// How many leading bytes [`Format::detect`] looks at (the longest magic, xz's).
pub const MAGIC_LEN: usize = 6;

/// The encoding of the served stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// No known compression magic: the stream is the disk image itself.
    Raw,
    /// gzip (`1f 8b 08`), possibly several members.
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`), possibly several streams.
    Xz,
    /// zstd (`28 b5 2f fd`, or a skippable frame `5? 2a 4d 18`), possibly several frames.
    Zstd,
}

impl Format {
    /// Decides the format from the first bytes of the stream. `prefix` holds the first
    /// [`MAGIC_LEN`] bytes, or the whole stream when it is shorter; anything that is not
    /// a complete known magic is [`Format::Raw`].
    pub fn detect(prefix: &[u8]) -> Format {
        const XZ: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
        const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
        if prefix.starts_with(&[0x1f, 0x8b, 0x08]) {
            Format::Gzip
        } else if prefix.starts_with(&XZ) {
            Format::Xz
        } else if prefix.starts_with(&ZSTD)
            || (prefix.len() >= 4 && prefix[0] & 0xf0 == 0x50 && prefix[1..4] == [0x2a, 0x4d, 0x18])
        {
            Format::Zstd
        } else {
            Format::Raw
        }
    }

    /// Whether the stream must go through a decompressor.
    pub fn is_compressed(self) -> bool {
        self != Format::Raw
    }

    /// Short lowercase name: `raw`, `gzip`, `xz`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(
            Format::detect(&[0x1f, 0x8b, 0x08, 0x00, 0, 0]),
            Format::Gzip
        );
        assert_eq!(
            Format::detect(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
            Format::Xz
        );
        assert_eq!(
            Format::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x00]),
            Format::Zstd
        );
        assert_eq!(
            Format::detect(&[0x5e, 0x2a, 0x4d, 0x18, 0, 0]),
            Format::Zstd
        );
        // An MBR boot sector (GRUB's jump), a GPT protective MBR of zeros, ext4: raw.
        assert_eq!(
            Format::detect(&[0xeb, 0x63, 0x90, 0x10, 0x8e, 0xd0]),
            Format::Raw
        );
        assert_eq!(Format::detect(&[0; 6]), Format::Raw);
    }

    #[test]
    fn short_or_partial_prefixes_are_raw() {
        assert_eq!(Format::detect(&[]), Format::Raw);
        assert_eq!(Format::detect(&[0x1f]), Format::Raw);
        assert_eq!(Format::detect(&[0x1f, 0x8b]), Format::Raw);
        assert_eq!(Format::detect(&[0x1f, 0x8b, 0x08]), Format::Gzip);
        assert_eq!(Format::detect(&[0xfd, 0x37, 0x7a, 0x58, 0x5a]), Format::Raw);
        assert_eq!(
            Format::detect(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01]),
            Format::Raw
        );
        assert_eq!(Format::detect(&[0x28, 0xb5, 0x2f]), Format::Raw);
        assert_eq!(Format::detect(&[0x1f, 0x8b, 0x07]), Format::Raw);
    }

    #[test]
    fn names() {
        assert_eq!(Format::Zstd.to_string(), "zstd");
        assert!(Format::Gzip.is_compressed());
        assert!(!Format::Raw.is_compressed());
    }
}
