//! Hostname intersection between listeners and routes, on top of
//! [`gateway_core::routing::host::intersect`] (the same rules the router compiles).

use gateway_core::routing::host;

/// Whether a route with `route_hostnames` (empty: any) can attach to a listener with
/// `listener_hostname` (`None`: any): some route hostname must share a host with the listener's.
pub(crate) fn route_fits_listener(
    listener_hostname: Option<&str>,
    route_hostnames: &[String],
) -> bool {
    route_hostnames.is_empty()
        || route_hostnames
            .iter()
            .any(|h| host::intersect(listener_hostname, h).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_fit() {
        assert!(route_fits_listener(None, &["x.com".into()]));
        assert!(route_fits_listener(Some("x.com"), &[]));
        assert!(route_fits_listener(
            Some("*.x.com"),
            &["a.com".into(), "b.x.com".into()]
        ));
        assert!(route_fits_listener(Some("a.x.com"), &["*.X.com".into()]));
        assert!(route_fits_listener(
            Some("*.example.com"),
            &["*.foo.example.com".into()]
        ));
        assert!(!route_fits_listener(
            Some("*.example.com"),
            &["example.com".into()]
        ));
        assert!(!route_fits_listener(Some("x.com"), &["y.com".into()]));
    }
}
