//! Events → phases: a small state machine walked once over one workflow's events. Events that
//! do not move the machine on (a lease renewal, a BMC step at the end) only add notes the
//! diagnosis uses.

use kiln_api::event_data::{EventData, HttpRoot, IpxeScript};
use kiln_api::time::rfc3339_ms;
use kiln_api::{EventKind, EventView, Phase, PhaseStatus, PhaseView};

use super::normal_s;

/// What the walk learnt on the way, for the diagnosis.
#[derive(Debug, Clone, Default)]
pub(super) struct Notes {
    /// A BMC powered the machine (else someone did, or should, by hand).
    pub by_bmc: bool,
    /// The address the netboot DHCP answer gave.
    pub dhcp_ip: Option<String>,
    /// TFTP transfers that failed or were refused, in words.
    pub tftp_trouble: Vec<String>,
    /// Artifacts the script named (kernel, initrd), when the event says.
    pub wanted: Vec<String>,
    /// Artifacts fetched (paths under /artifacts).
    pub fetched: Vec<String>,
    /// Fetches answered with an error status, in words.
    pub http_trouble: Vec<String>,
    /// The agent OS's DHCP address (a DHCP after the kernel was fetched).
    pub agent_os_dhcp: Option<String>,
}

/// The phase the machine is in, not yet ended.
#[derive(Debug, Clone)]
pub(super) struct Open {
    pub phase: Phase,
    pub subject: Option<String>,
    pub started_ms: u64,
    /// What it waits for, in words.
    pub waiting: String,
    pub notes: Notes,
}

impl Open {
    pub fn view(&self, status: PhaseStatus, end: Option<(u64, String)>, now_ms: u64) -> PhaseView {
        let end_ms = end.as_ref().map(|(at, _)| *at);
        let duration_ms = end_ms.unwrap_or(now_ms).saturating_sub(self.started_ms);
        PhaseView {
            phase: self.phase,
            subject: self.subject.clone(),
            status,
            started_at: rfc3339_ms(self.started_ms),
            started_at_ms: self.started_ms,
            ended_at_ms: end_ms,
            duration_ms,
            normal_s: normal_s(self.phase),
            detail: end.map(|(_, d)| d).unwrap_or_else(|| self.waiting.clone()),
            bytes: None,
            rate_bps: None,
        }
    }
}

pub(super) struct Walked {
    pub phases: Vec<PhaseView>,
    pub open: Option<Open>,
    pub workflow: Option<String>,
    pub outcome: Option<String>,
}

#[derive(Default)]
struct Walker {
    phases: Vec<PhaseView>,
    open: Option<Open>,
    notes: Notes,
    workflow: Option<String>,
    outcome: Option<String>,
}

pub(super) fn walk(events: &[EventView]) -> Walked {
    let mut w = Walker::default();
    for e in events {
        w.step(e);
    }
    let notes = w.notes;
    Walked {
        phases: w.phases,
        open: w.open.map(|o| Open { notes, ..o }),
        workflow: w.workflow,
        outcome: w.outcome,
    }
}

impl Walker {
    fn in_phase(&self) -> Option<Phase> {
        self.open.as_ref().map(|o| o.phase)
    }

    fn start(&mut self, phase: Phase, at: u64, subject: Option<String>, waiting: String) {
        self.open = Some(Open {
            phase,
            subject,
            started_ms: at,
            waiting,
            notes: Notes::default(),
        });
    }

    /// Ends the open phase (if any) with `status`; the view, to add figures to.
    fn end(&mut self, status: PhaseStatus, at: u64, detail: &str) -> Option<&mut PhaseView> {
        let open = self.open.take()?;
        let view = open.view(status, Some((at, detail.to_string())), at);
        self.phases.push(view);
        self.phases.last_mut()
    }

