//! Framing: the RMCP header (ASF/DMTF), the IPMI v1.5 and v2.0 (RMCP+) session wrappers
//! (IPMI v2.0 §13.6, §13.8), and the IPMI LAN message inside them (§13.8, table 13-4).

use crate::Error;
use crate::crypto::SessionKeys;

/// RMCP version 1.0, reserved, sequence 0xFF (no RMCP ACK), class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
/// Session auth type "RMCP+" (format = IPMI v2.0).
pub const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// Session auth type "none" (IPMI v1.5 framing, used for the pre-session capability query).
pub const AUTH_TYPE_NONE: u8 = 0x00;
/// The "next header" byte of the integrity trailer (always 0x07).
pub const NEXT_HEADER: u8 = 0x07;

/// BMC responder address and our (remote console software ID) requester address.
pub const BMC_ADDR: u8 = 0x20;
pub const CONSOLE_ADDR: u8 = 0x81;

/// RMCP+ payload types (table 13-16), without the encrypted/authenticated bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Ipmi,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
    Other(u8),
}

impl PayloadType {
    pub fn code(self) -> u8 {
        match self {
            PayloadType::Ipmi => 0x00,
            PayloadType::OpenSessionRequest => 0x10,
            PayloadType::OpenSessionResponse => 0x11,
            PayloadType::Rakp1 => 0x12,
            PayloadType::Rakp2 => 0x13,
            PayloadType::Rakp3 => 0x14,
            PayloadType::Rakp4 => 0x15,
            PayloadType::Other(c) => c & 0x3F,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code & 0x3F {
            0x00 => PayloadType::Ipmi,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            c => PayloadType::Other(c),
        }
    }
}

fn check_rmcp(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() < 5 {
        return Err(Error::truncated("RMCP packet", 5, bytes.len()));
    }
    if bytes[0] != 0x06 {
        return Err(Error::malformed(
            "RMCP header",
            format!("version {:#04x}, expected 0x06", bytes[0]),
        ));
    }
    if bytes[3] & 0x1F != 0x07 {
        return Err(Error::malformed(
            "RMCP header",
            format!("class {:#04x} is not IPMI", bytes[3]),
        ));
    }
    Ok(())
}

/// A decoded RMCP+ (IPMI v2.0) packet, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V20Packet<'a> {
    pub encrypted: bool,
    pub authenticated: bool,
    pub payload_type: PayloadType,
    pub session_id: u32,
    pub sequence: u32,
    /// The payload as on the wire (still encrypted if `encrypted`).
    pub payload: &'a [u8],
    /// AuthType..Next Header, the range the AuthCode covers (empty when not authenticated).
    pub integrity_data: &'a [u8],
    pub auth_code: &'a [u8],
}

