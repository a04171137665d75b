//! Request path normalisation: the path every listener routes, filters and forwards.
//!
//! [`normalize`] runs once per request in `request_filter`, before the route is looked up, with
//! the listener's [`PathNormalization`]. When it changes the path, the request's URI is replaced,
//! so the route matcher, the filters (rewrites, redirects, mirrors, custom hooks) and the backend
//! all see the same path: `/public/../admin` and `/public/%2e%2e/admin` are routed as `/admin`,
//! not under `/public`. The query string is never touched.
//!
//! The steps, in order:
//! 1. A path must start with `/` (an empty one is `/`); the asterisk-form `*` is left alone.
//!    Anything else is refused ([`PathError::NotAbsolute`]).
//! 2. Control characters (`0x00-0x1F`, `0x7F`) are refused ([`PathError::ControlCharacter`]).
//! 3. Percent-encoding: an escape must be `%` and two hex digits ([`PathError::InvalidEscape`]).
//!    Escaped unreserved characters (RFC 3986 section 2.3: `A-Z a-z 0-9 - . _ ~`) are decoded;
//!    `%00` is refused ([`PathError::EncodedNul`]); `%2F` and `%5C` follow
//!    [`EscapedSlashesAction`]; every other escape is kept with upper-case hex digits.
//! 4. A literal backslash becomes `/` (as browsers and Envoy do; Windows backends split on it).
//! 5. With [`PathNormalization::merge_slashes`], runs of `/` become one.
//! 6. Dot segments are removed (RFC 3986 section 5.2.4), including those decoded from `%2e`;
//!    `..` never climbs above the root (`/../x` is `/x`).
//!
//! Most paths need none of this: a path without `%`, `\`, control characters, `.`/`..` segments
//! and (when merging) `//` is returned borrowed after one scan, without allocating.

use std::borrow::Cow;

use crate::config::{EscapedSlashesAction, PathNormalization};

/// What [`normalize`] decided for a valid path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized<'a> {
    /// Serve the request with this path: borrowed when the path was already normal, owned when
    /// normalisation changed it.
    Forward(Cow<'a, str>),
    /// Answer `307` with this normalised path in `Location` (the query appended by the caller):
    /// the path held an escaped slash under [`EscapedSlashesAction::UnescapeAndRedirect`].
    Redirect(String),
}

/// Why a request path is refused (the gateway answers 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path neither starts with `/` nor is `*`.
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// A control character (`0x00-0x1F` or `0x7F`) at this byte offset.
    #[error("control character at byte {0}")]
    ControlCharacter(usize),
    /// A `%` at this byte offset is not followed by two hex digits.
    #[error("invalid percent-encoding at byte {0}")]
    InvalidEscape(usize),
    /// `%00` at this byte offset.
    #[error("encoded NUL at byte {0}")]
    EncodedNul(usize),
    /// An escaped slash or backslash (`%2F`, `%5C`) at this byte offset, under
    /// [`EscapedSlashesAction::RejectRequest`].
    #[error("escaped slash at byte {0}")]
    EscapedSlash(usize),
}

/// Normalises a request path (without the query) under a listener's settings.
///
/// Runs once per request; allocates only when the path has something to normalise. See the
/// [module documentation](self) for the steps.
pub fn normalize<'a>(path: &'a str, opts: &PathNormalization) -> Result<Normalized<'a>, PathError> {
    if path == "*" {
        return Ok(Normalized::Forward(Cow::Borrowed(path)));
    }
    if path.is_empty() {
        return Ok(Normalized::Forward(Cow::Borrowed("/")));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(path.as_bytes(), opts.merge_slashes)? {
        return Ok(Normalized::Forward(Cow::Borrowed(path)));
    }
    let (decoded, escaped_slash) = decode(path, opts.escaped_slashes)?;
    let out = remove_dot_segments(&decoded, opts.merge_slashes);
    if escaped_slash && opts.escaped_slashes == EscapedSlashesAction::UnescapeAndRedirect {
        return Ok(Normalized::Redirect(out));
    }
    Ok(Normalized::Forward(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    }))
}

