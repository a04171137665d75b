//! JSON access logs: one line per request, written by a thread of their own.
//!
//! The request path formats the line into a buffer taken from a pool of spare buffers and hands
//! it to a bounded queue without waiting ([`crossbeam_channel::Sender::try_send`]). A writer
//! thread writes the lines to the sink and gives the buffers back. When the sink cannot keep up
//! and the queue is full, the line is dropped and counted (`gateway_access_log_dropped_total`):
//! a request never waits for its log line.
//!
//! Fields and their meaning are listed in `docs/observability.md`.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prometheus_client::metrics::counter::Counter;

use crate::error::{Error, ErrorKind, Result};
use crate::limits::Throttle;

/// Lines waiting for the writer by default ([`AccessLog::queue`]).
pub const DEFAULT_QUEUE: usize = 4096;

/// A buffer larger than this after a line (a huge header) is freed rather than reused.
const MAX_SPARE_CAPACITY: usize = 4096;

/// One field of the access log line. The JSON key is [`AccessLogField::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessLogField {
    /// `start_time`: when the request head was received, RFC 3339 UTC with milliseconds.
    StartTime,
    /// `method`: the request method.
    Method,
    /// `path`: the path and query as the client sent them (before normalisation and rewrites).
    Path,
    /// `protocol`: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    Protocol,
    /// `response_code`: the status sent to the client; 0 when none was (the client left).
    ResponseCode,
    /// `error`: why the request failed, when it did: the proxy error kind (e.g.
    /// `ConnectRefused`, `ReadTimedout`), `HTTPStatus` for an error answer the gateway chose
    /// (a request timeout's 504), or `NoRoute` for a 404 that matched no route; null otherwise.
    Error,
    /// `bytes_received`: request body bytes read from the client.
    BytesReceived,
    /// `bytes_sent`: response body bytes sent to the client.
    BytesSent,
    /// `duration`: milliseconds from the request head received to the response sent.
    Duration,
    /// `upstream_service_time`: milliseconds the last attempt took, from choosing the endpoint to
    /// the backend's response head; null when no backend answered.
    UpstreamServiceTime,
    /// `x-forwarded-for`: the request's `X-Forwarded-For` header.
    XForwardedFor,
    /// `user-agent`: the request's `User-Agent` header.
    UserAgent,
    /// `x-request-id`: the request's `X-Request-Id` header.
    RequestId,
    /// `authority`: the request's `Host` (or HTTP/2 `:authority`).
    Authority,
    /// `upstream_host`: the endpoint (`IP:port`) of the last attempt.
    UpstreamHost,
    /// `downstream_remote_address`: the client's address.
    DownstreamRemoteAddress,
    /// `downstream_local_address`: the gateway address the client connected to.
    DownstreamLocalAddress,
    /// `requested_server_name`: the TLS SNI of the connection.
    RequestedServerName,
    /// `listener`: the listener that took the request.
    Listener,
    /// `route`: the route that matched, as `namespace/name`.
    Route,
    /// `rule`: the rule that matched: its name, or its index.
    Rule,
    /// `backend`: the backend that served (Envoy's `upstream_cluster`).
    Backend,
    /// `attempts`: attempts made to backends (retries and failovers included).
    Attempts,
}

impl AccessLogField {
    /// Every field, in the order of a line.
    pub const ALL: &'static [AccessLogField] = &[
        Self::StartTime,
        Self::Method,
        Self::Path,
        Self::Protocol,
        Self::ResponseCode,
        Self::Error,
        Self::BytesReceived,
        Self::BytesSent,
        Self::Duration,
        Self::UpstreamServiceTime,
        Self::XForwardedFor,
        Self::UserAgent,
        Self::RequestId,
        Self::Authority,
        Self::UpstreamHost,
        Self::DownstreamRemoteAddress,
        Self::DownstreamLocalAddress,
        Self::RequestedServerName,
        Self::Listener,
        Self::Route,
        Self::Rule,
        Self::Backend,
        Self::Attempts,
    ];

    /// The JSON key of the field.
    pub fn name(self) -> &'static str {
        match self {
            Self::StartTime => "start_time",
            Self::Method => "method",
            Self::Path => "path",
            Self::Protocol => "protocol",
            Self::ResponseCode => "response_code",
            Self::Error => "error",
            Self::BytesReceived => "bytes_received",
            Self::BytesSent => "bytes_sent",
            Self::Duration => "duration",
            Self::UpstreamServiceTime => "upstream_service_time",
            Self::XForwardedFor => "x-forwarded-for",
            Self::UserAgent => "user-agent",
            Self::RequestId => "x-request-id",
            Self::Authority => "authority",
            Self::UpstreamHost => "upstream_host",
            Self::DownstreamRemoteAddress => "downstream_remote_address",
            Self::DownstreamLocalAddress => "downstream_local_address",
            Self::RequestedServerName => "requested_server_name",
            Self::Listener => "listener",
            Self::Route => "route",
            Self::Rule => "rule",
            Self::Backend => "backend",
            Self::Attempts => "attempts",
        }
    }

    /// Parses a comma-separated list of field names (`method,path,response_code`).
    pub fn parse_list(text: &str) -> std::result::Result<Vec<Self>, String> {
        let fields = text
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::parse)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if fields.is_empty() {
            return Err("no access log field named".into());
        }
        Ok(fields)
    }
}

