//! Effective settings: built-in defaults, the enterprise policy file, the
//! per-user settings file, `flow up --set`, and runtime changes over the
//! control socket, computed in one place.
//!
//! Precedence, lowest first: defaults < policy `[set]` < settings file <
//! `flow up --set` < runtime (`flow settings set`) < a flow file's
//! `[settings]` (for that run only). A key in the policy's `[lock]` table
//! has the policy's value whatever any other source says; every attempt to
//! change it is refused, and the caller audits the refusal.
//!
//! **Invariant:** the policy path is fixed when the binary is built
//! ([`POLICY_PATH`]); no flag and no environment variable changes it, and no
//! setting is read from the environment. Every use site reads its value from
//! an [`Effective`]: there is no other path to a setting.
//!
//! The policy file (see `deploy/policy.toml` and `docs/policy.md`):
//!
//! ```toml
//! [set]                       # enterprise defaults; users may change them
//! "spool.retention_days" = 14
//!
//! [lock]                      # fixed: every other source is refused
//! "cloud.enabled" = false
//! "services.enabled" = false
//! ```
//!
//! It must be owned by root and not writable by group or others, in a
//! directory with the same properties; anything else is refused, because a
//! policy a user can edit locks nothing.

use crate::toml_errors::{self, line_of};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

/// The enterprise policy file. Fixed at build time: set `FLOW_POLICY_PATH`
/// when building (tests do) to use another path; nothing at run time can.
pub const POLICY_PATH: &str = match option_env!("FLOW_POLICY_PATH") {
    Some(p) => p,
    None => "/etc/flow/policy.toml",
};

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Built into Flow.
    Default,
    /// The enterprise policy file (`[set]` or `[lock]`).
    Policy,
    /// The per-user settings file.
    Settings,
    /// `flow up --set KEY=VALUE`.
    Cli,
    /// `flow settings set KEY VALUE` on a running broker.
    Runtime,
    /// A flow file's `[settings]` table, for one run.
    FlowFile,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Policy => "policy",
            Source::Settings => "settings",
            Source::Cli => "cli",
            Source::Runtime => "runtime",
            Source::FlowFile => "flow-file",
        }
    }

    /// The audit log's name for a source whose change can be refused
    /// (`None` for defaults and the policy itself).
    pub fn audit(self) -> Option<audit::SettingSource> {
        match self {
            Source::Default | Source::Policy => None,
            Source::Settings => Some(audit::SettingSource::SettingsFile),
            Source::Cli => Some(audit::SettingSource::Cli),
            Source::Runtime => Some(audit::SettingSource::ControlSocket),
            Source::FlowFile => Some(audit::SettingSource::FlowFile),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt to change a key the policy locks. The lock wins; the caller
/// writes `audit::Event::SettingRefused` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: String,
    pub source: Source,
}

impl Refusal {
    /// The key as the audit log can hold it (`[a-z0-9_.]{1,64}`): other
    /// characters (the `-` of a model id) become `_`.
    pub fn audit_key(&self) -> audit::SettingKey {
        audit_key(&self.key)
    }

    /// The audit log's name for where the attempt came from.
    pub fn audit_source(&self) -> audit::SettingSource {
        self.source
            .audit()
            .unwrap_or(audit::SettingSource::SettingsFile)
    }
}

/// `key` in the audit log's alphabet.
pub fn audit_key(key: &str) -> audit::SettingKey {
    let mapped: String = key
        .chars()
        .take(audit::MAX_ID_LEN)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    let mapped = if mapped.is_empty() {
        "_".to_string()
    } else {
        mapped
    };
    match audit::SettingKey::parse(&mapped) {
        Ok(k) => k,
        // The mapping above keeps 1 to 64 characters of the allowed set.
        Err(e) => unreachable!("{e}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}: fix its permissions (the broker's user must be able to read it) or remove it", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}: fix the TOML syntax (see docs/policy.md)", path = path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}:{key}: {message}: fix this key (run 'flow policy show' for every key and its meaning)", path = path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("refusing the policy file {path}: {problem}: run '{fix}' (a policy that a non-root user can write locks nothing)", path = path.display())]
    Insecure {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("{key} is locked by the enterprise policy {policy} (value {value}): the {by} cannot change it; run 'flow policy show'", policy = policy.display(), by = source_phrase(*by))]
    Locked {
        key: String,
        /// Where the refused attempt came from.
        by: Source,
        value: String,
        policy: PathBuf,
    },
    #[error("unknown setting '{key}': run 'flow policy show' for the keys")]
    UnknownKey { key: String },
    #[error("invalid value for {key}: {message}: run 'flow policy show' for what it means")]
    BadValue { key: String, message: String },
    #[error("invalid --set '{arg}': write KEY=VALUE, e.g. --set services.enabled=true")]
    BadArgument { arg: String },
    #[error("a flow file may not set {key} to {value}: {why}; change it in the settings file or with 'flow settings set' instead")]
    FlowFileWidens {
        key: String,
        value: String,
        why: &'static str,
    },
}

fn source_phrase(s: Source) -> &'static str {
    match s {
        Source::Default => "default",
        Source::Policy => "policy",
        Source::Settings => "settings file",
        Source::Cli => "command line (flow up --set)",
        Source::Runtime => "control socket (flow settings set)",
        Source::FlowFile => "flow file",
    }
}

/// What a value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// A non-negative number of days that fits a u32.
    Days,
    /// Megabytes.
    Megabytes,
    /// `http(s)://host[:port][/path]`, or empty for none.
    Url,
    /// 64 hex digits, or empty for none.
    Ed25519Key,
    /// A list of catalog ids or `*`.
    Ids,
    /// A list of CIDRs (`10.0.0.0/8`).
    Cidrs,
    /// An absolute path, or empty for none.
    File,
    /// A list of name servers (`IP` or `IP:PORT`).
    Servers,
}