/// One scan: whether the path may change. Refuses control characters on the way.
fn needs_work(bytes: &[u8], merge_slashes: bool) -> Result<bool, PathError> {
    // The path starts with '/': segments begin after it.
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter(i)),
            b'%' | b'\\' => return Ok(true),
            b'/' => {
                let segment = &bytes[segment_start..i];
                if is_dot_segment(segment) || (merge_slashes && segment.is_empty()) {
                    return Ok(true);
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    Ok(is_dot_segment(&bytes[segment_start..]))
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// RFC 3986 section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Steps 2 to 4: decodes escapes and turns backslashes into slashes. Returns the path and
/// whether an escaped slash was decoded.
fn decode(path: &str, action: EscapedSlashesAction) -> Result<(String, bool), PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut escaped_slash = false;
    // Bytes from `run` to `i` are copied unchanged. Every byte acted on is ASCII, so each cut
    // falls on a character boundary.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter(i)),
            b'\\' => {
                out.push_str(&path[run..i]);
                out.push('/');
                i += 1;
                run = i;
            }
            b'%' => {
                out.push_str(&path[run..i]);
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::InvalidEscape(i));
                };
                let value = hi << 4 | lo;
                match value {
                    0 => return Err(PathError::EncodedNul(i)),
                    b'/' | b'\\' => match action {
                        EscapedSlashesAction::KeepUnchanged => push_escape(&mut out, hi, lo),
                        EscapedSlashesAction::RejectRequest => {
                            return Err(PathError::EscapedSlash(i));
                        }
                        EscapedSlashesAction::UnescapeAndForward
                        | EscapedSlashesAction::UnescapeAndRedirect => {
                            escaped_slash = true;
                            out.push('/');
                        }
                    },
                    v if is_unreserved(v) => out.push(char::from(v)),
                    _ => push_escape(&mut out, hi, lo),
                }
                i += 3;
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&path[run..]);
    Ok((out, escaped_slash))
}

fn push_escape(out: &mut String, hi: u8, lo: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(hi)]));
    out.push(char::from(HEX_UPPER[usize::from(lo)]));
}

