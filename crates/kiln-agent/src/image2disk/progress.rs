//! Progress reporting hook.
//!
//! The pipeline never blocks on a reporter: it keeps atomic counters, and the thread that
//! called [`image2disk`](super::image2disk) samples them every `Options::progress_interval`
//! and hands a [`ProgressReport`] to the caller's [`Progress`]. A reporter that posts to the
//! server may therefore take its time (it only delays the next sample).

use std::fmt;
use std::time::Duration;

/// A snapshot of an image2disk run.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ProgressReport {
    /// Served (possibly compressed) bytes received and hashed.
    pub downloaded: u64,
    /// Length of the served file, when the server sent it.
    pub download_total: Option<u64>,
    /// Image bytes handled by the writer (written, or skipped as zeros).
    pub written: u64,
    /// Of `written`, bytes skipped because they were zeros and the target reads back zeros.
    pub skipped_zeros: u64,
    /// Size of the image, when known (`--size`, or Content-Length of a raw stream).
    pub image_size: Option<u64>,
    /// Download rate over the last interval(s), bytes per second.
    pub rate: f64,
    /// Write rate (image bytes handled by the writer) over the last interval(s), bytes/s.
    pub write_rate: f64,
    /// Estimated time left, when a total is known and bytes are flowing.
    pub eta: Option<Duration>,
    /// Time since the start.
    pub elapsed: Duration,
    /// Connections resumed after a drop so far.
    pub resumes: u32,
    /// Whether this is the final report of a successful run.
    pub done: bool,
}

/// Where progress goes. Both methods have empty defaults.
pub trait Progress: Sync {
    /// Called about every progress interval while the image streams, and once at the end of
    /// a successful run (`done` set). Runs on the caller's thread, never on a pipeline stage.
    fn update(&self, _report: &ProgressReport) {}
    /// A notable event in words: a dropped connection and its retry, a resume, a restart,
    /// how zero blocks are handled. May be called from pipeline threads.
    fn event(&self, _message: &str) {}
    /// The download from `url` failed (no answer, or a server error): where the image is
    /// served now (another server may have taken the machine over). `None`, or `url` itself,
    /// keeps retrying `url`. May block while it asks.
    fn relocate(&self, _url: &str) -> Option<String> {
        None
    }
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

impl ProgressReport {
    /// The server's view (`kiln_api::agent::Progress`): image bytes written of the image
    /// size when the size is known, else served bytes downloaded of the served length.
    pub fn to_model(&self) -> kiln_api::agent::Progress {
        match self.image_size {
            Some(size) => kiln_api::agent::Progress {
                done: self.written,
                total: Some(size),
                rate_bps: self.write_rate as u64,
            },
            None => kiln_api::agent::Progress {
                done: self.downloaded,
                total: self.download_total,
                rate_bps: self.rate as u64,
            },
        }
    }
}

/// Smoothed rate from successive samples (exponentially weighted, ~3 samples of memory).
#[derive(Clone, Debug, Default)]
pub(crate) struct RateMeter {
    last: Option<(Duration, u64)>,
    rate: f64,
}

impl RateMeter {
    /// Feeds the byte counter at time `at` (since start); returns the smoothed bytes/s.
    pub(crate) fn sample(&mut self, at: Duration, bytes: u64) -> f64 {
        if let Some((t0, b0)) = self.last {
            let dt = (at - t0).as_secs_f64();
            if dt > 0.0 {
                let now = bytes.saturating_sub(b0) as f64 / dt;
                self.rate = if self.rate == 0.0 {
                    now
                } else {
                    0.6 * self.rate + 0.4 * now
                };
            }
        }
        self.last = Some((at, bytes));
        self.rate
    }
}

/// Time left to move `remaining` bytes at `rate` bytes/s, if bytes are flowing.
pub(crate) fn eta(remaining: u64, rate: f64) -> Option<Duration> {
    (rate >= 1.0).then(|| Duration::from_secs_f64(remaining as f64 / rate))
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `2.00 GiB`.
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while v >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        let prec = if v < 10.0 {
            2
        } else if v < 100.0 {
            1
        } else {
            0
        };
        write!(f, "{v:.prec$} {}", UNITS[unit])
    }
}

impl fmt::Display for ProgressReport {
    /// One line: `downloaded 300 MiB of 1.2 GiB (25%), written 1.0 GiB (600 MiB zeros skipped),
    /// 110 MiB/s, ETA 8s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "downloaded {}", HumanBytes(self.downloaded))?;
        if let Some(t) = self.download_total {
            let pct = if t == 0 {
                100.0
            } else {
                self.downloaded as f64 * 100.0 / t as f64
            };
            write!(f, " of {} ({pct:.0}%)", HumanBytes(t))?;
        }
        write!(f, ", written {}", HumanBytes(self.written))?;
        if let Some(s) = self.image_size {
            write!(f, " of {}", HumanBytes(s))?;
        }
        if self.skipped_zeros > 0 {
            write!(f, " ({} zeros skipped)", HumanBytes(self.skipped_zeros))?;
        }
        write!(
            f,
            ", {}/s down, {}/s written",
            HumanBytes(self.rate as u64),
            HumanBytes(self.write_rate as u64)
        )?;
        if let Some(eta) = self.eta {
            write!(f, ", ETA {}s", eta.as_secs_f64().ceil() as u64)?;
        }
        if self.resumes > 0 {
            write!(f, ", {} resumes", self.resumes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_eta() {
        let mut m = RateMeter::default();
        assert_eq!(m.sample(Duration::ZERO, 0), 0.0);
        assert_eq!(m.sample(Duration::from_secs(1), 100), 100.0);
        assert_eq!(m.sample(Duration::from_secs(2), 100), 60.0);
        assert_eq!(eta(120, 60.0), Some(Duration::from_secs(2)));
        assert_eq!(eta(120, 0.0), None);
    }

    #[test]
    fn server_view() {
        let mut r = ProgressReport {
            downloaded: 10,
            download_total: Some(40),
            written: 30,
            image_size: None,
            rate: 5.0,
            write_rate: 15.0,
            ..Default::default()
        };
        let m = r.to_model();
        assert_eq!((m.done, m.total, m.rate_bps), (10, Some(40), 5));
        r.image_size = Some(120);
        let m = r.to_model();
        assert_eq!((m.done, m.total, m.rate_bps), (30, Some(120), 15));
    }

    #[test]
    fn human_bytes() {
        assert_eq!(HumanBytes(512).to_string(), "512 B");
        assert_eq!(HumanBytes(1536).to_string(), "1.50 KiB");
        assert_eq!(HumanBytes(2 << 30).to_string(), "2.00 GiB");
        assert_eq!(HumanBytes(300 << 20).to_string(), "300 MiB");
    }

    #[test]
    fn report_line() {
        let r = ProgressReport {
            downloaded: 256 << 20,
            download_total: Some(1 << 30),
            written: 1 << 30,
            skipped_zeros: 512 << 20,
            rate: (100 << 20) as f64,
            write_rate: (300 << 20) as f64,
            eta: Some(Duration::from_secs(7)),
            ..Default::default()
        };
        assert_eq!(
            r.to_string(),
            "downloaded 256 MiB of 1.00 GiB (25%), written 1.00 GiB (512 MiB zeros skipped), \
             100 MiB/s down, 300 MiB/s written, ETA 7s"
        );
    }
}
