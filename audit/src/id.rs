//! Identifiers that events carry: model ids, versions, node ids, run ids.
//!
//! **Invariant:** each is a newtype whose only constructors (`parse`, and serde's
//! `Deserialize`) check a strict charset and length, so an identifier is never a
//! way for free text (a prompt, a path, an error message) to reach the log. A log
//! line whose identifier breaks its rule does not verify.
//!
//! | type        | rule                                                        |
//! |-------------|-------------------------------------------------------------|
//! | [`ModelId`] | `[a-z0-9][a-z0-9._-]{0,63}`                                 |
//! | [`Version`] | `MAJOR.MINOR.PATCH[-PRE]`, semver, at most 64 bytes          |
//! | [`NodeId`]  | `[a-z0-9_-]{1,64}`                                          |
//! | [`RunId`]   | exactly 16 lowercase hex digits                             |
//! | [`ConnectionName`] | as [`ModelId`]                                       |
//! | [`Host`]    | `[a-z0-9.:-]{1,253}`                                        |
//! | [`UrlPath`] | `/` then RFC 3986 path characters, at most 256 bytes        |
//! | [`SettingKey`] | `[a-z0-9_.]{1,64}`                                       |

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// The longest id or version, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier. The rejected value is kept (escaped
/// and cut to 80 characters) so the user can see what was wrong; it never goes
/// into the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct IdError {
    /// What was being parsed: `model id`, `version`, `node id`, `run id`.
    pub kind: &'static str,
    /// The start of the rejected value.
    pub value: String,
    /// The rule it broke, phrased as what to write instead.
    pub rule: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> IdError {
        IdError {
            kind,
            value: value.chars().take(80).collect(),
            rule,
        }
    }
}

