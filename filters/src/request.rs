//! Reading credentials out of a request: query parameters and cookies, and removing them.

use gateway_core::RequestHeader;
use http::HeaderName;

/// Where a request carries a credential.
#[derive(Debug)]
pub(crate) enum Location {
    /// A header, with a prefix its value must start with (removed from the credential, compared
    /// without regard to ASCII case, e.g. `Bearer `).
    Header(HeaderName, Option<String>),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

impl Location {
    /// The credential at this location, if the request has one.
    pub(crate) fn find(&self, req: &RequestHeader) -> Option<String> {
        match self {
            Location::Header(h, prefix) => {
                let value = req.headers.get(h)?.to_str().ok()?.trim();
                let value = match prefix {
                    None => value,
                    Some(p) => value
                        .get(..p.len())
                        .filter(|head| head.eq_ignore_ascii_case(p))
                        .map(|_| &value[p.len()..])?,
                };
                Some(value.trim().to_owned()).filter(|v| !v.is_empty())
            }
            Location::Query(q) => query_pairs(req.uri.query()?)
                .find(|(n, _)| n == q)
                .map(|(_, v)| v),
            Location::Cookie(c) => cookies(req)
                .find(|(n, _)| n == c)
                .map(|(_, v)| v.to_owned()),
        }
    }

    /// Removes the credential from the request.
    pub(crate) fn remove(&self, req: &mut RequestHeader) {
        match self {
            Location::Header(h, _) => {
                req.remove_header(h);
            }
            Location::Query(q) => remove_query_param(req, q),
            Location::Cookie(c) => remove_cookie(req, c),
        }
    }
}

/// `name=value` pairs of a query string, percent-decoded (`+` as a space).
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(n), decode(v))
    })
}

pub(crate) fn decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match (b, escaped) {
            (_, Some(e)) => {
                out.push(e);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `name=value` cookies of every `Cookie` header line.
pub(crate) fn cookies(req: &RequestHeader) -> impl Iterator<Item = (&str, &str)> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|c| {
            let (n, v) = c.trim().split_once('=')?;
            Some((n.trim(), v.trim().trim_matches('"')))
        })
}

/// Removes every query parameter named `name` (compared after percent-decoding).
pub(crate) fn remove_query_param(req: &mut RequestHeader, name: &str) {
    let Some(query) = req.uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && decode(p.split_once('=').map_or(*p, |(n, _)| n)) != name)
        .collect();
    let path = req.uri.path();
    let target = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(uri) = target.parse::<http::Uri>() {
        req.set_uri(uri);
    }
}

/// Removes the cookie `name` from the request's `Cookie` lines (joined into one line).
pub(crate) fn remove_cookie(req: &mut RequestHeader, name: &str) {
    let kept: Vec<String> = cookies(req)
        .filter(|(n, _)| *n != name)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        // Pieces of a header value that parsed: joining them is a valid value again.
        let _ = req.insert_header(http::header::COOKIE, kept.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let pairs: Vec<_> = query_pairs("a=1&api_key=x%2By+z&&b").collect();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("api_key".into(), "x+y z".into()),
                ("b".into(), String::new())
            ]
        );
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%41"), "A");
    }
}
