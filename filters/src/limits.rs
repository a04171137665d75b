//! `RequestLimits`: bounds on a request's headers and body.
//!
//! Runs in `request_headers`:
//!
//! * more header lines than `maxHeaders`, or more header bytes (names plus values) than
//!   `maxHeaderBytes`: 431;
//! * a `Content-Length` above `maxBodyBytes`: 413 before anything is read or sent upstream;
//! * a body without a length (chunked): the filter asks for the body to be buffered up to
//!   `maxBodyBytes` ([`FilterCtx::buffer_request_body`]), so a longer one is answered 413 before
//!   anything is sent upstream, and a shorter one goes to the backend whole (the price of
//!   answering with a status rather than cutting a streamed request off).
//!
//! The listener's own limits (request head size, header count, see the gateway's `Limits`)
//! still apply first; these are per route, and usually tighter.

use gateway_core::{FilterAction, FilterCtx, HttpFilter, Session, async_trait};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::respond::answer;

/// The kind of [`RequestLimits`] objects.
pub const KIND: &str = "RequestLimits";

/// Settings of a `RequestLimits` filter. Every bound is optional; unset means not checked here.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "RequestLimits",
    plural = "requestlimits",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestLimitsSpec {
    /// The largest request body, in bytes; larger: 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// The most request header lines; more: 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<u32>,
    /// The most bytes of request header names and values together; more: 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
}

/// The `RequestLimits` filter, built from a [`RequestLimitsSpec`].
#[derive(Debug)]
pub struct RequestLimitsFilter {
    spec: RequestLimitsSpec,
}

impl RequestLimitsFilter {
    /// Checks `spec`: a bound of 0 is refused (it would refuse every request with one).
    pub fn new(spec: RequestLimitsSpec) -> Result<Self, SpecError> {
        if spec.max_headers == Some(0) {
            return Err(SpecError::invalid("maxHeaders", "must be above 0"));
        }
        if spec.max_header_bytes == Some(0) {
            return Err(SpecError::invalid("maxHeaderBytes", "must be above 0"));
        }
        if spec
            .max_body_bytes
            .is_some_and(|b| usize::try_from(b).is_err())
        {
            return Err(SpecError::invalid(
                "maxBodyBytes",
                "too large for this machine",
            ));
        }
        Ok(RequestLimitsFilter { spec })
    }
}

#[async_trait]
impl HttpFilter for RequestLimitsFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let headers = &session.req_header().headers;
        if let Some(max) = self.spec.max_headers
            && headers.len() > max as usize
        {
            return Ok(answer(431, "too many request headers\n", Vec::new()));
        }
        if let Some(max) = self.spec.max_header_bytes {
            let bytes: u64 = headers
                .iter()
                .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
                .sum();
            if bytes > max {
                return Ok(answer(431, "request headers too large\n", Vec::new()));
            }
        }
        if let Some(max) = self.spec.max_body_bytes {
            match declared_length(session) {
                Some(len) if len > max => {
                    return Ok(answer(413, "request body too large\n", Vec::new()));
                }
                Some(_) => {}
                None if has_unsized_body(session) => {
                    // `new` checked that the bound fits a usize.
                    ctx.buffer_request_body(max as usize);
                }
                None => {}
            }
        }
        Ok(FilterAction::Continue)
    }
}

/// The request's `Content-Length`, when it has one that parses (Pingora refuses a request with
/// an invalid or conflicting one before filters run).
fn declared_length(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the request has a body of unknown length (HTTP/1 chunked, or an HTTP/2 stream whose
/// headers did not end it).
fn has_unsized_body(session: &mut Session) -> bool {
    session
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
        || (session.is_http2() && !session.is_body_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bounds_are_refused_and_camel_case_is_read() {
        let spec: RequestLimitsSpec =
            serde_json::from_str(r#"{"maxBodyBytes": 10, "maxHeaders": 0}"#).unwrap();
        assert_eq!(
            RequestLimitsFilter::new(spec).unwrap_err().to_string(),
            "maxHeaders: must be above 0"
        );
        assert!(serde_json::from_str::<RequestLimitsSpec>(r#"{"maxBody": 1}"#).is_err());
    }
}
