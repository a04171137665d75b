//! Authentication filters: [`jwt`] (JSON Web Tokens), [`basic`] (htpasswd users) and
//! [`api_key`] (API keys), and external authorization ([`ext_authz`]).
//!
//! Each of the first three answers 401 when the request carries no valid credential, and can
//! pass who the client is to the backend in a header of your choice. Credentials compare by
//! SHA-256 digest in constant time. [`ext_authz`] asks a separate service (gRPC `ext_authz` or
//! HTTP), which answers for the request.

pub mod api_key;
pub mod basic;
pub mod ext_authz;
pub mod jwt;

use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether two digests are equal, in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
