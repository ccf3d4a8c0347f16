//! The admin API's contracts, shared by `kiln-server` (which serves them) and the `kiln` CLI
//! (their client): resources, the error body, token scopes and route builders. No I/O.

pub mod error;
pub mod images;
pub mod resources;
pub mod routes;
pub mod time;

pub use error::{ApiErrorBody, Detail};
pub use images::{DeletedImage, Image, ImageImport, ImportPhase, ImportRequest, ImportState};
pub use resources::*;
