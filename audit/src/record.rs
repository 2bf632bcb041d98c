//! One record and its line on disk: `<64 hex sha256> <compact JSON body>\n`, where
//! the hash is `sha256(prev hash bytes || body bytes as written)`.

use crate::event::{Component, Digest, Event, Waiver};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// The longest line the verifier reads before calling it broken. Real records are
/// a few hundred bytes; the bound keeps a hostile file from costing memory.
pub const MAX_LINE: usize = 16 * 1024;

/// Bytes before the body: 64 hex digits and one space.
pub(crate) const BODY_START: usize = 65;

const MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const SECONDS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// A UTC time in RFC 3339 form, `2025-01-02T03:04:05.678Z` (or without the
/// milliseconds). Written with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Now, truncated to the millisecond.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        let ms = now.millisecond();
        Timestamp(now.replace_millisecond(ms).unwrap_or(now))
    }

    /// Parse `YYYY-MM-DDTHH:MM:SS[.mmm]Z`; nothing else (no offsets, no other
    /// precision).
    pub fn parse(s: &str) -> Option<Timestamp> {
        let parsed = if s.len() == 24 {
            time::PrimitiveDateTime::parse(s, MILLIS)
        } else {
            time::PrimitiveDateTime::parse(s, SECONDS)
        };
        parsed.ok().map(|t| Timestamp(t.assume_utc()))
    }

    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }

    /// The RFC 3339 form written to the log.
    pub fn to_rfc3339(&self) -> String {
        // Formatting a UTC time with a fixed description fails only for years
        // outside 0..=9999, which `now()` cannot produce; fall back to RFC 3339.
        self.0.format(MILLIS).unwrap_or_else(|_| {
            self.0
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        })
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Timestamp {
        Timestamp(t.to_offset(time::UtcOffset::UTC))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a UTC time like 2025-01-02T03:04:05.678Z")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// The body of one log line. Field order is the order written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1 for the first record, then +1 per record.
    pub seq: u64,
    pub time: Timestamp,
    /// The hash of the previous line ([`Digest::GENESIS`] for record 1).
    pub prev: Digest,
    /// Sandbox layers waived while this record was written (normally empty).
    pub overrides: Vec<Waiver>,
    pub event: Event,
}

impl Record {
    /// The exact line the writer appends for this record and its hash:
    /// `<hash hex> <body>\n` with `hash = sha256(prev || body)`.
    pub fn to_line(&self) -> Result<(Digest, Vec<u8>), serde_json::Error> {
        let body = serde_json::to_vec(self)?;
        let hash = chain_hash(&self.prev, &body);
        let mut line = Vec::with_capacity(BODY_START + body.len() + 1);
        line.extend_from_slice(hash.to_hex().as_bytes());
        line.push(b' ');
        line.extend_from_slice(&body);
        line.push(b'\n');
        Ok((hash, line))
    }

    /// The record's fields for listing (`flow audit show`), without any
    /// formatting decided here.
    pub fn summary(&self) -> Summary {
        Summary {
            seq: self.seq,
            time: self.time,
            event: self.event.name(),
            component: self.event.component(),
            pid: self.event.pid(),
            cap_id: self.event.cap_id(),
            overrides: self.overrides.clone(),
        }
    }
}

/// What a listing shows of a record; the caller decides how to print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub seq: u64,
    pub time: Timestamp,
    /// The event's kebab-case name, e.g. `component-spawned`.
    pub event: &'static str,
    pub component: Option<Component>,
    pub pid: Option<u32>,
    pub cap_id: Option<u64>,
    pub overrides: Vec<Waiver>,
}

/// `sha256(prev || body)`.
pub fn chain_hash(prev: &Digest, body: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(body);
    Digest(h.finalize().into())
}

/// Why a line is not a well-formed record (before any chain check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
    /// The line is shorter than a hash, a space and a body.
    TooShort,
    /// The first 64 bytes are not lowercase hex.
    BadHashField,
    /// Byte 64 is not a single space.
    BadSeparator,
    /// The body is not a record (bad JSON, unknown event or field, bad value).
    BadBody(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::NotUtf8 => f.write_str("the line is not valid utf-8"),
            LineError::TooLong => write!(f, "the line is longer than {MAX_LINE} bytes"),
            LineError::TooShort => f.write_str("the line is too short to hold a hash and a body"),
            LineError::BadHashField => {
                f.write_str("the first 64 bytes are not a lowercase hex sha-256")
            }
            LineError::BadSeparator => f.write_str("byte 64 is not the single space separator"),
            LineError::BadBody(e) => write!(f, "the body is not a valid record ({e})"),
        }
    }
}

