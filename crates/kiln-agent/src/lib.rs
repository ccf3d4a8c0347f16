//! kiln-agent: the program inside Kiln's in-memory OS. It runs the workflow actions the server
//! hands it over HTTP; its core action is [`image2disk`](image2disk::image2disk).
//!
//! The agent links `kiln-model` at most and talks to the server only over HTTP. It is built to
//! link statically (`-C target-feature=+crt-static`): rustls instead of OpenSSL, and servers
//! addressed by IP.

pub mod client;
pub mod disk_choice;
pub mod image2disk;
pub mod installed;
pub mod inventory;
pub mod kexec;
pub mod runner;
pub mod tls;
pub mod wipe;
