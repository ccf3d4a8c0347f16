//! What an event records, typed: one variant per thing that happens, carrying its facts
//! (addresses, file, status, workflow, attempt …). The variant decides the event's kind
//! ([`EventData::kind`], the one place that maps data to kinds), and its `Display` is the
//! event's one-line detail, so the wording has one source.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::EventKind;
use crate::agent::WorkflowState;
use crate::bmc::BmcOp;

/// An event's typed facts, tagged by `type` on the wire (`{"type": "dhcp", …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventData {
    /// A DHCP reply to an enrolled machine, or its release or decline.
    Dhcp {
        message: DhcpMessage,
        /// The transaction id of the client's message.
        xid: u32,
        /// ProxyDHCP (boot information only, no address).
        proxy: bool,
        /// The address offered, acked, informed, refused, released or declined.
        #[schema(value_type = Option<String>)]
        ip: Option<Ipv4Addr>,
        /// For a NAK: the address reserved for the machine.
        #[schema(value_type = Option<String>)]
        reserved: Option<Ipv4Addr>,
        client: DhcpClient,
        /// Client system architecture (option 93, else option 60's `Arch:`).
        arch: Option<u16>,
        /// The vendor class the client sent (option 60), as text.
        vendor_class: Option<String>,
        /// The boot file handed out, if any.
        boot_file: Option<String>,
        /// The machine's netboot flag at the time.
        netboot: bool,
    },
    /// A TFTP read request sent, refused or failed.
    Tftp {
        outcome: TftpOutcome,
        file: String,
        /// Bytes sent (acknowledged, for a failed transfer).
        bytes: Option<u64>,
        /// The file's size (for a failed transfer).
        size: Option<u64>,
        duration_ms: Option<u64>,
        blksize: Option<u16>,
        windowsize: Option<u16>,
        /// Why it was refused or failed.
        reason: Option<String>,
    },
    /// An iPXE script served.
    HttpScript {
        script: IpxeScript,
        kernel: Option<String>,
        initrd: Option<String>,
    },
    /// A GET of a file under one of the HTTP roots.
    HttpFile {
        root: HttpRoot,
        /// Inside the root, as requested.
        path: String,
        status: u16,
        /// The `Range` header, if any (resumed downloads).
        range: Option<String>,
    },
    /// A provisioning-network request refused.
    HttpRefused {
        route: String,
        #[schema(value_type = String)]
        peer: IpAddr,
        reason: String,
    },
    /// A connection closed at once: over a connection cap.
    HttpOverCap {
        #[schema(value_type = String)]
        peer: IpAddr,
        /// Which cap: `total` or `per-source`.
        cap: String,
        limit: u64,
        /// Refusals since the last such event.
        refused: u64,
    },
    WorkflowCreated {
        workflow: String,
        template: String,
        retry_of: Option<String>,
    },
    /// A workflow entered `to`.
    WorkflowEntered {
        workflow: String,
        from: Option<WorkflowState>,
        to: WorkflowState,
        /// Why, in words (empty: nothing to add).
        reason: String,
    },
    WorkflowCancelled {
        workflow: String,
        reason: String,
    },
    /// An action of a workflow started, ended or will be retried.
    Action {
        outcome: ActionOutcome,
        workflow: String,
        index: u32,
        name: String,
        /// The action's kind (`image2disk`), when it starts.
        action: Option<String>,
        attempt: u32,
        /// What the agent reported, or the error.
        message: Option<String>,
        duration_ms: Option<u64>,
        /// Seconds until the retry.
        retry_in_s: Option<u64>,
    },
    /// The next boot device set through a BMC.
    BmcBootDevice {
        device: String,
        persistent: bool,
        /// `UEFI`, `legacy`, or `mode unchanged`.
        mode: String,
    },
    /// A power command about to be sent through a BMC.
    BmcPower {
        was: String,
        sending: String,
    },
    BmcDone {
        task: BmcTask,
        result: String,
    },
    BmcRetrying {
        task: BmcTask,
        attempt: u32,
        attempts: u32,
        error: String,
        retry_in_s: u64,
    },
    BmcFailed {
        task: BmcTask,
        attempt: u32,
        /// Whether it was tried again before failing (a bad password is not).
        retried: bool,
        error: String,
    },
    /// A BMC step not taken.
    BmcSkipped {
        reason: String,
    },
    /// The agent claimed its workflow's credential.
    AgentClaimed {
        workflow: String,
        #[schema(value_type = String)]
        peer: IpAddr,
        /// The same agent run claimed again (its answer was lost).
        again: bool,
    },
    /// A new netboot round voided the earlier claim.
    AgentRearmed {
        workflow: String,
    },
    /// The cloud-init seed handed to the agent.
    AgentSeed {
        workflow: String,
    },
    /// The agent reported the machine's hardware inventory.
    InventoryReported {
        summary: crate::inventory::InventorySummary,
    },
    /// The agent is about to write `device` (resolved from the `disk` parameter).
    DiskOverwriting {
        workflow: String,
        device: String,
        identity: crate::inventory::DiskIdentity,
        /// What the disk held: `vda: gpt; vda1: ext4`, or `none`.
        signatures: String,
    },
    /// A MAC not enrolled took an inspection ticket from `peer`.
    InspectionClaimed {
        #[schema(value_type = String)]
        mac: crate::MacAddr,
        #[schema(value_type = String)]
        peer: IpAddr,
    },
    /// A MAC not enrolled reported what its agent found (inspection-only mode).
    InspectionReported {
        #[schema(value_type = String)]
        mac: crate::MacAddr,
        summary: crate::inventory::InventorySummary,
    },
    /// An admin API request refused.
    ApiRefused {
        method: String,
        path: String,
        #[schema(value_type = String)]
        peer: IpAddr,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DhcpMessage {
    Offer,
    Ack,
    /// An ACK to a DHCPINFORM (configuration only).
    Inform,
    Nak,
    Release,
    Decline,
}

/// How the client wants to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DhcpClient {
    /// Not a netboot client (an installed OS renewing its lease).
    Plain,
    Pxe,
    /// UEFI HTTP boot.
    Http,
    Ipxe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TftpOutcome {
    Sent,
    Refused,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IpxeScript {
    Netboot,
    /// Boot the local disk: netboot is off.
    LocalDisk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpRoot {
    Artifacts,
    Images,
    Boot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Started,
    Succeeded,
    Failed,
    TimedOut,
    Retrying,
    /// The agent restarted mid-action: a new attempt starts.
    Restarted,
}

/// What a BMC was asked to do: a workflow's step, or `kiln bmc OP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BmcTask {
    /// Next boot PXE once, then on (or cycled).
    Netboot,
    /// Next boot from disk, at the end of a workflow.
    BootDisk,
    /// `kiln bmc OP` (`POST /api/v1/bmc/actions`).
    Op(BmcOp),
}

impl EventData {
    /// The kind of event this is: the only mapping from data to kinds.
    pub fn kind(&self) -> EventKind {
        use EventData as D;
        use EventKind as K;
        match self {
            D::Dhcp { message, .. } => match message {
                DhcpMessage::Offer => K::DhcpOffer,
                DhcpMessage::Ack | DhcpMessage::Inform => K::DhcpAck,
                DhcpMessage::Nak => K::DhcpNak,
                DhcpMessage::Release => K::DhcpRelease,
                DhcpMessage::Decline => K::DhcpDecline,
            },
            D::Tftp { outcome, .. } => match outcome {
                TftpOutcome::Sent => K::TftpSent,
                TftpOutcome::Refused => K::TftpRefused,
                TftpOutcome::Failed => K::TftpFailed,
            },
            D::HttpScript { .. } => K::HttpScript,
            D::HttpFile { root, .. } => match root {
                HttpRoot::Artifacts => K::HttpArtifact,
                HttpRoot::Images => K::HttpImage,
                HttpRoot::Boot => K::HttpBoot,
            },
            D::HttpRefused { .. } | D::HttpOverCap { .. } => K::HttpRefused,
            D::WorkflowCreated { .. } => K::WorkflowCreated,
            D::WorkflowEntered { to, .. } => K::workflow_entered(*to),
            D::WorkflowCancelled { .. } => K::WorkflowCancelled,
            D::Action { outcome, .. } => match outcome {
                ActionOutcome::Started => K::ActionStarted,
                ActionOutcome::Succeeded => K::ActionSucceeded,
                ActionOutcome::Failed => K::ActionFailed,
                ActionOutcome::TimedOut => K::ActionTimedOut,
                ActionOutcome::Retrying => K::ActionRetrying,
                ActionOutcome::Restarted => K::ActionRestarted,
            },
            D::BmcBootDevice { .. } => K::BmcBootDevice,
            D::BmcPower { .. } => K::BmcPower,
            D::BmcDone { .. } => K::BmcDone,
            D::BmcRetrying { .. } => K::BmcRetrying,
            D::BmcFailed { .. } => K::BmcFailed,
            D::BmcSkipped { .. } => K::BmcSkipped,
            D::AgentClaimed { .. } => K::AgentClaimed,
            D::AgentRearmed { .. } => K::AgentRearmed,
            D::AgentSeed { .. } => K::AgentSeed,
            D::ApiRefused { .. } => K::ApiRefused,
            D::InventoryReported { .. } => K::InventoryReported,
            D::DiskOverwriting { .. } => K::DiskOverwriting,
            D::InspectionClaimed { .. } => K::InspectionClaimed,
            D::InspectionReported { .. } => K::InspectionReported,
        }
    }

    /// The same data with control characters escaped in every string a client on the
    /// network could have chosen (a path, a file name, a reason quoting a request), so none
    /// reaches a terminal through `kiln events -o json`.
    pub fn escaped(mut self) -> Self {
        let esc = |s: &mut String| *s = escape_controls(std::mem::take(s));
        match &mut self {
            EventData::Dhcp {
                boot_file,
                vendor_class,
                ..
            } => {
                boot_file.iter_mut().for_each(esc);
                vendor_class.iter_mut().for_each(esc);
            }
            EventData::Tftp { file, reason, .. } => {
                esc(file);
                reason.iter_mut().for_each(esc);
            }
            EventData::HttpFile { path, range, .. } => {
                esc(path);
                range.iter_mut().for_each(esc);
            }
            EventData::HttpRefused { route, reason, .. } => {
                esc(route);
                esc(reason);
            }
            EventData::ApiRefused {
                method,
                path,
                reason,
                ..
            } => {
                esc(method);
                esc(path);
                esc(reason);
            }
            EventData::Action { message, .. } => message.iter_mut().for_each(esc),
            EventData::InventoryReported { summary }
            | EventData::InspectionReported { summary, .. } => {
                summary.disks.iter_mut().for_each(esc)
            }
            EventData::DiskOverwriting {
                device,
                identity,
                signatures,
                ..
            } => {
                esc(device);
                esc(signatures);
                esc(&mut identity.serial);
                esc(&mut identity.wwn);
                esc(&mut identity.model);
            }
            EventData::WorkflowEntered { reason, .. }
            | EventData::WorkflowCancelled { reason, .. } => esc(reason),
            _ => {}
        }
        self
    }
}

impl BmcTask {
    /// The workflow step in words (`power on into netboot`).
    fn step(self) -> Option<&'static str> {
        match self {
            BmcTask::Netboot => Some("power on into netboot"),
            BmcTask::BootDisk => Some("next boot from disk"),
            BmcTask::Op(_) => None,
        }
    }
}

/// `Pxe` → `pxe`: the op as `kiln bmc` spells it.
fn op_name(op: BmcOp) -> String {
    format!("{op:?}").to_lowercase()
}

/// Human name of a DHCP option 93 code (RFC 4578, IANA registry), for events and logs.
pub fn dhcp_arch_name(arch: u16) -> &'static str {
    match arch {
        0 => "BIOS",
        6 => "x86 UEFI",
        7 => "x86-64 UEFI",
        9 => "x86-64 UEFI (EFI BC)",
        10 => "arm32 UEFI",
        11 => "arm64 UEFI",
        15 => "x86 UEFI HTTP",
        16 => "x86-64 UEFI HTTP",
        18 => "arm32 UEFI HTTP",
        19 => "arm64 UEFI HTTP",
        _ => "unsupported",
    }
}

