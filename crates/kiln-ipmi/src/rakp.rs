//! RMCP+ session setup payloads (IPMI v2.0 §13.17–13.23): Open Session Request/Response and RAKP
//! messages 1–4. Both directions are encoded and decoded (the BMC side serves tests and fuzzing).

use crate::{CipherSuite, Error};
use std::fmt;

/// RMCP+ and RAKP message status codes (table 13-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RmcpStatus(pub u8);

impl RmcpStatus {
    pub const OK: RmcpStatus = RmcpStatus(0x00);
    pub const INVALID_AUTH_ALGORITHM: RmcpStatus = RmcpStatus(0x04);
    pub const INVALID_INTEGRITY_ALGORITHM: RmcpStatus = RmcpStatus(0x05);
    pub const UNAUTHORIZED_NAME: RmcpStatus = RmcpStatus(0x0D);
    pub const INVALID_INTEGRITY_CHECK: RmcpStatus = RmcpStatus(0x0F);
    pub const INVALID_CONFIDENTIALITY_ALGORITHM: RmcpStatus = RmcpStatus(0x10);
    pub const NO_CIPHER_SUITE_MATCH: RmcpStatus = RmcpStatus(0x11);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "no errors",
            0x01 => "insufficient resources to create a session",
            0x02 => "invalid session ID",
            0x03 => "invalid payload type",
            0x04 => "invalid authentication algorithm",
            0x05 => "invalid integrity algorithm",
            0x06 => "no matching authentication payload",
            0x07 => "no matching integrity payload",
            0x08 => "inactive session ID",
            0x09 => "invalid role",
            0x0A => "unauthorized role or privilege level requested",
            0x0B => "insufficient resources to create a session at the requested role",
            0x0C => "invalid name length",
            0x0D => "unauthorized name",
            0x0E => "unauthorized GUID",
            0x0F => "invalid integrity check value",
            0x10 => "invalid confidentiality algorithm",
            0x11 => "no cipher suite match with proposed security algorithms",
            0x12 => "illegal or unrecognized parameter",
            _ => "reserved status code",
        }
    }

    /// The BMC refuses the proposed algorithms: try another cipher suite.
    pub fn is_cipher_rejection(self) -> bool {
        matches!(self.0, 0x04 | 0x05 | 0x06 | 0x07 | 0x10 | 0x11)
    }

    /// The BMC refuses the user or the key exchange: wrong name or password.
    pub fn is_auth_failure(self) -> bool {
        matches!(self.0, 0x0D | 0x0F)
    }
}

impl fmt::Display for RmcpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x} ({})", self.0, self.name())
    }
}

/// Privilege level "administrator" (table 6-2 / 22-…).
pub const PRIV_ADMIN: u8 = 0x04;
/// RAKP 1 role bit 4: look the user up by name only (ipmitool's default).
pub const NAME_ONLY_LOOKUP: u8 = 0x10;

