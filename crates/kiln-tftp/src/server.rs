//! The async shell: one UDP socket for requests, one task and one socket per
//! transfer.
//!
//! Each transfer socket is bound to the server's IP on an ephemeral port (its
//! TID, RFC 1350) and `connect`ed to the client. The kernel then delivers only
//! that client's packets, and a datagram from any other address/port is
//! dropped by the kernel (answered with ICMP port unreachable) rather than
//! with a TFTP ERROR 5: the transfer is unaffected either way, and the
//! connected socket saves a route lookup per DATA packet.

use kiln_model::event::{EventData, TftpOutcome};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_model::{Event, EventSink};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::cache::FileCache;
use crate::driver::{DriveError, drive_blocking, shutdown_signalled};
use crate::options::{Limits, negotiate};
use crate::packet::{
    ErrorCode, Mode, PacketError, Request, RequestKind, encode_error, encode_oack, parse_request,
};
use crate::path::{PathError, open_under, sanitize};
use crate::transfer::{ReadTransfer, TransferError};

/// Server settings. Build with [`TftpConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TftpConfig {
    /// Where requests arrive (port 69 in production). Bind the provisioning
    /// interface's address rather than 0.0.0.0: transfer sockets bind the
    /// same IP, so replies leave from the address the client talked to.
    pub bind: SocketAddr,
    /// Directory served read-only; must exist.
    pub root: PathBuf,
    /// Largest block size granted (default 1468 = 1500 MTU − 32).
    pub max_blksize: u16,
    /// Largest window granted (default 64, never above 32768).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not ask for one (default 1 s).
    pub default_timeout: Duration,
    /// The longest timeout a client may ask for (default 5 s); longer is declined.
    pub max_timeout: Duration,
    /// Retransmissions of a window before giving up (default 5).
    pub retries: u32,
    /// Concurrent transfers; more are refused with "server busy" (default 1024).
    pub max_transfers: usize,
    /// Concurrent transfers from one IP address (default 8): one host cannot hold every slot.
    pub max_per_source: usize,
    /// Larger files are refused (default 512 MiB): every file is served from memory.
    pub max_file_size: u64,
    /// Bytes of file contents kept cached between transfers (default 1 GiB).
    pub cache_bytes: u64,
}

impl TftpConfig {
    pub fn new(bind: SocketAddr, root: impl Into<PathBuf>) -> Self {
        let limits = Limits::default();
        TftpConfig {
            bind,
            root: root.into(),
            max_blksize: limits.max_blksize,
            max_windowsize: limits.max_windowsize,
            default_timeout: limits.default_timeout,
            max_timeout: limits.max_timeout,
            retries: 5,
            max_transfers: 1024,
            max_per_source: 8,
            max_file_size: 512 << 20,
            cache_bytes: 1 << 30,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            default_timeout: self.default_timeout,
            max_timeout: self.max_timeout,
        }
    }
}

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TftpError {
    /// the request socket could not be bound
    #[error("cannot bind TFTP socket {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// the root directory is missing or unreadable
    #[error("TFTP root {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
}

/// Register metric descriptions with the installed recorder (optional).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "kiln_tftp_transfers_total",
        "TFTP requests by outcome: sent, failed, aborted, not_found, refused, busy"
    );
    metrics::describe_counter!(
        "kiln_tftp_bytes_total",
        "File bytes acknowledged by TFTP clients"
    );
    metrics::describe_histogram!(
        "kiln_tftp_transfer_seconds",
        metrics::Unit::Seconds,
        "Duration of successful TFTP transfers"
    );
}

fn count(outcome: &'static str) {
    metrics::counter!("kiln_tftp_transfers_total", "outcome" => outcome).increment(1);
}

struct Shared {
    cfg: TftpConfig,
    /// Canonical root, for the containment check.
    root: PathBuf,
    /// The transfer sockets bind to this address (the request socket's IP).
    local_ip: IpAddr,
    files: HashMap<String, Bytes>,
    events: Arc<dyn EventSink>,
    cache: FileCache,
    /// Clients with a transfer in progress.
    active: Mutex<HashSet<SocketAddr>>,
    /// How many: transfers poll for ACKs only while this is at most `spin_limit`.
    running: AtomicUsize,
    /// The CPUs this process may use: more transfers than that would poll at each other's cost.
    spin_limit: usize,
}

