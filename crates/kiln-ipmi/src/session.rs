//! The RMCP+ session as a state machine without I/O: the caller sends what [`Session::next_request`]
//! returns, feeds every datagram it receives to [`Session::handle_response`], and once established
//! uses [`Session::wrap`] / [`Session::unwrap`] for commands.
//!
//! Handshake: Get Channel Authentication Capabilities (v1.5 framing) → Open Session → RAKP 1/2 →
//! RAKP 3/4 → Set Session Privilege Level (administrator) → established.

use crate::command::{Command, CompletionCode, GetChannelAuthCapabilities, SetSessionPrivilege};
use crate::crypto::{RakpContext, SessionKeys, ct_eq};
use crate::error::Stage;
use crate::rakp::{
    NAME_ONLY_LOOKUP, OpenSessionRequest, OpenSessionResponse, PRIV_ADMIN, Rakp1, Rakp2, Rakp3,
    Rakp4, RmcpStatus,
};
use crate::wire::{self, PayloadType, Request, Response};
use crate::{CipherSuite, Credentials, Error};
use zeroize::Zeroizing;

/// How far ahead of the highest accepted inbound sequence number a packet may be, and how far behind
/// (IPMI v2.0 §6.12.13 suggests accepting a window; replays inside it are still refused).
const SEQ_AHEAD: u32 = 16;
const SEQ_BEHIND: u32 = 32;

/// What a received datagram did to the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A step completed; send [`Session::next_request`] next.
    Continue,
    /// The session is ready for commands.
    Established,
    /// Not an answer to the current step (a late duplicate of an earlier one): keep waiting.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AuthCaps,
    OpenSession,
    Rakp1,
    Rakp3,
    SetPrivilege,
    Established,
    Failed,
    Closed,
}

type Rng = Box<dyn FnMut(&mut [u8]) + Send>;

pub struct Session {
    creds: Credentials,
    suite: CipherSuite,
    rng: Rng,
    state: State,
    tag: u8,
    rq_seq: u8,
    /// rqSeq of the handshake's in-session/pre-session IPMI request (auth caps, privilege).
    step_rq_seq: u8,
    console_session_id: u32,
    console_random: [u8; 16],
    bmc_session_id: u32,
    bmc_random: [u8; 16],
    bmc_guid: [u8; 16],
    sik: Zeroizing<Vec<u8>>,
    keys: Option<SessionKeys>,
    out_seq: u32,
    inbound: SeqWindow,
    pending: Vec<u8>,
    abort: Option<Vec<u8>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("suite", &self.suite)
            .field("state", &self.state)
            .field("console_session_id", &self.console_session_id)
            .field("bmc_session_id", &self.bmc_session_id)
            .finish_non_exhaustive()
    }
}

/// Role byte of RAKP 1: administrator, user looked up by name only (what ipmitool sends).
const ROLE: u8 = PRIV_ADMIN | NAME_ONLY_LOOKUP;

impl Session {
    /// A new session using the OS random number generator.
    pub fn new(creds: Credentials, suite: CipherSuite) -> Self {
        Self::with_rng(creds, suite, crate::crypto::random)
    }

    /// A new session taking its random numbers (session ID, Rm, IVs) from `rng`; for tests.
    pub fn with_rng(
        creds: Credentials,
        suite: CipherSuite,
        rng: impl FnMut(&mut [u8]) + Send + 'static,
    ) -> Self {
        let mut rng: Rng = Box::new(rng);
        let mut id = [0u8; 4];
        let mut console_random = [0u8; 16];
        rng(&mut id);
        rng(&mut console_random);
        // Session ID 0 means "no session"; avoid it.
        let console_session_id = u32::from_le_bytes(id).max(1);
        let mut s = Session {
            creds,
            suite,
            rng,
            state: State::AuthCaps,
            tag: 0,
            rq_seq: 0,
            step_rq_seq: 0,
            console_session_id,
            console_random,
            bmc_session_id: 0,
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            sik: Zeroizing::new(Vec::new()),
            keys: None,
            out_seq: 0,
            inbound: SeqWindow::default(),
            pending: Vec::new(),
            abort: None,
        };
        s.step_rq_seq = s.next_rq_seq();
        let msg = GetChannelAuthCapabilities.request().encode(s.step_rq_seq);
        s.pending = wire::encode_v15_unauthenticated(&msg);
        s
    }

    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// The BMC's ID for this session (0 before Open Session completes).
    pub fn bmc_session_id(&self) -> u32 {
        self.bmc_session_id
    }

