//! Who may speak for a machine. Pure: no clock, no I/O.
//!
//! - The agent *claims* its credential once per netboot round (Kiln re-arms it when it
//!   powers the machine into netboot itself); a second claimant is refused, so a host that
//!   raced the machine is seen, and the machine's own agent cannot be silently replaced.
//!   Later calls must come from the address that claimed. The store keeps only SHA-256.
//! - The installed OS phones home to a URL signed with the server key (HMAC of the workflow
//!   id): nothing to store, and the signature exists only inside the seed.

use kiln_model::event::EventData;
use std::net::IpAddr;

use hmac::{KeyInit, Mac};
use kiln_model::workflow::{AgentClaim, PHONE_HOME_SIGNATURE_MARKER, Workflow, WorkflowState};
use sha2::{Digest, Sha256};

use crate::machine::Effects;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the workflow is {0}")]
    Ended(WorkflowState),
    /// Another agent run (or another host) holds this netboot round's credential.
    #[error("the agent credential of {machine} was already claimed from {by}")]
    AlreadyClaimed { machine: String, by: IpAddr },
    /// A call with a valid credential from another address than the one that claimed it
    /// (or, in reservation mode, than the machine's reserved address).
    #[error("calls for {machine} are only taken from {expected}")]
    WrongPeer { machine: String, expected: IpAddr },
    /// The cloud-init seed leaves once per workflow.
    #[error("the seed of {machine} was already handed out")]
    SeedServed { machine: String },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh credential: 256 random bits, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex(&bytes)
}

/// What the store keeps of a credential.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Whether `token` could be a credential at all (64 lower-case hex digits): anything else is
/// refused before a store lookup.
pub fn plausible_token(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The agent run `run` at `peer` claims the workflow's credential. The same run may claim
/// again (its answer was lost): the old token then dies with the new one issued.
pub fn claim(
    wf: &mut Workflow,
    peer: IpAddr,
    run: &str,
    now: u64,
) -> Result<Effects, CredentialError> {
    if wf.state.is_terminal() {
        return Err(CredentialError::Ended(wf.state));
    }
    let mut fx = Effects::default();
    match &wf.agent_claim {
        Some(c) if c.run != run || c.peer != peer => {
            return Err(CredentialError::AlreadyClaimed {
                machine: wf.hardware.clone(),
                by: c.peer,
            });
        }
        Some(_) => fx.event(EventData::AgentClaimed {
            workflow: wf.id.clone(),
            peer,
            again: true,
        }),
        None => fx.event(EventData::AgentClaimed {
            workflow: wf.id.clone(),
            peer,
            again: false,
        }),
    }
    wf.agent_claim = Some(AgentClaim {
        at_ms: now,
        peer,
        run: run.to_string(),
    });
    wf.updated_ms = now;
    Ok(fx)
}

/// Kiln powers the machine into netboot itself: a new netboot round, so whoever claimed
/// before (nobody, or a host that raced the machine) loses the credential.
pub fn rearm(wf: &mut Workflow) -> bool {
    wf.agent_claim.take().is_some()
}

/// Whether a call with the workflow's credential may come from `peer`.
pub fn check_peer(wf: &Workflow, peer: IpAddr) -> Result<(), CredentialError> {
    match &wf.agent_claim {
        Some(c) if c.peer != peer => Err(CredentialError::WrongPeer {
            machine: wf.hardware.clone(),
            expected: c.peer,
        }),
        _ => Ok(()),
    }
}

/// Marks the seed as handed out; a second time is refused.
pub fn take_seed(wf: &mut Workflow, now: u64) -> Result<Effects, CredentialError> {
    if wf.state.is_terminal() {
        return Err(CredentialError::Ended(wf.state));
    }
    if wf.seed_served_ms.is_some() {
        return Err(CredentialError::SeedServed {
            machine: wf.hardware.clone(),
        });
    }
    wf.seed_served_ms = Some(now);
    let mut fx = Effects::default();
    fx.event(EventData::AgentSeed {
        workflow: wf.id.clone(),
    });
    Ok(fx)
}

/// The server's key for phone-home signatures (32 random bytes, kept 0600 by the caller).
#[derive(Clone)]
pub struct PhoneHomeKey([u8; 32]);

impl std::fmt::Debug for PhoneHomeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhoneHomeKey(<redacted>)")
    }
}

type HmacSha256 = hmac::Hmac<Sha256>;

