//! The flight recorder: a machine's events in, its timeline out (phases with their
//! durations, the one it is in, and a diagnosis when that one has run too long). Pure: the
//! admin API hands it the events, the clock and what discovery saw.

mod diagnosis;
mod walk;

use kiln_api::time::rfc3339_ms;
use kiln_api::{EventKind, EventView, Phase, PhaseStatus, TimelineView};

/// How long each phase normally takes at most (seconds); past it, the timeline says what is
/// likely wrong. Generous on purpose: a server's firmware can spend minutes in POST.
pub mod bounds {
    /// BMC command sent → confirmed (the BMC runner retries with backoff meanwhile).
    pub const POWER_ON_S: u64 = 120;
    /// Powered on → the first DHCP answer (firmware POST, then the PXE ROM's DISCOVER).
    pub const FIRST_DHCP_S: u64 = 120;
    /// DHCP answered → the iPXE script fetched (TFTP of iPXE, iPXE's own DHCP).
    pub const IPXE_SCRIPT_S: u64 = 60;
    /// Script served → kernel and initrd fetched.
    pub const KERNEL_FETCH_S: u64 = 60;
    /// Kernel fetched → the agent's first call (kernel boot, the agent OS's DHCP, TLS).
    pub const AGENT_UP_S: u64 = 90;
    /// Agent rebooted the machine → the installed OS's first DHCP.
    pub const REBOOT_S: u64 = 300;
    /// Installed OS up → its phone-home (cloud-init, kubeadm).
    pub const PHONE_HOME_S: u64 = 300;
}

/// The normal bound of a phase; `None` for actions (their template's timeout rules them).
pub fn normal_s(phase: Phase) -> Option<u64> {
    use bounds::*;
    match phase {
        Phase::PowerOn => Some(POWER_ON_S),
        Phase::FirstDhcp => Some(FIRST_DHCP_S),
        Phase::IpxeScript => Some(IPXE_SCRIPT_S),
        Phase::KernelFetch => Some(KERNEL_FETCH_S),
        Phase::AgentUp => Some(AGENT_UP_S),
        Phase::Action => None,
        Phase::Reboot => Some(REBOOT_S),
        Phase::PhoneHome => Some(PHONE_HOME_S),
    }
}

/// A MAC that is not enrolled but asked for DHCP (from discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub mac: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// What it asked for, in words (`PXE arch 0 (BIOS), PXEClient:Arch:00000:UNDI:002001`).
    pub asked: String,
}

/// Everything the recorder reads about one machine.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub machine: &'a str,
    pub mac: &'a str,
    /// The BMC's address, when the machine has one.
    pub bmc: Option<&'a str>,
    /// Kiln's provisioning-network URL (what the machine must reach).
    pub server_url: &'a str,
    /// The machine's events, oldest first.
    pub events: &'a [EventView],
    pub now_ms: u64,
    /// MACs not enrolled that asked for DHCP.
    pub unknown_macs: &'a [Sighting],
    /// From the machine's last inventory, when there is one: PCI devices without a driver.
    pub driverless: Option<&'a [String]>,
}

/// The timeline of the machine's newest workflow (every event, when it has none).
pub fn timeline(inputs: &Inputs<'_>) -> TimelineView {
    let start = inputs
        .events
        .iter()
        .rposition(|e| e.kind == EventKind::WorkflowCreated)
        .unwrap_or(0);
    let events = &inputs.events[start..];
    let walked = walk::walk(events);
    let mut phases = walked.phases;
    let mut current = None;
    let mut diagnosis = None;
    if let Some(open) = walked.open {
        let running = open.view(PhaseStatus::Running, None, inputs.now_ms);
        diagnosis = diagnosis::diagnose(&open, &running, inputs);
        current = Some(phases.len());
        phases.push(running);
    }
    TimelineView {
        machine: inputs.machine.to_string(),
        mac: inputs.mac.to_string(),
        workflow: walked.workflow,
        now: rfc3339_ms(inputs.now_ms),
        phases,
        current,
        diagnosis,
        outcome: walked.outcome,
    }
}

/// `125 s`, `4 min 5 s`: a duration for people.
pub(crate) fn secs(ms: u64) -> String {
    let s = ms / 1000;
    if s < 600 {
        format!("{s} s")
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests;
