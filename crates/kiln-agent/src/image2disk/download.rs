//! Stage 1: HTTP GET with resume; stage 2: sha256 of the served bytes.
//!
//! Hashing runs on its own thread: at ~1.4 GB/s (SHA-NI) it is the slowest step of a raw
//! image, and on two cores it overlaps with receiving, decompressing and writing.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::resume::{Backoff, ResponseMeta, Resume, RetryPolicy, Verdict};
use super::{Ctx, Error, StageError};

/// Size of the chunks handed to the decompressor.
pub(super) const CHUNK: usize = 1 << 20;

/// Download → decompress messages. A channel that closes without `End` means the download
/// stopped early (failed, cancelled, or restarting).
pub(super) enum Up {
    Data(Vec<u8>, usize),
    End,
}

pub(super) struct Downloaded {
    pub bytes: u64,
}

enum Attempt {
    Retry(String),
    Changed(String),
    Fatal(String),
    Aborted,
}

struct State {
    resume: Resume,
    backoff: Backoff,
    last_progress: Instant,
}

pub(super) fn agent(policy: &RetryPolicy) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // The provisioning network is addressed directly; never a proxy from the environment.
        .proxy(None)
        .timeout_connect(Some(policy.connect_timeout))
        .timeout_recv_response(Some(policy.read_timeout))
        .timeout_per_read(Some(policy.read_timeout))
        .user_agent(concat!("kiln-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

pub(super) fn run(
    url: &str,
    policy: &RetryPolicy,
    ctx: &Ctx<'_>,
    tx: SyncSender<Up>,
    free: Receiver<Vec<u8>>,
) -> Result<Downloaded, StageError> {
    let agent = agent(policy);
    let mut url = url.to_string();
    let mut st = State {
        resume: Resume::default(),
        backoff: Backoff::new(*policy),
        last_progress: Instant::now(),
    };
    let mut attempts = 0u32;
    loop {
        if ctx.cancelled() {
            return Err(StageError::Aborted);
        }
        attempts += 1;
        let err = match attempt(&agent, &url, &mut st, ctx, &tx, &free) {
            Ok(()) => break,
            Err(e) => e,
        };
        match err {
            Attempt::Aborted => return Err(StageError::Aborted),
            Attempt::Fatal(m) => return Err(StageError::Failed(Error::Download(m))),
            Attempt::Changed(m) => {
                return if ctx.claim_restart() {
                    ctx.event(&format!("{m}; nothing written yet, starting over"));
                    Err(StageError::Restart)
                } else {
                    Err(StageError::Failed(Error::Download(format!(
                        "the image changed on the server during the download ({m}), \
                         and writing had already started"
                    ))))
                };
            }
            Attempt::Retry(m) => {
                // The same bytes from another server resume where these stopped (the
                // If-Range validator still guards against a different file).
                if let Some(moved) = ctx.progress.relocate(&url).filter(|u| *u != url) {
                    ctx.event(&format!(
                        "{m}; the image is now served at {moved}: resuming there"
                    ));
                    url = moved;
                    st.backoff.reset();
                    continue;
                }
                let idle = st.last_progress.elapsed();
                let Some(delay) = st.backoff.next_delay(idle) else {
                    return Err(StageError::Failed(Error::Download(format!(
                        "{m} (gave up after {attempts} attempts, {:.1}s without data)",
                        idle.as_secs_f64()
                    ))));
                };
                ctx.event(&format!("{m}; retrying in {:.1}s", delay.as_secs_f64()));
                sleep_unless_cancelled(delay, ctx)?;
            }
        }
    }
    tx.send(Up::End).map_err(|_| StageError::Aborted)?;
    Ok(Downloaded {
        bytes: st.resume.offset,
    })
}

fn attempt(
    agent: &ureq::Agent,
    url: &str,
    st: &mut State,
    ctx: &Ctx<'_>,
    tx: &SyncSender<Up>,
    free: &Receiver<Vec<u8>>,
) -> Result<(), Attempt> {
    if st.resume.complete() {
        return Ok(());
    }
    let mut req = agent.get(url);
    for (name, value) in st.resume.request_headers() {
        req = req.header(name, value);
    }
    let resp = req.call().map_err(|e| classify(url, e))?;
    let meta = meta_of(&resp);
    let resuming = st.resume.offset > 0;
    match st.resume.accept(&meta) {
        Verdict::Continue => {}
        Verdict::Changed(m) => return Err(Attempt::Changed(m)),
        Verdict::Retry(m) => return Err(Attempt::Retry(format!("GET {url}: {m}"))),
        Verdict::Fatal(m) => return Err(Attempt::Fatal(format!("GET {url}: {m}"))),
    }
    if resuming {
        ctx.resumed(st.resume.offset);
    } else {
        ctx.set_download_total(st.resume.total);
    }
    let mut body = resp.into_body().into_reader();
    loop {
        if ctx.cancelled() {
            return Err(Attempt::Aborted);
        }
        let mut buf = free.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let mut len = 0;
        let outcome = loop {
            if len == buf.len() || st.resume.complete() {
                break Ok(false);
            }
            match body.read(&mut buf[len..]) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    len += n;
                    st.resume.advance(n as u64);
                    ctx.set_downloaded(st.resume.offset);
                    st.last_progress = Instant::now();
                    st.backoff.reset();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if len > 0 {
            tx.send(Up::Data(buf, len)).map_err(|_| Attempt::Aborted)?;
        }
        match outcome {
            Ok(false) if st.resume.complete() => return Ok(()),
            Ok(false) => {}
            Ok(true) => {
                return match st.resume.total {
                    Some(t) if st.resume.offset < t => Err(Attempt::Retry(format!(
                        "connection closed at byte {} of {t}",
                        st.resume.offset
                    ))),
                    _ => Ok(()),
                };
            }
            Err(e) => {
                return Err(Attempt::Retry(format!(
                    "connection lost at byte {}: {e}",
                    st.resume.offset
                )));
            }
        }
    }
}

/// Hashes every chunk on its way from the download to the decompressor.
pub(super) fn hash(rx: Receiver<Up>, tx: SyncSender<Up>) -> Result<[u8; 32], StageError> {
    let mut hasher = Sha256::new();
    loop {
        match rx.recv() {
            Ok(Up::Data(buf, len)) => {
                hasher.update(&buf[..len]);
                tx.send(Up::Data(buf, len))
                    .map_err(|_| StageError::Aborted)?;
            }
            Ok(Up::End) => {
                tx.send(Up::End).map_err(|_| StageError::Aborted)?;
                return Ok(hasher.finalize().into());
            }
            Err(_) => return Err(StageError::Aborted),
        }
    }
}

fn meta_of(resp: &ureq::http::Response<ureq::Body>) -> ResponseMeta {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    ResponseMeta {
        status: resp.status().as_u16(),
        content_length: header("content-length").and_then(|v| v.parse().ok()),
        content_range: header("content-range"),
        etag: header("etag"),
        last_modified: header("last-modified"),
    }
}

/// Transport failures are worth retrying; a bad URL or a TLS verification failure is not.
fn classify(url: &str, e: ureq::Error) -> Attempt {
    use ureq::Error as E;
    let msg = match &e {
        E::Io(io) => format!("GET {url}: {io}"),
        _ => format!("GET {url}: {e}"),
    };
    match e {
        E::Io(_)
        | E::Timeout(_)
        | E::ConnectionFailed
        | E::HostNotFound
        | E::Protocol(_)
        | E::BodyStalled => Attempt::Retry(msg),
        _ => Attempt::Fatal(msg),
    }
}

fn sleep_unless_cancelled(delay: Duration, ctx: &Ctx<'_>) -> Result<(), StageError> {
    let until = Instant::now() + delay;
    loop {
        if ctx.cancelled() {
            return Err(StageError::Aborted);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}