    fn step(&mut self, e: &EventView) {
        use EventKind as K;
        match e.kind {
            K::WorkflowCreated => self.created(e),
            K::BmcBootDevice | K::BmcPower => self.bmc_sent(e),
            K::BmcDone => self.bmc_done(e),
            K::BmcFailed => {
                self.end(PhaseStatus::Failed, e.at_ms, &e.detail);
            }
            K::DhcpOffer | K::DhcpAck => self.dhcp(e),
            K::TftpFailed | K::TftpRefused => self.notes.tftp_trouble.push(e.detail.clone()),
            K::HttpScript => self.script(e),
            K::HttpArtifact => self.artifact(e),
            K::AgentClaimed | K::WorkflowRunning => self.agent_up(e),
            K::ActionStarted => self.action_started(e),
            K::ActionSucceeded => self.action_ended(e, PhaseStatus::Done),
            K::ActionFailed | K::ActionTimedOut | K::ActionRetrying | K::ActionRestarted => {
                self.action_ended(e, PhaseStatus::Failed)
            }
            K::WorkflowRebooting => {
                self.end(PhaseStatus::Done, e.at_ms, &e.detail);
                let waiting = "waiting for the installed OS's first sign of life (its DHCP)";
                self.start(Phase::Reboot, e.at_ms, None, waiting.into());
            }
            K::WorkflowSucceeded => self.succeeded(e),
            K::WorkflowFailed | K::WorkflowTimedOut | K::WorkflowCancelled => {
                self.end(PhaseStatus::Failed, e.at_ms, &e.detail);
                self.outcome = Some(format!("{}: {}", e.kind, e.detail));
            }
            _ => {}
        }
    }

    fn created(&mut self, e: &EventView) {
        self.workflow = match &e.data {
            Some(EventData::WorkflowCreated { workflow, .. }) => Some(workflow.clone()),
            _ => e.detail.split_whitespace().next().map(str::to_string),
        };
        let waiting = "waiting for the machine's first DHCP (power it on, or the BMC will)";
        self.start(Phase::FirstDhcp, e.at_ms, e.mac.clone(), waiting.into());
    }

    /// The netboot's BMC steps come before any DHCP; later ones (next boot from disk) are
    /// not a phase.
    fn bmc_sent(&mut self, e: &EventView) {
        let before_dhcp = self.in_phase() == Some(Phase::FirstDhcp)
            && self.phases.iter().all(|p| p.phase != Phase::FirstDhcp);
        if before_dhcp {
            let waiting = "waiting for the BMC to confirm";
            self.start(Phase::PowerOn, e.at_ms, None, waiting.into());
        }
    }

    fn bmc_done(&mut self, e: &EventView) {
        if self.in_phase() == Some(Phase::PowerOn) {
            self.notes.by_bmc = true;
            self.end(PhaseStatus::Done, e.at_ms, &e.detail);
            let waiting = "waiting for the machine's first DHCP";
            self.start(Phase::FirstDhcp, e.at_ms, None, waiting.into());
        }
    }

    fn dhcp(&mut self, e: &EventView) {
        match self.in_phase() {
            Some(Phase::FirstDhcp) => {
                self.notes.dhcp_ip = e.ip.clone();
                self.end(PhaseStatus::Done, e.at_ms, &e.detail);
                let waiting = "waiting for iPXE to fetch its script";
                self.start(Phase::IpxeScript, e.at_ms, None, waiting.into());
            }
            Some(Phase::AgentUp) => self.notes.agent_os_dhcp = e.ip.clone(),
            Some(Phase::Reboot) => {
                self.end(PhaseStatus::Done, e.at_ms, &e.detail);
                let waiting = "waiting for the installed OS to phone home";
                self.start(Phase::PhoneHome, e.at_ms, None, waiting.into());
            }
            _ => {}
        }
    }

    fn script(&mut self, e: &EventView) {
        let local_disk = matches!(
            &e.data,
            Some(EventData::HttpScript {
                script: IpxeScript::LocalDisk,
                ..
            })
        );
        if local_disk {
            // The installed OS's boot passes through iPXE when the disk boot is chained.
            return;
        }
        if matches!(self.in_phase(), Some(Phase::FirstDhcp | Phase::IpxeScript)) {
            if let Some(EventData::HttpScript { kernel, initrd, .. }) = &e.data {
                self.notes.wanted = kernel.iter().chain(initrd).cloned().collect();
            }
            self.end(PhaseStatus::Done, e.at_ms, &e.detail);
            let waiting = "waiting for iPXE to fetch the kernel and initrd";
            self.start(Phase::KernelFetch, e.at_ms, None, waiting.into());
        }
    }