impl Kind {
    fn expects(self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Days => "a whole number of days (0 keeps runs forever)",
            Kind::Megabytes => "a whole number of megabytes",
            Kind::Url => "an http:// or https:// URL, or \"\" for none",
            Kind::Ed25519Key => "an ed25519 public key as 64 hex digits, or \"\" for none",
            Kind::Ids => "a list of catalog ids, or [\"*\"] for any",
            Kind::Cidrs => "a list of CIDRs such as [\"10.0.0.0/8\"]",
            Kind::File => "an absolute path, or \"\" for none",
            Kind::Servers => {
                "a list of name servers such as [\"192.0.2.53\", \"[2001:db8::53]:53\"]"
            }
        }
    }
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Bool(bool),
    Int(u64),
    Text(String),
    Key(Option<[u8; 32]>),
    List(Vec<String>),
    Path(Option<PathBuf>),
    Addrs(Vec<SocketAddr>),
}

impl Value {
    /// As TOML would write it.
    fn display(&self) -> String {
        fn quote(s: &str) -> String {
            let mut o = String::from('"');
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    c if c.is_control() => o.push_str(&format!("\\u{:04X}", c as u32)),
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Text(s) => quote(s),
            Value::Key(k) => quote(&k.map(hex::encode).unwrap_or_default()),
            Value::Path(p) => quote(
                &p.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            Value::List(l) => format!(
                "[{}]",
                l.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
            ),
            Value::Addrs(a) => format!(
                "[{}]",
                a.iter()
                    .map(|s| quote(&s.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// One known key.
#[derive(Debug, Clone, Copy)]
struct Def {
    key: &'static str,
    kind: Kind,
    /// In the syntax of `--set` values.
    default: &'static str,
    meaning: &'static str,
}

/// Every fixed key. `models.<id>.memory_floor_mb` is the one key family
/// besides these (see [`def_of`]).
const DEFS: &[Def] = &[
    Def {
        key: "cloud.enabled",
        kind: Kind::Bool,
        default: "false",
        meaning: "cloud AI providers may be called (through the egress gateway)",
    },
    Def {
        key: "services.enabled",
        kind: Kind::Bool,
        default: "false",
        meaning: "service nodes may call REST services of the service catalog (through the egress gateway)",
    },
    Def {
        key: "services.allowed_ids",
        kind: Kind::Ids,
        default: "*",
        meaning: "service catalog ids that service nodes may use (\"*\": any entry of the catalog)",
    },
    Def {
        key: "services.allow_ai_output",
        kind: Kind::Bool,
        default: "false",
        meaning: "a service node may receive data derived from an AI node's output or from spool content",
    },
    Def {
        key: "hub.enabled",
        kind: Kind::Bool,
        default: "false",
        meaning: "models may be downloaded from the Model Hub (through the egress gateway)",
    },
    Def {
        key: "hub.url",
        kind: Kind::Url,
        default: "",
        meaning: "the Model Hub (or enterprise mirror) models are pulled from (\"\": none)",
    },
    Def {
        key: "hub.signing_key",
        kind: Kind::Ed25519Key,
        default: "",
        meaning: "ed25519 public key (hex) that must sign the hub's catalog for its digests to be trusted (\"\": only local or policy digests)",
    },
    Def {
        key: "hub.allow_cidrs",
        kind: Kind::Cidrs,
        default: "",
        meaning: "non-global address ranges the hub may resolve to (an internal mirror); empty: public addresses only",
    },
    Def {
        key: "tls.ca_bundle",
        kind: Kind::File,
        default: "",
        meaning: "PEM file of enterprise CA certificates trusted besides the bundled web roots (\"\": none)",
    },
    Def {
        key: "egress.dns_servers",
        kind: Kind::Servers,
        default: "",
        meaning: "name servers the egress gateway queries (empty: those of /etc/resolv.conf)",
    },
    Def {
        key: "spool.retention_days",
        kind: Kind::Days,
        default: "30",
        meaning: "runs older than this many days are pruned from the spool (0: keep)",
    },
];

const MEMORY_FLOOR_MEANING: &str =
    "AI nodes using this model are skipped below this much available memory (only raises the catalog's floor)";

/// The definition of `key`: a fixed key, or `models.<id>.memory_floor_mb`.
fn def_of(key: &str) -> Option<Def> {
    if let Some(d) = DEFS.iter().find(|d| d.key == key) {
        return Some(*d);
    }
    let id = key
        .strip_prefix("models.")?
        .strip_suffix(".memory_floor_mb")?;
    audit::ModelId::parse(id).ok()?;
    Some(Def {
        key: "models.<id>.memory_floor_mb",
        kind: Kind::Megabytes,
        default: "0",
        meaning: MEMORY_FLOOR_MEANING,
    })
}

/// Parse a value written as a string (`--set`, the control socket, a flow
/// file): lists as TOML arrays or comma-separated.
fn parse_str(kind: Kind, s: &str) -> Result<Value, String> {
    let s = s.trim();
    let list = || -> Result<Vec<String>, String> {
        if s.starts_with('[') {
            let v = DeValue::parse(s).map_err(|e| e.message().trim().to_string())?;
            let Some(arr) = v.get_ref().as_array() else {
                return Err(format!("expected {}", kind.expects()));
            };
            arr.iter()
                .map(|i| {
                    i.get_ref()
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("expected {}", kind.expects()))
                })
                .collect()
        } else {
            Ok(s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect())
        }
    };
    let unquoted = || {
        let t = s
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(s);
        t.to_string()
    };
    match kind {
        Kind::Bool => match s {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected {}", kind.expects())),
        },
        Kind::Days | Kind::Megabytes => {
            let n: u64 = s
                .replace('_', "")
                .parse()
                .map_err(|_| format!("expected {}", kind.expects()))?;
            check_int(kind, n)
        }
        Kind::Url | Kind::Ed25519Key | Kind::File => check_text(kind, unquoted()),
        Kind::Ids | Kind::Cidrs | Kind::Servers => check_list(kind, list()?),
    }
}

/// Convert a TOML value from a file.
fn from_toml(kind: Kind, v: &DeValue<'_>) -> Result<Value, String> {
    let wrong = || format!("expected {}, found a {}", kind.expects(), v.type_str());
    match kind {
        Kind::Bool => v.as_bool().map(Value::Bool).ok_or_else(wrong),
        Kind::Days | Kind::Megabytes => {
            let i = v.as_integer().ok_or_else(wrong)?;
            let n = u64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("expected {}", kind.expects()))?;
            check_int(kind, n)
        }
        Kind::Url | Kind::Ed25519Key | Kind::File => {
            check_text(kind, v.as_str().ok_or_else(wrong)?.to_string())
        }
        Kind::Ids | Kind::Cidrs | Kind::Servers => {
            let arr = v.as_array().ok_or_else(wrong)?;
            let items = arr
                .iter()
                .map(|i| i.get_ref().as_str().map(str::to_string).ok_or_else(wrong))
                .collect::<Result<Vec<_>, _>>()?;
            check_list(kind, items)
        }
    }
}

fn check_int(kind: Kind, n: u64) -> Result<Value, String> {
    if kind == Kind::Days && n > u64::from(u32::MAX) {
        return Err(format!("expected {}", kind.expects()));
    }
    Ok(Value::Int(n))
}

fn check_text(kind: Kind, s: String) -> Result<Value, String> {
    match kind {
        Kind::Url => {
            if !s.is_empty() {
                check_url(&s)?;
            }
            Ok(Value::Text(s))
        }
        Kind::Ed25519Key => {
            if s.is_empty() {
                return Ok(Value::Key(None));
            }
            let mut k = [0u8; 32];
            hex::decode_to_slice(&s, &mut k).map_err(|_| format!("expected {}", kind.expects()))?;
            Ok(Value::Key(Some(k)))
        }
        Kind::File => {
            if s.is_empty() {
                return Ok(Value::Path(None));
            }
            let p = PathBuf::from(&s);
            if !p.is_absolute() {
                return Err(format!("'{s}' is relative: expected {}", kind.expects()));
            }
            Ok(Value::Path(Some(p)))
        }
        _ => Err(format!("expected {}", kind.expects())),
    }
}

fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("'{s}' is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || s.chars().any(char::is_whitespace) {
        return Err(format!(
            "'{s}' has no host (or has user info or spaces): write https://HOST[:PORT][/PATH]"
        ));
    }
    Ok(())
}

fn check_list(kind: Kind, items: Vec<String>) -> Result<Value, String> {
    match kind {
        Kind::Ids => {
            for i in &items {
                let ok = i == "*"
                    || (i.len() <= 64
                        && i.bytes()
                            .next()
                            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                        && i.bytes().all(|c| {
                            c.is_ascii_lowercase()
                                || c.is_ascii_digit()
                                || matches!(c, b'.' | b'_' | b'-')
                        }));
                if !ok {
                    return Err(format!(
                        "'{i}' is not a catalog id (1 to 64 of a-z 0-9 . _ -, starting with a letter or digit) or \"*\""
                    ));
                }
            }
            Ok(Value::List(items))
        }
        Kind::Cidrs => {
            for i in &items {
                check_cidr(i)?;
            }
            Ok(Value::List(items))
        }
        Kind::Servers => items
            .iter()
            .map(|i| parse_server(i))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Addrs),
        _ => Err(format!("expected {}", kind.expects())),
    }
}

fn check_cidr(s: &str) -> Result<(), String> {
    let bad = || format!("'{s}' is not a CIDR: write ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/8");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!("'{s}' is not a name server address: write IP or IP:PORT ([IPv6]:PORT)")
        })
}

/// One effective key.
#[derive(Debug, Clone)]
struct Slot {
    value: Value,
    source: Source,
    locked: bool,
    /// Sources whose change was refused because of the lock.
    refused: Vec<Source>,
    meaning: &'static str,
}

/// One row of `flow policy show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRow {
    pub key: String,
    /// As TOML would write it.
    pub value: String,
    pub source: Source,
    pub locked: bool,
    pub meaning: String,
    /// Sources that tried to change a locked key (the policy's value won).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overridden_by_policy: Vec<Source>,
}