    pub fn console_session_id(&self) -> u32 {
        self.console_session_id
    }

    /// The datagram for the current handshake step (the same bytes again on retransmission, except the
    /// privilege step, which is re-wrapped with a fresh session sequence number). None when no
    /// handshake step is pending.
    pub fn next_request(&mut self) -> Option<Vec<u8>> {
        match self.state {
            State::AuthCaps | State::OpenSession | State::Rakp1 | State::Rakp3 => {
                Some(self.pending.clone())
            }
            State::SetPrivilege => {
                let req = SetSessionPrivilege(PRIV_ADMIN).request();
                self.seal(&req, self.step_rq_seq).ok()
            }
            State::Established | State::Failed | State::Closed => None,
        }
    }

    /// After an authentication failure at RAKP 2: a RAKP 3 carrying an error status, so the BMC can
    /// drop the half-open session at once instead of timing it out. Send it once, expect no answer.
    pub fn abort_packet(&self) -> Option<&[u8]> {
        self.abort.as_deref()
    }

    /// Feeds one received datagram into the handshake.
    pub fn handle_response(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        match self.handle_step(bytes) {
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
            ok => ok,
        }
    }

    fn handle_step(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        // A late v1.5 reply (the capability query answered twice) during the RMCP+ steps is harmless.
        let v15 = bytes.len() > 4 && bytes[4] != wire::AUTH_TYPE_RMCP_PLUS;
        match self.state {
            State::AuthCaps => self.on_auth_caps(bytes),
            _ if v15 => {
                wire::decode_v15(bytes)?;
                Ok(Progress::Ignored)
            }
            State::OpenSession => self.on_open_session(bytes),
            State::Rakp1 => self.on_rakp2(bytes),
            State::Rakp3 => self.on_rakp4(bytes),
            State::SetPrivilege => self.on_privilege(bytes),
            State::Established | State::Failed | State::Closed => {
                Err(Error::State("no handshake in progress"))
            }
        }
    }

    fn on_auth_caps(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        let msg = wire::decode_v15(bytes)?;
        let resp = Response::decode(msg)?;
        let req = GetChannelAuthCapabilities.request();
        if !answers(&req, self.step_rq_seq, &resp) {
            return Ok(Progress::Ignored);
        }
        let caps = check(&GetChannelAuthCapabilities, &resp)?;
        if !caps.ipmi20 {
            return Err(Error::NotIpmi20);
        }
        self.tag = self.tag.wrapping_add(1);
        let open = OpenSessionRequest::new(self.tag, self.console_session_id, self.suite);
        self.pending =
            wire::encode_v20(PayloadType::OpenSessionRequest, 0, 0, &open.encode(), None);
        self.state = State::OpenSession;
        Ok(Progress::Continue)
    }

    fn pre_session_payload(bytes: &[u8], expect: PayloadType) -> Result<Option<&[u8]>, Error> {
        let p = wire::decode_v20(bytes, 0)?;
        if p.payload_type != expect || p.session_id != 0 {
            return Ok(None);
        }
        Ok(Some(p.payload))
    }

