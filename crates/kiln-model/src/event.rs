//! What happened to a machine, as the operator sees it in `kiln events`.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use kiln_api::EventKind;

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
    pub detail: String,
}

impl Event {
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
        }
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

/// Control characters written as escapes (`\u{1b}`, `\n`): a detail often quotes what a
/// client on the provisioning network sent (a request path, a DHCP option), and an escape
/// sequence must not reach an operator's terminal through `kiln events`.
pub fn escape_controls(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Where the boot services send their events. Implementations must not block:
/// they are called on the packet path.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: Event);
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
}
