//! BMC errors. Messages name the BMC by address and never carry a password.

/// What went wrong, coarsely: the engine retries `Unreachable` and `Timeout`, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer at all, refused, or the host is unknown.
    Unreachable,
    /// The BMC answered but rejected the credentials.
    Auth,
    /// The BMC does not offer what was asked (a cipher suite, a reset type, a boot mode).
    Unsupported,
    /// The BMC answered, but with something that is not valid protocol.
    Protocol,
    /// The BMC understood and refused (an IPMI completion code, an HTTP 4xx/5xx).
    Rejected,
    /// A change was sent but not seen in time (the power state never reached the target).
    Timeout,
}

impl ErrorKind {
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Timeout)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BmcError {
    /// BMC {address} unreachable: {detail}
    #[error("BMC {address} unreachable: {detail}")]
    Unreachable { address: String, detail: String },
    /// BMC {address}: authentication failed: {detail}
    #[error("BMC {address}: authentication failed: {detail}")]
    Auth { address: String, detail: String },
    /// BMC {address} does not support {what}
    #[error("BMC {address} does not support {what}")]
    Unsupported { address: String, what: String },
    /// BMC {address} sent an invalid reply: {detail}
    #[error("BMC {address} sent an invalid reply: {detail}")]
    Protocol { address: String, detail: String },
    /// BMC {address} refused {operation}: {detail}
    #[error("BMC {address} refused {operation}: {detail}")]
    Rejected {
        address: String,
        operation: String,
        detail: String,
    },
    /// BMC {address}: {operation} not confirmed after {seconds} s
    #[error("BMC {address}: {operation} not confirmed after {seconds} s")]
    Timeout {
        address: String,
        operation: String,
        seconds: u64,
    },
    /// bmc address {address:?}: {detail}
    #[error("bmc address {address:?}: {detail}")]
    BadAddress { address: String, detail: String },
}

impl BmcError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BmcError::Unreachable { .. } => ErrorKind::Unreachable,
            BmcError::Auth { .. } => ErrorKind::Auth,
            BmcError::Unsupported { .. } | BmcError::BadAddress { .. } => ErrorKind::Unsupported,
            BmcError::Protocol { .. } => ErrorKind::Protocol,
            BmcError::Rejected { .. } => ErrorKind::Rejected,
            BmcError::Timeout { .. } => ErrorKind::Timeout,
        }
    }
}