/// Encodes an RMCP+ packet. With `keys`, the payload is encrypted (if `encrypt`) and the integrity
/// trailer is appended; without, it is a plain pre-session packet.
pub fn encode_v20(
    payload_type: PayloadType,
    session_id: u32,
    sequence: u32,
    payload: &[u8],
    keys: Option<(&SessionKeys, [u8; 16])>,
) -> Vec<u8> {
    let body;
    let (payload, flags) = match keys {
        Some((k, iv)) => {
            body = k.encrypt(payload, iv);
            (&body[..], 0xC0)
        }
        None => (payload, 0x00),
    };
    let mut out = Vec::with_capacity(4 + 12 + payload.len() + 24);
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_RMCP_PLUS);
    out.push(payload_type.code() | flags);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(payload);
    if let Some((k, _)) = keys {
        // Pad so that AuthType..Next Header is a whole number of 4-byte words.
        let covered = out.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = k.auth_code(&out[4..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Decodes an RMCP+ packet. `auth_code_len` is the established suite's AuthCode length (0 before).
pub fn decode_v20(bytes: &[u8], auth_code_len: usize) -> Result<V20Packet<'_>, Error> {
    const WHAT: &str = "RMCP+ packet";
    check_rmcp(bytes)?;
    if bytes[4] != AUTH_TYPE_RMCP_PLUS {
        return Err(Error::malformed(
            WHAT,
            format!("auth type {:#04x}, expected 0x06 (RMCP+)", bytes[4]),
        ));
    }
    if bytes.len() < 16 {
        return Err(Error::truncated(WHAT, 16, bytes.len()));
    }
    let pt = bytes[5];
    let encrypted = pt & 0x80 != 0;
    let authenticated = pt & 0x40 != 0;
    let payload_type = PayloadType::from_code(pt);
    if payload_type == PayloadType::Other(0x02) {
        return Err(Error::malformed(
            WHAT,
            "OEM explicit payloads are not supported",
        ));
    }
    let session_id = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes"));
    let sequence = u32::from_le_bytes(bytes[10..14].try_into().expect("4 bytes"));
    let len = usize::from(u16::from_le_bytes([bytes[14], bytes[15]]));
    let end = 16 + len;
    if bytes.len() < end {
        return Err(Error::truncated("RMCP+ payload", end, bytes.len()));
    }
    let payload = &bytes[16..end];
    let trailer = &bytes[end..];
    let (integrity_data, auth_code) = if authenticated {
        integrity_and_auth_code(bytes, trailer, auth_code_len)?
    } else if !trailer.is_empty() {
        return Err(Error::malformed(
            WHAT,
            format!("{} bytes after an unauthenticated payload", trailer.len()),
        ));
    } else {
        (&[][..], &[][..])
    };
    Ok(V20Packet {
        encrypted,
        authenticated,
        payload_type,
        session_id,
        sequence,
        payload,
        integrity_data,
        auth_code,
    })
}

/// Checks an authenticated packet's integrity trailer (`trailer`: what follows the payload) and
/// returns the data its AuthCode covers (from the auth type byte on) and the AuthCode.
fn integrity_and_auth_code<'a>(
    bytes: &'a [u8],
    trailer: &[u8],
    auth_code_len: usize,
) -> Result<(&'a [u8], &'a [u8]), Error> {
    if auth_code_len == 0 {
        return Err(Error::malformed(
            "RMCP+ packet",
            "authenticated packet outside an established session",
        ));
    }
    let need = 2 + auth_code_len;
    if trailer.len() < need {
        return Err(Error::truncated(
            "RMCP+ integrity trailer",
            need,
            trailer.len(),
        ));
    }
    let pad_count = trailer.len() - need;
    let pad_len = usize::from(trailer[pad_count]);
    if pad_len != pad_count || pad_len > 3 {
        return Err(Error::malformed(
            "RMCP+ integrity trailer",
            format!("pad length byte {pad_len} but {pad_count} pad bytes"),
        ));
    }
    if trailer[pad_count + 1] != NEXT_HEADER {
        return Err(Error::malformed(
            "RMCP+ integrity trailer",
            format!("next header {:#04x}, expected 0x07", trailer[pad_count + 1]),
        ));
    }
    let code_at = bytes.len() - auth_code_len;
    Ok((&bytes[4..code_at], &bytes[code_at..]))
}

/// Encodes an IPMI v1.5 packet with auth type "none" and session 0 (pre-session commands only).
pub fn encode_v15_unauthenticated(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 10 + message.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_NONE);
    out.extend_from_slice(&[0; 8]); // sequence number, session ID
    out.push(message.len() as u8);
    out.extend_from_slice(message);
    out
}

/// Decodes an IPMI v1.5 packet's message (any auth type; its AuthCode is not checked: only
/// pre-session, unauthenticated replies are expected in this framing).
pub fn decode_v15(bytes: &[u8]) -> Result<&[u8], Error> {
    const WHAT: &str = "IPMI v1.5 packet";
    check_rmcp(bytes)?;
    let auth_type = bytes[4];
    let header = match auth_type {
        0x00 => 14,
        0x01 | 0x02 | 0x04 | 0x05 => 30, // MD2, MD5, straight password, OEM: 16-byte AuthCode
        other => {
            return Err(Error::malformed(
                WHAT,
                format!("auth type {other:#04x} is not IPMI v1.5"),
            ));
        }
    };
    if bytes.len() < header {
        return Err(Error::truncated(WHAT, header, bytes.len()));
    }
    let len = usize::from(bytes[header - 1]);
    let end = header + len;
    // Some BMCs append a legacy pad byte; tolerate at most one.
    if bytes.len() < end || bytes.len() > end + 1 {
        return Err(Error::malformed(
            WHAT,
            format!(
                "message length {len} but {} bytes follow",
                bytes.len() - header
            ),
        ));
    }
    Ok(&bytes[header..end])
}

/// Two's-complement checksum: the bytes plus the checksum sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI request: network function (even), command, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
}

impl Request {
    /// rsAddr, netFn/rsLUN, checksum, rqAddr, rqSeq/rqLUN, cmd, data, checksum.
    pub fn encode(&self, rq_seq: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.data.len());
        out.push(BMC_ADDR);
        out.push(self.netfn << 2);
        out.push(checksum(&out[0..2]));
        out.push(CONSOLE_ADDR);
        out.push((rq_seq & 0x3F) << 2);
        out.push(self.cmd);
        out.extend_from_slice(&self.data);
        let sum = checksum(&out[3..]);
        out.push(sum);
        out
    }

    /// The BMC side of [`encode`](Self::encode): returns the request and its rqSeq.
    pub fn decode(bytes: &[u8]) -> Result<(Request, u8), Error> {
        let (h, body) = split_message(bytes, "IPMI request")?;
        Ok((
            Request {
                netfn: h[1] >> 2,
                cmd: body[2],
                data: body[3..].to_vec(),
            },
            body[1] >> 2,
        ))
    }
}

