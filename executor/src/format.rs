//! The flow file format: TOML or JSON with one schema, parsed and validated
//! into [`proto::flow::Flow`]. The reference is `docs/flow-format.md`; keep
//! the two in step.
//!
//! Parsing has two stages. Serde reads the file into `Raw*` structs that
//! reject unknown fields and wrong types (with the parser's own line and
//! column). Then [`Problem`]s are checked in a fixed order, so the error a
//! file gets is deterministic: the flow name, each node (id, kind, fields,
//! parameters, template syntax), duplicate ids, each edge (ends, target kind,
//! input name, inputs bound twice), unbound inputs, cycles, and last the
//! flow's `[settings]` table. For TOML the error carries the line of the
//! offending field, found from the toml crate's spans; JSON errors name the
//! node or edge instead.

use crate::template::{is_ident, Part, Template, TemplateError};
use proto::egress::{path, Method};
use proto::flow::{Flow, FlowEdge, FlowNode, FlowNodeKind};
use proto::msg::InferParams;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest flow file accepted, in bytes.
pub const MAX_FLOW_BYTES: u64 = 1024 * 1024;
/// Largest `max_tokens` an ai node may ask for.
pub const MAX_TOKENS_LIMIT: u32 = 4096;
/// Longest `path` of a service node, in bytes (before substitution).
pub const MAX_SERVICE_PATH: usize = 2048;
/// Longest `content_type` of a service node, in bytes.
pub const MAX_CONTENT_TYPE: usize = 256;
/// Most entries in a flow's `[settings]` table.
pub const MAX_SETTINGS: usize = 64;
/// Longest value in a flow's `[settings]` table, in bytes.
pub const MAX_SETTING_VALUE: usize = 256;
/// The input of a service node that carries the request body.
pub const BODY_INPUT: &str = "body";

/// The two spellings of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "toml",
            Format::Json => "json",
        })
    }
}

/// Where in the flow text an error is: the file (if any) and the line (when
/// the parser knows it), shown as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: Option<PathBuf>,
    /// 1-based.
    pub line: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}", p.display())?,
            None => f.write_str("flow")?,
        }
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("cannot read flow file {}: {source}: check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("flow file {} is larger than {MAX_FLOW_BYTES} bytes: shorten its texts or split the flow", path.display())]
    TooLarge { path: PathBuf },
    #[error("flow file {} must end in .toml or .json: rename it to say which format it is", path.display())]
    Extension { path: PathBuf },
    #[error("{origin}: invalid {format}: {message}")]
    Syntax {
        origin: Origin,
        format: Format,
        message: String,
    },
    #[error("{origin}: {problem}")]
    Invalid {
        origin: Origin,
        problem: Box<Problem>,
    },
}