/// Marks `peer` as having a transfer in progress until dropped.
struct Claim {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

/// Why a request gets no transfer slot.
enum NoClaim {
    /// The same client port asked again while its transfer runs (a retransmitted RRQ).
    Repeated,
    /// The client's address holds `max_per_source` transfers already.
    TooManyFromSource,
}

impl Claim {
    fn new(shared: &Arc<Shared>, peer: SocketAddr) -> Result<Claim, NoClaim> {
        let mut active = shared.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.contains(&peer) {
            return Err(NoClaim::Repeated);
        }
        let from_source = active.iter().filter(|p| p.ip() == peer.ip()).count();
        if from_source >= shared.cfg.max_per_source.max(1) {
            return Err(NoClaim::TooManyFromSource);
        }
        active.insert(peer);
        shared.running.fetch_add(1, Ordering::Relaxed);
        Ok(Claim {
            shared: shared.clone(),
            peer,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.shared
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.peer);
        self.shared.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bound TFTP server; [`TftpServer::serve`] runs it.
pub struct TftpServer {
    socket: UdpSocket,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    max_transfers: u32,
}

/// Bind and serve until `shutdown` turns true (or its sender is dropped).
///
/// `files` are served before the directory, by exact name.
pub async fn run(
    cfg: TftpConfig,
    files: HashMap<String, Bytes>,
    events: Arc<dyn EventSink>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), TftpError> {
    TftpServer::bind(cfg, files, events)
        .await?
        .serve(shutdown)
        .await
}

impl TftpServer {
    /// Check the root and bind the request socket.
    pub async fn bind(
        cfg: TftpConfig,
        files: HashMap<String, Bytes>,
        events: Arc<dyn EventSink>,
    ) -> Result<TftpServer, TftpError> {
        let root_err = |source| TftpError::Root {
            path: cfg.root.clone(),
            source,
        };
        let root = std::fs::canonicalize(&cfg.root).map_err(root_err)?;
        if !root.is_dir() {
            return Err(root_err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        let bind_err = |source| TftpError::Bind {
            addr: cfg.bind,
            source,
        };
        let socket = UdpSocket::bind(cfg.bind).await.map_err(bind_err)?;
        let local_ip = socket.local_addr().map_err(bind_err)?.ip();
        let max_transfers = cfg.max_transfers.clamp(1, 1 << 20) as u32;
        let cache = FileCache::new(cfg.cache_bytes);
        let shared = Shared {
            cfg,
            root,
            local_ip,
            files,
            events,
            cache,
            active: Mutex::new(HashSet::new()),
            running: AtomicUsize::new(0),
            spin_limit: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(TftpServer {
            socket,
            shared: Arc::new(shared),
            permits: Arc::new(Semaphore::new(max_transfers as usize)),
            max_transfers,
        })
    }

    /// The address requests arrive on (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serve until `shutdown` turns true or its sender is dropped. Running
    /// transfers are then aborted (the client gets ERROR "server shutting
    /// down") and awaited before this returns.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) -> Result<(), TftpError> {
        info!(addr = ?self.socket.local_addr().ok(), root = %self.shared.root.display(), "tftp serving");
        // Requests are small, but a truncated datagram would be misparsed: take the maximum.
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::with_capacity(128);
        loop {
            let (n, peer) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // One bad datagram (or ICMP noise) must not stop the server.
                        debug!(error = %e, "tftp recv");
                        tokio::task::yield_now().await;
                        continue;
                    }
                },
                () = shutdown_signalled(&mut shutdown) => break,
            };
            self.handle(&buf[..n], peer, &mut out, &shutdown).await;
        }
        // Every transfer holds a permit: having them all means all have ended.
        let _all = self.permits.acquire_many(self.max_transfers).await;
        info!("tftp stopped");
        Ok(())
    }

    async fn handle(
        &self,
        pkt: &[u8],
        peer: SocketAddr,
        out: &mut Vec<u8>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let req = match parse_request(pkt) {
            Ok(r) => r,
            // Stray DATA/ACK or garbage on the request port: not worth an answer.
            Err(
                PacketError::TooShort | PacketError::UnknownOpcode(_) | PacketError::NotARequest(_),
            ) => {
                debug!(%peer, "ignoring non-request on the tftp port");
                return;
            }
            Err(e) => {
                debug!(%peer, error = %e, "bad tftp request");
                self.reply_error(peer, ErrorCode::IllegalOperation, &e.to_string(), out)
                    .await;
                return;
            }
        };
        let refusal = match (req.kind, req.mode) {
            (RequestKind::Write, _) => Some((ErrorCode::AccessViolation, "read-only server")),
            (_, Mode::Mail) => Some((ErrorCode::IllegalOperation, "mail mode not supported")),
            _ => None,
        };
        if let Some((code, msg)) = refusal {
            count("refused");
            self.shared
                .emit(refusal_event(&printable(&req.filename), msg), peer);
            self.reply_error(peer, code, msg, out).await;
            return;
        }
        // A client that retransmits its RRQ (our first reply was slow) must
        // not start a second transfer from the same port.
        let claim = match Claim::new(&self.shared, peer) {
            Ok(claim) => claim,
            Err(NoClaim::Repeated) => {
                debug!(%peer, "repeated request ignored: transfer in progress");
                return;
            }
            Err(NoClaim::TooManyFromSource) => {
                count("per_source");
                let msg = "too many transfers from this address";
                self.shared
                    .emit(refusal_event(&printable(&req.filename), msg), peer);
                self.reply_error(peer, ErrorCode::NotDefined, msg, out)
                    .await;
                return;
            }
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            count("busy");
            warn!(%peer, file = %printable(&req.filename), "tftp busy: transfer refused");
            self.reply_error(peer, ErrorCode::NotDefined, "server busy", out)
                .await;
            return;
        };
        let shared = self.shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(serve_read(shared, req, peer, shutdown, (permit, claim)));
    }

    async fn reply_error(&self, peer: SocketAddr, code: ErrorCode, msg: &str, out: &mut Vec<u8>) {
        encode_error(out, code, msg);
        if let Err(e) = self.socket.send_to(out, peer).await {
            debug!(%peer, error = %e, "tftp error reply not sent");
        }
    }
}

impl Shared {
    fn emit(&self, data: EventData, peer: SocketAddr) {
        self.events
            .emit(Event::of(data).with_ip(peer.ip().to_canonical()));
    }

    /// In-memory files first, then the directory. The name is checked the
    /// same way for both so the policy does not depend on where a file lives.
    async fn lookup(&self, name: &str) -> Result<Bytes, LookupError> {
        let rel = sanitize(name)?;
        // Exact name first, then the normalised one (`./a\b` finds `a/b`).
        let normalised = rel.to_str();
        if let Some(b) = self
            .files
            .get(name)
            .or_else(|| normalised.and_then(|n| self.files.get(n)))
        {
            return Ok(b.clone());
        }
        let root = self.root.clone();
        let owned = name.to_owned();
        let opened = tokio::task::spawn_blocking(move || open_under(&root, &owned))
            .await
            .map_err(|e| LookupError::Read(io::Error::other(e)))??;
        if opened.len > self.cfg.max_file_size {
            return Err(LookupError::TooLarge(opened.len));
        }
        self.cache.get(opened).await.map_err(LookupError::Read)
    }
}

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("file too large ({0} bytes)")]
    TooLarge(u64),
    #[error("read failed: {0}")]
    Read(io::Error),
}

impl LookupError {
    /// TFTP error to send, and the metric outcome.
    fn reply(&self) -> (ErrorCode, &'static str, &'static str) {
        match self {
            LookupError::Path(PathError::NotFound | PathError::NotAFile) => {
                (ErrorCode::FileNotFound, "file not found", "not_found")
            }
            LookupError::Path(PathError::Io(e)) if e.kind() != io::ErrorKind::PermissionDenied => {
                (ErrorCode::NotDefined, "read error", "failed")
            }
            LookupError::Path(_) => (ErrorCode::AccessViolation, "access violation", "refused"),
            LookupError::TooLarge(_) => (ErrorCode::AccessViolation, "file too large", "refused"),
            LookupError::Read(_) => (ErrorCode::NotDefined, "read error", "failed"),
        }
    }
}

/// One read request, in its own task, from its own socket.
async fn serve_read(
    shared: Arc<Shared>,
    req: Request,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    _slot: (OwnedSemaphorePermit, Claim),
) {
    let started = Instant::now();
    let name = printable(&req.filename);
    let Some(socket) = transfer_socket(&shared, peer).await else {
        return;
    };
    let data = match shared.lookup(&req.filename).await {
        Ok(d) => d,
        Err(e) => return refuse(&shared, &socket, peer, &name, &e).await,
    };

    let neg = negotiate(&req.options, &shared.cfg.limits(), data.len() as u64);
    let oack = neg.oack.as_ref().map(|o| {
        let mut v = Vec::new();
        encode_oack(&mut v, o);
        v
    });
    let had_oack = oack.is_some();
    let transfer = ReadTransfer::new(data, neg.blksize, neg.windowsize, oack, shared.cfg.retries);
    // The block loop runs on a blocking thread (see drive_blocking).
    let link = match socket.into_std() {
        Ok(l) => l,
        Err(e) => {
            warn!(%peer, error = %e, "tftp: cannot hand the transfer socket to a thread");
            count("failed");
            return;
        }
    };
    let Some((transfer, link, result)) =
        drive_on_thread(&shared, transfer, link, neg.timeout, shutdown).await
    else {
        count("failed");
        return;
    };
    let ended = Ended {
        name: &name,
        peer,
        secs: started.elapsed().as_secs_f64(),
        blksize: neg.blksize,
        windowsize: neg.windowsize,
        had_oack,
    };
    ended.report(&shared, &transfer, &link, result);
}

/// A socket of its own for the transfer, connected to the client.
async fn transfer_socket(shared: &Shared, peer: SocketAddr) -> Option<UdpSocket> {
    let socket = match UdpSocket::bind((shared.local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "tftp: cannot bind a transfer socket");
            count("failed");
            return None;
        }
    };
    if let Err(e) = socket.connect(peer).await {
        warn!(%peer, error = %e, "tftp: cannot connect the transfer socket");
        count("failed");
        return None;
    }
    Some(socket)
}

