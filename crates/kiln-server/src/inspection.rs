//! Inspection-only boots (`--discovery inspect`): a MAC that is not enrolled netboots the
//! agent with `kiln.inspect=1`; the agent takes a ticket (`POST /v1/agent/inspect/claim`)
//! and spends it on one inventory report (`POST /v1/agent/inspect/inventory`), which is kept
//! with the discovered MAC; then it powers the machine off.
//!
//! An unknown MAC is anyone on the provisioning network, so a ticket is worth little: it names
//! one MAC that is not enrolled, is good for one report within [`TICKET_TTL_MS`], and is
//! nothing to the workflow API (the engine does not know it: `next`, `report`, `seed`, `disk`
//! refuse it). In reservation mode it is only issued to, and spent from, the address the
//! MAC's inspection lease holds. One ticket per MAC per [`TICKET_TTL_MS`], at most
//! [`MAX_PER_SOURCE`] live per source address and [`MAX_DISCOVERED`] in all; every ticket
//! and report is an event, every refusal an `http.refused` event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use kiln_api::discovery::{Inspection, MAX_DISCOVERED, MAX_INSPECTION_JSON};
use kiln_api::event_data::EventData;
use kiln_api::inventory::Inventory;
use kiln_http::{ApiError, ApiErrorKind};
use kiln_model::workflow::{ClaimRequest, Claimed};
use kiln_model::{DiscoveredMac, Event, MacAddr, SharedInventory};
use kiln_store::Store;

/// How long a ticket is good for, and how long a MAC waits for its next one.
pub const TICKET_TTL_MS: u64 = 10 * 60 * 1000;
/// Live tickets one source address may hold (proxy mode, where addresses are not ours).
pub const MAX_PER_SOURCE: usize = 4;

/// Why a ticket was not issued or not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// the MAC already holds a ticket, or had one less than 10 minutes ago
    #[error("{0} had an inspection ticket less than 10 minutes ago")]
    TooSoon(MacAddr),
    /// this source holds too many live tickets
    #[error("{0} holds {MAX_PER_SOURCE} live inspection tickets already")]
    SourceFull(IpAddr),
    /// too many tickets live at once
    #[error("too many inspections at once")]
    Full,
    /// unknown, spent or expired ticket
    #[error("unknown, spent or expired inspection ticket")]
    Unknown,
    /// the ticket is spent from another address than the one it was issued to
    #[error("{mac}'s inspection ticket was issued to another address than {peer}")]
    WrongPeer { mac: MacAddr, peer: IpAddr },
}

#[derive(Debug, Clone)]
struct Ticket {
    token_hash: String,
    peer: IpAddr,
    issued_ms: u64,
    spent: bool,
}

/// Live tickets by MAC (pure: times and token hashes are passed in).
#[derive(Debug, Default)]
pub struct Tickets {
    by_mac: HashMap<MacAddr, Ticket>,
}

impl Tickets {
    fn prune(&mut self, now_ms: u64) {
        self.by_mac
            .retain(|_, t| now_ms.saturating_sub(t.issued_ms) < TICKET_TTL_MS);
    }

    /// Records a ticket for `mac` (its token's hash) issued to `peer`.
    pub fn issue(
        &mut self,
        mac: MacAddr,
        peer: IpAddr,
        token_hash: String,
        now_ms: u64,
    ) -> Result<(), TicketError> {
        self.prune(now_ms);
        if self.by_mac.contains_key(&mac) {
            return Err(TicketError::TooSoon(mac));
        }
        let from_peer = self
            .by_mac
            .values()
            .filter(|t| t.peer == peer && !t.spent)
            .count();
        if from_peer >= MAX_PER_SOURCE {
            return Err(TicketError::SourceFull(peer));
        }
        if self.by_mac.len() >= MAX_DISCOVERED {
            return Err(TicketError::Full);
        }
        self.by_mac.insert(
            mac,
            Ticket {
                token_hash,
                peer,
                issued_ms: now_ms,
                spent: false,
            },
        );
        Ok(())
    }