impl FlowError {
    /// The validation problem, if this is one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            FlowError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// A flow that parses but breaks a rule. Every message names the node (or
/// edge) and the field, and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("field 'name': '{name}' is not a flow name: use 1 to 64 of a-z 0-9 _ -")]
    BadFlowName { name: String },
    #[error("the flow has no nodes: add at least one [[nodes]] table")]
    NoNodes,
    #[error("nodes[{index}]: field 'id': '{id}' is not a node id: use 1 to 64 of a-z 0-9 _ -")]
    BadId { index: usize, id: String },
    #[error("node '{id}': field 'id': nodes[{first}] and nodes[{index}] have the same id: give each node its own id")]
    DuplicateId {
        id: String,
        first: usize,
        index: usize,
    },
    #[error(
        "node '{node}': field 'kind': unknown kind '{kind}': use input, template, ai, output or service"
    )]
    UnknownKind { node: String, kind: String },
    #[error("node '{node}': field '{field}' does not apply to {kind} nodes: remove it")]
    FieldNotForKind {
        node: String,
        kind: &'static str,
        field: &'static str,
    },
    #[error("node '{node}': field '{field}' is required for {kind} nodes: add it")]
    MissingField {
        node: String,
        kind: &'static str,
        field: &'static str,
    },
    #[error("node '{node}': field 'model' is empty: name a model id of the catalog")]
    EmptyModel { node: String },
    #[error("node '{node}': field '{field}' is {value}, outside {range}: use a value in {range}")]
    OutOfRange {
        node: String,
        field: &'static str,
        value: String,
        range: &'static str,
    },
    #[error("node '{node}': field 'stop': entry {index} is empty: remove it")]
    EmptyStop { node: String, index: usize },
    #[error("node '{node}': field 'text': {error}")]
    Template { node: String, error: TemplateError },
    #[error("edge {index} ({from} -> {to}): field '{field}': there is no node '{missing}': declare it under [[nodes]] or fix the id")]
    DanglingEdge {
        index: usize,
        from: String,
        to: String,
        field: &'static str,
        missing: String,
    },
    #[error("edge {index} ({from} -> {to}): field 'to': '{to}' is an input node, which takes no edges: its value comes from --input or its default")]
    EdgeIntoInput {
        index: usize,
        from: String,
        to: String,
    },
    #[error("edge {index} ({from} -> {to}): field 'from': '{from}' is an output node, which feeds no other node: connect from the node that feeds '{from}'")]
    EdgeFromOutput {
        index: usize,
        from: String,
        to: String,
    },
    #[error("edge {index} ({from} -> {to}): field 'input' is required when the target is a template: name one of the placeholders of '{to}'")]
    MissingEdgeInput {
        index: usize,
        from: String,
        to: String,
    },
    #[error("edge {index} ({from} -> {to}): field 'input': {kind} node '{to}' has no input '{input}': {expected}")]
    UnknownEdgeInput {
        index: usize,
        from: String,
        to: String,
        kind: &'static str,
        input: String,
        expected: String,
    },
    #[error("node '{node}': input '{input}' is bound twice, by edges {first} and {second}: remove one of them")]
    BoundTwice {
        node: String,
        input: String,
        first: usize,
        second: usize,
    },
    #[error("node '{node}': placeholder {{{input}}} has no edge: add an edge with to = \"{node}\" and input = \"{input}\"")]
    UnboundPlaceholder { node: String, input: String },
    #[error("node '{node}': ai node has no prompt: add an edge with to = \"{node}\" (its input defaults to \"prompt\")")]
    NoPrompt { node: String },
    #[error("node '{node}': output node has no value: add an edge with to = \"{node}\" (its input defaults to \"value\")")]
    NoValue { node: String },
    #[error("nodes form a cycle: {}: remove one of these edges", cycle_text(.nodes))]
    Cycle { nodes: Vec<String> },
    #[error("node '{node}': field 'service': '{service}' is not a service id: use the id of a service catalog entry (1 to 64 of a-z 0-9 . _ -, starting with a letter or digit)")]
    BadServiceId { node: String, service: String },
    #[error("node '{node}': field 'method': '{method}' is not a method: use GET, HEAD, POST, PUT, PATCH or DELETE")]
    BadMethod { node: String, method: String },
    #[error("node '{node}': field 'path': {reason}")]
    BadServicePath { node: String, reason: PathProblem },
    #[error("node '{node}': field 'content_type': {value:?} is not a media type: use one line of at most 256 printable ASCII characters such as \"application/json\"")]
    BadContentType { node: String, value: String },
    #[error("edge {index} ({from} -> {to}): field 'input': a {method} request has no body: bind '{to}'s body only with POST, PUT, PATCH or DELETE, or name a placeholder of its path")]
    BodyWithoutMethod {
        index: usize,
        from: String,
        to: String,
        method: &'static str,
    },
    #[error("field 'settings': key '{key}' is not a setting key: use 1 to 64 of a-z 0-9 _ . (e.g. \"services.allow_ai_output\")")]
    BadSettingKey { key: String },
    #[error("field 'settings': the value of '{key}' must be one line of at most 256 characters")]
    BadSettingValue { key: String },
    #[error("field 'settings': '{key}' is set twice: set it once")]
    DuplicateSetting { key: String },
    #[error(
        "field 'settings': more than 64 settings: keep the flow's settings to the ones it needs"
    )]
    TooManySettings,
}

/// What is wrong with a service node's `path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("'{path}' must start with '/': write the path below the service's base URL, e.g. \"/items/{{id}}\"")]
    NotAbsolute { path: String },
    #[error("the path is longer than 2048 bytes: shorten it")]
    TooLong,
    #[error("{0}")]
    Template(TemplateError),
    #[error(
        "'{path}' has {what} at character {at}: write the URL path only, with %XX for other bytes"
    )]
    BadChar {
        path: String,
        what: &'static str,
        at: usize,
    },
    #[error("'{path}' has an empty segment ('//'): remove it")]
    EmptySegment { path: String },
    #[error("'{path}' has a '.' or '..' segment: write the path it stands for")]
    DotSegment { path: String },
    #[error("placeholder {{body}} is reserved: input 'body' is the request body; rename the placeholder")]
    ReservedPlaceholder,
}

fn cycle_text(nodes: &[String]) -> String {
    let mut s = nodes.join(" -> ");
    if let Some(first) = nodes.first() {
        s.push_str(" -> ");
        s.push_str(first);
    }
    s
}

