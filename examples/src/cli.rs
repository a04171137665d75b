//! Parsers for command-line values shared by the example gateways.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use gateway_core::config::Limits;
use gateway_core::{AccessLog, AccessLogField, AccessLogSink};

/// Where the YAML comes from and how it is translated: the same flags for serving and for
/// `file-gateway explain`, so both see the same configuration.
#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// A YAML file, or a directory of .yaml/.yml files (multi-document). Repeatable.
    #[arg(long = "config", value_name = "PATH", required = true)]
    pub config: Vec<PathBuf>,

    /// The GatewayClass spec.controllerName this gateway serves.
    #[arg(long, value_name = "NAME", default_value = crate::DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,

    /// Gateways without spec.addresses get the next free address of this CIDR
    /// (default: every Gateway on 127.0.0.1).
    #[arg(long, value_name = "CIDR")]
    pub address_pool: Option<ipnet::IpNet>,

    /// Bind listener port P on local port L, e.g. 80=18080,443=18443. Routing and redirects
    /// still see the Gateway's own port numbers.
    #[arg(long, value_name = "P=L,...", value_parser = parse_port_map)]
    pub listener_port_map: Option<BTreeMap<u16, u16>>,
}

impl SourceArgs {
    /// The translation options these flags ask for.
    pub fn translate_options(&self) -> gateway_k8s::TranslateOptions {
        gateway_k8s::TranslateOptions {
            controller_name: self.controller_name.clone(),
            port_map: self.listener_port_map.clone().unwrap_or_default(),
            address_pool: self.address_pool,
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Overload and HTTP/1 timeout flags ([`Limits`]); each defaults to the gateway-core default.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitArgs {
    /// Open downstream connections across all listeners; more are closed at accept
    /// (default 50000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Open downstream connections on each bound socket (default 20000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_bind: Option<u64>,

    /// Seconds a client may take to send a whole request head, or a TLS handshake (default 10).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: Option<u64>,

    /// Seconds a keep-alive connection may stay idle between requests (default 60).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_idle_timeout: Option<u64>,

    /// Bytes of request bodies held in memory across all requests (replay buffers, filter
    /// buffers, mirror queues); requests past it get 503 (default 268435456, 256 MiB).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_buffered_body_bytes: Option<u64>,
}

impl LimitArgs {
    /// The [`Limits`] these flags ask for: gateway-core's defaults where a flag is absent.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        let count = |v: Option<u64>, default: usize| {
            v.map_or(default, |v| usize::try_from(v).unwrap_or(usize::MAX))
        };
        Limits {
            max_connections: count(self.max_connections, d.max_connections),
            max_connections_per_bind: count(
                self.max_connections_per_bind,
                d.max_connections_per_bind,
            ),
            header_read_timeout: self
                .header_read_timeout
                .map_or(d.header_read_timeout, Duration::from_secs),
            keepalive_idle_timeout: self
                .keepalive_idle_timeout
                .map_or(d.keepalive_idle_timeout, Duration::from_secs),
            max_buffered_body_bytes: count(self.max_buffered_body_bytes, d.max_buffered_body_bytes),
        }
    }
}

/// Access log flags: one JSON line per request (see docs/observability.md). Off by default.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessLogArgs {
    /// Write a JSON access log line per request to `stdout` or to this file (appended).
    #[arg(long, value_name = "stdout|PATH")]
    pub access_log: Option<String>,

    /// The access log's fields, comma-separated, in this order (default: all). Known fields:
    /// start_time, method, path, protocol, response_code, error, bytes_received, bytes_sent,
    /// duration, upstream_service_time, x-forwarded-for, user-agent, x-request-id, authority,
    /// upstream_host, downstream_remote_address, downstream_local_address,
    /// requested_server_name, listener, route, rule, backend, attempts.
    #[arg(
        long,
        value_name = "FIELD,...",
        requires = "access_log",
        value_delimiter = ',',
        value_parser = |s: &str| s.trim().parse::<AccessLogField>()
    )]
    pub access_log_fields: Option<Vec<AccessLogField>>,
}

impl AccessLogArgs {
    /// The access log these flags ask for; `None` without `--access-log`.
    pub fn access_log(&self) -> Option<AccessLog> {
        let sink = match self.access_log.as_deref()? {
            "stdout" | "-" => AccessLogSink::Stdout,
            path => AccessLogSink::File(path.into()),
        };
        let log = AccessLog::new(sink);
        Some(match &self.access_log_fields {
            Some(fields) => log.with_fields(fields.clone()),
            None => log,
        })
    }
}