impl fmt::Display for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::Dhcp { .. } => self.fmt_dhcp(f),
            D::Tftp { .. } => self.fmt_tftp(f),
            D::HttpScript { .. }
            | D::HttpFile { .. }
            | D::HttpRefused { .. }
            | D::HttpOverCap { .. } => self.fmt_http(f),
            D::WorkflowCreated { .. }
            | D::WorkflowEntered { .. }
            | D::WorkflowCancelled { .. }
            | D::Action { .. } => self.fmt_workflow(f),
            D::BmcBootDevice { .. }
            | D::BmcPower { .. }
            | D::BmcDone { .. }
            | D::BmcRetrying { .. }
            | D::BmcFailed { .. }
            | D::BmcSkipped { .. } => self.fmt_bmc(f),
            D::AgentClaimed { .. }
            | D::AgentRearmed { .. }
            | D::AgentSeed { .. }
            | D::ApiRefused { .. }
            | D::InventoryReported { .. }
            | D::InspectionClaimed { .. }
            | D::InspectionReported { .. }
            | D::DiskOverwriting { .. } => self.fmt_agent(f),
        }
    }
}

// Each family's wording; `fmt` sends each variant to its family.
impl EventData {
    /// DHCP: offers, acks and the rest, with what was booted.
    fn fmt_dhcp(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::Dhcp {
                message,
                proxy,
                ip,
                reserved,
                client,
                arch,
                boot_file,
                netboot,
                ..
            } => {
                let ip = ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                let boot = DhcpBoot {
                    client: *client,
                    arch: *arch,
                    boot_file: boot_file.as_deref(),
                    netboot: *netboot,
                };
                match (message, proxy) {
                    (DhcpMessage::Offer, true) => write!(f, "proxy offer{boot}"),
                    (DhcpMessage::Ack, true) => write!(f, "proxy ack{boot}"),
                    (DhcpMessage::Offer, false) => write!(f, "offered {ip}{boot}"),
                    (DhcpMessage::Ack, false) => write!(f, "acked {ip}{boot}"),
                    (DhcpMessage::Inform, _) => write!(f, "informed {ip}"),
                    (DhcpMessage::Nak, _) => write!(
                        f,
                        "refused {ip}: reserved address is {}",
                        reserved.unwrap_or(Ipv4Addr::UNSPECIFIED)
                    ),
                    (DhcpMessage::Release, _) => write!(f, "released {ip}"),
                    (DhcpMessage::Decline, _) => {
                        write!(f, "declined {ip}: address in use on the network?")
                    }
                }
            }
            other => unreachable!("{:?} is not in this family", other.kind()),
        }
    }

    /// TFTP transfers.
    fn fmt_tftp(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::Tftp {
                outcome,
                file,
                bytes,
                size,
                duration_ms,
                blksize,
                windowsize,
                reason,
            } => match outcome {
                TftpOutcome::Sent => {
                    write!(f, "{file} {} bytes", bytes.unwrap_or(0))?;
                    if let Some(ms) = duration_ms {
                        write!(f, " in {:.2} s", *ms as f64 / 1000.0)?;
                    }
                    if let Some(b) = blksize {
                        write!(f, " blksize={b}")?;
                    }
                    if let Some(w) = windowsize {
                        write!(f, " windowsize={w}")?;
                    }
                    Ok(())
                }
                TftpOutcome::Refused | TftpOutcome::Failed => {
                    write!(f, "{file}: {}", reason.as_deref().unwrap_or("refused"))?;
                    if let (Some(b), Some(s)) = (bytes, size) {
                        write!(f, " after {b} of {s} bytes")?;
                    }
                    Ok(())
                }
            },
            other => unreachable!("{:?} is not in this family", other.kind()),
        }
    }

    /// HTTP: iPXE scripts, files, refusals.
    fn fmt_http(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::HttpScript {
                script,
                kernel,
                initrd,
            } => match script {
                IpxeScript::Netboot => write!(
                    f,
                    "script: netboot {} + {}",
                    kernel.as_deref().unwrap_or("?"),
                    initrd.as_deref().unwrap_or("?")
                ),
                IpxeScript::LocalDisk => f.write_str("script: local disk (netboot off)"),
            },
            D::HttpFile {
                root,
                path,
                status,
                range,
            } => {
                let dir = match root {
                    HttpRoot::Artifacts => "artifacts",
                    HttpRoot::Images => "images",
                    HttpRoot::Boot => "boot",
                };
                write!(f, "GET /{dir}/{path} {status}")?;
                match range.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                    Some(r) => write!(f, " {r}"),
                    None => Ok(()),
                }
            }
            D::HttpRefused {
                route,
                peer,
                reason,
            } => write!(f, "{route} from {peer}: {reason}"),
            D::HttpOverCap {
                peer,
                cap,
                limit,
                refused,
            } => write!(
                f,
                "connection from {peer} closed at once: over the {cap} cap ({limit} open); \
                 {refused} such refusal(s) since the last event"
            ),
            other => unreachable!("{:?} is not in this family", other.kind()),
        }
    }

    /// Workflows and their actions.
    fn fmt_workflow(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::WorkflowCreated {
                workflow,
                template,
                retry_of,
            } => {
                write!(f, "{workflow} from template {template}")?;
                match retry_of {
                    Some(old) => write!(f, " (retry of {old})"),
                    None => Ok(()),
                }
            }
            D::WorkflowEntered {
                workflow, reason, ..
            } => {
                if reason.is_empty() {
                    write!(f, "workflow {workflow}")
                } else {
                    f.write_str(reason)
                }
            }
            D::WorkflowCancelled { reason, .. } => f.write_str(reason),
            D::Action {
                outcome,
                name,
                action,
                attempt,
                message,
                retry_in_s,
                ..
            } => {
                let message = message.as_deref().unwrap_or("");
                match outcome {
                    ActionOutcome::Started => write!(
                        f,
                        "{name} ({}) attempt {attempt}",
                        action.as_deref().unwrap_or("?")
                    ),
                    ActionOutcome::Restarted => {
                        write!(f, "{name} was interrupted; starting attempt {attempt}")
                    }
                    ActionOutcome::Retrying => write!(
                        f,
                        "{name}: {message}; retry in {} s",
                        retry_in_s.unwrap_or(0)
                    ),
                    ActionOutcome::Succeeded | ActionOutcome::Failed | ActionOutcome::TimedOut => {
                        write!(f, "{name}: {message}")
                    }
                }
            }
            other => unreachable!("{:?} is not in this family", other.kind()),
        }
    }

    /// BMC steps and operations.
    fn fmt_bmc(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::BmcBootDevice {
                device,
                persistent,
                mode,
            } => {
                let how = if *persistent { "persistent" } else { "once" };
                write!(f, "next boot: {device} ({how}, {mode})")
            }
            D::BmcPower { was, sending } => write!(f, "power was {was}; sending {sending}"),
            D::BmcDone { task, result } => match (task.step(), task) {
                (Some(step), _) => write!(f, "{step}: {result}"),
                (None, BmcTask::Op(op)) => {
                    write!(f, "kiln bmc {}: {}", op_name(*op), result.to_lowercase())
                }
                (None, _) => f.write_str(result),
            },
            D::BmcRetrying {
                task,
                attempt,
                attempts,
                error,
                retry_in_s,
            } => {
                let what = match task {
                    BmcTask::Op(op) => format!("kiln bmc {}", op_name(*op)),
                    other => other.step().unwrap_or_default().to_string(),
                };
                write!(
                    f,
                    "{what}, attempt {attempt}/{attempts}: {error}; retry in {retry_in_s} s"
                )
            }
            D::BmcFailed {
                task,
                attempt,
                retried,
                error,
            } => match task {
                BmcTask::Op(op) => write!(f, "kiln bmc {} failed: {error}", op_name(*op)),
                other => {
                    let step = other.step().unwrap_or_default();
                    if *retried {
                        write!(f, "{step} after {attempt} attempts: {error}")
                    } else {
                        write!(f, "{step} (not retried): {error}")
                    }
                }
            },
            D::BmcSkipped { reason } => f.write_str(reason),
            other => unreachable!("{:?} is not in this family", other.kind()),
        }
    }

    /// The agent's credential and seed, and admin API refusals.
    fn fmt_agent(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventData as D;
        match self {
            D::AgentClaimed { peer, again, .. } => {
                if *again {
                    write!(
                        f,
                        "credential issued again to the same agent at {peer} (its answer was lost)"
                    )
                } else {
                    write!(f, "credential issued to the agent at {peer}")
                }
            }
            D::AgentRearmed { .. } => f.write_str(
                "powering into netboot: the earlier claim of the agent credential is void",
            ),
            D::AgentSeed { .. } => f.write_str("cloud-init seed handed to the agent (once)"),
            D::ApiRefused {
                method,
                path,
                peer,
                reason,
            } => write!(f, "{method} {path} from {peer}: {reason}"),
            D::InventoryReported { summary } => write!(f, "inventory: {summary}"),
            D::InspectionClaimed { mac, peer } => {
                write!(
                    f,
                    "{mac} (not enrolled) took an inspection ticket from {peer}"
                )
            }
            D::InspectionReported { mac, summary } => {
                write!(f, "{mac} (not enrolled) inspected: {summary}")
            }
            D::DiskOverwriting {
                device,
                identity,
                signatures,
                ..
            } => write!(f, "writing {device} ({identity}); it held: {signatures}"),
            other => unreachable!("{:?} is not in this family", other.kind()),
        }
    }
}

