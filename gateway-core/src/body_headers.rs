//! Body-based routing: request headers derived from top-level fields of a JSON request body
//! before the route is looked up ([`crate::config::Listener::body_headers`]).
//!
//! The compiled form ([`BodyHeaders`]) lives on the listener; `proxy.rs` runs it in
//! `request_filter` between path normalisation and the route lookup. The JSON is read with a
//! serde visitor that looks only at the top-level keys asked for and skips everything else
//! without building values, so a large prompt costs one validating pass and no allocation past
//! the wanted strings.

use std::fmt;

use http::{HeaderName, HeaderValue};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::config::BodyHeader;

/// A listener's body headers, compiled: validated header names and the fields they come from.
#[derive(Debug)]
pub(crate) struct BodyHeaders {
    /// The headers set, in configuration order.
    pub(crate) names: Box<[HeaderName]>,
    /// The top-level field each of `names` comes from.
    fields: Box<[Box<str>]>,
    /// The longest body read; longer: 413.
    pub(crate) limit: usize,
}

impl BodyHeaders {
    /// Compiles `headers`; `None` when there are none (the feature is off for the listener).
    /// An entry whose header name is invalid is left out and reported in the returned list.
    pub(crate) fn compile(
        headers: &[BodyHeader],
        limit: usize,
    ) -> (Option<BodyHeaders>, Vec<String>) {
        let mut problems = Vec::new();
        let (names, fields): (Vec<HeaderName>, Vec<Box<str>>) = headers
            .iter()
            .filter_map(|h| match HeaderName::from_bytes(h.header.as_bytes()) {
                Ok(name) => Some((name, h.field.as_str().into())),
                Err(_) => {
                    problems.push(format!(
                        "body header {:?} is not a valid header name",
                        h.header
                    ));
                    None
                }
            })
            .unzip();
        let compiled = (!names.is_empty()).then(|| BodyHeaders {
            names: names.into(),
            fields: fields.into(),
            limit: limit.min(crate::proxy::MAX_BUFFERED_BODY),
        });
        (compiled, problems)
    }
}

/// Whether `content_type` is JSON: `application/json` or any `type/subtype+json`, case-insensitive,
/// parameters (`; charset=utf-8`) ignored.
pub(crate) fn is_json(content_type: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.trim();
    if subtype.is_empty() || kind.trim().is_empty() {
        return false;
    }
    (kind.trim().eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("json"))
        || (subtype.len() > 5
            && subtype.as_bytes()[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// The values of the top-level string fields `fields` of the JSON object `body`, one per field
/// in order: `None` for a field that is absent or whose value is not a string. When a key
/// repeats, its last occurrence counts (as most JSON decoders do). `Err` when `body` is not a
/// single valid JSON object (then nothing is derived).
pub(crate) fn top_level_strings<F: AsRef<str>>(
    body: &[u8],
    fields: &[F],
) -> Result<Vec<Option<String>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = de.deserialize_map(TopLevel { fields })?;
    de.end()?;
    Ok(found)
}

/// Visits the top-level object, keeping the wanted keys' string values.
struct TopLevel<'f, F> {
    fields: &'f [F],
}

impl<'de, F: AsRef<str>> Visitor<'de> for TopLevel<'_, F> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.fields.len()];
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let wanted = |f: &F| f.as_ref() == key.0;
            if !self.fields.iter().any(wanted) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value_seed(StringOrSkip)?;
            for (slot, _) in found.iter_mut().zip(self.fields).filter(|(_, f)| wanted(f)) {
                slot.clone_from(&value);
            }
        }
        Ok(found)
    }
}

/// A key, borrowed from the body when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_owned().into()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A value kept when it is a string, skipped (validated, not built) otherwise.
struct StringOrSkip;