    fn artifact(&mut self, e: &EventView) {
        if self.in_phase() != Some(Phase::KernelFetch) {
            return;
        }
        let Some((path, status)) = artifact_fetch(e) else {
            return;
        };
        if !(200..300).contains(&status) {
            self.notes.http_trouble.push(e.detail.clone());
            return;
        }
        self.notes.fetched.push(path);
        let notes = &self.notes;
        let all = if notes.wanted.is_empty() {
            notes.fetched.len() >= 2
        } else {
            notes
                .wanted
                .iter()
                .all(|w| notes.fetched.iter().any(|f| f.ends_with(w.as_str())))
        };
        if all {
            self.end(PhaseStatus::Done, e.at_ms, "kernel and initrd fetched");
            let waiting = "waiting for the agent's first call";
            self.start(Phase::AgentUp, e.at_ms, None, waiting.into());
        }
    }

    /// The agent called: every netboot phase still open ends here.
    fn agent_up(&mut self, e: &EventView) {
        let netbooting = matches!(
            self.in_phase(),
            Some(
                Phase::FirstDhcp
                    | Phase::PowerOn
                    | Phase::IpxeScript
                    | Phase::KernelFetch
                    | Phase::AgentUp
            )
        );
        if netbooting {
            self.end(PhaseStatus::Done, e.at_ms, &e.detail);
        }
    }

    fn action_started(&mut self, e: &EventView) {
        self.end(PhaseStatus::Done, e.at_ms, &e.detail);
        let subject = match &e.data {
            Some(EventData::Action { name, action, .. }) => Some(match action {
                Some(kind) => format!("{name} ({kind})"),
                None => name.clone(),
            }),
            _ => e
                .detail
                .rsplit_once(" attempt ")
                .map(|(s, _)| s.to_string()),
        };
        self.start(Phase::Action, e.at_ms, subject, "running".into());
    }

    fn action_ended(&mut self, e: &EventView, status: PhaseStatus) {
        if self.in_phase() != Some(Phase::Action) {
            return;
        }
        let (message, duration_ms) = match &e.data {
            Some(EventData::Action {
                message,
                duration_ms,
                ..
            }) => (message.clone().unwrap_or_default(), *duration_ms),
            _ => (e.detail.clone(), None),
        };
        let Some(view) = self.end(status, e.at_ms, &e.detail) else {
            return;
        };
        if let Some(written) = image_bytes(&message) {
            let ms = duration_ms.unwrap_or(view.duration_ms).max(1);
            view.bytes = Some(written);
            view.rate_bps = Some(written.saturating_mul(1000) / ms);
        }
    }

    fn succeeded(&mut self, e: &EventView) {
        if self.in_phase() == Some(Phase::Reboot) {
            // No DHCP from the installed OS (a static address): the phone-home is the sign.
            self.end(
                PhaseStatus::Done,
                e.at_ms,
                "no DHCP seen (a static address?)",
            );
            self.start(Phase::PhoneHome, e.at_ms, None, String::new());
        }
        self.end(PhaseStatus::Done, e.at_ms, &e.detail);
        self.outcome = Some(format!("{}: {}", e.kind, e.detail));
    }
}

/// (path, status) of an `http.artifact` event, from its data or (older records) its detail
/// `GET /artifacts/vmlinuz 200`.
fn artifact_fetch(e: &EventView) -> Option<(String, u16)> {
    if let Some(EventData::HttpFile {
        root: HttpRoot::Artifacts,
        path,
        status,
        ..
    }) = &e.data
    {
        return Some((path.clone(), *status));
    }
    let mut words = e.detail.split_whitespace().skip(1);
    let path = words.next()?.to_string();
    let status = words.next()?.parse().ok()?;
    Some((path, status))
}

/// Bytes written, from an image action's message `N bytes written from M bytes (Zstd), …`.
pub(super) fn image_bytes(message: &str) -> Option<u64> {
    let (written, _) = message.split_once(" bytes written from ")?;
    written.rsplit(' ').next()?.parse().ok()
}
