//! Request paths and the path patterns of [`ConnectionConfig::paths`],
//! defined once: the broker checks a service catalog with them, the executor
//! a flow's service paths, and the gateway enforces them on every request.
//!
//! A path is `/` followed by segments separated by `/`. A segment holds RFC
//! 3986 path characters ([`is_pchar`]) and `%XX` escapes, and no escape
//! decodes to `/`, `\`, a control character or NUL: an upstream that decodes
//! them would see another path than the one matched ([`check_segment`]).
//!
//! A pattern ([`PathPattern`]) is `/` alone (the root) or `/` followed by
//! segments: a literal segment matches itself exactly (no decoding, no case
//! folding), `*` matches exactly one non-empty segment, and `**`, allowed
//! only as the last segment, matches one or more further segments, possibly
//! empty: `/files/**` matches `/files/` and `/files/a/b`, not `/files`. A
//! literal segment is never empty, `.` or `..`.
//!
//! [`ConnectionConfig::paths`]: super::ConnectionConfig::paths

/// Whether `b` may stand as it is in a path segment: an RFC 3986 pchar
/// (unreserved, sub-delims, `:` or `@`) other than `%`, which only starts
/// an escape.
pub fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// What is wrong with a path segment or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPart {
    /// A byte that is not allowed as it is, or a `%` that starts no `%XX`
    /// escape.
    Character,
    /// A `%XX` escape of a control character or NUL, or (in a segment) of
    /// `/` or `\`.
    Escape,
}

/// Checks one path segment: path characters and `%XX` escapes, no escape
/// of `/`, `\`, a control character or NUL.
pub fn check_segment(seg: &str) -> Result<(), BadPart> {
    check_escaped(seg, false)
}

/// Checks a query (the text after the first `?`): what a segment may hold,
/// plus `/`, `?` and escapes of `/` and `\`.
pub fn check_query(query: &str) -> Result<(), BadPart> {
    check_escaped(query, true)
}

fn hex(b: Option<&u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_escaped(s: &str, query: bool) -> Result<(), BadPart> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) else {
                return Err(BadPart::Character);
            };
            let d = h << 4 | l;
            // Encoded separators and controls would let an upstream that
            // decodes them see a different path than the one matched.
            if (!query && (d == b'/' || d == b'\\')) || d < 0x20 || d == 0x7f {
                return Err(BadPart::Escape);
            }
            i += 3;
        } else if is_pchar(c) || (query && (c == b'/' || c == b'?')) {
            i += 1;
        } else {
            return Err(BadPart::Character);
        }
    }
    Ok(())
}

/// Whether a segment means "this directory" or "its parent": `.` or `..`,
/// also when written with `%2E`.
pub fn is_dot_segment(seg: &str) -> bool {
    let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

/// Why a path pattern is not one (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{pattern:?} must start with '/' (e.g. \"/items/*\")")]
    NotAbsolute { pattern: String },
    #[error("{pattern:?}: '**' may only be the last segment")]
    RestNotLast { pattern: String },
    #[error("{pattern:?} ends with '/': write \"{}\" or \"{pattern}*\"", .pattern.trim_end_matches('/'))]
    TrailingSlash { pattern: String },
    #[error("{pattern:?} has an empty segment ('//')")]
    EmptySegment { pattern: String },
    #[error("{pattern:?}: '*' must be a whole segment (\"/a/*\", not \"/a*\")")]
    PartialWildcard { pattern: String },
    #[error("{pattern:?} has a '.' or '..' segment")]
    DotSegment { pattern: String },
    #[error("{pattern:?}: segment {segment:?} has characters a URL path does not allow (no query, no braces): use %XX")]
    BadCharacter { pattern: String, segment: String },
    #[error("{pattern:?}: segment {segment:?} escapes '/', '\\', a control character or NUL, which the gateway refuses in a path: write the segment without that escape")]
    BadEscape { pattern: String, segment: String },
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
}

