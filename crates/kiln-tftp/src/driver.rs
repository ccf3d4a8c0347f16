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

/// Drive `t` to completion over a connected, blocking socket, on a thread of
/// its own. Lock-step TFTP is one packet each way per block: here that costs
/// one `send` and one `recv` (tftpd-hpa's budget), where an async socket adds
/// a failed read and an epoll wait per block. `stop` is checked at least every
/// 250 ms.
pub(crate) fn drive_blocking(
    t: &mut ReadTransfer,
    sock: &std::net::UdpSocket,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), DriveError> {
    use std::sync::atomic::Ordering;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(timeout.min(Duration::from_millis(250))))?;
    let mut out = Vec::with_capacity(4 + t.blksize());
    let mut inbuf = [0u8; 516];
    let mut action = t.start();
    let mut deadline = std::time::Instant::now() + timeout;
    loop {
        match action {
            Action::SendOack => {
                sock.send(t.oack_packet())?;
                deadline = std::time::Instant::now() + timeout;
            }
            Action::SendData { first, last } => {
                for i in first..=last {
                    t.write_data(i, &mut out);
                    sock.send(&out)?;
                }
                deadline = std::time::Instant::now() + timeout;
            }
            Action::Wait => {}
            Action::Done => return Ok(()),
            Action::Fail(e) => return Err(e.into()),
        }
        action = loop {
            if stop.load(Ordering::Relaxed) {
                return Err(DriveError::Shutdown);
            }
            match sock.recv(&mut inbuf) {
                Ok(n) => {
                    break match Packet::parse(&inbuf[..n]) {
                        Ok(Packet::Ack { block }) => t.on_ack(block),
                        Ok(Packet::Error { code, message }) => t.on_error(code, &message),
                        _ => Action::Wait,
                    };
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if std::time::Instant::now() >= deadline {
                        break t.on_timeout();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
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
        let r = drive_blocking(&mut t, &server, T, &AtomicBool::new(false));
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
            drive_blocking(&mut t, &server, T, &AtomicBool::new(false)).is_ok()
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
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(client.recv(&mut [0u8; 600]).is_err(), "no extra packets");
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

    #[test]
    fn shutdown_aborts() {
        let (server, _client) = pair();
        let mut t = ReadTransfer::new(Bytes::from_static(b"abc"), 512, 1, None, 5);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let srv = std::thread::spawn(move || {
            matches!(
                drive_blocking(&mut t, &server, Duration::from_secs(30), &s2),
                Err(DriveError::Shutdown)
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        assert!(srv.join().unwrap());
    }
}