impl PhoneHomeKey {
    pub fn generate() -> PhoneHomeKey {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        PhoneHomeKey(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> PhoneHomeKey {
        PhoneHomeKey(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, workflow: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"kiln phone-home\0");
        mac.update(workflow.as_bytes());
        mac
    }

    /// The signature in the workflow's phone-home URL.
    pub fn sign(&self, workflow: &str) -> String {
        hex(&self.mac(workflow).finalize().into_bytes())
    }

    /// Constant-time check of a phone-home URL's signature.
    pub fn verify(&self, workflow: &str, signature: &str) -> bool {
        let Some(bytes) = unhex(signature) else {
            return false;
        };
        self.mac(workflow).verify_slice(&bytes).is_ok()
    }

    /// `text` with the rendered placeholder replaced by the workflow's signature.
    pub fn fill(&self, workflow: &str, text: &str) -> String {
        if text.contains(PHONE_HOME_SIGNATURE_MARKER) {
            text.replace(PHONE_HOME_SIGNATURE_MARKER, &self.sign(workflow))
        } else {
            text.to_string()
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The phone-home URL a template renders: the signature is put in when the server hands it out.
pub fn phone_home_url_template(server_url: &str, workflow: &str) -> String {
    format!("{server_url}/v1/phone-home/{workflow}/{PHONE_HOME_SIGNATURE_MARKER}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::EventKind;
    use kiln_model::template::parse_template;

    fn wf() -> Workflow {
        let t =
            parse_template("t", "name: t\nactions:\n  - name: boot\n    kind: reboot\n").unwrap();
        crate::machine::new_workflow("n1-1".into(), "n1".into(), &t, t.actions.clone(), 0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_credential_is_claimed_once_per_netboot_round() {
        let mut w = wf();
        let fx = claim(&mut w, ip("10.0.0.11"), "boot-1", 5).unwrap();
        assert_eq!(fx.events[0].kind(), EventKind::AgentClaimed);
        // Another agent run, even from the same address, is a second claimant.
        assert_eq!(
            claim(&mut w, ip("10.0.0.11"), "boot-2", 6),
            Err(CredentialError::AlreadyClaimed {
                machine: "n1".into(),
                by: ip("10.0.0.11")
            })
        );
        // Another host naming the same run is refused too.
        assert!(claim(&mut w, ip("10.0.0.99"), "boot-1", 6).is_err());
        // The same run again (lost answer) gets a new credential.
        assert!(claim(&mut w, ip("10.0.0.11"), "boot-1", 7).is_ok());
        // Kiln powering it into netboot opens a new round.
        assert!(rearm(&mut w));
        assert!(claim(&mut w, ip("10.0.0.11"), "boot-2", 8).is_ok());
    }

    #[test]
    fn calls_are_bound_to_the_claiming_address() {
        let mut w = wf();
        claim(&mut w, ip("10.0.0.11"), "r", 1).unwrap();
        assert!(check_peer(&w, ip("10.0.0.11")).is_ok());
        assert_eq!(
            check_peer(&w, ip("10.0.0.99")),
            Err(CredentialError::WrongPeer {
                machine: "n1".into(),
                expected: ip("10.0.0.11")
            })
        );
    }

    #[test]
    fn the_seed_leaves_once() {
        let mut w = wf();
        assert!(take_seed(&mut w, 1).is_ok());
        assert!(matches!(
            take_seed(&mut w, 2),
            Err(CredentialError::SeedServed { .. })
        ));
    }

    #[test]
    fn phone_home_signatures_are_per_workflow_and_per_key() {
        let k = PhoneHomeKey::from_bytes([7; 32]);
        let sig = k.sign("n1-1");
        assert!(plausible_token(&sig));
        assert!(k.verify("n1-1", &sig));
        assert!(!k.verify("n1-2", &sig));
        assert!(!PhoneHomeKey::from_bytes([8; 32]).verify("n1-1", &sig));
        assert!(!k.verify("n1-1", "zz"));
        assert!(!k.verify("n1-1", &sig.to_uppercase().replace('A', "é")));
        let url = phone_home_url_template("http://k", "n1-1");
        assert_eq!(
            k.fill("n1-1", &url),
            format!("http://k/v1/phone-home/n1-1/{sig}")
        );
        assert!(!format!("{k:?}").contains("07"));
    }

    #[test]
    fn tokens_are_stored_as_their_hash() {
        let t = new_token();
        assert!(plausible_token(&t));
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
        assert_ne!(token_hash(&t), t);
        assert!(!plausible_token("abc"));
    }
}