    fn on_open_session(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        let Some(payload) = Self::pre_session_payload(bytes, PayloadType::OpenSessionResponse)?
        else {
            return Ok(Progress::Ignored);
        };
        let r = OpenSessionResponse::decode(payload)?;
        if r.tag != self.tag {
            return Ok(Progress::Ignored);
        }
        if r.status != RmcpStatus::OK {
            return Err(if r.status.is_cipher_rejection() {
                Error::UnsupportedCipherSuite {
                    suite: self.suite,
                    status: r.status,
                }
            } else {
                Error::Rmcp {
                    stage: Stage::OpenSession,
                    status: r.status,
                }
            });
        }
        if r.console_session_id != self.console_session_id {
            return Ok(Progress::Ignored);
        }
        let a = r
            .accepted
            .expect("an OK response carries the accepted algorithms");
        if (a.auth, a.integrity, a.confidentiality)
            != (
                self.suite.auth_algorithm(),
                self.suite.integrity_algorithm(),
                self.suite.confidentiality_algorithm(),
            )
        {
            return Err(Error::malformed(
                "Open Session Response",
                format!(
                    "BMC chose algorithms {}/{}/{}, not cipher suite {}",
                    a.auth,
                    a.integrity,
                    a.confidentiality,
                    self.suite.id()
                ),
            ));
        }
        if a.bmc_session_id == 0 {
            return Err(Error::malformed(
                "Open Session Response",
                "BMC session ID 0",
            ));
        }
        self.bmc_session_id = a.bmc_session_id;
        self.tag = self.tag.wrapping_add(1);
        let rakp1 = Rakp1 {
            tag: self.tag,
            bmc_session_id: self.bmc_session_id,
            console_random: self.console_random,
            role: ROLE,
            username: self.creds.username().to_vec(),
        };
        self.pending = wire::encode_v20(PayloadType::Rakp1, 0, 0, &rakp1.encode(), None);
        self.state = State::Rakp1;
        Ok(Progress::Continue)
    }

    fn user(&self) -> String {
        String::from_utf8_lossy(self.creds.username()).into_owned()
    }

