//! The records a store hands back and the rules every backend shares (bounds, what "due" means).

use kiln_model::{Event, Hardware, Secret};

use crate::StoreError;
use kiln_model::workflow::Workflow;

/// What one enrolment changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnrollSummary {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// A machine in the file that clashes with a different machine already enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Index of the machine in the slice given to `enroll`.
    pub index: usize,
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A server sharing the state, as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerRecord {
    /// Its `server_id`: what its claims of BMC steps carry.
    pub id: String,
    /// Where it serves HTTP.
    pub url: String,
    /// Where it serves the agent API over TLS (`https://ADDRESS:PORT`), and the SHA-256 (hex)
    /// of the CA that signs its certificate: a netbooted agent is given the other servers'
    /// pairs, to move to when its own server dies.
    pub agent_api: Option<String>,
    pub ca_sha256: Option<String>,
    pub started_ms: u64,
    /// Its last heartbeat.
    pub seen_ms: u64,
}

/// Events kept per machine and class (anonymous traffic apart from workflow and BMC events;
/// events of no known machine together).
pub const MAX_EVENTS_PER_MACHINE: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRecord {
    pub id: i64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// File name under the images directory. Named by content (`NAME-<16 hex>.raw.zst`)
    /// since schema 6, so replacing an image never changes a file already handed out;
    /// earlier imports keep `NAME.raw.zst`.
    pub file: String,
    /// Size of the raw (uncompressed) image: agents check the disk against it.
    pub raw_size: u64,
    /// sha256 of the served (compressed) file.
    pub sha256: String,
    pub created_ms: u64,
    /// What the import read (`raw`, `qcow2`, `raw.gz`, `qcow2.xz`); empty when unknown.
    #[serde(default)]
    pub source_format: String,
}

/// A stored cluster. `secrets` holds keys: never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    pub name: String,
    pub spec_file: String,
    pub spec: String,
    /// JSON of the plan.
    pub plan: String,
    /// JSON of the cluster's CAs, keys and bootstrap token.
    pub secrets: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("name", &self.name)
            .field("spec_file", &self.spec_file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterNode {
    pub cluster: String,
    pub hostname: String,
    pub role: String,
    pub workflow: String,
}

/// One hardware inventory report as stored (JSON of `kiln_api::inventory::Inventory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRecord {
    pub at_ms: u64,
    pub report: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    /// `admin` or `read-only`.
    pub scope: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActionLog {
    pub id: i64,
    pub action: usize,
    pub attempt: u32,
    pub at_ms: u64,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PhoneHome {
    pub at_ms: u64,
    pub peer: String,
    pub payload: String,
}

/// Lines kept per workflow; older ones are dropped (an agent looping on an
/// error must not fill the disk).
pub const MAX_LOG_LINES: i64 = 20_000;

/// Bytes kept of one log line (a line without newlines must not hold megabytes).
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// `line`, cut at [`MAX_LOG_LINE_BYTES`] (on a character boundary) with what was cut said.
pub(crate) fn cut_line(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LOG_LINE_BYTES {
        return line.into();
    }
    let mut end = MAX_LOG_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &line[..end], line.len() - end).into()
}

/// Whether a BMC step of the workflow still has to run.
pub(crate) fn power_due(wf: &Workflow) -> bool {
    use kiln_model::workflow::StepState;
    [&wf.power.start, &wf.power.finish]
        .iter()
        .any(|s| matches!(s.state, StepState::Pending | StepState::Running))
}

/// How a transition finds its workflow.
#[derive(Debug, Clone, Copy)]
pub enum WorkflowKey<'a> {
    Id(&'a str),
    /// By id, unless another server's transaction holds it (PostgreSQL's `FOR UPDATE SKIP
    /// LOCKED`): then [`crate::StoreError::NoWorkflow`] at once instead of waiting. For claims:
    /// two servers never block on, nor both claim, one machine's step.
    IdUnlessLocked(&'a str),
    /// By the SHA-256 (hex) of its agent credential: only one not revoked.
    AgentTokenHash(&'a str),
    /// The machine's (by hostname) workflow that has not ended.
    UnfinishedOf(&'a str),
}

/// A workflow from its stored JSON.
pub(crate) fn decode_workflow(id: &str, record: &str) -> Result<Workflow, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt {
        what: format!("workflow {id}"),
        why: e.to_string(),
    })
}

/// A machine from its stored JSON and the columns kept apart (the password is never in the JSON).
pub(crate) fn decode_hardware(
    hostname: &str,
    record: &str,
    password: Option<String>,
    netboot: bool,
) -> Result<Hardware, StoreError> {
    let mut hw: Hardware = serde_json::from_str(record).map_err(|e| StoreError::Corrupt {
        what: hostname.to_string(),
        why: e.to_string(),
    })?;
    if let (Some(bmc), Some(p)) = (hw.bmc.as_mut(), password) {
        bmc.password = Secret::new(p);
    }
    hw.netboot = netboot;
    Ok(hw)
}
