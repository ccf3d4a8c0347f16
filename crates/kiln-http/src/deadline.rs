//! The time limits of one connection: which wait it is in (a request head, idle between
//! requests, a request being served) and the I/O and body wrappers that end a connection
//! whose wait ran out. The sendfile path keeps a [`Phase`] itself; a connection handed to
//! hyper carries it on in [`TimedIo`] (hyper's own `header_read_timeout` also runs while a
//! keep-alive connection is idle, so it cannot tell a slow head from an idle connection).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::HttpLimits;

/// Which wait a connection is in, so which limit applies to its reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading a request head, complete by `deadline`.
    Head { deadline: Instant },
    /// No request in flight: the next one's first byte by `deadline`.
    Idle { deadline: Instant },
    /// A request is being served: its body has its own deadline, its response is bounded
    /// by the send timeout, and reads now only notice a client that hung up.
    Busy,
}

impl Phase {
    /// A new connection: its first head is due `header_timeout` after the accept.
    pub(crate) fn accepted(limits: &HttpLimits) -> Phase {
        Phase::Head {
            deadline: Instant::now() + limits.header_timeout,
        }
    }

    /// A response went out: idle, or reading the next head if bytes of it are already here.
    pub(crate) fn after_response(limits: &HttpLimits, next_bytes_read: bool) -> Phase {
        if next_bytes_read {
            Phase::Head {
                deadline: Instant::now() + limits.header_timeout,
            }
        } else {
            Phase::Idle {
                deadline: Instant::now() + limits.idle_timeout,
            }
        }
    }

    /// Bytes arrived: an idle connection is now reading a head.
    pub(crate) fn on_bytes(self, limits: &HttpLimits) -> Phase {
        match self {
            Phase::Idle { .. } => Phase::Head {
                deadline: Instant::now() + limits.header_timeout,
            },
            other => other,
        }
    }

    /// When reads stop waiting, if ever.
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Head { deadline } | Phase::Idle { deadline } => Some(deadline),
            Phase::Busy => None,
        }
    }

    /// The `phase` label of `kiln_http_timeouts_total` for a wait that ran out.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Phase::Head { .. } => "header",
            Phase::Idle { .. } => "idle",
            Phase::Busy => "busy",
        }
    }
}

/// Counts a connection ended by a limit.
pub(crate) fn timed_out(phase: &'static str) -> io::Error {
    metrics::counter!("kiln_http_timeouts_total", "phase" => phase).increment(1);
    io::Error::new(io::ErrorKind::TimedOut, format!("{phase} timeout"))
}

/// The phase shared between a hyper connection's I/O and its service (which sees requests
/// begin and responses end).
#[derive(Clone)]
pub(crate) struct SharedPhase {
    inner: Arc<Mutex<Shared>>,
    limits: Arc<HttpLimits>,
}

struct Shared {
    phase: Phase,
    in_flight: usize,
    /// The task of the last read that waited. hyper, once idle, does not read again
    /// until that read's wake-up; waking it when the connection turns idle makes it read
    /// again, under the idle limit.
    reader: Option<Waker>,
}

impl SharedPhase {
    pub(crate) fn new(phase: Phase, limits: Arc<HttpLimits>) -> SharedPhase {
        SharedPhase {
            inner: Arc::new(Mutex::new(Shared {
                phase,
                in_flight: 0,
                reader: None,
            })),
            limits,
        }
    }

    pub(crate) fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn get(&self) -> Phase {
        self.lock().phase
    }

    fn on_bytes(&self) {
        let mut g = self.lock();
        g.phase = g.phase.on_bytes(&self.limits);
    }

    /// A read waits: the phase it waits in, and remember whom to wake on a phase change.
    fn read_waits(&self, waker: &Waker) -> Phase {
        let mut g = self.lock();
        if !g.reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
            g.reader = Some(waker.clone());
        }
        g.phase
    }

    /// A request head was read: busy until the returned guard (kept by the response body)
    /// drops.
    pub(crate) fn request_started(&self) -> InFlight {
        let mut g = self.lock();
        g.phase = Phase::Busy;
        g.in_flight += 1;
        InFlight(self.clone())
    }
}

