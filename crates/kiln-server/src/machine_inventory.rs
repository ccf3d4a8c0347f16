//! The agent's hardware inventory and disk writes: stored per machine (bounded history,
//! rate-limited: a netbooting client sends them), recorded as events, and turned into the
//! wrong-disk guard the server hands out with every disk-writing action.

use kiln_api::agent::{ActionKind, DiskGuard, DiskWrite, OVERWRITE_ALWAYS, ReportKind};
use kiln_api::event_data::EventData;
use kiln_api::inventory::{DiskIdentity, Inventory};
use kiln_engine::engine::AgentCall;
use kiln_http::{ApiError, ApiErrorKind};
use kiln_model::Event;
use kiln_model::template::ActionSpec;
use kiln_model::workflow::{Report, Workflow};

use crate::provisioning::EngineProvisioning;

/// Reports kept per machine.
pub const INVENTORY_KEEP: usize = 20;
/// The shortest time between two accepted reports of one machine.
pub const INVENTORY_MIN_INTERVAL_MS: u64 = 10_000;
/// Machine fact: the identity (JSON) of the disk the last successful install wrote.
pub const FACT_INSTALLED_DISK: &str = "installed-disk";
/// Machine fact: what the BMC says of the system (JSON `BmcSystem`), from `bmc info`.
pub const FACT_BMC_SYSTEM: &str = "bmc-system";
/// Machine fact: the disk the running install is writing; becomes the installed disk when
/// the write succeeds.
const FACT_WRITING_DISK: &str = "writing-disk";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn store_error(e: kiln_store::StoreError) -> ApiError {
    tracing::warn!("store: {e}");
    ApiError::internal("internal error")
}

fn event_of(machine: &str, data: EventData) -> Event {
    Event {
        machine: Some(machine.to_string()),
        ..Event::of(data)
    }
}

impl EngineProvisioning {
    fn agent_machine(&self, call: AgentCall<'_>) -> Result<Workflow, ApiError> {
        self.engine
            .agent_workflow(call)
            .map_err(crate::provisioning::api_error)
    }

    /// Stores the credential's machine's inventory and records `inventory.reported`.
    pub(crate) fn take_inventory(
        &self,
        call: AgentCall<'_>,
        inventory: &Inventory,
    ) -> Result<(), ApiError> {
        let wf = self.agent_machine(call)?;
        inventory
            .check()
            .map_err(|e| ApiError::plain(ApiErrorKind::Invalid, format!("inventory: {e}")))?;
        let host = &wf.hardware;
        let now = now_ms();
        let last = self.store.inventories(host, 1).map_err(store_error)?;
        if let Some(last) = last.first()
            && now.saturating_sub(last.at_ms) < INVENTORY_MIN_INTERVAL_MS
        {
            return Err(ApiError::plain(
                ApiErrorKind::TooMany,
                format!(
                    "{host}: one inventory report per {} s",
                    INVENTORY_MIN_INTERVAL_MS / 1000
                ),
            ));
        }
        let json = serde_json::to_string(inventory).expect("inventories serialize");
        self.store
            .put_inventory(host, now, &json, INVENTORY_KEEP)
            .map_err(store_error)?;
        self.store
            .append_events(&[event_of(
                host,
                EventData::InventoryReported {
                    summary: inventory.summary(),
                },
            )])
            .map_err(store_error)?;
        Ok(())
    }

    /// Records what the agent is about to overwrite (an event; the disk to remember once the
    /// write succeeds).
    pub(crate) fn take_disk_write(
        &self,
        call: AgentCall<'_>,
        write: &DiskWrite,
    ) -> Result<(), ApiError> {
        let wf = self.agent_machine(call)?;
        let running = wf.actions.get(write.index).is_some_and(|a| {
            a.spec.kind == ActionKind::Image2disk
                && a.attempts == write.attempt
                && a.state == kiln_model::workflow::ActionState::Running
        });
        if !running {
            return Err(ApiError::plain(
                ApiErrorKind::Conflict,
                format!(
                    "action {} attempt {} is not a running image2disk",
                    write.index, write.attempt
                ),
            ));
        }
        let disk = &write.disk;
        let mut one = kiln_api::inventory::Inventory {
            disks: vec![disk.clone()],
            ..Default::default()
        };
        one.check()
            .map_err(|e| ApiError::plain(ApiErrorKind::Invalid, format!("disk: {e}")))?;
        let identity = one.disks.remove(0).identity();
        let json = serde_json::to_string(&identity).expect("identities serialize");
        self.store
            .set_machine_fact(&wf.hardware, FACT_WRITING_DISK, &json)
            .map_err(store_error)?;
        self.store
            .append_events(&[event_of(
                &wf.hardware,
                EventData::DiskOverwriting {
                    workflow: wf.id.clone(),
                    device: disk.device(),
                    identity,
                    signatures: disk.signatures_text(),
                },
            )])
            .map_err(store_error)?;
        Ok(())
    }

    /// The guard for an image2disk action of `hostname`.
    pub(crate) fn guard_for(&self, hostname: &str, action: &ActionSpec) -> DiskGuard {
        let fact = |key: &str| {
            self.store
                .machine_fact(hostname, key)
                .ok()
                .flatten()
                .and_then(|j| serde_json::from_str::<DiskIdentity>(&j).ok())
        };
        DiskGuard {
            installed: fact(FACT_INSTALLED_DISK),
            written: fact(FACT_WRITING_DISK),
            overwrite_always: action
                .params
                .get("overwrite")
                .is_some_and(|v| v.trim() == OVERWRITE_ALWAYS),
        }
    }

    /// After an image2disk's success is taken: the disk it wrote is the installed one now.
    pub(crate) fn after_report(&self, wf: &Workflow, report: &Report) {
        let wrote = matches!(report.kind, ReportKind::Succeeded { .. })
            && wf
                .actions
                .get(report.index)
                .is_some_and(|a| a.spec.kind == ActionKind::Image2disk);
        if !wrote {
            return;
        }
        if let Ok(Some(disk)) = self.store.machine_fact(&wf.hardware, FACT_WRITING_DISK)
            && let Err(e) = self
                .store
                .set_machine_fact(&wf.hardware, FACT_INSTALLED_DISK, &disk)
        {
            tracing::warn!("store: recording {}'s installed disk: {e}", wf.hardware);
        }
    }
}
