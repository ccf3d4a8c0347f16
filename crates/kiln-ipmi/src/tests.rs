//! Session tests with byte vectors. The known answers were computed independently of this crate with
//! Python's `hmac`/`hashlib` and `cryptography` (AES-CBC) from the formulas of IPMI v2.0 §13.31–13.32
//! and §13.28.4; the same formulas are exercised against ipmitool and ipmi_sim in the integration tests.

use crate::command::Command;
use crate::command::{GetChassisStatus, GetDeviceId, SetSystemBootOption};
use crate::rakp::{AcceptedSession, OpenSessionResponse, Rakp2, Rakp4, RmcpStatus};
use crate::responder::Responder;
use crate::session::check;
use crate::wire::{self, PayloadType, Response};
use crate::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SIDM: u32 = 0x0A0B0C0D;
const SIDC: u32 = 0x11223344;
const GUID: &str = "a123456789abcdefa123456789abcdef";

fn rm() -> [u8; 16] {
    std::array::from_fn(|i| i as u8)
}
fn rc() -> [u8; 16] {
    std::array::from_fn(|i| 16 + i as u8)
}

struct Vectors {
    rakp2: &'static str,
    rakp3: &'static str,
    sik: &'static str,
    k1: &'static str,
    k2: &'static str,
    rakp4: &'static str,
}

const SUITE3: Vectors = Vectors {
    rakp2: "5cdd978fdf9c56fa092196ae96641ac4870e77ce",
    rakp3: "d0bab55d3abbc6253ec0fa57495068c8e8b2609a",
    sik: "122c77c4b11ccd93251cbae6c34a9cb6310da154",
    k1: "e4472be78f9a81fa68297aab696a7be8c97fc9f8",
    k2: "2b6552012a2517cb3b5713901d757a6efc7d8301",
    rakp4: "b057a35214d06f1a98739d8d",
};

const SUITE17: Vectors = Vectors {
    rakp2: "90ec1aa8703c12d53497d8efa2b8f3386fb871c7339a2118894c2e5bf079b5a0",
    rakp3: "f692d9350f377f6cecb3256331025972cb433cebf70d55d1638cd82048bd4bdc",
    sik: "e5935f7199865ad961063477b0662684e2ce9b1da8f2b8d41c5ce127d37e9bcf",
    k1: "dc4fe73d075306f6897115dd63257385e845c10404fa1d73991790c6a101bec2",
    k2: "2a4f969ea6dfa83066f36674fdc2fea289fa1a21da90303e9b5269b54ec5adb5",
    rakp4: "6753a9a7230ed45ad3fbcda70f918f08",
};

fn context(suite: CipherSuite) -> RakpContext<'static> {
    RakpContext {
        suite,
        console_session_id: SIDM,
        bmc_session_id: SIDC,
        console_random: rm(),
        bmc_random: rc(),
        bmc_guid: hex(GUID).try_into().unwrap(),
        role: 0x14,
        username: b"admin",
    }
}

#[test]
fn key_exchange_known_answers() {
    for (suite, v) in [
        (CipherSuite::Suite3, SUITE3),
        (CipherSuite::Suite17, SUITE17),
    ] {
        let ctx = context(suite);
        assert_eq!(*ctx.rakp2_auth_code(b"password"), hex(v.rakp2), "{suite:?}");
        assert_eq!(*ctx.rakp3_auth_code(b"password"), hex(v.rakp3), "{suite:?}");
        let sik = ctx.sik(b"password");
        assert_eq!(*sik, hex(v.sik), "{suite:?}");
        assert_eq!(ctx.rakp4_icv(&sik), hex(v.rakp4), "{suite:?}");
        let keys = SessionKeys::derive(suite, &sik);
        assert_eq!(keys.k1(), hex(v.k1), "{suite:?}");
        assert_eq!(keys.aes_key(), &hex(v.k2)[..16], "{suite:?}");
    }
}

/// A whole in-session packet, byte for byte (Get Chassis Status, rqSeq 2, session sequence 1, IV 0x42…).
#[test]
fn suite17_packet_known_answer() {
    let keys = SessionKeys::derive(CipherSuite::Suite17, &hex(SUITE17.sik));
    let msg = GetChassisStatus.request().encode(2);
    assert_eq!(msg, hex("2000e081080176"));
    let pkt = wire::encode_v20(PayloadType::Ipmi, SIDC, 1, &msg, Some((&keys, [0x42; 16])));
    assert_eq!(
        pkt,
        hex(
            "0600ff0706c044332211010000002000424242424242424242424242424242426f7770b210163f41f05e382c055bf015ffff020753d43308a9bffc9717534f50e2581a98"
        )
    );
}

