//! Where each machine is: its timeline (when each phase ended), pieced together from
//! Kiln's events, its workflow and its serial console, and the one line that shows it.

use kiln_model::EventKind;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use kiln_api::time::parse_rfc3339_ms;
use kiln_api::{ACTION_SUCCEEDED, PhoneHomeView, WorkflowView};
use kiln_client::render::human_bytes;
use kiln_model::event::{BmcTask, Event, EventData};
use kiln_model::workflow::WorkflowState;
use serde::Serialize;

use crate::Machine;

/// The image-streaming action's kind, as the admin API names it.
const IMAGE2DISK: &str = "image2disk";

/// When each phase of a machine's install ended (Unix ms). The phases, in order:
/// power-on (workflow created → BMC confirmed on), DHCP (→ the netboot DHCP ack),
/// agent up (→ the agent asked for work), image written (→ image2disk done),
/// disk boot (→ firmware, boot loader, kernel and init of the installed OS: cloud-init's
/// first stage starts), phone home (→ cloud-init, kubeadm included, phoned home).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub created_ms: Option<u64>,
    pub powered_on_ms: Option<u64>,
    pub dhcp_ms: Option<u64>,
    pub agent_up_ms: Option<u64>,
    pub image_written_ms: Option<u64>,
    /// cloud-init's first stage started in the installed OS.
    pub os_up_ms: Option<u64>,
    pub phoned_home_ms: Option<u64>,
    /// The workflow ended (succeeded, failed or timed out).
    pub ended_ms: Option<u64>,
    /// The agent rebooted the machine into the installed OS.
    pub rebooted_ms: Option<u64>,
    /// The installed OS's kernel printed its banner.
    pub kernel_ms: Option<u64>,
    /// The installed OS ran kubeadm (the test OS's stand-in says so on the console).
    pub kubeadm_ms: Option<u64>,
}

fn first(slot: &mut Option<u64>, at: u64) {
    if slot.is_none() {
        *slot = Some(at);
    }
}

/// Something the machine printed on its serial console that marks a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialMark {
    /// The agent OS is up (netbooted).
    AgentOs,
    /// A kernel banner after the agent ran: the installed OS is booting.
    InstalledKernel,
    /// cloud-init's first stage started (the installed OS is up).
    CloudInitStart,
    /// The test OS's kubeadm stand-in ran `kubeadm <subcommand>` (init, join, ...): the
    /// call number and the subcommand.
    Kubeadm(String, String),
    /// cloud-init's final stage finished.
    CloudInitDone,
}

/// Reads a serial log as it grows and picks out [`SerialMark`]s.
pub struct SerialWatch {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    seen_agent: bool,
}

impl SerialWatch {
    pub fn new(path: PathBuf) -> Self {
        SerialWatch {
            path,
            offset: 0,
            partial: Vec::new(),
            seen_agent: false,
        }
    }

    /// Marks in what was appended since the last call.
    pub fn poll(&mut self) -> Vec<SerialMark> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // The machine was powered on again: its chassis program starts a new log.
            self.offset = 0;
            self.partial.clear();
        }
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut marks = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            if let Some(m) = scan_line(&String::from_utf8_lossy(&line), &mut self.seen_agent) {
                marks.push(m);
            }
        }
        // A console line never gets this long; keep memory bounded if one does.
        if self.partial.len() > 64 * 1024 {
            self.partial.clear();
        }
        marks
    }
}

/// The mark on one console line, if any. `seen_agent` tells kernel banners of the
/// installed OS from anything printed before the agent ran.
pub fn scan_line(line: &str, seen_agent: &mut bool) -> Option<SerialMark> {
    if line.contains("kiln-agent-os: up") || line.contains("kiln-agent: ") {
        let first = !*seen_agent;
        *seen_agent = true;
        return first.then_some(SerialMark::AgentOs);
    }
    if !*seen_agent {
        return None;
    }
    if line.contains("Linux version ") {
        return Some(SerialMark::InstalledKernel);
    }
    if let Some(i) = line.find("KILN-KUBEADM-STUB call=")
        && let Some(j) = line[i..].find(" args: ")
    {
        let call = line[i + 23..i + j].to_string();
        let sub = line[i + j + 7..].split_whitespace().next().unwrap_or("");
        return Some(SerialMark::Kubeadm(call, sub.to_string()));
    }
    if line.contains("Cloud-init v. ") && line.contains(" running 'init-local'") {
        return Some(SerialMark::CloudInitStart);
    }
    if line.contains("Cloud-init v. ") && line.contains(" finished at ") {
        return Some(SerialMark::CloudInitDone);
    }
    None
}

