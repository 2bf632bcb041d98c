//! Where a TOML error stands in its file, for the `file:line:key: message`
//! errors of the broker's TOML files (policy, settings, the service catalog
//! and the model catalog).

use std::ops::Range;

/// The 1-based line of byte offset `at`.
pub(crate) fn line_of(src: &str, at: usize) -> usize {
    src.as_bytes()[..at.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A TOML error located in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// 1-based line of the error's span (1 when it has none).
    pub line: usize,
    /// The key the error is about, when the text or the message names one:
    /// the key left of the `=` when the span is a value (`key.field` for an
    /// unknown field of an inline table under it), else a field the message
    /// names (`unknown field `x``, `missing field `x``).
    pub key: Option<String>,
    /// The error's span (`0..0` when it has none).
    pub span: Range<usize>,
    pub message: String,
}

pub(crate) fn locate(src: &str, e: &toml::de::Error) -> Located {
    let span = e.span().unwrap_or(0..0);
    let start = span.start.min(src.len());
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &src[line_start..start];
    let message = e.message().trim().to_owned();
    let key = if let Some((key, _)) = before.split_once('=') {
        match backticked(&message) {
            Some(field) if message.starts_with("unknown field") => {
                Some(format!("{}.{field}", key.trim()))
            }
            _ => Some(key.trim().to_owned()),
        }
    } else {
        backticked(&message).map(str::to_owned)
    };
    Located {
        line: line_of(src, start),
        key,
        span,
        message,
    }
}

/// The first `` `name` `` in a message.
fn backticked(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        limits: Option<Limits>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        timeout_ms: u32,
    }

    fn located(src: &str) -> (usize, Option<String>) {
        let e = toml::from_str::<Doc>(src).unwrap_err();
        let l = locate(src, &e);
        (l.line, l.key)
    }

    #[test]
    fn keys_and_lines() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        assert_eq!(located("\nname = 1\n"), (2, Some("name".into())));
        assert_eq!(
            located("name = \"x\"\nlimits = { timeout = 1 }\n"),
            (2, Some("limits.timeout".into()))
        );
        assert_eq!(
            located("name = \"x\"\n\nnmae = \"y\"\n"),
            (3, Some("nmae".into()))
        );
        // A missing field of an inline table is the table's key; one of the
        // document is named by the message.
        assert_eq!(
            located("name = \"x\"\nlimits = {}\n"),
            (2, Some("limits".into()))
        );
        assert_eq!(
            located("limits = { timeout_ms = 1 }\n").1,
            Some("name".into())
        );
        assert_eq!(located("name = \n").0, 1);
    }
}
