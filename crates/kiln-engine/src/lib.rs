//! The workflow engine. `machine` is the pure state machine (workflow + event
//! + time in, new workflow + effects out); `engine` applies it to the store.

pub mod credential;
pub mod engine;
pub mod machine;
pub mod power;
pub mod power_run;

pub use engine::{ClaimedJob, Engine, EngineError, Reported, now_ms};
pub use machine::{Effects, ReportError, backoff_ms, new_workflow};