fn need(bytes: &[u8], n: usize, what: &'static str) -> Result<(), Error> {
    if bytes.len() < n {
        Err(Error::truncated(what, n, bytes.len()))
    } else {
        Ok(())
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn arr16(b: &[u8]) -> [u8; 16] {
    b[..16].try_into().expect("16 bytes")
}

/// One algorithm record of Open Session Request/Response: type, reserved ×2, length 8, algorithm, reserved ×3.
fn algorithm_record(kind: u8, algorithm: u8) -> [u8; 8] {
    [kind, 0, 0, 8, algorithm, 0, 0, 0]
}

fn parse_algorithm(rec: &[u8], kind: u8, what: &'static str) -> Result<u8, Error> {
    if rec[0] != kind || rec[3] != 8 {
        return Err(Error::malformed(
            what,
            format!("algorithm record type {:#04x} length {}", rec[0], rec[3]),
        ));
    }
    Ok(rec[4] & 0x3F)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionRequest {
    pub tag: u8,
    /// Requested maximum privilege (0 = highest the algorithms allow).
    pub max_privilege: u8,
    pub console_session_id: u32,
    pub auth: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

impl OpenSessionRequest {
    pub fn new(tag: u8, console_session_id: u32, suite: CipherSuite) -> Self {
        OpenSessionRequest {
            tag,
            max_privilege: PRIV_ADMIN,
            console_session_id,
            auth: suite.auth_algorithm(),
            integrity: suite.integrity_algorithm(),
            confidentiality: suite.confidentiality_algorithm(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.max_privilege, 0, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        out.extend_from_slice(&algorithm_record(0, self.auth));
        out.extend_from_slice(&algorithm_record(1, self.integrity));
        out.extend_from_slice(&algorithm_record(2, self.confidentiality));
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "Open Session Request";
        need(b, 32, WHAT)?;
        Ok(OpenSessionRequest {
            tag: b[0],
            max_privilege: b[1] & 0x0F,
            console_session_id: le32(&b[4..]),
            auth: parse_algorithm(&b[8..16], 0, WHAT)?,
            integrity: parse_algorithm(&b[16..24], 1, WHAT)?,
            confidentiality: parse_algorithm(&b[24..32], 2, WHAT)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: RmcpStatus,
    pub max_privilege: u8,
    pub console_session_id: u32,
    /// Present only when `status` is OK.
    pub accepted: Option<AcceptedSession>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedSession {
    pub bmc_session_id: u32,
    pub auth: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

impl OpenSessionResponse {
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "Open Session Response";
        // An error response may stop after the status byte (some BMCs) or after the console ID.
        need(b, 2, WHAT)?;
        let status = RmcpStatus(b[1]);
        if status != RmcpStatus::OK {
            return Ok(OpenSessionResponse {
                tag: b[0],
                status,
                max_privilege: b.get(2).copied().unwrap_or(0),
                console_session_id: if b.len() >= 8 { le32(&b[4..]) } else { 0 },
                accepted: None,
            });
        }
        need(b, 36, WHAT)?;
        Ok(OpenSessionResponse {
            tag: b[0],
            status,
            max_privilege: b[2] & 0x0F,
            console_session_id: le32(&b[4..]),
            accepted: Some(AcceptedSession {
                bmc_session_id: le32(&b[8..]),
                auth: parse_algorithm(&b[12..20], 0, WHAT)?,
                integrity: parse_algorithm(&b[20..28], 1, WHAT)?,
                confidentiality: parse_algorithm(&b[28..36], 2, WHAT)?,
            }),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, self.max_privilege, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        if let Some(a) = &self.accepted {
            out.extend_from_slice(&a.bmc_session_id.to_le_bytes());
            out.extend_from_slice(&algorithm_record(0, a.auth));
            out.extend_from_slice(&algorithm_record(1, a.integrity));
            out.extend_from_slice(&algorithm_record(2, a.confidentiality));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp1 {
    pub tag: u8,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    /// Requested role byte (privilege | name-only lookup bit).
    pub role: u8,
    pub username: Vec<u8>,
}

impl Rakp1 {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, 0, 0, 0];
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.console_random);
        out.extend_from_slice(&[self.role, 0, 0, self.username.len() as u8]);
        out.extend_from_slice(&self.username);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "RAKP Message 1";
        need(b, 28, WHAT)?;
        let len = usize::from(b[27]);
        if len > 16 || b.len() != 28 + len {
            return Err(Error::malformed(WHAT, format!("user name length {len}")));
        }
        Ok(Rakp1 {
            tag: b[0],
            bmc_session_id: le32(&b[4..]),
            console_random: arr16(&b[8..]),
            role: b[24],
            username: b[28..].to_vec(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub tag: u8,
    pub status: RmcpStatus,
    pub console_session_id: u32,
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth_code: Vec<u8>,
}

impl Rakp2 {
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "RAKP Message 2";
        need(b, 2, WHAT)?;
        let status = RmcpStatus(b[1]);
        if status != RmcpStatus::OK {
            return Ok(Rakp2 {
                tag: b[0],
                status,
                console_session_id: if b.len() >= 8 { le32(&b[4..]) } else { 0 },
                bmc_random: [0; 16],
                bmc_guid: [0; 16],
                auth_code: Vec::new(),
            });
        }
        need(b, 40, WHAT)?;
        Ok(Rakp2 {
            tag: b[0],
            status,
            console_session_id: le32(&b[4..]),
            bmc_random: arr16(&b[8..]),
            bmc_guid: arr16(&b[24..]),
            auth_code: b[40..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, 0, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        if self.status == RmcpStatus::OK {
            out.extend_from_slice(&self.bmc_random);
            out.extend_from_slice(&self.bmc_guid);
            out.extend_from_slice(&self.auth_code);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp3 {
    pub tag: u8,
    pub status: RmcpStatus,
    pub bmc_session_id: u32,
    pub auth_code: Vec<u8>,
}

impl Rakp3 {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, 0, 0];
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.auth_code);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        need(b, 8, "RAKP Message 3")?;
        Ok(Rakp3 {
            tag: b[0],
            status: RmcpStatus(b[1]),
            bmc_session_id: le32(&b[4..]),
            auth_code: b[8..].to_vec(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    pub tag: u8,
    pub status: RmcpStatus,
    pub console_session_id: u32,
    pub icv: Vec<u8>,
}

impl Rakp4 {
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        need(b, 2, "RAKP Message 4")?;
        let status = RmcpStatus(b[1]);
        if status == RmcpStatus::OK {
            need(b, 8, "RAKP Message 4")?;
        }
        Ok(Rakp4 {
            tag: b[0],
            status,
            console_session_id: if b.len() >= 8 { le32(&b[4..]) } else { 0 },
            icv: b.get(8..).unwrap_or_default().to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, 0, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        out.extend_from_slice(&self.icv);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_session_request_layout() {
        let r = OpenSessionRequest::new(7, 0xA0B0C0D0, CipherSuite::Suite17);
        let b = r.encode();
        assert_eq!(
            b,
            [
                7, 4, 0, 0, 0xD0, 0xC0, 0xB0, 0xA0, //
                0, 0, 0, 8, 3, 0, 0, 0, //
                1, 0, 0, 8, 4, 0, 0, 0, //
                2, 0, 0, 8, 1, 0, 0, 0
            ]
        );
        assert_eq!(OpenSessionRequest::decode(&b).unwrap(), r);
        let s3 = OpenSessionRequest::new(1, 1, CipherSuite::Suite3).encode();
        assert_eq!((s3[12], s3[20], s3[28]), (1, 1, 1));
    }

    #[test]
    fn open_session_response_round_trip_and_errors() {
        let r = OpenSessionResponse {
            tag: 3,
            status: RmcpStatus::OK,
            max_privilege: 4,
            console_session_id: 0x11223344,
            accepted: Some(AcceptedSession {
                bmc_session_id: 0x55667788,
                auth: 1,
                integrity: 1,
                confidentiality: 1,
            }),
        };
        let b = r.encode();
        assert_eq!(b.len(), 36);
        assert_eq!(OpenSessionResponse::decode(&b).unwrap(), r);
        assert!(OpenSessionResponse::decode(&b[..30]).is_err());
        let mut bad_rec = b.clone();
        bad_rec[15] = 9;
        assert!(OpenSessionResponse::decode(&bad_rec).is_err());
        // ipmi_sim's answer to suite 17: status 0x04 and 8 bytes.
        let err = OpenSessionResponse::decode(&[3, 4, 0, 0, 0x44, 0x33, 0x22, 0x11]).unwrap();
        assert!(err.status.is_cipher_rejection());
        assert_eq!(err.accepted, None);
        assert!(OpenSessionResponse::decode(&[3]).is_err());
    }

    #[test]
    fn rakp_round_trips() {
        let r1 = Rakp1 {
            tag: 1,
            bmc_session_id: 9,
            console_random: [7; 16],
            role: PRIV_ADMIN | NAME_ONLY_LOOKUP,
            username: b"admin".to_vec(),
        };
        let b = r1.encode();
        assert_eq!(b.len(), 33);
        assert_eq!(b[24], 0x14);
        assert_eq!(Rakp1::decode(&b).unwrap(), r1);
        assert!(Rakp1::decode(&b[..32]).is_err());

        let r2 = Rakp2 {
            tag: 1,
            status: RmcpStatus::OK,
            console_session_id: 5,
            bmc_random: [1; 16],
            bmc_guid: [2; 16],
            auth_code: vec![3; 20],
        };
        assert_eq!(Rakp2::decode(&r2.encode()).unwrap(), r2);
        assert!(Rakp2::decode(&r2.encode()[..39]).is_err());
        let unauthorized = Rakp2::decode(&[1, 0x0D, 0, 0, 5, 0, 0, 0]).unwrap();
        assert!(unauthorized.status.is_auth_failure());

        let r3 = Rakp3 {
            tag: 1,
            status: RmcpStatus::OK,
            bmc_session_id: 9,
            auth_code: vec![4; 32],
        };
        assert_eq!(Rakp3::decode(&r3.encode()).unwrap(), r3);

        let r4 = Rakp4 {
            tag: 1,
            status: RmcpStatus::OK,
            console_session_id: 5,
            icv: vec![6; 12],
        };
        assert_eq!(Rakp4::decode(&r4.encode()).unwrap(), r4);
        assert!(Rakp4::decode(&[1, 0, 0]).is_err());
    }

    #[test]
    fn status_names() {
        assert_eq!(RmcpStatus(0x0D).to_string(), "0x0d (unauthorized name)");
        assert!(RmcpStatus::NO_CIPHER_SUITE_MATCH.is_cipher_rejection());
        assert!(!RmcpStatus::UNAUTHORIZED_NAME.is_cipher_rejection());
    }
}
