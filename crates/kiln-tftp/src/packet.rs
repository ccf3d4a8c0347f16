//! TFTP wire format: RFC 1350 packets plus the RFC 2347 option extension (OACK).
//!
//! Parsing takes `&[u8]` and never panics: every index is checked, every
//! string is bounded by the datagram. Encoding writes into a caller-owned
//! `Vec<u8>` so the hot path (DATA) reuses one buffer for a whole transfer.

use crate::options::Options;

/// Largest block size any RFC allows (RFC 2348: 65464 = 65535 − 20 (IP) − 8 (UDP) − 4 + slack).
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size when none is negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Why a datagram is not a TFTP packet we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// packet shorter than its fixed header
    #[error("packet too short")]
    TooShort,
    /// unknown opcode
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// not a read or write request
    #[error("not a request (opcode {0})")]
    NotARequest(u16),
    /// request has no mode field
    #[error("request has no mode")]
    MissingMode,
    /// file name is not valid UTF-8
    #[error("file name is not UTF-8")]
    FilenameNotUtf8,
    /// transfer mode is not netascii, octet or mail
    #[error("unknown transfer mode")]
    UnknownMode,
}

/// Transfer mode of a request.
///
/// We serve `netascii` exactly like `octet` (no CR/LF translation): the files
/// a provisioning server hands out are binaries, and netascii clients are rare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Netascii,
    Octet,
    /// Obsolete (RFC 1350 says it should not be used); parsed so we can refuse it.
    Mail,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Read,
    Write,
}

/// A read (RRQ) or write (WRQ) request with its RFC 2347 options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub filename: String,
    pub mode: Mode,
    pub options: Options,
}

/// TFTP error codes (RFC 1350, 8 from RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

/// Any TFTP packet. `Data` borrows its payload from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Request(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: u16, message: String },
    Oack(Options),
}

impl<'a> Packet<'a> {
    /// Parse one datagram. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let (op, body) = split_u16(bytes).ok_or(PacketError::TooShort)?;
        match op {
            OP_RRQ => parse_request_body(RequestKind::Read, body).map(Packet::Request),
            OP_WRQ => parse_request_body(RequestKind::Write, body).map(Packet::Request),
            OP_DATA => {
                let (block, data) = split_u16(body).ok_or(PacketError::TooShort)?;
                Ok(Packet::Data { block, data })
            }
            OP_ACK => {
                // Trailing bytes after the block number are ignored (some stacks pad).
                let (block, _) = split_u16(body).ok_or(PacketError::TooShort)?;
                Ok(Packet::Ack { block })
            }
            OP_ERROR => {
                let (code, rest) = split_u16(body).ok_or(PacketError::TooShort)?;
                let msg = rest.split(|&b| b == 0).next().unwrap_or(&[]);
                Ok(Packet::Error {
                    code,
                    message: String::from_utf8_lossy(msg).into_owned(),
                })
            }
            OP_OACK => Ok(Packet::Oack(Options::parse_pairs(
                &mut body.split(|&b| b == 0),
            ))),
            other => Err(PacketError::UnknownOpcode(other)),
        }
    }

    /// Encode into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Request(r) => encode_request(out, r),
            Packet::Data { block, data } => encode_data(out, *block, data),
            Packet::Ack { block } => encode_ack(out, *block),
            Packet::Error { code, message } => encode_error_raw(out, *code, message),
            Packet::Oack(o) => encode_oack(out, o),
        }
    }
}

/// Parse a datagram that arrived on the server port: only RRQ and WRQ are
/// requests. This is the fuzzing entry point; it never panics.
pub fn parse_request(bytes: &[u8]) -> Result<Request, PacketError> {
    let (op, body) = split_u16(bytes).ok_or(PacketError::TooShort)?;
    match op {
        OP_RRQ => parse_request_body(RequestKind::Read, body),
        OP_WRQ => parse_request_body(RequestKind::Write, body),
        OP_DATA | OP_ACK | OP_ERROR | OP_OACK => Err(PacketError::NotARequest(op)),
        other => Err(PacketError::UnknownOpcode(other)),
    }
}

