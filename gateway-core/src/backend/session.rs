//! Sticky sessions (Gateway API `sessionPersistence`): a signed token naming the endpoint.
//!
//! The gateway keeps no session table. The first response of a session carries a token (in a
//! cookie or a header, per [`SessionKind`]) that names the endpoint that served it, when the session
//! started and when it was last refreshed, signed with HMAC-SHA256 under a secret created when the
//! [`SessionCodec`] is. Later requests carrying the token go to that endpoint while the token is
//! authentic and neither timeout has run out; a missing, tampered or expired token is ignored and
//! the backend's picker chooses as usual, which starts a new session.
//!
//! Token layout before base64url (no padding): a family byte (`4` or `6`), the IP address (4 or 16
//! bytes), the port (2), for IPv6 the scope id (4), the start and last-refresh times (8 each,
//! seconds since the UNIX epoch, big-endian) and the first 16 bytes of the HMAC over the session
//! name and all of the above. An IPv4 token is 52 characters, an IPv6 one 74.
//!
//! Tokens are only valid for the process that signed them: a restart or another replica starts new
//! sessions, unless they share a secret through [`SessionCodec::with_secret`].

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};
use rand::RngCore;
use ring::hmac;

use crate::config::{SessionKind, SessionPersistence};

/// The cookie or header name when the configuration sets none.
pub(crate) const DEFAULT_SESSION_NAME: &str = "gw-session";

/// The cookie `Path` when the configuration sets none.
const DEFAULT_COOKIE_PATH: &str = "/";

/// Bytes of the HMAC-SHA256 tag kept in a token.
const TAG_LEN: usize = 16;
/// The longest token before encoding: IPv6 with scope id.
const MAX_RAW: usize = 1 + 16 + 2 + 4 + 8 + 8 + TAG_LEN;
/// The longest token after base64url encoding.
const MAX_ENCODED: usize = (MAX_RAW * 4).div_ceil(3);

/// Signs and checks session tokens. One per gateway, created at start-up; shared by all requests.
///
/// [`SessionCodec::endpoint`] and [`SessionCodec::started`] run in the request phase, before the
/// backend's picker, to honour an existing session; [`SessionCodec::set`] runs in the response
/// phase to start or refresh one.
pub(crate) struct SessionCodec {
    key: hmac::Key,
}

/// What a valid token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    endpoint: SocketAddr,
    started: u64,
    last: u64,
}

/// A token in encoded form, on the stack.
struct Encoded {
    buf: [u8; MAX_ENCODED],
    len: usize,
}

impl Encoded {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCodec").finish_non_exhaustive()
    }
}