/// The effective settings: one value per key, with its source.
#[derive(Debug, Clone)]
pub struct Effective {
    slots: BTreeMap<String, Slot>,
    policy_path: PathBuf,
    policy_present: bool,
}

/// A value read from a file, with its line.
#[derive(Debug)]
pub(crate) struct FileValue {
    pub key: String,
    pub line: usize,
    value: Value,
}

impl Effective {
    /// Built-in defaults only (no policy, no settings).
    pub fn defaults() -> Effective {
        let mut slots = BTreeMap::new();
        for d in DEFS {
            let value = match parse_str(d.kind, d.default) {
                Ok(v) => v,
                // Defaults are checked by a test; keep going with "unset".
                Err(_) => Value::List(Vec::new()),
            };
            slots.insert(
                d.key.to_string(),
                Slot {
                    value,
                    source: Source::Default,
                    locked: false,
                    refused: Vec::new(),
                    meaning: d.meaning,
                },
            );
        }
        Effective {
            slots,
            policy_path: PathBuf::from(POLICY_PATH),
            policy_present: false,
        }
    }

    /// defaults < policy `[set]` < settings file < `flow up --set` <
    /// runtime (control socket); policy `[lock]` over all.
    ///
    /// Returns the refusals found (settings-file or CLI values for locked
    /// keys): the lock wins, the broker starts, and the caller audits each
    /// refusal (`audit::Event::SettingRefused`).
    pub fn load(
        settings_path: &Path,
        cli: &[(String, String)],
    ) -> Result<(Effective, Vec<Refusal>), PolicyError> {
        Effective::load_from(Path::new(POLICY_PATH), settings_path, cli)
    }

    /// [`Effective::load`] with another policy file, for tests only: the
    /// broker and the CLI always use [`POLICY_PATH`]. The same ownership and
    /// mode checks apply.
    #[doc(hidden)]
    pub fn load_policy_only_for_tests(
        policy_path: &Path,
        settings_path: &Path,
        cli: &[(String, String)],
    ) -> Result<(Effective, Vec<Refusal>), PolicyError> {
        Effective::load_from(policy_path, settings_path, cli)
    }

    fn load_from(
        policy_path: &Path,
        settings_path: &Path,
        cli: &[(String, String)],
    ) -> Result<(Effective, Vec<Refusal>), PolicyError> {
        let mut eff = Effective::defaults();
        eff.policy_path = policy_path.to_owned();
        if let Some(text) = read_policy(policy_path)? {
            eff.policy_present = true;
            eff.apply_policy(policy_path, &text)?;
        }
        let mut refusals = Vec::new();
        for fv in crate::settings::load(settings_path)? {
            if let Some(r) = eff.apply(fv.key, fv.value, Source::Settings) {
                refusals.push(r);
            }
        }
        for (key, value) in cli {
            let v = parse_key_value(key, value)?;
            if let Some(r) = eff.apply(key.clone(), v, Source::Cli) {
                refusals.push(r);
            }
        }
        Ok((eff, refusals))
    }

