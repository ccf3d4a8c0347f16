//! What a store backend does, one trait per kind of state; [`Store`] is all of them. Every
//! method is blocking and commits before it returns (an acknowledged change survives
//! `kill -9`); async code goes through [`crate::StoreHandle`].

use kiln_model::workflow::{Workflow, WorkflowState};
use kiln_model::{Event, Hardware, MacAddr};

use crate::StoreError;
use crate::records::{
    ActionLog, ApiTokenRecord, ClusterNode, ClusterRecord, EnrollSummary, EventRecord, ImageRecord,
    InventoryRecord, PhoneHome, ServerRecord, WorkflowKey,
};

pub type Result<T> = std::result::Result<T, StoreError>;

/// Enrolled machines.
pub trait HardwareStore {
    /// Stores `machines` in one transaction: each replaces the enrolled machine with the same
    /// hostname or MAC (keeping its netboot flag), or is added. Any clash with another machine
    /// aborts the whole enrolment ([`StoreError::Conflicts`]).
    fn enroll(&self, machines: &[Hardware]) -> Result<EnrollSummary>;
    /// Every enrolled machine, by hostname.
    fn hardware(&self) -> Result<Vec<Hardware>>;
    fn hardware_by_name(&self, hostname: &str) -> Result<Option<Hardware>>;
    fn hardware_by_mac(&self, mac: &MacAddr) -> Result<Option<Hardware>>;
    /// Changes one machine in a transaction: `change` edits it (labels, BMC credentials) and
    /// may refuse with a message; what it leaves is stored. Hostname, MAC, IP and BMC address
    /// stay (a new hardware.csv row changes those).
    fn update_hardware(
        &self,
        hostname: &str,
        change: &mut dyn FnMut(&mut Hardware) -> std::result::Result<(), String>,
    ) -> Result<Hardware>;
    /// Forgets a machine (and what was learnt of its BMC). Refused while it has an unfinished
    /// workflow or is a node of a cluster; its events and finished workflows stay as history.
    fn delete_hardware(&self, hostname: &str) -> Result<()>;
    /// Turns a machine's netboot on or off; the boot services pick it up.
    fn set_netboot(&self, hostname: &str, on: bool) -> Result<()>;
}

/// What the last call to a machine's BMC learnt about it.
pub trait BmcHintStore {
    /// What the last call to `hostname`'s BMC at `address` learnt (paths, never credentials).
    fn bmc_hint(&self, hostname: &str, address: &str) -> Result<Option<String>>;
    /// Records (or replaces) `hostname`'s hint for its BMC at `address`.
    fn set_bmc_hint(&self, hostname: &str, address: &str, hint: &str) -> Result<()>;
}

/// Hardware inventory reports (bounded history per machine) and small named facts about a
/// machine that outlive its workflows (the disk of its last install, what its BMC says).
pub trait InventoryStore {
    /// Records `hostname`'s report (JSON) and drops its oldest beyond `keep`.
    fn put_inventory(&self, hostname: &str, at_ms: u64, report: &str, keep: usize) -> Result<()>;
    /// `hostname`'s reports, newest first, at most `limit`.
    fn inventories(&self, hostname: &str, limit: usize) -> Result<Vec<InventoryRecord>>;
    /// Records (or replaces) the fact `key` of `hostname`.
    fn set_machine_fact(&self, hostname: &str, key: &str, value: &str) -> Result<()>;
    fn machine_fact(&self, hostname: &str, key: &str) -> Result<Option<String>>;
}

