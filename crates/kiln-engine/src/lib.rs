//! The workflow engine. `machine` is the pure state machine (workflow + event
//! + time in, new workflow + effects out); the store and HTTP shells apply it.

pub mod machine;

pub use machine::{Effects, ReportError, backoff_ms, new_workflow};
