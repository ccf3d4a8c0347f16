//! The admin API's contracts, shared by `kiln-server` (which serves them) and the `kiln` CLI
//! (their client): resources, the error body, token scopes and route builders. No I/O.

pub mod error;
pub mod events;
pub mod resources;
pub mod routes;
pub mod sse;
pub mod time;
pub mod workflows;

pub use error::{ApiErrorBody, Detail};
pub use events::EventView;
pub use resources::*;
pub use workflows::*;
