//! What the demo asks of Kiln, every call through its admin API ([`kiln_client`]), as an
//! operator's `kiln` commands would: enrol, import the test OS, BMC status, create workflows
//! or a cluster, follow events and workflows, mint a kubeconfig, delete the cluster.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, bail};
use kiln_api::images::{DEFAULT_ZSTD_LEVEL, UploadQuery};
use kiln_api::routes::path;
use kiln_api::{
    BmcActionRequest, BmcOp, BmcRow, ClusterCreateRequest, ClusterCreated, ClusterDeleted,
    ClusterStatus, CreateWorkflows, EnrollOutcome, EnrollRequest, EventView, ImageImport,
    ImportState, MintedKubeconfig, WorkflowView,
};
use kiln_client::{Client, ClientError, Endpoint};
use kiln_model::EventKind;
use kiln_model::event::Event;

/// Events one read returns at most (the server's page).
const PAGE: usize = 1000;

/// The lab's Kiln server, reached through its admin API.
pub struct Kiln {
    client: Client,
}

/// A refusal with its located details (`FILE:LINE:COLUMN ...`), one per line.
fn refused(what: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api { body, .. } if !body.details.is_empty() => {
            let lines: Vec<String> = body.details.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{what}: {}\n{}", body.message, lines.join("\n"))
        }
        e => anyhow::anyhow!("{what}: {e}"),
    }
}

/// An event as the live view reads it (the stored record's shape); `None` for a kind this
/// build does not know.
fn event(v: EventView) -> Option<Event> {
    Some(Event {
        at_ms: v.at_ms,
        machine: v.machine,
        mac: v.mac.and_then(|m| m.parse().ok()),
        ip: v.ip.and_then(|i| i.parse().ok()),
        kind: Some(v.kind).filter(|k| *k != EventKind::Unknown)?,
        detail: v.detail,
        data: v.data,
    })
}

impl Kiln {
    /// The server whose data dir is `data` (its `api.json`, CA and token), on this host.
    pub fn connect(data: &Path) -> anyhow::Result<Kiln> {
        let client = Client::connect(data, &Endpoint::default())?;
        Ok(Kiln { client })
    }

    /// Enrols every machine of `csv` (all rows or none).
    pub fn enroll(&self, csv: &Path) -> anyhow::Result<EnrollOutcome> {
        let name = csv.display().to_string();
        let req = EnrollRequest {
            file_name: name.clone(),
            csv: std::fs::read_to_string(csv).with_context(|| format!("reading {name}"))?,
            replace: false,
        };
        self.client
            .send("POST", &path("hardware", None, ""), &req)
            .map_err(|e| refused(&format!("enrolling {name}"), e))
    }

    /// Uploads `file` as image `name`; the server converts it to raw + zstd.
    pub fn import_image(&self, file: &Path, name: &str) -> anyhow::Result<()> {
        let source = file.display().to_string();
        let mut f = File::open(file).with_context(|| format!("opening {source}"))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {source}"))?
            .len();
        let query = UploadQuery {
            sha256: None,
            replace: false,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            source: Some(source.clone()),
            dry_run: false,
        };
        let ended: ImageImport = self
            .client
            .put_stream(&kiln_client::upload_path(name, &query), &mut f, len)
            .map_err(|e| refused(&format!("importing {source}"), e))?;
        if ended.state != ImportState::Succeeded {
            match ended.error {
                Some(e) => bail!("importing {source}: {e}"),
                None => bail!("importing {source}: the server gave no reason"),
            }
        }
        Ok(())
    }

    /// The power state of every machine labelled `selector` (`kiln bmc status --selector`).
    pub fn bmc_status(&self, selector: &str) -> anyhow::Result<Vec<BmcRow>> {
        let req = BmcActionRequest {
            op: BmcOp::Status,
            machines: Vec::new(),
            selector: vec![selector.to_string()],
            persistent: false,
        };
        Ok(self.client.send("POST", kiln_api::BMC_ACTIONS, &req)?)
    }

