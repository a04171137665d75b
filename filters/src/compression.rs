//! `Compression`: gzip, brotli and zstd response compression by the client's `Accept-Encoding`.
//!
//! The algorithm is chosen in `request_headers`: the first of `algorithms` (the server's order
//! of preference; default `zstd`, `br`, `gzip`) that the request's `Accept-Encoding` accepts
//! with a q-value above 0 (by name or through `*`). A response is compressed when all of these
//! hold: the request is not `HEAD`; the status is not 1xx, 204 or 304; it has no
//! `Content-Encoding` yet; its `Content-Type` (the media type, without parameters) is one of
//! `contentTypes`; its `Content-Length`, when it has one, is at least `minBytes`; and it has no
//! `Cache-Control: no-transform`. Then `Content-Encoding` is set, `Content-Length` removed (the
//! body streams, chunk by chunk, through the encoder), `Vary: Accept-Encoding` added and a
//! strong `ETag` made weak. Responses the gateway writes itself go through the same steps.
//!
//! Each chunk of the body is compressed and flushed as it passes (so streamed responses keep
//! streaming), and the stream is finished with the last chunk. Levels per algorithm (defaults:
//! gzip 6, brotli 4, zstd 3).

use bytes::Bytes;
use gateway_core::{FilterAction, FilterCtx, HttpFilter, ResponseHeader, Session, async_trait};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;

use crate::SpecError;

/// The kind of [`Compression`] objects.
pub const KIND: &str = "Compression";

/// Settings of a `Compression` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "Compression",
    plural = "compressions",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompressionSpec {
    /// The algorithms offered, most preferred first. Default: `[zstd, br, gzip]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<CompressionAlgorithm>,
    /// Responses whose `Content-Length` is below this are sent as they are. Default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u64>,
    /// The media types compressed. Default: text types, JSON, JavaScript, XML and SVG (see
    /// [`DEFAULT_CONTENT_TYPES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
    /// Compression levels. Unset: gzip 6, brotli 4, zstd 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<CompressionLevels>,
}

/// A compression algorithm, by its `Content-Encoding` token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CompressionAlgorithm {
    /// `gzip`.
    #[serde(rename = "gzip")]
    Gzip,
    /// `br` (brotli).
    #[serde(rename = "br")]
    Brotli,
    /// `zstd`.
    #[serde(rename = "zstd")]
    Zstd,
}

impl CompressionAlgorithm {
    fn token(self) -> &'static str {
        match self {
            CompressionAlgorithm::Gzip => "gzip",
            CompressionAlgorithm::Brotli => "br",
            CompressionAlgorithm::Zstd => "zstd",
        }
    }

    /// A new encoder at `level` (checked by [`CompressionFilter::new`]).
    fn encoder(self, level: u32) -> std::io::Result<Encoder> {
        Ok(match self {
            CompressionAlgorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )),
            CompressionAlgorithm::Brotli => Encoder::Brotli(Box::new(
                brotli::CompressorWriter::new(Vec::new(), 4096, level, 19),
            )),
            CompressionAlgorithm::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level as i32)?)
            }
        })
    }
}

/// A response body's encoder.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// Compresses `input` with the encoder in `slot` and returns what is ready: everything so
    /// far, flushed, or the whole rest of the stream when `end` (the slot is then emptied).
    fn encode(slot: &mut Option<Self>, input: &[u8], end: bool) -> std::io::Result<Bytes> {
        let Some(encoder) = slot else {
            return Ok(Bytes::new());
        };
        match encoder {
            Encoder::Gzip(e) => e.write_all(input)?,
            Encoder::Brotli(e) => e.write_all(input)?,
            Encoder::Zstd(e) => e.write_all(input)?,
        }
        if end {
            let out = match slot.take() {
                Some(Encoder::Gzip(e)) => e.finish()?,
                Some(Encoder::Brotli(e)) => e.into_inner(),
                Some(Encoder::Zstd(e)) => e.finish()?,
                None => Vec::new(),
            };
            return Ok(out.into());
        }
        let buf = match encoder {
            Encoder::Gzip(e) => {
                e.flush()?;
                e.get_mut()
            }
            Encoder::Brotli(e) => {
                e.flush()?;
                e.get_mut()
            }
            Encoder::Zstd(e) => {
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(std::mem::take(buf).into())
    }
}

/// Per-algorithm compression levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressionLevels {
    /// 1 to 9. Default 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<u32>,
    /// 0 to 11. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub br: Option<u32>,
    /// 1 to 22. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstd: Option<u32>,
}