    /// Spends the ticket whose token hashes to `token_hash`, from `peer`: its MAC.
    pub fn spend(
        &mut self,
        token_hash: &str,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<MacAddr, TicketError> {
        self.prune(now_ms);
        let (mac, ticket) = self
            .by_mac
            .iter_mut()
            .find(|(_, t)| t.token_hash == token_hash && !t.spent)
            .ok_or(TicketError::Unknown)?;
        if ticket.peer != peer {
            return Err(TicketError::WrongPeer { mac: *mac, peer });
        }
        ticket.spent = true;
        Ok(*mac)
    }
}

/// The server's side of inspection: tickets, the lease check, and where reports go.
pub struct Inspector {
    pub store: Arc<dyn Store>,
    /// Enrolled machines: they are never inspected (their agent claims a real credential).
    pub inventory: SharedInventory,
    /// Reservation mode: the DHCP service's inspection leases; a ticket is only issued to,
    /// and spent from, the address the MAC's lease holds. `None` in proxy mode.
    pub leases: Option<kiln_dhcp::SharedLeases>,
    pub tickets: Mutex<Tickets>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn refusal(e: TicketError) -> ApiError {
    let kind = match e {
        TicketError::TooSoon(_) => ApiErrorKind::Conflict,
        TicketError::SourceFull(_) | TicketError::Full => ApiErrorKind::TooMany,
        TicketError::Unknown => ApiErrorKind::Unauthorized,
        TicketError::WrongPeer { .. } => ApiErrorKind::Forbidden,
    };
    ApiError::refused(kind, None, e.to_string())
}

fn store_error(e: kiln_store::StoreError) -> ApiError {
    tracing::warn!("store: {e}");
    ApiError::internal("internal error")
}

impl Inspector {
    pub fn new(
        store: Arc<dyn Store>,
        inventory: SharedInventory,
        leases: Option<kiln_dhcp::SharedLeases>,
    ) -> Inspector {
        Inspector {
            store,
            inventory,
            leases,
            tickets: Mutex::new(Tickets::default()),
        }
    }

    /// In reservation mode, `peer` must be `mac`'s inspection lease.
    fn check_lease(&self, mac: &MacAddr, peer: IpAddr, now: u64) -> Result<(), ApiError> {
        let Some(leases) = &self.leases else {
            return Ok(());
        };
        let held = leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held(mac, now);
        if held.map(IpAddr::V4) != Some(peer) {
            return Err(ApiError::refused(
                ApiErrorKind::Forbidden,
                None,
                format!("{mac} holds no inspection lease for {peer}"),
            ));
        }
        Ok(())
    }

    pub fn claim(&self, req: &ClaimRequest, peer: IpAddr) -> Result<Claimed, ApiError> {
        let mac = req.mac;
        if let Some(hw) = self.inventory.load().by_mac(&mac) {
            return Err(ApiError::refused(
                ApiErrorKind::Forbidden,
                Some(hw.hostname.clone()),
                format!("{mac} is enrolled: it is not inspected"),
            ));
        }
        let now = now_ms();
        self.check_lease(&mac, peer, now)?;
        let token = kiln_engine::credential::new_token();
        let hash = kiln_engine::credential::token_hash(&token);
        self.tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .issue(mac, peer, hash, now)
            .map_err(refusal)?;
        self.store
            .append_events(&[Event::of(EventData::InspectionClaimed { mac, peer })
                .with_mac(mac)
                .with_ip(peer)])
            .map_err(store_error)?;
        Ok(Claimed {
            token,
            workflow: "inspection".into(),
        })
    }

