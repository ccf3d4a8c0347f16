//! Runs a [`ReadTransfer`] over a connected socket with a retransmission timer.

use std::io;
use std::time::Duration;

use tokio::sync::watch;

use crate::packet::Packet;
use crate::transfer::{Action, ReadTransfer, TransferError};

/// How a driven transfer ended badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriveError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The client went away (ICMP port unreachable) or the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("server shutting down")]
    Shutdown,
}

/// Resolves when `rx` says true or its sender is gone.
pub(crate) async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How long to poll for an ACK before sleeping in `recv`: a little over a LAN round trip
/// (client and server on one switch, or a veth, answer in 15–30 µs). Sleeping and being
/// woken per block costs a context switch and, on an idle CPU, an exit from idle; polling
/// spends those microseconds on the CPU instead, where lock-step TFTP otherwise waits.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// A client whose ACKs came this much later than the DATA is predicted to keep that
/// pace (a firmware on a LAN with a 1 ms round trip answers within a few µs of the
/// same delay every block); a longer gap is not worth waking early for.
const PREDICT_MAX: Duration = Duration::from_millis(20);

/// How long before a predicted ACK the thread wakes to poll, and how long past it the
/// poll goes on: covers the wake-up itself (tens of µs on a virtual CPU) and the
/// client's jitter. Measured here against a client 1 ms behind (median turnaround, ACK
/// sent to next DATA received, at the client): asleep in `recv` ~50 µs; a 30 µs lead 36 µs
/// (often awake too late); 50 and 100 µs ~22 µs alike, 50 at half the CPU (about 0.09 s
/// per MB at blksize 512).
const LEAD: Duration = Duration::from_micros(50);

/// Drive `t` to completion over a connected, blocking socket, on a thread of
/// its own. Lock-step TFTP is one packet each way per block: here that costs
/// one `send` and one `recv` (tftpd-hpa adds a `read` of the file, a `pselect`
/// and signal-mask calls per block). `stop` is checked at least every 250 ms.
///
/// The wait for an ACK avoids paying a wake-up from sleep after the ACK has arrived,
/// while `may_spin()` says the server is not busy with other transfers:
/// - a client that acknowledged the last window within [`SPIN`] (a fast LAN) is
///   polled for that long before the thread sleeps in `recv`;
/// - a slower client that answered within [`PREDICT_MAX`] is expected to take as long
///   again: the thread sleeps until [`LEAD`] before then and polls until `LEAD` after
///   (an ACK that comes earlier wakes the sleep as usual).
///
/// A poll that loses the CPU to another task turns polling off for the rest of the
/// transfer.
pub(crate) fn drive_blocking(
    t: &mut ReadTransfer,
    sock: &std::net::UdpSocket,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
    may_spin: &dyn Fn() -> bool,
) -> Result<(), DriveError> {
    use std::time::Instant;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(timeout.min(Duration::from_millis(250))))?;
    let _slack = PreciseTimers::set();
    let mut out = Vec::with_capacity(4 + t.blksize());
    let mut inbuf = [0u8; 516];
    let mut action = t.start();
    let mut sent_at = Instant::now();
    let mut deadline = sent_at + timeout;
    let mut pacing = Pacing {
        ack_gap: Some(Duration::ZERO),
        uncontended: true,
    };
    loop {
        match action {
            Action::SendOack => {
                sock.send(t.oack_packet())?;
                sent_at = Instant::now();
                deadline = sent_at + timeout;
            }
            Action::SendData { first, last } => {
                for i in first..=last {
                    t.write_data(i, &mut out);
                    sock.send(&out)?;
                }
                sent_at = Instant::now();
                deadline = sent_at + timeout;
            }
            Action::Wait => {}
            Action::Done => return Ok(()),
            Action::Fail(e) => return Err(e.into()),
        }
        let received = match pacing.poll(sock, &mut inbuf, sent_at, may_spin)? {
            Some(n) => Some(n),
            None => recv_until(sock, &mut inbuf, deadline, stop)?,
        };
        action = match received {
            None => t.on_timeout(),
            Some(n) => match Packet::parse(&inbuf[..n]) {
                Ok(Packet::Ack { block }) => {
                    let gap = sent_at.elapsed();
                    pacing.ack_gap = (gap < PREDICT_MAX).then_some(gap);
                    t.on_ack(block)
                }
                Ok(Packet::Error { code, message }) => t.on_error(code, &message),
                _ => Action::Wait,
            },
        };
    }
}

/// What the driver knows of the client's pace, to decide whether to poll.
struct Pacing {
    /// How long the client took to acknowledge the last window.
    ack_gap: Option<Duration>,
    /// Cleared for good once polling lost the CPU to another task.
    uncontended: bool,
}