/// The media types compressed when `contentTypes` is not set.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/javascript",
    "text/xml",
    "text/csv",
    "text/markdown",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
];

/// The `Compression` filter, built from a [`CompressionSpec`].
#[derive(Debug)]
pub struct CompressionFilter {
    algorithms: Vec<(CompressionAlgorithm, u32)>,
    min_bytes: u64,
    content_types: Vec<String>,
}

/// The algorithm a request accepts, chosen in `request_headers`.
#[derive(Clone, Copy)]
struct Chosen(CompressionAlgorithm, u32);

/// The encoder of a response being compressed, in the request's state
/// ([`FilterCtx::insert_state`]): reached by `&mut`, no lock.
struct Compressing(Option<Encoder>);

impl CompressionFilter {
    /// Checks `spec`: levels in range, algorithms not repeated, media types not empty.
    pub fn new(spec: CompressionSpec) -> Result<Self, SpecError> {
        let algorithms = if spec.algorithms.is_empty() {
            vec![
                CompressionAlgorithm::Zstd,
                CompressionAlgorithm::Brotli,
                CompressionAlgorithm::Gzip,
            ]
        } else {
            spec.algorithms.clone()
        };
        let levels = spec.level.unwrap_or_default();
        let mut out = Vec::new();
        for (i, a) in algorithms.iter().enumerate() {
            if algorithms[..i].contains(a) {
                return Err(SpecError::invalid(
                    format!("algorithms[{i}]"),
                    "appears twice",
                ));
            }
            let (level, range) = match a {
                CompressionAlgorithm::Gzip => (levels.gzip.unwrap_or(6), 1..=9),
                CompressionAlgorithm::Brotli => (levels.br.unwrap_or(4), 0..=11),
                CompressionAlgorithm::Zstd => (levels.zstd.unwrap_or(3), 1..=22),
            };
            if !range.contains(&level) {
                return Err(SpecError::invalid(
                    format!("level.{}", a.token()),
                    format!("{level} is outside {}-{}", range.start(), range.end()),
                ));
            }
            out.push((*a, level));
        }
        let content_types: Vec<String> = if spec.content_types.is_empty() {
            DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect()
        } else {
            spec.content_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect()
        };
        if let Some(i) = content_types
            .iter()
            .position(|t| t.is_empty() || !t.contains('/'))
        {
            return Err(SpecError::invalid(
                format!("contentTypes[{i}]"),
                "is not a media type",
            ));
        }
        Ok(CompressionFilter {
            algorithms: out,
            min_bytes: spec.min_bytes.unwrap_or(1024),
            content_types,
        })
    }

    /// The preferred algorithm `accept_encoding` accepts, if any.
    fn choose(&self, accept_encoding: &str) -> Option<(CompressionAlgorithm, u32)> {
        self.algorithms
            .iter()
            .copied()
            .find(|(a, _)| accepts(accept_encoding, a.token()))
    }

    fn compressible(&self, resp: &ResponseHeader) -> bool {
        let status = resp.status.as_u16();
        if status < 200 || status == 204 || status == 304 {
            return false;
        }
        let h = &resp.headers;
        if h.contains_key(http::header::CONTENT_ENCODING) {
            return false;
        }
        let Some(ct) = h
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let media = ct.split(';').next().unwrap_or("").trim();
        if !self
            .content_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(media))
        {
            return false;
        }
        if let Some(len) = h
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            && len < self.min_bytes
        {
            return false;
        }
        !h.get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
    }
}

