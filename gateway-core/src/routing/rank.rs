//! The precedence of one compiled match: a small `Ord` value, so the rule that takes a request is
//! the greatest rank among the matches that hold.
//!
//! Computed once when the router is built; the lookup walks candidates already sorted by rank.

use std::cmp::Reverse;

/// How specific a path condition is. Exact beats regular expression beats prefix; within a kind,
/// the longer path (or pattern) wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathRank {
    /// `PathPrefix` with this many bytes (trailing slashes removed; `/` counts 0).
    Prefix(usize),
    /// `RegularExpression` with a pattern of this many bytes.
    RegularExpression(usize),
    /// `Exact` with this many bytes.
    Exact(usize),
}

/// The precedence of one match of one rule, compared field by field (greater wins):
/// path, method present, number of header matches, number of query parameter matches, then the
/// route's age order (older first, then `namespace/name` alphabetical), rule index and match
/// index (earlier first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchRank {
    /// The path condition.
    pub path: PathRank,
    /// Whether the match requires a method.
    pub method: bool,
    /// The number of header conditions.
    pub headers: usize,
    /// The number of query parameter conditions.
    pub query_params: usize,
    /// The position of the route when the listener's routes are sorted by (`created`,
    /// `namespace/name`, index): smaller wins.
    pub route_order: Reverse<usize>,
    /// The rule index in the route: smaller wins.
    pub rule: Reverse<usize>,
    /// The match index in the rule: smaller wins.
    pub match_index: Reverse<usize>,
}

/// The field of [`MatchRank`] that decides between two ranks: the first one, in comparison
/// order, where they differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankField {
    /// The path condition's kind or length.
    Path,
    /// One requires a method, the other does not.
    Method,
    /// The number of header conditions.
    Headers,
    /// The number of query parameter conditions.
    QueryParams,
    /// The route's age, then `namespace/name`, then position.
    RouteOrder,
    /// The rule index within the route.
    Rule,
    /// The match index within the rule.
    MatchIndex,
}

impl MatchRank {
    /// Which field decides between `self` and `other`; `None` when they are equal. Follows the
    /// derived `Ord`, field by field.
    pub fn decisive_field(&self, other: &MatchRank) -> Option<RankField> {
        if self.path != other.path {
            Some(RankField::Path)
        } else if self.method != other.method {
            Some(RankField::Method)
        } else if self.headers != other.headers {
            Some(RankField::Headers)
        } else if self.query_params != other.query_params {
            Some(RankField::QueryParams)
        } else if self.route_order != other.route_order {
            Some(RankField::RouteOrder)
        } else if self.rule != other.rule {
            Some(RankField::Rule)
        } else if self.match_index != other.match_index {
            Some(RankField::MatchIndex)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(path: PathRank) -> MatchRank {
        MatchRank {
            path,
            method: false,
            headers: 0,
            query_params: 0,
            route_order: Reverse(0),
            rule: Reverse(0),
            match_index: Reverse(0),
        }
    }

    #[test]
    fn decisive_field_follows_the_order() {
        let base = rank(PathRank::Prefix(3));
        assert_eq!(base.decisive_field(&base), None);
        let cases = [
            (
                MatchRank {
                    path: PathRank::Exact(1),
                    rule: Reverse(5),
                    ..base
                },
                RankField::Path,
            ),
            (
                MatchRank {
                    method: true,
                    headers: 0,
                    ..base
                },
                RankField::Method,
            ),
            (
                MatchRank {
                    headers: 1,
                    query_params: 0,
                    ..base
                },
                RankField::Headers,
            ),
            (
                MatchRank {
                    query_params: 1,
                    ..base
                },
                RankField::QueryParams,
            ),
            (
                MatchRank {
                    route_order: Reverse(2),
                    rule: Reverse(0),
                    ..base
                },
                RankField::RouteOrder,
            ),
            (
                MatchRank {
                    rule: Reverse(1),
                    ..base
                },
                RankField::Rule,
            ),
            (
                MatchRank {
                    match_index: Reverse(1),
                    ..base
                },
                RankField::MatchIndex,
            ),
        ];
        for (other, field) in cases {
            assert_eq!(base.decisive_field(&other), Some(field));
            assert_eq!(other.decisive_field(&base), Some(field));
        }
    }

    #[test]
    fn path_kinds_order() {
        assert!(PathRank::Exact(1) > PathRank::RegularExpression(100));
        assert!(PathRank::RegularExpression(1) > PathRank::Prefix(100));
        assert!(PathRank::Prefix(5) > PathRank::Prefix(4));
        assert!(PathRank::Exact(5) > PathRank::Exact(4));
    }

    #[test]
    fn fields_order() {
        let base = rank(PathRank::Prefix(3));
        let longer = rank(PathRank::Prefix(4));
        let method = MatchRank {
            method: true,
            headers: 0,
            ..base
        };
        let headers = MatchRank { headers: 2, ..base };
        let query = MatchRank {
            query_params: 5,
            ..base
        };
        assert!(
            longer
                > MatchRank {
                    method: true,
                    headers: 9,
                    query_params: 9,
                    ..base
                }
        );
        assert!(
            method
                > MatchRank {
                    headers: 9,
                    query_params: 9,
                    ..base
                }
        );
        assert!(
            headers
                > MatchRank {
                    headers: 1,
                    query_params: 9,
                    ..base
                }
        );
        assert!(
            query
                > MatchRank {
                    route_order: Reverse(0),
                    query_params: 4,
                    ..base
                }
        );
        assert!(
            base > MatchRank {
                route_order: Reverse(1),
                ..base
            }
        );
        assert!(
            MatchRank {
                route_order: Reverse(1),
                ..base
            } > MatchRank {
                route_order: Reverse(1),
                rule: Reverse(1),
                ..base
            }
        );
        assert!(
            MatchRank {
                rule: Reverse(1),
                ..base
            } > MatchRank {
                rule: Reverse(1),
                match_index: Reverse(1),
                ..base
            }
        );
    }
}