    fn apply_policy(&mut self, path: &Path, text: &str) -> Result<(), PolicyError> {
        let doc = DeTable::parse(text).map_err(|e| syntax_error(path, text, &e))?;
        let mut seen: BTreeMap<String, (&'static str, usize)> = BTreeMap::new();
        for (name, value) in doc.get_ref().iter() {
            let table = name.get_ref().as_ref();
            let line = line_of(text, name.span().start);
            let locked = match table {
                "set" => false,
                "lock" => true,
                other => {
                    return Err(PolicyError::Invalid {
                        path: path.to_owned(),
                        line,
                        key: other.to_string(),
                        message: "a policy file has only the tables [set] and [lock]".into(),
                    })
                }
            };
            let Some(t) = value.get_ref().as_table() else {
                return Err(PolicyError::Invalid {
                    path: path.to_owned(),
                    line,
                    key: table.to_string(),
                    message: format!("expected a table, found a {}", value.get_ref().type_str()),
                });
            };
            for fv in flatten(path, text, t)? {
                let here = (table_name(locked), fv.line);
                if let Some(other) = seen.insert(fv.key.clone(), here) {
                    // Name the later line; the message names the other table.
                    let (line, in_table) = if other.1 > here.1 {
                        (other.1, here.0)
                    } else {
                        (here.1, other.0)
                    };
                    return Err(PolicyError::Invalid {
                        path: path.to_owned(),
                        line,
                        key: fv.key,
                        message: format!(
                            "also given in [{in_table}]: name each key in one table only"
                        ),
                    });
                }
                let meaning = def_of(&fv.key).map_or("", |d| d.meaning);
                self.slots.insert(
                    fv.key,
                    Slot {
                        value: fv.value,
                        source: Source::Policy,
                        locked,
                        refused: Vec::new(),
                        meaning,
                    },
                );
            }
        }
        Ok(())
    }

    /// Apply a value unless the key is locked; a refusal is returned (and
    /// remembered for `flow policy show`).
    fn apply(&mut self, key: String, value: Value, source: Source) -> Option<Refusal> {
        if let Some(slot) = self.slots.get_mut(&key) {
            if slot.locked {
                if !slot.refused.contains(&source) {
                    slot.refused.push(source);
                }
                return Some(Refusal { key, source });
            }
            slot.value = value;
            slot.source = source;
            return None;
        }
        let meaning = def_of(&key).map_or("", |d| d.meaning);
        self.slots.insert(
            key,
            Slot {
                value,
                source,
                locked: false,
                refused: Vec::new(),
                meaning,
            },
        );
        None
    }

    /// Change one key (`Source::Runtime` for `flow settings set`).
    /// `PolicyError::Locked` when the policy locks it.
    pub fn set(&mut self, key: &str, value: &str, source: Source) -> Result<(), PolicyError> {
        let v = parse_key_value(key, value)?;
        match self.apply(key.to_string(), v, source) {
            None => Ok(()),
            Some(r) => Err(self.locked_error(&r.key, r.source)),
        }
    }

    /// The error that tells a user about `r` (the lock won).
    pub fn refusal_error(&self, r: &Refusal) -> PolicyError {
        self.locked_error(&r.key, r.source)
    }

    fn locked_error(&self, key: &str, source: Source) -> PolicyError {
        PolicyError::Locked {
            key: key.to_string(),
            by: source,
            value: self
                .slots
                .get(key)
                .map(|s| s.value.display())
                .unwrap_or_default(),
            policy: self.policy_path.clone(),
        }
    }

    /// A flow file's `[settings]` table applied for one run. A locked key is
    /// `Err(Locked)` naming it. A flow file may only narrow what leaves the
    /// machine: it may switch an exception off or narrow
    /// `services.allowed_ids`, never switch one on or change where egress
    /// goes (`FlowFileWidens`): whoever wrote the flow is not necessarily
    /// whoever runs it.
    pub fn with_flow_settings(&self, table: &[(String, String)]) -> Result<Effective, PolicyError> {
        let mut eff = self.clone();
        for (key, value) in table {
            let v = parse_key_value(key, value)?;
            if self.slots.get(key).is_some_and(|s| s.locked) {
                return Err(self.locked_error(key, Source::FlowFile));
            }
            if let Some(why) = self.widens(key, &v) {
                return Err(PolicyError::FlowFileWidens {
                    key: key.clone(),
                    value: v.display(),
                    why,
                });
            }
            eff.apply(key.clone(), v, Source::FlowFile);
        }
        Ok(eff)
    }

    /// Why `value` for `key` would widen egress, if it would.
    fn widens(&self, key: &str, value: &Value) -> Option<&'static str> {
        match (key, value) {
            (
                "cloud.enabled" | "services.enabled" | "hub.enabled" | "services.allow_ai_output",
                Value::Bool(true),
            ) => {
                if self.slots.get(key).map(|s| &s.value) == Some(&Value::Bool(true)) {
                    None
                } else {
                    Some("a flow file may switch an egress exception off, not on")
                }
            }
            ("services.allowed_ids", Value::List(ids)) => {
                let cur = self.list("services.allowed_ids");
                let any = cur.iter().any(|c| c == "*");
                let subset = ids.iter().all(|i| any || (i != "*" && cur.contains(i)));
                (!subset).then_some("a flow file may only narrow the allowed catalog ids")
            }
            (
                "hub.url" | "hub.signing_key" | "hub.allow_cidrs" | "tls.ca_bundle"
                | "egress.dns_servers",
                _,
            ) => Some("where egress goes and what it trusts is not a flow's to choose"),
            _ => None,
        }
    }

