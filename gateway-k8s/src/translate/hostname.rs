//! Hostname intersection between listeners and routes (Gateway API rules).
//!
//! Private to this crate: `gateway_core::routing` has no public host helper yet.

/// Whether `pattern` (exact `a.b` or wildcard `*.b`) and `other` (same forms) can both match
/// some host. A wildcard matches one or more labels in front of its suffix.
pub(crate) fn intersects(pattern: &str, other: &str) -> bool {
    let a = pattern.to_ascii_lowercase();
    let b = other.to_ascii_lowercase();
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => a == b,
        (Some(suffix), None) => wildcard_matches(suffix, &b),
        (None, Some(suffix)) => wildcard_matches(suffix, &a),
        (Some(x), Some(y)) => x == y || x.ends_with(&format!(".{y}")) || y.ends_with(&format!(".{x}")),
    }
}

fn wildcard_matches(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.')
}

/// Whether a route with `route_hostnames` (empty: any) can attach to a listener with
/// `listener_hostname` (`None`: any).
pub(crate) fn route_fits_listener(listener_hostname: Option<&str>, route_hostnames: &[String]) -> bool {
    match listener_hostname {
        None => true,
        Some(listener) => {
            route_hostnames.is_empty() || route_hostnames.iter().any(|h| intersects(listener, h))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcards() {
        assert!(intersects("foo.com", "FOO.com"));
        assert!(!intersects("foo.com", "bar.com"));
        assert!(intersects("*.example.com", "a.example.com"));
        assert!(intersects("*.example.com", "a.b.example.com"));
        assert!(!intersects("*.example.com", "example.com"));
        assert!(!intersects("*.example.com", "aexample.com"));
        assert!(intersects("a.example.com", "*.example.com"));
        assert!(intersects("*.example.com", "*.foo.example.com"));
        assert!(intersects("*.foo.example.com", "*.example.com"));
        assert!(!intersects("*.foo.com", "*.bar.com"));
    }

    #[test]
    fn listener_fit() {
        assert!(route_fits_listener(None, &["x.com".into()]));
        assert!(route_fits_listener(Some("x.com"), &[]));
        assert!(route_fits_listener(Some("*.x.com"), &["a.com".into(), "b.x.com".into()]));
        assert!(!route_fits_listener(Some("x.com"), &["y.com".into()]));
    }
}