/// Serialize as a string; deserialize through `parse`, so the rule holds for
/// every value that enters through serde too.
macro_rules! string_serde {
    ($ty:ident, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse(v)
                            .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<$ty, IdError> {
                $ty::parse(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A model's id in the catalog and the store: `[a-z0-9][a-z0-9._-]{0,63}`.
/// The first character rules out `.`, `..` and hidden names, so an id is also a
/// safe directory name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(String);

impl ModelId {
    const RULE: &'static str =
        "a model id is 1 to 64 of a-z 0-9 . _ - and starts with a letter or digit";

    pub fn parse(s: &str) -> Result<ModelId, IdError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_ID_LEN
            && matches!(b[0], b'a'..=b'z' | b'0'..=b'9')
            && b.iter()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if ok {
            Ok(ModelId(s.to_owned()))
        } else {
            Err(IdError::new("model id", s, Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_serde!(
    ModelId,
    "a model id: 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"
);

/// A node of a flow: `[a-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    const RULE: &'static str = "a node id is 1 to 64 of a-z 0-9 _ -";

    pub fn parse(s: &str) -> Result<NodeId, IdError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_ID_LEN
            && b.iter()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if ok {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(IdError::new("node id", s, Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_serde!(NodeId, "a node id: 1 to 64 of a-z 0-9 _ -");

/// Checks a string against a byte predicate and a length range.
fn charset_ok(s: &str, min: usize, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(ok)
}

/// A connection's name (a service catalog id, or `hub`): the model id rule,
/// `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionName(String);

impl ConnectionName {
    const RULE: &'static str =
        "a connection name is 1 to 64 of a-z 0-9 . _ - and starts with a letter or digit";

    pub fn parse(s: &str) -> Result<ConnectionName, IdError> {
        let first_ok = s
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if first_ok
            && charset_ok(
                s,
                1,
                MAX_ID_LEN,
                |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'),
            )
        {
            Ok(ConnectionName(s.to_owned()))
        } else {
            Err(IdError::new("connection name", s, Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_serde!(
    ConnectionName,
    "a connection name: 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"
);

/// A host an egress request went to: a lower-case DNS name or an IP literal,
/// `[a-z0-9.:-]{1,253}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

impl Host {
    const RULE: &'static str = "a host is 1 to 253 of a-z 0-9 . : -";

    pub fn parse(s: &str) -> Result<Host, IdError> {
        if charset_ok(
            s,
            1,
            253,
            |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b':' | b'-'),
        ) {
            Ok(Host(s.to_owned()))
        } else {
            Err(IdError::new("host", s, Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_serde!(Host, "a host: 1 to 253 of a-z 0-9 . : -");

/// The path of an egress request, without its query: starts with `/`, at
/// most 256 bytes of RFC 3986 path characters (`A-Z a-z 0-9 / . _ ~ % - ! $ &
/// ' ( ) * + , ; = : @`). A path that breaks the rule is recorded as
/// [`UrlPath::REDACTED`] by the broker, never written as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UrlPath(String);

impl UrlPath {
    const RULE: &'static str =
        "a path starts with / and has at most 256 RFC 3986 path characters, no query";
    /// What is recorded for a path that cannot be recorded as it is.
    pub const REDACTED: &'static str = "/_redacted_";

    pub fn parse(s: &str) -> Result<UrlPath, IdError> {
        if s.starts_with('/')
            && charset_ok(s, 1, 256, |c| {
                c.is_ascii_alphanumeric() || b"/._~%-!$&'()*+,;=:@".contains(&c)
            })
        {
            Ok(UrlPath(s.to_owned()))
        } else {
            Err(IdError::new("path", s, Self::RULE))
        }
    }

    /// `s` if it follows the rule, else [`UrlPath::REDACTED`].
    pub fn or_redacted(s: &str) -> UrlPath {
        UrlPath::parse(s).unwrap_or_else(|_| UrlPath(Self::REDACTED.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_serde!(UrlPath, "a path: / and RFC 3986 path characters, no query");

/// A settings or policy key: `[a-z0-9_.]{1,64}` (`services.enabled`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SettingKey(String);

impl SettingKey {
    const RULE: &'static str = "a setting key is 1 to 64 of a-z 0-9 _ .";

    pub fn parse(s: &str) -> Result<SettingKey, IdError> {
        if charset_ok(
            s,
            1,
            MAX_ID_LEN,
            |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.'),
        ) {
            Ok(SettingKey(s.to_owned()))
        } else {
            Err(IdError::new("setting key", s, Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_serde!(SettingKey, "a setting key: 1 to 64 of a-z 0-9 _ .");

/// One run of a flow: 64 random bits, written as exactly 16 lowercase hex
/// digits (leading zeros kept), so a run id has one spelling.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u64);

impl RunId {
    const RULE: &'static str = "a run id is exactly 16 lowercase hex digits";

    pub const fn new(bits: u64) -> RunId {
        RunId(bits)
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<RunId, IdError> {
        let b = s.as_bytes();
        if b.len() != 16 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(IdError::new("run id", s, Self::RULE));
        }
        u64::from_str_radix(s, 16)
            .map(RunId)
            .map_err(|_| IdError::new("run id", s, Self::RULE))
    }

    /// The 16 hex digits (a new string: a `RunId` is stored as its bits).
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({:016x})", self.0)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for RunId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<RunId, IdError> {
        RunId::parse(s)
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RunId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RunId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a run id: exactly 16 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RunId, E> {
                RunId::parse(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// A semantic version, `MAJOR.MINOR.PATCH` with an optional `-PRE` pre-release
/// (`[0-9A-Za-z-]` identifiers separated by dots), at most 64 bytes. Stricter
/// than the charset alone, as semver 2.0 is: no leading zeros in numbers, no
/// empty pre-release identifier. Build metadata (`+...`) is not accepted: two
/// spellings of one version would be two store directories.
///
/// Ordering is semver precedence; because of the rules above it agrees with
/// equality (two versions compare equal only when they are the same string).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    const RULE: &'static str = "a version is MAJOR.MINOR.PATCH with an optional -PRE-RELEASE (semver, e.g. 1.0.0 or 1.1.0-rc.1), numbers without leading zeros, at most 64 characters";

    pub fn parse(s: &str) -> Result<Version, IdError> {
        let err = || IdError::new("version", s, Self::RULE);
        if s.is_empty() || s.len() > MAX_ID_LEN {
            return Err(err());
        }
        let (core, pre) = match s.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (s, None),
        };
        let mut nums = core.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (nums.next(), nums.next(), nums.next(), nums.next())
        else {
            return Err(err());
        };
        for n in [major, minor, patch] {
            numeric(n).ok_or_else(err)?;
        }
        if let Some(pre) = pre {
            let ids_ok = pre.split('.').all(|id| {
                !id.is_empty()
                    && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && (!id.bytes().all(|c| c.is_ascii_digit()) || numeric(id).is_some())
            });
            if !ids_ok {
                return Err(err());
            }
        }
        Ok(Version(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(major, minor, patch)`. Recomputed from the text (which `parse`
    /// checked), so a `Version` is one string wide.
    pub fn numbers(&self) -> (u64, u64, u64) {
        let core = self
            .0
            .split_once('-')
            .map_or(self.0.as_str(), |(core, _)| core);
        let mut n = core.split('.').map(|n| numeric(n).unwrap_or(0));
        (
            n.next().unwrap_or(0),
            n.next().unwrap_or(0),
            n.next().unwrap_or(0),
        )
    }

    /// The pre-release part after `-`, if any.
    pub fn pre_release(&self) -> Option<&str> {
        self.0.split_once('-').map(|(_, pre)| pre)
    }
}

/// A semver number: digits, no leading zero unless it is `0`, fits in u64.
fn numeric(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    s.parse().ok()
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.numbers().cmp(&other.numbers()).then_with(|| {
            match (self.pre_release(), other.pre_release()) {
                (None, None) => Ordering::Equal,
                // A pre-release comes before its release.
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => cmp_pre(a, b),
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Semver 2.0 §11: identifiers left to right; numeric ones numerically and
/// before alphanumeric ones; alphanumeric ones in ASCII order; a shorter list
/// that is a prefix of the other comes first.
fn cmp_pre(a: &str, b: &str) -> Ordering {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (numeric(x), numeric(y)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

string_serde!(
    Version,
    "a semver version MAJOR.MINOR.PATCH[-PRE-RELEASE], at most 64 characters"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        for ok in [
            "a",
            "smollm2-135m-instruct",
            "0",
            "qwen2.5-0.5b_q4",
            &"a".repeat(64),
        ] {
            assert_eq!(ModelId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "-a",
            ".a",
            "..",
            "_a",
            "A",
            "smolLM",
            "a b",
            "a/b",
            "a\n",
            "ignore previous instructions",
            "é",
            &"a".repeat(65),
        ] {
            let e = ModelId::parse(bad).unwrap_err();
            assert_eq!(e.kind, "model id", "{bad:?}");
        }
    }

    #[test]
    fn node_ids() {
        for ok in ["a", "-", "_", "summarize_1", "0-x", &"z".repeat(64)] {
            assert_eq!(NodeId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a.b", "A", "a b", "a/b", &"z".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_ids() {
        let r = RunId::parse("00000000000000ff").unwrap();
        assert_eq!(r, RunId::new(255));
        assert_eq!(r.to_string(), "00000000000000ff");
        assert_eq!(serde_json::to_string(&r).unwrap(), r#""00000000000000ff""#);
        for bad in [
            "ff",
            "00000000000000FF",
            "000000000000000ff",
            "0x000000000000ff",
            "+000000000000fff",
            "00000000000000fg",
            "",
        ] {
            assert!(RunId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions() {
        for ok in [
            "0.0.0",
            "1.0.0",
            "10.20.30",
            "1.1.0-rc.1",
            "1.0.0-alpha-1",
            "1.0.0-0.3.7",
            "1.0.0-x.7.z.92",
            "1.0.0--",
        ] {
            assert_eq!(Version::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(Version::parse("10.20.30").unwrap().numbers(), (10, 20, 30));
        assert_eq!(Version::parse("1.2.3-rc.1").unwrap().numbers(), (1, 2, 3));
        let long = format!("1.0.0-{}", "a".repeat(59));
        assert!(Version::parse(&long[..64]).is_ok());
        assert!(Version::parse(&long).is_err());
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1.00.0",
            "v1.0.0",
            "1.0.0-",
            "1.0.0-a..b",
            "1.0.0-01",
            "1.0.0+build",
            "1.0.0-a b",
            "1.0.0 ",
            "-1.0.0",
            "1.0.x",
            "99999999999999999999.0.0",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_precedence_is_semver() {
        // The example chain from semver 2.0 §11, in increasing order.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        let versions: Vec<Version> = chain.iter().map(|v| Version::parse(v).unwrap()).collect();
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn deserialize_applies_the_rules() {
        let id: ModelId = serde_json::from_str(r#""smollm2-135m-instruct""#).unwrap();
        assert_eq!(id.as_str(), "smollm2-135m-instruct");
        assert!(serde_json::from_str::<ModelId>(r#""Hello world""#).is_err());
        assert!(serde_json::from_str::<Version>(r#""1.0""#).is_err());
        assert!(serde_json::from_str::<NodeId>(r#""a.b""#).is_err());
        assert!(serde_json::from_str::<RunId>(r#""abc""#).is_err());
        assert!(serde_json::from_str::<ModelId>("7").is_err());
    }
}