/// Steps 5 and 6 on a decoded path starting with `/`.
fn remove_dot_segments(path: &str, merge_slashes: bool) -> String {
    let mut out = String::with_capacity(path.len());
    // `out` ends with '/' between segments.
    out.push('/');
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                // Drop the last output segment (an empty one too), never the root.
                if out.len() > 1 {
                    let without_slash = &out[..out.len() - 1];
                    let cut = without_slash.rfind('/').map_or(1, |p| p + 1);
                    out.truncate(cut);
                }
            }
            "" if merge_slashes => {}
            _ => {
                out.push_str(segment);
                if !last {
                    out.push('/');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use EscapedSlashesAction::*;

    fn opts(merge_slashes: bool, escaped_slashes: EscapedSlashesAction) -> PathNormalization {
        PathNormalization {
            merge_slashes,
            escaped_slashes,
        }
    }

    /// What `normalize` gives, as a string: the path, `307 <path>`, or `400 <error>`.
    fn run(path: &str, o: PathNormalization) -> String {
        match normalize(path, &o) {
            Ok(Normalized::Forward(p)) => p.into_owned(),
            Ok(Normalized::Redirect(p)) => format!("307 {p}"),
            Err(e) => format!("400 {e}"),
        }
    }

    #[test]
    fn default_is_as_strict_as_envoy_gateway() {
        let d = PathNormalization::default();
        assert!(d.merge_slashes);
        assert_eq!(d.escaped_slashes, UnescapeAndRedirect);
    }

    #[test]
    fn common_paths_are_borrowed() {
        let d = PathNormalization::default();
        for path in [
            "/",
            "/a",
            "/a/b/c",
            "/a/",
            "/.well-known/acme",
            "/a/..b/c.",
            "/a/...",
            "/v1/x.json",
            "/caf\u{e9}",
            "*",
        ] {
            match normalize(path, &d) {
                Ok(Normalized::Forward(Cow::Borrowed(p))) => assert_eq!(p, path),
                other => panic!("{path}: {other:?}"),
            }
        }
        // Without merging, `//` needs no work either.
        assert!(matches!(
            normalize("/a//b", &opts(false, UnescapeAndRedirect)),
            Ok(Normalized::Forward(Cow::Borrowed("/a//b")))
        ));
        // A path that looked like work but came out the same is still borrowed.
        assert!(matches!(
            normalize("/a%2Fb", &opts(true, KeepUnchanged)),
            Ok(Normalized::Forward(Cow::Borrowed("/a%2Fb")))
        ));
    }

    /// The same result under every escaped-slash action and both merge settings.
    #[test]
    fn table_independent_of_options() {
        let table = [
            // Dot segments (RFC 3986 section 5.2.4).
            ("/public/../admin", "/admin"),
            ("/public/./x", "/public/x"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/../x", "/x"),
            ("/../../../etc/passwd", "/etc/passwd"),
            ("/a/../../b", "/b"),
            // Encoded dots, any hex case.
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2E/admin", "/admin"),
            ("/public/%2e/x", "/public/x"),
            ("/%2e%2e/x", "/x"),
            // Unreserved characters decoded, others upper-cased.
            ("/%7euser", "/~user"),
            ("/%7Euser", "/~user"),
            ("/%41%62%2D%5F%30", "/Ab-_0"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/%25", "/%25"),
            ("/%252e%252e/x", "/%252e%252e/x"),
            // Literal backslashes are separators.
            ("/public\\..\\admin", "/admin"),
            ("/a\\b", "/a/b"),
            // Other reserved characters are left alone.
            ("/a;b=c/d", "/a;b=c/d"),
            ("/..;/admin", "/..;/admin"),
            ("/caf\u{e9}/../x", "/x"),
            ("", "/"),
            ("*", "*"),
            // Refused.
            ("/%zz", "400 invalid percent-encoding at byte 1"),
            ("/a%2", "400 invalid percent-encoding at byte 2"),
            ("/a%", "400 invalid percent-encoding at byte 2"),
            ("/a%g1", "400 invalid percent-encoding at byte 2"),
            ("/a%00b", "400 encoded NUL at byte 2"),
            ("/a\0b", "400 control character at byte 2"),
            ("/a\x7f", "400 control character at byte 2"),
            ("/a%2e\n", "400 control character at byte 5"),
            ("a/b", "400 the path does not start with '/'"),
            ("http://h/p", "400 the path does not start with '/'"),
        ];
        for merge in [true, false] {
            for action in [
                KeepUnchanged,
                RejectRequest,
                UnescapeAndForward,
                UnescapeAndRedirect,
            ] {
                for (input, want) in table {
                    assert_eq!(
                        run(input, opts(merge, action)),
                        want,
                        "{input:?} merge={merge} {action:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn merge_slashes() {
        let on = opts(true, KeepUnchanged);
        let off = opts(false, KeepUnchanged);
        for (input, merged, unmerged) in [
            ("//admin", "/admin", "//admin"),
            ("/a//b///c", "/a/b/c", "/a//b///c"),
            ("/a//", "/a/", "/a//"),
            ("//", "/", "//"),
            // Merged before dot segments are removed; without merging an empty segment is one.
            ("/a//../b", "/b", "/a/b"),
            ("/a/b//..", "/a/", "/a/b/"),
            ("//../x", "/x", "/x"),
            ("/a/.//b", "/a/b", "/a//b"),
        ] {
            assert_eq!(run(input, on), merged, "{input} merged");
            assert_eq!(run(input, off), unmerged, "{input} unmerged");
        }
    }

    #[test]
    fn escaped_slash_actions() {
        let table = [
            // (input, KeepUnchanged, RejectRequest, UnescapeAndForward, UnescapeAndRedirect)
            (
                "/a%2Fb",
                "/a%2Fb",
                "400 escaped slash at byte 2",
                "/a/b",
                "307 /a/b",
            ),
            (
                "/a%2fb",
                "/a%2Fb",
                "400 escaped slash at byte 2",
                "/a/b",
                "307 /a/b",
            ),
            (
                "/a%5cb",
                "/a%5Cb",
                "400 escaped slash at byte 2",
                "/a/b",
                "307 /a/b",
            ),
            (
                "/public%2F..%2Fadmin",
                "/public%2F..%2Fadmin",
                "400 escaped slash at byte 7",
                "/admin",
                "307 /admin",
            ),
            (
                "/a%2F%2Fb",
                "/a%2F%2Fb",
                "400 escaped slash at byte 2",
                "/a/b",
                "307 /a/b",
            ),
            // No escaped slash: served under every action.
            ("/a/b", "/a/b", "/a/b", "/a/b", "/a/b"),
            ("/a/%2e%2e/b", "/b", "/b", "/b", "/b"),
        ];
        for (input, keep, reject, forward, redirect) in table {
            assert_eq!(run(input, opts(true, KeepUnchanged)), keep, "{input}");
            assert_eq!(run(input, opts(true, RejectRequest)), reject, "{input}");
            assert_eq!(
                run(input, opts(true, UnescapeAndForward)),
                forward,
                "{input}"
            );
            assert_eq!(
                run(input, opts(true, UnescapeAndRedirect)),
                redirect,
                "{input}"
            );
        }
        // Without merging, decoded slashes stay doubled.
        assert_eq!(run("/a%2F%2Fb", opts(false, UnescapeAndForward)), "/a//b");
    }

    #[test]
    fn output_is_a_valid_uri_path_and_stable() {
        let inputs = [
            "/public/%2e%2e/admin",
            "/a%2Fb/%7e/./..//x",
            "/%c3%a9\\x",
            "/a%2f..%2f..%2fb",
            "/caf\u{e9}//x/..",
        ];
        for action in [KeepUnchanged, UnescapeAndForward, UnescapeAndRedirect] {
            let o = opts(true, action);
            for input in inputs {
                let out = match normalize(input, &o).expect("valid") {
                    Normalized::Forward(p) => p.into_owned(),
                    Normalized::Redirect(p) => p,
                };
                assert!(
                    out.parse::<http::uri::PathAndQuery>().is_ok(),
                    "{out} is a path"
                );
                // Normalising again changes nothing (and under a redirect, serves the target).
                assert_eq!(
                    normalize(&out, &o),
                    Ok(Normalized::Forward(Cow::Borrowed(out.as_str()))),
                    "{input} -> {out} is stable under {action:?}"
                );
            }
        }
    }
}
