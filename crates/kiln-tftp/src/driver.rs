//! Runs a [`ReadTransfer`] over a datagram link with a retransmission timer.
//!
//! Generic over [`Link`] so tests can drive it through channels with
//! `tokio::time::pause()` instead of a real socket and real waiting.

use std::io;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use crate::packet::Packet;
use crate::transfer::{Action, ReadTransfer, TransferError};

/// A connected datagram pipe to one client.
pub(crate) trait Link {
    async fn send(&mut self, packet: &[u8]) -> io::Result<()>;
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Link for tokio::net::UdpSocket {
    async fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        tokio::net::UdpSocket::send(self, packet).await.map(drop)
    }
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::net::UdpSocket::recv(self, buf).await
    }
}

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

/// Drive `t` to completion over `link`.
pub(crate) async fn drive<L: Link>(
    t: &mut ReadTransfer,
    link: &mut L,
    timeout: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DriveError> {
    // One buffer for every DATA packet of the transfer.
    let mut out = Vec::with_capacity(4 + t.blksize());
    // ACKs are 4 bytes; anything longer than this is an ERROR we only log.
    let mut inbuf = [0u8; 516];
    let mut action = t.start();
    let mut deadline = Instant::now() + timeout;
    loop {
        match action {
            Action::SendOack => {
                link.send(t.oack_packet()).await?;
                deadline = Instant::now() + timeout;
            }
            Action::SendData { first, last } => {
                for i in first..=last {
                    t.write_data(i, &mut out);
                    link.send(&out).await?;
                }
                deadline = Instant::now() + timeout;
            }
            Action::Wait => {}
            Action::Done => return Ok(()),
            Action::Fail(e) => return Err(e.into()),
        }
        action = tokio::select! {
            r = timeout_at(deadline, link.recv(&mut inbuf)) => match r {
                Err(_elapsed) => t.on_timeout(),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(n)) => match Packet::parse(&inbuf[..n]) {
                    Ok(Packet::Ack { block }) => t.on_ack(block),
                    Ok(Packet::Error { code, message }) => t.on_error(code, &message),
                    // Anything else from our client is noise; the timer decides.
                    _ => Action::Wait,
                },
            },
            () = shutdown_signalled(shutdown) => return Err(DriveError::Shutdown),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, encode_ack};
    use bytes::Bytes;
    use tokio::sync::mpsc;

    /// Both ends of an in-memory link.
    struct ChanLink {
        tx: mpsc::UnboundedSender<Vec<u8>>,
        rx: mpsc::UnboundedReceiver<Vec<u8>>,
    }

    impl Link for ChanLink {
        async fn send(&mut self, p: &[u8]) -> io::Result<()> {
            self.tx
                .send(p.to_vec())
                .map_err(|_| io::ErrorKind::ConnectionRefused.into())
        }
        async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let p = self.rx.recv().await.ok_or(io::ErrorKind::ConnectionReset)?;
            buf[..p.len()].copy_from_slice(&p);
            Ok(p.len())
        }
    }

    fn pair() -> (ChanLink, ChanLink) {
        let (a_tx, b_rx) = mpsc::unbounded_channel();
        let (b_tx, a_rx) = mpsc::unbounded_channel();
        (
            ChanLink { tx: a_tx, rx: a_rx },
            ChanLink { tx: b_tx, rx: b_rx },
        )
    }

    fn block_of(p: &[u8]) -> u16 {
        match Packet::parse(p).unwrap() {
            Packet::Data { block, .. } => block,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out_after_retries() {
        let (mut server, mut client) = pair();
        let (_stx, mut srx) = watch::channel(false);
        let mut t = ReadTransfer::new(Bytes::from_static(b"abc"), 512, 1, None, 5);
        let start = Instant::now();
        let r = drive(&mut t, &mut server, Duration::from_secs(2), &mut srx).await;
        assert!(matches!(
            r,
            Err(DriveError::Transfer(TransferError::TimedOut {
                retries: 5,
                block: 1
            }))
        ));
        // First send + 5 retransmissions, each followed by a 2 s wait.
        assert_eq!(start.elapsed(), Duration::from_secs(12));
        let mut n = 0;
        while let Ok(p) = client.rx.try_recv() {
            assert_eq!(block_of(&p), 1);
            n += 1;
        }
        assert_eq!(n, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_ack_is_recovered_by_retransmission() {
        let (mut server, mut client) = pair();
        let (_stx, mut srx) = watch::channel(false);
        let data: Bytes = (0..40u8).collect::<Vec<_>>().into();
        let mut t = ReadTransfer::new(data, 10, 2, None, 5);
        let task = tokio::spawn(async move {
            let r = drive(&mut t, &mut server, Duration::from_secs(1), &mut srx).await;
            (r.is_ok(), Instant::now())
        });
        let start = Instant::now();
        let mut ack = Vec::new();
        // Window 1: blocks 1, 2. Drop the ACK.
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 1);
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 2);
        // The retransmission comes one timeout later.
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 2);
        encode_ack(&mut ack, 2);
        client.tx.send(ack.clone()).unwrap();
        // A duplicate ACK must not cause another window (Sorcerer's Apprentice).
        client.tx.send(ack.clone()).unwrap();
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 3);
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 4);
        encode_ack(&mut ack, 4);
        client.tx.send(ack.clone()).unwrap();
        assert_eq!(block_of(&client.rx.recv().await.unwrap()), 5); // empty final block
        encode_ack(&mut ack, 5);
        client.tx.send(ack.clone()).unwrap();
        let (ok, end) = task.await.unwrap();
        assert!(ok);
        assert_eq!(
            end - start,
            Duration::from_secs(1),
            "only one timeout was spent"
        );
        assert!(client.rx.try_recv().is_err(), "no extra packets");
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_acks_do_not_extend_the_timer() {
        let (mut server, mut client) = pair();
        let (_stx, mut srx) = watch::channel(false);
        let mut t = ReadTransfer::new(Bytes::from_static(&[1; 30]), 10, 1, None, 0);
        let task = tokio::spawn(async move {
            let r = drive(&mut t, &mut server, Duration::from_secs(1), &mut srx).await;
            (r.is_err(), Instant::now())
        });
        let start = Instant::now();
        client.rx.recv().await.unwrap();
        let mut ack = Vec::new();
        encode_ack(&mut ack, 0);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = client.tx.send(ack.clone());
        }
        let (failed, end) = task.await.unwrap();
        assert!(failed);
        assert_eq!(end - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_aborts() {
        let (mut server, _client) = pair();
        let (stx, mut srx) = watch::channel(false);
        let mut t = ReadTransfer::new(Bytes::from_static(b"abc"), 512, 1, None, 5);
        let task = tokio::spawn(async move {
            matches!(
                drive(&mut t, &mut server, Duration::from_secs(1), &mut srx).await,
                Err(DriveError::Shutdown)
            )
        });
        tokio::task::yield_now().await;
        stx.send(true).unwrap();
        assert!(task.await.unwrap());
    }
}