/// Random source for sessions: console session ID SIDM, then Rm, then IVs of 0x42.
fn fixed_rng() -> impl FnMut(&mut [u8]) + Send + 'static {
    let mut calls = 0;
    move |buf: &mut [u8]| {
        calls += 1;
        match calls {
            1 => buf.copy_from_slice(&SIDM.to_le_bytes()),
            2 => buf.copy_from_slice(&rm()),
            _ => buf.fill(0x42),
        }
    }
}

fn creds(password: &str) -> Credentials {
    Credentials::new("admin", Password::new(password)).unwrap()
}

fn auth_caps_reply(rq_seq: u8) -> Vec<u8> {
    let r = Response {
        netfn: 0x07,
        cmd: 0x38,
        rq_seq,
        completion_code: 0,
        data: vec![0x01, 0x97, 0x04, 0x03, 0, 0, 0, 0],
    };
    wire::encode_v15_unauthenticated(&r.encode())
}

fn plain(pt: PayloadType, payload: Vec<u8>) -> Vec<u8> {
    wire::encode_v20(pt, 0, 0, &payload, None)
}

/// Drives the handshake by hand with the known vectors and checks every datagram we send.
#[test]
fn scripted_handshake_suite3_and_17() {
    for (suite, v) in [
        (CipherSuite::Suite3, SUITE3),
        (CipherSuite::Suite17, SUITE17),
    ] {
        let mut s = Session::with_rng(creds("password"), suite, fixed_rng());
        let first = s.next_request().unwrap();
        assert_eq!(
            first,
            hex("0600ff07 00 00000000 00000000 09 20 18 c8 81 04 38 8e 04 b1")
        );
        assert_eq!(
            s.handle_response(&auth_caps_reply(1)).unwrap(),
            Progress::Continue
        );

        let open = s.next_request().unwrap();
        assert_eq!(open[5], 0x10);
        let open_resp = OpenSessionResponse {
            tag: open[16],
            status: RmcpStatus::OK,
            max_privilege: 4,
            console_session_id: SIDM,
            accepted: Some(AcceptedSession {
                bmc_session_id: SIDC,
                auth: suite.auth_algorithm(),
                integrity: suite.integrity_algorithm(),
                confidentiality: 1,
            }),
        };
        // A stale capability reply is ignored, not fatal.
        assert_eq!(
            s.handle_response(&auth_caps_reply(1)).unwrap(),
            Progress::Ignored
        );
        let r = s.handle_response(&plain(PayloadType::OpenSessionResponse, open_resp.encode()));
        assert_eq!(r.unwrap(), Progress::Continue);

        let rakp1 = s.next_request().unwrap();
        let r1 = rakp::Rakp1::decode(&rakp1[16..]).unwrap();
        assert_eq!(
            (r1.bmc_session_id, r1.role, r1.console_random),
            (SIDC, 0x14, rm())
        );
        assert_eq!(r1.username, b"admin");
        let r2 = Rakp2 {
            tag: r1.tag,
            status: RmcpStatus::OK,
            console_session_id: SIDM,
            bmc_random: rc(),
            bmc_guid: hex(GUID).try_into().unwrap(),
            auth_code: hex(v.rakp2),
        };
        assert_eq!(
            s.handle_response(&plain(PayloadType::Rakp2, r2.encode()))
                .unwrap(),
            Progress::Continue
        );
        let rakp3 = s.next_request().unwrap();
        let r3 = rakp::Rakp3::decode(&rakp3[16..]).unwrap();
        assert_eq!(r3.auth_code, hex(v.rakp3), "{suite:?}");
        assert_eq!(r3.bmc_session_id, SIDC);

        let r4 = Rakp4 {
            tag: r3.tag,
            status: RmcpStatus::OK,
            console_session_id: SIDM,
            icv: hex(v.rakp4),
        };
        assert_eq!(
            s.handle_response(&plain(PayloadType::Rakp4, r4.encode()))
                .unwrap(),
            Progress::Continue
        );
        // Set Session Privilege Level, sealed with K1/K2: open it as the BMC would.
        let keys = SessionKeys::derive(suite, &hex(v.sik));
        let priv_pkt = s.next_request().unwrap();
        let p = wire::decode_v20(&priv_pkt, suite.icv_len()).unwrap();
        assert!(keys.verify_auth_code(p.integrity_data, p.auth_code));
        assert_eq!((p.session_id, p.sequence), (SIDC, 1));
        let (req, rq_seq) = Request::decode(&keys.decrypt(p.payload).unwrap()).unwrap();
        assert_eq!(
            (req.netfn, req.cmd, req.data.as_slice()),
            (0x06, 0x3B, &[4u8][..])
        );
        let reply = Response {
            netfn: 0x07,
            cmd: 0x3B,
            rq_seq,
            completion_code: 0,
            data: vec![4],
        };
        let reply = wire::encode_v20(
            PayloadType::Ipmi,
            SIDM,
            1,
            &reply.encode(),
            Some((&keys, [1; 16])),
        );
        assert_eq!(s.handle_response(&reply).unwrap(), Progress::Established);
        assert!(s.is_established());
        assert_eq!(s.next_request(), None);
    }
}

