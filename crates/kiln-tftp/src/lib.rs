//! Kiln's read-only TFTP server (RFC 1350, 2347, 2348, 2349, 7440).
//!
//! Layered like rustls: [`packet`], [`options`], [`path`] and [`transfer`]
//! are pure (bytes in, decisions out, no sockets or clocks) and unit-tested
//! with byte vectors; the server module is the tokio shell around them.
//!
//! The CLI calls [`run`] (or [`TftpServer::bind`] then [`TftpServer::serve`]
//! when it needs the bound address).
//!
//! Policy in brief: read requests only (WRQ gets ERROR 2); names with `..`,
//! a leading `/` or `\`, a drive letter or NUL are refused, and a symlink may
//! not lead out of the root; `netascii` is served byte-for-byte like `octet`;
//! in-memory files are looked up before the directory; a client's PXE-style
//! size probe (OACK, then ERROR) is counted as `aborted`, not as a failure.

mod cache;
mod driver;
pub mod options;
pub mod packet;
pub mod path;
mod server;
pub mod transfer;

pub use options::{Limits, Negotiated, Options, negotiate};
pub use packet::{ErrorCode, Mode, Packet, PacketError, Request, RequestKind, parse_request};
pub use path::PathError;
pub use server::{TftpConfig, TftpError, TftpServer, describe_metrics, run};
pub use transfer::{Action, ReadTransfer, TransferError};