    fn context(&self) -> RakpContext<'_> {
        RakpContext {
            suite: self.suite,
            console_session_id: self.console_session_id,
            bmc_session_id: self.bmc_session_id,
            console_random: self.console_random,
            bmc_random: self.bmc_random,
            bmc_guid: self.bmc_guid,
            role: ROLE,
            username: self.creds.username(),
        }
    }

    fn on_rakp2(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        let Some(payload) = Self::pre_session_payload(bytes, PayloadType::Rakp2)? else {
            return Ok(Progress::Ignored);
        };
        let r = Rakp2::decode(payload)?;
        if r.tag != self.tag {
            return Ok(Progress::Ignored);
        }
        if r.status != RmcpStatus::OK {
            return Err(if r.status.is_auth_failure() {
                Error::Auth(format!(
                    "user {:?} rejected: RAKP 2 status {}",
                    self.user(),
                    r.status
                ))
            } else {
                Error::Rmcp {
                    stage: Stage::Rakp2,
                    status: r.status,
                }
            });
        }
        if r.console_session_id != self.console_session_id {
            return Ok(Progress::Ignored);
        }
        self.bmc_random = r.bmc_random;
        self.bmc_guid = r.bmc_guid;
        let expected = self
            .context()
            .rakp2_auth_code(self.creds.password().expose());
        if !ct_eq(&expected, &r.auth_code) {
            self.tag = self.tag.wrapping_add(1);
            let abort = Rakp3 {
                tag: self.tag,
                status: RmcpStatus::INVALID_INTEGRITY_CHECK,
                bmc_session_id: self.bmc_session_id,
                auth_code: Vec::new(),
            };
            self.abort = Some(wire::encode_v20(
                PayloadType::Rakp3,
                0,
                0,
                &abort.encode(),
                None,
            ));
            return Err(Error::Auth(format!(
                "wrong password for user {:?} (the BMC's RAKP 2 key exchange code does not match)",
                self.user()
            )));
        }
        let ctx = self.context();
        let kuid = self.creds.password().expose();
        // No BMC key (Kg) support: Kg defaults to Kuid, as on nearly every BMC.
        let sik = ctx.sik(kuid);
        let auth_code = ctx.rakp3_auth_code(kuid);
        self.sik = sik;
        self.tag = self.tag.wrapping_add(1);
        let rakp3 = Rakp3 {
            tag: self.tag,
            status: RmcpStatus::OK,
            bmc_session_id: self.bmc_session_id,
            auth_code: auth_code.to_vec(),
        };
        self.pending = wire::encode_v20(PayloadType::Rakp3, 0, 0, &rakp3.encode(), None);
        self.state = State::Rakp3;
        Ok(Progress::Continue)
    }

    fn on_rakp4(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        let Some(payload) = Self::pre_session_payload(bytes, PayloadType::Rakp4)? else {
            return Ok(Progress::Ignored);
        };
        let r = Rakp4::decode(payload)?;
        if r.tag != self.tag {
            return Ok(Progress::Ignored);
        }
        if r.status != RmcpStatus::OK {
            return Err(if r.status.is_auth_failure() {
                Error::Auth(format!(
                    "BMC refused the key exchange for user {:?}: RAKP 4 status {}",
                    self.user(),
                    r.status
                ))
            } else {
                Error::Rmcp {
                    stage: Stage::Rakp4,
                    status: r.status,
                }
            });
        }
        if r.console_session_id != self.console_session_id {
            return Ok(Progress::Ignored);
        }
        let expected = self.context().rakp4_icv(&self.sik);
        if !ct_eq(&expected, &r.icv) {
            return Err(Error::Auth(
                "RAKP 4 integrity check value does not match (BMC key Kg set, or not this BMC)"
                    .into(),
            ));
        }
        self.keys = Some(SessionKeys::derive(self.suite, &self.sik));
        self.step_rq_seq = self.next_rq_seq();
        self.state = State::SetPrivilege;
        Ok(Progress::Continue)
    }

    fn on_privilege(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        let resp = self.open(bytes)?;
        let cmd = SetSessionPrivilege(PRIV_ADMIN);
        if !answers(&cmd.request(), self.step_rq_seq, &resp) {
            return Ok(Progress::Ignored);
        }
        match check(&cmd, &resp) {
            Ok(_) => {}
            // 0x81/0x82: the user's or channel's limit is below administrator.
            Err(Error::Completion { code, .. }) if matches!(code.0, 0x80..=0x82) => {
                return Err(Error::Auth(format!(
                    "user {:?} may not have administrator privilege ({code})",
                    self.user()
                )));
            }
            Err(e) => return Err(e),
        }
        self.pending.clear();
        self.state = State::Established;
        Ok(Progress::Established)
    }

    fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        self.rq_seq
    }

    fn seal(&mut self, req: &Request, rq_seq: u8) -> Result<Vec<u8>, Error> {
        let keys = self
            .keys
            .as_ref()
            .ok_or(Error::State("session keys not yet agreed"))?;
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        let mut iv = [0u8; 16];
        (self.rng)(&mut iv);
        Ok(wire::encode_v20(
            PayloadType::Ipmi,
            self.bmc_session_id,
            self.out_seq,
            &req.encode(rq_seq),
            Some((keys, iv)),
        ))
    }

    fn open(&mut self, bytes: &[u8]) -> Result<Response, Error> {
        let keys = self
            .keys
            .as_ref()
            .ok_or(Error::State("session keys not yet agreed"))?;
        let p = wire::decode_v20(bytes, self.suite.icv_len())?;
        if !(p.authenticated && p.encrypted) {
            return Err(Error::malformed(
                "RMCP+ packet",
                "in-session packet without integrity and confidentiality",
            ));
        }
        if p.payload_type != PayloadType::Ipmi {
            return Err(Error::malformed(
                "RMCP+ packet",
                format!("in-session payload type {:?}", p.payload_type),
            ));
        }
        if p.session_id != self.console_session_id {
            return Err(Error::malformed(
                "RMCP+ packet",
                format!("session ID {:#010x} is not this session", p.session_id),
            ));
        }
        // Integrity first, so a forged packet cannot move the sequence window.
        if !keys.verify_auth_code(p.integrity_data, p.auth_code) {
            return Err(Error::Integrity);
        }
        let plain = keys.decrypt(p.payload)?;
        self.inbound.accept(p.sequence)?;
        Response::decode(&plain)
    }

    /// Wraps a request for the established session; returns its rqSeq and the datagram.
    pub fn wrap(&mut self, req: &Request) -> Result<(u8, Vec<u8>), Error> {
        self.require_established()?;
        let rq_seq = self.next_rq_seq();
        Ok((rq_seq, self.seal(req, rq_seq)?))
    }

    /// Wraps the same request again for retransmission: same rqSeq, a fresh session sequence number.
    pub fn rewrap(&mut self, req: &Request, rq_seq: u8) -> Result<Vec<u8>, Error> {
        self.require_established()?;
        self.seal(req, rq_seq)
    }

    /// Checks and opens a datagram of the established session.
    pub fn unwrap(&mut self, bytes: &[u8]) -> Result<Response, Error> {
        self.require_established()?;
        self.open(bytes)
    }

    /// The Close Session datagram; the session is unusable afterwards. None if not established.
    pub fn close(&mut self) -> Option<Vec<u8>> {
        if self.state != State::Established {
            return None;
        }
        let req = crate::command::CloseSession(self.bmc_session_id).request();
        let out = self.wrap(&req).ok().map(|(_, b)| b);
        self.state = State::Closed;
        out
    }

    fn require_established(&self) -> Result<(), Error> {
        match self.state {
            State::Established => Ok(()),
            State::Closed => Err(Error::State("session closed")),
            State::Failed => Err(Error::State("session failed")),
            _ => Err(Error::State("session not established")),
        }
    }
}

