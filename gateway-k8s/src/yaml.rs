//! Splitting multi-document YAML and parsing each document on its own, so one bad document does
//! not hide the others.

use serde_json::Value;

use std::borrow::Cow;

/// One document of a YAML stream: its index in the stream and its parse result.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Document {
    /// Zero-based index of the document in its stream.
    pub index: usize,
    /// The parsed value, or the parser's message. `Ok(None)` is an empty document.
    pub value: Result<Option<Value>, String>,
}

/// The text of one document of a YAML stream, not parsed yet.
#[derive(Debug)]
pub(crate) struct Chunk<'a> {
    /// Zero-based index of the document in its stream.
    pub index: usize,
    /// The document's text: a slice of the stream, unless the document starts on its `---` line.
    pub text: Cow<'a, str>,
}

/// Splits `text` at document markers (`---` at the start of a line; `...` ends a document) and
/// parses every document. A comment-only preamble before the first `---` is not a document.
#[cfg(test)]
pub(crate) fn documents(text: &str) -> Vec<Document> {
    split(text)
        .into_iter()
        .map(|chunk| Document {
            index: chunk.index,
            value: parse(&chunk.text),
        })
        .collect()
}

/// Splits `text` into its documents without parsing them (see [`documents`]). The chunks borrow
/// from `text`: nothing is copied but a document that starts on its `---` line.
pub(crate) fn split(text: &str) -> Vec<Chunk<'_>> {
    /// Where the current document starts, and its first line when it is on the marker line.
    struct Open<'a> {
        head: Option<&'a str>,
        start: usize,
    }
    /// Ends the open document at `end`.
    fn close<'a>(text: &'a str, open: Open<'a>, end: usize, chunks: &mut Vec<Cow<'a, str>>) {
        let body = &text[open.start..end];
        chunks.push(match open.head {
            None => Cow::Borrowed(body),
            Some(head) => Cow::Owned(format!("{head}\n{body}")),
        });
    }
    let mut chunks: Vec<Cow<'_, str>> = Vec::new();
    let mut open = Some(Open {
        head: None,
        start: 0,
    });
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line_start = offset;
        offset += raw.len();
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = document_start(line) {
            if let Some(current) = open.take() {
                close(text, current, line_start, &mut chunks);
            }
            open = Some(Open {
                head: (!rest.trim().is_empty()).then_some(rest),
                start: offset,
            });
        } else if line.trim_end() == "..."
            && let Some(current) = open.take()
        {
            close(text, current, line_start, &mut chunks);
        }
    }
    if let Some(current) = open.take() {
        close(text, current, text.len(), &mut chunks);
    }
    // The text before the first marker is a document only when it holds more than comments.
    if chunks.len() > 1 && is_blank(&chunks[0]) {
        chunks.remove(0);
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, text)| Chunk { index, text })
        .collect()
}
/// If `line` starts a document, the text after the marker.
fn document_start(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("---")?;
    if rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t') {
        Some(rest)
    } else {
        None
    }
}

