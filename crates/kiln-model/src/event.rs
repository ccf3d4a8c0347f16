//! What happened to a machine, as the operator sees it in `kiln events`.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use kiln_api::EventKind;
pub use kiln_api::event_data::*;

use crate::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Hostname of the machine, once known (the boot services know only MAC or IP).
    pub machine: Option<String>,
    pub mac: Option<MacAddr>,
    pub ip: Option<IpAddr>,
    /// Dotted kind, protocol first: `dhcp.offer`, `tftp.sent`, `http.script`.
    pub kind: EventKind,
    /// One line for people, rendered from `data` when there is data.
    pub detail: String,
    /// The typed facts; absent in records written before events had them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<EventData>,
}

impl Event {
    /// An event now: its kind follows from the data, its detail is the data's wording.
    pub fn of(data: EventData) -> Self {
        let data = data.escaped();
        Event {
            kind: data.kind(),
            detail: escape_controls(data.to_string()),
            data: Some(data),
            ..Event::now(EventKind::Unknown, "")
        }
    }

    /// An event with words only, as records before typed data were. Emitters use
    /// [`Event::of`]; this is for tests and tools that need a bare record.
    pub fn now(kind: EventKind, detail: impl Into<String>) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Event {
            at_ms,
            machine: None,
            mac: None,
            ip: None,
            kind,
            detail: escape_controls(detail.into()),
            data: None,
        }
    }

    /// Whether the kind is the one the data says (always, for events built by
    /// [`Event::of`]; a record edited by hand may not be).
    pub fn is_consistent(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.kind() == self.kind)
    }

    /// Whether the event records anonymous traffic from the provisioning network (a DHCP
    /// exchange, a TFTP transfer, an HTTP fetch) rather than the machine's workflow or BMC:
    /// anyone can cause those, so their history is bounded apart.
    pub fn is_wire(&self) -> bool {
        self.kind.is_wire()
    }

    pub fn with_mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    pub fn with_machine(mut self, machine: impl Into<String>) -> Self {
        self.machine = Some(machine.into());
        self
    }
}

/// Where the boot services send their events. Implementations must not block:
/// they are called on the packet path.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: Event);
}

/// Where the DHCP service reports MACs that are not enrolled (discovery). Implementations must
/// not block (the packet path) and must bound what they keep: anyone can send DHCP.
pub trait DiscoverySink: Send + Sync + 'static {
    fn seen(&self, sighting: crate::DiscoveredMac);
}

/// Drops every event (tests, tools).
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_details_are_escaped() {
        let e = Event::now(
            EventKind::HttpScript,
            "GET /ipxe/\x1b[2J\x1b]0;pwned\x07/x\r\nfake line\u{9b}31m",
        );
        assert!(!e.detail.chars().any(char::is_control), "{:?}", e.detail);
        assert_eq!(
            e.detail,
            "GET /ipxe/\\u{1b}[2J\\u{1b}]0;pwned\\u{7}/x\\r\\nfake line\\u{9b}31m"
        );
        let plain = Event::now(EventKind::DhcpOffer, "offered 10.0.0.5 — ok");
        assert_eq!(plain.detail, "offered 10.0.0.5 — ok");
    }

    #[test]
    fn a_record_from_before_typed_data_still_reads() {
        // As kiln-store wrote it before events carried data.
        let old = r#"{"at_ms":1795312245123,"machine":"n1","mac":"52:54:00:aa:00:01","ip":"10.9.0.11","kind":"bmc.done","detail":"power on into netboot: was off: powered on (confirmed)"}"#;
        let e: Event = serde_json::from_str(old).unwrap();
        assert_eq!(e.kind, EventKind::BmcDone);
        assert_eq!(e.data, None);
        assert!(e.is_consistent());
        assert_eq!(
            e.detail,
            "power on into netboot: was off: powered on (confirmed)"
        );
        // Written back without data, it is the same record.
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::from_str::<serde_json::Value>(old).unwrap()
        );
    }

    #[test]
    fn a_typed_event_takes_kind_and_words_from_its_data() {
        let e = Event::of(EventData::BmcDone {
            task: BmcTask::Netboot,
            result: "was on: cycled, on again (confirmed)".into(),
        })
        .with_machine("n1");
        assert_eq!(e.kind, EventKind::BmcDone);
        assert_eq!(
            e.detail,
            "power on into netboot: was on: cycled, on again (confirmed)"
        );
        assert!(e.is_consistent());
        let json = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        // A record whose kind was edited away from its data is caught.
        let mut wrong = e;
        wrong.kind = EventKind::BmcFailed;
        assert!(!wrong.is_consistent());
    }

    #[test]
    fn typed_events_escape_what_a_client_sent() {
        let e = Event::of(EventData::ApiRefused {
            method: "GET".into(),
            path: "/api/v1/\x1b]0;pwned\x07".into(),
            peer: "10.0.0.9".parse().unwrap(),
            reason: "no token".into(),
        });
        assert!(!e.detail.chars().any(char::is_control), "{:?}", e.detail);
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains('\u{1b}'), "{json}");
        assert!(json.contains(r"\\u{1b}"), "{json}");
    }
}