impl Pacing {
    /// Polls for the ACK when the client is fast and the server not busy; `None` when
    /// nothing came (or polling was not tried) and the caller should block in `recv`.
    fn poll(
        &mut self,
        sock: &std::net::UdpSocket,
        inbuf: &mut [u8],
        sent_at: std::time::Instant,
        may_spin: &dyn Fn() -> bool,
    ) -> Result<Option<usize>, DriveError> {
        Ok(match self.ack_gap {
            Some(gap) if self.uncontended && may_spin() => {
                match wait_for_ack(sock, inbuf, sent_at, gap)? {
                    Polled::Datagram(n) => Some(n),
                    Polled::Nothing => None,
                    Polled::Preempted => {
                        self.uncontended = false;
                        None
                    }
                }
            }
            _ => None,
        })
    }
}

/// Blocks in `recv` (in slices of the socket's read timeout) until a datagram comes,
/// the deadline passes (`None`) or the server stops.
fn recv_until(
    sock: &std::net::UdpSocket,
    inbuf: &mut [u8],
    deadline: std::time::Instant,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<usize>, DriveError> {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(DriveError::Shutdown);
        }
        match sock.recv(inbuf) {
            Ok(n) => return Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The first part of the wait for the ACK of a window sent at `sent_at`, from a client
/// that took `gap` for the last one: poll for [`SPIN`] if that was quick, else sleep
/// until [`LEAD`] before `sent_at + gap` and poll until `LEAD` after it.
fn wait_for_ack(
    sock: &std::net::UdpSocket,
    buf: &mut [u8],
    sent_at: std::time::Instant,
    gap: Duration,
) -> io::Result<Polled> {
    if gap < SPIN {
        return poll_for(sock, buf, sent_at + SPIN);
    }
    if sleep_until_readable(sock, sent_at + gap.saturating_sub(LEAD))? {
        // Woken by a datagram: one read (a poll whose time is already up).
        return poll_for(sock, buf, std::time::Instant::now());
    }
    poll_for(sock, buf, sent_at + gap + LEAD)
}

/// Sleep until `sock` has a datagram (true) or `until` has passed (false).
fn sleep_until_readable(sock: &std::net::UdpSocket, until: std::time::Instant) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let Some(left) = until.checked_duration_since(std::time::Instant::now()) else {
        return Ok(false);
    };
    let timeout = Timespec {
        tv_sec: left.as_secs() as _,
        tv_nsec: left.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(sock, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sets this thread's timer slack to 1 ns while alive (the default 50 µs would make a
/// wake-up before a predicted ACK land after it), and back when dropped.
struct PreciseTimers(Option<std::num::NonZeroU64>);

impl PreciseTimers {
    fn set() -> Self {
        let before = rustix::thread::current_timer_slack()
            .ok()
            .and_then(std::num::NonZeroU64::new);
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        PreciseTimers(before)
    }
}

impl Drop for PreciseTimers {
    fn drop(&mut self) {
        let _ = rustix::thread::set_current_timer_slack(self.0);
    }
}

/// What polling for an ACK found.
enum Polled {
    Datagram(usize),
    /// Nothing within the time allowed.
    Nothing,
    /// Nothing, and the thread lost the CPU while polling: another task wants it, so
    /// polling would only delay this transfer (a preempted poller is not woken by the
    /// ACK the way a sleeper is) and slow the other task.
    Preempted,
}

/// A gap between two polls longer than this means the scheduler ran another task (a `recv`
/// takes ~1 µs; interrupts and a virtual CPU's steal take tens of µs, a time slice more).
const PREEMPTED: Duration = Duration::from_micros(250);

/// Poll `sock` without sleeping until `until`.
fn poll_for(
    sock: &std::net::UdpSocket,
    buf: &mut [u8],
    until: std::time::Instant,
) -> io::Result<Polled> {
    let mut last = std::time::Instant::now();
    loop {
        match rustix::net::recv(sock, &mut *buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(Polled::Datagram(n)),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let now = std::time::Instant::now();
        if now - last > PREEMPTED {
            return Ok(Polled::Preempted);
        }
        if now >= until {
            return Ok(Polled::Nothing);
        }
        last = now;
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, encode_ack};
    use bytes::Bytes;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// A connected server/client socket pair on loopback.
    fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.connect(client.local_addr().unwrap()).unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    fn recv_block(c: &UdpSocket) -> u16 {
        let mut buf = [0u8; 1024];
        let n = c.recv(&mut buf).unwrap();
        match Packet::parse(&buf[..n]).unwrap() {
            Packet::Data { block, .. } => block,
            other => panic!("{other:?}"),
        }
    }

    #[track_caller]
    fn assert_no_more_packets(c: &UdpSocket) {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(c.recv(&mut [0u8; 600]).is_err(), "no extra packets");
    }

    fn ack(c: &UdpSocket, block: u16) {
        let mut a = Vec::new();
        encode_ack(&mut a, block);
        c.send(&a).unwrap();
    }

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn silent_client_times_out_after_retries() {
        let (server, client) = pair();
        let mut t = ReadTransfer::new(Bytes::from_static(b"abc"), 512, 1, None, 5);
        let start = Instant::now();
        let r = drive_blocking(&mut t, &server, T, &AtomicBool::new(false), &|| true);
        assert!(
            matches!(
                r,
                Err(DriveError::Transfer(TransferError::TimedOut {
                    retries: 5,
                    block: 1
                }))
            ),
            "{r:?}"
        );
        // First send + 5 retransmissions, each followed by a full timeout.
        assert!(start.elapsed() >= 6 * T);
        client
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut n = 0;
        let mut buf = [0u8; 600];
        while client.recv(&mut buf).is_ok() {
            n += 1;
        }
        assert_eq!(n, 6);
    }

    #[test]
    fn lost_ack_is_recovered_by_retransmission() {
        let (server, client) = pair();
        let data: Bytes = (0..40u8).collect::<Vec<_>>().into();
        let mut t = ReadTransfer::new(data, 10, 2, None, 5);
        let srv = std::thread::spawn(move || {
            drive_blocking(&mut t, &server, T, &AtomicBool::new(false), &|| true).is_ok()
        });
        // Window 1: blocks 1, 2. Drop the ACK: the window comes again after a timeout.
        assert_eq!((recv_block(&client), recv_block(&client)), (1, 2));
        let lost = Instant::now();
        assert_eq!((recv_block(&client), recv_block(&client)), (1, 2));
        assert!(
            lost.elapsed() >= T / 2,
            "retransmitted only after the timeout"
        );
        ack(&client, 2);
        // A duplicate ACK must not cause another window (Sorcerer's Apprentice).
        ack(&client, 2);
        assert_eq!((recv_block(&client), recv_block(&client)), (3, 4));
        ack(&client, 4);
        assert_eq!(recv_block(&client), 5); // empty final block
        ack(&client, 5);
        assert!(srv.join().unwrap());
        assert_no_more_packets(&client);
    }

    #[test]
    fn duplicate_acks_do_not_extend_the_timer() {
        let (server, client) = pair();
        let mut t = ReadTransfer::new(Bytes::from_static(&[1; 30]), 10, 1, None, 0);
        let start = Instant::now();
        let srv = std::thread::spawn(move || {
            drive_blocking(
                &mut t,
                &server,
                Duration::from_millis(300),
                &AtomicBool::new(false),
                &|| true,
            )
            .is_err()
        });
        recv_block(&client);
        // Stale ACK 0s every 100 ms for 500 ms: the 300 ms timer must still fire.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(100));
            ack(&client, 0);
        }
        assert!(
            srv.join().unwrap(),
            "no retries: the transfer fails at the first timeout"
        );
        assert!(start.elapsed() < Duration::from_millis(1_000));
    }

    /// Clients that acknowledge at once, at a steady slower pace, and at an uneven pace
    /// (ACKs well before and well after the predicted time), served with and without
    /// polling: every block arrives once, in order.
    #[test]
    fn polling_and_sleeping_waits_deliver_the_same_blocks() {
        let steady = |d: Duration| vec![d; 11];
        let uneven: Vec<Duration> = (0..11u32)
            .map(|i| Duration::from_micros([200, 3_000, 300, 1_500, 0][i as usize % 5]))
            .collect();
        for (may_spin, delays) in [
            (true, steady(Duration::ZERO)),
            (false, steady(Duration::ZERO)),
            (true, steady(SPIN * 4)),
            (true, steady(Duration::from_millis(1))),
            (true, uneven.clone()),
            (false, uneven),
        ] {
            let (server, client) = pair();
            let data: Bytes = (0..100u8).collect::<Vec<_>>().into();
            let mut t = ReadTransfer::new(data, 10, 1, None, 5);
            let srv = std::thread::spawn(move || {
                drive_blocking(&mut t, &server, T * 10, &AtomicBool::new(false), &|| {
                    may_spin
                })
                .is_ok()
            });
            for (block, delay) in (1..=11u16).zip(&delays) {
                assert_eq!(
                    recv_block(&client),
                    block,
                    "spin {may_spin} delays {delays:?}"
                );
                std::thread::sleep(*delay);
                ack(&client, block);
            }
            assert!(srv.join().unwrap());
            assert_no_more_packets(&client);
        }
    }

    /// The thread's timer slack is tightened for the transfer and restored after it.
    #[test]
    fn timer_slack_is_restored() {
        let before = rustix::thread::current_timer_slack().unwrap();
        {
            let _precise = PreciseTimers::set();
            assert_eq!(rustix::thread::current_timer_slack().unwrap(), 1);
        }
        assert_eq!(rustix::thread::current_timer_slack().unwrap(), before);
    }

    #[test]
    fn shutdown_aborts() {
        let (server, _client) = pair();
        let mut t = ReadTransfer::new(Bytes::from_static(b"abc"), 512, 1, None, 5);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let srv = std::thread::spawn(move || {
            matches!(
                drive_blocking(&mut t, &server, Duration::from_secs(30), &s2, &|| true),
                Err(DriveError::Shutdown)
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        assert!(srv.join().unwrap());
    }
}