fn split_message<'a>(bytes: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), Error> {
    if bytes.len() < 7 {
        return Err(Error::truncated(what, 7, bytes.len()));
    }
    if checksum(&bytes[..3]) != 0 {
        return Err(Error::Checksum("header"));
    }
    if checksum(&bytes[3..]) != 0 {
        return Err(Error::Checksum("data"));
    }
    Ok((&bytes[..3], &bytes[3..bytes.len() - 1]))
}

/// An IPMI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response network function (request netfn + 1).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion_code: u8,
    pub data: Vec<u8>,
}

impl Response {
    /// rqAddr, netFn/rqLUN, checksum, rsAddr, rqSeq/rsLUN, cmd, completion code, data, checksum.
    pub fn decode(bytes: &[u8]) -> Result<Response, Error> {
        let (h, body) = split_message(bytes, "IPMI response")?;
        if body.len() < 4 {
            return Err(Error::truncated("IPMI response", 8, bytes.len()));
        }
        let netfn = h[1] >> 2;
        if netfn & 1 == 0 {
            return Err(Error::malformed(
                "IPMI response",
                format!("netfn {netfn:#04x} is a request netfn"),
            ));
        }
        Ok(Response {
            netfn,
            cmd: body[2],
            rq_seq: body[1] >> 2,
            completion_code: body[3],
            data: body[4..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.data.len());
        out.push(CONSOLE_ADDR);
        out.push(self.netfn << 2);
        out.push(checksum(&out[0..2]));
        out.push(BMC_ADDR);
        out.push((self.rq_seq & 0x3F) << 2);
        out.push(self.cmd);
        out.push(self.completion_code);
        out.extend_from_slice(&self.data);
        let sum = checksum(&out[3..]);
        out.push(sum);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CipherSuite;

    #[test]
    fn get_device_id_request_bytes() {
        // Get Device ID, rqSeq 1: 20 18 c8 81 04 01 7a (checksums by hand: 0x20+0x18+0xc8 = 0x100).
        let bytes = Request {
            netfn: 0x06,
            cmd: 0x01,
            data: vec![],
        }
        .encode(1);
        assert_eq!(bytes, [0x20, 0x18, 0xc8, 0x81, 0x04, 0x01, 0x7a]);
        let (req, seq) = Request::decode(&bytes).unwrap();
        assert_eq!((req.netfn, req.cmd, seq), (0x06, 0x01, 1));
    }

    #[test]
    fn response_round_trip_and_checksums() {
        let r = Response {
            netfn: 0x01,
            cmd: 0x01,
            rq_seq: 5,
            completion_code: 0,
            data: vec![0x01, 0x10, 0x40],
        };
        let bytes = r.encode();
        assert_eq!(Response::decode(&bytes).unwrap(), r);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Response::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Response::decode(&bytes[..6]).is_err());
    }

    #[test]
    fn v20_plain_round_trip() {
        let bytes = encode_v20(PayloadType::OpenSessionRequest, 0, 0, &[1, 2, 3], None);
        assert_eq!(
            bytes,
            [
                6, 0, 0xff, 7, 6, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 2, 3
            ]
        );
        let p = decode_v20(&bytes, 0).unwrap();
        assert_eq!(p.payload_type, PayloadType::OpenSessionRequest);
        assert_eq!(p.payload, &[1, 2, 3]);
        assert!(!p.authenticated && !p.encrypted);
        // Truncated payload, extra bytes, wrong auth type, wrong class.
        assert!(decode_v20(&bytes[..18], 0).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_v20(&extra, 0).is_err());
        let mut v15 = bytes.clone();
        v15[4] = 0;
        assert!(decode_v20(&v15, 0).is_err());
        let mut asf = bytes;
        asf[3] = 0x06;
        assert!(decode_v20(&asf, 0).is_err());
    }

    #[test]
    fn v20_authenticated_trailer_is_word_aligned() {
        let keys = SessionKeys::derive(CipherSuite::Suite3, &[1; 20]);
        for len in 0..40 {
            let payload = vec![0xAB; len];
            let bytes = encode_v20(
                PayloadType::Ipmi,
                0x1234,
                7,
                &payload,
                Some((&keys, [9; 16])),
            );
            let p = decode_v20(&bytes, 12).unwrap();
            assert_eq!(p.integrity_data.len() % 4, 0, "len {len}");
            assert!(keys.verify_auth_code(p.integrity_data, p.auth_code));
            assert!(p.encrypted && p.authenticated);
            assert_eq!(keys.decrypt(p.payload).unwrap(), payload);
            assert_eq!((p.session_id, p.sequence), (0x1234, 7));
        }
    }

    #[test]
    fn v15_round_trip() {
        let msg = [0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5];
        let bytes = encode_v15_unauthenticated(&msg);
        assert_eq!(bytes.len(), 14 + msg.len());
        assert_eq!(decode_v15(&bytes).unwrap(), &msg);
        assert!(decode_v15(&bytes[..13]).is_err());
        let mut long = bytes.clone();
        long.extend_from_slice(&[0, 0]);
        assert!(decode_v15(&long).is_err());
    }
}