/// Where a problem is, for finding its line in a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Site {
    Flow(&'static str),
    Node(usize, Option<&'static str>),
    Edge(usize, Option<&'static str>),
    /// A key of the `[settings]` table.
    Setting(String),
}

#[derive(Debug)]
struct Issue {
    site: Site,
    problem: Box<Problem>,
}

fn issue(site: Site, problem: Problem) -> Issue {
    Issue {
        site,
        problem: Box::new(problem),
    }
}

// ---------------------------------------------------------------------------
// The file schema.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: String,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    edges: Vec<RawEdge>,
    #[serde(default)]
    settings: RawSettings,
}

/// The `[settings]` table in file order. Every value must be a string; a
/// key given twice (possible in JSON) is kept twice, for `build` to report.
#[derive(Debug, Default)]
struct RawSettings(Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawSettings, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawSettings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of key = \"value\" strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawSettings, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(RawSettings(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// One node table. Every kind-specific field is optional here so that a
/// misplaced field gets a message naming the node, not a serde error.
/// Integers are `i64` so that negative values get a range message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    kind: String,
    default: Option<String>,
    text: Option<String>,
    model: Option<String>,
    system: Option<String>,
    chat: Option<bool>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    latency_budget_ms: Option<i64>,
    ignore_eos: Option<bool>,
    cache_prompt: Option<bool>,
    spool: Option<bool>,
    stdout: Option<bool>,
    service: Option<String>,
    method: Option<String>,
    path: Option<String>,
    content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    from: String,
    to: String,
    input: Option<String>,
}

const INPUT_FIELDS: &[&str] = &["default"];
const TEMPLATE_FIELDS: &[&str] = &["text"];
const AI_FIELDS: &[&str] = &[
    "model",
    "system",
    "chat",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "latency_budget_ms",
    "ignore_eos",
    "cache_prompt",
];
const OUTPUT_FIELDS: &[&str] = &["spool", "stdout"];
const SERVICE_FIELDS: &[&str] = &["service", "method", "path", "content_type"];

impl RawNode {
    /// The kind-specific fields present in the file, in schema order.
    fn present(&self) -> Vec<&'static str> {
        let all = [
            ("default", self.default.is_some()),
            ("text", self.text.is_some()),
            ("model", self.model.is_some()),
            ("system", self.system.is_some()),
            ("chat", self.chat.is_some()),
            ("max_tokens", self.max_tokens.is_some()),
            ("temperature", self.temperature.is_some()),
            ("top_p", self.top_p.is_some()),
            ("top_k", self.top_k.is_some()),
            ("seed", self.seed.is_some()),
            ("stop", self.stop.is_some()),
            ("latency_budget_ms", self.latency_budget_ms.is_some()),
            ("ignore_eos", self.ignore_eos.is_some()),
            ("cache_prompt", self.cache_prompt.is_some()),
            ("spool", self.spool.is_some()),
            ("stdout", self.stdout.is_some()),
            ("service", self.service.is_some()),
            ("method", self.method.is_some()),
            ("path", self.path.is_some()),
            ("content_type", self.content_type.is_some()),
        ];
        all.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect()
    }
}

/// Name of a node kind as written in files and messages.
pub fn kind_name(kind: &FlowNodeKind) -> &'static str {
    match kind {
        FlowNodeKind::Input { .. } => "input",
        FlowNodeKind::Template { .. } => "template",
        FlowNodeKind::Ai { .. } => "ai",
        FlowNodeKind::Output { .. } => "output",
        FlowNodeKind::Service { .. } => "service",
    }
}

// ---------------------------------------------------------------------------
// Entry points.

/// Reads, parses and validates a flow file; the format comes from the
/// extension (`.toml` or `.json`).
pub fn parse_file(path: &Path) -> Result<Flow, FlowError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        _ => {
            return Err(FlowError::Extension {
                path: path.to_owned(),
            })
        }
    };
    let read_err = |source| FlowError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    // Read one byte past the limit instead of trusting the size in the
    // metadata: the file may grow, or be a pipe.
    file.take(MAX_FLOW_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_FLOW_BYTES {
        return Err(FlowError::TooLarge {
            path: path.to_owned(),
        });
    }
    parse_text(&text, format, Some(path))
}

/// Parses and validates flow text. Errors carry no file name.
pub fn parse_str(text: &str, format: Format) -> Result<Flow, FlowError> {
    parse_text(text, format, None)
}

fn parse_text(text: &str, format: Format, file: Option<&Path>) -> Result<Flow, FlowError> {
    let origin = |line| Origin {
        file: file.map(Path::to_owned),
        line,
    };
    let raw: RawFlow = match format {
        Format::Toml => toml::from_str(text).map_err(|e| FlowError::Syntax {
            origin: origin(e.span().map(|s| line_of(text, s.start))),
            format,
            message: plain_types(e.message().trim_end()),
        })?,
        Format::Json => serde_json::from_str(text).map_err(|e| {
            let line = (e.line() > 0).then_some(e.line());
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = plain_types(full.strip_suffix(&suffix).unwrap_or(&full));
            FlowError::Syntax {
                origin: origin(line),
                format,
                message,
            }
        })?,
    };
    build(raw).map_err(|i| {
        let line = match format {
            Format::Toml => toml_site_line(text, i.site),
            Format::Json => None,
        };
        FlowError::Invalid {
            origin: origin(line),
            problem: i.problem,
        }
    })
}

/// Serde names Rust types in its messages; say what to write instead.
fn plain_types(message: &str) -> String {
    message
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
}