/// ` boot=undionly.kpxe arch=0 (BIOS)`, or why there is no boot file.
struct DhcpBoot<'a> {
    client: DhcpClient,
    arch: Option<u16>,
    boot_file: Option<&'a str>,
    netboot: bool,
}

impl fmt::Display for DhcpBoot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arch = match self.arch {
            Some(a) => format!("arch={a} ({})", dhcp_arch_name(a)),
            None => "arch=none".to_string(),
        };
        match self.boot_file {
            Some(b) if self.client == DhcpClient::Ipxe => write!(f, " boot={b} (iPXE)"),
            Some(b) => write!(f, " boot={b} {arch}"),
            None if self.client == DhcpClient::Plain => Ok(()),
            None if !self.netboot => f.write_str(" (netboot off: no boot file)"),
            None => write!(f, " (no boot file for {arch})"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn dhcp(message: DhcpMessage, proxy: bool, boot_file: Option<&str>) -> EventData {
        EventData::Dhcp {
            message,
            xid: 0x1234_5678,
            proxy,
            ip: (!proxy).then(|| Ipv4Addr::new(10, 77, 0, 11)),
            reserved: (message == DhcpMessage::Nak).then(|| Ipv4Addr::new(10, 77, 0, 12)),
            client: DhcpClient::Pxe,
            arch: Some(7),
            vendor_class: Some("PXEClient:Arch:00007:UNDI:003016".into()),
            boot_file: boot_file.map(str::to_string),
            netboot: true,
        }
    }

    fn tftp(outcome: TftpOutcome) -> EventData {
        let sent = outcome == TftpOutcome::Sent;
        EventData::Tftp {
            outcome,
            file: "undionly.kpxe".into(),
            bytes: Some(if sent { 100_000 } else { 512 }),
            size: Some(100_000),
            duration_ms: Some(1250),
            blksize: Some(1468),
            windowsize: Some(1),
            reason: (!sent).then(|| "timed out".to_string()),
        }
    }

    fn action(outcome: ActionOutcome) -> EventData {
        EventData::Action {
            outcome,
            workflow: "wf-1".into(),
            index: 0,
            name: "img".into(),
            action: (outcome == ActionOutcome::Started).then(|| "image2disk".to_string()),
            attempt: 2,
            message: (outcome != ActionOutcome::Started).then(|| "exit 3".to_string()),
            duration_ms: Some(4000),
            retry_in_s: (outcome == ActionOutcome::Retrying).then_some(10),
        }
    }

    fn entered(to: WorkflowState, reason: &str) -> EventData {
        EventData::WorkflowEntered {
            workflow: "wf-1".into(),
            from: Some(WorkflowState::Pending),
            to,
            reason: reason.into(),
        }
    }

    /// Every variant, and every value of the field that decides the kind.
    fn samples() -> Vec<EventData> {
        use ActionOutcome as A;
        use DhcpMessage as M;
        use WorkflowState as W;
        let peer: IpAddr = "10.77.0.66".parse().unwrap();
        let mut all = vec![
            dhcp(M::Offer, false, Some("undionly.kpxe")),
            dhcp(M::Offer, true, Some("undionly.kpxe")),
            dhcp(M::Ack, false, None),
            dhcp(M::Inform, false, None),
            dhcp(M::Nak, false, None),
            dhcp(M::Release, false, None),
            dhcp(M::Decline, false, None),
            tftp(TftpOutcome::Sent),
            tftp(TftpOutcome::Refused),
            tftp(TftpOutcome::Failed),
            EventData::HttpScript {
                script: IpxeScript::Netboot,
                kernel: Some("vmlinuz".into()),
                initrd: Some("initramfs".into()),
            },
            EventData::HttpScript {
                script: IpxeScript::LocalDisk,
                kernel: None,
                initrd: None,
            },
            EventData::HttpRefused {
                route: "POST /v1/claim".into(),
                peer,
                reason: "already claimed".into(),
            },
            EventData::HttpOverCap {
                peer,
                cap: "per-source".into(),
                limit: 64,
                refused: 3,
            },
            EventData::WorkflowCreated {
                workflow: "wf-2".into(),
                template: "debian".into(),
                retry_of: Some("wf-1".into()),
            },
            EventData::WorkflowCancelled {
                workflow: "wf-1".into(),
                reason: "by hand".into(),
            },
            EventData::BmcBootDevice {
                device: "pxe".into(),
                persistent: false,
                mode: "legacy".into(),
            },
            EventData::BmcPower {
                was: "off".into(),
                sending: "on".into(),
            },
            EventData::BmcDone {
                task: BmcTask::Netboot,
                result: "was off: powered on (confirmed)".into(),
            },
            EventData::BmcDone {
                task: BmcTask::Op(BmcOp::Off),
                result: "Power off: now OFF".into(),
            },
            EventData::BmcRetrying {
                task: BmcTask::Netboot,
                attempt: 1,
                attempts: 5,
                error: "unreachable".into(),
                retry_in_s: 2,
            },
            EventData::BmcFailed {
                task: BmcTask::BootDisk,
                attempt: 5,
                retried: true,
                error: "unreachable".into(),
            },
            EventData::BmcSkipped {
                reason: "the machine's agent called before kiln powered it".into(),
            },
            EventData::AgentClaimed {
                workflow: "wf-1".into(),
                peer,
                again: false,
            },
            EventData::AgentRearmed {
                workflow: "wf-1".into(),
            },
            EventData::AgentSeed {
                workflow: "wf-1".into(),
            },
            EventData::ApiRefused {
                method: "GET".into(),
                path: "/api/v1/machines".into(),
                peer,
                reason: "no token".into(),
            },
            EventData::InventoryReported {
                summary: crate::inventory::InventorySummary {
                    cpu_cores: 2,
                    memory_gib: 1,
                    disks: vec!["vda 8 GiB A".into()],
                    nics: 1,
                    ..Default::default()
                },
            },
            EventData::InspectionClaimed {
                mac: "52:54:00:00:00:09".parse().unwrap(),
                peer,
            },
            EventData::InspectionReported {
                mac: "52:54:00:00:00:09".parse().unwrap(),
                summary: Default::default(),
            },
            EventData::DiskOverwriting {
                workflow: "wf-1".into(),
                device: "/dev/vda".into(),
                identity: crate::inventory::DiskIdentity {
                    serial: "A".into(),
                    ..Default::default()
                },
                signatures: "vda: gpt; vda1: ext4".into(),
            },
        ];
        for h in [HttpRoot::Artifacts, HttpRoot::Images, HttpRoot::Boot] {
            all.push(EventData::HttpFile {
                root: h,
                path: "debian.raw.gz".into(),
                status: 206,
                range: Some("bytes=100-".into()),
            });
        }
        for s in [
            W::Pending,
            W::Netbooting,
            W::Running,
            W::Rebooting,
            W::Succeeded,
            W::Failed,
            W::TimedOut,
        ] {
            all.push(entered(s, ""));
        }
        for o in [
            A::Started,
            A::Succeeded,
            A::Failed,
            A::TimedOut,
            A::Retrying,
            A::Restarted,
        ] {
            all.push(action(o));
        }
        all
    }

    #[test]
    fn every_variant_goes_through_json_and_back() {
        let mut tags = BTreeSet::new();
        for d in samples() {
            let json = serde_json::to_value(&d).unwrap();
            tags.insert(json["type"].as_str().unwrap().to_string());
            let back: EventData = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, d, "{json}");
        }
        // One tag per variant: a new variant without a sample shows here.
        assert_eq!(tags.len(), 24, "{tags:?}");
    }

    #[test]
    fn every_kind_has_data_and_each_data_one_kind() {
        let kinds: BTreeSet<EventKind> = samples().iter().map(EventData::kind).collect();
        let all: BTreeSet<EventKind> = EventKind::ALL.iter().copied().collect();
        assert_eq!(kinds, all, "every kind but `unknown` comes from some data");
        assert_eq!(
            entered(WorkflowState::TimedOut, "").kind(),
            EventKind::WorkflowTimedOut
        );
        assert_eq!(
            dhcp(DhcpMessage::Inform, false, None).kind(),
            EventKind::DhcpAck
        );
        assert_eq!(
            action(ActionOutcome::Retrying).kind(),
            EventKind::ActionRetrying
        );
    }

    #[test]
    fn the_detail_keeps_the_wording_people_and_tests_rely_on() {
        let cases = [
            (
                dhcp(DhcpMessage::Offer, false, Some("undionly.kpxe")),
                "offered 10.77.0.11 boot=undionly.kpxe arch=7 (x86-64 UEFI)",
            ),
            (
                dhcp(DhcpMessage::Ack, true, Some("ipxe.efi")),
                "proxy ack boot=ipxe.efi arch=7 (x86-64 UEFI)",
            ),
            (
                dhcp(DhcpMessage::Nak, false, None),
                "refused 10.77.0.11: reserved address is 10.77.0.12",
            ),
            (
                tftp(TftpOutcome::Sent),
                "undionly.kpxe 100000 bytes in 1.25 s blksize=1468 windowsize=1",
            ),
            (
                tftp(TftpOutcome::Failed),
                "undionly.kpxe: timed out after 512 of 100000 bytes",
            ),
            (
                samples()
                    .into_iter()
                    .find(|d| matches!(d, EventData::HttpFile { .. }))
                    .unwrap(),
                "GET /artifacts/debian.raw.gz 206 bytes=100-",
            ),
            (
                EventData::BmcDone {
                    task: BmcTask::Netboot,
                    result: "was off: powered on (confirmed)".into(),
                },
                "power on into netboot: was off: powered on (confirmed)",
            ),
            (
                EventData::BmcBootDevice {
                    device: "pxe".into(),
                    persistent: false,
                    mode: "legacy".into(),
                },
                "next boot: pxe (once, legacy)",
            ),
            (
                EventData::BmcFailed {
                    task: BmcTask::Netboot,
                    attempt: 1,
                    retried: false,
                    error: "bad password".into(),
                },
                "power on into netboot (not retried): bad password",
            ),
            (
                EventData::BmcDone {
                    task: BmcTask::Op(BmcOp::Off),
                    result: "Power off: now OFF".into(),
                },
                "kiln bmc off: power off: now off",
            ),
            (
                action(ActionOutcome::Retrying),
                "img: exit 3; retry in 10 s",
            ),
            (action(ActionOutcome::Started), "img (image2disk) attempt 2"),
            (entered(WorkflowState::Failed, ""), "workflow wf-1"),
            (
                EventData::WorkflowCreated {
                    workflow: "wf-2".into(),
                    template: "debian".into(),
                    retry_of: Some("wf-1".into()),
                },
                "wf-2 from template debian (retry of wf-1)",
            ),
        ];
        for (data, text) in cases {
            assert_eq!(data.to_string(), text);
        }
    }

    #[test]
    fn strings_a_client_chose_are_escaped() {
        let d = EventData::HttpFile {
            root: HttpRoot::Boot,
            path: "a\x1b[2Jb\u{9b}".into(),
            status: 404,
            range: None,
        }
        .escaped();
        let EventData::HttpFile { path, .. } = &d else {
            unreachable!()
        };
        assert_eq!(path, "a\\u{1b}[2Jb\\u{9b}");
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.chars().any(char::is_control), "{json}");
    }

    #[test]
    fn unknown_data_types_do_not_parse() {
        // The stored record keeps the data optional; a newer kiln's type is a clean error
        // the reader can map to "no data" rather than a wrong variant.
        assert!(serde_json::from_str::<EventData>(r#"{"type":"dhcp.v9"}"#).is_err());
    }
}
