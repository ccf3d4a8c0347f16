//! Errors. None of them ever carries the password or a key.

use crate::CipherSuite;
use crate::command::CompletionCode;
use crate::rakp::RmcpStatus;
use std::time::Duration;

/// Which of the handshake messages an RMCP+ status code came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    OpenSession,
    Rakp2,
    Rakp4,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::OpenSession => "Open Session Response",
            Stage::Rakp2 => "RAKP Message 2",
            Stage::Rakp4 => "RAKP Message 4",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A packet is shorter than its structure needs.
    #[error("truncated {what}: need {need} bytes, got {got}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    /// A field holds a value the protocol does not allow here.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// An IPMI message checksum does not add up.
    #[error("bad {0} checksum in IPMI message")]
    Checksum(&'static str),
    /// The integrity AuthCode of an in-session packet does not match: tampered or not for this session.
    #[error("integrity check failed (AuthCode mismatch)")]
    Integrity,
    /// An in-session packet's sequence number is a replay or outside the accepted window.
    #[error("session sequence number {got} rejected (highest seen {highest})")]
    Sequence { got: u32, highest: u32 },
    /// The BMC does not accept this cipher suite.
    #[error("cipher suite {} not accepted by the BMC ({status})", suite.id())]
    UnsupportedCipherSuite {
        suite: CipherSuite,
        status: RmcpStatus,
    },
    /// The BMC does not speak IPMI v2.0 / RMCP+ on this channel.
    #[error("BMC does not offer IPMI v2.0 (RMCP+) connections")]
    NotIpmi20,
    /// Wrong user name or password (or a BMC key mismatch).
    #[error("{0}")]
    Auth(String),
    /// Any other RMCP+ status code in the session handshake.
    #[error("{stage} status {status}")]
    Rmcp { stage: Stage, status: RmcpStatus },
    /// The BMC answered a command with a completion code other than 0.
    #[error("{command}: completion code {code}")]
    Completion {
        command: &'static str,
        code: CompletionCode,
    },
    /// The session is not in a state that allows this call.
    #[error("session state: {0}")]
    State(&'static str),
    /// User name or password out of IPMI 2.0 limits.
    #[error("credentials: {0}")]
    Credentials(String),
    /// No (valid) answer within the timeout, after the given attempts.
    #[error("no answer to {what} after {attempts} attempt(s) of {per_attempt:?}")]
    NoResponse {
        what: &'static str,
        attempts: u32,
        per_attempt: Duration,
    },
    /// A power command was sent, its reply was lost, and the state cannot tell whether it ran.
    #[error("{what}: no reply, and the chassis status cannot confirm it ran (not resent)")]
    Unconfirmed { what: &'static str },
    /// Socket or name resolution failure.
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub(crate) fn truncated(what: &'static str, need: usize, got: usize) -> Self {
        Error::Truncated { what, need, got }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// A coarse classification, for callers mapping into their own error kinds.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Truncated { .. }
            | Error::Malformed { .. }
            | Error::Checksum(_)
            | Error::Integrity
            | Error::Sequence { .. }
            | Error::State(_) => ErrorClass::Protocol,
            Error::UnsupportedCipherSuite { .. } | Error::NotIpmi20 => ErrorClass::Unsupported,
            Error::Completion { code, .. } if code.0 == CompletionCode::INVALID_COMMAND.0 => {
                ErrorClass::Unsupported
            }
            Error::Auth(_) | Error::Credentials(_) => ErrorClass::Auth,
            Error::Rmcp { .. } | Error::Completion { .. } => ErrorClass::Rejected,
            Error::NoResponse { .. } | Error::Io(_) => ErrorClass::Unreachable,
            Error::Unconfirmed { .. } => ErrorClass::Unconfirmed,
        }
    }
}

/// See [`Error::class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// No answer, refused, unresolvable.
    Unreachable,
    /// Credentials rejected. Never worth retrying.
    Auth,
    /// The BMC lacks the cipher suite, IPMI 2.0, or the command.
    Unsupported,
    /// The BMC answered with something that is not valid protocol.
    Protocol,
    /// The BMC understood and refused (completion code, RMCP+ status).
    Rejected,
    /// A power command may or may not have run.
    Unconfirmed,
}
