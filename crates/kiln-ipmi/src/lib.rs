//! IPMI 2.0 over LAN (RMCP+, "lanplus") for power and boot control.
//!
//! The protocol core does no I/O (rustls style): [`Session`] is a state machine that hands out the
//! datagrams to send and takes the datagrams received, and the typed [`command`]s build requests and
//! parse responses. Every decoder returns an error on bad input and never panics (see `fuzz/`).
//! [`client::Client`] is the thin async UDP shell (feature `client`, on by default).
//!
//! Cipher suites 17 (RAKP-HMAC-SHA256 / HMAC-SHA256-128 / AES-CBC-128) and 3 (the SHA-1 versions).
//! Written here rather than taken from a crate: see the comment in this crate's Cargo.toml (ipmi-rs
//! lacks suite 17 and the chassis/boot commands; ruipmi is tied to its socket and resends power
//! commands).

mod crypto;
mod error;
mod secret;

pub mod command;
pub mod rakp;
pub mod responder;
pub mod session;
pub mod wire;

#[cfg(feature = "client")]
pub mod client;

pub use command::{BootDevice, BootFlags, ChassisControl, ChassisStatus, CompletionCode, DeviceId};
pub use crypto::{CipherSuite, RakpContext, SessionKeys};
pub use error::{Error, ErrorClass, Stage};
pub use secret::{Credentials, MAX_PASSWORD, MAX_USERNAME, Password};
pub use session::{Progress, Session};
pub use wire::{Request, Response};

#[cfg(test)]
mod tests;
