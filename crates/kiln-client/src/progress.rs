//! Progress of a long transfer (an image upload or import) on stderr: one line rewritten in place on a terminal, a line
//! every few seconds otherwise (logs, CI).

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    pub total: Option<u64>,
    tty: bool,
    /// Print the last line even if the transfer was too short for any before it.
    always_finish: bool,
    shown: bool,
    finished: bool,
    start: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(label: &str, total: Option<u64>, always_finish: bool) -> Self {
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            total,
            tty: io::stderr().is_terminal(),
            always_finish,
            shown: false,
            finished: false,
            start: now,
            last: now,
        }
    }

    pub fn advance(&mut self, done: u64) {
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

    /// The last line (once).
    pub fn finish(&mut self, done: u64) {
        if !self.finished && (self.shown || self.always_finish || self.tty) {
            self.show(done, true);
        }
        self.finished = true;
    }

    fn show(&mut self, done: u64, last: bool) {
        self.shown = true;
        let line = progress_line(&self.label, done, self.total, self.start.elapsed());
        let mut err = io::stderr().lock();
        let _ = match (self.tty, last) {
            (true, false) => write!(err, "\r{line}\x1b[K"),
            (true, true) => writeln!(err, "\r{line}\x1b[K"),
            (false, _) => writeln!(err, "{line}"),
        };
    }
}

/// A reader that shows how much of it was read.
pub struct Reading<R> {
    pub inner: R,
    pub done: u64,
    pub progress: Progress,
}

impl<R: Read> Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if n == 0 {
            self.progress.finish(self.done);
        } else {
            self.progress.advance(self.done);
        }
        Ok(n)
    }
}

/// `URL: 12.0 MiB of 48.0 MiB (25%), 6.0 MiB/s`.
fn progress_line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = |b: u64| b as f64 / MIB;
    let rate = mib(done) / elapsed.as_secs_f64().max(0.001);
    match total {
        Some(t) if t > 0 => format!(
            "{label}: {:.1} MiB of {:.1} MiB ({}%), {rate:.1} MiB/s",
            mib(done),
            mib(t),
            done * 100 / t
        ),
        _ => format!("{label}: {:.1} MiB, {rate:.1} MiB/s", mib(done)),
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
    }

    #[test]
    fn a_reader_counts_what_passes() {
        let mut r = Reading {
            inner: &b"abcdef"[..],
            done: 0,
            progress: Progress::new("x", Some(6), false),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!((out.as_slice(), r.done), (&b"abcdef"[..], 6));
        assert!(r.progress.finished);
    }
}
