//! The one error type of the crate, in the style of `pingora-error`: a kind, a context string and
//! an optional cause.

use std::fmt;

/// What went wrong, broadly. Callers branch on this; the context says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid (bad regex, conflicting binds, unknown filter...).
    InvalidConfig,
    /// A certificate or key could not be loaded.
    InvalidCertificate,
    /// A socket could not be bound.
    Bind,
    /// An I/O error outside a request.
    Io,
    /// An internal invariant failed.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidCertificate => "invalid certificate",
            ErrorKind::Bind => "bind failed",
            ErrorKind::Io => "I/O error",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// An error with its kind, a human-readable context and an optional cause.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {context}")]
pub struct Error {
    /// The broad kind.
    pub kind: ErrorKind,
    /// What was being done, and on what.
    pub context: String,
    /// The underlying error, if any.
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` with `context` and no cause.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error {
            kind,
            context: context.into(),
            cause: None,
        }
    }

    /// An error of `kind` with `context`, caused by `cause`.
    pub fn because(
        kind: ErrorKind,
        context: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            kind,
            context: context.into(),
            cause: Some(cause.into()),
        }
    }

    /// Prefixes the context with more detail, e.g. the name of the object being compiled.
    pub fn more_context(mut self, context: impl fmt::Display) -> Self {
        self.context = format!("{context}: {}", self.context);
        self
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
