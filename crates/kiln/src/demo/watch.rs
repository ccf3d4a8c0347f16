//! What the demo's live view reads while it follows the machines: new events, the machines'
//! workflows and their phone-home.
//!
//! Everything else the demo does goes through `kiln` commands, clients of the admin API.
//! These reads still open Kiln's store beside the server (SQLite allows it; they only read):
//! the events and workflows routes of the admin API are not there yet. When they are, this
//! module is the one place to turn into API calls (`GET /api/v1/events?after=ID`,
//! `GET /api/v1/workflows?all=true`).

use std::path::Path;

use anyhow::Context;
use kiln_model::event::Event;
use kiln_model::workflow::Workflow;
use kiln_store::{PhoneHome, Store};
use std::sync::Arc;

/// Events one read returns at most.
const PAGE: i64 = 1000;

pub struct Watch {
    store: Arc<dyn Store>,
}

impl Watch {
    pub fn open(data: &Path) -> anyhow::Result<Watch> {
        let store =
            kiln_store::open_sqlite(data).with_context(|| format!("opening {}", data.display()))?;
        Ok(Watch { store })
    }

    /// The newest event's id: the live view starts after it.
    pub fn last_event_id(&self) -> anyhow::Result<i64> {
        Ok(self.store.last_event_id()?)
    }

    /// Every event after `after`, oldest first, with its id.
    pub fn events_after(&self, after: i64) -> anyhow::Result<Vec<(i64, Event)>> {
        let mut all = Vec::new();
        let mut last = after;
        loop {
            let batch = self.store.events(None, last, PAGE)?;
            let full = batch.len() as i64 == PAGE;
            for r in batch {
                last = r.id;
                all.push((r.id, r.event));
            }
            if !full {
                return Ok(all);
            }
        }
    }

    /// Every workflow, ended ones too, newest first.
    pub fn workflows(&self) -> anyhow::Result<Vec<Workflow>> {
        Ok(self.store.workflows(false)?)
    }

    /// The phone-home a workflow's installed OS sent, if it did.
    pub fn phone_home_of(&self, workflow: &str) -> anyhow::Result<Option<PhoneHome>> {
        Ok(self.store.phone_home_of(workflow)?)
    }
}
