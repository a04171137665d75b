//! Compiled match conditions: path, method, headers and query parameters.
//!
//! Compiled once per [`crate::config::RouteMatch`] when the router is built; evaluated on the
//! request path without locking and without allocation except where noted (a header present
//! several times matched by a regular expression, a percent-encoded query parameter).

use std::borrow::Cow;

use http::HeaderName;
use regex::Regex;
use regex::bytes::Regex as BytesRegex;

use super::RequestParts;
use crate::config::{HeaderMatch, PathMatch, QueryParamMatch, RouteMatch, StringMatch};
use crate::error::{Error, ErrorKind, Result};

/// A compiled path condition.
#[derive(Debug)]
pub(crate) enum PathCond {
    /// The path equals this string.
    Exact(Box<str>),
    /// The path starts with these whole segments; trailing slashes removed, `/` is empty.
    Prefix(Box<str>),
    /// The whole path matches (the pattern is anchored), with the pattern's original length.
    Regex(Regex, usize),
}

impl PathCond {
    /// Whether `path` satisfies the condition and, for a prefix, the bytes it covered.
    /// The lookup uses the path index instead; this is the reference behaviour (tests hold the
    /// index to it), and what `explain` reports.
    pub(crate) fn check(&self, path: &str) -> Option<Option<usize>> {
        match self {
            PathCond::Exact(p) => (path == &**p).then_some(None),
            PathCond::Prefix(p) => {
                let covered = path.starts_with(&**p)
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/');
                covered.then_some(Some(p.len()))
            }
            PathCond::Regex(re, _) => re.is_match(path).then_some(None),
        }
    }
}

/// Removes trailing slashes from a `PathPrefix` value: `/v2/` and `/v2` are the same prefix, and
/// `/` becomes the empty prefix, which covers every path.
pub(crate) fn normalize_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// A compiled value condition on a header or query parameter value.
#[derive(Debug)]
enum ValueCond {
    Exact(Box<[u8]>),
    Regex(BytesRegex),
}

impl ValueCond {
    fn compile(m: &StringMatch, what: &str) -> Result<Self> {
        Ok(match m {
            StringMatch::Exact(v) => ValueCond::Exact(v.as_bytes().into()),
            StringMatch::RegularExpression(p) => ValueCond::Regex(
                BytesRegex::new(&anchor(p)).map_err(|e| invalid_regex(what, p, &e))?,
            ),
        })
    }

    fn holds(&self, value: &[u8]) -> bool {
        match self {
            ValueCond::Exact(v) => **v == *value,
            ValueCond::Regex(re) => re.is_match(value),
        }
    }
}

#[derive(Debug)]
struct HeaderCond {
    name: HeaderName,
    value: ValueCond,
}

impl HeaderCond {
    /// The header's values, joined with `,` when it appears several times, satisfy the value
    /// condition. An absent header never matches.
    fn holds(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        let Some(second) = values.next() else {
            return self.value.holds(first.as_bytes());
        };
        match &self.value {
            ValueCond::Exact(expected) => {
                let parts = [first, second].into_iter().chain(values);
                joined_equals(parts.map(|v| v.as_bytes()), expected)
            }
            ValueCond::Regex(re) => {
                let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
                for (i, v) in [first, second].into_iter().chain(values).enumerate() {
                    if i > 0 {
                        joined.push(b',');
                    }
                    joined.extend_from_slice(v.as_bytes());
                }
                re.is_match(&joined)
            }
        }
    }
}

