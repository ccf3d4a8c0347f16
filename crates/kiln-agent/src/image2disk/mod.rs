//! image2disk: stream a disk image from an HTTP URL onto a disk.
//!
//! One pipeline over four threads joined by bounded channels, so the stages overlap:
//!
//! ```text
//! download (HTTP GET, resume with Range/If-Range)
//!   ── 1 MiB chunks, ≤ 4 queued ──► hash (sha256 of the served bytes)
//!   ── the same chunks, ≤ 4 queued ──► decompress (gzip / xz / zstd / raw, by magic bytes)
//!   ── 4 MiB aligned buffers, ≤ 2 queued ──► write (skip zero blocks when they read back
//!                                              as zeros; O_DIRECT on block devices)
//! ```
//!
//! The calling thread samples progress while the stages run. The sha256 is compared once the
//! whole stream has been written and flushed; a mismatch, or any failure after writing
//! started, zeroes the first and last MiB of the target (partition tables, GPT backup
//! header) so the machine cannot boot a partial or wrong image.

pub(crate) mod blk;
mod download;
pub mod format;
pub mod progress;
mod resume;
mod stages;
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use format::Format;
pub use progress::{NoProgress, Progress, ProgressReport};
pub use resume::RetryPolicy;
pub use target::TargetKind;

use progress::RateMeter;
use target::Target;

/// Depth of the download → hash and hash → decompress queues (chunks of [`download::CHUNK`]).
const UP_DEPTH: usize = 4;
/// Depth of the decompress → write queue (buffers of [`stages::WRITE_BUF`]).
const DOWN_DEPTH: usize = 2;
/// How often the whole download may start over because the file changed before anything
/// was written.
const MAX_RESTARTS: u32 = 3;

/// What to write where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image2Disk {
    /// `http://` or `https://` URL of the image (raw, gzip, xz or zstd).
    pub url: String,
    /// sha256 of the bytes the server serves (the compressed file when compressed).
    pub sha256: [u8; 32],
    /// Target: a block device, or a regular file. A file that does not exist or is empty
    /// grows to the image size (zero blocks become holes); an existing non-empty file is a
    /// fixed-size disk (its length is the capacity; written in place, like a block device).
    pub disk: PathBuf,
    /// Size of the raw (decompressed) image in bytes, when known: checked against the disk
    /// before writing, and against the written length at the end.
    pub size: Option<u64>,
}

impl Image2Disk {
    /// From an image2disk action's parameters as the server renders them (see
    /// `kiln_api::agent::ActionKind::Image2disk`): `url`, `sha256`, `disk`, and `size`
    /// (bytes of the raw image; optional, empty means unknown).
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Image2Disk, String> {
        let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let need = |k: &str| get(k).ok_or_else(|| format!("missing parameter {k:?}"));
        let size = match get("size") {
            None => None,
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| format!("parameter \"size\" is {s:?}, not a number of bytes"))?,
            ),
        };
        Ok(Image2Disk {
            url: need("url")?.to_string(),
            sha256: parse_sha256(need("sha256")?)?,
            disk: PathBuf::from(need("disk")?),
            size,
        })
    }
}

/// How to run it.
#[derive(Clone, Debug)]
pub struct Options {
    pub retry: RetryPolicy,
    /// Use O_DIRECT on block devices (default on).
    pub direct_io: bool,
    /// How often [`Progress::update`] is called (default 1 s).
    pub progress_interval: Duration,
    /// Set it to stop the run: it ends with [`Error::Cancelled`] (wiping the disk if
    /// writing had started).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: RetryPolicy::default(),
            direct_io: true,
            progress_interval: Duration::from_secs(1),
            cancel: None,
        }
    }
}

/// What a successful run did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    pub format: Format,
    pub target_kind: TargetKind,
    /// Served bytes downloaded (and hashed).
    pub downloaded: u64,
    /// Image size: bytes written plus zero bytes skipped.
    pub image_size: u64,
    /// Zero bytes not written because the target reads them back as zeros.
    pub skipped_zeros: u64,
    /// The verified sha256, lowercase hex.
    pub sha256: String,
    pub elapsed: Duration,
    /// Connections resumed with Range after a drop.
    pub resumes: u32,
    /// Downloads started over because the file changed before anything was written.
    pub restarts: u32,
    /// Whether the writes bypassed the page cache (O_DIRECT) to the end.
    pub direct_io: bool,
    /// Things that went wrong without failing the run (re-reading the partition table).
    pub warnings: Vec<String>,
}

