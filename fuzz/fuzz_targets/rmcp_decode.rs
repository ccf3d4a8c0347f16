//! Arbitrary bytes as every IPMI/RMCP+ reply the client decodes: framing, RAKP payloads, command
//! responses, AES payloads, the handshake at each step, and an established session's unwrap (both raw
//! and as bit flips of a genuine reply). Anything may fail; nothing may panic.
#![no_main]

use kiln_ipmi::command::{
    Command, GetBootFlags, GetChannelAuthCapabilities, GetChassisStatus, GetDeviceId,
    SetSessionPrivilege,
};
use kiln_ipmi::rakp::{OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4};
use kiln_ipmi::responder::Responder;
use kiln_ipmi::wire::{self, Request, Response};
use kiln_ipmi::{CipherSuite, Credentials, Password, Progress, Session, SessionKeys};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

struct Established {
    session: Session,
    bmc: Responder,
    genuine_reply: Vec<u8>,
}

fn establish(suite: CipherSuite) -> Established {
    let mut bmc = Responder::new(&[suite]);
    bmc.add_user("admin", "password");
    let creds = Credentials::new("admin", Password::new("password")).unwrap();
    let mut session = Session::new(creds, suite);
    while let Some(out) = session.next_request() {
        let reply = bmc.handle(&out).unwrap();
        if session.handle_response(&reply).unwrap() == Progress::Established {
            break;
        }
    }
    let (_, req) = session.wrap(&GetChassisStatus.request()).unwrap();
    let genuine_reply = bmc.handle(&req).unwrap();
    Established {
        session,
        bmc,
        genuine_reply,
    }
}

thread_local! {
    static SESSIONS: RefCell<Vec<Established>> =
        RefCell::new(vec![establish(CipherSuite::Suite3), establish(CipherSuite::Suite17)]);
}

fuzz_target!(|data: &[u8]| {
    for len in [0, 12, 16] {
        let _ = wire::decode_v20(data, len);
    }
    let _ = wire::decode_v15(data);
    let _ = Response::decode(data);
    let _ = Request::decode(data);
    let _ = OpenSessionRequest::decode(data);
    let _ = OpenSessionResponse::decode(data);
    let _ = Rakp1::decode(data);
    let _ = Rakp2::decode(data);
    let _ = Rakp3::decode(data);
    let _ = Rakp4::decode(data);
    let _ = GetChannelAuthCapabilities.parse(data);
    let _ = GetDeviceId.parse(data);
    let _ = GetChassisStatus.parse(data);
    let _ = GetBootFlags.parse(data);
    let _ = SetSessionPrivilege(4).parse(data);
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let _ = SessionKeys::derive(suite, &[7; 32]).decrypt(data);
        // The handshake's first step.
        let creds = Credentials::new("admin", Password::new("password")).unwrap();
        let _ = Session::new(creds, suite).handle_response(data);
    }
    SESSIONS.with(|s| {
        for e in s.borrow_mut().iter_mut() {
            let _ = e.session.unwrap(data);
            let mut flipped = e.genuine_reply.clone();
            for (b, x) in flipped.iter_mut().zip(data) {
                *b ^= x;
            }
            let _ = e.session.unwrap(&flipped);
            // The BMC side decodes too.
            let _ = e.bmc.handle(data);
        }
    });
});