/// Runs the handshake against the in-crate responder; returns both ends.
fn establish(suite: CipherSuite, password: &str) -> Result<(Session, Responder), Error> {
    let mut bmc = Responder::new(&[CipherSuite::Suite3, CipherSuite::Suite17]);
    bmc.add_user("admin", "password");
    let mut s = Session::new(creds(password), suite);
    for _ in 0..10 {
        let out = s.next_request().expect("a step is pending");
        let reply = bmc.handle(&out).expect("responder answers");
        if s.handle_response(&reply)? == Progress::Established {
            return Ok((s, bmc));
        }
    }
    panic!("handshake did not finish in 10 steps");
}

fn exchange<C: Command>(s: &mut Session, bmc: &mut Responder, cmd: &C) -> Result<C::Output, Error> {
    let (_, bytes) = s.wrap(&cmd.request())?;
    let reply = bmc.handle(&bytes).expect("responder answers");
    check(cmd, &s.unwrap(&reply)?)
}

#[test]
fn sessions_against_responder_both_suites() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let (mut s, mut bmc) = establish(suite, "password").unwrap();
        let id = exchange(&mut s, &mut bmc, &GetDeviceId).unwrap();
        assert_eq!(id.manufacturer_id, 0x1291);
        assert!(
            !exchange(&mut s, &mut bmc, &GetChassisStatus)
                .unwrap()
                .power_on
        );
        exchange(&mut s, &mut bmc, &ChassisControl::PowerUp).unwrap();
        assert!(
            exchange(&mut s, &mut bmc, &GetChassisStatus)
                .unwrap()
                .power_on
        );
        let flags = BootFlags {
            valid: true,
            persistent: true,
            efi: true,
            device: BootDevice::Pxe,
        };
        exchange(&mut s, &mut bmc, &SetSystemBootOption::flags(flags)).unwrap();
        assert_eq!(bmc.chassis.boot_flags, [0xE0, 0x04, 0, 0, 0]);
        assert_eq!(
            exchange(&mut s, &mut bmc, &command::GetBootFlags).unwrap(),
            flags
        );
        // Unknown command: a named completion code.
        let bad = Request {
            netfn: 0x30,
            cmd: 0x99,
            data: vec![],
        };
        let (_, bytes) = s.wrap(&bad).unwrap();
        let resp = s.unwrap(&bmc.handle(&bytes).unwrap()).unwrap();
        assert_eq!(resp.completion_code, 0xC1);
        // Close Session ends it on both sides.
        assert_eq!(bmc.session_count(), 1);
        let close = s.close().unwrap();
        assert!(bmc.handle(&close).is_some());
        assert_eq!(bmc.session_count(), 0);
        assert!(s.wrap(&GetChassisStatus.request()).is_err());
    }
}

#[test]
fn wrong_password_is_auth_failure_with_abort_packet() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let mut bmc = Responder::new(&[suite]);
        bmc.add_user("admin", "password");
        let mut s = Session::new(creds("passw0rd"), suite);
        let mut result = Ok(Progress::Continue);
        while let Ok(Progress::Continue) = result {
            let out = s.next_request().unwrap();
            result = s.handle_response(&bmc.handle(&out).unwrap());
        }
        let err = result.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth, "{err}");
        assert!(!err.to_string().contains("passw0rd"));
        // The abort RAKP 3 makes the BMC drop the half-open session.
        assert_eq!(bmc.session_count(), 1);
        assert!(bmc.handle(s.abort_packet().unwrap()).is_none());
        assert_eq!(bmc.session_count(), 0);
        assert!(s.next_request().is_none());
    }
}