/// A request in flight on a hyper connection; the connection is idle once none is.
pub(crate) struct InFlight(SharedPhase);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.in_flight -= 1;
        if g.in_flight == 0 {
            g.phase = Phase::after_response(&self.0.limits, false);
            if let Some(reader) = g.reader.take() {
                reader.wake();
            }
        }
    }
}

/// A stream whose reads end with `TimedOut` when the connection's phase runs out, and whose
/// writes end so when the peer takes no byte for the send timeout.
pub(crate) struct TimedIo<S> {
    inner: S,
    phase: SharedPhase,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    /// Since when writes have made no progress, if they are waiting.
    write_stalled: Option<Instant>,
}

impl<S> TimedIo<S> {
    pub(crate) fn new(inner: S, phase: SharedPhase) -> TimedIo<S> {
        let far = Instant::now() + Duration::from_secs(86_400);
        TimedIo {
            inner,
            phase,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_stalled: None,
        }
    }

    /// After a write (or flush) attempt: `Ready(Err)` once writes have been waiting for the
    /// send timeout. Only a write that went through is progress (a socket's flush is always
    /// ready).
    fn check_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        is_write: bool,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            if is_write {
                self.write_stalled = None;
            }
            return polled;
        }
        let since = *self.write_stalled.get_or_insert_with(Instant::now);
        let deadline = since + self.phase.limits.send_timeout;
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        Poll::Ready(Err(timed_out("send")))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.phase.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let phase = this.phase.read_waits(cx.waker());
                let Some(deadline) = phase.deadline() else {
                    return Poll::Pending;
                };
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                ready!(this.read_timer.as_mut().poll(cx));
                Poll::Ready(Err(timed_out(phase.label())))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check_write(cx, polled, true)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check_write(cx, polled, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check_write(cx, polled, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole by a deadline.
pub(crate) struct DeadlineBody {
    inner: Incoming,
    timer: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    /// `incoming` as the handler's body: with a deadline `timeout` from now unless it is
    /// already known to be empty.
    pub(crate) fn wrap(incoming: Incoming, timeout: Duration) -> Body {
        if incoming.is_end_stream() {
            return Body::new(incoming);
        }
        Body::new(DeadlineBody {
            inner: incoming,
            timer: Box::pin(tokio::time::sleep(timeout)),
        })
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(this.timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(timed_out("body").into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request [`InFlight`] until hyper has taken all of it.
pub(crate) struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl Guarded {
    pub(crate) fn wrap(inner: Body, in_flight: InFlight) -> Body {
        Body::new(Guarded {
            inner,
            _in_flight: in_flight,
        })
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..HttpLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn phases_move_from_head_to_busy_to_idle_and_back() {
        let l = limits();
        let t0 = Instant::now();
        assert_eq!(
            Phase::accepted(&l),
            Phase::Head {
                deadline: t0 + l.header_timeout
            }
        );
        let shared = SharedPhase::new(Phase::accepted(&l), Arc::new(l.clone()));
        let first = shared.request_started();
        let pipelined = shared.request_started();
        assert_eq!(shared.get(), Phase::Busy);
        assert_eq!(
            shared.get().deadline(),
            None,
            "a busy connection never idles out"
        );
        drop(first);
        assert_eq!(shared.get(), Phase::Busy, "one request still in flight");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(pipelined);
        let idle = shared.get();
        assert_eq!(
            idle.deadline(),
            Some(t0 + Duration::from_secs(100) + l.idle_timeout)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        shared.on_bytes();
        assert_eq!(
            shared.get().deadline(),
            Some(t0 + Duration::from_secs(105) + l.header_timeout),
            "the first byte starts the head's clock"
        );
        shared.on_bytes();
        assert_eq!(
            shared.get().deadline(),
            Some(t0 + Duration::from_secs(105) + l.header_timeout),
            "later bytes do not move it"
        );
        assert_eq!(
            Phase::after_response(&l, true).deadline(),
            Some(Instant::now() + l.header_timeout)
        );
    }
}
