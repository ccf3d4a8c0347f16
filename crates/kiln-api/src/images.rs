//! `/api/v1/images`: imported OS images, imports from a URL or an uploaded file, and the
//! rules image names follow (shared: the CLI names an upload before sending it).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiErrorBody;

/// One imported image (stored raw + zstd), as `kiln image list -o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub name: String,
    /// File under the server's images directory, named by content.
    pub file: String,
    /// Where the HTTP service serves it: `/images/<file>`.
    pub url_path: String,
    /// Size of the disk once decompressed.
    pub raw_size: u64,
    /// sha256 of the served (raw + zstd) file.
    pub sha256: String,
    /// RFC 3339.
    pub created: String,
    /// What the import read: `raw`, `qcow2`, `raw.gz`, `qcow2.xz`…; empty if imported
    /// before Kiln recorded it.
    pub source_format: String,
}

/// zstd level when none is given: higher is smaller and slower to import; decompression
/// speed barely changes.
pub const DEFAULT_ZSTD_LEVEL: i32 = 10;

fn default_level() -> i32 {
    DEFAULT_ZSTD_LEVEL
}

/// `POST /api/v1/images`: download an http(s) URL on the server and import it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportRequest {
    /// http:// or https:// only: the server never reads its own files for a caller.
    pub url: String,
    /// Default: the URL's file name without format suffixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expected sha256 of the bytes as downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Replace an image of the same name.
    #[serde(default)]
    pub replace: bool,
    #[serde(default = "default_level")]
    pub zstd_level: i32,
}

/// `PUT /api/v1/images/{name}`: the query of an upload (the body is the file as it is).
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Expected sha256 of the uploaded bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Replace an image of the same name.
    #[serde(default)]
    pub replace: bool,
    #[serde(default = "default_level")]
    pub zstd_level: i32,
    /// What to call the upload in messages (the client's file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Check the token, name, level, digest and whether the name is free, with an empty
    /// body, and answer 204: a client learns why an upload would be refused before sending
    /// gigabytes the server would not read.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportPhase {
    /// Bytes coming in: downloaded from the URL, or uploaded.
    Receiving,
    /// Decompressing and converting to raw + zstd.
    Converting,
    Done,
}

/// An import's state: `GET /api/v1/images/imports/{id}` while it runs, and the answer to an
/// upload once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageImport {
    pub id: String,
    pub name: String,
    /// The URL, or the uploaded file's name.
    pub source: String,
    pub state: ImportState,
    pub phase: ImportPhase,
    /// Bytes of the source received so far.
    pub bytes_done: u64,
    /// The source's size, when the sender said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// RFC 3339.
    pub started: String,
    /// Size of the stored raw + zstd file, once imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiErrorBody>,
}

/// `DELETE /api/v1/images/{name}`: the record removed, and whether its file went too (it
/// stays while another image record names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeletedImage {
    pub image: Image,
    pub file_removed: bool,
}

/// Suffixes that say how an image is stored, never which image it is.
const FORMAT_SUFFIXES: &[&str] = &[".gz", ".xz", ".zst", ".bz2", ".qcow2", ".raw", ".img"];

/// Whether `source` names something to download rather than a local file.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// A URL as messages, logs and import records show it: without a user and password and
/// without its query (a signed URL's query is a credential): `https://h/os.gz?…`.
pub fn url_for_display(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (path, cut) = match path.find(['?', '#']) {
        Some(i) => (&path[..i], "?…"),
        None => (path, ""),
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{host}{path}{cut}")
}

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
        assert!(is_url("https://h/x") && is_url("http://h/x") && !is_url("./http.img"));
        assert!(!is_url("file:///etc/shadow"));
    }

    #[test]
    fn shown_urls_carry_no_credential() {
        for (url, shown) in [
            ("https://h/p/os.gz", "https://h/p/os.gz"),
            ("https://u:secret@h:8443/os.gz", "https://h:8443/os.gz"),
            (
                "https://s3.example/b/os.gz?X-Amz-Signature=abc&X-Amz-Credential=k",
                "https://s3.example/b/os.gz?…",
            ),
            ("http://h?token=1", "http://h?…"),
            ("http://h/x#frag", "http://h/x?…"),
        ] {
            assert_eq!(url_for_display(url), shown, "{url}");
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
        assert_eq!(parse_sha256(&"AB".repeat(32)), Ok("ab".repeat(32)));
        assert!(parse_sha256("abc").is_err());
    }

    #[test]
    fn requests_default_the_level_and_flags() {
        let r: ImportRequest = serde_json::from_str(r#"{"url":"http://h/x.gz"}"#).unwrap();
        assert_eq!(
            (r.zstd_level, r.replace, r.name, r.sha256),
            (DEFAULT_ZSTD_LEVEL, false, None, None)
        );
    }
}
