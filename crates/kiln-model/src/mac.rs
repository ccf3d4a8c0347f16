//! Ethernet MAC addresses (kiln-api's: they cross the wire with the agent).

pub use kiln_api::mac::{MacAddr, ParseMacError};