/// A line split into its parts, not yet checked against the chain.
#[derive(Debug)]
pub(crate) struct ParsedLine<'a> {
    pub hash: Digest,
    pub body: &'a [u8],
    pub record: Record,
}

/// Parse one line without its newline, strictly.
pub(crate) fn parse_line(line: &[u8]) -> Result<ParsedLine<'_>, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    if std::str::from_utf8(line).is_err() {
        return Err(LineError::NotUtf8);
    }
    if line.len() < BODY_START + 2 {
        return Err(LineError::TooShort);
    }
    let hash = Digest::from_hex(&line[..64]).ok_or(LineError::BadHashField)?;
    if line[64] != b' ' {
        return Err(LineError::BadSeparator);
    }
    let body = &line[BODY_START..];
    // The writer emits compact JSON; serde_json would accept surrounding
    // whitespace, the format does not.
    if body.first() != Some(&b'{') || body.last() != Some(&b'}') {
        return Err(LineError::BadBody(
            "the body is not a bare json object".into(),
        ));
    }
    let record: Record =
        serde_json::from_slice(body).map_err(|e| LineError::BadBody(e.to_string()))?;
    Ok(ParsedLine { hash, body, record })
}

/// The chain head file: `<seq> <64 hex>\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The last record's sequence number (0 for an empty log).
    pub seq: u64,
    /// The last record's hash ([`Digest::GENESIS`] for an empty log).
    pub hash: Digest,
}

impl ChainHead {
    pub const EMPTY: ChainHead = ChainHead {
        seq: 0,
        hash: Digest::GENESIS,
    };

    pub(crate) fn to_bytes(self) -> Vec<u8> {
        format!("{} {}\n", self.seq, self.hash.to_hex()).into_bytes()
    }

    /// Parse the head file strictly: decimal seq without leading zeros, one
    /// space, 64 lowercase hex digits, one newline.
    pub(crate) fn parse(bytes: &[u8]) -> Option<ChainHead> {
        let line = bytes.strip_suffix(b"\n")?;
        let space = line.iter().position(|b| *b == b' ')?;
        let (seq, rest) = (&line[..space], &line[space + 1..]);
        if seq.is_empty()
            || seq.len() > 20
            || !seq.iter().all(u8::is_ascii_digit)
            || (seq.len() > 1 && seq[0] == b'0')
        {
            return None;
        }
        let seq: u64 = std::str::from_utf8(seq).ok()?.parse().ok()?;
        let hash = Digest::from_hex(rest)?;
        if seq == 0 && hash != Digest::GENESIS {
            return None;
        }
        Some(ChainHead { seq, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_accepts_seconds_and_millis_only() {
        let ms = Timestamp::parse("2025-01-02T03:04:05.678Z").unwrap();
        assert_eq!(ms.to_rfc3339(), "2025-01-02T03:04:05.678Z");
        let s = Timestamp::parse("2025-01-02T03:04:05Z").unwrap();
        assert_eq!(s.to_rfc3339(), "2025-01-02T03:04:05.000Z");
        for bad in [
            "2025-01-02T03:04:05.67Z",
            "2025-01-02T03:04:05.678+00:00",
            "2025-01-02 03:04:05Z",
            "2025-01-02T03:04:05.678z",
            "2025-01-02T03:04:05.678901Z",
            "",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn now_has_millisecond_precision() {
        let t = Timestamp::now();
        assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
    }

    #[test]
    fn head_file_parses_strictly() {
        let h = ChainHead {
            seq: 9,
            hash: Digest([0xab; 32]),
        };
        assert_eq!(ChainHead::parse(&h.to_bytes()), Some(h));
        assert_eq!(
            ChainHead::parse(&ChainHead::EMPTY.to_bytes()),
            Some(ChainHead::EMPTY)
        );
        let hex = "ab".repeat(32);
        for bad in [
            format!("9 {hex}"),
            format!("09 {hex}\n"),
            format!("9  {hex}\n"),
            format!("9 {}\n", hex.to_uppercase()),
            format!("-9 {hex}\n"),
            format!("9 {hex}\n\n"),
            format!("0 {hex}\n"),
            String::new(),
        ] {
            assert_eq!(ChainHead::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn digest_hex_is_lowercase_only() {
        let lower = "0f".repeat(32);
        assert_eq!(Digest::from_hex(lower.as_bytes()), Some(Digest([0x0f; 32])));
        assert_eq!(Digest::from_hex(lower.to_uppercase().as_bytes()), None);
        assert_eq!(Digest::from_hex(&lower.as_bytes()[..63]), None);
    }
}