/// The effects of a workflow transition, written in the transition's transaction.
pub trait WorkflowTx {
    fn set_netboot(&self, hostname: &str, on: bool) -> Result<()>;
    /// The SHA-256 (hex) of the workflow's agent credential; `None` revokes it.
    fn set_agent_token_hash(&self, id: &str, hash: Option<&str>) -> Result<()>;
    fn revoke_token(&self, id: &str) -> Result<()> {
        self.set_agent_token_hash(id, None)
    }
    fn event(&self, event: &Event) -> Result<()>;
    /// Stores an agent's log lines (each cut at [`crate::MAX_LOG_LINE_BYTES`]) and drops the
    /// oldest beyond [`crate::MAX_LOG_LINES`]; how many were dropped, for the workflow to note.
    fn log(
        &self,
        id: &str,
        action: usize,
        attempt: u32,
        at_ms: u64,
        lines: &[String],
    ) -> Result<usize>;
    fn phone_home(&self, id: &str, at_ms: u64, peer: &str, payload: &str) -> Result<()>;
    /// Records a cluster (once, with its first node's workflow).
    fn insert_cluster(&self, c: &ClusterRecord) -> Result<()>;
    fn insert_cluster_node(&self, n: &ClusterNode) -> Result<()>;
    /// A retried node workflow takes the place of the one it retries (no-op outside clusters).
    fn relink_cluster_node(&self, old: &str, new: &str) -> Result<()>;
}

/// What a transition does inside its transaction.
pub type Change<'a> = dyn FnMut(&mut Workflow, &dyn WorkflowTx) -> Result<()> + 'a;

/// Workflows, their logs and phone-home payloads.
pub trait WorkflowStore {
    /// Stores new workflows, all or none ([`StoreError::Busy`] when a machine has one that has
    /// not ended), and runs `then` for each in the same transaction.
    fn create_workflows(
        &self,
        items: &[Workflow],
        then: &mut dyn FnMut(&Workflow, &dyn WorkflowTx) -> Result<()>,
    ) -> Result<()>;
    /// Loads the workflow named by `key`, lets `change` modify it, and writes it back (when it
    /// changed), all in one transaction: a crash leaves either the old or the new state, and
    /// `change`'s error aborts everything. [`crate::Store::with_workflow`] is the typed form.
    fn change_workflow(&self, key: WorkflowKey<'_>, change: &mut Change<'_>) -> Result<()>;
    fn workflow(&self, id: &str) -> Result<Option<Workflow>>;
    /// Workflows with a BMC step pending or claimed, oldest first: (id, machine).
    fn workflows_with_power_due(&self) -> Result<Vec<(String, String)>>;
    /// Workflows, newest first; only unfinished ones if `unfinished_only`.
    fn workflows(&self, unfinished_only: bool) -> Result<Vec<Workflow>>;
    /// How many workflows are in each state (states without one left out): counted by the
    /// store, for `/metrics`, without reading a record.
    fn workflow_state_counts(&self) -> Result<Vec<(WorkflowState, u64)>>;
    fn action_logs(&self, id: &str, after: i64, limit: i64) -> Result<Vec<ActionLog>>;
    fn phone_home_of(&self, id: &str) -> Result<Option<PhoneHome>>;
}

/// Event history, bounded per machine.
pub trait EventStore {
    /// Appends events in one transaction and trims each touched machine's history.
    fn append_events(&self, events: &[Event]) -> Result<()>;
    /// Events after `after_id`, oldest first, optionally of one machine.
    fn events(&self, machine: Option<&str>, after_id: i64, limit: i64) -> Result<Vec<EventRecord>>;
    /// The id of the newest event, to follow from "now".
    fn last_event_id(&self) -> Result<i64>;
}

/// MACs not enrolled that asked for DHCP, at most [`crate::discovery::MAX_DISCOVERED`].
pub trait DiscoveryStore {
    /// Adds sightings in one transaction (merged with what is known of each MAC) and evicts
    /// the MACs seen least recently beyond the bound.
    fn record_discovered(&self, seen: &[kiln_model::DiscoveredMac]) -> Result<()>;
    /// Every discovered MAC, most recently seen first.
    fn discovered(&self) -> Result<Vec<kiln_model::DiscoveredMac>>;
    /// Forgets MACs (enrolled now); how many were known.
    fn forget_discovered(&self, macs: &[MacAddr]) -> Result<usize>;
}

