//! The connection loop: file downloads by `sendfile`, everything else by hyper.
//!
//! Each accepted connection starts here. A body-less GET/HEAD of a file route (`/artifacts`,
//! `/images`, `/boot`) still goes through the router (path rules, events, metrics, the pure
//! response plan), marked [`SendfileAllowed`]; the file handler then answers with an empty
//! body and a [`FileRange`], and this loop writes the head itself and lets the kernel copy
//! the bytes from the page cache to the socket (`sendfile(2)`), as nginx does: no user-space
//! copy, no buffers. Any other request hands the connection, with the bytes already read,
//! to hyper for the rest of its life.
//!
//! Every connection lives under the [`HttpLimits`]: a place among the open connections (in
//! all and from its address) or it is closed at once, and the time limits of
//! [`crate::deadline`] on both paths.

use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::debug;

use crate::HttpLimits;
use crate::deadline::{DeadlineBody, Guarded, Phase, SharedPhase, TimedIo, timed_out};
use crate::http1::{self, Parsed};
use crate::limits::Admission;

/// Request extension: this request arrived on the sendfile path, so a file handler may
/// answer with a [`FileRange`] instead of a body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendfileAllowed;

/// Response extension: send `count` bytes of `file` from `start` as the body.
#[derive(Clone, Debug)]
pub(crate) struct FileRange {
    pub file: Arc<File>,
    pub start: u64,
    pub count: u64,
    /// Which served root (`kiln_http_file_bytes_total`'s label).
    pub root: &'static str,
}

/// Paths whose GET/HEAD the sendfile path serves.
fn is_file_route(path: &str) -> bool {
    ["/artifacts/", "/images/", "/boot/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Largest non-file body (an error text) the sendfile path writes from memory.
const MAX_SMALL_BODY: usize = 1 << 20;
/// Bytes asked of one `sendfile` call; a nonblocking socket takes what fits.
const SENDFILE_CHUNK: u64 = 1 << 30;

/// Accept until `shutdown`, then stop accepting, let each connection finish the response
/// it is sending (idle keep-alive connections close), and return when all have ended.
/// A connection over a cap of `limits` is closed as soon as it is accepted.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    refusals: Option<Arc<dyn kiln_model::EventSink>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let admission = Admission::with_events(&limits, refusals);
    crate::accept::accept_loop(
        "http",
        listener,
        admission,
        shutdown,
        |stream, peer, stop| connection(stream, peer, app.clone(), stop, limits.clone()),
    )
    .await;
    Ok(())
}

/// Resolves once shutdown is signalled (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
    limits: Arc<HttpLimits>,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(4096);
    let mut phase = Phase::accepted(&limits);
    loop {
        let parsed = loop {
            match http1::parse(&buf, is_file_route) {
                Parsed::Partial if buf.len() < http1::MAX_HEAD => {}
                Parsed::Partial => break Parsed::NotOurs,
                other => break other,
            }
            // This path reads only heads (Head or Idle); Busy is hyper's.
            let deadline = phase.deadline().unwrap_or_else(Instant::now);
            let read = tokio::select! {
                r = stream.read_buf(&mut buf) => r,
                () = tokio::time::sleep_until(deadline) => {
                    let e = timed_out(phase.label());
                    debug!(%peer, error = %e, "http: connection closed");
                    return;
                }
                // Between requests: an idle connection closes on shutdown.
                () = stopped(&mut stop), if buf.is_empty() => return,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => phase = phase.on_bytes(&limits),
            }
        };
        let Parsed::Ours {
            request,
            len,
            keep_alive,
        } = parsed
        else {
            let phase = SharedPhase::new(phase, limits.clone());
            return hyper_connection(stream, buf.freeze(), peer, app, stop, phase).await;
        };
        buf.advance(len);
        let keep_alive = keep_alive && !*stop.borrow();
        match respond(&stream, *request, peer, &app, keep_alive, &limits).await {
            Ok(true) => phase = Phase::after_response(&limits, !buf.is_empty()),
            Ok(false) => return,
            Err(e) => {
                debug!(%peer, error = %e, "http: connection ended mid-response");
                return;
            }
        }
    }
}