impl FromStr for AccessLogField {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown access log field {s:?} (known: {})",
                    known.join(",")
                )
            })
    }
}

impl fmt::Display for AccessLogField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where access log lines go.
pub enum AccessLogSink {
    /// The process's standard output.
    Stdout,
    /// A file, created if missing and appended to.
    File(PathBuf),
    /// Any writer an embedder supplies (a socket, a pipe, a channel adapter). It is written from
    /// the log's own thread, which looks at the queue every 10 ms and flushes at least every 100 ms.
    Writer(Box<dyn Write + Send>),
}

impl fmt::Debug for AccessLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("Stdout"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// Access log settings, given to [`crate::Gateway::set_access_log`]. The gateway writes no
/// access log until one is set.
#[derive(Debug)]
pub struct AccessLog {
    /// The fields of each line, in this order. [`AccessLog::new`] sets every field.
    pub fields: Vec<AccessLogField>,
    /// Where lines go.
    pub sink: AccessLogSink,
    /// Lines that may wait for the writer; once that many wait, new lines are dropped (and
    /// counted). Default [`DEFAULT_QUEUE`]; 0 counts as 1.
    pub queue: usize,
}

impl AccessLog {
    /// Every field ([`AccessLogField::ALL`]) to `sink`, with the default queue.
    pub fn new(sink: AccessLogSink) -> Self {
        AccessLog {
            fields: AccessLogField::ALL.to_vec(),
            sink,
            queue: DEFAULT_QUEUE,
        }
    }

    /// Only these fields, in this order.
    pub fn with_fields(mut self, fields: Vec<AccessLogField>) -> Self {
        self.fields = fields;
        self
    }
}

/// What one request's line says; borrowed from the session and the routing table.
pub(crate) struct Record<'a> {
    pub(crate) start: SystemTime,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) version: http::Version,
    pub(crate) status: u16,
    pub(crate) error: Option<&'a str>,
    pub(crate) bytes_received: usize,
    pub(crate) bytes_sent: usize,
    pub(crate) duration: Duration,
    pub(crate) upstream_time: Option<Duration>,
    pub(crate) headers: &'a http::HeaderMap,
    pub(crate) authority: &'a str,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) remote: Option<&'a dyn fmt::Display>,
    pub(crate) local: Option<&'a dyn fmt::Display>,
    pub(crate) sni: Option<&'a str>,
    pub(crate) route: Option<&'a crate::RouteInfo>,
    pub(crate) listener: Option<&'a str>,
    pub(crate) backend: Option<&'a str>,
    pub(crate) attempts: u32,
}