/// OpenTelemetry tracing flags (see docs/observability.md, "Tracing"). Off by default. They are
/// always accepted; a binary built without the cargo feature `otel` refuses to start when
/// `--otlp-endpoint` is given (it cannot trace), instead of silently not tracing.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct TracingArgs {
    /// Record an OpenTelemetry span per request and export it to this OTLP collector,
    /// `http://HOST:PORT` (http/protobuf adds /v1/traces to a URL without a path). Needs a build
    /// with the `otel` feature.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// How to talk to the collector: `http/protobuf` (default, port 4318) or `grpc` (port 4317).
    #[arg(long, value_name = "http/protobuf|grpc", requires = "otlp_endpoint")]
    pub otlp_protocol: Option<String>,

    /// A header sent with every export, `NAME=VALUE` (an API key). Repeatable.
    #[arg(
        long = "otlp-header",
        value_name = "NAME=VALUE",
        requires = "otlp_endpoint"
    )]
    pub otlp_headers: Vec<String>,

    /// The share of new traces recorded, 0.0 to 1.0 (default 1.0). Requests whose valid
    /// `traceparent` carries a sampling decision follow it instead.
    #[arg(long, value_name = "RATIO", requires = "otlp_endpoint")]
    pub trace_sample_ratio: Option<f64>,

    /// The `service.name` of the spans (default `pingora-gateway`).
    #[arg(long, value_name = "NAME", requires = "otlp_endpoint")]
    pub service_name: Option<String>,

    /// A resource attribute of the spans, `KEY=VALUE`. Repeatable.
    #[arg(
        long = "trace-resource-attribute",
        value_name = "KEY=VALUE",
        requires = "otlp_endpoint"
    )]
    pub trace_resource_attributes: Vec<String>,
}

impl TracingArgs {
    /// The tracing these flags ask for; `Ok(None)` without `--otlp-endpoint`.
    #[cfg(feature = "otel")]
    pub fn tracing(&self) -> Result<Option<gateway_core::Tracing>, String> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let endpoint = endpoint
            .parse()
            .map_err(|e| format!("--otlp-endpoint {endpoint:?}: {e}"))?;
        let mut t = gateway_core::Tracing::new(endpoint);
        if let Some(p) = &self.otlp_protocol {
            t.protocol = p.parse().map_err(|e| format!("--otlp-protocol: {e}"))?;
        }
        for header in &self.otlp_headers {
            let (name, value) = key_value(header, "--otlp-header")?;
            t.headers.push((
                name.parse()
                    .map_err(|e| format!("--otlp-header {header:?}: {e}"))?,
                value
                    .parse()
                    .map_err(|e| format!("--otlp-header {header:?}: {e}"))?,
            ));
        }
        if let Some(ratio) = self.trace_sample_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!(
                    "--trace-sample-ratio {ratio} is not between 0 and 1"
                ));
            }
            t.sample_ratio = ratio;
        }
        if let Some(name) = &self.service_name {
            t.service_name = name.clone();
        }
        for attr in &self.trace_resource_attributes {
            let (k, v) = key_value(attr, "--trace-resource-attribute")?;
            t.resource.push((k.to_owned(), v.to_owned()));
        }
        Ok(Some(t))
    }

    /// Turns tracing on in `gateway` when `--otlp-endpoint` is given.
    #[cfg(feature = "otel")]
    pub fn apply(&self, gateway: &gateway_core::Gateway) -> Result<(), String> {
        match self.tracing()? {
            Some(t) => gateway.set_tracing(Some(t)).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Without the `otel` feature: refuses `--otlp-endpoint` (this binary cannot trace).
    #[cfg(not(feature = "otel"))]
    pub fn apply(&self, _gateway: &gateway_core::Gateway) -> Result<(), String> {
        match &self.otlp_endpoint {
            Some(_) => Err(
                "--otlp-endpoint: this binary was built without the `otel` feature (build with \
                 `--features otel` to trace)"
                    .into(),
            ),
            None => Ok(()),
        }
    }
}

#[cfg(feature = "otel")]
fn key_value<'a>(text: &'a str, flag: &str) -> Result<(&'a str, &'a str), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{flag} {text:?} is not KEY=VALUE"))
}