impl Default for SessionCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionCodec {
    /// A codec with a fresh random 256-bit secret from the thread's CSPRNG (seeded by the OS).
    /// Create one at start-up and keep it across configuration changes, so sessions survive them.
    pub(crate) fn new() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self::with_secret(&secret)
    }

    /// A codec with a given secret, so that several gateway replicas, or a restarted one, accept
    /// each other's tokens. The secret should be at least 32 random bytes.
    pub(crate) fn with_secret(secret: &[u8]) -> Self {
        SessionCodec {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Checks a `sessionPersistence` configuration when it is applied: the name must be a valid
    /// cookie name (an HTTP token) or header name, the cookie path must be usable in a
    /// `Set-Cookie` attribute, timeouts must not be zero, and a
    /// permanent cookie needs an absolute timeout (its `Max-Age`).
    pub(crate) fn validate(cfg: &SessionPersistence) -> Result<(), String> {
        let name = session_name(cfg);
        match cfg.kind {
            SessionKind::Cookie => {
                if !crate::syntax::is_token(name) {
                    return Err(format!("invalid session cookie name {name:?}"));
                }
                let path = cookie_path(cfg);
                if path.is_empty() || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
                    return Err(format!("invalid session cookie path {path:?}"));
                }
                if cfg.permanent && cfg.absolute_timeout.is_none() {
                    return Err("a permanent session cookie needs an absolute timeout".into());
                }
            }
            SessionKind::Header => {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!("invalid session header name {name:?}"));
                }
            }
        }
        for (what, timeout) in [
            ("absolute", cfg.absolute_timeout),
            ("idle", cfg.idle_timeout),
        ] {
            if timeout.is_some_and(|t| t.is_zero()) {
                return Err(format!("the session {what} timeout must not be zero"));
            }
        }
        Ok(())
    }

    /// The endpoint the request's session token names. Runs before the backend's picker: when
    /// `Some`, and the endpoint is still one of the backend's and usable, the request goes there.
    ///
    /// `None` when the request carries no token under the session name (default `gw-session`),
    /// or none that is authentic, the session's absolute timeout has elapsed since it started
    /// (`now - started >= absolute`), or it has been idle for more than the idle timeout
    /// (`now - last > idle`). Times are seconds since the UNIX epoch. Cookies: every `Cookie` header
    /// and every cookie in it is searched, the first valid token wins. Headers: every header line
    /// under the name, and every comma-separated element of it.
    pub(crate) fn endpoint(
        &self,
        cfg: &SessionPersistence,
        req: &RequestHeader,
        now: u64,
    ) -> Option<SocketAddr> {
        self.session(cfg, req, now).map(|t| t.endpoint)
    }

    /// When the request's valid session token (see [`SessionCodec::endpoint`]) started, so that a
    /// refresh by [`SessionCodec::set`] keeps the absolute timeout running from the session's real
    /// start. `None`: no valid session; a new one starts `now`.
    pub(crate) fn started(
        &self,
        cfg: &SessionPersistence,
        req: &RequestHeader,
        now: u64,
    ) -> Option<u64> {
        self.session(cfg, req, now).map(|t| t.started)
    }

    /// Puts a token naming `endpoint` on `resp`. Runs in the response phase: on the first response
    /// of a session, and on later ones to refresh the idle timeout (`now` becomes the last
    /// activity). `started` is when the session began: `now` for a new session, the value of
    /// [`SessionCodec::started`] when refreshing one on the same endpoint.
    ///
    /// Cookie kind: appends `Set-Cookie: <name>=<token>; Path=<path>; HttpOnly` (path default `/`),
    /// keeping the backend's own cookies. A permanent cookie adds `Max-Age` = what remains of the
    /// absolute timeout (all of it for a new session); otherwise it is a session cookie and the
    /// gateway enforces the timeouts itself. Header kind: sets the `<name>` response header to the
    /// token, replacing any the backend sent.
    pub(crate) fn set(
        &self,
        cfg: &SessionPersistence,
        resp: &mut ResponseHeader,
        endpoint: SocketAddr,
        started: u64,
        now: u64,
    ) {
        let name = session_name(cfg);
        let token = self.encode(
            name,
            &Token {
                endpoint,
                started,
                last: now.max(started),
            },
        );
        match cfg.kind {
            SessionKind::Cookie => {
                let path = cookie_path(cfg);
                let mut cookie = Vec::with_capacity(name.len() + token.len + path.len() + 48);
                cookie.extend_from_slice(name.as_bytes());
                cookie.push(b'=');
                cookie.extend_from_slice(token.as_bytes());
                cookie.extend_from_slice(b"; Path=");
                cookie.extend_from_slice(path.as_bytes());
                cookie.extend_from_slice(b"; HttpOnly");
                if cfg.permanent
                    && let Some(absolute) = cfg.absolute_timeout
                {
                    let remaining = secs(absolute).saturating_sub(now.saturating_sub(started));
                    let _ = write!(cookie, "; Max-Age={remaining}");
                }
                if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(cookie)) {
                    let _ = resp.append_header("Set-Cookie", value);
                }
            }
            SessionKind::Header => {
                if let Ok(value) = HeaderValue::from_bytes(token.as_bytes()) {
                    let _ = resp.insert_header(name.to_owned(), value);
                }
            }
        }
    }

    /// The first authentic, unexpired token of the request.
    fn session(&self, cfg: &SessionPersistence, req: &RequestHeader, now: u64) -> Option<Token> {
        let name = session_name(cfg);
        let live = |t: &Token| alive(cfg, t, now);
        match cfg.kind {
            SessionKind::Cookie => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .flat_map(|v| cookie_values(v.as_bytes(), name.as_bytes()))
                .filter_map(|v| self.decode(name, v))
                .find(live),
            SessionKind::Header => req
                .headers
                .get_all(name)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .filter_map(|v| self.decode(name, trim_ows(v)))
                .find(live),
        }
    }

    /// The HMAC tag over the session name and the token body.
    fn tag(&self, name: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(body);
        ctx.sign()
    }

    fn encode(&self, name: &str, token: &Token) -> Encoded {
        let mut raw = [0u8; MAX_RAW];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            raw[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        match token.endpoint {
            SocketAddr::V4(a) => {
                put(&[4]);
                put(&a.ip().octets());
                put(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => {
                put(&[6]);
                put(&a.ip().octets());
                put(&a.port().to_be_bytes());
                put(&a.scope_id().to_be_bytes());
            }
        }
        put(&token.started.to_be_bytes());
        put(&token.last.to_be_bytes());
        let tag = self.tag(name, &raw[..len]);
        raw[len..len + TAG_LEN].copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        len += TAG_LEN;

        let mut out = Encoded {
            buf: [0; MAX_ENCODED],
            len: 0,
        };
        out.len = base64url_encode(&raw[..len], &mut out.buf);
        out
    }

    fn decode(&self, name: &str, encoded: &[u8]) -> Option<Token> {
        if encoded.len() > MAX_ENCODED {
            return None;
        }
        let mut raw = [0u8; MAX_RAW];
        let len = base64url_decode(encoded, &mut raw)?;
        let raw = &raw[..len];
        let addr_len = match raw.first()? {
            4 => 4 + 2,
            6 => 16 + 2 + 4,
            _ => return None,
        };
        if len != 1 + addr_len + 16 + TAG_LEN {
            return None;
        }
        let (body, tag) = raw.split_at(len - TAG_LEN);
        let expected = self.tag(name, body);
        if !constant_time_eq(&expected.as_ref()[..TAG_LEN], tag) {
            return None;
        }
        let (endpoint, times) = if body[0] == 4 {
            let ip: [u8; 4] = body[1..5].try_into().ok()?;
            let port = u16::from_be_bytes(body[5..7].try_into().ok()?);
            (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
                &body[7..],
            )
        } else {
            let ip: [u8; 16] = body[1..17].try_into().ok()?;
            let port = u16::from_be_bytes(body[17..19].try_into().ok()?);
            let scope = u32::from_be_bytes(body[19..23].try_into().ok()?);
            let addr = SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope);
            (SocketAddr::V6(addr), &body[23..])
        };
        Some(Token {
            endpoint,
            started: u64::from_be_bytes(times[..8].try_into().ok()?),
            last: u64::from_be_bytes(times[8..16].try_into().ok()?),
        })
    }
}

/// Whether the session `token` is still valid at `now` under `cfg`'s timeouts.
fn alive(cfg: &SessionPersistence, token: &Token, now: u64) -> bool {
    if let Some(absolute) = cfg.absolute_timeout
        && now.saturating_sub(token.started) >= secs(absolute)
    {
        return false;
    }
    if let Some(idle) = cfg.idle_timeout
        && now.saturating_sub(token.last) > secs(idle)
    {
        return false;
    }
    true
}

/// Whole seconds, rounding a fraction up so a sub-second timeout is not zero.
fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn session_name(cfg: &SessionPersistence) -> &str {
    cfg.name.as_deref().unwrap_or(DEFAULT_SESSION_NAME)
}

fn cookie_path(cfg: &SessionPersistence) -> &str {
    cfg.path.as_deref().unwrap_or(DEFAULT_COOKIE_PATH)
}

/// The values of the cookies called `name` in one `Cookie` header value
/// (`a=1; name=v; b=2`), unquoted.
fn cookie_values<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    header.split(|&b| b == b';').filter_map(move |pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        if trim_ows(&pair[..eq]) != name {
            return None;
        }
        let value = trim_ows(&pair[eq + 1..]);
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

/// Strips spaces and tabs around a list element.
fn trim_ows(s: &[u8]) -> &[u8] {
    let Some(start) = s.iter().position(|b| !matches!(b, b' ' | b'\t')) else {
        return &[];
    };
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(start);
    &s[start..=end]
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `input` as unpadded base64url into `out`, returning the length written.
fn base64url_encode(input: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out[n] = BASE64URL[((v >> (18 - 6 * i)) & 63) as usize];
            n += 1;
        }
    }
    n
}

/// Decodes unpadded base64url into `out`, returning the length written. `None` for a character
/// outside the alphabet, an impossible length, non-zero trailing bits, or output that does not fit.
fn base64url_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    if input.len() % 4 == 1 || input.len() / 4 * 3 + (input.len() % 4).saturating_sub(1) > out.len()
    {
        return None;
    }
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut n = 0;
    for chunk in input.chunks(4) {
        let mut v = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            v |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        // Bits below the last whole byte must be zero, so each token has one spelling.
        if v & ((1 << (24 - 8 * bytes)) - 1) != 0 {
            return None;
        }
        for i in 0..bytes {
            out[n] = (v >> (16 - 8 * i)) as u8;
            n += 1;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn cookie_cfg() -> SessionPersistence {
        SessionPersistence {
            name: None,
            kind: SessionKind::Cookie,
            absolute_timeout: None,
            idle_timeout: None,
            permanent: false,
            path: None,
        }
    }

    fn header_cfg() -> SessionPersistence {
        SessionPersistence {
            kind: SessionKind::Header,
            ..cookie_cfg()
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The response headers `set` produces.
    fn issue(
        codec: &SessionCodec,
        cfg: &SessionPersistence,
        endpoint: SocketAddr,
        started: u64,
        now: u64,
    ) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        codec.set(cfg, &mut resp, endpoint, started, now);
        resp
    }

    fn set_cookie(resp: &ResponseHeader) -> &str {
        let all: Vec<_> = resp.headers.get_all("set-cookie").iter().collect();
        assert_eq!(all.len(), 1);
        all[0].to_str().unwrap()
    }

    /// The `name=value` part of a `Set-Cookie`.
    fn cookie_pair(resp: &ResponseHeader) -> String {
        set_cookie(resp).split(';').next().unwrap().to_owned()
    }

    fn request(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            req.append_header(*name, *value).unwrap();
        }
        req
    }

    /// A request sending back the cookie `resp` set.
    fn with_cookie(resp: &ResponseHeader) -> RequestHeader {
        request(&[("cookie", &cookie_pair(resp))])
    }

    #[test]
    fn cookie_round_trip() {
        let codec = SessionCodec::new();
        let cfg = cookie_cfg();
        let ep = addr("10.0.0.7:8080");
        let resp = issue(&codec, &cfg, ep, T0, T0);
        let pair = cookie_pair(&resp);
        let token = pair.strip_prefix("gw-session=").unwrap();
        assert_eq!(token.len(), 52);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let req = with_cookie(&resp);
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 100), Some(ep));
        assert_eq!(codec.started(&cfg, &req, T0 + 100), Some(T0));
    }

    #[test]
    fn no_token_no_session() {
        let codec = SessionCodec::new();
        let req = request(&[("cookie", "other=1")]);
        assert_eq!(codec.endpoint(&cookie_cfg(), &req, T0), None);
        assert_eq!(codec.started(&cookie_cfg(), &request(&[]), T0), None);
        assert_eq!(codec.endpoint(&header_cfg(), &request(&[]), T0), None);
    }

    #[test]
    fn ipv6_endpoints_round_trip() {
        let codec = SessionCodec::new();
        for cfg in [cookie_cfg(), header_cfg()] {
            for ep in ["[2001:db8::1]:443", "[::1]:8080", "[fe80::1%3]:80"] {
                let ep = addr(ep);
                let resp = issue(&codec, &cfg, ep, T0, T0);
                let req = match cfg.kind {
                    SessionKind::Cookie => with_cookie(&resp),
                    SessionKind::Header => request(&[(
                        "gw-session",
                        resp.headers.get("gw-session").unwrap().to_str().unwrap(),
                    )]),
                };
                assert_eq!(codec.endpoint(&cfg, &req, T0), Some(ep));
            }
        }
    }

    #[test]
    fn tampered_tokens_are_ignored() {
        let codec = SessionCodec::new();
        let cfg = cookie_cfg();
        let resp = issue(&codec, &cfg, addr("10.0.0.7:8080"), T0, T0);
        let pair = cookie_pair(&resp);
        // Flip each character in turn: none of the results is accepted.
        for i in "gw-session=".len()..pair.len() {
            let mut bytes = pair.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            let req = request(&[("cookie", &forged)]);
            assert_eq!(codec.endpoint(&cfg, &req, T0), None, "{forged}");
        }
        // Truncated, extended, garbage.
        for forged in [
            &pair[..pair.len() - 1],
            &format!("{pair}A"),
            &format!("{pair}AA"),
            "gw-session=",
            "gw-session=!!!!",
            "gw-session=AAAA",
        ] {
            let req = request(&[("cookie", forged)]);
            assert_eq!(codec.endpoint(&cfg, &req, T0), None, "{forged}");
        }
        // Another codec's secret, or another session name.
        let other = SessionCodec::new();
        assert_eq!(other.endpoint(&cfg, &with_cookie(&resp), T0), None);
        let renamed = SessionPersistence {
            name: Some("other".into()),
            ..cfg.clone()
        };
        let req = request(&[("cookie", &pair.replace("gw-session=", "other="))]);
        assert_eq!(codec.endpoint(&renamed, &req, T0), None);
    }

    #[test]
    fn shared_secret_is_accepted_across_codecs() {
        let a = SessionCodec::with_secret(&[7; 32]);
        let b = SessionCodec::with_secret(&[7; 32]);
        let cfg = cookie_cfg();
        let ep = addr("10.0.0.7:8080");
        let resp = issue(&a, &cfg, ep, T0, T0);
        assert_eq!(b.endpoint(&cfg, &with_cookie(&resp), T0), Some(ep));
    }

    #[test]
    fn absolute_timeout_runs_from_the_start() {
        let codec = SessionCodec::new();
        let cfg = SessionPersistence {
            absolute_timeout: Some(Duration::from_secs(60)),
            ..cookie_cfg()
        };
        let ep = addr("10.0.0.7:8080");
        let resp = issue(&codec, &cfg, ep, T0, T0);
        let req = with_cookie(&resp);
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 59), Some(ep));
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 60), None);
        // A refresh keeps the start, so it does not extend the absolute timeout.
        let started = codec.started(&cfg, &req, T0 + 50).unwrap();
        let refreshed = issue(&codec, &cfg, ep, started, T0 + 50);
        let req = with_cookie(&refreshed);
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 59), Some(ep));
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 60), None);
        assert_eq!(codec.started(&cfg, &req, T0 + 60), None);
    }

    #[test]
    fn idle_timeout_runs_from_the_last_refresh() {
        let codec = SessionCodec::new();
        let cfg = SessionPersistence {
            idle_timeout: Some(Duration::from_secs(30)),
            ..cookie_cfg()
        };
        let ep = addr("10.0.0.7:8080");
        let resp = issue(&codec, &cfg, ep, T0, T0);
        let req = with_cookie(&resp);
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 30), Some(ep));
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 31), None);
        // Refreshed at T0 + 25: alive until T0 + 55.
        let refreshed = issue(&codec, &cfg, ep, T0, T0 + 25);
        let req = with_cookie(&refreshed);
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 55), Some(ep));
        assert_eq!(codec.started(&cfg, &req, T0 + 55), Some(T0));
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 56), None);
    }

    #[test]
    fn both_timeouts_apply() {
        let codec = SessionCodec::new();
        let cfg = SessionPersistence {
            absolute_timeout: Some(Duration::from_secs(100)),
            idle_timeout: Some(Duration::from_secs(30)),
            ..cookie_cfg()
        };
        let ep = addr("10.0.0.7:8080");
        let req = with_cookie(&issue(&codec, &cfg, ep, T0, T0 + 90));
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 99), Some(ep));
        assert_eq!(codec.endpoint(&cfg, &req, T0 + 100), None);
    }

    #[test]
    fn sub_second_timeouts_round_up() {
        assert_eq!(secs(Duration::from_millis(1500)), 2);
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn session_cookie_attributes() {
        let codec = SessionCodec::new();
        let resp = issue(&codec, &cookie_cfg(), addr("10.0.0.7:8080"), T0, T0);
        let cookie = set_cookie(&resp);
        assert!(cookie.starts_with("gw-session="));
        assert!(cookie.ends_with("; Path=/; HttpOnly"), "{cookie}");
        assert!(!cookie.contains("Max-Age"));

        // Not permanent: no Max-Age even with an absolute timeout (the gateway enforces it).
        let cfg = SessionPersistence {
            name: Some("sticky".into()),
            path: Some("/app".into()),
            absolute_timeout: Some(Duration::from_secs(3600)),
            ..cookie_cfg()
        };
        let resp = issue(&codec, &cfg, addr("10.0.0.7:8080"), T0, T0);
        let cookie = set_cookie(&resp);
        assert!(cookie.starts_with("sticky="));
        assert!(cookie.ends_with("; Path=/app; HttpOnly"), "{cookie}");
    }

    #[test]
    fn permanent_cookie_max_age_is_the_remaining_absolute_timeout() {
        let codec = SessionCodec::new();
        let cfg = SessionPersistence {
            permanent: true,
            absolute_timeout: Some(Duration::from_secs(3600)),
            ..cookie_cfg()
        };
        let resp = issue(&codec, &cfg, addr("10.0.0.7:8080"), T0, T0);
        assert!(set_cookie(&resp).ends_with("; Path=/; HttpOnly; Max-Age=3600"));
        let resp = issue(&codec, &cfg, addr("10.0.0.7:8080"), T0, T0 + 600);
        assert!(set_cookie(&resp).ends_with("; Max-Age=3000"));
    }

    #[test]
    fn set_cookie_keeps_the_backends_cookies() {
        let codec = SessionCodec::new();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("set-cookie", "app=1").unwrap();
        codec.set(&cookie_cfg(), &mut resp, addr("10.0.0.7:8080"), T0, T0);
        assert_eq!(resp.headers.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn cookie_among_others_and_across_headers() {
        let codec = SessionCodec::new();
        let cfg = cookie_cfg();
        let ep = addr("10.0.0.7:8080");
        let pair = cookie_pair(&issue(&codec, &cfg, ep, T0, T0));
        let value = pair.strip_prefix("gw-session=").unwrap();
        for req in [
            request(&[("cookie", &format!("a=1; {pair}; b=2"))]),
            request(&[("cookie", &format!("a=1;{pair}"))]),
            request(&[("cookie", &format!("gw-session=\"{value}\""))]),
            request(&[("cookie", "a=1; b=2"), ("cookie", &format!("c=3; {pair}"))]),
            // A stale or foreign cookie of the same name first: the valid one still wins.
            request(&[("cookie", &format!("gw-session=bogus; {pair}"))]),
            request(&[("cookie", "gw-session=bogus"), ("cookie", &pair)]),
        ] {
            assert_eq!(codec.endpoint(&cfg, &req, T0), Some(ep));
        }
        // Names are case-sensitive and must match exactly.
        for other in ["GW-SESSION", "gw-session2", "xgw-session"] {
            let req = request(&[("cookie", &format!("{other}={value}"))]);
            assert_eq!(codec.endpoint(&cfg, &req, T0), None, "{other}");
        }
    }

    #[test]
    fn header_kind() {
        let codec = SessionCodec::new();
        let cfg = SessionPersistence {
            name: Some("X-Session".into()),
            ..header_cfg()
        };
        let ep = addr("10.0.0.9:9000");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("x-session", "from-backend").unwrap();
        codec.set(&cfg, &mut resp, ep, T0, T0);
        assert!(resp.headers.get("set-cookie").is_none());
        let values: Vec<_> = resp.headers.get_all("x-session").iter().collect();
        assert_eq!(values.len(), 1, "the backend's value is replaced");
        let token = values[0].to_str().unwrap().to_owned();
        assert_eq!(token.len(), 52);

        for req in [
            request(&[("x-session", &token)]),
            request(&[("X-SESSION", &format!(" {token} "))]),
            request(&[("x-session", "junk"), ("x-session", &token)]),
            request(&[("x-session", &format!("junk, {token}"))]),
        ] {
            assert_eq!(codec.endpoint(&cfg, &req, T0), Some(ep));
            assert_eq!(codec.started(&cfg, &req, T0), Some(T0));
        }
        // A cookie is not a header session.
        let req = request(&[("cookie", &format!("X-Session={token}"))]);
        assert_eq!(codec.endpoint(&cfg, &req, T0), None);
    }

    #[test]
    fn validate() {
        assert!(SessionCodec::validate(&cookie_cfg()).is_ok());
        assert!(SessionCodec::validate(&header_cfg()).is_ok());
        let bad = [
            SessionPersistence {
                name: Some("bad name".into()),
                ..cookie_cfg()
            },
            SessionPersistence {
                name: Some("semi;colon".into()),
                ..cookie_cfg()
            },
            SessionPersistence {
                name: Some("".into()),
                ..header_cfg()
            },
            SessionPersistence {
                name: Some("x:y".into()),
                ..header_cfg()
            },
            SessionPersistence {
                path: Some("/a;b".into()),
                ..cookie_cfg()
            },
            SessionPersistence {
                path: Some("".into()),
                ..cookie_cfg()
            },
            SessionPersistence {
                permanent: true,
                ..cookie_cfg()
            },
            SessionPersistence {
                idle_timeout: Some(Duration::ZERO),
                ..cookie_cfg()
            },
            SessionPersistence {
                absolute_timeout: Some(Duration::ZERO),
                ..header_cfg()
            },
        ];
        for cfg in bad {
            assert!(SessionCodec::validate(&cfg).is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn base64url() {
        for len in 0..=MAX_RAW {
            let input: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut enc = [0u8; MAX_ENCODED];
            let n = base64url_encode(&input, &mut enc);
            assert_eq!(n, (len * 4).div_ceil(3));
            let mut dec = [0u8; MAX_RAW];
            let m = base64url_decode(&enc[..n], &mut dec).unwrap();
            assert_eq!(&dec[..m], &input[..]);
        }
        let mut dec = [0u8; 8];
        assert_eq!(base64url_decode(b"A", &mut dec), None);
        assert_eq!(
            base64url_decode(b"AB", &mut dec),
            None,
            "non-zero trailing bits"
        );
        assert_eq!(base64url_decode(b"AA==", &mut dec), None, "padding");
        assert_eq!(
            base64url_decode(b"AAAAAAAAAAAAAAAA", &mut dec),
            None,
            "too long"
        );
        assert_eq!(base64url_decode(b"-_-_", &mut dec), Some(3));
    }
}