/// The image streamed to the disk: bytes over the wire, bytes written, how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ImageStats {
    pub streamed_bytes: u64,
    /// From the action's message ("N bytes written from M bytes ..."), when it says.
    pub written_bytes: Option<u64>,
    pub ms: u64,
}

/// (N, M) in an image2disk message "N bytes written from M bytes (Zstd), ...".
pub fn image_bytes(message: &str) -> Option<(u64, u64)> {
    let (written, rest) = message.split_once(" bytes written from ")?;
    let (streamed, _) = rest.split_once(" bytes")?;
    Some((written.parse().ok()?, streamed.parse().ok()?))
}

/// A phase, as shown in the live view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    PoweringOn(String),
    Firmware,
    AgentBooting,
    Streaming {
        done: u64,
        total: Option<u64>,
        rate_bps: u64,
    },
    Action(String),
    Rebooting,
    InstalledKernel,
    InstalledOs,
    Kubeadm(String),
    Done(String),
    Failed(String),
}

/// One machine as the demo follows it.
pub struct MachineView {
    pub machine: Machine,
    pub timeline: Timeline,
    pub workflow: Option<WorkflowView>,
    pub phone_home: Option<PhoneHomeView>,
    pub image: Option<ImageStats>,
    /// kubeadm subcommands the installed OS ran, in call order.
    pub kubeadm: Vec<String>,
    kubeadm_calls: Vec<String>,
    pub cloud_init_done: bool,
    last_bmc: Option<String>,
    serial: SerialWatch,
}

impl MachineView {
    pub fn new(machine: Machine, serial_log: PathBuf) -> Self {
        MachineView {
            machine,
            timeline: Timeline::default(),
            workflow: None,
            phone_home: None,
            image: None,
            kubeadm: Vec::new(),
            kubeadm_calls: Vec::new(),
            cloud_init_done: false,
            last_bmc: None,
            serial: SerialWatch::new(serial_log),
        }
    }

    pub fn on_event(&mut self, e: &Event) {
        let t = &mut self.timeline;
        let at = e.at_ms;
        match e.kind {
            EventKind::WorkflowCreated => first(&mut t.created_ms, at),
            EventKind::BmcDone
                if matches!(
                    e.data,
                    Some(EventData::BmcDone {
                        task: BmcTask::Netboot,
                        ..
                    })
                ) =>
            {
                first(&mut t.powered_on_ms, at)
            }
            EventKind::BmcBootDevice
            | EventKind::BmcPower
            | EventKind::BmcRetrying
            | EventKind::BmcFailed => self.last_bmc = Some(e.detail.clone()),
            // A machine without a BMC: netbooting from the moment its workflow exists.
            EventKind::WorkflowNetbooting => first(&mut t.powered_on_ms, at),
            EventKind::DhcpAck
                if t.powered_on_ms.is_some()
                    && matches!(
                        e.data,
                        Some(EventData::Dhcp {
                            boot_file: Some(_),
                            ..
                        })
                    ) =>
            {
                first(&mut t.dhcp_ms, at)
            }
            EventKind::WorkflowRunning => first(&mut t.agent_up_ms, at),
            EventKind::WorkflowRebooting => first(&mut t.rebooted_ms, at),
            EventKind::WorkflowSucceeded => first(&mut t.phoned_home_ms, at),
            _ => {}
        }
    }