/// Tells the client (and the event log) why its file is not sent.
async fn refuse(
    shared: &Shared,
    socket: &UdpSocket,
    peer: SocketAddr,
    name: &str,
    e: &LookupError,
) {
    let (code, msg, outcome) = e.reply();
    debug!(%peer, file = %name, error = %e, "tftp refused");
    count(outcome);
    let mut ev = refusal_event(name, &e.to_string());
    if outcome == "failed"
        && let EventData::Tftp { outcome, .. } = &mut ev
    {
        *outcome = TftpOutcome::Failed;
    }
    shared.emit(ev, peer);
    let mut out = Vec::with_capacity(64);
    encode_error(&mut out, code, msg);
    let _ = socket.send(&out).await;
}

/// Runs the block loop on a blocking thread; a small task turns the shutdown signal
/// into a flag it polls. `None` if the thread panicked.
async fn drive_on_thread(
    shared: &Arc<Shared>,
    mut transfer: ReadTransfer,
    link: std::net::UdpSocket,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(ReadTransfer, std::net::UdpSocket, Result<(), DriveError>)> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signalled(&mut shutdown).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let pace = shared.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let may_spin = || pace.running.load(Ordering::Relaxed) <= pace.spin_limit;
        let r = drive_blocking(&mut transfer, &link, timeout, &stop, &may_spin);
        (transfer, link, r)
    })
    .await;
    watcher.abort();
    joined.ok()
}

