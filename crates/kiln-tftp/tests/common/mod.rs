//! Shared by the integration tests: a small TFTP client and test data.
#![allow(dead_code)] // each test crate uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use kiln_tftp::packet::{encode_ack, encode_request};
use kiln_tftp::{Mode, Options, Packet, Request, RequestKind};
use tokio::net::UdpSocket;
use tokio::time::timeout;

pub const UPPER_BOUND: Duration = Duration::from_secs(60);

/// Deterministic pseudo-random bytes (xorshift), so offsets are distinguishable.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Debug)]
pub struct Got {
    pub data: Vec<u8>,
    pub oack: Option<Options>,
    /// DATA packets that were not the next expected block (retransmissions).
    pub out_of_order: u64,
}

#[derive(Debug, PartialEq)]
pub enum ClientError {
    Tftp(u16, String),
    Protocol(String),
}

/// A minimal RFC 1350/2347/7440 client. `drop_ack(n)` is asked before the
/// n-th non-final ACK; returning true "loses" it.
pub async fn get(
    server: SocketAddr,
    name: &str,
    options: Options,
    drop_ack: impl FnMut(u64) -> bool,
) -> Result<Got, ClientError> {
    get_with(server, name, options, drop_ack, Duration::ZERO).await
}

/// [`get`], holding each ACK back for `ack_delay` to stand in for a round
/// trip where netem is unavailable. The wait blocks the thread on purpose:
/// tokio timers have millisecond granularity.
pub async fn get_with(
    server: SocketAddr,
    name: &str,
    options: Options,
    mut drop_ack: impl FnMut(u64) -> bool,
    ack_delay: Duration,
) -> Result<Got, ClientError> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    let req = Request {
        kind: RequestKind::Read,
        filename: name.into(),
        mode: Mode::Octet,
        options: options.clone(),
    };
    encode_request(&mut out, &req);
    sock.send_to(&out, server).await.unwrap();

    let mut blksize = 512usize;
    let mut window = 1u64;
    let mut oack = None;
    let mut tid: Option<SocketAddr> = None;
    let mut data = Vec::new();
    let mut expected: u64 = 1;
    let mut in_window = 0u64;
    let mut acks = 0u64;
    let mut out_of_order = 0;
    loop {
        let (n, from) = timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .map_err(|_| ClientError::Protocol("client timed out".into()))?
            .unwrap();
        match tid {
            None => {
                assert_ne!(from, server, "replies must come from a new TID");
                tid = Some(from);
            }
            Some(t) if t != from => continue,
            Some(_) => {}
        }
        let peer = tid.unwrap();
        match Packet::parse(&buf[..n]).map_err(|e| ClientError::Protocol(e.to_string()))? {
            Packet::Error { code, message } => return Err(ClientError::Tftp(code, message)),
            Packet::Oack(o) if expected == 1 => {
                // A repeated OACK means our ACK 0 was lost or slow: ACK again.
                blksize = o.blksize.map_or(512, usize::from);
                window = o.windowsize.map_or(1, u64::from);
                oack = Some(o);
                if !ack_delay.is_zero() {
                    std::thread::sleep(ack_delay);
                }
                encode_ack(&mut out, 0);
                sock.send_to(&out, peer).await.unwrap();
            }
            Packet::Data {
                block,
                data: payload,
            } => {
                if block != expected as u16 {
                    // Gap or retransmission: re-ACK the last in-order block.
                    out_of_order += 1;
                    in_window = 0;
                    encode_ack(&mut out, (expected - 1) as u16);
                    sock.send_to(&out, peer).await.unwrap();
                    continue;
                }
                data.extend_from_slice(payload);
                expected += 1;
                in_window += 1;
                let last = payload.len() < blksize;
                if last || in_window == window {
                    in_window = 0;
                    acks += 1;
                    if !last && drop_ack(acks) {
                        continue;
                    }
                    if !ack_delay.is_zero() {
                        std::thread::sleep(ack_delay);
                    }
                    encode_ack(&mut out, block);
                    sock.send_to(&out, peer).await.unwrap();
                }
                if last {
                    return Ok(Got {
                        data,
                        oack,
                        out_of_order,
                    });
                }
            }
            other => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }
}

pub async fn get_ok(server: SocketAddr, name: &str, options: Options) -> Got {
    timeout(UPPER_BOUND, get(server, name, options, |_| false))
        .await
        .expect("in time")
        .expect("transfer")
}