impl<'de> DeserializeSeed<'de> for StringOrSkip {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringOrSkip {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// The header values `headers` derive from `body`: `(index into names, value)` for each entry
/// whose field is a top-level string that is a valid header value. Empty when the body is not
/// a JSON object.
pub(crate) fn derive(headers: &BodyHeaders, body: &[u8]) -> Vec<(usize, HeaderValue)> {
    match top_level_strings(body, &headers.fields) {
        Ok(found) => found
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, HeaderValue::from_str(&v?).ok()?)))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "request body is not a JSON object: no body headers");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str, field: &str) -> Option<String> {
        top_level_strings(body.as_bytes(), &[field]).ok()?.pop()?
    }

    #[test]
    fn reads_a_top_level_string() {
        assert_eq!(
            one(r#"{"model":"llama","messages":[]}"#, "model").as_deref(),
            Some("llama")
        );
        assert_eq!(one(r#"{"messages":[]}"#, "model"), None);
    }

    #[test]
    fn nested_fields_of_the_same_name_do_not_count() {
        let body = r#"{"messages":[{"model":"inner","content":"x"}],"meta":{"model":"deep"}}"#;
        assert_eq!(one(body, "model"), None);
        let body = r#"{"meta":{"model":"deep","a":[1,{"model":"x"}]},"model":"top"}"#;
        assert_eq!(one(body, "model").as_deref(), Some("top"));
    }

    #[test]
    fn escaped_strings_and_keys_are_unescaped() {
        assert_eq!(
            one(r#"{"model":"a\"b\\c\u0041\/"}"#, "model").as_deref(),
            Some("a\"b\\cA/")
        );
        assert_eq!(one(r#"{"mo\u0064el":"x"}"#, "model").as_deref(), Some("x"));
    }

    #[test]
    fn non_string_values_give_nothing() {
        for v in ["1", "1.5", "-3", "true", "null", "[\"a\"]", "{\"a\":\"b\"}"] {
            assert_eq!(one(&format!(r#"{{"model":{v}}}"#), "model"), None, "{v}");
        }
    }

    #[test]
    fn the_last_duplicate_counts() {
        assert_eq!(
            one(r#"{"model":"a","model":"b"}"#, "model").as_deref(),
            Some("b")
        );
        assert_eq!(one(r#"{"model":"a","model":7}"#, "model"), None);
    }

    #[test]
    fn whitespace_is_allowed_anywhere_json_allows_it() {
        let body = "\n\t { \"x\" : [ 1 , 2 ] ,\r\n \"model\"\t:\n\"m\" } \n";
        assert_eq!(one(body, "model").as_deref(), Some("m"));
    }

    #[test]
    fn invalid_json_and_non_objects_are_errors() {
        for body in [
            "",
            "{",
            r#"{"model":"a""#,
            r#"{"model":"a"} x"#,
            r#"{"model":"a",}"#,
            r#"{"model":"a","x":[1,}"#,
            r#"["model","a"]"#,
            r#""model""#,
            "null",
        ] {
            assert!(
                top_level_strings(body.as_bytes(), &["model"]).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn several_fields_and_one_field_for_two_headers() {
        let got = top_level_strings(br#"{"b":"2","a":"1","c":3}"#, &["a", "b", "c", "a"]).unwrap();
        assert_eq!(
            got,
            [Some("1".into()), Some("2".into()), None, Some("1".into())]
        );
    }

    #[test]
    fn derive_keeps_only_valid_header_values() {
        let (compiled, problems) = BodyHeaders::compile(
            &[
                BodyHeader::new("x-model", "model"),
                BodyHeader::new("x-user", "user"),
                BodyHeader::new("bad name", "model"),
            ],
            1 << 30,
        );
        assert_eq!(problems.len(), 1);
        let compiled = compiled.unwrap();
        assert_eq!(compiled.names.len(), 2);
        assert_eq!(compiled.limit, crate::proxy::MAX_BUFFERED_BODY);
        let got = derive(&compiled, br#"{"model":"llama","user":"a\nb"}"#);
        assert_eq!(got, [(0, HeaderValue::from_static("llama"))]);
        assert!(derive(&compiled, b"not json").is_empty());
        assert!(BodyHeaders::compile(&[], 10).0.is_none());
    }

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=y",
            "application/vnd.api+json",
            "text/x+JSON",
        ] {
            assert!(is_json(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/jsonx",
            "application/x-json",
            "json",
            "application/",
            "/json",
            "application/+json",
            "multipart/form-data; boundary=json",
        ] {
            assert!(!is_json(ct.as_bytes()), "{ct}");
        }
    }
}