/// Whether an `Accept-Encoding` value accepts `token` (RFC 9110 12.5.3): listed with a q-value
/// above 0, or not listed and `*` has one.
fn accepts(accept_encoding: &str, token: &str) -> bool {
    let mut star = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case(token) {
            return q > 0.0;
        }
        if coding == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

#[async_trait]
impl HttpFilter for CompressionFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let req = session.req_header();
        if req.method == http::Method::HEAD {
            return Ok(FilterAction::Continue);
        }
        let accept: Option<(CompressionAlgorithm, u32)> = req
            .headers
            .get_all(http::header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| self.choose(v));
        if let Some((a, level)) = accept {
            ctx.extensions_mut().insert(Chosen(a, level));
        }
        Ok(FilterAction::Continue)
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        let Some(Chosen(algorithm, level)) = ctx.extensions().get::<Chosen>().copied() else {
            return Ok(());
        };
        if !self.compressible(response) {
            return Ok(());
        }
        let Ok(encoder) = algorithm.encoder(level) else {
            return Ok(());
        };
        ctx.insert_state(Compressing(Some(encoder)));
        response.remove_header(&http::header::CONTENT_LENGTH);
        // Valid static names and values: these cannot fail.
        let _ = response.insert_header(http::header::CONTENT_ENCODING, algorithm.token());
        let _ = response.append_header(http::header::VARY, "accept-encoding");
        if let Some(etag) = response
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            && !etag.starts_with("W/")
        {
            let weak = format!("W/{etag}");
            let _ = response.insert_header(http::header::ETAG, weak);
        }
        Ok(())
    }

    fn response_body(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<()> {
        let Some(Compressing(encoder)) = ctx.state_mut::<Compressing>() else {
            return Ok(());
        };
        let input = body.as_deref().unwrap_or(&[]);
        if input.is_empty() && !end_of_stream {
            return Ok(());
        }
        let out = Encoder::encode(encoder, input, end_of_stream).map_err(|e| {
            gateway_core::Error::new(
                gateway_core::ErrorKind::Internal,
                format!("compression: {e}"),
            )
        })?;
        *body = Some(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_q_values_and_star() {
        assert!(accepts("gzip, br", "br"));
        assert!(accepts("gzip;q=0.5", "gzip"));
        assert!(!accepts("gzip;q=0", "gzip"));
        assert!(!accepts("gzip", "br"));
        assert!(accepts("*", "zstd"));
        assert!(!accepts("*;q=0", "zstd"));
        assert!(!accepts("zstd;q=0, *", "zstd"), "an explicit 0 wins over *");
        assert!(!accepts("identity", "gzip"));
    }

    #[test]
    fn preference_is_the_servers_and_levels_are_checked() {
        let f = CompressionFilter::new(CompressionSpec::default()).unwrap();
        assert_eq!(
            f.choose("gzip, br, zstd").map(|c| c.0),
            Some(CompressionAlgorithm::Zstd)
        );
        assert_eq!(
            f.choose("gzip, br").map(|c| c.0),
            Some(CompressionAlgorithm::Brotli)
        );
        assert_eq!(f.choose("deflate"), None);
        let spec: CompressionSpec =
            serde_json::from_str(r#"{"algorithms": ["gzip"], "level": {"gzip": 10}}"#).unwrap();
        assert_eq!(
            CompressionFilter::new(spec).unwrap_err().to_string(),
            "level.gzip: 10 is outside 1-9"
        );
        let spec: CompressionSpec =
            serde_json::from_str(r#"{"algorithms": ["gzip", "gzip"]}"#).unwrap();
        assert_eq!(
            CompressionFilter::new(spec).unwrap_err().to_string(),
            "algorithms[1]: appears twice"
        );
    }
}
