//! A minimal BMC side of RMCP+, built on the same codec: a test peer for cipher suite 17, which the
//! lab's BMC (OpenIPMI `ipmi_sim` 2.0.33, SHA-1/MD5 only) cannot serve. It is validated against
//! ipmitool (`tests/ipmitool_suite17.rs`), so it checks our crypto against an independent client.
//! Not a BMC for production: one chassis with a power bit and boot flags, no user privileges.

use crate::CipherSuite;
use crate::command::{BOOT_PARAM_FLAGS, NETFN_APP, NETFN_CHASSIS};
use crate::crypto::{RakpContext, SessionKeys, ct_eq, random};
use crate::rakp::{
    AcceptedSession, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4,
    RmcpStatus,
};
use crate::wire::{self, PayloadType, Request, Response};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The simulated machine behind the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chassis {
    pub power_on: bool,
    /// Boot options parameter 5 data bytes, as last set.
    pub boot_flags: [u8; 5],
    /// Chassis Control codes received, in order.
    pub controls: Vec<u8>,
    pub manufacturer_id: u32,
}

impl Default for Chassis {
    fn default() -> Self {
        Chassis {
            power_on: false,
            boot_flags: [0; 5],
            controls: Vec::new(),
            manufacturer_id: 0x1291,
        }
    }
}

enum Stage {
    Opened,
    Challenged {
        console_random: [u8; 16],
        bmc_random: [u8; 16],
        role: u8,
        username: Vec<u8>,
        password: Zeroizing<Vec<u8>>,
    },
    Active {
        keys: SessionKeys,
        out_seq: u32,
    },
}

struct BmcSession {
    suite: CipherSuite,
    console_session_id: u32,
    stage: Stage,
}

/// Answers datagrams like a BMC would. `handle` returns the reply datagram, if any.
pub struct Responder {
    users: Vec<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    suites: Vec<CipherSuite>,
    guid: [u8; 16],
    sessions: HashMap<u32, BmcSession>,
    pub chassis: Chassis,
    /// Drop the reply to the next Chassis Control (the command still runs), to test lost replies.
    pub drop_next_control_reply: bool,
}

impl Responder {
    pub fn new(suites: &[CipherSuite]) -> Self {
        let mut guid = [0u8; 16];
        random(&mut guid);
        Responder {
            users: Vec::new(),
            suites: suites.to_vec(),
            guid,
            sessions: HashMap::new(),
            chassis: Chassis::default(),
            drop_next_control_reply: false,
        }
    }

    pub fn add_user(&mut self, name: &str, password: &str) {
        self.users.push((
            name.as_bytes().to_vec(),
            Zeroizing::new(password.as_bytes().to_vec()),
        ));
    }

