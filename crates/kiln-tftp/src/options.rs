//! RFC 2347 options and their negotiation: blksize (RFC 2348), tsize and
//! timeout (RFC 2349), windowsize (RFC 7440).
//!
//! Names are case-insensitive. Unknown options are dropped (never echoed:
//! echoing one would tell the client we implement it). A value out of range
//! is dropped too, which the RFCs allow, except that a block or window size
//! above the protocol maximum is clamped: the client said it can take that
//! much, so it can take less.

use std::time::Duration;

use crate::packet::{DEFAULT_BLKSIZE, MAX_BLKSIZE};

/// Windows larger than this make a 16-bit ACK ambiguous (a stale ACK could
/// look like one for the far end of the window), so we never go above it.
pub const MAX_WINDOWSIZE: u16 = 32768;

/// Options as they appear in a request or an OACK (already range-checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// 8..=65464
    pub blksize: Option<u16>,
    /// Total size in bytes; 0 in a read request means "tell me".
    pub tsize: Option<u64>,
    /// Retransmission timeout in seconds, 1..=255.
    pub timeout: Option<u8>,
    /// Blocks per window, 1..=65535.
    pub windowsize: Option<u16>,
}

impl Options {
    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }

    /// Consume `name, value` field pairs. The first occurrence of an option wins.
    pub(crate) fn parse_pairs<'a>(fields: &mut impl Iterator<Item = &'a [u8]>) -> Options {
        let mut o = Options::default();
        while let Some(name) = fields.next() {
            if name.is_empty() {
                continue; // NUL padding
            }
            let Some(value) = fields.next() else { break };
            let Some(v) = parse_decimal(value) else {
                continue;
            };
            if name.eq_ignore_ascii_case(b"blksize") {
                if o.blksize.is_none() && v >= 8 {
                    o.blksize = Some(v.min(u64::from(MAX_BLKSIZE)) as u16);
                }
            } else if name.eq_ignore_ascii_case(b"tsize") {
                o.tsize = o.tsize.or(Some(v));
            } else if name.eq_ignore_ascii_case(b"timeout") {
                if o.timeout.is_none() && (1..=255).contains(&v) {
                    o.timeout = Some(v as u8);
                }
            } else if name.eq_ignore_ascii_case(b"windowsize") && o.windowsize.is_none() && v >= 1 {
                o.windowsize = Some(v.min(u64::from(u16::MAX)) as u16);
            }
        }
        o
    }

    pub(crate) fn encode_pairs(&self, out: &mut Vec<u8>) {
        let mut put = |name: &str, v: u64| {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            // u64 formatting without allocating.
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            let mut n = v;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&digits[i..]);
            out.push(0);
        };
        if let Some(v) = self.blksize {
            put("blksize", v.into());
        }
        if let Some(v) = self.tsize {
            put("tsize", v);
        }
        if let Some(v) = self.timeout {
            put("timeout", v.into());
        }
        if let Some(v) = self.windowsize {
            put("windowsize", v.into());
        }
    }
}

/// ASCII digits only; saturates instead of overflowing.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// What the server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    /// Used when the client does not ask for a timeout.
    pub default_timeout: Duration,
    /// The longest timeout a client may ask for; a longer one is declined (left out of the
    /// OACK, the default used), so no client holds a transfer slot for minutes per block.
    pub max_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 1468 = 1500 (Ethernet MTU) − 20 (IP) − 8 (UDP) − 4 (TFTP header).
        Limits {
            max_blksize: 1468,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(5),
        }
    }
}

/// The parameters a transfer runs with, and the OACK to send (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// `Some` when at least one option was accepted: send it, wait for ACK 0.
    pub oack: Option<Options>,
}

/// Decide the transfer parameters for a read of a `file_size`-byte file.
pub fn negotiate(req: &Options, limits: &Limits, file_size: u64) -> Negotiated {
    let max_blk = limits.max_blksize.clamp(8, MAX_BLKSIZE);
    let max_win = limits.max_windowsize.clamp(1, MAX_WINDOWSIZE);
    let reply = Options {
        blksize: req.blksize.map(|b| b.min(max_blk)),
        // A read request's tsize is a question; the answer is the file size.
        tsize: req.tsize.map(|_| file_size),
        // RFC 2349: the server may not change the timeout, only accept or decline it.
        timeout: req
            .timeout
            .filter(|t| Duration::from_secs((*t).into()) <= limits.max_timeout),
        windowsize: req.windowsize.map(|w| w.min(max_win)),
    };
    Negotiated {
        blksize: reply.blksize.unwrap_or(DEFAULT_BLKSIZE),
        windowsize: reply.windowsize.unwrap_or(1),
        timeout: reply
            .timeout
            .map_or(limits.default_timeout, |t| Duration::from_secs(t.into())),
        oack: (!reply.is_empty()).then_some(reply),
    }
}

#[cfg(test)]
mod timeout_ceiling_tests {
    use super::*;

    #[test]
    fn a_timeout_above_the_ceiling_is_declined_not_changed() {
        let limits = Limits::default();
        let ask = |t: u8| Options {
            timeout: Some(t),
            ..Options::default()
        };
        let ok = negotiate(&ask(3), &limits, 10);
        assert_eq!(ok.timeout, Duration::from_secs(3));
        assert_eq!(ok.oack.and_then(|o| o.timeout), Some(3));
        let long = negotiate(&ask(255), &limits, 10);
        assert_eq!(long.timeout, limits.default_timeout);
        assert_eq!(
            long.oack, None,
            "declined: nothing else was asked, so no OACK"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_options_no_oack() {
        let n = negotiate(&Options::default(), &Limits::default(), 100);
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert_eq!(n.oack, None);
    }

    #[test]
    fn clamps_to_limits_and_answers_tsize() {
        let req = Options {
            blksize: Some(65464),
            tsize: Some(0),
            timeout: Some(3),
            windowsize: Some(1000),
        };
        let n = negotiate(&req, &Limits::default(), 74213);
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.windowsize, 64);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.oack,
            Some(Options {
                blksize: Some(1468),
                tsize: Some(74213),
                timeout: Some(3),
                windowsize: Some(64)
            })
        );
    }

    #[test]
    fn smaller_requests_are_honoured() {
        let req = Options {
            blksize: Some(1024),
            windowsize: Some(4),
            ..Options::default()
        };
        let n = negotiate(&req, &Limits::default(), 1);
        assert_eq!((n.blksize, n.windowsize), (1024, 4));
        assert_eq!(n.oack.unwrap().tsize, None);
    }

    #[test]
    fn absurd_limits_are_tamed() {
        let limits = Limits {
            max_blksize: 2,
            max_windowsize: u16::MAX,
            ..Limits::default()
        };
        let req = Options {
            blksize: Some(512),
            windowsize: Some(u16::MAX),
            ..Options::default()
        };
        let n = negotiate(&req, &limits, 1);
        assert_eq!((n.blksize, n.windowsize), (8, MAX_WINDOWSIZE));
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1468"), Some(1468));
        assert_eq!(parse_decimal(b"99999999999999999999999"), Some(u64::MAX));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b" 1"), None);
    }
}
