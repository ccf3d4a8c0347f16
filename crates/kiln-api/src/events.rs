//! Events as the admin API shows them (`GET /api/v1/events`, the SSE stream, and `kiln events
//! -o json`): the stored record with an RFC 3339 time beside the milliseconds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Increasing; `after=` this id gives the events that followed.
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// The same time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Hostname of the machine, once known (the boot services know only MAC or IP).
    pub machine: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    /// Dotted kind, protocol first: `dhcp.offer`, `tftp.sent`, `workflow.cancelled`
    /// (`unknown` for a kind this client's version does not know).
    pub kind: crate::EventKind,
    /// One line for people, rendered from `data`.
    pub detail: String,
    /// The typed facts, tagged by `type`; null for events recorded before kiln kept them.
    #[serde(default)]
    pub data: Option<crate::EventData>,
}

/// The SSE event name of one event in `GET /api/v1/events/stream` (its `id:` is the event's).
pub const SSE_EVENT: &str = "event";