    /// Number of sessions open or in setup.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn handle(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        if datagram.len() < 5 {
            return None;
        }
        if datagram[4] != wire::AUTH_TYPE_RMCP_PLUS {
            return self.handle_v15(datagram);
        }
        let p = wire::decode_v20(datagram, 0).ok();
        match p.map(|p| (p.payload_type, p.authenticated, p.payload)) {
            Some((PayloadType::OpenSessionRequest, false, payload)) => self.open(payload),
            Some((PayloadType::Rakp1, false, payload)) => self.rakp1(payload),
            Some((PayloadType::Rakp3, false, payload)) => self.rakp3(payload),
            // Authenticated packets fail decode_v20 with length 0; route them by session.
            _ => self.in_session(datagram),
        }
    }

    fn handle_v15(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        let msg = wire::decode_v15(datagram).ok()?;
        let (req, rq_seq) = Request::decode(msg).ok()?;
        if (req.netfn, req.cmd) != (NETFN_APP, 0x38) {
            return None;
        }
        let resp = Response {
            netfn: NETFN_APP + 1,
            cmd: 0x38,
            rq_seq,
            completion_code: 0,
            // Channel 1; extended data; non-null user names; IPMI v2.0 connections.
            data: vec![0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0],
        };
        Some(wire::encode_v15_unauthenticated(&resp.encode()))
    }

    fn open(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let req = OpenSessionRequest::decode(payload).ok()?;
        let suite = self.suites.iter().copied().find(|s| {
            (
                s.auth_algorithm(),
                s.integrity_algorithm(),
                s.confidentiality_algorithm(),
            ) == (req.auth, req.integrity, req.confidentiality)
        });
        let mut resp = OpenSessionResponse {
            tag: req.tag,
            status: RmcpStatus::OK,
            max_privilege: 4,
            console_session_id: req.console_session_id,
            accepted: None,
        };
        match suite {
            None => {
                resp.status = if self.suites.iter().any(|s| s.auth_algorithm() == req.auth) {
                    RmcpStatus::NO_CIPHER_SUITE_MATCH
                } else {
                    RmcpStatus::INVALID_AUTH_ALGORITHM
                }
            }
            Some(suite) => {
                let mut id = [0u8; 4];
                random(&mut id);
                let bmc_session_id = u32::from_le_bytes(id).max(1);
                self.sessions.insert(
                    bmc_session_id,
                    BmcSession {
                        suite,
                        console_session_id: req.console_session_id,
                        stage: Stage::Opened,
                    },
                );
                resp.accepted = Some(AcceptedSession {
                    bmc_session_id,
                    auth: req.auth,
                    integrity: req.integrity,
                    confidentiality: req.confidentiality,
                });
            }
        }
        Some(wire::encode_v20(
            PayloadType::OpenSessionResponse,
            0,
            0,
            &resp.encode(),
            None,
        ))
    }

    fn rakp1(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let r1 = Rakp1::decode(payload).ok()?;
        let guid = self.guid;
        let password = self
            .users
            .iter()
            .find(|(name, _)| *name == r1.username)
            .map(|(_, pw)| pw.clone());
        let s = self.sessions.get_mut(&r1.bmc_session_id)?;
        let mut r2 = Rakp2 {
            tag: r1.tag,
            status: RmcpStatus::OK,
            console_session_id: s.console_session_id,
            bmc_random: [0; 16],
            bmc_guid: guid,
            auth_code: Vec::new(),
        };
        match password {
            None => r2.status = RmcpStatus::UNAUTHORIZED_NAME,
            Some(password) => {
                random(&mut r2.bmc_random);
                let ctx = RakpContext {
                    suite: s.suite,
                    console_session_id: s.console_session_id,
                    bmc_session_id: r1.bmc_session_id,
                    console_random: r1.console_random,
                    bmc_random: r2.bmc_random,
                    bmc_guid: guid,
                    role: r1.role,
                    username: &r1.username,
                };
                r2.auth_code = ctx.rakp2_auth_code(&password).to_vec();
                s.stage = Stage::Challenged {
                    console_random: r1.console_random,
                    bmc_random: r2.bmc_random,
                    role: r1.role,
                    username: r1.username.clone(),
                    password,
                };
            }
        }
        Some(wire::encode_v20(
            PayloadType::Rakp2,
            0,
            0,
            &r2.encode(),
            None,
        ))
    }

    fn rakp3(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let r3 = Rakp3::decode(payload).ok()?;
        let guid = self.guid;
        let s = self.sessions.get_mut(&r3.bmc_session_id)?;
        let Stage::Challenged {
            console_random,
            bmc_random,
            role,
            username,
            password,
        } = &s.stage
        else {
            return None;
        };
        if r3.status != RmcpStatus::OK {
            // The console gave up (e.g. our RAKP 2 code did not match its password).
            self.sessions.remove(&r3.bmc_session_id);
            return None;
        }
        let ctx = RakpContext {
            suite: s.suite,
            console_session_id: s.console_session_id,
            bmc_session_id: r3.bmc_session_id,
            console_random: *console_random,
            bmc_random: *bmc_random,
            bmc_guid: guid,
            role: *role,
            username,
        };
        let mut r4 = Rakp4 {
            tag: r3.tag,
            status: RmcpStatus::OK,
            console_session_id: s.console_session_id,
            icv: Vec::new(),
        };
        if !ct_eq(&ctx.rakp3_auth_code(password), &r3.auth_code) {
            r4.status = RmcpStatus::INVALID_INTEGRITY_CHECK;
            self.sessions.remove(&r3.bmc_session_id);
        } else {
            let sik = ctx.sik(password);
            r4.icv = ctx.rakp4_icv(&sik);
            s.stage = Stage::Active {
                keys: SessionKeys::derive(s.suite, &sik),
                out_seq: 0,
            };
        }
        Some(wire::encode_v20(
            PayloadType::Rakp4,
            0,
            0,
            &r4.encode(),
            None,
        ))
    }

    fn in_session(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        // Peek at the session ID to find the suite (and so the AuthCode length).
        let sid = u32::from_le_bytes(datagram.get(6..10)?.try_into().ok()?);
        let s = self.sessions.get(&sid)?;
        let p = wire::decode_v20(datagram, s.suite.icv_len()).ok()?;
        let Stage::Active { keys, .. } = &s.stage else {
            return None;
        };
        if !(p.authenticated && p.encrypted && keys.verify_auth_code(p.integrity_data, p.auth_code))
        {
            return None;
        }
        let plain = keys.decrypt(p.payload).ok()?;
        let (req, rq_seq) = Request::decode(&plain).ok()?;
        let (cc, data, close) = self.execute(&req, sid);
        if req.netfn == NETFN_CHASSIS && req.cmd == 0x02 && self.drop_next_control_reply {
            self.drop_next_control_reply = false;
            return None;
        }
        let s = self.sessions.get_mut(&sid)?;
        let console_session_id = s.console_session_id;
        let Stage::Active { keys, out_seq } = &mut s.stage else {
            return None;
        };
        *out_seq += 1;
        let resp = Response {
            netfn: req.netfn + 1,
            cmd: req.cmd,
            rq_seq,
            completion_code: cc,
            data,
        };
        let mut iv = [0u8; 16];
        random(&mut iv);
        let out = wire::encode_v20(
            PayloadType::Ipmi,
            console_session_id,
            *out_seq,
            &resp.encode(),
            Some((keys, iv)),
        );
        if close {
            self.sessions.remove(&sid);
        }
        Some(out)
    }

    /// Completion code, response data, and whether the session ends.
    fn execute(&mut self, req: &Request, sid: u32) -> (u8, Vec<u8>, bool) {
        let c = &mut self.chassis;
        match (req.netfn, req.cmd, req.data.as_slice()) {
            (NETFN_APP, 0x3B, [level, ..]) => (0, vec![*level & 0x0F], false),
            (NETFN_APP, 0x3C, [a, b, cc, d]) if u32::from_le_bytes([*a, *b, *cc, *d]) == sid => {
                (0, vec![], true)
            }
            (NETFN_APP, 0x3C, _) => (0x87, vec![], false),
            (NETFN_APP, 0x01, _) => {
                let m = c.manufacturer_id.to_le_bytes();
                (
                    0,
                    vec![
                        0, 0x01, 0x01, 0x00, 0x02, 0x9f, m[0], m[1], m[2], 0x01, 0x00,
                    ],
                    false,
                )
            }
            (NETFN_CHASSIS, 0x01, _) => (0, vec![u8::from(c.power_on), 0, 0], false),
            (NETFN_CHASSIS, 0x02, [code]) => {
                c.controls.push(*code);
                match code {
                    0 | 5 => c.power_on = false,
                    1..=3 => c.power_on = true,
                    _ => return (0xCC, vec![], false),
                }
                (0, vec![], false)
            }
            (NETFN_CHASSIS, 0x08, [param, data @ ..]) => match (*param & 0x7F, data.len()) {
                (BOOT_PARAM_FLAGS, 5) => {
                    c.boot_flags.copy_from_slice(data);
                    (0, vec![], false)
                }
                (0 | 4, _) => (0, vec![], false),
                _ => (0xCC, vec![], false),
            },
            (NETFN_CHASSIS, 0x09, [BOOT_PARAM_FLAGS, ..]) => {
                let mut d = vec![0x01, BOOT_PARAM_FLAGS];
                d.extend_from_slice(&c.boot_flags);
                (0, d, false)
            }
            _ => (0xC1, vec![], false),
        }
    }
}
