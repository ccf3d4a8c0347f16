//! Workflows: one per machine, a rendered copy of a template's actions and
//! where each one got to. The engine (kiln-engine) moves them; this is the data.

use serde::{Deserialize, Serialize};

use crate::template::ActionSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
}

/// Streaming progress an action reports (image2disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub rate_bps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStatus {
    pub spec: ActionSpec,
    pub state: ActionState,
    pub attempts: u32,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// Not before this time may the next attempt start (backoff).
    pub retry_at_ms: Option<u64>,
    pub message: String,
    pub progress: Option<Progress>,
    /// Which agent run was given the running attempt (see `NextAction`): the same run asking
    /// again (its answer was lost) gets the same attempt back instead of burning a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub hardware: String,
    pub template: String,
    pub state: WorkflowState,
    pub actions: Vec<ActionStatus>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub ended_ms: Option<u64>,
    /// The whole workflow times out at this time.
    pub deadline_ms: u64,
    pub message: String,
    /// BMC steps: power into netboot at the start, next boot from disk at the end.
    #[serde(default)]
    pub power: PowerSteps,
    /// The template's YAML, for `kiln workflow retry` (absent in workflows made before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_source: Option<String>,
    /// The workflow this one retries, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// Agent log lines dropped, oldest first, to keep the stored log bounded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_lines_dropped: u64,
    /// Who holds the agent credential of this netboot round (the token itself is stored
    /// hashed, apart from the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_claim: Option<AgentClaim>,
    /// When the cloud-init seed was handed to the agent: it leaves once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_served_ms: Option<u64>,
}

/// The agent that claimed a workflow's credential: its address binds every later call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaim {
    pub at_ms: u64,
    pub peer: std::net::IpAddr,
    /// The agent run that claimed (see [`NextAction`]); the same run may claim again
    /// after a lost answer.
    pub run: String,
}

/// `POST /v1/agent/claim`: the agent asks for its credential, once per netboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub mac: crate::MacAddr,
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

/// Stands for the phone-home URL's signature in rendered templates: the server puts the
/// real one in when it hands an action or the seed to the agent, so the store never holds it.
pub const PHONE_HOME_SIGNATURE_MARKER: &str = "KILN-PHONE-HOME-SIGNATURE";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A workflow's BMC steps. Machines without a BMC (or workflows created with
/// `--no-power`) have both `NotNeeded`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerSteps {
    /// Next boot PXE (once), then power on, or cycle when already on; confirmed.
    pub start: PowerStep,
    /// Next boot from disk, after the workflow ended.
    pub finish: PowerStep,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    #[default]
    NotNeeded,
    Pending,
    /// Claimed by a running `kiln serve` until `claimed_until_ms`; a claim that
    /// runs out (the server was killed) is taken up again.
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerStep {
    pub state: StepState,
    pub attempts: u32,
    /// Not before this time (backoff after a failed attempt).
    pub next_at_ms: Option<u64>,
    pub claimed_until_ms: Option<u64>,
    pub message: String,
}

impl Workflow {
    /// Index of the action the agent should be working on: the first not yet succeeded.
    pub fn current(&self) -> Option<usize> {
        self.actions
            .iter()
            .position(|a| a.state != ActionState::Succeeded)
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
