//! The firmware's TFTP fetch of iPXE (RFC 1350, 512-byte blocks, no options, what a PXE ROM
//! falls back to): a read request, then each DATA block acknowledged until a short one. The
//! packets are kiln-tftp's own codec, seen from the client's side.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use kiln_tftp::options::Options;
use kiln_tftp::{Mode, Packet, Request, RequestKind};
use tokio::net::UdpSocket;

const BLOCK: usize = 512;
/// How long one block may take before the request or the last ACK is sent again, and how
/// many times (a PXE ROM's patience, roughly).
const WAIT: Duration = Duration::from_secs(2);
const TRIES: u32 = 4;
/// More than any iPXE binary: a server that never ends is cut off.
const MAX_BYTES: u64 = 16 << 20;

fn encode(p: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out);
    out
}

/// Fetches `file` from `server` from the address `local`; how many bytes came.
pub async fn fetch(local: Ipv4Addr, server: SocketAddr, file: &str) -> Result<u64, String> {
    let sock = UdpSocket::bind((local, 0))
        .await
        .map_err(|e| format!("TFTP: binding {local}: {e}"))?;
    let mut last = encode(&Packet::Request(Request {
        kind: RequestKind::Read,
        filename: file.into(),
        mode: Mode::Octet,
        options: Options::default(),
    }));
    let mut to = server;
    // The server answers from a port of its own (the transfer's id), learnt from block 1.
    let mut tid: Option<SocketAddr> = None;
    let (mut expected, mut total) = (1u16, 0u64);
    let mut buf = vec![0u8; 4 + BLOCK + 16];
    loop {
        let (n, from) = exchange(&sock, &last, to, tid, &mut buf)
            .await
            .map_err(|e| format!("TFTP {file} from {server}: {e}"))?;
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Data { block, data }) if block == expected && data.len() <= BLOCK => {
                (tid, to) = (Some(from), from);
                total += data.len() as u64;
                last = encode(&Packet::Ack { block });
                if data.len() < BLOCK {
                    let _ = sock.send_to(&last, to).await;
                    return Ok(total);
                }
                if total > MAX_BYTES {
                    return Err(format!("TFTP {file}: more than {MAX_BYTES} bytes"));
                }
                expected = expected.wrapping_add(1);
            }
            // A block sent again (our ACK was lost): the last ACK goes again.
            Ok(Packet::Data { .. }) => {}
            Ok(Packet::Error { code, message }) => {
                return Err(format!("TFTP {file}: error {code}: {message}"));
            }
            _ => return Err(format!("TFTP {file}: an unexpected packet from {from}")),
        }
    }
}

/// Sends `packet` (again after each wait) until the server (`tid`, once known) answers.
async fn exchange(
    sock: &UdpSocket,
    packet: &[u8],
    to: SocketAddr,
    tid: Option<SocketAddr>,
    buf: &mut [u8],
) -> Result<(usize, SocketAddr), String> {
    for _ in 0..TRIES {
        sock.send_to(packet, to)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(buf)).await {
                Ok(Ok(got)) if tid.is_none_or(|t| t == got.1) => return Ok(got),
                Ok(Ok(_)) => continue, // not this transfer's server
                Ok(Err(e)) => return Err(format!("receiving: {e}")),
                Err(_) => break,
            }
        }
    }
    Err(format!("no answer after {TRIES} tries"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    use kiln_model::event::NullSink;
    use kiln_tftp::{TftpConfig, TftpServer};

    /// Against Kiln's own TFTP server on loopback: every byte of a file of a few blocks, and
    /// a missing file's error.
    #[tokio::test]
    async fn fetches_a_file_from_kilns_tftp_server() {
        let root = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..1300u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.path().join("undionly.kpxe"), &body).unwrap();
        let cfg = TftpConfig::new("127.0.0.1:0".parse().unwrap(), root.path());
        let server = TftpServer::bind(cfg, HashMap::new(), Arc::new(NullSink))
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (_stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(server.serve(rx));
        let local = Ipv4Addr::LOCALHOST;
        assert_eq!(fetch(local, addr, "undionly.kpxe").await, Ok(1300));
        let missing = fetch(local, addr, "nope.efi").await.unwrap_err();
        assert!(missing.contains("error 1"), "{missing}");
    }
}
