//! Hostnames: normalisation, wildcard matching, listener/route intersection and the host index
//! used on the request path.
//!
//! A hostname pattern is either exact (`foo.example.com`) or a wildcard (`*.example.com`). A
//! wildcard matches one or more labels in front of its suffix: `*.example.com` matches
//! `a.example.com` and `a.b.example.com`, but not `example.com`. Comparisons ignore ASCII case and
//! one trailing dot.

use super::hash::{FastMap, LenSet};

/// Hosts up to this many bytes are lowercased on the stack on the request path.
const STACK_HOST: usize = 255;

/// Lowercases `host` and drops one trailing dot. Runs when configuration is compiled and in the
/// pure helpers below; the request path uses a stack buffer instead.
pub fn normalize(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// Removes the port from a `Host` header or `:authority` value: `example.com:8080` ->
/// `example.com`, `[::1]:80` -> `[::1]`. A bare IPv6 address (several colons, no brackets) is
/// returned unchanged, as is a value without port.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(colon) if !authority[..colon].contains(':') => &authority[..colon],
        _ => authority,
    }
}

/// Whether the concrete `host` matches `pattern` (exact or `*.` wildcard), ignoring ASCII case and
/// a trailing dot. An empty pattern matches every host, like a listener without hostname.
///
/// Used by `gateway-k8s` for route status and by the tests; the request path uses the compiled
/// index instead.
pub fn matches(pattern: &str, host: &str) -> bool {
    let pattern = normalize(pattern);
    let host = normalize(host);
    if pattern.is_empty() {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => wildcard_covers(suffix, &host),
        None => pattern == host,
    }
}

/// The hostname a route hostname serves on a listener: the intersection of the two patterns, or
/// `None` when they share no host (the route is then not served on that listener; Gateway API
/// status reason `NoMatchingListenerHostname`).
///
/// `listener` is the listener's hostname (`None` or empty: every host). The result is normalised
/// (lowercase, no trailing dot) and is the more specific of the two patterns: route
/// `*.example.com` on listener `foo.example.com` gives `foo.example.com`; route `foo.example.com`
/// on listener `*.example.com` gives `foo.example.com`; route `*.foo.example.com` on listener
/// `*.example.com` gives `*.foo.example.com`.
pub fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let route = normalize(route);
    let listener = match listener.map(normalize) {
        Some(l) if !l.is_empty() => l,
        _ => return Some(route),
    };
    if route.is_empty() {
        return Some(listener);
    }
    match (listener.strip_prefix("*."), route.strip_prefix("*.")) {
        (None, None) => (listener == route).then_some(route),
        (None, Some(route_suffix)) => wildcard_covers(route_suffix, &listener).then_some(listener),
        (Some(listener_suffix), None) => wildcard_covers(listener_suffix, &route).then_some(route),
        (Some(listener_suffix), Some(route_suffix)) => {
            if route_suffix == listener_suffix || wildcard_covers(listener_suffix, route_suffix) {
                Some(route)
            } else if wildcard_covers(route_suffix, listener_suffix) {
                Some(listener)
            } else {
                None
            }
        }
    }
}

/// Whether `host` is one or more labels followed by `.suffix` (both already normalised).
fn wildcard_covers(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

/// A compiled hostname pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HostPattern {
    /// One host.
    Exact(String),
    /// `*.` followed by this suffix.
    Wildcard(String),
    /// Every host.
    Any,
}

impl HostPattern {
    /// Parses a hostname from the configuration. `None` or empty means every host. A `*` is only
    /// allowed as the whole first label.
    pub(crate) fn parse(hostname: Option<&str>) -> Result<Self, String> {
        let Some(hostname) = hostname else {
            return Ok(HostPattern::Any);
        };
        let host = normalize(hostname);
        if host.is_empty() {
            return Ok(HostPattern::Any);
        }
        let (wildcard, rest) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        if rest.is_empty() || rest.contains('*') || rest.split('.').any(str::is_empty) {
            return Err(format!("invalid hostname {hostname:?}"));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(rest.to_owned())
        } else {
            HostPattern::Exact(host)
        })
    }
}

/// Which kind of stored pattern matched a host in [`HostIndex::find_with_pattern`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchedHost<'a> {
    /// This exact hostname.
    Exact(&'a str),
    /// `*.` followed by this suffix.
    Wildcard(&'a str),
    /// The catch-all (no hostname).
    Any,
}

impl HostPattern {
    /// The pattern as written in configuration: `a.example.com`, `*.example.com`, or `*` for
    /// every host.
    pub(crate) fn display(&self) -> String {
        match self {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
            HostPattern::Any => "*".to_owned(),
        }
    }

    /// Whether the normalised `host` matches this pattern.
    pub(crate) fn covers(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(s) => wildcard_covers(s, host),
            HostPattern::Any => true,
        }
    }
}

