//! The agent's protocol: what `kiln-agent` (in the netbooted in-memory OS) and the server say
//! to each other over `/v1/agent/...`. The agent links this crate, not the server's model.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::inventory::{Disk, DiskIdentity};
use crate::mac::MacAddr;

/// The actions the agent knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Stream an image to the disk: url, sha256, disk, optional size.
    Image2disk,
    /// Write a file into the installed OS: path, content, optional mode.
    Writefile,
    /// Write a NoCloud seed into the installed OS: optional user_data, meta_data, network_config.
    CloudInit,
    /// Run a command chrooted into the installed OS: command.
    Exec,
    /// Reboot into the installed OS.
    Reboot,
    /// kexec into the installed OS's kernel (faster than a firmware reboot).
    Kexec,
    /// Erase the disk's partition tables and file system signatures: optional disk.
    Wipe,
    /// Power the machine off; the workflow succeeds when the agent reports it.
    Poweroff,
}

impl ActionKind {
    pub const ALL: [(&'static str, ActionKind); 8] = [
        ("image2disk", ActionKind::Image2disk),
        ("writefile", ActionKind::Writefile),
        ("cloud-init", ActionKind::CloudInit),
        ("exec", ActionKind::Exec),
        ("reboot", ActionKind::Reboot),
        ("kexec", ActionKind::Kexec),
        ("wipe", ActionKind::Wipe),
        ("poweroff", ActionKind::Poweroff),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .expect("every kind is listed")
    }

    /// (required, optional) parameters.
    pub fn params(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ActionKind::Image2disk => (&["url", "sha256"], &["disk", "size", "overwrite"]),
            ActionKind::Writefile => (&["path", "content"], &["mode", "disk"]),
            ActionKind::CloudInit => (&[], &["user_data", "meta_data", "network_config", "disk"]),
            ActionKind::Exec => (&["command"], &["disk"]),
            ActionKind::Wipe => (&[], &["disk"]),
            ActionKind::Reboot | ActionKind::Kexec | ActionKind::Poweroff => (&[], &[]),
        }
    }

    /// Whether the machine leaves the agent after this action.
    pub fn ends_agent(self) -> bool {
        matches!(
            self,
            ActionKind::Reboot | ActionKind::Kexec | ActionKind::Poweroff
        )
    }

    /// Whether the workflow is over once this action succeeds (the machine is off: no
    /// installed OS will phone home).
    pub fn ends_workflow(self) -> bool {
        matches!(self, ActionKind::Poweroff)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpec {
    pub name: String,
    pub kind: ActionKind,
    pub timeout: Duration,
    pub retries: u32,
    pub params: BTreeMap<String, String>,
    /// For actions that write a disk (image2disk): what the server knows of the machine's
    /// disk, for the agent's wrong-disk guard. Set by the server when it hands the action out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Box<DiskGuard>>,
}

/// What the agent checks before it writes a disk ([`DiskGuard::check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiskGuard {
    /// The disk of the machine's last successful install; `None`: Kiln never installed it.
    pub installed: Option<DiskIdentity>,
    /// The disk an earlier write of Kiln's went to, finished or not (a retried image2disk
    /// finds its own partial image there, not someone else's data).
    #[serde(default)]
    pub written: Option<DiskIdentity>,
    /// `overwrite: always` (template parameter or cluster spec): write whatever the disk is
    /// and holds.
    pub overwrite_always: bool,
}

/// The `overwrite` action parameter's one value that turns the guard off.
pub const OVERWRITE_ALWAYS: &str = "always";

impl DiskGuard {
    /// Whether the agent may write `disk`: it must be the disk of the last install, or, on
    /// a machine Kiln never installed, hold no partition table or file system.
    pub fn check(&self, disk: &Disk) -> Result<(), String> {
        if self.overwrite_always
            || self
                .written
                .as_ref()
                .is_some_and(|w| w.matches(&disk.identity()))
        {
            return Ok(());
        }
        match &self.installed {
            Some(before) if !before.matches(&disk.identity()) => Err(format!(
                "refusing to overwrite {}: it is not the disk of this machine's last install \
                 (now: {}; installed then: {before}); set `overwrite: always` to write it anyway",
                disk.device(),
                disk.identity()
            )),
            Some(_) => Ok(()),
            None if disk.has_signatures() => Err(format!(
                "refusing to overwrite {}: Kiln never installed this machine and the disk holds \
                 data ({}); set `overwrite: always` to write it anyway",
                disk.device(),
                disk.signatures_text()
            )),
            None => Ok(()),
        }
    }
}

/// `POST /v1/agent/disk`: the disk an action is about to write, with what it holds (for the
/// machine's events and the next install's guard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskWrite {
    pub index: usize,
    pub attempt: u32,
    pub disk: Disk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WorkflowState {
    /// Created; the machine has not booted the agent yet.
    Pending,
    /// The machine is booting Kiln's in-memory OS.
    Netbooting,
    /// The agent is running actions.
    Running,
    /// The agent handed over to the installed OS; waiting for its phone-home.
    Rebooting,
    Succeeded,
    Failed,
    TimedOut,
}

impl WorkflowState {
    pub const ALL: [WorkflowState; 7] = [
        WorkflowState::Pending,
        WorkflowState::Netbooting,
        WorkflowState::Running,
        WorkflowState::Rebooting,
        WorkflowState::Succeeded,
        WorkflowState::Failed,
        WorkflowState::TimedOut,
    ];

