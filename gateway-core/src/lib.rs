//! Gateway API HTTP semantics on Pingora.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod routing;

pub use error::{Error, ErrorKind, Result};
