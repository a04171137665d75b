//! The pure parts of the built-in filters: path replacement, URL rewrites and redirect targets.

use std::fmt::Write;

use http::Uri;
use pingora_error::{Error as PError, ErrorType, Result as PResult};
use pingora_http::RequestHeader;

use crate::config::{PathModifier, Protocol, RequestRedirect, UrlRewrite};

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

/// Applies a `URLRewrite` filter to `req`, the request the backend will see.
///
/// The hostname replaces the `Host` header (and the URI's authority when the request has one,
/// as HTTP/2 requests do); the path is replaced as [`rewrite_path`] says, keeping the query
/// string. `matched_prefix` is the byte length of the path the rule's `PathPrefix` covered.
/// A rewrite that would produce an invalid URI is an internal error (the request gets 500).
/// Allocates only when the path or the authority changes.
pub fn apply_url_rewrite(
    req: &mut RequestHeader,
    rewrite: &UrlRewrite,
    matched_prefix: Option<usize>,
) -> PResult<()> {
    fn internal(context: String) -> Box<PError> {
        PError::explain(ErrorType::InternalError, context)
    }
    if let Some(host) = &rewrite.hostname {
        req.insert_header(http::header::HOST, host.as_str())?;
    }
    let authority = rewrite
        .hostname
        .as_ref()
        .filter(|_| req.uri.authority().is_some());
    if rewrite.path.is_none() && authority.is_none() {
        return Ok(());
    }
    let mut parts = req.uri.clone().into_parts();
    if let Some(modifier) = &rewrite.path {
        let mut pq = rewrite_path(req.uri.path(), modifier, matched_prefix);
        if let Some(q) = req.uri.query() {
            pq.push('?');
            pq.push_str(q);
        }
        parts.path_and_query = Some(
            pq.parse()
                .map_err(|_| internal(format!("rewritten path {pq:?} is not a valid URI")))?,
        );
    }
    if let Some(host) = authority {
        parts.authority = Some(host.parse().map_err(|_| {
            internal(format!(
                "rewritten hostname {host:?} is not a valid authority"
            ))
        })?);
    }
    let uri =
        Uri::from_parts(parts).map_err(|e| internal(format!("rewritten URI invalid: {e}")))?;
    req.set_uri(uri);
    Ok(())
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
    fn url_rewrite_replaces_prefix_host_and_keeps_the_query() {
        let mut req = RequestHeader::build("GET", b"/app/v1/items?x=1", None).unwrap();
        req.insert_header("host", "old.example.com").unwrap();
        let rewrite = UrlRewrite {
            hostname: Some("new.example.com".into()),
            path: Some(prefix("/v2")),
        };
        apply_url_rewrite(&mut req, &rewrite, Some(7)).unwrap();
        assert_eq!(req.uri.path(), "/v2/items");
        assert_eq!(req.uri.query(), Some("x=1"));
        assert_eq!(req.headers.get("host").unwrap(), "new.example.com");

        let mut absolute = RequestHeader::build("GET", b"/a", None).unwrap();
        absolute.set_uri("http://old.example.com/a".parse().unwrap());
        let host_only = UrlRewrite {
            hostname: Some("new.example.com".into()),
            path: None,
        };
        apply_url_rewrite(&mut absolute, &host_only, None).unwrap();
        assert_eq!(absolute.uri.authority().unwrap(), "new.example.com");
        assert_eq!(absolute.uri.path(), "/a");
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