/// A finished transfer, for its metrics, log line and event.
struct Ended<'a> {
    name: &'a str,
    peer: SocketAddr,
    secs: f64,
    blksize: u16,
    windowsize: u16,
    had_oack: bool,
}

impl Ended<'_> {
    fn report(
        &self,
        shared: &Shared,
        transfer: &ReadTransfer,
        link: &std::net::UdpSocket,
        result: Result<(), DriveError>,
    ) {
        let (name, peer, secs) = (self.name, self.peer, self.secs);
        match result {
            Ok(()) => {
                count("sent");
                metrics::counter!("kiln_tftp_bytes_total").increment(transfer.len());
                metrics::histogram!("kiln_tftp_transfer_seconds").record(secs);
                let ev = EventData::Tftp {
                    outcome: TftpOutcome::Sent,
                    file: name.to_string(),
                    bytes: Some(transfer.len()),
                    size: Some(transfer.len()),
                    duration_ms: Some((secs * 1000.0).round() as u64),
                    blksize: Some(self.blksize),
                    windowsize: Some(self.windowsize),
                    reason: None,
                };
                debug!(%peer, "tftp sent {ev}");
                shared.emit(ev, peer);
            }
            // PXE ROMs ask for tsize, then abort after the OACK to re-request
            // with other options: normal, so no event.
            Err(DriveError::Transfer(TransferError::Peer { code, ref message }))
                if self.had_oack && transfer.acked_bytes() == 0 =>
            {
                count("aborted");
                debug!(%peer, file = %name, code, message = %printable(message), "tftp client aborted after OACK");
            }
            Err(e) => self.failed(shared, transfer, link, e),
        }
    }

    fn failed(
        &self,
        shared: &Shared,
        transfer: &ReadTransfer,
        link: &std::net::UdpSocket,
        e: DriveError,
    ) {
        let (name, peer) = (self.name, self.peer);
        count("failed");
        metrics::counter!("kiln_tftp_bytes_total").increment(transfer.acked_bytes());
        let why = match &e {
            DriveError::Transfer(TransferError::Peer { code, message }) => {
                format!("client error {code}: {}", printable(message))
            }
            other => other.to_string(),
        };
        let tell_client = match e {
            DriveError::Shutdown => Some("server shutting down"),
            DriveError::Transfer(TransferError::TimedOut { .. }) => Some("timed out"),
            _ => None,
        };
        if let Some(msg) = tell_client {
            let mut out = Vec::with_capacity(64);
            encode_error(&mut out, ErrorCode::NotDefined, msg);
            let _ = link.send(&out);
        }
        let ev = EventData::Tftp {
            outcome: TftpOutcome::Failed,
            file: name.to_string(),
            bytes: Some(transfer.acked_bytes()),
            size: Some(transfer.len()),
            duration_ms: Some((self.secs * 1000.0).round() as u64),
            blksize: Some(self.blksize),
            windowsize: Some(self.windowsize),
            reason: Some(why),
        };
        debug!(%peer, "tftp failed: {ev}");
        shared.emit(ev, peer);
    }
}

/// A request for `file` refused, for `reason`.
fn refusal_event(file: &str, reason: &str) -> EventData {
    EventData::Tftp {
        outcome: TftpOutcome::Refused,
        file: file.to_string(),
        bytes: None,
        size: None,
        duration_ms: None,
        blksize: None,
        windowsize: None,
        reason: Some(reason.to_string()),
    }
}

/// A client-supplied string made safe for logs and events: control characters
/// escaped, length bounded.
fn printable(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::with_capacity(s.len().min(MAX));
    for c in s.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes() {
        assert_eq!(printable("undionly.kpxe"), "undionly.kpxe");
        assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(printable(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn lookup_error_codes() {
        let e = LookupError::Path(PathError::Parent);
        assert_eq!(e.reply().0, ErrorCode::AccessViolation);
        let e = LookupError::Path(PathError::NotFound);
        assert_eq!(
            e.reply(),
            (ErrorCode::FileNotFound, "file not found", "not_found")
        );
    }
}
