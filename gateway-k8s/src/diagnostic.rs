//! Non-fatal problems found while reading or translating resources.

use std::fmt;

/// A problem with one input document or object that did not stop the load or translation.
///
/// Produced by [`crate::Resources::parse_yaml`] (unparseable documents, unknown kinds, duplicate
/// objects), by the file source (unreadable files) and by the translator (objects it had to skip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is: a file path or another origin label given by the caller.
    pub origin: String,
    /// The zero-based index of the YAML document in its file, when the problem is tied to one.
    pub document: Option<usize>,
    /// What is wrong, for humans.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about document `document` of `origin`.
    pub fn document(origin: &str, document: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            origin: origin.to_string(),
            document: Some(document),
            message: message.into(),
        }
    }

    /// A diagnostic about `origin` as a whole (e.g. a file that cannot be read).
    pub fn origin(origin: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            origin: origin.to_string(),
            document: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(index) => write!(f, "{} (document {}): {}", self.origin, index, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_origin_and_document() {
        let d = Diagnostic::document("a.yaml", 2, "bad");
        assert_eq!(d.to_string(), "a.yaml (document 2): bad");
        assert_eq!(
            Diagnostic::origin("b.yaml", "gone").to_string(),
            "b.yaml: gone"
        );
    }
}