/// Checks a flow that did not come from a file (for instance, one received
/// over IPC) against the same rules as [`parse_str`].
pub fn validate(flow: &Flow) -> Result<(), Problem> {
    if !is_ident(&flow.name) {
        return Err(Problem::BadFlowName {
            name: flow.name.clone(),
        });
    }
    if flow.nodes.is_empty() {
        return Err(Problem::NoNodes);
    }
    for (index, node) in flow.nodes.iter().enumerate() {
        if !is_ident(&node.id) {
            return Err(Problem::BadId {
                index,
                id: node.id.clone(),
            });
        }
        check_kind(&node.id, &node.kind).map_err(|(_, p)| *p)?;
    }
    check_graph(flow).map_err(|i| *i.problem)?;
    check_settings(&flow.settings).map_err(|i| *i.problem)
}

/// Whether `s` is a setting key: `[a-z0-9_.]{1,64}` (the audit log's rule).
pub fn is_setting_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// Keys, values, count and duplicates of a `[settings]` table, in order.
fn check_settings(settings: &[(String, String)]) -> Result<(), Issue> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (key, value) in settings {
        let at = || Site::Setting(key.clone());
        if !is_setting_key(key) {
            return Err(issue(at(), Problem::BadSettingKey { key: key.clone() }));
        }
        if value.len() > MAX_SETTING_VALUE || value.chars().any(char::is_control) {
            return Err(issue(at(), Problem::BadSettingValue { key: key.clone() }));
        }
        if !seen.insert(key) {
            return Err(issue(at(), Problem::DuplicateSetting { key: key.clone() }));
        }
    }
    if settings.len() > MAX_SETTINGS {
        return Err(issue(Site::Flow("settings"), Problem::TooManySettings));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Validation.

fn build(raw: RawFlow) -> Result<Flow, Issue> {
    if !is_ident(&raw.name) {
        return Err(issue(
            Site::Flow("name"),
            Problem::BadFlowName { name: raw.name },
        ));
    }
    if raw.nodes.is_empty() {
        return Err(issue(Site::Flow("nodes"), Problem::NoNodes));
    }
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    for (index, rn) in raw.nodes.into_iter().enumerate() {
        nodes.push(build_node(index, rn)?);
    }
    check_unique(&nodes)?;
    let kinds: BTreeMap<&str, &FlowNodeKind> =
        nodes.iter().map(|n| (n.id.as_str(), &n.kind)).collect();
    // An edge without `input` takes its target's default; where there is
    // none (templates, inputs, unknown targets) `check_graph` reports it.
    let edges = raw
        .edges
        .into_iter()
        .map(|re| {
            let input = re.input.unwrap_or_else(|| {
                match kinds.get(re.to.as_str()) {
                    Some(FlowNodeKind::Ai { .. }) => "prompt",
                    Some(FlowNodeKind::Output { .. }) => "value",
                    Some(FlowNodeKind::Service { .. }) => BODY_INPUT,
                    _ => "",
                }
                .to_owned()
            });
            FlowEdge {
                from: re.from,
                to: re.to,
                input,
            }
        })
        .collect();
    let mut flow = Flow {
        name: raw.name,
        nodes,
        edges,
        settings: raw.settings.0,
    };
    check_graph(&flow)?;
    // In file order, so that the first bad key in the file is the error.
    check_settings(&flow.settings)?;
    flow.settings.sort();
    Ok(flow)
}

fn build_node(index: usize, rn: RawNode) -> Result<FlowNode, Issue> {
    let at = |field| Site::Node(index, Some(field));
    if !is_ident(&rn.id) {
        return Err(issue(
            at("id"),
            Problem::BadId {
                index,
                id: rn.id.clone(),
            },
        ));
    }
    let (kind_str, allowed): (&'static str, &[&str]) = match rn.kind.as_str() {
        "input" => ("input", INPUT_FIELDS),
        "template" => ("template", TEMPLATE_FIELDS),
        "ai" => ("ai", AI_FIELDS),
        "output" => ("output", OUTPUT_FIELDS),
        "service" => ("service", SERVICE_FIELDS),
        _ => {
            return Err(issue(
                at("kind"),
                Problem::UnknownKind {
                    node: rn.id,
                    kind: rn.kind,
                },
            ))
        }
    };
    if let Some(field) = rn.present().into_iter().find(|f| !allowed.contains(f)) {
        return Err(issue(
            at(field),
            Problem::FieldNotForKind {
                node: rn.id,
                kind: kind_str,
                field,
            },
        ));
    }
    let id = rn.id.clone();
    let range = |field: &'static str, value: String, range: &'static str| {
        issue(
            at(field),
            Problem::OutOfRange {
                node: id.clone(),
                field,
                value,
                range,
            },
        )
    };
    let kind = match kind_str {
        "input" => FlowNodeKind::Input {
            default: rn.default,
        },
        "template" => match rn.text {
            Some(text) => FlowNodeKind::Template { text },
            None => {
                return Err(issue(
                    Site::Node(index, None),
                    Problem::MissingField {
                        node: rn.id,
                        kind: "template",
                        field: "text",
                    },
                ))
            }
        },
        "output" => FlowNodeKind::Output {
            spool: rn.spool.unwrap_or(true),
            stdout: rn.stdout.unwrap_or(true),
        },
        "service" => {
            let missing = |field| {
                issue(
                    Site::Node(index, None),
                    Problem::MissingField {
                        node: id.clone(),
                        kind: "service",
                        field,
                    },
                )
            };
            let service = rn.service.ok_or_else(|| missing("service"))?;
            let method = rn.method.ok_or_else(|| missing("method"))?;
            let path = rn.path.ok_or_else(|| missing("path"))?;
            let method = Method::parse(&method).ok_or_else(|| {
                issue(
                    at("method"),
                    Problem::BadMethod {
                        node: id.clone(),
                        method,
                    },
                )
            })?;
            FlowNodeKind::Service {
                service,
                method,
                path,
                content_type: rn.content_type,
            }
        }
        _ => {
            let Some(model) = rn.model else {
                return Err(issue(
                    Site::Node(index, None),
                    Problem::MissingField {
                        node: rn.id,
                        kind: "ai",
                        field: "model",
                    },
                ));
            };
            let mut params = InferParams::default();
            if let Some(m) = rn.max_tokens {
                params.max_tokens = u32::try_from(m)
                    .ok()
                    .filter(|m| (1..=MAX_TOKENS_LIMIT).contains(m))
                    .ok_or_else(|| range("max_tokens", m.to_string(), "1..=4096"))?;
            }
            if let Some(t) = rn.temperature {
                if !(0.0..=2.0).contains(&t) {
                    return Err(range("temperature", t.to_string(), "0..=2"));
                }
                params.temperature_milli = to_milli(t);
            }
            if let Some(p) = rn.top_p {
                if !(0.0..=1.0).contains(&p) {
                    return Err(range("top_p", p.to_string(), "0..=1"));
                }
                params.top_p_milli = to_milli(p);
            }
            if let Some(k) = rn.top_k {
                params.top_k = u32::try_from(k)
                    .map_err(|_| range("top_k", k.to_string(), "0..=4294967295"))?;
            }
            if let Some(s) = rn.seed {
                params.seed = Some(
                    u32::try_from(s).map_err(|_| range("seed", s.to_string(), "0..=4294967295"))?,
                );
            }
            if let Some(stop) = rn.stop {
                params.stop = stop;
            }
            params.ignore_eos = rn.ignore_eos.unwrap_or(false);
            params.cache_prompt = rn.cache_prompt.unwrap_or(true);
            let latency_budget_ms =
                match rn.latency_budget_ms {
                    None => None,
                    Some(b) => Some(u32::try_from(b).ok().filter(|b| *b > 0).ok_or_else(|| {
                        range("latency_budget_ms", b.to_string(), "1..=4294967295")
                    })?),
                };
            FlowNodeKind::Ai {
                model,
                system: rn.system,
                chat: rn.chat.unwrap_or(true),
                params,
                latency_budget_ms,
            }
        }
    };
    check_kind(&rn.id, &kind).map_err(|(site_field, problem)| Issue {
        site: at(site_field),
        problem,
    })?;
    Ok(FlowNode { id: rn.id, kind })
}

/// Thousandths, for the `*_milli` fields of [`InferParams`]. The caller has
/// checked that `x` is in a small non-negative range.
fn to_milli(x: f64) -> u32 {
    // In range by the caller's check, so the cast cannot saturate.
    (x * 1000.0).round() as u32
}

/// Rules on one node's own fields, shared by files and IPC flows. Returns
/// the field at fault with the problem.
fn check_kind(id: &str, kind: &FlowNodeKind) -> Result<(), (&'static str, Box<Problem>)> {
    let node = || id.to_owned();
    let fail = |field, problem| Err((field, Box::new(problem)));
    let out = |field, value: String, range| {
        fail(
            field,
            Problem::OutOfRange {
                node: node(),
                field,
                value,
                range,
            },
        )
    };
    match kind {
        FlowNodeKind::Input { .. } | FlowNodeKind::Output { .. } => Ok(()),
        FlowNodeKind::Service {
            service,
            path,
            content_type,
            ..
        } => {
            if !is_service_id(service) {
                return fail(
                    "service",
                    Problem::BadServiceId {
                        node: node(),
                        service: service.clone(),
                    },
                );
            }
            if let Err(reason) = check_service_path(path) {
                return fail(
                    "path",
                    Problem::BadServicePath {
                        node: node(),
                        reason,
                    },
                );
            }
            if let Some(ct) = content_type {
                let ok = !ct.trim().is_empty()
                    && ct.len() <= MAX_CONTENT_TYPE
                    && ct.bytes().all(|b| (0x20..0x7f).contains(&b));
                if !ok {
                    return fail(
                        "content_type",
                        Problem::BadContentType {
                            node: node(),
                            value: ct.clone(),
                        },
                    );
                }
            }
            Ok(())
        }
        FlowNodeKind::Template { text } => match Template::parse(text) {
            Ok(_) => Ok(()),
            Err(error) => fail(
                "text",
                Problem::Template {
                    node: node(),
                    error,
                },
            ),
        },
        FlowNodeKind::Ai {
            model,
            params,
            latency_budget_ms,
            ..
        } => {
            if model.trim().is_empty() {
                return fail("model", Problem::EmptyModel { node: node() });
            }
            if !(1..=MAX_TOKENS_LIMIT).contains(&params.max_tokens) {
                return out("max_tokens", params.max_tokens.to_string(), "1..=4096");
            }
            if params.temperature_milli > 2000 {
                return out("temperature", milli_text(params.temperature_milli), "0..=2");
            }
            if params.top_p_milli > 1000 {
                return out("top_p", milli_text(params.top_p_milli), "0..=1");
            }
            if *latency_budget_ms == Some(0) {
                return out("latency_budget_ms", "0".to_owned(), "1..=4294967295");
            }
            if let Some(index) = params.stop.iter().position(String::is_empty) {
                return fail(
                    "stop",
                    Problem::EmptyStop {
                        node: node(),
                        index,
                    },
                );
            }
            Ok(())
        }
    }
}

fn milli_text(m: u32) -> String {
    format!("{}.{:03}", m / 1000, m % 1000)
}

fn check_unique(nodes: &[FlowNode]) -> Result<(), Issue> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, n) in nodes.iter().enumerate() {
        if let Some(&first) = seen.get(n.id.as_str()) {
            return Err(issue(
                Site::Node(index, Some("id")),
                Problem::DuplicateId {
                    id: n.id.clone(),
                    first,
                    index,
                },
            ));
        }
        seen.insert(&n.id, index);
    }
    Ok(())
}

