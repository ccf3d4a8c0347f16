//! The state machine of one read transfer, without sockets or clocks.
//!
//! The caller feeds it events (an ACK arrived, the retransmission timer
//! fired) and gets back an [`Action`]. Whenever the action sends something the
//! caller (re)starts the timer; on [`Action::Wait`] the timer keeps running, so
//! a client that chatters duplicate ACKs cannot postpone a retransmission
//! forever.
//!
//! Blocks are numbered internally with a `u64` index starting at 1; on the
//! wire the number is the low 16 bits, so it wraps 65535 → 0 like tftp-hpa,
//! iPXE and EDK2 expect.

use bytes::Bytes;

use crate::packet::encode_data;

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the OACK ([`ReadTransfer::oack_packet`]) and restart the timer.
    SendOack,
    /// Send DATA for blocks `first..=last` ([`ReadTransfer::write_data`]) and restart the timer.
    SendData { first: u64, last: u64 },
    /// Nothing to send; keep waiting with the timer as it is.
    Wait,
    /// The client acknowledged the last block.
    Done,
    /// Give up.
    Fail(TransferError),
}

/// Why a transfer ended without the client having the whole file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// no ACK after all retries
    #[error("timed out after {retries} retries waiting for ACK of block {block}")]
    TimedOut { retries: u32, block: u64 },
    /// the client sent an ERROR packet
    #[error("client error {code}: {message}")]
    Peer { code: u16, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// OACK sent, waiting for ACK 0.
    Negotiating,
    Sending,
    Finished,
}

/// One RRQ being served.
#[derive(Debug)]
pub struct ReadTransfer {
    data: Bytes,
    blksize: usize,
    window: u64,
    /// Number of DATA packets: always `len / blksize + 1`, the last one
    /// shorter than `blksize` (possibly empty) so the client knows it is last.
    total: u64,
    /// Highest block the client has acknowledged (0: none yet).
    acked: u64,
    /// Highest block sent so far.
    sent: u64,
    state: State,
    oack: Option<Vec<u8>>,
    retries: u32,
    retries_left: u32,
}

impl ReadTransfer {
    /// `oack`: the encoded OACK packet when options were accepted (then DATA 1
    /// waits for ACK 0). `windowsize` is capped at 32768 so a 16-bit ACK is
    /// never ambiguous.
    pub fn new(
        data: Bytes,
        blksize: u16,
        windowsize: u16,
        oack: Option<Vec<u8>>,
        retries: u32,
    ) -> Self {
        let blksize = usize::from(blksize.max(1));
        let total = data.len() as u64 / blksize as u64 + 1;
        ReadTransfer {
            data,
            blksize,
            window: u64::from(windowsize.clamp(1, crate::options::MAX_WINDOWSIZE)),
            total,
            acked: 0,
            sent: 0,
            state: State::Sending,
            oack,
            retries,
            retries_left: retries,
        }
    }

    /// The first action: send the OACK, or the first window.
    pub fn start(&mut self) -> Action {
        if self.oack.is_some() {
            self.state = State::Negotiating;
            Action::SendOack
        } else {
            self.send_window()
        }
    }

    /// An ACK with wire block number `block` arrived.
    pub fn on_ack(&mut self, block: u16) -> Action {
        match self.state {
            State::Finished => Action::Done,
            State::Negotiating if block == 0 => {
                self.state = State::Sending;
                self.retries_left = self.retries;
                self.send_window()
            }
            State::Negotiating => Action::Wait,
            State::Sending => {
                // The ACK's distance ahead of what was acked, in 16-bit space.
                // 0 is a duplicate; beyond what we sent it is stale or bogus.
                // Neither triggers a retransmission (Sorcerer's Apprentice).
                let ahead = u64::from(block.wrapping_sub(self.acked as u16));
                if ahead == 0 || self.acked + ahead > self.sent {
                    return Action::Wait;
                }
                // RFC 7440: an ACK inside the window means the client has
                // everything up to it; continue right after it.
                self.acked += ahead;
                self.retries_left = self.retries;
                if self.acked == self.total {
                    self.state = State::Finished;
                    Action::Done
                } else {
                    self.send_window()
                }
            }
        }
    }

    /// The retransmission timer fired.
    pub fn on_timeout(&mut self) -> Action {
        if self.state == State::Finished {
            return Action::Done;
        }
        if self.retries_left == 0 {
            self.state = State::Finished;
            return Action::Fail(TransferError::TimedOut {
                retries: self.retries,
                block: self.acked + 1,
            });
        }
        self.retries_left -= 1;
        match self.state {
            State::Negotiating => Action::SendOack,
            _ => self.send_window(),
        }
    }