    /// The state [`WorkflowState::name`] names.
    pub fn from_name(name: &str) -> Option<WorkflowState> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowState::Succeeded | WorkflowState::Failed | WorkflowState::TimedOut
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkflowState::Pending => "pending",
            WorkflowState::Netbooting => "netbooting",
            WorkflowState::Running => "running",
            WorkflowState::Rebooting => "rebooting",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::TimedOut => "timed-out",
        }
    }
}

impl std::fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Streaming progress an action reports (image2disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub rate_bps: u64,
}

/// `POST /v1/agent/claim`: the agent asks for its credential, once per netboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub mac: MacAddr,
    pub run: String,
}

/// The answer to a claim. The token goes in `Authorization: Bearer` on every later call.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimed {
    pub token: String,
    pub workflow: String,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("token", &"<redacted>")
            .field("workflow", &self.workflow)
            .finish()
    }
}

/// `GET /v1/agent/seed`: the machine's NoCloud seed, handed out once per workflow.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed { <redacted> }")
    }
}

/// What the agent receives from `GET /v1/agent/next[?run=ID]`. `run` names the agent
/// process (the kernel's boot id and its PID): a retried call of the same run, after a lost
/// answer, gets the running attempt again; a new run (the machine rebooted) starts a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NextAction {
    /// Run this action now.
    Run {
        index: usize,
        attempt: u32,
        action: ActionSpec,
    },
    /// Nothing to do yet (a retry is backing off): ask again after this long.
    Wait { seconds: u64 },
    /// The workflow is over: stop.
    Done { state: WorkflowState },
}

/// What the agent posts to `POST /v1/agent/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub index: usize,
    pub attempt: u32,
    #[serde(flatten)]
    pub kind: ReportKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub enum ReportKind {
    Progress(Progress),
    Log { lines: Vec<String> },
    Succeeded { message: String },
    Failed { message: String },
}

/// Whether `run` is an agent-run id the server keeps: short, of letters, digits and '-'.
pub fn valid_agent_run(run: &str) -> bool {
    !run.is_empty()
        && run.len() <= 64
        && run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Partition, Signature};

    fn disk(serial: &str, signatures: Vec<Signature>) -> Disk {
        Disk {
            name: "vda".into(),
            by_path: String::new(),
            size_bytes: 8 << 30,
            model: String::new(),
            serial: serial.into(),
            wwn: String::new(),
            rotational: false,
            removable: false,
            signatures: vec![],
            partitions: vec![Partition {
                name: "vda1".into(),
                size_bytes: 1 << 30,
                signatures,
            }],
        }
    }

    #[test]
    fn the_guard_refuses_another_disk_and_unknown_data() {
        let installed = disk("A", vec![Signature::Ext4]).identity();
        let guard = DiskGuard {
            installed: Some(installed),
            written: None,
            overwrite_always: false,
        };
        assert_eq!(guard.check(&disk("A", vec![Signature::Ext4])), Ok(()));
        let e = guard.check(&disk("B", vec![])).unwrap_err();
        assert!(
            e.contains("not the disk of this machine's last install"),
            "{e}"
        );
        assert!(
            e.contains("serial \"B\"") && e.contains("serial \"A\""),
            "{e}"
        );

        let fresh = DiskGuard::default();
        assert_eq!(fresh.check(&disk("B", vec![])), Ok(()), "a blank disk");
        let e = fresh.check(&disk("B", vec![Signature::Xfs])).unwrap_err();
        assert!(
            e.contains("never installed") && e.contains("vda1: xfs"),
            "{e}"
        );
        // A retry finds the partial image of Kiln's earlier attempt: its own, so written.
        let retry = DiskGuard {
            written: Some(disk("B", vec![]).identity()),
            ..DiskGuard::default()
        };
        assert_eq!(retry.check(&disk("B", vec![Signature::Gpt])), Ok(()));
        assert!(retry.check(&disk("C", vec![Signature::Gpt])).is_err());

        let always = DiskGuard {
            overwrite_always: true,
            ..guard
        };
        assert_eq!(always.check(&disk("B", vec![Signature::Xfs])), Ok(()));
    }

    #[test]
    fn actions_without_a_guard_keep_their_old_wire_form() {
        let a = ActionSpec {
            name: "x".into(),
            kind: ActionKind::Reboot,
            timeout: Duration::from_secs(1),
            retries: 0,
            params: BTreeMap::new(),
            guard: None,
        };
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("guard").is_none());
        let back: ActionSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }
}
