//! Kiln's DHCP responder.
//!
//! The core is pure (no sockets): [`decide`] turns a decoded request, the
//! in-memory [`Inventory`](kiln_model::Inventory) and a [`Config`] into a
//! [`Decision`]; [`handle_packet`] wraps it with decoding and encoding and is
//! what the shell ([`server::run`]) and the fuzz target ([`fuzz_entry`]) call.
//! [`router_advert`] sends the IPv6 router advertisement iPXE waits for.

pub mod boot;
pub mod client;
pub mod config;
pub mod decide;
pub mod inspect;
pub mod probe;
mod reply;
pub mod router_advert;
pub mod segment;
pub mod server;
pub mod wire;

pub use config::{BootFiles, Config, Mode};
pub use decide::{
    Decision, Destination, Ingress, Outcome, Reply, decide, decide_inspecting, decide_via,
};
pub use inspect::{INSPECT_LEASE_SECS, Inspect, InspectPool, Leases, SharedLeases};
pub use router_advert::{RouterAdvertError, build_router_advert, run_router_advert};
pub use segment::{Segments, Subnet};
pub use server::{DhcpError, DhcpServer, ServerOptions, run};
pub use wire::{Handled, PacketError, fuzz_entry, handle_packet};

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod tests;
