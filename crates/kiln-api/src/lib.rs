//! Kiln's wire contracts: the agent protocol (`agent`, shared with `kiln-agent`) and the admin
//! API's resources, error body, token scopes and route builders (shared by `kiln-server` and the
//! `kiln` CLI). No I/O.

pub mod agent;
pub mod bmc;
pub mod clusters;
pub mod discovery;
pub mod disk_hint;
pub mod error;
pub mod event_data;
pub mod event_kind;
pub mod events;
pub mod images;
pub mod inventory;
pub mod mac;
pub mod preflight;
pub mod resources;
pub mod routes;
pub mod sse;
pub mod time;
pub mod timeline;
pub mod workflows;

pub use bmc::*;
pub use clusters::*;
pub use discovery::{DiscoveredEnroll, DiscoveredMac};
pub use error::{ApiErrorBody, Detail};
pub use event_data::EventData;
pub use event_kind::EventKind;
pub use events::EventView;
pub use images::{DeletedImage, Image, ImageImport, ImportPhase, ImportRequest, ImportState};
pub use mac::MacAddr;
pub use preflight::*;
pub use resources::*;
pub use timeline::{Diagnosis, Phase, PhaseStatus, PhaseView, TimelineView};
pub use workflows::*;
