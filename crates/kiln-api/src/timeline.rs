//! A machine's flight recorder (`GET /api/v1/hardware/{name}/timeline`, `kiln why NAME`): the
//! phases of its current netboot and install, how long each took, and, when the phase it is
//! in has run longer than is normal, what is likely wrong.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One step of a machine's way from power-on to its installed OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The BMC command sent (boot device, power) → the BMC confirmed it.
    PowerOn,
    /// Powered on (or the workflow created, without a BMC) → the first DHCP answer.
    FirstDhcp,
    /// The first DHCP answer → the iPXE script fetched (PXE ROM, TFTP, iPXE).
    IpxeScript,
    /// The script → the kernel and initrd it names fetched.
    KernelFetch,
    /// Kernel and initrd fetched → the agent's first call (the agent OS booted, took an
    /// address, reached the server).
    AgentUp,
    /// One action of the workflow, started → ended.
    Action,
    /// The agent rebooted the machine → a first sign of life of the installed OS (its DHCP).
    Reboot,
    /// The installed OS is up → it phoned home.
    PhoneHome,
}

impl Phase {
    /// In words, for the text view.
    pub fn label(self) -> &'static str {
        match self {
            Phase::PowerOn => "power on (BMC)",
            Phase::FirstDhcp => "first DHCP",
            Phase::IpxeScript => "iPXE script",
            Phase::KernelFetch => "kernel + initrd",
            Phase::AgentUp => "agent up",
            Phase::Action => "action",
            Phase::Reboot => "reboot to disk",
            Phase::PhoneHome => "phone home",
        }
    }
}

/// Where a phase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Done,
    /// The machine is in this phase now.
    Running,
    /// The phase ended the workflow (a failed action, a BMC that failed, a timeout).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhaseView {
    pub phase: Phase,
    /// What this phase is about (`stream-image (image2disk)`, `52:54:00:3f:00:01`), if more
    /// than the phase's name.
    pub subject: Option<String>,
    pub status: PhaseStatus,
    /// RFC 3339.
    pub started_at: String,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// To its end, or (running) to now.
    pub duration_ms: u64,
    /// How long the phase normally takes at most, when Kiln has a bound for it.
    pub normal_s: Option<u64>,
    /// What ended it (the event's detail), or what it waits for.
    pub detail: String,
    /// Image actions: bytes written to the disk.
    pub bytes: Option<u64>,
    /// Image actions: bytes written per second.
    pub rate_bps: Option<u64>,
}

/// Why a machine seems stuck: the phase past its bound and the likely causes, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Diagnosis {
    pub phase: Phase,
    /// One line: what did not happen, for how long (`powered on 125 s ago, no DHCP from …`).
    pub summary: String,
    /// The likely causes, most likely first, naming the MACs and addresses involved.
    pub causes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineView {
    pub machine: String,
    pub mac: String,
    /// The workflow the timeline follows (the newest one of the machine).
    pub workflow: Option<String>,
    /// RFC 3339: when the timeline was built (running phases are measured to it).
    pub now: String,
    pub phases: Vec<PhaseView>,
    /// Index in `phases` of the one running now.
    pub current: Option<usize>,
    /// Set when the running phase has run longer than its bound.
    pub diagnosis: Option<Diagnosis>,
    /// How the workflow ended (`succeeded: installed OS phoned home`), once it did.
    pub outcome: Option<String>,
}
