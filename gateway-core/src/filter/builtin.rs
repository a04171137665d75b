//! The pure parts of the built-in filters: path replacement and redirect targets.

use std::fmt::Write;

use crate::config::{PathModifier, Protocol, RequestRedirect};

/// The path a `ReplaceFullPath` / `ReplacePrefixMatch` modifier produces.
///
/// `matched_prefix` is the byte length of `path` the rule's `PathPrefix` covered; without it a
/// `ReplacePrefixMatch` keeps the path unchanged (the translation rejects that combination).
/// The query string is not part of `path` and is kept by the callers.
pub fn rewrite_path(path: &str, modifier: &PathModifier, matched_prefix: Option<usize>) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(full) => full.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let Some(len) = matched_prefix.filter(|&l| l <= path.len()) else {
                return path.to_owned();
            };
            let rest = &path[len..];
            let head = replacement.trim_end_matches('/');
            let mut out = String::with_capacity(head.len() + rest.len() + 1);
            out.push_str(head);
            if !rest.is_empty() && !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            }
            out
        }
    }
}

/// The `Location` a `RequestRedirect` filter answers with.
///
/// `protocol` and `listener_port` describe the listener the request came in on; `host` is the
/// request host without port. The port follows the spec: the filter's port, else the new
/// scheme's well-known port when the scheme changes, else the listener's port; a port that is
/// the scheme's default is left out.
pub fn redirect_location(
    redirect: &RequestRedirect,
    protocol: Protocol,
    listener_port: u16,
    host: &str,
    path: &str,
    query: Option<&str>,
    matched_prefix: Option<usize>,
) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(protocol.scheme());
    let default_port = match scheme {
        "https" => 443,
        _ => 80,
    };
    let port = match (redirect.port, &redirect.scheme) {
        (Some(port), _) => port,
        (None, Some(_)) => default_port,
        (None, None) => listener_port,
    };
    let host = redirect.hostname.as_deref().unwrap_or(host);
    let new_path;
    let path = match &redirect.path {
        Some(modifier) => {
            new_path = rewrite_path(path, modifier, matched_prefix);
            new_path.as_str()
        }
        None => path,
    };
    let mut location = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
    location.push_str(scheme);
    location.push_str("://");
    if host.contains(':') && !host.starts_with('[') {
        // An IPv6 literal.
        let _ = write!(location, "[{host}]");
    } else {
        location.push_str(host);
    }
    if port != default_port {
        let _ = write!(location, ":{port}");
    }
    location.push_str(path);
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathModifier {
        PathModifier::ReplacePrefixMatch(p.into())
    }

    #[test]
    fn replace_prefix_keeps_the_rest_on_a_segment_boundary() {
        assert_eq!(
            rewrite_path("/prefix/one/two", &prefix("/one"), Some(11)),
            "/one/two"
        );
        assert_eq!(
            rewrite_path("/strip-prefix/three", &prefix("/"), Some(13)),
            "/three"
        );
        assert_eq!(rewrite_path("/strip-prefix", &prefix("/"), Some(13)), "/");
        assert_eq!(rewrite_path("/strip-prefix/", &prefix("/"), Some(13)), "/");
        assert_eq!(
            rewrite_path(
                "/original-prefix/lemon",
                &prefix("/replacement-prefix"),
                Some(16)
            ),
            "/replacement-prefix/lemon"
        );
        assert_eq!(rewrite_path("/a/b", &prefix("/x/"), Some(2)), "/x/b");
        assert_eq!(rewrite_path("/a/b", &prefix("/x"), None), "/a/b");
    }

    #[test]
    fn replace_full_path_ignores_the_request_path() {
        let m = PathModifier::ReplaceFullPath("/one".into());
        assert_eq!(rewrite_path("/full/one/two", &m, Some(5)), "/one");
    }

    fn redirect() -> RequestRedirect {
        RequestRedirect::default()
    }

    #[test]
    fn redirect_keeps_request_values_by_default() {
        let loc = redirect_location(
            &redirect(),
            Protocol::Http,
            80,
            "a.com",
            "/p",
            Some("x=1"),
            None,
        );
        assert_eq!(loc, "http://a.com/p?x=1");
        let loc = redirect_location(&redirect(), Protocol::Http, 8080, "a.com", "/p", None, None);
        assert_eq!(loc, "http://a.com:8080/p");
    }

    #[test]
    fn redirect_scheme_change_uses_the_new_default_port() {
        let r = RequestRedirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, Protocol::Http, 8080, "a.com", "/s", None, None),
            "https://a.com/s"
        );
        let r = RequestRedirect {
            scheme: Some("http".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, Protocol::Https, 443, "a.com", "/s", None, None),
            "http://a.com/s"
        );
    }

    #[test]
    fn redirect_port_is_elided_only_when_default() {
        let r = RequestRedirect {
            port: Some(8083),
            hostname: Some("example.org".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, Protocol::Http, 80, "a.com", "/port", None, None),
            "http://example.org:8083/port"
        );
        let r = RequestRedirect {
            port: Some(443),
            scheme: Some("https".into()),
            ..redirect()
        };
        assert_eq!(
            redirect_location(&r, Protocol::Http, 80, "a.com", "/", None, None),
            "https://a.com/"
        );
    }

    #[test]
    fn redirect_path_modifiers() {
        let r = RequestRedirect {
            path: Some(prefix("/replacement-prefix")),
            ..redirect()
        };
        assert_eq!(
            redirect_location(
                &r,
                Protocol::Http,
                80,
                "h",
                "/path-and-host",
                None,
                Some(14)
            ),
            "http://h/replacement-prefix"
        );
    }
}