/// Rules across nodes: unique ids, edges, bound inputs, no cycles.
fn check_graph(flow: &Flow) -> Result<(), Issue> {
    check_unique(&flow.nodes)?;
    let by_id: BTreeMap<&str, (usize, &FlowNode)> = flow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), (i, n)))
        .collect();
    let templates: BTreeMap<&str, Template> = flow
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            FlowNodeKind::Template { text } => {
                Template::parse(text).ok().map(|t| (n.id.as_str(), t))
            }
            _ => None,
        })
        .collect();
    // (node, input) → first edge binding it.
    let mut bound: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (index, e) in flow.edges.iter().enumerate() {
        let site = |field| Site::Edge(index, Some(field));
        let dangling = |field, missing: &str| {
            issue(
                site(field),
                Problem::DanglingEdge {
                    index,
                    from: e.from.clone(),
                    to: e.to.clone(),
                    field,
                    missing: missing.to_owned(),
                },
            )
        };
        let Some((_, from)) = by_id.get(e.from.as_str()) else {
            return Err(dangling("from", &e.from));
        };
        let Some((_, to)) = by_id.get(e.to.as_str()) else {
            return Err(dangling("to", &e.to));
        };
        if let FlowNodeKind::Output { .. } = from.kind {
            return Err(issue(
                site("from"),
                Problem::EdgeFromOutput {
                    index,
                    from: e.from.clone(),
                    to: e.to.clone(),
                },
            ));
        }
        let unknown = |expected: String| {
            issue(
                site("input"),
                Problem::UnknownEdgeInput {
                    index,
                    from: e.from.clone(),
                    to: e.to.clone(),
                    kind: kind_name(&to.kind),
                    input: e.input.clone(),
                    expected,
                },
            )
        };
        match &to.kind {
            FlowNodeKind::Input { .. } => {
                return Err(issue(
                    site("to"),
                    Problem::EdgeIntoInput {
                        index,
                        from: e.from.clone(),
                        to: e.to.clone(),
                    },
                ))
            }
            FlowNodeKind::Ai { .. } if e.input != "prompt" => {
                return Err(unknown("use \"prompt\" or leave input out".to_owned()))
            }
            FlowNodeKind::Output { .. } if e.input != "value" => {
                return Err(unknown("use \"value\" or leave input out".to_owned()))
            }
            FlowNodeKind::Service { method, path, .. } => {
                if e.input == BODY_INPUT {
                    if matches!(method, Method::Get | Method::Head) {
                        return Err(issue(
                            site("input"),
                            Problem::BodyWithoutMethod {
                                index,
                                from: e.from.clone(),
                                to: e.to.clone(),
                                method: method.as_str(),
                            },
                        ));
                    }
                } else {
                    let names = service_placeholders(path);
                    if !names.contains(&e.input) {
                        let list: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
                        let expected = if list.is_empty() {
                            "use \"body\" (the request body) or leave input out; its path has no placeholders".to_owned()
                        } else {
                            format!(
                                "use \"body\" (the request body) or leave input out, or one of its path placeholders {}",
                                list.join(", ")
                            )
                        };
                        return Err(unknown(expected));
                    }
                }
            }
            FlowNodeKind::Template { .. } => {
                if e.input.is_empty() {
                    return Err(issue(
                        Site::Edge(index, None),
                        Problem::MissingEdgeInput {
                            index,
                            from: e.from.clone(),
                            to: e.to.clone(),
                        },
                    ));
                }
                let names = templates
                    .get(e.to.as_str())
                    .map(Template::placeholders)
                    .unwrap_or_default();
                if !names.contains(&e.input.as_str()) {
                    let expected = if names.is_empty() {
                        "its text has no placeholders: add {name} to the text or remove the edge"
                            .to_owned()
                    } else {
                        let list: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
                        format!("its placeholders are {}", list.join(", "))
                    };
                    return Err(unknown(expected));
                }
            }
            _ => {}
        }
        if let Some(&first) = bound.get(&(e.to.as_str(), e.input.as_str())) {
            return Err(issue(
                site("input"),
                Problem::BoundTwice {
                    node: e.to.clone(),
                    input: e.input.clone(),
                    first,
                    second: index,
                },
            ));
        }
        bound.insert((&e.to, &e.input), index);
    }
    for (index, n) in flow.nodes.iter().enumerate() {
        let has = |input: &str| bound.contains_key(&(n.id.as_str(), input));
        let site = Site::Node(index, None);
        match &n.kind {
            FlowNodeKind::Template { .. } => {
                if let Some(t) = templates.get(n.id.as_str()) {
                    if let Some(missing) = t.placeholders().into_iter().find(|p| !has(p)) {
                        return Err(issue(
                            Site::Node(index, Some("text")),
                            Problem::UnboundPlaceholder {
                                node: n.id.clone(),
                                input: missing.to_owned(),
                            },
                        ));
                    }
                }
            }
            FlowNodeKind::Ai { .. } if !has("prompt") => {
                return Err(issue(site, Problem::NoPrompt { node: n.id.clone() }))
            }
            FlowNodeKind::Output { .. } if !has("value") => {
                return Err(issue(site, Problem::NoValue { node: n.id.clone() }))
            }
            FlowNodeKind::Service { path, .. } => {
                if let Some(missing) = service_placeholders(path).into_iter().find(|p| !has(p)) {
                    return Err(issue(
                        Site::Node(index, Some("path")),
                        Problem::UnboundPlaceholder {
                            node: n.id.clone(),
                            input: missing,
                        },
                    ));
                }
            }
            _ => {}
        }
    }
    check_acyclic(flow, &by_id)
}

