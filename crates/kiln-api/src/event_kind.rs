//! What an event says happened: one closed list, named `protocol.what` on the wire and in the
//! store (`dhcp.offer`, `workflow.succeeded`), so no crate spells a kind as a string.

use serde::{Deserialize, Serialize};

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum EventKind {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
            /// A kind this version does not know (written by a newer kiln).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl EventKind {
            /// Every kind but `Unknown`.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The dotted name, `dhcp.offer`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                    EventKind::Unknown => "unknown",
                }
            }
        }
    };
}

event_kinds! {
    /// A DHCP offer to an enrolled machine.
    DhcpOffer = "dhcp.offer",
    DhcpAck = "dhcp.ack",
    DhcpNak = "dhcp.nak",
    DhcpRelease = "dhcp.release",
    DhcpDecline = "dhcp.decline",
    /// A whole file sent over TFTP.
    TftpSent = "tftp.sent",
    TftpRefused = "tftp.refused",
    TftpFailed = "tftp.failed",
    /// An iPXE script served.
    HttpScript = "http.script",
    HttpArtifact = "http.artifact",
    HttpImage = "http.image",
    HttpBoot = "http.boot",
    /// A request or connection refused on the provisioning network (names its source).
    HttpRefused = "http.refused",
    WorkflowCreated = "workflow.created",
    WorkflowPending = "workflow.pending",
    WorkflowNetbooting = "workflow.netbooting",
    WorkflowRunning = "workflow.running",
    WorkflowRebooting = "workflow.rebooting",
    WorkflowSucceeded = "workflow.succeeded",
    WorkflowFailed = "workflow.failed",
    WorkflowTimedOut = "workflow.timed-out",
    WorkflowCancelled = "workflow.cancelled",
    ActionStarted = "action.started",
    ActionSucceeded = "action.succeeded",
    ActionFailed = "action.failed",
    ActionTimedOut = "action.timed-out",
    ActionRetrying = "action.retrying",
    ActionRestarted = "action.restarted",
    BmcPower = "bmc.power",
    BmcBootDevice = "bmc.boot-device",
    BmcDone = "bmc.done",
    BmcFailed = "bmc.failed",
    BmcRetrying = "bmc.retrying",
    BmcSkipped = "bmc.skipped",
    AgentClaimed = "agent.claimed",
    AgentRearmed = "agent.rearmed",
    AgentSeed = "agent.seed",
    /// An admin API request refused (no token, unknown or revoked, or too little scope).
    ApiRefused = "api.refused",
    /// The agent reported the machine's hardware inventory.
    InventoryReported = "inventory.reported",
    /// The agent is about to write a disk (what the disk held is in the data).
    DiskOverwriting = "disk.overwriting",
    /// A MAC not enrolled took an inspection ticket (`--discovery inspect`).
    InspectionClaimed = "inspection.claimed",
    /// A MAC not enrolled reported its inventory in inspection-only mode.
    InspectionReported = "inspection.reported",
}

impl EventKind {
    /// Whether the event records anonymous traffic from the provisioning network (a DHCP
    /// exchange, a TFTP transfer, an HTTP fetch) rather than a machine's workflow or BMC:
    /// anyone can cause those, so their history is bounded apart.
    pub fn is_wire(self) -> bool {
        let n = self.as_str();
        n.starts_with("dhcp.")
            || n.starts_with("tftp.")
            || n.starts_with("http.")
            || n.starts_with("inspection.")
    }

    /// `workflow.<state>` for a workflow entering `state`.
    pub fn workflow_entered(state: crate::agent::WorkflowState) -> EventKind {
        use crate::agent::WorkflowState as S;
        match state {
            S::Pending => EventKind::WorkflowPending,
            S::Netbooting => EventKind::WorkflowNetbooting,
            S::Running => EventKind::WorkflowRunning,
            S::Rebooting => EventKind::WorkflowRebooting,
            S::Succeeded => EventKind::WorkflowSucceeded,
            S::Failed => EventKind::WorkflowFailed,
            S::TimedOut => EventKind::WorkflowTimedOut,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an event kind"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_one_name_on_the_wire_and_back() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "names are unique");
        for k in EventKind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), *k);
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
        }
        assert_eq!(
            serde_json::from_str::<EventKind>("\"dhcp.new-in-v9\"").unwrap(),
            EventKind::Unknown
        );
        assert!(EventKind::DhcpOffer.is_wire() && EventKind::HttpRefused.is_wire());
        assert!(!EventKind::BmcDone.is_wire() && !EventKind::ApiRefused.is_wire());
    }
}