/// Why image2disk failed. The message starts with the stage that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target could not be opened or examined; nothing was written.
    #[error("disk: {}: {detail}", path.display())]
    Disk { path: PathBuf, detail: String },
    /// The image does not fit on the target; nothing was written.
    #[error("disk: too small: the image is {needed} bytes, {} holds {capacity} bytes", path.display())]
    DiskTooSmall {
        path: PathBuf,
        needed: u64,
        capacity: u64,
    },
    /// Fetching the image failed for good.
    #[error("download: {0}")]
    Download(String),
    /// The stream is corrupt or truncated.
    #[error("decompress: {0}")]
    Decompress(String),
    /// Writing the target failed.
    #[error("write: {0}")]
    Write(String),
    /// The served bytes do not have the expected digest.
    #[error("verify: sha256 mismatch: expected {expected}, got {got}")]
    Sha256Mismatch { expected: String, got: String },
    /// The image is not what was declared (its size).
    #[error("verify: {0}")]
    Verify(String),
    /// [`Options::cancel`] was set.
    #[error("cancelled")]
    Cancelled,
    /// A failure after writing started, and zeroing the partition tables failed as well.
    #[error("{error}; wiping the partition tables failed too: {wipe}")]
    WipeFailed { error: Box<Error>, wipe: String },
}

impl Error {
    /// The stage that failed: `disk`, `download`, `decompress`, `write`, `verify` or `cancel`.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Disk { .. } | Error::DiskTooSmall { .. } => "disk",
            Error::Download(_) => "download",
            Error::Decompress(_) => "decompress",
            Error::Write(_) => "write",
            Error::Sha256Mismatch { .. } | Error::Verify(_) => "verify",
            Error::Cancelled => "cancel",
            Error::WipeFailed { error, .. } => error.stage(),
        }
    }
}

/// Parses 64 hex digits.
pub fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256 must be 64 hex digits, got {hex:?}"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Lowercase hex of a digest.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `job.url` onto `job.disk`, verifying `job.sha256`. Blocks until done; progress
/// goes to `progress` from the calling thread.
pub fn image2disk(
    job: &Image2Disk,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let target = Target::open(&job.disk, opts.direct_io).map_err(|e| Error::Disk {
        path: job.disk.clone(),
        detail: e.to_string(),
    })?;
    if let Some((needed, capacity)) = job.size.zip(target.capacity()).filter(|(n, c)| n > c) {
        return Err(Error::DiskTooSmall {
            path: job.disk.clone(),
            needed,
            capacity,
        });
    }
    progress.event(&describe_target(&target));
    let mut restarts = 0;
    loop {
        let shared = Shared::default();
        let result = run_pipeline(job, opts, &target, &shared, progress, start);
        let claimed = shared.commit.load(Ordering::SeqCst) == WRITING;
        let done = match result {
            Ok(done) => done,
            Err(StageError::Restart) if restarts < MAX_RESTARTS => {
                restarts += 1;
                continue;
            }
            Err(e) => {
                let e = match e {
                    StageError::Failed(e) => e,
                    StageError::Restart => {
                        Error::Download("the image kept changing on the server".into())
                    }
                    StageError::Aborted if cancelled(opts) => Error::Cancelled,
                    StageError::Aborted => {
                        Error::Write("internal error: the pipeline stopped without a cause".into())
                    }
                };
                return Err(fail(&target, claimed, e));
            }
        };
        if done.digest != job.sha256 {
            let e = Error::Sha256Mismatch {
                expected: to_hex(&job.sha256),
                got: to_hex(&done.digest),
            };
            return Err(fail(&target, true, e));
        }
        if let Some(size) = job.size.filter(|&size| size != done.written) {
            let e = Error::Verify(format!(
                "the image is {} bytes, {size} bytes were declared",
                done.written
            ));
            return Err(fail(&target, true, e));
        }
        let mut warnings = Vec::new();
        if let Err(e) = target.reread_partitions() {
            let w = format!("re-reading the partition table failed: {e}");
            progress.event(&w);
            warnings.push(w);
        }
        let outcome = Outcome {
            format: done.format,
            target_kind: target.kind(),
            downloaded: done.downloaded,
            image_size: done.written,
            skipped_zeros: done.skipped,
            sha256: to_hex(&done.digest),
            elapsed: start.elapsed(),
            resumes: shared.resumes.load(Ordering::Relaxed),
            restarts,
            direct_io: target.direct(),
            warnings,
        };
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let mut last = shared.report(
            outcome.elapsed,
            done.downloaded as f64 / secs,
            done.written as f64 / secs,
        );
        last.done = true;
        progress.update(&last);
        return Ok(outcome);
    }
}