/// Run `request` through the router and write its response; `Ok(true)`: the connection
/// stays open for the next request.
async fn respond(
    stream: &TcpStream,
    request: Request<()>,
    peer: SocketAddr,
    app: &Router,
    keep_alive: bool,
    limits: &HttpLimits,
) -> io::Result<bool> {
    let send_timeout = limits.send_timeout;
    let version = request.version();
    let is_head = request.method() == Method::HEAD;
    let mut request = request.map(|()| Body::empty());
    request.extensions_mut().insert(ConnectInfo(peer));
    request.extensions_mut().insert(SendfileAllowed);
    let Ok(response) = app.clone().oneshot(request).await;
    let (mut parts, body) = response.into_parts();
    let keep_alive = keep_alive && !http1::connection_has(&parts.headers, "close");
    let date = httpdate::fmt_http_date(SystemTime::now());
    match parts.extensions.remove::<FileRange>() {
        Some(range) if !is_head => {
            let head = http1::encode_head(
                version,
                parts.status,
                &parts.headers,
                Some(range.count),
                keep_alive,
                &date,
            );
            // Corked like nginx's `tcp_nopush`: only full segments leave while the body
            // streams (the head rides in the first), uncorking sends the tail at once.
            let _ = rustix::net::sockopt::set_tcp_cork(stream, true);
            let sent = match send_all(stream, &head, send_timeout).await {
                Ok(()) => send_file(stream, &range, send_timeout).await,
                Err(e) => Err(e),
            };
            let _ = rustix::net::sockopt::set_tcp_cork(stream, false);
            sent?;
        }
        _ => {
            let body = axum::body::to_bytes(body, MAX_SMALL_BODY)
                .await
                .map_err(io::Error::other)?;
            let mut out = http1::encode_head(
                version,
                parts.status,
                &parts.headers,
                Some(body.len() as u64),
                keep_alive,
                &date,
            );
            if !is_head && !http1::bodiless(parts.status) {
                out.extend_from_slice(&body);
            }
            send_all(stream, &out, send_timeout).await?;
        }
    }
    Ok(keep_alive)
}

/// Until the socket takes more bytes, for at most `send_timeout`: a client that reads,
/// however slowly, is never cut.
async fn writable(stream: &TcpStream, send_timeout: Duration) -> io::Result<()> {
    match tokio::time::timeout(send_timeout, stream.writable()).await {
        Ok(ready) => ready,
        Err(_) => Err(timed_out("send")),
    }
}

/// Write all of `buf`.
async fn send_all(stream: &TcpStream, mut buf: &[u8], send_timeout: Duration) -> io::Result<()> {
    let flags = rustix::net::SendFlags::NOSIGNAL;
    while !buf.is_empty() {
        writable(stream, send_timeout).await?;
        match stream.try_io(Interest::WRITABLE, || {
            rustix::net::send(stream, buf, flags).map_err(io::Error::from)
        }) {
            Ok(n) => buf = &buf[n..],
            Err(e) if retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The range's bytes to the socket, page cache to socket in the kernel.
async fn send_file(
    stream: &TcpStream,
    range: &FileRange,
    send_timeout: Duration,
) -> io::Result<()> {
    let file: &File = &range.file;
    let sent = metrics::counter!("kiln_http_file_bytes_total", "root" => range.root);
    let (mut offset, end) = (range.start, range.start + range.count);
    while offset < end {
        let want = usize::try_from((end - offset).min(SENDFILE_CHUNK)).unwrap_or(usize::MAX);
        writable(stream, send_timeout).await?;
        match stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, Some(&mut offset), want).map_err(io::Error::from)
        }) {
            // The file shrank under us: end the connection rather than pad the body; the
            // client sees a short response against Content-Length and retries.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being served",
                ));
            }
            Ok(n) => sent.increment(n as u64),
            Err(e) if retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// The rest of the connection, served by hyper (HTTP/1.1), starting with the bytes already
/// read, in the time limits `phase` carries on. No route upgrades a connection (an upgraded
/// stream would still live under the head and idle limits), so hyper is not asked to.
async fn hyper_connection(
    stream: TcpStream,
    read: Bytes,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
    phase: SharedPhase,
) {
    let body_timeout = phase.limits().body_timeout;
    let io = TokioIo::new(TimedIo::new(Replay { read, stream }, phase.clone()));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = phase.request_started();
        let mut request = request.map(|body| DeadlineBody::wrap(body, body_timeout));
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| Guarded::wrap(body, in_flight)))
        }
    });
    // Our limits replace hyper's header timeout, which would also end idle connections.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "http connection");
                }
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// A TCP stream whose first reads return bytes already taken from it.
struct Replay {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
