//! The running Kiln server as a library: the provisioning network's services (DHCP, TFTP,
//! HTTP, the agent API over TLS), the workflow engine's ticker, the BMC job runner, the event
//! writer, the inventory refresher and the admin API, under one supervisor and one shutdown
//! signal. `kiln serve` is [`flags::run`]: its flags fill in [`ServeOptions`] and call [`serve`].

pub mod admin;
mod agent_tls;
pub mod bmc_actions;
mod boot_services;
pub mod cluster_seed;
pub mod clusters;
pub mod config;
pub mod discovery;
mod error;
pub mod flags;
pub mod images;
pub mod inspection;
mod machine_inventory;
pub mod meters;
mod options;
mod power;
pub mod preflight;
mod provisioning;
pub mod recorder;
mod refresher;
mod run;
pub mod select;
pub mod server_key;
mod sink;
pub mod templates;
pub mod workflows;

pub use error::ServerError;
pub use options::{Limits, ServeOptions, images_dir};
pub use run::{Running, serve, start};