/// Depth-first search in node and edge order, so the cycle reported is
/// deterministic. Iterative: a long chain must not overflow the stack.
fn check_acyclic(flow: &Flow, by_id: &BTreeMap<&str, (usize, &FlowNode)>) -> Result<(), Issue> {
    let n = flow.nodes.len();
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (ei, e) in flow.edges.iter().enumerate() {
        if let (Some((f, _)), Some((t, _))) = (by_id.get(e.from.as_str()), by_id.get(e.to.as_str()))
        {
            out[*f].push((*t, ei));
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; n];
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge position)
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Open;
        while let Some(top) = stack.last_mut() {
            let (v, pos) = *top;
            if let Some(&(w, ei)) = out[v].get(pos) {
                top.1 += 1;
                match mark[w] {
                    Mark::New => {
                        mark[w] = Mark::Open;
                        stack.push((w, 0));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                        let nodes = stack[start..]
                            .iter()
                            .map(|&(x, _)| flow.nodes[x].id.clone())
                            .collect();
                        return Err(issue(Site::Edge(ei, None), Problem::Cycle { nodes }));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[v] = Mark::Done;
                stack.pop();
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Service nodes.

/// Whether `s` is a service catalog id (= a connection name):
/// `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn is_service_id(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The placeholder names of a service node's path, in order, without
/// repeats (none if the path does not parse).
pub fn service_placeholders(path: &str) -> Vec<String> {
    Template::parse(path)
        .map(|t| t.placeholders().into_iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The segments of a service node's path before any query, for matching
/// against a catalog entry's path patterns: `Some(text)` for a literal
/// segment, `None` for one holding a placeholder (its value becomes exactly
/// one segment). `/items/{id}/raw` → `[Some("items"), None, Some("raw")]`;
/// `/` → `[Some("")]`.
pub fn service_path_segments(path: &str) -> Vec<Option<&str>> {
    let before_query = path.split('?').next().unwrap_or("");
    let rest = before_query.strip_prefix('/').unwrap_or(before_query);
    rest.split('/')
        .map(|seg| (!seg.contains('{')).then_some(seg))
        .collect()
}

/// Bytes allowed as they are in a path (and query) besides `%` escapes:
/// RFC 3986 pchars, `/`, `?` and the braces of placeholders.
fn path_byte_ok(b: u8) -> bool {
    path::is_pchar(b) || matches!(b, b'/' | b'?' | b'{' | b'}')
}

/// The rules on a service node's `path`: absolute, short, placeholders as in
/// templates (but none named `body`, and no literal braces), URL path
/// characters only, no empty or dot segments before the query.
pub fn check_service_path(path: &str) -> Result<(), PathProblem> {
    if !path.starts_with('/') {
        return Err(PathProblem::NotAbsolute {
            path: path.to_owned(),
        });
    }
    if path.len() > MAX_SERVICE_PATH {
        return Err(PathProblem::TooLong);
    }
    let template = Template::parse(path).map_err(PathProblem::Template)?;
    let bad = |what, at| {
        Err(PathProblem::BadChar {
            path: path.to_owned(),
            what,
            at,
        })
    };
    let chars: Vec<char> = path.chars().collect();
    for (at, &c) in chars.iter().enumerate() {
        let what = match c {
            ' ' => "a space",
            '#' => "a fragment ('#')",
            c if c.is_control() => "a control character",
            c if !c.is_ascii() => "a non-ASCII character",
            '%' => {
                let hex = |i: usize| chars.get(i).is_some_and(char::is_ascii_hexdigit);
                if hex(at + 1) && hex(at + 2) {
                    continue;
                }
                "a '%' that starts no %XX escape"
            }
            c if path_byte_ok(c as u8) => continue,
            _ => "a character not allowed in a URL",
        };
        return bad(what, at);
    }
    let literal_brace = template
        .parts()
        .iter()
        .any(|p| matches!(p, Part::Literal(l) if l.contains(['{', '}'])));
    if literal_brace {
        let at = path
            .find("{{")
            .or_else(|| path.find("}}"))
            .map_or(0, |b| path[..b].chars().count());
        return bad("a literal brace", at);
    }
    if template.placeholders().contains(&BODY_INPUT) {
        return Err(PathProblem::ReservedPlaceholder);
    }
    let segments: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .skip(1)
        .collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() && i + 1 < segments.len() {
            return Err(PathProblem::EmptySegment {
                path: path.to_owned(),
            });
        }
        if path::is_dot_segment(seg) {
            return Err(PathProblem::DotSegment {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// The first `ai` node (nearest first, then in edge order) from whose
/// output a path of edges leads into `node`: through its body, a path
/// placeholder, or anything upstream of them. Every node downstream of an
/// ai node carries its output (templates embed it, services may echo it),
/// so the taint follows every edge. `None` when no ai node is upstream.
pub fn ai_source<'f>(flow: &'f Flow, node: &str) -> Option<&'f str> {
    let kinds: BTreeMap<&str, &FlowNodeKind> = flow
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), &n.kind))
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::from([node]);
    let mut queue: VecDeque<&str> = VecDeque::from([node]);
    while let Some(n) = queue.pop_front() {
        for e in flow.edges.iter().filter(|e| e.to == n) {
            let from = e.from.as_str();
            if !seen.insert(from) {
                continue;
            }
            match kinds.get(from) {
                Some(FlowNodeKind::Ai { .. }) => return Some(from),
                Some(_) => queue.push_back(from),
                None => {}
            }
        }
    }
    None
}

/// Whether any path leads from an `ai` node's output into `node` (see
/// [`ai_source`]). The broker refuses such a service node unless the
/// policy key `services.allow_ai_output` allows it, and the gateway records
/// the answer on every request of that node.
pub fn body_from_ai(flow: &Flow, node: &str) -> bool {
    ai_source(flow, node).is_some()
}

// ---------------------------------------------------------------------------
// TOML lines.

fn line_of(text: &str, byte: usize) -> usize {
    let end = byte.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of a problem's site in TOML text: the field's key if the table
/// has it, else the table. `None` if the text cannot be re-read.
fn toml_site_line(text: &str, site: Site) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let root = doc.get_ref();
    let key_span = |table: &DeTable<'_>, field: &str| {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == field)
            .map(|(k, _)| k.span())
    };
    let (section, index, field) = match site {
        Site::Flow(field) => return key_span(root, field).map(|s| line_of(text, s.start)),
        Site::Setting(key) => {
            let (_, table) = root
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == "settings")?;
            let DeValue::Table(table) = table.get_ref() else {
                return None;
            };
            let span = key_span(table, &key).unwrap_or_else(|| {
                root.iter()
                    .find(|(k, _)| k.get_ref().as_ref() == "settings")
                    .map_or(0..0, |(k, _)| k.span())
            });
            return Some(line_of(text, span.start));
        }
        Site::Node(i, f) => ("nodes", i, f),
        Site::Edge(i, f) => ("edges", i, f),
    };
    let (_, array) = root.iter().find(|(k, _)| k.get_ref().as_ref() == section)?;
    let DeValue::Array(items) = array.get_ref() else {
        return None;
    };
    let item = items.get(index)?;
    let DeValue::Table(table) = item.get_ref() else {
        return None;
    };
    let span = field
        .and_then(|f| key_span(table, f))
        // Without the field, the line of the table's first key; the span of
        // an array-of-tables item may start at its header or its body.
        .or_else(|| table.iter().map(|(k, _)| k.span()).min_by_key(|s| s.start))
        .unwrap_or_else(|| item.span());
    Some(line_of(text, span.start))
}

#[cfg(test)]
mod tests;