/// A running access log: the queue to its writer thread. Dropping it lets the thread write
/// what is queued, flush and end.
pub(crate) struct AccessLogger {
    fields: Box<[AccessLogField]>,
    lines: Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    dropped: Counter,
    /// The writer thread, taken by [`AccessLogger::take_writer`] to wait for its last flush.
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLogger {
    /// Opens the sink and starts the writer thread.
    pub(crate) fn start(cfg: AccessLog, dropped: Counter) -> Result<Self> {
        let sink: Box<dyn Write + Send> = match cfg.sink {
            AccessLogSink::Stdout => Box::new(std::io::stdout()),
            AccessLogSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        Error::because(
                            ErrorKind::Io,
                            format!("opening the access log {}", path.display()),
                            e,
                        )
                    })?,
            ),
            AccessLogSink::Writer(w) => w,
        };
        let queue = cfg.queue.max(1);
        let (lines, to_write) = crossbeam_channel::bounded(queue);
        let (give_back, spare) = crossbeam_channel::bounded(queue);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(sink, &to_write, &give_back))
            .map_err(|e| Error::because(ErrorKind::Io, "starting the access log thread", e))?;
        Ok(AccessLogger {
            fields: cfg.fields.into_boxed_slice(),
            lines,
            spare,
            dropped,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// The writer thread's handle (once): it ends after the last clone of this logger is
    /// dropped, having written and flushed every queued line.
    pub(crate) fn take_writer(&self) -> Option<std::thread::JoinHandle<()>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Formats `r` and queues it; drops (and counts) it when the queue is full.
    pub(crate) fn log(&self, r: &Record<'_>) {
        let mut buf = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(512));
        format_line(&mut buf, &self.fields, r);
        match self.lines.try_send(buf) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// How often the writer thread looks at the queue. It polls instead of sleeping on the queue so
/// that queueing a line never has to wake a thread (a futex call per request measured 15-20 %
/// of the request's CPU); the queue holds `AccessLog::queue` lines between two looks.
const POLL: Duration = Duration::from_millis(10);

/// Written lines reach the sink at least this often (Envoy flushes its access logs every second).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The writer thread: every [`POLL`] writes what is queued, flushing at most every
/// [`FLUSH_EVERY`] (and when its 64 KiB buffer fills); ends when the logger is dropped and the
/// queue is drained.
fn write_lines(
    sink: Box<dyn Write + Send>,
    lines: &Receiver<Vec<u8>>,
    give_back: &Sender<Vec<u8>>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let errors = Throttle::default();
    let report = |e: std::io::Error| {
        if let Some(suppressed) = errors.allow() {
            tracing::warn!(error = %e, suppressed, "cannot write the access log");
        }
    };
    let mut unflushed = false;
    let mut flushed_at = std::time::Instant::now();
    loop {
        let ended = loop {
            match lines.try_recv() {
                Ok(mut line) => {
                    if let Err(e) = out.write_all(&line) {
                        report(e);
                    }
                    unflushed = true;
                    line.clear();
                    if line.capacity() <= MAX_SPARE_CAPACITY {
                        let _ = give_back.try_send(line);
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break false,
                Err(crossbeam_channel::TryRecvError::Disconnected) => break true,
            }
        };
        if ended || (unflushed && flushed_at.elapsed() >= FLUSH_EVERY) {
            if let Err(e) = out.flush() {
                report(e);
            }
            unflushed = false;
            flushed_at = std::time::Instant::now();
        }
        if ended {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Writes `r` as one JSON object and a newline.
fn format_line(buf: &mut Vec<u8>, fields: &[AccessLogField], r: &Record<'_>) {
    buf.push(b'{');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        json_str(buf, field.name());
        buf.push(b':');
        let header = |name: &str| r.headers.get(name).map(|v| v.as_bytes());
        match field {
            AccessLogField::StartTime => {
                buf.push(b'"');
                rfc3339_millis(buf, r.start);
                buf.push(b'"');
            }
            AccessLogField::Method => json_str(buf, r.method),
            AccessLogField::Path => json_str(buf, r.path),
            AccessLogField::Protocol => json_str(
                buf,
                match r.version {
                    http::Version::HTTP_09 => "HTTP/0.9",
                    http::Version::HTTP_10 => "HTTP/1.0",
                    http::Version::HTTP_2 => "HTTP/2",
                    http::Version::HTTP_3 => "HTTP/3",
                    _ => "HTTP/1.1",
                },
            ),
            AccessLogField::ResponseCode => number(buf, u64::from(r.status)),
            AccessLogField::Error => opt_str(buf, r.error),
            AccessLogField::BytesReceived => number(buf, r.bytes_received as u64),
            AccessLogField::BytesSent => number(buf, r.bytes_sent as u64),
            AccessLogField::Duration => number(buf, millis(r.duration)),
            AccessLogField::UpstreamServiceTime => match r.upstream_time {
                Some(d) => number(buf, millis(d)),
                None => null(buf),
            },
            AccessLogField::XForwardedFor => opt_bytes(buf, header("x-forwarded-for")),
            AccessLogField::UserAgent => opt_bytes(buf, header("user-agent")),
            AccessLogField::RequestId => opt_bytes(buf, header("x-request-id")),
            AccessLogField::Authority => json_str(buf, r.authority),
            AccessLogField::UpstreamHost => opt_display(buf, r.upstream.as_ref().map(|a| a as _)),
            AccessLogField::DownstreamRemoteAddress => opt_display(buf, r.remote),
            AccessLogField::DownstreamLocalAddress => opt_display(buf, r.local),
            AccessLogField::RequestedServerName => opt_str(buf, r.sni),
            AccessLogField::Listener => {
                opt_str(buf, r.route.map(|i| i.listener.as_str()).or(r.listener))
            }
            AccessLogField::Route => match r.route {
                Some(info) => {
                    buf.push(b'"');
                    escaped(buf, &info.namespace);
                    buf.push(b'/');
                    escaped(buf, &info.route);
                    buf.push(b'"');
                }
                None => null(buf),
            },
            AccessLogField::Rule => opt_str(buf, r.route.map(|i| i.rule.as_str())),
            AccessLogField::Backend => opt_str(buf, r.backend),
            AccessLogField::Attempts => number(buf, u64::from(r.attempts)),
        }
    }
    buf.extend_from_slice(b"}\n");
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"null");
}

fn number(buf: &mut Vec<u8>, v: u64) {
    let _ = write!(buf, "{v}");
}

/// A JSON string.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    escaped(buf, s);
    buf.push(b'"');
}

/// `s` escaped for the inside of a JSON string.
fn escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                buf.extend_from_slice(&bytes[start..i]);
                let _ = write!(buf, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escape);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

fn opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(buf, s),
        None => null(buf),
    }
}

/// An address (or anything whose text needs no escaping beyond what [`escaped`] does).
fn opt_display(buf: &mut Vec<u8>, v: Option<&dyn fmt::Display>) {
    let Some(v) = v else {
        return null(buf);
    };
    let start = buf.len();
    let _ = write!(buf, "{v}");
    if buf[start..]
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        // Rare (a Unix socket path): escape a copy.
        let text = String::from_utf8_lossy(&buf[start..]).into_owned();
        buf.truncate(start);
        json_str(buf, &text);
    } else {
        buf.insert(start, b'"');
        buf.push(b'"');
    }
}

/// A header value: as a string when it is UTF-8 (invalid bytes become U+FFFD).
fn opt_bytes(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(buf, &String::from_utf8_lossy(v)),
        None => null(buf),
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn rfc3339_millis(buf: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        buf,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's days-to-civil
/// algorithm, for days since the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = |secs: u64, ms: u64| {
            let mut b = Vec::new();
            rfc3339_millis(
                &mut b,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms),
            );
            String::from_utf8(b).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_950_059, 123), "2026-11-29T11:00:59.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn escaping_matches_serde_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\u{7f}\n\t",
            "ü→😀",
        ] {
            let mut b = Vec::new();
            json_str(&mut b, s);
            let back: String = serde_json::from_slice(&b).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn field_lists() {
        assert_eq!(
            AccessLogField::parse_list("method, path,response_code").unwrap(),
            vec![
                AccessLogField::Method,
                AccessLogField::Path,
                AccessLogField::ResponseCode
            ]
        );
        assert!(AccessLogField::parse_list("method,nope").is_err());
        assert!(AccessLogField::parse_list(" , ").is_err());
        for f in AccessLogField::ALL {
            assert_eq!(f.name().parse::<AccessLogField>().unwrap(), *f);
        }
    }

    #[test]
    fn a_line_is_one_json_object() {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", "t\"est".parse().unwrap());
        let info = crate::RouteInfo {
            listener: "gw/http".into(),
            namespace: "ns".into(),
            route: "r".into(),
            rule: "0".into(),
        };
        let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = Record {
            start: UNIX_EPOCH,
            method: "GET",
            path: "/a?b=\"c\"",
            version: http::Version::HTTP_11,
            status: 200,
            error: None,
            bytes_received: 3,
            bytes_sent: 10,
            duration: Duration::from_millis(12),
            upstream_time: Some(Duration::from_millis(7)),
            headers: &headers,
            authority: "example.com",
            upstream: Some("127.0.0.1:9".parse().unwrap()),
            remote: Some(&remote),
            local: None,
            sni: None,
            route: Some(&info),
            listener: None,
            backend: Some("b"),
            attempts: 1,
        };
        let mut buf = Vec::new();
        format_line(&mut buf, AccessLogField::ALL, &r);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["path"], "/a?b=\"c\"");
        assert_eq!(v["user-agent"], "t\"est");
        assert_eq!(v["route"], "ns/r");
        assert_eq!(v["listener"], "gw/http");
        assert_eq!(v["duration"], 12);
        assert_eq!(v["upstream_service_time"], 7);
        assert_eq!(v["upstream_host"], "127.0.0.1:9");
        assert_eq!(v["downstream_remote_address"], "127.0.0.1:5000");
        assert!(v["downstream_local_address"].is_null());
        assert!(v["x-request-id"].is_null());
        assert_eq!(v.as_object().unwrap().len(), AccessLogField::ALL.len());
    }
}
