//! Kiln's data model: hardware records, the hardware.csv format, events and the
//! in-memory inventory the boot services answer from. No I/O lives here.

pub mod bmc_address;
pub mod cloudinit;
pub mod csv;
pub mod diagnostic;
pub mod event;
pub mod hardware;
pub mod inventory;
pub mod labels;
pub mod mac;
pub mod secret;
pub mod template;
pub mod workflow;

pub use diagnostic::Diagnostic;
pub use event::{DiscoverySink, Event, EventKind, EventSink, NullSink};
pub use hardware::{BmcEndpoint, Hardware};
pub use inventory::{Inventory, SharedInventory};
/// Discovered MACs (kiln-api's: the store keeps them, the API shows them).
pub use kiln_api::discovery::{self, DiscoveredMac};
pub use mac::MacAddr;
pub use secret::Secret;