/// A parsed path pattern (`/items/*`, `/models/**`, `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segs: Vec<Seg>,
    /// Ends in `**`: one or more further segments.
    rest: bool,
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<PathPattern, PatternError> {
        let owned = || pattern.to_owned();
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(PatternError::NotAbsolute { pattern: owned() });
        };
        if body.is_empty() {
            // The root: the one path whose only segment is empty.
            return Ok(PathPattern {
                segs: vec![Seg::Lit(String::new())],
                rest: false,
            });
        }
        let parts: Vec<&str> = body.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, seg) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match *seg {
                "*" => segs.push(Seg::One),
                "**" if last => rest = true,
                "**" => return Err(PatternError::RestNotLast { pattern: owned() }),
                "" if last => return Err(PatternError::TrailingSlash { pattern: owned() }),
                "" => return Err(PatternError::EmptySegment { pattern: owned() }),
                s if s.contains('*') => {
                    return Err(PatternError::PartialWildcard { pattern: owned() })
                }
                s if is_dot_segment(s) => {
                    return Err(PatternError::DotSegment { pattern: owned() })
                }
                s => match check_segment(s) {
                    Ok(()) => segs.push(Seg::Lit(s.to_owned())),
                    Err(BadPart::Character) => {
                        return Err(PatternError::BadCharacter {
                            pattern: owned(),
                            segment: s.to_owned(),
                        })
                    }
                    Err(BadPart::Escape) => {
                        return Err(PatternError::BadEscape {
                            pattern: owned(),
                            segment: s.to_owned(),
                        })
                    }
                },
            }
        }
        Ok(PathPattern { segs, rest })
    }

    /// Whether `path` (starting with `/`, without a query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let segs: Vec<Option<&str>> = body.split('/').map(Some).collect();
        self.matches_segments(&segs)
    }

    /// Whether a path given as its segments (after the leading `/`)
    /// matches, where a `None` segment is not known yet but will be exactly
    /// one non-empty segment (a placeholder's value): only `*` or `**` can
    /// match it.
    pub fn matches_segments(&self, segs: &[Option<&str>]) -> bool {
        let count_ok = if self.rest {
            segs.len() > self.segs.len()
        } else {
            segs.len() == self.segs.len()
        };
        count_ok
            && self.segs.iter().zip(segs).all(|(p, s)| match (p, s) {
                (Seg::One, Some(s)) => !s.is_empty(),
                (Seg::One, None) => true,
                (Seg::Lit(l), Some(s)) => l == s,
                (Seg::Lit(_), None) => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn patterns_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("/items/*", "/items/1", true),
            ("/items/*", "/items/a%2Fb", true),
            ("/items/*", "/items/", false),
            ("/items/*", "/items", false),
            ("/items/*", "/items/1/2", false),
            ("/items/*", "/Items/1", false),
            ("/items/*", "items/1", false),
            ("/a/*/c", "/a/b/c", true),
            ("/a/*/c", "/a//c", false),
            ("/models/**", "/models/a", true),
            ("/models/**", "/models/a/b/c", true),
            ("/models/**", "/models/", true),
            ("/models/**", "/models", false),
            ("/models/**", "/modelsx/a", false),
            ("/models/**", "/w/a", false),
            ("/**", "/", true),
            ("/**", "/x/y", true),
            ("/", "/", true),
            ("/", "/x", false),
            ("/v1/status", "/v1/status", true),
            ("/v1/status", "/v1/status/", false),
            ("/search", "/searchx", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(matches(pattern, path), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn placeholder_segments_match_only_wildcards() {
        let p = |s: &str| PathPattern::parse(s).unwrap();
        assert!(p("/items/*").matches_segments(&[Some("items"), None]));
        assert!(p("/items/**").matches_segments(&[Some("items"), None, Some("raw")]));
        assert!(!p("/items/42").matches_segments(&[Some("items"), None]));
        assert!(!p("/items/*").matches_segments(&[None, Some("1")]));
        assert!(p("/*/*").matches_segments(&[None, Some("1")]));
        assert!(!p("/").matches_segments(&[None]));
        assert!(p("/").matches_segments(&[Some("")]));
    }

    #[test]
    fn bad_patterns_say_why() {
        let cases: &[(&str, &str)] = &[
            ("items", "\"items\" must start with '/' (e.g. \"/items/*\")"),
            ("", "\"\" must start with '/' (e.g. \"/items/*\")"),
            ("/a/**/b", "\"/a/**/b\": '**' may only be the last segment"),
            ("/**/**", "\"/**/**\": '**' may only be the last segment"),
            ("/a*", "\"/a*\": '*' must be a whole segment (\"/a/*\", not \"/a*\")"),
            ("/a/../b", "\"/a/../b\" has a '.' or '..' segment"),
            ("/a/%2E%2e", "\"/a/%2E%2e\" has a '.' or '..' segment"),
            ("/a?b", "\"/a?b\": segment \"a?b\" has characters a URL path does not allow (no query, no braces): use %XX"),
            ("/a/b c", "\"/a/b c\": segment \"b c\" has characters a URL path does not allow (no query, no braces): use %XX"),
            ("/{id}", "\"/{id}\": segment \"{id}\" has characters a URL path does not allow (no query, no braces): use %XX"),
            ("/a%zz", "\"/a%zz\": segment \"a%zz\" has characters a URL path does not allow (no query, no braces): use %XX"),
            ("/a%2Fb", "\"/a%2Fb\": segment \"a%2Fb\" escapes '/', '\\', a control character or NUL, which the gateway refuses in a path: write the segment without that escape"),
            ("/a/", "\"/a/\" ends with '/': write \"/a\" or \"/a/*\""),
            ("/a//b", "\"/a//b\" has an empty segment ('//')"),
        ];
        for (pattern, want) in cases {
            assert_eq!(
                PathPattern::parse(pattern).unwrap_err().to_string(),
                *want,
                "{pattern}"
            );
        }
    }

    #[test]
    fn segments_and_queries() {
        for ok in ["a", "a%20b", "", "c:d@e", "f;g=h,i+j~k", "%2e"] {
            assert_eq!(check_segment(ok), Ok(()), "{ok:?}");
        }
        let bad = [
            ("a b", BadPart::Character),
            ("a/b", BadPart::Character),
            ("a?b", BadPart::Character),
            ("a\\b", BadPart::Character),
            ("\u{e4}", BadPart::Character),
            ("a%", BadPart::Character),
            ("a%2", BadPart::Character),
            ("a%zz", BadPart::Character),
            ("a%2fb", BadPart::Escape),
            ("a%5Cb", BadPart::Escape),
            ("a%00", BadPart::Escape),
            ("a%0d%0a", BadPart::Escape),
            ("a%7f", BadPart::Escape),
        ];
        for (seg, want) in bad {
            assert_eq!(check_segment(seg), Err(want), "{seg:?}");
        }
        assert_eq!(check_query("x=1&y=/z?"), Ok(()));
        assert_eq!(check_query("p=a%2Fb%5c"), Ok(()));
        assert_eq!(check_query("b c"), Err(BadPart::Character));
        assert_eq!(check_query("%01"), Err(BadPart::Escape));
        for dot in [".", "..", "%2e", "%2E.", ".%2e"] {
            assert!(is_dot_segment(dot), "{dot}");
        }
        for not in ["...", ".a", "%2e%2e%2e", ""] {
            assert!(!is_dot_segment(not), "{not}");
        }
    }
}