    pub fn on_workflow(&mut self, wf: WorkflowView) {
        let t = &mut self.timeline;
        if let Some(created) = parse_rfc3339_ms(&wf.created) {
            first(&mut t.created_ms, created);
        }
        if let Some(a) = wf
            .actions
            .iter()
            .find(|a| a.kind == IMAGE2DISK && a.state == ACTION_SUCCEEDED)
            && let (Some(start), Some(end)) = (
                a.started.as_deref().and_then(parse_rfc3339_ms),
                a.ended.as_deref().and_then(parse_rfc3339_ms),
            )
        {
            first(&mut t.image_written_ms, end);
            // The agent's message has both sizes; progress counts whichever the template gave.
            let (written_bytes, streamed_bytes) = match image_bytes(&a.message) {
                Some((w, s)) => (Some(w), s),
                None => (
                    None,
                    a.progress
                        .as_ref()
                        .map(|p| p.total.unwrap_or(p.done))
                        .unwrap_or(0),
                ),
            };
            self.image = Some(ImageStats {
                streamed_bytes,
                written_bytes,
                ms: end.saturating_sub(start),
            });
        }
        if let Some(at) = wf.phone_home.as_ref().and_then(|p| parse_rfc3339_ms(&p.at)) {
            first(&mut t.phoned_home_ms, at);
        }
        if wf.state.is_terminal()
            && let Some(end) = wf.ended.as_deref().and_then(parse_rfc3339_ms)
        {
            first(&mut t.ended_ms, end);
        }
        self.phone_home = wf.phone_home.clone();
        self.workflow = Some(wf);
    }

    /// Reads the console; `now_ms` stamps what it found.
    pub fn poll_serial(&mut self, now_ms: u64) {
        for mark in self.serial.poll() {
            match mark {
                SerialMark::AgentOs => {}
                SerialMark::InstalledKernel => first(&mut self.timeline.kernel_ms, now_ms),
                SerialMark::CloudInitStart => first(&mut self.timeline.os_up_ms, now_ms),
                // The stand-in prints each line twice (console and, through cloud-init, stdout).
                SerialMark::Kubeadm(call, sub) => {
                    if !self.kubeadm_calls.contains(&call) {
                        first(&mut self.timeline.kubeadm_ms, now_ms);
                        self.kubeadm_calls.push(call);
                        self.kubeadm.push(sub);
                    }
                }
                SerialMark::CloudInitDone => self.cloud_init_done = true,
            }
        }
    }

    pub fn phase(&self) -> Phase {
        let Some(wf) = &self.workflow else {
            return Phase::Waiting;
        };
        let t = &self.timeline;
        match wf.state {
            WorkflowState::Succeeded => Phase::Done(match &self.phone_home {
                Some(p) => format!("phoned home from {}", p.peer),
                None => wf.message.clone(),
            }),
            WorkflowState::Failed | WorkflowState::TimedOut => {
                Phase::Failed(format!("{}: {}", wf.state, wf.message))
            }
            WorkflowState::Pending => Phase::PoweringOn(
                self.last_bmc
                    .clone()
                    .unwrap_or_else(|| "waiting for kiln serve".into()),
            ),
            WorkflowState::Netbooting if t.dhcp_ms.is_none() => Phase::Firmware,
            WorkflowState::Netbooting => Phase::AgentBooting,
            WorkflowState::Running => match wf.current().map(|i| &wf.actions[i]) {
                Some(a) if a.kind == IMAGE2DISK => match &a.progress {
                    Some(p) => Phase::Streaming {
                        done: p.done,
                        total: p.total,
                        rate_bps: p.rate_bps,
                    },
                    None => Phase::Action(format!("{} (starting)", a.name)),
                },
                Some(a) => Phase::Action(a.name.clone()),
                None => Phase::Action("finishing".into()),
            },
            WorkflowState::Rebooting if t.kubeadm_ms.is_some() => {
                Phase::Kubeadm(self.kubeadm.join(", "))
            }
            WorkflowState::Rebooting if t.os_up_ms.is_some() => Phase::InstalledOs,
            WorkflowState::Rebooting if t.kernel_ms.is_some() => Phase::InstalledKernel,
            WorkflowState::Rebooting => Phase::Rebooting,
        }
    }
}

