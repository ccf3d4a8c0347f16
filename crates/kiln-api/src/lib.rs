//! The admin API's contracts, shared by `kiln-server` (which serves them) and the `kiln` CLI
//! (their client): resources, the error body, token scopes and route builders. No I/O.

pub mod bmc;
pub mod clusters;
pub mod error;
pub mod resources;
pub mod routes;
pub mod time;

pub use bmc::*;
pub use clusters::*;
pub use error::{ApiErrorBody, Detail};
pub use resources::*;