/// Does `resp` answer `req` sent with `rq_seq`?
pub fn answers(req: &Request, rq_seq: u8, resp: &Response) -> bool {
    resp.netfn == req.netfn + 1 && resp.cmd == req.cmd && resp.rq_seq == rq_seq
}

/// The typed output of `cmd`, or its completion code as an error.
pub fn check<C: Command>(cmd: &C, resp: &Response) -> Result<C::Output, Error> {
    if resp.completion_code != 0 {
        return Err(Error::Completion {
            command: C::NAME,
            code: CompletionCode(resp.completion_code),
        });
    }
    cmd.parse(&resp.data)
}

/// Inbound sequence numbers: the highest accepted plus a bitmap of the 32 below it.
#[derive(Debug, Default, Clone)]
struct SeqWindow {
    started: bool,
    highest: u32,
    seen: u32,
}

impl SeqWindow {
    fn accept(&mut self, seq: u32) -> Result<(), Error> {
        let reject = Error::Sequence {
            got: seq,
            highest: self.highest,
        };
        if seq == 0 {
            return Err(reject);
        }
        if !self.started {
            // The BMC's first number is its own choice (normally 1).
            self.started = true;
            self.highest = seq;
            self.seen = 1;
            return Ok(());
        }
        if seq > self.highest {
            let ahead = seq - self.highest;
            if ahead > SEQ_AHEAD {
                return Err(reject);
            }
            self.seen = if ahead >= 32 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.highest = seq;
            return Ok(());
        }
        let behind = self.highest - seq;
        if behind >= SEQ_BEHIND || self.seen & (1 << behind) != 0 {
            return Err(reject);
        }
        self.seen |= 1 << behind;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_window() {
        let mut w = SeqWindow::default();
        assert!(w.accept(0).is_err());
        w.accept(1).unwrap();
        assert!(w.accept(1).is_err(), "replay");
        w.accept(3).unwrap();
        w.accept(2).unwrap(); // late but new
        assert!(w.accept(2).is_err());
        assert!(w.accept(3 + SEQ_AHEAD + 1).is_err(), "too far ahead");
        w.accept(3 + SEQ_AHEAD).unwrap();
        assert!(w.accept(1).is_err(), "too far behind or replay");
        w.accept(3 + SEQ_AHEAD - 1).unwrap();
    }
}
