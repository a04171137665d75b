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