#[test]
fn unknown_user_and_unsupported_suite() {
    let mut bmc = Responder::new(&[CipherSuite::Suite3]);
    bmc.add_user("admin", "password");
    let mut s = Session::new(
        Credentials::new("nobody", Password::new("password")).unwrap(),
        CipherSuite::Suite3,
    );
    let err = loop {
        let out = s.next_request().unwrap();
        match s.handle_response(&bmc.handle(&out).unwrap()) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.to_string().contains("unauthorized name"), "{err}");

    let mut s = Session::new(creds("password"), CipherSuite::Suite17);
    let err = loop {
        let out = s.next_request().unwrap();
        match s.handle_response(&bmc.handle(&out).unwrap()) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::UnsupportedCipherSuite {
                suite: CipherSuite::Suite17,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Unsupported);
}

#[test]
fn tampered_auth_code_and_payload_rejected() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let (mut s, mut bmc) = establish(suite, "password").unwrap();
        let (_, bytes) = s.wrap(&GetChassisStatus.request()).unwrap();
        let reply = bmc.handle(&bytes).unwrap();
        // Every single-bit flip after the RMCP header is caught (integrity or framing).
        for i in 4..reply.len() {
            let mut bad = reply.clone();
            bad[i] ^= 0x01;
            assert!(
                s.unwrap(&bad).is_err(),
                "{suite:?}: flip at byte {i} accepted"
            );
        }
        // The untouched reply still opens: the rejected forgeries did not move the window.
        assert!(s.unwrap(&reply).is_ok());
        // A forged AuthCode is named as an integrity failure.
        let mut forged = reply.clone();
        let n = forged.len();
        forged[n - 1] ^= 0xFF;
        assert_eq!(s.unwrap(&forged).unwrap_err(), Error::Integrity);
    }
}

#[test]
fn replayed_and_far_sequence_numbers_rejected() {
    let (mut s, mut bmc) = establish(CipherSuite::Suite17, "password").unwrap();
    let (_, bytes) = s.wrap(&GetChassisStatus.request()).unwrap();
    let reply = bmc.handle(&bytes).unwrap();
    s.unwrap(&reply).unwrap();
    let err = s.unwrap(&reply).unwrap_err();
    assert!(matches!(err, Error::Sequence { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Protocol);

    // A validly sealed packet far ahead of the window: let the BMC's sequence run on unread.
    let mut far = None;
    for _ in 0..40 {
        let (_, b) = s.wrap(&GetChassisStatus.request()).unwrap();
        far = bmc.handle(&b);
    }
    let err = s.unwrap(&far.unwrap()).unwrap_err();
    assert!(matches!(err, Error::Sequence { .. }), "{err}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let samples: Vec<Vec<u8>> = vec![
        vec![],
        vec![6],
        vec![6, 0, 0xff, 7],
        vec![6, 0, 0xff, 7, 6],
        vec![6, 0, 0xff, 7, 6, 0xC0, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff],
        vec![6, 0, 0xff, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 1],
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        vec![0xAA; 64],
    ];
    for g in &samples {
        let mut s = Session::new(creds("password"), CipherSuite::Suite17);
        assert!(s.handle_response(g).is_err(), "{g:?}");
        let (mut est, _) = establish(CipherSuite::Suite3, "password").unwrap();
        assert!(est.unwrap(g).is_err(), "{g:?}");
    }
}

#[test]
fn wrong_step_payload_is_ignored_then_right_one_accepted() {
    let mut s = Session::new(creds("password"), CipherSuite::Suite3);
    let mut bmc = Responder::new(&[CipherSuite::Suite3]);
    bmc.add_user("admin", "password");
    let caps = bmc.handle(&s.next_request().unwrap()).unwrap();
    s.handle_response(&caps).unwrap();
    let open = bmc.handle(&s.next_request().unwrap()).unwrap();
    // A RAKP 4 shape while waiting for the Open Session Response: not ours, keep waiting.
    let stray = plain(PayloadType::Rakp4, vec![9, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(s.handle_response(&stray).unwrap(), Progress::Ignored);
    assert_eq!(s.handle_response(&open).unwrap(), Progress::Continue);
}

#[test]
fn session_debug_has_no_secrets() {
    let (s, _) = establish(CipherSuite::Suite17, "password").unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("password"), "{shown}");
}

/// The pure types are Send, so the async client can hold them across awaits.
#[test]
fn session_is_send() {
    fn is_send<T: Send>() {}
    is_send::<Session>();
}