    /// The client sent an ERROR packet.
    pub fn on_error(&mut self, code: u16, message: &str) -> Action {
        self.state = State::Finished;
        Action::Fail(TransferError::Peer {
            code,
            message: message.to_owned(),
        })
    }

    fn send_window(&mut self) -> Action {
        let first = self.acked + 1;
        let last = (self.acked + self.window).min(self.total);
        self.sent = last;
        Action::SendData { first, last }
    }

    /// The payload of block `index` (1-based).
    pub fn block(&self, index: u64) -> &[u8] {
        let len = self.data.len() as u64;
        let start = (index.saturating_sub(1))
            .saturating_mul(self.blksize as u64)
            .min(len);
        let end = start.saturating_add(self.blksize as u64).min(len);
        &self.data[start as usize..end as usize]
    }

    /// Encode DATA for block `index` into `out` (reused across calls).
    pub fn write_data(&self, index: u64, out: &mut Vec<u8>) {
        encode_data(out, index as u16, self.block(index));
    }

    pub fn oack_packet(&self) -> &[u8] {
        self.oack.as_deref().unwrap_or(&[])
    }

    pub fn blksize(&self) -> usize {
        self.blksize
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Payload bytes the client has acknowledged.
    pub fn acked_bytes(&self) -> u64 {
        self.acked
            .saturating_mul(self.blksize as u64)
            .min(self.len())
    }

    /// Number of DATA packets in the whole transfer.
    pub fn total_blocks(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    fn file(n: usize) -> Bytes {
        (0..n)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    fn send(first: u64, last: u64) -> Action {
        Action::SendData { first, last }
    }

    /// Run a perfect client: ACK the end of each window, collect the bytes.
    fn drain(t: &mut ReadTransfer) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = Vec::new();
        let mut action = t.start();
        loop {
            match action {
                Action::SendOack => action = t.on_ack(0),
                Action::SendData { first, last } => {
                    for i in first..=last {
                        t.write_data(i, &mut buf);
                        let Packet::Data { block, data } = Packet::parse(&buf).unwrap() else {
                            panic!()
                        };
                        assert_eq!(block, i as u16);
                        got.extend_from_slice(data);
                    }
                    action = t.on_ack(last as u16);
                }
                Action::Done => return got,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let mut t = ReadTransfer::new(Bytes::new(), 512, 1, None, 5);
        assert_eq!(t.start(), send(1, 1));
        assert_eq!(t.block(1), b"");
        assert_eq!(t.on_ack(1), Action::Done);
    }

    #[test]
    fn exact_multiple_ends_with_empty_block() {
        let f = file(1024);
        let mut t = ReadTransfer::new(f.clone(), 512, 1, None, 5);
        assert_eq!(t.total_blocks(), 3);
        assert_eq!(t.start(), send(1, 1));
        assert_eq!(t.on_ack(1), send(2, 2));
        assert_eq!(t.on_ack(2), send(3, 3));
        assert_eq!(t.block(3), b"");
        assert_eq!(t.on_ack(3), Action::Done);
        let mut t = ReadTransfer::new(f.clone(), 512, 1, None, 5);
        assert_eq!(drain(&mut t), f);
    }

    #[test]
    fn oack_waits_for_ack_zero() {
        let f = file(3000);
        let mut t = ReadTransfer::new(f.clone(), 1468, 4, Some(vec![0, 6]), 5);
        assert_eq!(t.start(), Action::SendOack);
        assert_eq!(
            t.on_ack(1),
            Action::Wait,
            "nothing sent yet: ACK 1 is bogus"
        );
        assert_eq!(t.on_timeout(), Action::SendOack);
        assert_eq!(t.on_ack(0), send(1, 3));
        assert_eq!(t.on_ack(3), Action::Done);
        let mut t = ReadTransfer::new(f.clone(), 1468, 4, Some(vec![0, 6]), 5);
        assert_eq!(drain(&mut t), f);
    }

    #[test]
    fn window_slides_on_full_and_partial_ack() {
        let mut t = ReadTransfer::new(file(100 * 10 + 5), 10, 4, None, 5);
        assert_eq!(t.total_blocks(), 101);
        assert_eq!(t.start(), send(1, 4));
        assert_eq!(t.on_ack(4), send(5, 8));
        // Client lost block 7: it ACKs 6, we continue from 7 (RFC 7440).
        assert_eq!(t.on_ack(6), send(7, 10));
        // A late ACK for an old block, and a duplicate: ignored, no resend.
        assert_eq!(t.on_ack(5), Action::Wait);
        assert_eq!(t.on_ack(6), Action::Wait);
        // An ACK for a block we never sent: ignored.
        assert_eq!(t.on_ack(50), Action::Wait);
        assert_eq!(t.on_ack(10), send(11, 14));
    }

    #[test]
    fn last_window_is_short() {
        let mut t = ReadTransfer::new(file(25), 10, 8, None, 5);
        assert_eq!(t.start(), send(1, 3));
        assert_eq!(t.block(3).len(), 5);
        assert_eq!(t.on_ack(2), send(3, 3));
        assert_eq!(t.on_ack(3), Action::Done);
        assert_eq!(t.acked_bytes(), 25);
    }

    #[test]
    fn timeout_resends_window_then_fails() {
        let mut t = ReadTransfer::new(file(1000), 10, 4, None, 2);
        assert_eq!(t.start(), send(1, 4));
        assert_eq!(t.on_ack(2), send(3, 6));
        assert_eq!(t.on_timeout(), send(3, 6));
        assert_eq!(t.on_timeout(), send(3, 6));
        assert_eq!(
            t.on_timeout(),
            Action::Fail(TransferError::TimedOut {
                retries: 2,
                block: 3
            })
        );
        assert_eq!(t.acked_bytes(), 20);
    }

    #[test]
    fn progress_resets_retries() {
        let mut t = ReadTransfer::new(file(1000), 10, 1, None, 1);
        assert_eq!(t.start(), send(1, 1));
        assert_eq!(t.on_timeout(), send(1, 1));
        assert_eq!(t.on_ack(1), send(2, 2));
        assert_eq!(t.on_timeout(), send(2, 2));
        assert!(matches!(t.on_timeout(), Action::Fail(_)));
    }

    #[test]
    fn client_error_fails() {
        let mut t = ReadTransfer::new(file(10), 512, 1, Some(vec![0, 6]), 5);
        assert_eq!(t.start(), Action::SendOack);
        assert_eq!(
            t.on_error(8, "no"),
            Action::Fail(TransferError::Peer {
                code: 8,
                message: "no".into()
            })
        );
    }

    #[test]
    fn block_numbers_wrap_to_zero() {
        // 70000 blocks of 8 bytes: block 65536 goes out as 0.
        let f = file(70_000 * 8 + 3);
        let mut t = ReadTransfer::new(f.clone(), 8, 1, None, 5);
        assert_eq!(drain(&mut t), f);

        let mut t = ReadTransfer::new(f.clone(), 8, 1, None, 5);
        let mut buf = Vec::new();
        t.acked = 65534;
        t.sent = 65535;
        assert_eq!(t.on_ack(65535), send(65536, 65536));
        t.write_data(65536, &mut buf);
        assert_eq!(&buf[..4], &[0, 3, 0, 0]);
        assert_eq!(
            t.on_ack(65535),
            Action::Wait,
            "duplicate just before the wrap"
        );
        assert_eq!(t.on_ack(0), send(65537, 65537));
        t.write_data(65537, &mut buf);
        assert_eq!(&buf[..4], &[0, 3, 0, 1]);
    }

    #[test]
    fn windows_across_the_wrap() {
        let f = file(70_000 * 8);
        for w in [3, 16, 64, 1000] {
            let mut t = ReadTransfer::new(f.clone(), 8, w, Some(vec![0, 6]), 5);
            assert_eq!(drain(&mut t), f, "windowsize {w}");
        }
        let mut t = ReadTransfer::new(f.clone(), 8, 16, None, 5);
        t.acked = 65530;
        t.sent = 65530;
        assert_eq!(t.send_window(), send(65531, 65546));
        // Partial ACK after the wrap (wire 3 = index 65539).
        assert_eq!(t.on_ack(3), send(65540, 65555));
        // A stale ACK from before the wrap is ignored.
        assert_eq!(t.on_ack(65533), Action::Wait);
    }

    #[test]
    fn stale_ack_is_not_mistaken_with_huge_window() {
        // windowsize is capped at 32768, so an ACK one behind is never
        // read as the far end of the window.
        let mut t = ReadTransfer::new(file(200_000), 1, u16::MAX, None, 5);
        assert_eq!(t.start(), send(1, 32768));
        assert_eq!(t.on_ack(32768), send(32769, 65536));
        assert_eq!(t.on_ack(32767), Action::Wait);
    }
}