/// Whether a chunk holds only whitespace and comments.
fn is_blank(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// Parses one document; `Ok(None)` when it is empty (blank, comments only, or `null`).
pub(crate) fn parse(chunk: &str) -> Result<Option<Value>, String> {
    if is_blank(chunk) {
        return Ok(None);
    }
    match serde_saphyr::from_str_with_options::<Value>(chunk, options()) {
        Ok(Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(err) => Err(err.to_string()),
    }
}

/// Parses one document straight into `T` (no intermediate [`Value`]).
pub(crate) fn parse_typed<T: serde::de::DeserializeOwned>(chunk: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options::<T>(chunk, options()).map_err(|e| e.to_string())
}

/// The parser's options: YAML 1.2 booleans only (`y`, `n`, `on`, `no` stay strings: names,
/// label values).
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// The `apiVersion` and `kind` of a document, found without parsing it: from its top-level
/// lines `apiVersion: VALUE` and `kind: VALUE` (at the start of a line, each once, the value a
/// plain or quoted word of letters, digits, `.`, `/`, `-`, `_`, then nothing but a comment).
/// `None` when the document is written otherwise (a flow mapping, a value on the next line,
/// a repeated key, ...): the caller then parses it in full.
pub(crate) fn type_meta(chunk: &str) -> Option<(&str, &str)> {
    let mut api_version = None;
    let mut kind = None;
    for line in chunk.lines() {
        let (slot, rest) = if let Some(rest) = line.strip_prefix("apiVersion:") {
            (&mut api_version, rest)
        } else if let Some(rest) = line.strip_prefix("kind:") {
            (&mut kind, rest)
        } else if line.starts_with(['{', '[', '?', '&', '!', '*', '"', '\'']) {
            // The document is a flow collection, a complex key, or tagged / anchored / quoted
            // at the top level: not a plain block mapping.
            return None;
        } else {
            continue;
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(word(rest)?);
    }
    Some((api_version?, kind?))
}

/// The value of a `key: value` line after the colon, if it is a simple word.
fn word(rest: &str) -> Option<&str> {
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let (value, tail) = match rest.chars().next()? {
        quote @ ('"' | '\'') => {
            let inner = &rest[1..];
            let end = inner.find(quote)?;
            (&inner[..end], &inner[end + 1..])
        }
        _ => {
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        }
    };
    let simple = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_');
    let tail = tail.trim_start_matches([' ', '\t']);
    (!value.is_empty() && value.chars().all(simple) && (tail.is_empty() || tail.starts_with('#')))
        .then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_numbers_documents() {
        let docs =
            documents("# preamble\n---\na: 1\n---\n\n---\nb: [\n--- # c\nc: 3\n...\nignored\n");
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0].index, 0);
        assert_eq!(
            docs[0].value.as_ref().ok(),
            Some(&Some(serde_json::json!({"a": 1})))
        );
        assert!(matches!(docs[1].value, Ok(None)));
        assert!(docs[2].value.is_err());
        assert_eq!(
            docs[3].value.as_ref().ok(),
            Some(&Some(serde_json::json!({"c": 3})))
        );
    }

    #[test]
    fn single_document_without_marker() {
        let docs = documents("kind: Namespace\n");
        assert_eq!(docs.len(), 1);
        assert!(matches!(docs[0].value, Ok(Some(_))));
    }

    #[test]
    fn yaml_11_booleans_are_strings() {
        let docs = documents("a: n\nb: yes\nc: true\n");
        assert_eq!(
            docs[0].value.as_ref().ok(),
            Some(&Some(serde_json::json!({"a": "n", "b": "yes", "c": true})))
        );
    }

    #[test]
    fn type_meta_reads_plain_top_level_lines_only() {
        let doc = "# c\napiVersion: gateway.networking.k8s.io/v1\nkind: \"HTTPRoute\" # x\nmetadata:\n  kind: no\n";
        assert_eq!(
            type_meta(doc),
            Some(("gateway.networking.k8s.io/v1", "HTTPRoute"))
        );
        // Anything unusual is left to the full parse.
        for doc in [
            "{apiVersion: v1, kind: Service}\n",
            "apiVersion: v1\nkind: Service\nkind: Secret\n",
            "apiVersion: v1\nkind:\n  Service\n",
            "apiVersion: v1\nkind: [unclosed\n",
            "apiVersion: v1\nkind: Service x\n",
            "apiVersion: v1\nkind:Service\n",
            "kind: Service\n",
        ] {
            assert_eq!(type_meta(doc), None, "{doc}");
        }
    }

    #[test]
    fn marker_like_text_is_content() {
        let docs = documents("a: '---x'\n---x: 1\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0].value.as_ref().ok(),
            Some(&Some(serde_json::json!({"a": "---x", "---x": 1})))
        );
    }
}
