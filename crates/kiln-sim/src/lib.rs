//! Kiln's simulated rack (issue 13): machines without QEMU that do on the wire what their
//! firmware's iPXE, Kiln's agent OS and the installed OS do ([`machine`]), simulated Redfish
//! and IPMI BMCs whose power-on starts a machine's boot ([`redfish`], [`ipmi`]), one shared DHCP client socket
//! ([`dhcp_port`]), and the `kiln-rack` runner that provisions N of them with a real
//! `kiln serve` in a private network namespace and measures it ([`rack`]), with one server or an HA pair on PostgreSQL ([`servers`]).
//!
//! The wire codecs ([`dhcp`], [`script`]) are pure and unit-tested; the machines reuse the
//! agent's own kernel command line parser and pinned-CA TLS verifier and kiln-api's types.

pub mod cpu_cap;
pub mod dhcp;
pub mod dhcp_port;
pub mod inventory;
pub mod ipmi;
pub mod machine;
pub mod rack;
pub mod redfish;
pub mod script;
pub mod servers;
pub mod stats;
pub mod tftp;
