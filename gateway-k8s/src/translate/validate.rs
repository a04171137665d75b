//! Checks of the values the data plane compiles: header names and values, hostnames, paths,
//! CORS origins. A value failing here would make `gateway-core` refuse the whole configuration,
//! so the translation drops the rule (or refuses the route) that holds it instead.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};

/// An HTTP header name (case-insensitive token).
pub(crate) fn header_name(name: &str) -> Result<(), String> {
    HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("invalid header name {name:?}"))
}

/// An HTTP header value (visible ASCII, spaces, tabs and obs-text; no CR, LF or NUL).
pub(crate) fn header_value(name: &str, value: &str) -> Result<(), String> {
    HeaderValue::from_str(value)
        .map(|_| ())
        .map_err(|_| format!("invalid value {value:?} for header {name:?}"))
}

/// Whether `label` is an RFC 1123 DNS label (ASCII letters, digits, `-` inside), case ignored.
fn dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A DNS name without wildcard (Gateway API `PreciseHostname`), e.g. a redirect or rewrite host.
pub(crate) fn precise_hostname(host: &str) -> Result<(), String> {
    if host.len() <= 253 && host.split('.').all(dns_label) {
        Ok(())
    } else {
        Err(format!("invalid hostname {host:?}"))
    }
}

/// A route or listener hostname (Gateway API `Hostname`): a DNS name, optionally prefixed by
/// `*.` as its whole first label. IP addresses are not allowed.
pub(crate) fn hostname(host: &str) -> Result<(), String> {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!("hostname {host:?} is an IP address"));
    }
    precise_hostname(rest).map_err(|_| format!("invalid hostname {host:?}"))
}

/// A replacement path (`ReplaceFullPath`, `ReplacePrefixMatch`) or match path: starts with `/`
/// and is a valid URI path with neither query nor fragment.
pub(crate) fn path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} does not start with /"));
    }
    if path.contains(['?', '#']) {
        return Err(format!("path {path:?} holds a query or fragment"));
    }
    http::uri::PathAndQuery::try_from(path)
        .map(|_| ())
        .map_err(|_| format!("invalid path {path:?}"))
}

/// An HTTP method token (`GET`, `PURGE`, ...).
pub(crate) fn method(method: &str) -> Result<(), String> {
    http::Method::from_bytes(method.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("invalid method {method:?}"))
}

/// A cookie name (an HTTP token).
pub(crate) fn cookie_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.is_empty() && name.bytes().all(token) {
        Ok(())
    } else {
        Err(format!("invalid cookie name {name:?}"))
    }
}

/// A CORS origin: `*`, or `scheme://host[:port]` where host is a DNS name (optionally with a
/// `*.` first label), an IPv4 address or a bracketed IPv6 address. No path, query or fragment.
pub(crate) fn cors_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let bad = || format!("invalid CORS origin {origin:?}");
    let (scheme, authority) = origin.split_once("://").ok_or_else(bad)?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        }
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(bad());
    }
    if let Some(host) = host {
        let ok = host.parse::<std::net::Ipv4Addr>().is_ok()
            || precise_hostname(host.strip_prefix("*.").unwrap_or(host)).is_ok();
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert!(header_name("x-ok").is_ok());
        assert!(header_name("X-Upper").is_ok());
        assert!(header_name("bad name").is_err());
        assert!(header_name("").is_err());
        assert!(header_value("x", "fine value\t1").is_ok());
        assert!(header_value("x", "line\nbreak").is_err());
    }

    #[test]
    fn hostnames() {
        assert!(hostname("foo.example.com").is_ok());
        assert!(hostname("*.example.com").is_ok());
        assert!(hostname("Foo.Example.com").is_ok());
        for bad in [
            "",
            "*",
            "a.*.com",
            "foo..com",
            "-a.com",
            "foo_bar.com",
            "1.2.3.4",
            "a b",
        ] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
        assert!(precise_hostname("*.example.com").is_err());
        assert!(precise_hostname("example.com").is_ok());
    }

    #[test]
    fn paths() {
        assert!(path("/").is_ok());
        assert!(path("/a/b-c_d~e%20").is_ok());
        assert!(path("relative").is_err());
        assert!(path("/a?b").is_err());
        assert!(path("/a b").is_err());
    }

    #[test]
    fn origins_methods_cookies() {
        for ok in [
            "*",
            "https://www.foo.com",
            "https://*.bar.com",
            "http://localhost:8080",
            "http://10.0.0.1:80",
            "http://[::1]:8080",
        ] {
            assert!(cors_origin(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "www.foo.com",
            "https://",
            "https://foo.com/path",
            "https://foo.com:99999",
            "https://foo com",
            "1https://foo.com",
        ] {
            assert!(cors_origin(bad).is_err(), "{bad:?}");
        }
        assert!(method("GET").is_ok());
        assert!(method("PURGE").is_ok());
        assert!(method("GE T").is_err());
        assert!(cookie_name("gw-session").is_ok());
        assert!(cookie_name("bad;name").is_err());
    }
}