/// Whether the parts joined with `,` equal `expected`, without building the joined value.
fn joined_equals<'a>(parts: impl Iterator<Item = &'a [u8]>, expected: &[u8]) -> bool {
    let mut rest = expected;
    for (i, part) in parts.enumerate() {
        if i > 0 {
            match rest.strip_prefix(b",") {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match rest.strip_prefix(part) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[derive(Debug)]
struct QueryCond {
    name: Box<str>,
    value: ValueCond,
}

impl QueryCond {
    /// The first occurrence of the parameter, percent-decoded, satisfies the value condition.
    fn holds(&self, query: Option<&str>) -> bool {
        query
            .and_then(|q| first_query_value(q, &self.name))
            .is_some_and(|v| self.value.holds(&v))
    }
}

/// The percent-decoded value of the first parameter named `name` (compared after decoding the
/// name). A parameter without `=` has the empty value. `+` is kept literally.
pub(crate) fn first_query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (*percent_decode(key) == *name.as_bytes()).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept. Borrows when there is
/// nothing to decode.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The non-path conditions of one match: all must hold.
#[derive(Debug)]
pub(crate) struct Conditions {
    method: Option<Box<str>>,
    headers: Box<[HeaderCond]>,
    query: Box<[QueryCond]>,
}

impl Conditions {
    /// Whether the method, every header and every query parameter condition hold.
    #[inline]
    pub(crate) fn hold(&self, req: &RequestParts<'_>) -> bool {
        self.first_failure(req).is_none()
    }

    /// The first condition that does not hold, in the order they are checked: the method, then
    /// each header condition, then each query parameter condition (in configuration order).
    /// `None`: all hold. [`Conditions::hold`] is this, so `explain` and requests agree.
    pub(crate) fn first_failure(&self, req: &RequestParts<'_>) -> Option<Failed> {
        if self.method.as_deref().is_some_and(|m| m != req.method) {
            return Some(Failed::Method);
        }
        if let Some(i) = self.headers.iter().position(|h| !h.holds(req.headers)) {
            return Some(Failed::Header(i));
        }
        if let Some(i) = self.query.iter().position(|q| !q.holds(req.query)) {
            return Some(Failed::QueryParam(i));
        }
        None
    }
}

/// A condition of one match that did not hold for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The path condition.
    Path,
    /// The method.
    Method,
    /// The header condition at this index of the match's `headers`.
    Header(usize),
    /// The query parameter condition at this index of the match's `query_params`.
    QueryParam(usize),
}

/// One compiled match.
#[derive(Debug)]
pub(crate) struct CompiledMatch {
    /// The path condition.
    pub(crate) path: PathCond,
    /// Everything else.
    pub(crate) rest: Conditions,
}

impl CompiledMatch {
    /// Compiles a match. Fails with `InvalidConfig` on a bad regular expression or header name;
    /// the caller adds which route and rule.
    pub(crate) fn compile(m: &RouteMatch) -> Result<Self> {
        let path = match &m.path {
            PathMatch::Exact(p) => PathCond::Exact(p.as_str().into()),
            PathMatch::Prefix(p) => PathCond::Prefix(normalize_prefix(p).into()),
            PathMatch::RegularExpression(p) => PathCond::Regex(
                Regex::new(&anchor(p)).map_err(|e| invalid_regex("path", p, &e))?,
                p.len(),
            ),
        };
        let headers = m
            .headers
            .iter()
            .map(|HeaderMatch { name, value }| {
                let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidConfig,
                        format!("invalid header name {name:?}"),
                    )
                })?;
                Ok(HeaderCond {
                    name: header,
                    value: ValueCond::compile(value, &format!("header {name}"))?,
                })
            })
            .collect::<Result<_>>()?;
        let query = m
            .query_params
            .iter()
            .map(|QueryParamMatch { name, value }| {
                Ok(QueryCond {
                    name: name.as_str().into(),
                    value: ValueCond::compile(value, &format!("query parameter {name}"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(CompiledMatch {
            path,
            rest: Conditions {
                method: m.method.as_deref().map(Into::into),
                headers,
                query,
            },
        })
    }
}

/// Anchors a pattern so it must match the whole input.
fn anchor(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

fn invalid_regex(what: &str, pattern: &str, e: &regex::Error) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        format!("invalid regular expression {pattern:?} for {what}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn parts<'a>(
        headers: &'a HeaderMap,
        query: Option<&'a str>,
        method: &'a str,
    ) -> RequestParts<'a> {
        RequestParts {
            host: "h",
            path: "/",
            query,
            method,
            headers,
        }
    }

    fn exact(v: &str) -> StringMatch {
        StringMatch::Exact(v.into())
    }

    fn regex(v: &str) -> StringMatch {
        StringMatch::RegularExpression(v.into())
    }

    fn compile(m: RouteMatch) -> CompiledMatch {
        CompiledMatch::compile(&m).expect("valid match")
    }

    #[test]
    fn prefix_is_segment_wise() {
        let p = compile(RouteMatch {
            path: PathMatch::Prefix("/v2/".into()),
            ..RouteMatch::default()
        })
        .path;
        assert_eq!(p.check("/v2"), Some(Some(3)));
        assert_eq!(p.check("/v2/"), Some(Some(3)));
        assert_eq!(p.check("/v2/x"), Some(Some(3)));
        assert_eq!(p.check("/v2example"), None);
        assert_eq!(p.check("/V2"), None);
        let root = PathCond::Prefix(normalize_prefix("/").into());
        assert_eq!(root.check("/anything"), Some(Some(0)));
    }

    #[test]
    fn regex_is_anchored() {
        let p = compile(RouteMatch {
            path: PathMatch::RegularExpression("/v[0-9]+".into()),
            ..RouteMatch::default()
        })
        .path;
        assert!(p.check("/v12").is_some());
        assert!(p.check("/v12/x").is_none());
        assert!(p.check("/x/v12").is_none());
        let alt = compile(RouteMatch {
            path: PathMatch::RegularExpression("/a|/b".into()),
            ..RouteMatch::default()
        })
        .path;
        assert!(alt.check("/a").is_some());
        assert!(alt.check("/ab").is_none());
        assert!(alt.check("/xb").is_none());
    }

    #[test]
    fn bad_regex_and_header_name_are_config_errors() {
        let bad = RouteMatch {
            path: PathMatch::RegularExpression("(".into()),
            ..RouteMatch::default()
        };
        let err = CompiledMatch::compile(&bad).expect_err("bad regex");
        assert_eq!(err.kind, ErrorKind::InvalidConfig);
        let bad = RouteMatch {
            headers: vec![HeaderMatch {
                name: "x".into(),
                value: regex("["),
            }],
            ..RouteMatch::default()
        };
        assert_eq!(
            CompiledMatch::compile(&bad).expect_err("bad").kind,
            ErrorKind::InvalidConfig
        );
        let bad = RouteMatch {
            headers: vec![HeaderMatch {
                name: "bad name".into(),
                value: exact("v"),
            }],
            ..RouteMatch::default()
        };
        assert_eq!(
            CompiledMatch::compile(&bad).expect_err("bad").kind,
            ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn headers_case_insensitive_names_and_joined_values() {
        let m = compile(RouteMatch {
            headers: vec![HeaderMatch {
                name: "X-Version".into(),
                value: exact("one,two"),
            }],
            ..RouteMatch::default()
        });
        let mut h = HeaderMap::new();
        assert!(!m.rest.hold(&parts(&h, None, "GET")));
        h.append("x-version", HeaderValue::from_static("one"));
        assert!(!m.rest.hold(&parts(&h, None, "GET")));
        h.append("x-version", HeaderValue::from_static("two"));
        assert!(m.rest.hold(&parts(&h, None, "GET")));
        h.append("x-version", HeaderValue::from_static("three"));
        assert!(!m.rest.hold(&parts(&h, None, "GET")));

        let single = compile(RouteMatch {
            headers: vec![HeaderMatch {
                name: "version".into(),
                value: exact("One"),
            }],
            ..RouteMatch::default()
        });
        let mut h = HeaderMap::new();
        h.insert("Version", HeaderValue::from_static("One"));
        assert!(single.rest.hold(&parts(&h, None, "GET")));
        h.insert("Version", HeaderValue::from_static("one"));
        assert!(
            !single.rest.hold(&parts(&h, None, "GET")),
            "values are case-sensitive"
        );

        let re = compile(RouteMatch {
            headers: vec![HeaderMatch {
                name: "v".into(),
                value: regex("a,b+"),
            }],
            ..RouteMatch::default()
        });
        let mut h = HeaderMap::new();
        h.append("v", HeaderValue::from_static("a"));
        assert!(!re.rest.hold(&parts(&h, None, "GET")));
        h.append("v", HeaderValue::from_static("bbb"));
        assert!(re.rest.hold(&parts(&h, None, "GET")));
        h.append("v", HeaderValue::from_static("c"));
        assert!(
            !re.rest.hold(&parts(&h, None, "GET")),
            "regex must match the whole value"
        );
    }

    #[test]
    fn headers_are_anded() {
        let m = compile(RouteMatch {
            headers: vec![
                HeaderMatch {
                    name: "version".into(),
                    value: exact("two"),
                },
                HeaderMatch {
                    name: "color".into(),
                    value: exact("orange"),
                },
            ],
            ..RouteMatch::default()
        });
        let mut h = HeaderMap::new();
        h.insert("version", HeaderValue::from_static("two"));
        assert!(!m.rest.hold(&parts(&h, None, "GET")));
        h.insert("color", HeaderValue::from_static("orange"));
        assert!(m.rest.hold(&parts(&h, None, "GET")));
    }

    #[test]
    fn query_params_first_occurrence_decoded() {
        let m = compile(RouteMatch {
            query_params: vec![QueryParamMatch {
                name: "animal".into(),
                value: exact("whale shark"),
            }],
            ..RouteMatch::default()
        });
        let h = HeaderMap::new();
        assert!(m.rest.hold(&parts(&h, Some("animal=whale%20shark"), "GET")));
        assert!(m.rest.hold(&parts(
            &h,
            Some("x=1&animal=whale%20shark&animal=dolphin"),
            "GET"
        )));
        assert!(!m.rest.hold(&parts(
            &h,
            Some("animal=dolphin&animal=whale%20shark"),
            "GET"
        )));
        assert!(
            !m.rest.hold(&parts(&h, Some("Animal=whale%20shark"), "GET")),
            "names are case-sensitive"
        );
        assert!(!m.rest.hold(&parts(&h, None, "GET")));
        assert!(!m.rest.hold(&parts(&h, Some("animal"), "GET")));

        let re = compile(RouteMatch {
            query_params: vec![QueryParamMatch {
                name: "n".into(),
                value: regex("[0-9]+"),
            }],
            ..RouteMatch::default()
        });
        assert!(re.rest.hold(&parts(&h, Some("n=42"), "GET")));
        assert!(!re.rest.hold(&parts(&h, Some("n=42x"), "GET")));
    }

    #[test]
    fn method_is_exact() {
        let m = compile(RouteMatch {
            method: Some("POST".into()),
            ..RouteMatch::default()
        });
        let h = HeaderMap::new();
        assert!(m.rest.hold(&parts(&h, None, "POST")));
        assert!(!m.rest.hold(&parts(&h, None, "GET")));
        assert!(!m.rest.hold(&parts(&h, None, "post")));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(&*percent_decode("a%2Fb%zz%4"), b"a/b%zz%4");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
        assert_eq!(
            first_query_value("a%62=1&b=2", "ab").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(first_query_value("a=1&b", "b").as_deref(), Some(&b""[..]));
    }
}