/// Values indexed by hostname pattern; [`HostIndex::find`] returns the most specific match.
#[derive(Debug)]
pub(crate) struct HostIndex<T> {
    exact: FastMap<Box<str>, T>,
    exact_lens: LenSet,
    /// Keyed by the suffix after `*.`.
    wildcard: FastMap<Box<str>, T>,
    wildcard_lens: LenSet,
    any: Option<T>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            exact: FastMap::default(),
            exact_lens: LenSet::default(),
            wildcard: FastMap::default(),
            wildcard_lens: LenSet::default(),
            any: None,
        }
    }
}

impl<T> HostIndex<T> {
    /// The value stored under `pattern`, created with `make` when absent.
    pub(crate) fn entry(&mut self, pattern: &HostPattern, make: impl FnOnce() -> T) -> &mut T {
        match pattern {
            HostPattern::Exact(h) => {
                self.exact_lens.insert(h.len());
                self.exact.entry(h.as_str().into()).or_insert_with(make)
            }
            HostPattern::Wildcard(s) => {
                self.wildcard_lens.insert(s.len());
                self.wildcard.entry(s.as_str().into()).or_insert_with(make)
            }
            HostPattern::Any => self.any.get_or_insert_with(make),
        }
    }

    /// Whether a value is stored under `pattern`.
    pub(crate) fn contains(&self, pattern: &HostPattern) -> bool {
        match pattern {
            HostPattern::Exact(h) => self.exact.contains_key(h.as_str()),
            HostPattern::Wildcard(s) => self.wildcard.contains_key(s.as_str()),
            HostPattern::Any => self.any.is_some(),
        }
    }

    /// Every stored value, in no particular order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(self.any.as_mut())
    }

    /// The value of the most specific pattern matching the normalised `host`: exact, then the
    /// longest wildcard suffix (walked label by label), then the catch-all. No allocation.
    #[inline]
    pub(crate) fn find(&self, host: &str) -> Option<&T> {
        self.find_with_pattern(host).map(|(v, _)| v)
    }

    /// [`HostIndex::find`], also telling which stored pattern matched (for `explain`; the same
    /// walk serves requests).
    pub(crate) fn find_with_pattern(&self, host: &str) -> Option<(&T, MatchedHost<'_>)> {
        if self.exact_lens.may_contain(host.len())
            && let Some((k, v)) = self.exact.get_key_value(host)
        {
            return Some((v, MatchedHost::Exact(k)));
        }
        if !self.wildcard.is_empty() {
            // The first label must be non-empty; each later suffix follows at least one label.
            let mut rest = host;
            let mut first = true;
            while let Some(dot) = rest.find('.') {
                if first && dot == 0 {
                    break;
                }
                first = false;
                rest = &rest[dot + 1..];
                if self.wildcard_lens.may_contain(rest.len())
                    && let Some((k, v)) = self.wildcard.get_key_value(rest)
                {
                    return Some((v, MatchedHost::Wildcard(k)));
                }
            }
        }
        self.any.as_ref().map(|v| (v, MatchedHost::Any))
    }
}

