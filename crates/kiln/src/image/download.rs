//! `kiln image import URL`: stream an image over HTTP(S) into a temporary file beside
//! the store's images, hashing the bytes as they arrive, with progress on stderr.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// Whether `source` names something to download rather than a local file.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

pub struct Downloaded {
    /// Removed when dropped: the import reads it, then it goes.
    pub file: tempfile::NamedTempFile,
    /// sha256 of the bytes as downloaded (the source, before any conversion).
    pub sha256: String,
    pub bytes: u64,
}

/// Downloads `url` into a temporary file in `dir` (the images directory, so no second
/// file system fills up); never holds more than a buffer of it in memory.
pub fn download(url: &str, dir: &Path) -> anyhow::Result<Downloaded> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    let total = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let mut file = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut progress = Progress::new(url, total, io::stderr().is_terminal());
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("GET {url}: reading the body after {bytes} bytes: {e}"),
        };
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", file.path().display()))?;
        bytes += n as u64;
        progress.advance(bytes);
    }
    progress.finish(bytes);
    if let Some(total) = total
        && bytes != total
    {
        bail!("GET {url}: the body ended after {bytes} of {total} bytes");
    }
    file.as_file().sync_all()?;
    Ok(Downloaded {
        file,
        sha256: hex(&hash.finalize()),
        bytes,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Progress on stderr: one line rewritten in place on a terminal, a line every few
/// seconds otherwise (logs, CI).
struct Progress<'a> {
    url: &'a str,
    total: Option<u64>,
    tty: bool,
    start: Instant,
    last: Instant,
}

impl<'a> Progress<'a> {
    fn new(url: &'a str, total: Option<u64>, tty: bool) -> Self {
        let now = Instant::now();
        Progress {
            url,
            total,
            tty,
            start: now,
            last: now,
        }
    }

    fn advance(&mut self, done: u64) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.show(done, false);
        }
    }

    fn finish(&mut self, done: u64) {
        self.show(done, true);
    }

    fn show(&self, done: u64, last: bool) {
        let line = progress_line(self.url, done, self.total, self.start.elapsed());
        let mut err = io::stderr().lock();
        let _ = match (self.tty, last) {
            (true, false) => write!(err, "\r{line}\x1b[K"),
            (true, true) => writeln!(err, "\r{line}\x1b[K"),
            (false, _) => writeln!(err, "{line}"),
        };
    }
}

/// `URL: 12.0 MiB of 48.0 MiB (25%), 6.0 MiB/s`.
fn progress_line(url: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = |b: u64| b as f64 / MIB;
    let rate = mib(done) / elapsed.as_secs_f64().max(0.001);
    match total {
        Some(t) if t > 0 => format!(
            "{url}: {:.1} MiB of {:.1} MiB ({}%), {rate:.1} MiB/s",
            mib(done),
            mib(t),
            done * 100 / t
        ),
        _ => format!("{url}: {:.1} MiB, {rate:.1} MiB/s", mib(done)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_how_far() {
        let mib = 1 << 20;
        assert_eq!(
            progress_line(
                "http://h/x.gz",
                12 * mib,
                Some(48 * mib),
                Duration::from_secs(2)
            ),
            "http://h/x.gz: 12.0 MiB of 48.0 MiB (25%), 6.0 MiB/s"
        );
        assert_eq!(
            progress_line("u", 3 * mib, None, Duration::from_secs(1)),
            "u: 3.0 MiB, 3.0 MiB/s"
        );
        assert!(is_url("https://h/x") && is_url("http://h/x") && !is_url("./http.img"));
    }
}