    fn slot(&self, key: &str) -> Option<&Value> {
        self.slots.get(key).map(|s| &s.value)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.slot(key), Some(Value::Bool(true)))
    }

    fn list(&self, key: &str) -> &[String] {
        match self.slot(key) {
            Some(Value::List(l)) => l,
            _ => &[],
        }
    }

    /// `cloud.enabled` (default false).
    pub fn cloud_enabled(&self) -> bool {
        self.flag("cloud.enabled")
    }

    /// `services.enabled` (default false).
    pub fn services_enabled(&self) -> bool {
        self.flag("services.enabled")
    }

    /// `services.allowed_ids` (default `["*"]`) names `id`, or `*`.
    pub fn service_allowed(&self, id: &str) -> bool {
        self.list("services.allowed_ids")
            .iter()
            .any(|a| a == "*" || a == id)
    }

    /// `services.allow_ai_output` (default false).
    pub fn allow_ai_output_to_services(&self) -> bool {
        self.flag("services.allow_ai_output")
    }

    /// `hub.enabled` (default false).
    pub fn hub_enabled(&self) -> bool {
        self.flag("hub.enabled")
    }

    /// `hub.url` (default none).
    pub fn hub_url(&self) -> Option<&str> {
        match self.slot("hub.url") {
            Some(Value::Text(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// `hub.signing_key`: the pinned ed25519 public key of the hub catalog.
    pub fn hub_signing_key(&self) -> Option<[u8; 32]> {
        match self.slot("hub.signing_key") {
            Some(Value::Key(k)) => *k,
            _ => None,
        }
    }

    /// `hub.allow_cidrs` (default none).
    pub fn hub_allow_cidrs(&self) -> &[String] {
        self.list("hub.allow_cidrs")
    }

    /// `tls.ca_bundle` (default none).
    pub fn ca_bundle(&self) -> Option<&Path> {
        match self.slot("tls.ca_bundle") {
            Some(Value::Path(Some(p))) => Some(p),
            _ => None,
        }
    }

    /// `egress.dns_servers` (default empty: use /etc/resolv.conf).
    pub fn dns_servers(&self) -> &[SocketAddr] {
        match self.slot("egress.dns_servers") {
            Some(Value::Addrs(a)) => a,
            _ => &[],
        }
    }

    /// Whether any exception is on, so the egress gateway should run.
    pub fn gateway_wanted(&self) -> bool {
        self.cloud_enabled() || self.services_enabled() || self.hub_enabled()
    }

    /// `None` when the gateway is wanted; else why not, naming each key,
    /// its value and its source.
    pub fn gateway_absent_reason(&self) -> Option<String> {
        if self.gateway_wanted() {
            return None;
        }
        let parts: Vec<String> = ["cloud.enabled", "services.enabled", "hub.enabled"]
            .iter()
            .map(|k| self.describe_key(k))
            .collect();
        Some(format!(
            "no egress exception is enabled: {}",
            parts.join(", ")
        ))
    }

    /// `spool.retention_days` (default 30; 0 keeps runs).
    pub fn retention_days(&self) -> u32 {
        match self.slot("spool.retention_days") {
            Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            _ => 30,
        }
    }

    /// The effective memory floor of a model: the catalog's, or higher if
    /// `models.<id>.memory_floor_mb` says so (settings only make Flow more
    /// conservative).
    pub fn memory_floor_mb(&self, id: &str, catalog_floor: u64) -> u64 {
        match self.slot(&format!("models.{id}.memory_floor_mb")) {
            Some(Value::Int(n)) => (*n).max(catalog_floor),
            _ => catalog_floor,
        }
    }

    /// `key = value (source)`, with `, locked` when the policy locks it: how
    /// messages name a setting that decided something.
    pub fn describe_key(&self, key: &str) -> String {
        match self.slots.get(key) {
            Some(s) => format!(
                "{key} = {} ({}{})",
                s.value.display(),
                s.source.as_str(),
                if s.locked { ", locked" } else { "" }
            ),
            None => format!("{key} is not set"),
        }
    }

    /// Whether the policy locks `key`.
    pub fn locked(&self, key: &str) -> bool {
        self.slots.get(key).is_some_and(|s| s.locked)
    }

    /// Where `key`'s value came from (`None` for an unknown key).
    pub fn source(&self, key: &str) -> Option<Source> {
        self.slots.get(key).map(|s| s.source)
    }

    /// The policy file consulted.
    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// Whether the policy file existed.
    pub fn policy_present(&self) -> bool {
        self.policy_present
    }

    /// Every effective key, sorted.
    pub fn rows(&self) -> Vec<PolicyRow> {
        self.slots
            .iter()
            .map(|(k, s)| PolicyRow {
                key: k.clone(),
                value: s.value.display(),
                source: s.source,
                locked: s.locked,
                meaning: s.meaning.to_string(),
                overridden_by_policy: s.refused.clone(),
            })
            .collect()
    }
}

fn table_name(locked: bool) -> &'static str {
    if locked {
        "lock"
    } else {
        "set"
    }
}

/// Check `key` and parse `value` for it.
fn parse_key_value(key: &str, value: &str) -> Result<Value, PolicyError> {
    let def = def_of(key).ok_or_else(|| PolicyError::UnknownKey {
        key: key.to_string(),
    })?;
    let v = parse_str(def.kind, value).map_err(|message| PolicyError::BadValue {
        key: key.to_string(),
        message,
    })?;
    Ok(v)
}

/// Parse one `--set KEY=VALUE`.
pub fn parse_set_arg(arg: &str) -> Result<(String, String), PolicyError> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| PolicyError::BadArgument {
            arg: arg.to_string(),
        })?;
    let k = k.trim();
    if k.is_empty() {
        return Err(PolicyError::BadArgument {
            arg: arg.to_string(),
        });
    }
    parse_key_value(k, v)?;
    Ok((k.to_string(), v.trim().to_string()))
}

pub(crate) fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> PolicyError {
    let at = toml_errors::locate(text, e);
    PolicyError::Syntax {
        path: path.to_owned(),
        line: at.line,
        message: at.message,
    }
}

/// Parse a settings document (every table flattened to dotted keys).
pub(crate) fn parse_settings(path: &Path, text: &str) -> Result<Vec<FileValue>, PolicyError> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(path, text, &e))?;
    flatten(path, text, doc.get_ref())
}