/// "12.3s" below a minute, "4m05s" above.
pub fn human_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Phase {
    /// The text of the live view.
    pub fn describe(&self) -> String {
        match self {
            Phase::Waiting => "waiting for its workflow".into(),
            Phase::PoweringOn(bmc) => format!("BMC: {bmc}"),
            Phase::Firmware => "powered on; firmware netbooting (DHCP)".into(),
            Phase::AgentBooting => "DHCP done; agent OS booting".into(),
            Phase::Streaming {
                done,
                total,
                rate_bps,
            } => match total.filter(|&t| t > 0) {
                Some(total) => {
                    let frac = (*done as f64 / total as f64).clamp(0.0, 1.0);
                    let filled = (frac * 20.0).round() as usize;
                    let eta = match total.saturating_sub(*done).checked_div(*rate_bps) {
                        Some(s) => format!("ETA {s}s"),
                        None => "ETA -".into(),
                    };
                    format!(
                        "writing image [{}{}] {:>3.0}% {} / {}  {}/s  {eta}",
                        "#".repeat(filled),
                        ".".repeat(20 - filled),
                        frac * 100.0,
                        human_bytes(*done),
                        human_bytes(total),
                        human_bytes(*rate_bps)
                    )
                }
                None => format!(
                    "writing image {}  {}/s",
                    human_bytes(*done),
                    human_bytes(*rate_bps)
                ),
            },
            Phase::Action(name) => format!("agent: {name}"),
            Phase::Rebooting => "rebooting into the installed OS".into(),
            Phase::InstalledKernel => "installed OS booting from disk".into(),
            Phase::InstalledOs => "installed OS up; cloud-init running".into(),
            Phase::Kubeadm(subs) => {
                format!("cloud-init ran kubeadm {subs}; waiting for phone-home")
            }
            Phase::Done(what) => format!("done: {what}"),
            Phase::Failed(why) => format!("FAILED: {why}"),
        }
    }

    /// What changes when a non-terminal log should get a new line: the phase, and the
    /// image progress by quarters.
    pub fn key(&self) -> String {
        match self {
            Phase::Streaming { done, total, .. } => {
                let q = total
                    .filter(|&t| t > 0)
                    .map(|t| (done.saturating_mul(4) / t).min(4))
                    .unwrap_or(0);
                format!("streaming {q}")
            }
            other => other.describe(),
        }
    }
}