fn cancelled(opts: &Options) -> bool {
    opts.cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

fn describe_target(t: &Target) -> String {
    let what = match (t.kind(), t.capacity()) {
        (TargetKind::BlockDevice, Some(c)) => format!("block device of {c} bytes"),
        (TargetKind::FixedFile, Some(c)) => format!("fixed-size file of {c} bytes"),
        _ => "new file".to_string(),
    };
    let io = if t.direct() { ", O_DIRECT" } else { "" };
    format!("target {}: {what}{io}", t.path().display())
}

/// After a failure: wipe the target if writing started, else leave it as it was.
fn fail(target: &Target, claimed: bool, error: Error) -> Error {
    if !claimed {
        target.remove_if_created();
        return error;
    }
    match target.wipe() {
        Ok(()) => error,
        Err(e) => Error::WipeFailed {
            error: Box::new(error),
            wipe: e.to_string(),
        },
    }
}

/// How a stage ended when it did not succeed.
pub(crate) enum StageError {
    /// Stopped because another stage stopped (or cancel); not the cause.
    Aborted,
    /// The download must start over (the file changed before anything was written).
    Restart,
    Failed(Error),
}

const FRESH: u8 = 0;
const WRITING: u8 = 1;
const RESTARTING: u8 = 2;

/// Counters and flags shared by the stages of one pipeline run.
#[derive(Default)]
struct Shared {
    downloaded: AtomicU64,
    written: AtomicU64,
    skipped: AtomicU64,
    resumes: AtomicU32,
    download_total: OnceLock<Option<u64>>,
    format: OnceLock<(Format, Option<u64>)>,
    /// FRESH → WRITING (the writer claimed the target) or → RESTARTING (the download starts
    /// over): whichever comes first wins.
    commit: AtomicU8,
    cancel: AtomicBool,
}

impl Shared {
    fn report(&self, elapsed: Duration, rate: f64, write_rate: f64) -> ProgressReport {
        let downloaded = self.downloaded.load(Ordering::Relaxed);
        let written = self.written.load(Ordering::Relaxed);
        let download_total = self.download_total.get().copied().flatten();
        let image_size = self.format.get().and_then(|f| f.1);
        let eta = match (download_total, image_size) {
            (Some(t), _) => progress::eta(t.saturating_sub(downloaded), rate),
            (None, Some(s)) if written > 0 => {
                // Scale the download rate by the observed compression ratio.
                let ratio = downloaded as f64 / written as f64;
                progress::eta(s.saturating_sub(written), rate / ratio.max(1e-9))
            }
            _ => None,
        };
        ProgressReport {
            downloaded,
            download_total,
            written,
            skipped_zeros: self.skipped.load(Ordering::Relaxed),
            image_size,
            rate,
            write_rate,
            eta,
            elapsed,
            resumes: self.resumes.load(Ordering::Relaxed),
            done: false,
        }
    }
}

/// What the stages see: the shared state and the event sink.
pub(crate) struct Ctx<'a> {
    shared: &'a Shared,
    progress: &'a dyn Progress,
    /// Serialises events from several threads so reporters need not.
    events: Mutex<()>,
}