fn split_u16(b: &[u8]) -> Option<(u16, &[u8])> {
    match b {
        [hi, lo, rest @ ..] => Some((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => None,
    }
}

fn parse_request_body(kind: RequestKind, body: &[u8]) -> Result<Request, PacketError> {
    // Fields are NUL-terminated; we also accept an unterminated last field and
    // trailing NUL padding, both seen from real PXE ROMs.
    let mut fields = body.split(|&b| b == 0);
    let name = fields.next().unwrap_or(&[]);
    let filename = std::str::from_utf8(name)
        .map_err(|_| PacketError::FilenameNotUtf8)?
        .to_owned();
    let mode = match fields.next() {
        None => return Err(PacketError::MissingMode),
        Some(m) if m.eq_ignore_ascii_case(b"octet") => Mode::Octet,
        Some(m) if m.eq_ignore_ascii_case(b"netascii") => Mode::Netascii,
        Some(m) if m.eq_ignore_ascii_case(b"mail") => Mode::Mail,
        Some(_) => return Err(PacketError::UnknownMode),
    };
    let options = Options::parse_pairs(&mut fields);
    Ok(Request {
        kind,
        filename,
        mode,
        options,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A NUL inside would end the field early on the other side: drop it.
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

pub fn encode_request(out: &mut Vec<u8>, r: &Request) {
    out.clear();
    let op = match r.kind {
        RequestKind::Read => OP_RRQ,
        RequestKind::Write => OP_WRQ,
    };
    out.extend_from_slice(&op.to_be_bytes());
    put_str(out, &r.filename);
    put_str(out, r.mode.as_str());
    r.options.encode_pairs(out);
}

/// DATA: the hot path. `out` keeps its capacity between calls, so a transfer
/// allocates once.
pub fn encode_data(out: &mut Vec<u8>, block: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

pub fn encode_ack(out: &mut Vec<u8>, block: u16) {
    out.clear();
    out.extend_from_slice(&OP_ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    encode_error_raw(out, code as u16, message)
}

fn encode_error_raw(out: &mut Vec<u8>, code: u16, message: &str) {
    out.clear();
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    put_str(out, message);
}

pub fn encode_oack(out: &mut Vec<u8>, o: &Options) {
    out.clear();
    out.extend_from_slice(&OP_OACK.to_be_bytes());
    o.encode_pairs(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 1];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn plain_rrq() {
        let r = parse_request(&rrq(b"undionly.kpxe\0octet\0")).unwrap();
        assert_eq!(r.kind, RequestKind::Read);
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.options, Options::default());
    }

    #[test]
    fn rrq_with_options_case_insensitive_and_unknown_ignored() {
        let r = parse_request(&rrq(
            b"f\0NetASCII\0BLKSIZE\x001468\0tsize\x000\0foo\0bar\0WindowSize\x0016\0timeout\x003\0",
        ))
        .unwrap();
        assert_eq!(r.mode, Mode::Netascii);
        assert_eq!(r.options.blksize, Some(1468));
        assert_eq!(r.options.tsize, Some(0));
        assert_eq!(r.options.windowsize, Some(16));
        assert_eq!(r.options.timeout, Some(3));
    }

    #[test]
    fn bad_option_values_are_ignored() {
        let r = parse_request(&rrq(
            b"f\0octet\0blksize\x007\0timeout\x000\0windowsize\x000\0tsize\0x\0",
        ))
        .unwrap();
        assert_eq!(r.options, Options::default());
        let r = parse_request(&rrq(b"f\0octet\0timeout\x00256\0blksize\0\0")).unwrap();
        assert_eq!(r.options, Options::default());
    }

    #[test]
    fn oversized_values_clamp_to_protocol_limits() {
        let r = parse_request(&rrq(
            b"f\0octet\0blksize\x00999999999999999999999999\0windowsize\x0070000\0",
        ))
        .unwrap();
        assert_eq!(r.options.blksize, Some(MAX_BLKSIZE));
        assert_eq!(r.options.windowsize, Some(u16::MAX));
    }

    #[test]
    fn lenient_framing() {
        // Unterminated mode, trailing padding.
        assert_eq!(parse_request(&rrq(b"f\0octet")).unwrap().mode, Mode::Octet);
        let r = parse_request(&rrq(b"f\0octet\0blksize\x001024\0\0\0\0")).unwrap();
        assert_eq!(r.options.blksize, Some(1024));
    }

    #[test]
    fn request_errors() {
        assert_eq!(parse_request(&[]), Err(PacketError::TooShort));
        assert_eq!(parse_request(&[0]), Err(PacketError::TooShort));
        assert_eq!(parse_request(&[0, 9]), Err(PacketError::UnknownOpcode(9)));
        assert_eq!(
            parse_request(&[0, 4, 0, 1]),
            Err(PacketError::NotARequest(4))
        );
        assert_eq!(parse_request(&rrq(b"f")), Err(PacketError::MissingMode));
        assert_eq!(
            parse_request(&rrq(b"f\0binary\0")),
            Err(PacketError::UnknownMode)
        );
        assert_eq!(
            parse_request(&rrq(b"\xff\0octet\0")),
            Err(PacketError::FilenameNotUtf8)
        );
    }

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        let opts = Options {
            blksize: Some(1468),
            tsize: Some(12345),
            timeout: Some(2),
            windowsize: Some(4),
        };
        let packets = [
            Packet::Request(Request {
                kind: RequestKind::Write,
                filename: "a/b".into(),
                mode: Mode::Octet,
                options: opts.clone(),
            }),
            Packet::Data {
                block: 65535,
                data: b"hello",
            },
            Packet::Data {
                block: 0,
                data: b"",
            },
            Packet::Ack { block: 7 },
            Packet::Error {
                code: 1,
                message: "File not found".into(),
            },
            Packet::Oack(opts),
        ];
        for p in packets {
            p.encode(&mut buf);
            assert_eq!(Packet::parse(&buf).unwrap(), p);
        }
    }

    #[test]
    fn data_wire_format() {
        let mut buf = Vec::new();
        encode_data(&mut buf, 0x0102, b"xy");
        assert_eq!(buf, b"\0\x03\x01\x02xy");
        encode_error(&mut buf, ErrorCode::AccessViolation, "no");
        assert_eq!(buf, b"\0\x05\0\x02no\0");
    }

    #[test]
    fn never_panics_on_short_or_odd_input() {
        // Cheap stand-in for the fuzz target: every prefix of some packets,
        // and all two- and three-byte inputs.
        let samples: [&[u8]; 4] = [
            b"\0\x01f\0octet\0blksize\x001468\0tsize\x000\0",
            b"\0\x03\0\x01data",
            b"\0\x05\0\x01msg",
            b"\0\x06blksize\x00512\0",
        ];
        for s in samples {
            for n in 0..=s.len() {
                let _ = Packet::parse(&s[..n]);
                let _ = parse_request(&s[..n]);
            }
        }
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = Packet::parse(&[a, b]);
                let _ = Packet::parse(&[a, b, 0]);
                let _ = parse_request(&[0, 1, a, b]);
            }
        }
    }
}