/// Calls `f` with the request host normalised for matching: port stripped, one trailing dot
/// dropped, ASCII-lowercased. Borrows when the host is already lowercase, uses a stack buffer for
/// hosts up to 255 bytes, and allocates only for longer ones.
pub(crate) fn with_request_host<R>(raw: &str, f: impl FnOnce(&str) -> R) -> R {
    let host = strip_port(raw);
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(host);
    }
    if host.len() <= STACK_HOST {
        let mut buf = [0u8; STACK_HOST];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        // ASCII lowercasing keeps UTF-8 valid, so this never takes the fallback.
        if let Ok(lower) = std::str::from_utf8(lower) {
            return f(lower);
        }
    }
    f(&host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn request_host_normalisation() {
        assert_eq!(
            with_request_host("Foo.Example.COM.:443", str::to_owned),
            "foo.example.com"
        );
        assert_eq!(
            with_request_host("foo.example.com", str::to_owned),
            "foo.example.com"
        );
        assert_eq!(with_request_host("[::1]:80", str::to_owned), "[::1]");
        let long = format!("{}.COM", "A".repeat(300));
        assert_eq!(
            with_request_host(&long, str::to_owned),
            long.to_ascii_lowercase()
        );
        let exactly = format!("{}.COM", "A".repeat(STACK_HOST - 4));
        assert_eq!(exactly.len(), STACK_HOST);
        assert_eq!(
            with_request_host(&exactly, str::to_owned),
            exactly.to_ascii_lowercase()
        );
    }

    #[test]
    fn wildcard_matches_one_or_more_labels() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(matches("*.Example.com", "A.example.COM."));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("*.example.com", "aexample.com"));
        assert!(!matches("*.example.com", ".example.com"));
        assert!(matches("foo.example.com", "FOO.example.com"));
        assert!(!matches("foo.example.com", "bar.example.com"));
        assert!(matches("", "anything"));
    }

    #[test]
    fn intersections() {
        let i = |l: Option<&str>, r: &str| intersect(l, r);
        assert_eq!(i(None, "Foo.com"), Some("foo.com".into()));
        assert_eq!(i(Some(""), "*.foo.com"), Some("*.foo.com".into()));
        assert_eq!(
            i(Some("foo.example.com"), "*.example.com"),
            Some("foo.example.com".into())
        );
        assert_eq!(
            i(Some("*.example.com"), "foo.example.com"),
            Some("foo.example.com".into())
        );
        assert_eq!(
            i(Some("*.example.com"), "*.foo.example.com"),
            Some("*.foo.example.com".into())
        );
        assert_eq!(
            i(Some("*.foo.example.com"), "*.example.com"),
            Some("*.foo.example.com".into())
        );
        assert_eq!(
            i(Some("*.example.com"), "*.example.com"),
            Some("*.example.com".into())
        );
        assert_eq!(i(Some("*.example.com"), "example.com"), None);
        assert_eq!(i(Some("*.example.com"), "*.other.com"), None);
        assert_eq!(
            i(Some("*.example.com"), "*.com"),
            Some("*.example.com".into())
        );
        assert_eq!(
            i(Some("very.specific.com"), "*.specific.com"),
            Some("very.specific.com".into())
        );
        assert_eq!(i(Some("very.specific.com"), "non.matching.com"), None);
        assert_eq!(i(Some("very.specific.com"), "*.very.specific.com"), None);
        assert_eq!(i(Some("*.wildcard.io"), "wildcard.io"), None);
        assert_eq!(
            i(Some("*.wildcard.io"), "foo.bar.wildcard.io"),
            Some("foo.bar.wildcard.io".into())
        );
        assert_eq!(i(Some("foo.com"), "FOO.com."), Some("foo.com".into()));
    }

    #[test]
    fn pattern_parse() {
        assert_eq!(HostPattern::parse(None), Ok(HostPattern::Any));
        assert_eq!(HostPattern::parse(Some("")), Ok(HostPattern::Any));
        assert_eq!(
            HostPattern::parse(Some("A.com.")),
            Ok(HostPattern::Exact("a.com".into()))
        );
        assert_eq!(
            HostPattern::parse(Some("*.A.com")),
            Ok(HostPattern::Wildcard("a.com".into()))
        );
        assert!(HostPattern::parse(Some("a.*.com")).is_err());
        assert!(HostPattern::parse(Some("*")).is_err());
        assert!(HostPattern::parse(Some("a..com")).is_err());
    }

    #[test]
    fn index_prefers_exact_then_longest_wildcard_then_any() {
        let mut idx = HostIndex::default();
        for (p, v) in [
            (HostPattern::Any, 0),
            (HostPattern::Wildcard("example.com".into()), 1),
            (HostPattern::Wildcard("foo.example.com".into()), 2),
            (HostPattern::Exact("abc.foo.example.com".into()), 3),
        ] {
            *idx.entry(&p, || v) = v;
        }
        assert_eq!(idx.find("abc.foo.example.com"), Some(&3));
        assert_eq!(idx.find("bar.foo.example.com"), Some(&2));
        assert_eq!(idx.find("x.y.foo.example.com"), Some(&2));
        assert_eq!(idx.find("foo.example.com"), Some(&1));
        assert_eq!(idx.find("x.example.com"), Some(&1));
        assert_eq!(idx.find("example.com"), Some(&0));
        assert_eq!(idx.find(".example.com"), Some(&0));
        assert_eq!(idx.find("other.org"), Some(&0));
        assert!(idx.contains(&HostPattern::Any));
        assert!(!idx.contains(&HostPattern::Exact("x".into())));
    }
}
