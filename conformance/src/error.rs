//! The harness's error type.

use std::path::PathBuf;

/// Everything that can stop the harness from running a test (as opposed to a test failing).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("network: {0}")]
    Net(#[from] std::io::Error),
    /// A YAML document could not be parsed.
    #[error("{what}: invalid YAML: {message}")]
    Yaml {
        /// What was being parsed.
        what: String,
        /// The parser's message.
        message: String,
    },
    /// `cases.tsv` or another table is malformed.
    #[error("{what}: {message}")]
    Table {
        /// Which table and line.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// Certificate generation failed.
    #[error("certificate {name}: {message}")]
    Cert {
        /// The Secret being generated.
        name: String,
        /// rcgen's message.
        message: String,
    },
    /// TLS client configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A manifest lacks something the harness needs.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The gateway process could not be started or never became ready.
    #[error("gateway: {0}")]
    Gateway(String),
    /// A request could not be built.
    #[error("request: {0}")]
    Request(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