/// One line of the live view.
pub fn line(v: &MachineView, now_ms: u64) -> String {
    let since = v.timeline.created_ms.map(|c| now_ms.saturating_sub(c));
    let end = v.timeline.ended_ms.or(v.timeline.phoned_home_ms);
    let elapsed = match (v.timeline.created_ms, end) {
        (Some(c), Some(e)) => human_ms(e.saturating_sub(c)),
        _ => since.map(human_ms).unwrap_or_else(|| "-".into()),
    };
    format!(
        "{:<13} {:<7} {:>7}  {}",
        v.machine.hostname,
        v.machine.bmc.name(),
        elapsed,
        v.phase().describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, detail: &str, at_ms: u64) -> Event {
        Event {
            at_ms,
            machine: Some("demo-cp1".into()),
            mac: None,
            ip: None,
            kind,
            detail: detail.into(),
            data: None,
        }
    }

    /// An event with its typed data, as kiln records it.
    fn typed(data: EventData, at_ms: u64) -> Event {
        let mut e = Event::of(data).with_machine("demo-cp1");
        e.at_ms = at_ms;
        e
    }

    /// A DHCP ACK of 10.77.0.11 to iPXE, with or without a boot file.
    fn ack(boot_file: Option<&str>, netboot: bool, at_ms: u64) -> Event {
        typed(
            EventData::Dhcp {
                message: kiln_model::event::DhcpMessage::Ack,
                xid: 7,
                proxy: false,
                ip: Some("10.77.0.11".parse().unwrap()),
                reserved: None,
                client: kiln_model::event::DhcpClient::Ipxe,
                arch: Some(7),
                vendor_class: None,
                boot_file: boot_file.map(str::to_string),
                netboot,
            },
            at_ms,
        )
    }

    fn view() -> MachineView {
        let m = crate::plan(1, crate::BmcChoice::Ipmi).remove(0);
        MachineView::new(m, PathBuf::from("/nonexistent/serial.log"))
    }

    #[test]
    fn events_fill_the_timeline_in_order() {
        let mut v = view();
        // Recorded from a real run (kiln events -o json), trimmed.
        for e in [
            ev(
                EventKind::WorkflowCreated,
                "demo-cp1-1 from template debian-test-os",
                1000,
            ),
            ev(
                EventKind::BmcBootDevice,
                "next boot: pxe (once, legacy)",
                1500,
            ),
            ev(EventKind::BmcPower, "power was off; sending on", 1600),
            // A DHCP exchange before the power-on counts for nothing.
            ack(Some("http://10.77.0.1:8080/ipxe/x/boot.ipxe"), true, 1700),
            typed(
                EventData::BmcDone {
                    task: BmcTask::Netboot,
                    result: "was off: powered on (confirmed)".into(),
                },
                2000,
            ),
            ev(
                EventKind::WorkflowNetbooting,
                "powered on by its BMC; netbooting",
                2000,
            ),
            ev(
                EventKind::DhcpOffer,
                "offered 10.77.0.11 boot=http://10.77.0.1:8080/ipxe/x/boot.ipxe (iPXE)",
                9000,
            ),
            ack(Some("http://10.77.0.1:8080/ipxe/x/boot.ipxe"), true, 9100),
            ack(None, true, 15000),
            ev(EventKind::WorkflowRunning, "agent connected", 20000),
            ev(
                EventKind::WorkflowRebooting,
                "booting the installed OS",
                40000,
            ),
            ack(None, false, 45000),
            ev(
                EventKind::WorkflowSucceeded,
                "installed OS phoned home",
                120000,
            ),
        ] {
            v.on_event(&e);
        }
        assert_eq!(
            v.timeline,
            Timeline {
                created_ms: Some(1000),
                powered_on_ms: Some(2000),
                dhcp_ms: Some(9100),
                agent_up_ms: Some(20000),
                rebooted_ms: Some(40000),
                phoned_home_ms: Some(120000),
                ..Timeline::default()
            }
        );
    }

    /// A succeeded install as `GET /api/v1/workflows?all=true` shows it (times RFC 3339).
    fn installed() -> WorkflowView {
        let action = |name: &str, kind: &str, started: &str, ended: &str, message: &str| {
            kiln_api::ActionView {
                name: name.into(),
                kind: kind.into(),
                state: ACTION_SUCCEEDED.into(),
                attempts: 1,
                max_attempts: 1,
                timeout_seconds: 600.0,
                started: Some(started.into()),
                ended: Some(ended.into()),
                duration_seconds: None,
                message: message.into(),
                progress: None,
            }
        };
        let step = kiln_api::StepView {
            state: "done".into(),
            attempts: 1,
            message: String::new(),
        };
        WorkflowView {
            id: "demo-cp1-1".into(),
            machine: "demo-cp1".into(),
            template: "debian-test-os".into(),
            state: WorkflowState::Succeeded,
            message: "installed OS phoned home".into(),
            created: "1970-01-01T00:00:01.000Z".into(),
            updated: "1970-01-01T00:02:00.000Z".into(),
            ended: Some("1970-01-01T00:02:00.500Z".into()),
            deadline: "1970-01-01T01:00:00.000Z".into(),
            duration_seconds: 119.5,
            retry_of: None,
            current_action: None,
            actions: vec![
                action(
                    "stream",
                    IMAGE2DISK,
                    "1970-01-01T00:00:21.000Z",
                    "1970-01-01T00:00:37.000Z",
                    "1610612736 bytes written from 139703692 bytes (Zstd), sha256 1976ca35 verified, 0 resume(s), 16.0 s",
                ),
                action(
                    "seed",
                    "cloud-init",
                    "1970-01-01T00:00:37.000Z",
                    "1970-01-01T00:00:38.000Z",
                    "ok",
                ),
            ],
            bmc: kiln_api::BmcStepsView {
                start: step.clone(),
                finish: step,
            },
            phone_home: Some(PhoneHomeView {
                at: "1970-01-01T00:02:00.000Z".into(),
                peer: "10.77.0.11".into(),
                payload: String::new(),
            }),
            agent_claim: None,
            seed_served: None,
            log_lines_dropped: 0,
        }
    }

    #[test]
    fn an_api_workflow_fills_the_image_phone_home_and_end_times() {
        let mut v = view();
        v.on_workflow(installed());
        assert_eq!(v.timeline.created_ms, Some(1000));
        assert_eq!(v.timeline.image_written_ms, Some(37_000));
        assert_eq!(v.timeline.phoned_home_ms, Some(120_000));
        assert_eq!(v.timeline.ended_ms, Some(120_500));
        assert_eq!(
            v.image,
            Some(ImageStats {
                streamed_bytes: 139703692,
                written_bytes: Some(1610612736),
                ms: 16_000,
            })
        );
        assert_eq!(v.phase(), Phase::Done("phoned home from 10.77.0.11".into()));
    }

    #[test]
    fn a_running_image2disk_shows_its_progress() {
        let mut v = view();
        let mut wf = installed();
        wf.state = WorkflowState::Running;
        wf.actions[0].state = "running".into();
        wf.actions[0].progress = Some(kiln_api::agent::Progress {
            done: 5,
            total: Some(10),
            rate_bps: 2,
        });
        v.on_workflow(wf);
        assert_eq!(
            v.phase(),
            Phase::Streaming {
                done: 5,
                total: Some(10),
                rate_bps: 2
            }
        );
        assert_eq!(v.timeline.ended_ms, None);
    }

    #[test]
    fn serial_marks_need_the_agent_first() {
        let mut seen = false;
        // The firmware and a kernel before the agent: nothing.
        assert_eq!(
            scan_line("[    0.000000] Linux version 6.1.0", &mut seen),
            None
        );
        assert_eq!(
            scan_line("kiln-agent-os: up 2.86 s", &mut seen),
            Some(SerialMark::AgentOs)
        );
        assert_eq!(scan_line("kiln-agent: rebooting", &mut seen), None);
        assert_eq!(
            scan_line(
                "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)",
                &mut seen
            ),
            Some(SerialMark::InstalledKernel)
        );
        assert_eq!(
            scan_line(
                "[  60.1] cloud-init[612]: KILN-KUBEADM-STUB call=0001 args: init --config /run/kubeadm/init.yaml",
                &mut seen
            ),
            Some(SerialMark::Kubeadm("0001".into(), "init".into()))
        );
        assert_eq!(
            scan_line(
                "[   71.0] cloud-init[254]: Cloud-init v. 22.4.2 running 'init-local' at Sun, 22 Nov 2026 05:01:11 +0000.",
                &mut seen
            ),
            Some(SerialMark::CloudInitStart)
        );
        assert_eq!(
            scan_line(
                "KILN-KUBEADM-STUB call=0001 config| kind: InitConfiguration",
                &mut seen
            ),
            None
        );
        assert_eq!(
            scan_line(
                "Cloud-init v. 22.4.2 finished at Sun, 22 Nov 2026 02:33:59 +0000. Datasource DataSourceNoCloud",
                &mut seen
            ),
            Some(SerialMark::CloudInitDone)
        );
    }

    #[test]
    fn serial_watch_reads_appended_lines_across_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(
            &path,
            "SeaBIOS\r\nkiln-agent-os: up 2.8 s\r\n[ 0.0] Linux ver",
        )
        .unwrap();
        let mut w = SerialWatch::new(path.clone());
        assert_eq!(w.poll(), vec![SerialMark::AgentOs]);
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"sion 6.1\r\n").unwrap();
        assert_eq!(w.poll(), vec![SerialMark::InstalledKernel]);
        assert_eq!(w.poll(), vec![]);
    }

    #[test]
    fn streaming_line_shows_bytes_rate_and_eta() {
        let p = Phase::Streaming {
            done: 512 << 20,
            total: Some(1 << 30),
            rate_bps: 64 << 20,
        };
        assert_eq!(
            p.describe(),
            "writing image [##########..........]  50% 512.0 MiB / 1.0 GiB  64.0 MiB/s  ETA 8s"
        );
        assert_eq!(p.key(), "streaming 2");
    }

    #[test]
    fn image_sizes_come_from_the_image2disk_message() {
        assert_eq!(
            image_bytes(
                "1610612736 bytes written from 139703692 bytes (Zstd), sha256 1976ca35 verified, 0 resume(s), 16.6 s"
            ),
            Some((1610612736, 139703692))
        );
        assert_eq!(image_bytes("done"), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(245_000), "4m05s");
    }
}
