//! `explain` for the example gateways: the admin endpoint's `/explain` query parameters and the
//! `file-gateway explain` subcommand, both turned into a [`gateway_core::ExplainRequest`].

use std::net::SocketAddr;

use gateway_core::ExplainRequest;

/// Parses a `name:value` header argument (the value may contain `:`; spaces around both are
/// trimmed).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header {text:?} is not NAME:VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("header {text:?} has an empty name"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// The request described by the query string of `GET /explain?...`:
/// `method`, `host`, `path` (may hold `?query`, percent-encoded), `header=name:value`
/// (repeatable), `query=name=value` (repeatable, appended to the path's query), `port`, `bind`.
/// An unknown or malformed parameter is an error (the admin endpoint answers 400 with it).
pub fn request_from_query(query: &str) -> Result<ExplainRequest, String> {
    let mut req = ExplainRequest::default();
    let mut extra_query = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "method" => req.method = value.into_owned(),
            "host" => req.host = value.into_owned(),
            "path" => req.path = value.into_owned(),
            "header" => req.headers.push(parse_header(&value)?),
            "query" => extra_query.push(value.into_owned()),
            "port" => {
                req.port = Some(
                    value
                        .parse()
                        .map_err(|_| format!("port {value:?} is not a port number"))?,
                )
            }
            "bind" => {
                req.bind = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|_| format!("bind {value:?} is not an IP:PORT address"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (known: method, host, path, header, query, port, bind)"
                ));
            }
        }
    }
    append_query(&mut req.path, &extra_query);
    Ok(req)
}

/// Appends `name=value` pairs to the query of `path`.
pub fn append_query(path: &mut String, pairs: &[String]) {
    for pair in pairs {
        if path.is_empty() {
            path.push('/');
        }
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(pair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let req = request_from_query(
            "method=POST&host=a.example.com&path=%2Fx%3Fa%3D1&header=x-v:%201&header=y:a:b&query=b=2&port=8080",
        )
        .unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.host, "a.example.com");
        assert_eq!(req.path, "/x?a=1&b=2");
        assert_eq!(
            req.headers,
            vec![("x-v".into(), "1".into()), ("y".into(), "a:b".into())]
        );
        assert_eq!(req.port, Some(8080));
        let req = request_from_query("query=q=1&bind=127.0.0.1:80").unwrap();
        assert_eq!(req.path, "/?q=1");
        assert_eq!(req.bind, Some("127.0.0.1:80".parse().unwrap()));
        for bad in [
            "port=x",
            "port=70000",
            "header=novalue",
            "header=:v",
            "bind=x",
            "nope=1",
        ] {
            assert!(request_from_query(bad).is_err(), "{bad}");
        }
    }
}
