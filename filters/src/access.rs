//! `IPAccess`: allow and deny lists of client addresses.
//!
//! Runs in `request_headers`. A client whose address is in `deny` is answered 403; when `allow`
//! is not empty, so is a client that is in none of its ranges. A deny entry wins over an allow
//! entry. The address is the connection's peer, or an `X-Forwarded-For` entry when trusted
//! proxies are configured ([`ClientIpSpec`]). IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) are
//! checked as their IPv4 address.

use std::net::IpAddr;

use gateway_core::{FilterAction, FilterCtx, HttpFilter, Session, async_trait};
use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::client_ip::ClientIpSpec;
use crate::respond::answer;

/// The kind of [`IPAccess`] objects.
pub const KIND: &str = "IPAccess";

/// Settings of an `IPAccess` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "IPAccess",
    plural = "ipaccesses",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpAccessSpec {
    /// CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`) or single addresses whose clients may pass.
    /// Empty (the default): every client not denied passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// CIDR ranges or single addresses whose clients are answered 403, even when also allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Where the client address comes from. Default: the connection's peer.
    #[serde(default, rename = "clientIP")]
    pub client_ip: ClientIpSpec,
}

/// The `IPAccess` filter, built from an [`IpAccessSpec`].
#[derive(Debug)]
pub struct IpAccessFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    client_ip: ClientIpSpec,
}

impl IpAccessFilter {
    /// Checks and compiles `spec`; an entry that is neither a CIDR range nor an address is an
    /// error naming it.
    pub fn new(spec: IpAccessSpec) -> Result<Self, SpecError> {
        Ok(IpAccessFilter {
            allow: ranges("allow", &spec.allow)?,
            deny: ranges("deny", &spec.deny)?,
            client_ip: spec.client_ip,
        })
    }

    /// Whether a client at `ip` (`None`: no IP address known) may pass.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(canonical) else {
            return self.allow.is_empty() && self.deny.is_empty();
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn ranges(field: &str, entries: &[String]) -> Result<Vec<IpNet>, SpecError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e.trim();
            e.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    SpecError::invalid(
                        format!("{field}[{i}]"),
                        format!("{e:?} is neither a CIDR range nor an IP address"),
                    )
                })
        })
        .collect()
}

#[async_trait]
impl HttpFilter for IpAccessFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        if self.permits(self.client_ip.client_ip(session)) {
            Ok(FilterAction::Continue)
        } else {
            Ok(answer(403, "forbidden\n", Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> IpAccessFilter {
        IpAccessFilter::new(IpAccessSpec {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn deny_wins_over_allow_and_allow_list_closes_the_rest() {
        let f = filter(&["10.0.0.0/8", "2001:db8::/32"], &["10.1.0.0/16"]);
        assert!(f.permits(ip("10.2.3.4")));
        assert!(!f.permits(ip("10.1.3.4")));
        assert!(!f.permits(ip("192.168.0.1")));
        assert!(f.permits(ip("2001:db8::7")));
        assert!(!f.permits(None));
    }

    #[test]
    fn deny_only_and_single_addresses() {
        let f = filter(&[], &["192.0.2.7"]);
        assert!(!f.permits(ip("192.0.2.7")));
        assert!(f.permits(ip("192.0.2.8")));
        assert!(
            !f.permits(ip("::ffff:192.0.2.7")),
            "mapped IPv6 is its IPv4 address"
        );
        assert!(
            !f.permits(None),
            "an unknown address cannot be checked against a deny list"
        );
        assert!(filter(&[], &[]).permits(None));
    }

    #[test]
    fn host_bits_in_a_range_are_accepted_and_garbage_is_named() {
        let f = filter(&["10.1.2.3/8"], &[]);
        assert!(f.permits(ip("10.200.0.1")));
        let err = IpAccessFilter::new(IpAccessSpec {
            deny: vec!["10.0.0.0/8".into(), "ten".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "deny[1]: \"ten\" is neither a CIDR range nor an IP address"
        );
    }
}
