//! Which address a request comes from: the connection's peer, or an entry of
//! `X-Forwarded-For` written by proxies in front of the gateway that you trust.

use std::net::IpAddr;

use gateway_core::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a filter finds the client's address (the `clientIP` field of [`crate::access`] and
/// [`crate::rate_limit`] settings).
///
/// Default (`xffTrustedHops: 0`): the address of the connection's peer; `X-Forwarded-For` is
/// ignored, since any client can write it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientIpSpec {
    /// How many proxies in front of the gateway append to `X-Forwarded-For` and are trusted.
    /// With `n` above 0 the client is the `n`th address from the right of the header (all
    /// `X-Forwarded-For` lines joined); `1` is the one proxy in front of the gateway. When the
    /// header has fewer addresses, or that entry is not an IP address, the connection's peer is
    /// used. Envoy Gateway calls this `numTrustedHops`.
    #[serde(default)]
    pub xff_trusted_hops: u32,
}

impl ClientIpSpec {
    /// The client address of the request in `session`, or `None` when the connection has no IP
    /// peer (a Unix socket) and no trusted header entry names one.
    pub fn client_ip(&self, session: &Session) -> Option<IpAddr> {
        if self.xff_trusted_hops > 0
            && let Some(ip) = from_forwarded_for(session, self.xff_trusted_hops)
        {
            return Some(ip);
        }
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }
}

/// The `hops`th address from the right of the request's `X-Forwarded-For` lines.
fn from_forwarded_for(session: &Session, hops: u32) -> Option<IpAddr> {
    let lines = session.req_header().headers.get_all("x-forwarded-for");
    // Later lines are appended after earlier ones: walk the lines, then their entries, from the
    // right.
    let mut seen = 0u32;
    for line in lines.iter().rev() {
        let line = line.to_str().ok()?;
        for entry in line.rsplit(',') {
            seen += 1;
            if seen == hops {
                return parse_entry(entry.trim());
            }
        }
    }
    None
}

/// An `X-Forwarded-For` entry: an IP address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_ports_and_brackets() {
        assert_eq!(parse_entry("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            parse_entry("10.0.0.1:443"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_entry("[2001:db8::1]:80"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_entry("[2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse_entry("unknown"), None);
    }

    #[test]
    fn spec_reads_camel_case_and_refuses_unknown_fields() {
        let s: ClientIpSpec = serde_json::from_str(r#"{"xffTrustedHops": 2}"#).unwrap();
        assert_eq!(s.xff_trusted_hops, 2);
        assert!(serde_json::from_str::<ClientIpSpec>(r#"{"trustedHops": 2}"#).is_err());
    }
}