/// Flatten nested tables to dotted keys (`[services] enabled = true`,
/// `services.enabled = true` and `"services.enabled" = true` are the same
/// key) and check each against its definition.
fn flatten(path: &Path, text: &str, table: &DeTable<'_>) -> Result<Vec<FileValue>, PolicyError> {
    fn walk(
        path: &Path,
        text: &str,
        prefix: &str,
        table: &DeTable<'_>,
        out: &mut Vec<FileValue>,
    ) -> Result<(), PolicyError> {
        for (name, value) in table.iter() {
            let key = if prefix.is_empty() {
                name.get_ref().to_string()
            } else {
                format!("{prefix}.{}", name.get_ref())
            };
            let line = line_of(text, name.span().start);
            if let Some(t) = value.get_ref().as_table() {
                walk(path, text, &key, t, out)?;
                continue;
            }
            let invalid = |message: String| PolicyError::Invalid {
                path: path.to_owned(),
                line,
                key: key.clone(),
                message,
            };
            let def = def_of(&key).ok_or_else(|| invalid("unknown key".into()))?;
            let v = from_toml(def.kind, value.get_ref()).map_err(invalid)?;
            out.push(FileValue {
                key: key.clone(),
                line,
                value: v,
            });
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(path, text, "", table, &mut out)?;
    Ok(out)
}

/// Read the policy file: `None` if it does not exist. Refused unless root
/// owns it and its directory and neither is writable by group or others
/// (directories above may be world-writable only with the sticky bit).
fn read_policy(path: &Path) -> Result<Option<String>, PolicyError> {
    use std::io::Read as _;
    let insecure = |problem: String, fix: String| PolicyError::Insecure {
        path: path.to_owned(),
        problem,
        fix,
    };
    // O_NOFOLLOW: the checks below are about this very file, not where a
    // symlink (perhaps in a user-writable place) points.
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(insecure(
                "it is a symbolic link".into(),
                format!("install the file itself at {}", path.display()),
            ))
        }
        Err(source) => {
            return Err(PolicyError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(insecure(
            "it is not a regular file".into(),
            format!("install a regular file at {}", path.display()),
        ));
    }
    if meta.uid() != 0 {
        return Err(insecure(
            format!("it is owned by uid {}, not root", meta.uid()),
            format!("chown root:root {}", path.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(
            format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {}", path.display()),
        ));
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let mut dir = Some(parent);
    let mut first = true;
    while let Some(d) = dir {
        let m = std::fs::metadata(d).map_err(|source| PolicyError::Read {
            path: d.to_owned(),
            source,
        })?;
        if m.uid() != 0 {
            return Err(insecure(
                format!(
                    "its directory {} is owned by uid {}, not root",
                    d.display(),
                    m.uid()
                ),
                format!("chown root:root {}", d.display()),
            ));
        }
        let writable = m.mode() & 0o022 != 0;
        let sticky = m.mode() & 0o1000 != 0;
        if writable && (first || !sticky) {
            return Err(insecure(
                format!(
                    "its directory {} is writable by group or others (mode {:o})",
                    d.display(),
                    m.mode() & 0o7777
                ),
                format!("chmod go-w {}", d.display()),
            ));
        }
        first = false;
        dir = d.parent();
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p = std::env::temp_dir().join(format!(
                "flow-policy-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            Tmp(p)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            p
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn defaults_parse_and_keep_egress_off() {
        for d in DEFS {
            parse_str(d.kind, d.default).unwrap_or_else(|e| panic!("{}: {e}", d.key));
        }
        let e = Effective::defaults();
        assert!(!e.cloud_enabled());
        assert!(!e.services_enabled());
        assert!(!e.hub_enabled());
        assert!(!e.allow_ai_output_to_services());
        assert!(!e.gateway_wanted());
        assert!(e.service_allowed("anything"));
        assert_eq!(e.hub_url(), None);
        assert_eq!(e.hub_signing_key(), None);
        assert_eq!(e.hub_allow_cidrs(), &[] as &[String]);
        assert_eq!(e.ca_bundle(), None);
        assert_eq!(e.dns_servers(), &[] as &[SocketAddr]);
        assert_eq!(e.retention_days(), 30);
        assert_eq!(e.memory_floor_mb("m", 256), 256);
        assert_eq!(
            e.gateway_absent_reason().unwrap(),
            "no egress exception is enabled: cloud.enabled = false (default), services.enabled = false (default), hub.enabled = false (default)"
        );
        // One row per fixed key, each with a meaning.
        let rows = e.rows();
        assert_eq!(rows.len(), DEFS.len());
        assert!(rows
            .iter()
            .all(|r| !r.meaning.is_empty() && r.source == Source::Default));
    }

    #[test]
    fn precedence_policy_set_settings_cli_runtime_and_lock_over_all() {
        if !is_root() {
            eprintln!("skipped: the policy file must be root-owned; run as root");
            return;
        }
        let t = Tmp::new("prec");
        let policy = t.write(
            "policy.toml",
            "[set]\n\"spool.retention_days\" = 7\nhub.url = \"https://hub.example.com\"\n\"services.allowed_ids\" = [\"a\", \"b\"]\n\n[lock]\n\"cloud.enabled\" = false\nservices.allow_ai_output = false\n",
        );
        let settings = t.write(
            "settings.toml",
            "[spool]\nretention_days = 14\n\n[cloud]\nenabled = true\n\n[hub]\nurl = \"https://mirror.example.com/v1\"\n",
        );
        let cli = [
            kv("hub.url", "https://cli.example.com"),
            kv("cloud.enabled", "true"),
        ];
        let (mut e, refusals) =
            Effective::load_policy_only_for_tests(&policy, &settings, &cli).unwrap();
        assert!(e.policy_present());
        // settings beat policy [set]; cli beats settings.
        assert_eq!(e.retention_days(), 14);
        assert_eq!(e.source("spool.retention_days"), Some(Source::Settings));
        assert_eq!(e.hub_url(), Some("https://cli.example.com"));
        assert_eq!(e.source("hub.url"), Some(Source::Cli));
        // policy [set] beats the default.
        assert!(e.service_allowed("a") && !e.service_allowed("c"));
        assert_eq!(e.source("services.allowed_ids"), Some(Source::Policy));
        // The lock beats settings and cli; both attempts are reported.
        assert!(!e.cloud_enabled());
        assert_eq!(
            refusals,
            vec![
                Refusal {
                    key: "cloud.enabled".into(),
                    source: Source::Settings
                },
                Refusal {
                    key: "cloud.enabled".into(),
                    source: Source::Cli
                },
            ]
        );
        let row = e
            .rows()
            .into_iter()
            .find(|r| r.key == "cloud.enabled")
            .unwrap();
        assert_eq!(
            row,
            PolicyRow {
                key: "cloud.enabled".into(),
                value: "false".into(),
                source: Source::Policy,
                locked: true,
                meaning: DEFS[0].meaning.into(),
                overridden_by_policy: vec![Source::Settings, Source::Cli],
            }
        );
        // runtime beats cli; the lock beats runtime.
        e.set("hub.url", "https://runtime.example.com", Source::Runtime)
            .unwrap();
        assert_eq!(e.hub_url(), Some("https://runtime.example.com"));
        assert_eq!(e.source("hub.url"), Some(Source::Runtime));
        let err = e.set("cloud.enabled", "true", Source::Runtime).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Locked { key, by: Source::Runtime, .. } if key == "cloud.enabled"),
            "{err}"
        );
        assert!(
            err.to_string().contains("locked by the enterprise policy"),
            "{err}"
        );
        assert!(!e.cloud_enabled());
        let err = e
            .set("services.allow_ai_output", "true", Source::Runtime)
            .unwrap_err();
        assert!(matches!(err, PolicyError::Locked { .. }));
        assert!(!e.allow_ai_output_to_services());
    }

    #[test]
    fn missing_policy_is_no_policy() {
        let t = Tmp::new("nopol");
        let settings = t.write("settings.toml", "[services]\nenabled = true\n");
        let (e, r) =
            Effective::load_policy_only_for_tests(&t.0.join("absent.toml"), &settings, &[])
                .unwrap();
        assert!(!e.policy_present());
        assert!(r.is_empty());
        assert!(e.services_enabled());
        assert!(!e.cloud_enabled());
        assert!(e.gateway_wanted());
        assert_eq!(e.gateway_absent_reason(), None);
    }

    #[test]
    fn bad_policy_names_file_line_and_key() {
        if !is_root() {
            eprintln!("skipped: the policy file must be root-owned; run as root");
            return;
        }
        let t = Tmp::new("badpol");
        let cases = [
            (
                "[set]\n\"cloud.enabled\" = \"yes\"\n",
                "policy.toml:2:cloud.enabled: expected true or false, found a string",
            ),
            (
                "[lock]\n\n\"cloud.nope\" = false\n",
                "policy.toml:3:cloud.nope: unknown key",
            ),
            (
                "[set]\nhub.url = \"ftp://x\"\n",
                "policy.toml:2:hub.url: 'ftp://x' is not an http:// or https:// URL",
            ),
            (
                "[other]\nx = 1\n",
                "policy.toml:1:other: a policy file has only the tables [set] and [lock]",
            ),
            (
                "[set]\n\"cloud.enabled\" = false\n[lock]\n\"cloud.enabled\" = false\n",
                "policy.toml:4:cloud.enabled: also given in [set]",
            ),
            (
                "[lock]\n\"services.allowed_ids\" = [\"Bad Id\"]\n",
                "policy.toml:2:services.allowed_ids: 'Bad Id' is not a catalog id",
            ),
            (
                "[set]\n\"hub.allow_cidrs\" = [\"10.0.0.0/33\"]\n",
                "policy.toml:2:hub.allow_cidrs: '10.0.0.0/33' is not a CIDR",
            ),
            (
                "[set]\n\"tls.ca_bundle\" = \"certs/ca.pem\"\n",
                "policy.toml:2:tls.ca_bundle: 'certs/ca.pem' is relative",
            ),
            (
                "[set]\n\"hub.signing_key\" = \"abc\"\n",
                "policy.toml:2:hub.signing_key: expected an ed25519 public key",
            ),
            (
                "[set]\n\"spool.retention_days\" = -1\n",
                "policy.toml:2:spool.retention_days: expected a whole number of days",
            ),
            ("[set]\ncloud.enabled = \n", "policy.toml:2: "),
        ];
        let settings = t.0.join("none.toml");
        for (text, want) in cases {
            let p = t.write("policy.toml", text);
            let e = Effective::load_policy_only_for_tests(&p, &settings, &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_settings_name_file_line_and_key() {
        let t = Tmp::new("badset");
        let policy = t.0.join("absent.toml");
        let cases = [
            (
                "[spool]\nretention_days = 30\nbogus = 1\n",
                "settings.toml:3:spool.bogus: unknown key",
            ),
            (
                "[services]\nenabled = 1\n",
                "settings.toml:2:services.enabled: expected true or false, found a integer",
            ),
            (
                "[egress]\ndns_servers = [\"nameserver\"]\n",
                "settings.toml:2:egress.dns_servers: 'nameserver' is not a name server address",
            ),
            (
                "[models.Bad]\nmemory_floor_mb = 1\n",
                "settings.toml:2:models.Bad.memory_floor_mb: unknown key",
            ),
            ("[spool\n", "settings.toml:1: "),
        ];
        for (text, want) in cases {
            let s = t.write("settings.toml", text);
            let e = Effective::load_policy_only_for_tests(&policy, &s, &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // The existing keys keep working.
        let s = t.write(
            "settings.toml",
            "[spool]\nretention_days = 0\n[models.m]\nmemory_floor_mb = 10\n[egress]\ndns_servers = [\"192.0.2.1\", \"[2001:db8::1]:5353\"]\n[tls]\nca_bundle = \"/etc/ssl/corp.pem\"\n[hub]\nsigning_key = \"0101010101010101010101010101010101010101010101010101010101010101\"\nallow_cidrs = [\"10.0.0.0/8\"]\n",
        );
        let (e, _) = Effective::load_policy_only_for_tests(&policy, &s, &[]).unwrap();
        assert_eq!(e.retention_days(), 0);
        assert_eq!(e.memory_floor_mb("m", 256), 256);
        assert_eq!(e.memory_floor_mb("m", 5), 10);
        assert_eq!(e.memory_floor_mb("other", 5), 5);
        assert_eq!(
            e.dns_servers(),
            &[
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:5353".parse().unwrap()
            ]
        );
        assert_eq!(e.ca_bundle(), Some(Path::new("/etc/ssl/corp.pem")));
        assert_eq!(e.hub_signing_key(), Some([1u8; 32]));
        assert_eq!(e.hub_allow_cidrs(), &["10.0.0.0/8".to_string()]);
        // An unreadable settings file is an error too.
        let dir_as_file = t.0.join("adir");
        std::fs::create_dir(&dir_as_file).unwrap();
        let e = Effective::load_policy_only_for_tests(&policy, &dir_as_file, &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read"), "{e}");
    }

    #[test]
    fn bad_cli_values_are_errors() {
        let t = Tmp::new("cli");
        let none = t.0.join("none.toml");
        for (k, v, want) in [
            ("nope.key", "1", "unknown setting 'nope.key'"),
            (
                "services.enabled",
                "yes",
                "invalid value for services.enabled: expected true or false",
            ),
        ] {
            let e = Effective::load_policy_only_for_tests(&none, &none, &[kv(k, v)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        assert!(matches!(
            parse_set_arg("services.enabled"),
            Err(PolicyError::BadArgument { .. })
        ));
        assert_eq!(
            parse_set_arg("services.allowed_ids=a, b").unwrap(),
            kv("services.allowed_ids", "a, b")
        );
        let (e, _) = Effective::load_policy_only_for_tests(
            &none,
            &none,
            &[kv("services.allowed_ids", "[\"a\", \"b\"]")],
        )
        .unwrap();
        assert!(e.service_allowed("b") && !e.service_allowed("c"));
    }

    #[test]
    fn insecure_policy_files_are_refused() {
        if !is_root() {
            eprintln!("skipped: needs root to chown the policy file");
            return;
        }
        let t = Tmp::new("perm");
        let none = t.0.join("none.toml");
        let p = t.write("policy.toml", "[lock]\n\"cloud.enabled\" = false\n");
        Effective::load_policy_only_for_tests(&p, &none, &[]).unwrap();

        // World-writable file.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o646)).unwrap();
        let e = Effective::load_policy_only_for_tests(&p, &none, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("writable by group or others") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(Effective::load_policy_only_for_tests(&p, &none, &[]).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();

        // Owned by nobody.
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        let e = Effective::load_policy_only_for_tests(&p, &none, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("owned by uid 65534, not root") && e.contains("chown root:root"),
            "{e}"
        );
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();

        // A group-writable directory.
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = Effective::load_policy_only_for_tests(&p, &none, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("its directory") && e.contains("writable"), "{e}");
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o755)).unwrap();

        // A directory owned by nobody.
        std::os::unix::fs::chown(&t.0, Some(65534), None).unwrap();
        let e = Effective::load_policy_only_for_tests(&p, &none, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("its directory") && e.contains("not root"), "{e}");
        std::os::unix::fs::chown(&t.0, Some(0), None).unwrap();

        // A symlink to a good file.
        let link = t.0.join("link.toml");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = Effective::load_policy_only_for_tests(&link, &none, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");

        Effective::load_policy_only_for_tests(&p, &none, &[]).unwrap();
    }

    #[test]
    fn flow_settings_cannot_override_locks_or_widen_egress() {
        let mut base = Effective::defaults();
        base.slots.get_mut("services.enabled").unwrap().locked = true;
        base.slots.get_mut("services.enabled").unwrap().source = Source::Policy;
        let err = base
            .with_flow_settings(&[kv("services.enabled", "false")])
            .unwrap_err();
        assert!(
            matches!(&err, PolicyError::Locked { key, by: Source::FlowFile, .. } if key == "services.enabled"),
            "{err}"
        );
        assert!(
            err.to_string().contains("the flow file cannot change it"),
            "{err}"
        );
        for (k, v) in [
            ("cloud.enabled", "true"),
            ("hub.enabled", "true"),
            ("services.allow_ai_output", "true"),
            ("hub.url", "https://elsewhere.example.com"),
            ("tls.ca_bundle", "/tmp/ca.pem"),
        ] {
            let err = base.with_flow_settings(&[kv(k, v)]).unwrap_err();
            assert!(
                matches!(err, PolicyError::FlowFileWidens { .. }),
                "{k}: {err}"
            );
        }
        let narrow = base
            .with_flow_settings(&[
                kv("services.allowed_ids", "a"),
                kv("spool.retention_days", "3"),
            ])
            .unwrap();
        assert!(narrow.service_allowed("a") && !narrow.service_allowed("b"));
        assert_eq!(
            narrow.source("services.allowed_ids"),
            Some(Source::FlowFile)
        );
        assert_eq!(narrow.retention_days(), 3);
        // Narrowing further is fine, widening back is not.
        narrow
            .with_flow_settings(&[kv("services.allowed_ids", "a")])
            .unwrap();
        assert!(narrow
            .with_flow_settings(&[kv("services.allowed_ids", "*")])
            .is_err());
        // The original is unchanged.
        assert!(base.service_allowed("b"));
        assert!(base.with_flow_settings(&[kv("no.such", "1")]).is_err());
    }

    #[test]
    fn the_shipped_example_policy_locks_the_gateway_off_and_documents_every_key() {
        let text = include_str!("../../deploy/policy.toml");
        let mut e = Effective::defaults();
        e.apply_policy(Path::new("deploy/policy.toml"), text)
            .unwrap();
        for key in ["cloud.enabled", "services.enabled", "hub.enabled"] {
            assert!(e.locked(key), "{key}");
        }
        assert!(!e.gateway_wanted());
        assert_eq!(
            e.gateway_absent_reason().unwrap(),
            "no egress exception is enabled: cloud.enabled = false (policy, locked), services.enabled = false (policy, locked), hub.enabled = false (policy, locked)"
        );
        assert!(e.set("services.enabled", "true", Source::Runtime).is_err());
        for d in DEFS {
            assert!(
                text.contains(&format!("\"{}\"", d.key)),
                "{} is not documented",
                d.key
            );
        }
        assert!(text.contains("\"models.<id>.memory_floor_mb\""));
    }

    #[test]
    fn audit_keys_fit_the_log() {
        let r = Refusal {
            key: "models.smollm2-135m.memory_floor_mb".into(),
            source: Source::Settings,
        };
        assert_eq!(
            r.audit_key().as_str(),
            "models.smollm2_135m.memory_floor_mb"
        );
        assert_eq!(r.audit_source(), audit::SettingSource::SettingsFile);
        assert_eq!(audit_key("cloud.enabled").as_str(), "cloud.enabled");
        assert_eq!(audit_key(&"x".repeat(100)).as_str().len(), 64);
    }
}