/// Imported OS images.
pub trait ImageStore {
    /// Records `img`, replacing any image of the same name.
    fn put_image(&self, img: &ImageRecord) -> Result<()>;
    /// Records `img` unless an image of that name exists; `false` then.
    fn add_image(&self, img: &ImageRecord) -> Result<bool>;
    /// Forgets an image; the record it was, to remove its file (when no other image names the
    /// same file: [`ImageStore::images`] tells).
    fn delete_image(&self, name: &str) -> Result<Option<ImageRecord>>;
    fn image(&self, name: &str) -> Result<Option<ImageRecord>>;
    fn images(&self) -> Result<Vec<ImageRecord>>;
}

/// Clusters and their nodes (written with their workflows, see [`WorkflowTx`]).
pub trait ClusterStore {
    fn clusters(&self) -> Result<Vec<ClusterRecord>>;
    fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>>;
    fn cluster_nodes(&self, cluster: &str) -> Result<Vec<ClusterNode>>;
    /// Machines that belong to a cluster (not free for another one).
    fn clustered_machines(&self) -> Result<Vec<String>>;
    /// The cluster node a workflow installs, with its cluster.
    fn cluster_of_workflow(&self, workflow: &str) -> Result<Option<(ClusterRecord, ClusterNode)>>;
    /// Forgets a cluster: its machines are free again.
    fn delete_cluster(&self, name: &str) -> Result<()>;
}

/// Admin API tokens: only their SHA-256 is stored.
pub trait TokenStore {
    fn insert_api_token(&self, t: &ApiTokenRecord, hash: &str) -> Result<()>;
    /// The live (not revoked) token whose SHA-256 is `hash`.
    fn api_token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>>;
    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Revokes the live tokens whose id or name is `key`; how many.
    fn revoke_api_token(&self, key: &str, now_ms: u64) -> Result<usize>;
}

/// Small named settings and what the backend is.
pub trait SettingStore {
    /// A small named setting (the server's URL, say).
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
    fn setting(&self, key: &str) -> Result<Option<String>>;
    /// A number that changes whenever another connection (another process, another server)
    /// commits a change to the hardware (on SQLite, any change): cheap to poll, so a server
    /// notices changes to what it holds in memory that it did not make.
    fn data_version(&self) -> Result<i64>;
    /// Where the state lives, for logs (a path, or a URL without its password).
    fn describe(&self) -> String;
}

/// The servers sharing the state (several on PostgreSQL, one on SQLite).
pub trait ServerStore {
    /// Records that `server` (by its id) is alive at its `seen_ms`, serving where it says.
    fn heartbeat(&self, server: &ServerRecord) -> Result<()>;
    /// Every server that ever beat, by id.
    fn servers(&self) -> Result<Vec<ServerRecord>>;
}

/// Kiln's whole durable state. Backends implement the parts; this is their sum.
pub trait Store:
    HardwareStore
    + BmcHintStore
    + InventoryStore
    + WorkflowStore
    + EventStore
    + DiscoveryStore
    + ImageStore
    + ClusterStore
    + TokenStore
    + SettingStore
    + ServerStore
    + Send
    + Sync
{
}

impl<T> Store for T where
    T: HardwareStore
        + BmcHintStore
        + InventoryStore
        + WorkflowStore
        + EventStore
        + DiscoveryStore
        + ImageStore
        + ClusterStore
        + TokenStore
        + SettingStore
        + ServerStore
        + Send
        + Sync
{
}

impl dyn Store {
    /// [`WorkflowStore::change_workflow`] returning what `change` returns.
    pub fn with_workflow<R>(
        &self,
        key: WorkflowKey<'_>,
        change: impl FnOnce(&mut Workflow, &dyn WorkflowTx) -> Result<R>,
    ) -> Result<R> {
        let mut change = Some(change);
        let mut out = None;
        self.change_workflow(key, &mut |wf, tx| {
            let f = change.take().expect("a transition runs its change once");
            out = Some(f(wf, tx)?);
            Ok(())
        })?;
        Ok(out.expect("change ran"))
    }
}
