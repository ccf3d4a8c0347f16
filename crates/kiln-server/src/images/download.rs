//! An import from a URL: stream it over HTTP(S) into a temporary file beside the images,
//! hashing the bytes as they arrive and reporting how far it got.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::ImageError;
use super::convert::io_err;
use super::format::hex;

pub struct Downloaded {
    /// Removed when dropped: the import reads it, then it goes.
    pub file: tempfile::NamedTempFile,
    /// sha256 of the bytes as downloaded (the source, before any conversion).
    pub sha256: String,
    pub bytes: u64,
}

/// Downloads `url` into a temporary file in `dir` (the images directory, so no second
/// file system fills up); never holds more than a buffer of it in memory. `progress` hears
/// the bytes so far and the size the server announced, and answers whether to go on.
pub fn download(
    url: &str,
    dir: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>) -> bool,
) -> Result<Downloaded, ImageError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    // Messages name the URL without what could be a credential (user, password, query).
    let shown = kiln_api::images::url_for_display(url);
    let response = agent
        .get(url)
        .call()
        .map_err(|e| ImageError::Download(format!("GET {shown}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(ImageError::Download(format!(
            "GET {shown}: HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )));
    }
    let total = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let mut file = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(io_err(format_args!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
    let _ = progress(0, total);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::Download(format!(
                    "GET {shown}: reading the body after {bytes} bytes: {e}"
                )));
            }
        };
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(io_err(format_args!("writing {}", file.path().display())))?;
        bytes += n as u64;
        if !progress(bytes, total) {
            return Err(ImageError::Download(format!(
                "GET {shown}: stopped after {bytes} bytes: the server is stopping"
            )));
        }
    }
    if let Some(total) = total
        && bytes != total
    {
        return Err(ImageError::Download(format!(
            "GET {shown}: the body ended after {bytes} of {total} bytes"
        )));
    }
    file.as_file()
        .sync_all()
        .map_err(io_err(file.path().display()))?;
    Ok(Downloaded {
        file,
        sha256: hex(&hash.finalize()),
        bytes,
    })
}