    /// One workflow per machine labelled `selector`, from the template file.
    pub fn create_workflows(
        &self,
        template: &Path,
        selector: &str,
    ) -> anyhow::Result<Vec<WorkflowView>> {
        let name = template.display().to_string();
        let req = CreateWorkflows {
            template: std::fs::read_to_string(template)
                .with_context(|| format!("reading {name}"))?,
            template_file: name.clone(),
            selector: vec![selector.to_string()],
            ..CreateWorkflows::default()
        };
        self.client
            .send("POST", &path("workflows", None, ""), &req)
            .map_err(|e| refused(&format!("creating workflows from {name}"), e))
    }

    /// Plans the cluster of the spec file and starts installing its nodes.
    pub fn create_cluster(&self, spec: &Path) -> anyhow::Result<ClusterCreated> {
        let name = spec.display().to_string();
        let req = ClusterCreateRequest {
            spec: std::fs::read_to_string(spec).with_context(|| format!("reading {name}"))?,
            file_name: name.clone(),
            dry_run: false,
            server_url: None,
            no_power: false,
        };
        self.client
            .send("POST", &path("clusters", None, ""), &req)
            .map_err(|e| refused(&format!("creating the cluster of {name}"), e))
    }

    pub fn cluster_status(&self, name: &str) -> Result<ClusterStatus, ClientError> {
        self.client.get(&path("clusters", Some(name), ""))
    }

    /// An admin kubeconfig minted from the cluster CA, written to `file` (0600).
    pub fn kubeconfig(&self, name: &str, file: &Path) -> anyhow::Result<()> {
        let minted: MintedKubeconfig =
            self.client
                .get(&path("clusters", Some(name), "/kubeconfig"))?;
        let text = minted
            .kubeconfig
            .context("the server returned no kubeconfig")?;
        crate::write_file(file, &text, 0o600)
    }

    /// Deletes the cluster: its nodes are wiped and powered off.
    pub fn delete_cluster(&self, name: &str) -> anyhow::Result<ClusterDeleted> {
        Ok(self.client.delete(&path("clusters", Some(name), ""))?)
    }

    /// The newest event's id: the live view starts after it.
    pub fn last_event_id(&self) -> anyhow::Result<i64> {
        let latest: Vec<EventView> = self
            .client
            .get(&format!("{}?last=1", path("events", None, "")))?;
        Ok(latest.last().map_or(0, |e| e.id))
    }

    /// Every event after `after`, oldest first, with its id.
    pub fn events_after(&self, after: i64) -> anyhow::Result<Vec<(i64, Event)>> {
        let mut all = Vec::new();
        let mut last = after;
        loop {
            let batch: Vec<EventView> = self.client.get(&format!(
                "{}?after={last}&last={PAGE}",
                path("events", None, "")
            ))?;
            let full = batch.len() == PAGE;
            for v in batch {
                last = v.id;
                if let Some(e) = event(v) {
                    all.push((last, e));
                }
            }
            if !full {
                return Ok(all);
            }
        }
    }

    /// Every workflow, ended ones too, newest first (with its phone-home).
    pub fn workflows(&self) -> anyhow::Result<Vec<WorkflowView>> {
        Ok(self
            .client
            .get(&format!("{}?all=true", path("workflows", None, "")))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::EventKind;

    fn view(kind: &str) -> EventView {
        EventView {
            id: 7,
            at: "2026-11-22T01:50:45.123Z".into(),
            at_ms: 1_795_312_245_123,
            machine: Some("demo-cp1".into()),
            mac: Some("52:54:00:77:00:11".into()),
            ip: Some("10.77.0.11".into()),
            kind: kind.parse().unwrap_or(EventKind::Unknown),
            detail: "acked 10.77.0.11".into(),
            data: None,
        }
    }

    #[test]
    fn api_events_become_the_records_the_live_view_reads() {
        let e = event(view("dhcp.ack")).expect("a known kind");
        assert_eq!(e.kind, EventKind::DhcpAck);
        assert_eq!(e.at_ms, 1_795_312_245_123);
        assert_eq!(e.machine.as_deref(), Some("demo-cp1"));
        assert_eq!(
            e.mac.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:77:00:11")
        );
        assert_eq!(e.ip.map(|i| i.to_string()).as_deref(), Some("10.77.0.11"));
        assert_eq!(e.detail, "acked 10.77.0.11");
        assert!(event(view("no.such-kind")).is_none());
    }
}
