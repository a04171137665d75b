//! A small reader of the Prometheus text exposition format (version 0.0.4), enough to pick
//! gauges out of a model server's `/metrics`.
//!
//! Written here rather than taken from a crate: the scraper reads every endpoint every 50 ms
//! and needs a handful of series out of pages that are mostly histogram buckets, so
//! [`samples`] borrows from the text, allocates nothing per line, and lets the caller skip a
//! line after comparing its name; label values are unescaped only when asked for. (The
//! `prometheus-parse` crate builds a `HashMap` of labels and a timestamp for every sample and
//! pulls in `regex` and `chrono`.)
//!
//! Accepted: `# HELP`/`# TYPE`/other comment lines (skipped), blank lines, and sample lines
//! `name[{label="value",...}] value [timestamp]` with the escapes `\\`, `\"` and `\n` in label
//! values and the values `NaN`, `+Inf`, `-Inf`. A malformed line yields an error for that line
//! only; the rest of the page is still read.

use std::borrow::Cow;

/// One sample line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The metric name (for histograms, including `_bucket`/`_sum`/`_count`).
    pub name: &'a str,
    /// The text between `{` and `}` (empty without labels); read with [`Self::label`].
    labels: &'a str,
    /// The sample value.
    pub value: f64,
    /// The optional timestamp in milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// A malformed sample line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed metrics line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl<'a> Sample<'a> {
    /// The value of label `key`, unescaped (borrowed when it has no escapes); `None` when the
    /// sample has no such label.
    pub fn label(&self, key: &str) -> Option<Cow<'a, str>> {
        self.labels_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unescape(v))
    }

    /// The raw `(name, escaped value)` pairs.
    fn labels_iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut rest = self.labels;
        std::iter::from_fn(move || {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            let after = rest[eq + 1..].trim_start();
            let body = after.strip_prefix('"')?;
            let end = closing_quote(body)?;
            let value = &body[..end];
            rest = &body[end + 1..];
            Some((key, value))
        })
    }
}

/// The index of the closing `"` in `s` (which starts after the opening one).
fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn unescape(v: &str) -> Cow<'_, str> {
    if !v.contains('\\') {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The samples of an exposition page, in order (comments and blank lines skipped).
pub fn samples(text: &str) -> impl Iterator<Item = Result<Sample<'_>, ParseError>> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            None
        } else {
            Some(parse_line(line).map_err(|reason| ParseError {
                line: i + 1,
                reason,
            }))
        }
    })
}

fn parse_line(line: &str) -> Result<Sample<'_>, &'static str> {
    let b = line.as_bytes();
    let valid_first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    if !valid_first(b[0]) {
        return Err("metric name must start with a letter, '_' or ':'");
    }
    let name_end = b
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b':'))
        .unwrap_or(b.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = "";
    if let Some(after) = rest.strip_prefix('{') {
        // Find the closing brace outside quoted values.
        let ab = after.as_bytes();
        let mut i = 0;
        let mut close = None;
        while i < ab.len() {
            match ab[i] {
                b'"' => match closing_quote(&after[i + 1..]) {
                    Some(end) => i += end + 2,
                    None => return Err("unterminated label value"),
                },
                b'}' => {
                    close = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let close = close.ok_or("missing '}'")?;
        labels = &after[..close];
        rest = &after[close + 1..];
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value).ok_or("invalid value")?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(t.parse::<i64>().map_err(|_| "invalid timestamp")?),
        None => None,
    };
    if fields.next().is_some() {
        return Err("trailing text after the timestamp");
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_timestamps() {
        let text = "# HELP x help\n# TYPE x gauge\n\nx 1\n\
                    y{a=\"1\",b=\"with \\\"quote\\\", comma and } brace\"} 2.5e-1 1700000000000\n\
                    z{le=\"+Inf\",} +Inf\n  w NaN\n";
        let s: Vec<_> = samples(text).collect::<Result<_, _>>().unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].name, s[0].value, s[0].label("a")), ("x", 1.0, None));
        assert_eq!(s[1].name, "y");
        assert_eq!(s[1].value, 0.25);
        assert_eq!(s[1].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s[1].label("a").as_deref(), Some("1"));
        assert_eq!(
            s[1].label("b").as_deref(),
            Some("with \"quote\", comma and } brace")
        );
        assert_eq!(s[2].label("le").as_deref(), Some("+Inf"));
        assert!(s[2].value.is_infinite());
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn malformed_lines_are_errors_alone() {
        let text =
            "good 1\n{a=\"b\"} 1\nbad{a=\"b\" 1\nbad2{a=\"b\"}1\nbad3 one\nbad4 1 2 3\nok 2\n";
        let results: Vec<_> = samples(text).collect();
        assert_eq!(results.len(), 7);
        assert!(results[0].is_ok());
        for (i, r) in results.iter().enumerate().take(6).skip(1) {
            assert_eq!(r.as_ref().unwrap_err().line, i + 1, "{r:?}");
        }
        assert_eq!(results[6].as_ref().unwrap().value, 2.0);
    }
}
