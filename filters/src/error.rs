//! The one error of this crate: settings a filter cannot be built from.

/// Why a filter's settings were refused. Raised when a configuration is applied, never on the
/// request path; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The settings do not have the kind's shape (a missing field, a wrong type).
    #[error("{kind} settings do not fit the schema: {message}")]
    Schema {
        /// The filter kind.
        kind: &'static str,
        /// What serde reported.
        message: String,
    },
    /// A field has a value the filter cannot use.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as a path (`local.requests`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl SpecError {
    /// An invalid value of `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix.` put before its field.
    pub(crate) fn within(self, prefix: &str) -> Self {
        match self {
            SpecError::Invalid { field, message } => SpecError::Invalid {
                field: format!("{prefix}.{field}"),
                message,
            },
            other => other,
        }
    }
}

impl From<SpecError> for gateway_core::Error {
    fn from(e: SpecError) -> Self {
        gateway_core::Error::new(gateway_core::ErrorKind::InvalidConfig, e.to_string())
    }
}