impl Ctx<'_> {
    fn cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::Relaxed)
    }
    fn event(&self, message: &str) {
        let _guard = self.events.lock();
        self.progress.event(message);
    }
    fn set_downloaded(&self, n: u64) {
        self.shared.downloaded.store(n, Ordering::Relaxed);
    }
    fn set_download_total(&self, total: Option<u64>) {
        let _ = self.shared.download_total.set(total);
    }
    fn download_total(&self) -> Option<u64> {
        self.shared.download_total.get().copied().flatten()
    }
    fn resumed(&self, offset: u64) {
        self.shared.resumes.fetch_add(1, Ordering::Relaxed);
        self.event(&format!("resumed at byte {offset}"));
    }
    fn set_format(&self, format: Format, image_size: Option<u64>) {
        let _ = self.shared.format.set((format, image_size));
        let size = image_size.map_or("unknown size".to_string(), |s| format!("{s} bytes"));
        self.event(&format!("stream is {format}, image {size}"));
    }
    fn set_written(&self, written: u64, skipped: u64) {
        self.shared.written.store(written, Ordering::Relaxed);
        self.shared.skipped.store(skipped, Ordering::Relaxed);
    }
    /// The writer claims the target; false if the download already chose to start over.
    fn claim_write(&self) -> bool {
        self.shared
            .commit
            .compare_exchange(FRESH, WRITING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    /// The download claims a restart; false if writing already started.
    fn claim_restart(&self) -> bool {
        self.shared
            .commit
            .compare_exchange(FRESH, RESTARTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

struct Done {
    format: Format,
    downloaded: u64,
    digest: [u8; 32],
    written: u64,
    skipped: u64,
}

/// Tells the coordinator a stage ended, however it ended (also on panic).
struct DoneSignal(mpsc::Sender<()>);

impl Drop for DoneSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn run_pipeline(
    job: &Image2Disk,
    opts: &Options,
    target: &Target,
    shared: &Shared,
    progress: &dyn Progress,
    start: Instant,
) -> Result<Done, StageError> {
    let ctx = Ctx {
        shared,
        progress,
        events: Mutex::new(()),
    };
    let ctx = &ctx;
    let (up_tx, hash_rx) = mpsc::sync_channel(UP_DEPTH);
    let (hash_tx, up_rx) = mpsc::sync_channel(UP_DEPTH);
    let (up_free_tx, up_free_rx) = mpsc::channel();
    let (down_tx, down_rx) = mpsc::sync_channel(DOWN_DEPTH);
    let (down_free_tx, down_free_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();

    thread::scope(|s| {
        let stage = |name: &str| thread::Builder::new().name(format!("image2disk-{name}"));
        let signal = DoneSignal(done_tx.clone());
        let download = stage("download")
            .spawn_scoped(s, move || {
                let _signal = signal;
                let r = download::run(&job.url, &opts.retry, ctx, up_tx, up_free_rx);
                stop_others_on_failure(ctx, &r);
                r
            })
            .expect("spawn a thread");
        let signal = DoneSignal(done_tx.clone());
        let hash = stage("hash")
            .spawn_scoped(s, move || {
                let _signal = signal;
                download::hash(hash_rx, hash_tx)
            })
            .expect("spawn a thread");
        let signal = DoneSignal(done_tx.clone());
        let decompress = stage("decompress")
            .spawn_scoped(s, move || {
                let _signal = signal;
                let input = stages::ChannelReader::new(up_rx, up_free_tx);
                let r = stages::run(input, job.size, ctx, down_tx, down_free_rx);
                stop_others_on_failure(ctx, &r);
                r
            })
            .expect("spawn a thread");
        let signal = DoneSignal(done_tx);
        let write = stage("write")
            .spawn_scoped(s, move || {
                let _signal = signal;
                let r = stages::write(target, ctx, down_rx, down_free_tx);
                stop_others_on_failure(ctx, &r);
                r
            })
            .expect("spawn a thread");

        supervise(opts, shared, progress, start, &done_rx);

        let download = download
            .join()
            .unwrap_or_else(|_| Err(panicked("download")));
        let hash = hash.join().unwrap_or_else(|_| Err(panicked("hash")));
        let decompress = decompress
            .join()
            .unwrap_or_else(|_| Err(panicked("decompress")));
        let write = write.join().unwrap_or_else(|_| Err(panicked("write")));
        match (download, hash, decompress, write) {
            (Ok(d), Ok(digest), Ok(format), Ok(w)) => Ok(Done {
                format,
                downloaded: d.bytes,
                digest,
                written: w.bytes,
                skipped: w.skipped,
            }),
            (d, h, z, w) => {
                // The cause is the first stage, upstream to downstream, that did not merely
                // stop because a neighbour did.
                let causes = [d.err(), h.err(), z.err(), w.err()];
                Err(causes
                    .into_iter()
                    .flatten()
                    .find(|e| !matches!(e, StageError::Aborted))
                    .unwrap_or(StageError::Aborted))
            }
        }
    })
}

/// Waits for the four stages, reporting progress every interval and passing on a cancel.
fn supervise(
    opts: &Options,
    shared: &Shared,
    progress: &dyn Progress,
    start: Instant,
    done_rx: &mpsc::Receiver<()>,
) {
    const POLL: Duration = Duration::from_millis(200);
    const STAGES: usize = 4;
    let mut down_meter = RateMeter::default();
    let mut write_meter = RateMeter::default();
    down_meter.sample(start.elapsed(), 0);
    write_meter.sample(start.elapsed(), 0);
    let mut next_report = Instant::now() + opts.progress_interval;
    let mut finished = 0;
    while finished < STAGES {
        let wait = next_report
            .saturating_duration_since(Instant::now())
            .min(POLL);
        match done_rx.recv_timeout(wait) {
            Ok(()) => finished += 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if cancelled(opts) {
            shared.cancel.store(true, Ordering::Relaxed);
        }
        if finished < STAGES && Instant::now() >= next_report {
            let elapsed = start.elapsed();
            let rate = down_meter.sample(elapsed, shared.downloaded.load(Ordering::Relaxed));
            let write_rate = write_meter.sample(elapsed, shared.written.load(Ordering::Relaxed));
            progress.update(&shared.report(elapsed, rate, write_rate));
            next_report += opts.progress_interval;
        }
    }
}

fn stop_others_on_failure<T>(ctx: &Ctx<'_>, r: &Result<T, StageError>) {
    if matches!(r, Err(StageError::Failed(_))) {
        ctx.shared.cancel.store(true, Ordering::Relaxed);
    }
}

fn panicked(stage: &str) -> StageError {
    StageError::Failed(Error::Write(format!(
        "internal error: the {stage} thread panicked"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bytes = parse_sha256(hex).unwrap();
        assert_eq!(bytes[0], 0xe3);
        assert_eq!(to_hex(&bytes), hex);
        assert_eq!(parse_sha256(&hex.to_uppercase()).unwrap(), bytes);
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn from_action_params() {
        let sha = "ab".repeat(32);
        let mut p: BTreeMap<String, String> = [
            ("url", "http://10.0.0.1:8080/images/os.raw.zst"),
            ("sha256", sha.as_str()),
            ("disk", "/dev/sda"),
            ("size", " 2147483648 "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let j = Image2Disk::from_params(&p).unwrap();
        assert_eq!(j.url, "http://10.0.0.1:8080/images/os.raw.zst");
        assert_eq!(j.sha256, [0xab; 32]);
        assert_eq!(j.disk, PathBuf::from("/dev/sda"));
        assert_eq!(j.size, Some(2 << 30));
        p.insert("size".into(), "".into());
        assert_eq!(Image2Disk::from_params(&p).unwrap().size, None);
        p.insert("size".into(), "2G".into());
        assert!(
            Image2Disk::from_params(&p)
                .unwrap_err()
                .contains("not a number of bytes")
        );
        p.remove("size");
        p.remove("disk");
        assert_eq!(
            Image2Disk::from_params(&p).unwrap_err(),
            "missing parameter \"disk\""
        );
    }

    #[test]
    fn messages_name_the_stage() {
        let e = Error::Sha256Mismatch {
            expected: "aa".into(),
            got: "bb".into(),
        };
        assert_eq!(
            e.to_string(),
            "verify: sha256 mismatch: expected aa, got bb"
        );
        assert_eq!(e.stage(), "verify");
        let e = Error::WipeFailed {
            error: Box::new(Error::Write("boom".into())),
            wipe: "EIO".into(),
        };
        assert_eq!(e.stage(), "write");
        assert_eq!(
            e.to_string(),
            "write: boom; wiping the partition tables failed too: EIO"
        );
        let e = Error::DiskTooSmall {
            path: "/dev/sda".into(),
            needed: 10,
            capacity: 5,
        };
        assert_eq!(
            e.to_string(),
            "disk: too small: the image is 10 bytes, /dev/sda holds 5 bytes"
        );
    }
}
