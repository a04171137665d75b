//! The Gateway <-> Endpoint Picker (EPP) protocol over Envoy's `ext_proc` v3 gRPC service, both
//! sides.
//!
//! - [`client`]: what the gateway's InferencePool filter uses when a pool names an
//!   `endpointPickerRef` ([`crate::gateway`]): one tonic channel per pool runtime, one `Process`
//!   stream per request, the answer read into an [`client::Answer`].
//! - [`server`]: a standalone endpoint picker ([`server::PickerServer`]) serving a
//!   [`server::PickPolicy`]: the in-process scheduler ([`server::SchedulerPolicy`]) or the
//!   conformance test picker ([`server::RoundRobinPolicy`], the upstream "lwepp"). An
//!   Envoy-based gateway can use it too.
//!
//! The protocol (Gateway API Inference Extension proposal 004, `FULL_DUPLEX_STREAMED` body
//! mode): one stream per HTTP request. The gateway sends `request_headers` (`end_of_stream`
//! false) and the body as `request_body` chunks, the last with `end_of_stream`; the request's
//! `metadata_context.filter_metadata[`[`SUBSET_HINT_NAMESPACE`]`][`[`SUBSET_HINT_KEY`]`]` lists
//! the endpoints the picker may choose from. The picker answers only after the end of the body:
//! a `HeadersResponse` whose header mutation sets [`crate::request::HEADER_DESTINATION_ENDPOINT`]
//! and a top-level `dynamic_metadata[`[`LB_NAMESPACE`]`][`[`crate::request::HEADER_DESTINATION_ENDPOINT`]`]`
//! (`ip:port[,ip:port...]`, primary first, then retry fallbacks), then `BodyResponse`s with the
//! body to send upstream; or an `ImmediateResponse` for the client. In the response phase the
//! gateway sends `response_headers` with
//! `metadata_context.filter_metadata[`[`LB_NAMESPACE`]`][`[`crate::request::HEADER_DESTINATION_ENDPOINT_SERVED`]`]`
//! and applies the picker's header mutation to the client's response.

pub mod client;
pub mod server;

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

/// The metadata namespace of the picked endpoints (answer) and of the served one (response
/// phase).
pub const LB_NAMESPACE: &str = "envoy.lb";
/// The metadata namespace of the subset hint the gateway sends with the request.
pub const SUBSET_HINT_NAMESPACE: &str = "envoy.lb.subset_hint";
/// The subset hint's key: the endpoints (`ip:port`) the picker may choose from.
pub const SUBSET_HINT_KEY: &str = "x-gateway-destination-endpoint-subset";
/// Conformance test request header restricting the test picker to some endpoints:
/// `ip[,ip...]` (IPs or `ip:port`).
pub const HEADER_TEST_SELECTION: &str = "test-epp-endpoint-selection";
/// Response header the conformance test picker sets to the served endpoint the gateway reported.
pub const HEADER_CONFORMANCE_SERVED: &str = "x-conformance-test-served-endpoint";
/// The gRPC service name, for health checks.
pub const SERVICE_NAME: &str = "envoy.service.ext_proc.v3.ExternalProcessor";
/// Default bound of each wait for a message of the picker (the pick, connection included).
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound of the wait for the picker's answer to the response headers. Past it the
/// response goes on without the picker's header changes.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest request body a picker may send back (bytes), and the largest one the picker
/// server accepts: tonic's default message limit.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The timeouts of the gateway's side of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtProcConfig {
    /// Bound of opening the stream and of each wait for the picker's next message while it
    /// picks (default [`DEFAULT_MESSAGE_TIMEOUT`], 10 s). Past it the picker counts as
    /// unavailable (the pool's failure mode applies).
    pub message_timeout: Duration,
    /// Bound of the wait for the answer to the response headers (default
    /// [`DEFAULT_RESPONSE_TIMEOUT`], 1 s); past it the response is sent unchanged.
    pub response_timeout: Duration,
}

impl Default for ExtProcConfig {
    fn default() -> Self {
        ExtProcConfig {
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

/// The value of a header as ext_proc carries it: `raw_value` (what Envoy sends), else `value`.
fn header_value(h: &HeaderValue) -> &[u8] {
    if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value
    }
}

/// A header to set, in `raw_value` as Envoy sends and expects it.
fn set_header(key: &str, value: impl Into<Vec<u8>>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: String::new(),
            raw_value: value.into(),
        }),
        ..Default::default()
    }
}

/// `http` headers as an ext_proc header map (names are lower case already).
fn header_map<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> HeaderMap {
    HeaderMap {
        headers: headers
            .map(|(k, v)| HeaderValue {
                key: k.to_owned(),
                value: String::new(),
                raw_value: v.to_vec(),
            })
            .collect(),
    }
}

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// `{namespace: {key: value}}` as ext_proc metadata.
fn namespaced(key: &str, value: Value) -> Struct {
    Struct {
        fields: [(key.to_owned(), value)].into_iter().collect(),
    }
}

/// A list of strings as a protobuf value.
fn list_value(items: impl Iterator<Item = String>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue {
            values: items.map(string_value).collect(),
        })),
    }
}

/// The strings of a value: a string's comma-separated entries, or those of every string of a
/// list; trimmed, empty entries left out. `None` for other kinds.
fn string_entries(value: &Value) -> Option<Vec<String>> {
    let split = |s: &str, out: &mut Vec<String>| {
        out.extend(
            s.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
        )
    };
    let mut out = Vec::new();
    match value.kind.as_ref()? {
        Kind::StringValue(s) => split(s, &mut out),
        Kind::ListValue(l) => {
            for v in &l.values {
                if let Some(Kind::StringValue(s)) = &v.kind {
                    split(s, &mut out);
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The value at `namespace`/`key` of a metadata struct.
fn lookup<'a>(
    metadata: &'a std::collections::HashMap<String, Struct>,
    namespace: &str,
    key: &str,
) -> Option<&'a Value> {
    metadata.get(namespace)?.fields.get(key)
}

/// Parses `ip:port[,ip:port...]`; `None` when an entry is not a socket address.
pub fn parse_endpoint_list(entries: &[String]) -> Option<Vec<SocketAddr>> {
    entries.iter().map(|e| e.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_entries_read_both_forms() {
        assert_eq!(
            string_entries(&string_value(" 10.0.0.1:80, ,10.0.0.2:80")).unwrap(),
            vec!["10.0.0.1:80", "10.0.0.2:80"]
        );
        let list = list_value(["10.0.0.1:80".to_owned(), "a,b".to_owned()].into_iter());
        assert_eq!(
            string_entries(&list).unwrap(),
            vec!["10.0.0.1:80", "a", "b"]
        );
        assert!(
            string_entries(&Value {
                kind: Some(Kind::BoolValue(true))
            })
            .is_none()
        );
        assert!(parse_endpoint_list(&["10.0.0.1".to_owned()]).is_none());
        assert_eq!(
            parse_endpoint_list(&["[fd00::1]:8000".to_owned()]).unwrap(),
            vec!["[fd00::1]:8000".parse::<SocketAddr>().unwrap()]
        );
    }
}
