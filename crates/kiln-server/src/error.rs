//! Why the server could not start or stopped.

use kiln_store::StoreError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A step of starting (binding a port, reading a key) failed; `what` names the step.
    #[error("{what}: {cause}")]
    Start { what: String, cause: BoxError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// `.start("binding HTTP to …")`: names the step a start-up error happened in.
pub(crate) trait StartContext<T> {
    fn start(self, what: impl Into<String>) -> Result<T, ServerError>;
    fn with_start(self, what: impl FnOnce() -> String) -> Result<T, ServerError>;
}

impl<T, E: Into<BoxError>> StartContext<T> for Result<T, E> {
    fn start(self, what: impl Into<String>) -> Result<T, ServerError> {
        self.map_err(|e| ServerError::Start {
            what: what.into(),
            cause: e.into(),
        })
    }
    fn with_start(self, what: impl FnOnce() -> String) -> Result<T, ServerError> {
        self.map_err(|e| ServerError::Start {
            what: what(),
            cause: e.into(),
        })
    }
}