    pub fn report(&self, token: &str, peer: IpAddr, inventory: Inventory) -> Result<(), ApiError> {
        inventory
            .check()
            .map_err(|e| ApiError::plain(ApiErrorKind::Invalid, format!("inventory: {e}")))?;
        let size = serde_json::to_string(&inventory).map_or(usize::MAX, |j| j.len());
        if size > MAX_INSPECTION_JSON {
            return Err(ApiError::plain(
                ApiErrorKind::Invalid,
                format!("inventory: {size} bytes, at most {MAX_INSPECTION_JSON} kept"),
            ));
        }
        let now = now_ms();
        let hash = kiln_engine::credential::token_hash(token);
        let mac = self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spend(&hash, peer, now)
            .map_err(refusal)?;
        // Enrolled since the ticket was issued: its own agent reports from now on.
        if self.inventory.load().by_mac(&mac).is_some() {
            return Err(ApiError::refused(
                ApiErrorKind::Forbidden,
                None,
                format!("{mac} is enrolled: it is not inspected"),
            ));
        }
        let summary = inventory.summary();
        self.store
            .record_discovered(&[inspected(mac, now, inventory)])
            .map_err(store_error)?;
        self.store
            .append_events(&[Event::of(EventData::InspectionReported { mac, summary })
                .with_mac(mac)
                .with_ip(peer)])
            .map_err(store_error)?;
        Ok(())
    }
}

/// A discovery record carrying only the inspection: `count` 0 is no sighting, so merging keeps
/// what DHCP saw of the MAC.
fn inspected(mac: MacAddr, now: u64, inventory: Inventory) -> DiscoveredMac {
    DiscoveredMac {
        mac,
        first_seen_ms: now,
        last_seen_ms: now,
        count: 0,
        client: kiln_model::event::DhcpClient::Plain,
        arch: None,
        vendor_class: None,
        user_class: None,
        inspection: Some(Inspection {
            at_ms: now,
            inventory,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_ticket_is_spent_once_from_its_address_and_a_mac_waits_for_the_next() {
        let mut t = Tickets::default();
        t.issue(mac(1), ip("10.0.0.200"), "h1".into(), 0).unwrap();
        assert_eq!(
            t.issue(mac(1), ip("10.0.0.200"), "h2".into(), 1000),
            Err(TicketError::TooSoon(mac(1)))
        );
        assert_eq!(
            t.spend("h1", ip("10.0.0.201"), 2000),
            Err(TicketError::WrongPeer {
                mac: mac(1),
                peer: ip("10.0.0.201")
            })
        );
        assert_eq!(
            t.spend("nope", ip("10.0.0.200"), 2000),
            Err(TicketError::Unknown)
        );
        assert_eq!(t.spend("h1", ip("10.0.0.200"), 2000), Ok(mac(1)));
        assert_eq!(
            t.spend("h1", ip("10.0.0.200"), 3000),
            Err(TicketError::Unknown),
            "spent"
        );
        // Spent or not, the MAC waits out the period; then it may be inspected again.
        assert!(
            t.issue(mac(1), ip("10.0.0.200"), "h3".into(), TICKET_TTL_MS - 1)
                .is_err()
        );
        t.issue(mac(1), ip("10.0.0.200"), "h3".into(), TICKET_TTL_MS)
            .unwrap();
        // An unspent ticket expires.
        assert_eq!(
            t.spend("h3", ip("10.0.0.200"), 2 * TICKET_TTL_MS),
            Err(TicketError::Unknown)
        );
    }

    #[test]
    fn one_source_holds_a_few_live_tickets_and_all_of_them_are_bounded() {
        let mut t = Tickets::default();
        let src = ip("10.0.0.9");
        for n in 0..MAX_PER_SOURCE as u8 {
            t.issue(mac(n), src, format!("h{n}"), 0).unwrap();
        }
        assert_eq!(
            t.issue(mac(99), src, "x".into(), 0),
            Err(TicketError::SourceFull(src))
        );
        // A spent ticket no longer counts against its source.
        t.spend("h0", src, 1).unwrap();
        t.issue(mac(99), src, "x".into(), 1).unwrap();
        let mut all = Tickets::default();
        for n in 0..MAX_DISCOVERED {
            let m = MacAddr([2, 0, 0, 0, (n >> 8) as u8, n as u8]);
            let peer = IpAddr::from([10, 1, (n >> 8) as u8, n as u8]);
            all.issue(m, peer, format!("h{n}"), 0).unwrap();
        }
        assert_eq!(
            all.issue(mac(1), ip("10.9.9.9"), "y".into(), 0),
            Err(TicketError::Full)
        );
    }
}