/// Parses a listener port map such as `80=18080,443=18443`: Gateway listener port -> local port.
pub fn parse_port_map(text: &str) -> Result<BTreeMap<u16, u16>, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not PORT=LOCALPORT"))?;
        let from: u16 = from
            .trim()
            .parse()
            .map_err(|_| format!("{from:?} is not a port number"))?;
        let to: u16 = to
            .trim()
            .parse()
            .map_err(|_| format!("{to:?} is not a port number"))?;
        if from == 0 || to == 0 {
            return Err(format!("{pair:?}: port 0 cannot be mapped"));
        }
        if map.insert(from, to).is_some() {
            return Err(format!("port {from} is mapped twice"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps() {
        let m = parse_port_map("80=18080, 443=18443").unwrap();
        assert_eq!(m.get(&80), Some(&18080));
        assert_eq!(m.get(&443), Some(&18443));
        assert!(parse_port_map("80").is_err());
        assert!(parse_port_map("80=x").is_err());
        assert!(parse_port_map("80=1,80=2").is_err());
        assert!(parse_port_map("0=1").is_err());
        assert!(parse_port_map("").unwrap().is_empty());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        access_log: AccessLogArgs,
        #[command(flatten)]
        tracing: TracingArgs,
    }

    #[test]
    fn tracing_flags() {
        use clap::Parser;
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(none.tracing, TracingArgs::default());
        // Settings without an endpoint to export to.
        assert!(Cli::try_parse_from(["x", "--trace-sample-ratio=0.5"]).is_err());
        let gw = gateway_core::Gateway::new(gateway_core::FilterRegistry::new());
        assert!(none.tracing.apply(&gw).is_ok());
        let on = Cli::try_parse_from([
            "x",
            "--otlp-endpoint=http://127.0.0.1:4317",
            "--otlp-protocol=grpc",
            "--otlp-header=x-api-key=k=1",
            "--trace-sample-ratio=0.25",
            "--service-name=edge",
            "--trace-resource-attribute=deployment.environment.name=test",
        ])
        .unwrap();
        #[cfg(not(feature = "otel"))]
        assert!(
            on.tracing
                .apply(&gw)
                .unwrap_err()
                .contains("without the `otel` feature")
        );
        #[cfg(feature = "otel")]
        {
            let t = on.tracing.tracing().unwrap().unwrap();
            assert_eq!(t.protocol, gateway_core::OtlpProtocol::Grpc);
            assert_eq!(t.endpoint, "http://127.0.0.1:4317");
            assert_eq!(t.headers[0].0, "x-api-key");
            assert_eq!(t.headers[0].1, "k=1");
            assert_eq!(t.sample_ratio, 0.25);
            assert_eq!(t.service_name, "edge");
            assert_eq!(
                t.resource,
                [("deployment.environment.name".into(), "test".into())]
            );
            assert!(on.tracing.apply(&gw).is_ok());
            for bad in [
                "--trace-sample-ratio=2",
                "--otlp-protocol=udp",
                "--otlp-header=novalue",
            ] {
                let cli = Cli::try_parse_from(["x", "--otlp-endpoint=http://127.0.0.1:4318", bad])
                    .unwrap();
                assert!(cli.tracing.tracing().is_err(), "{bad}");
            }
            let https =
                Cli::try_parse_from(["x", "--otlp-endpoint=https://127.0.0.1:4318"]).unwrap();
            assert!(https.tracing.apply(&gw).is_err());
        }
    }

    #[test]
    fn access_log_flags() {
        use clap::Parser;
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert!(none.access_log.access_log().is_none());
        let stdout = Cli::try_parse_from(["x", "--access-log=stdout"]).unwrap();
        let log = stdout.access_log.access_log().unwrap();
        assert!(matches!(log.sink, AccessLogSink::Stdout));
        assert_eq!(log.fields, AccessLogField::ALL);
        let file = Cli::try_parse_from([
            "x",
            "--access-log=/tmp/a.log",
            "--access-log-fields=method,route,response_code",
        ])
        .unwrap();
        let log = file.access_log.access_log().unwrap();
        assert!(matches!(&log.sink, AccessLogSink::File(p) if p.as_os_str() == "/tmp/a.log"));
        assert_eq!(
            log.fields,
            [
                AccessLogField::Method,
                AccessLogField::Route,
                AccessLogField::ResponseCode
            ]
        );
        assert!(
            Cli::try_parse_from(["x", "--access-log=stdout", "--access-log-fields=nope"]).is_err()
        );
        // Fields without a log to write them to.
        assert!(Cli::try_parse_from(["x", "--access-log-fields=method"]).is_err());
    }

    #[test]
    fn limit_flags() {
        use clap::Parser;
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(none.limits.limits(), Limits::default());
        let set = Cli::try_parse_from([
            "x",
            "--max-connections=10",
            "--max-connections-per-bind=5",
            "--header-read-timeout=3",
            "--keepalive-idle-timeout=7",
            "--max-buffered-body-bytes=1024",
        ])
        .unwrap()
        .limits
        .limits();
        assert_eq!(set.max_connections, 10);
        assert_eq!(set.max_connections_per_bind, 5);
        assert_eq!(set.header_read_timeout, Duration::from_secs(3));
        assert_eq!(set.keepalive_idle_timeout, Duration::from_secs(7));
        assert_eq!(set.max_buffered_body_bytes, 1024);
        assert!(Cli::try_parse_from(["x", "--header-read-timeout=0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--max-connections=-1"]).is_err());
    }
}
