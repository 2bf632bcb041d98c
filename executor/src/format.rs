//! The flow file format: TOML or JSON with one schema, parsed and validated
//! into [`proto::flow::Flow`]. The reference is `docs/flow-format.md`; keep
//! the two in step.
//!
//! Parsing has two stages. Serde reads the file into `Raw*` structs that
//! reject unknown fields and wrong types (with the parser's own line and
//! column). Then [`Problem`]s are checked in a fixed order, so the error a
//! file gets is deterministic: the flow name, each node (id, kind, fields,
//! parameters, template syntax), duplicate ids, each edge (ends, target kind,
//! input name, inputs bound twice), unbound inputs, cycles. For TOML the
//! error carries the line of the offending field, found from the toml
//! crate's spans; JSON errors name the node or edge instead.

use crate::template::{is_ident, Template, TemplateError};
use proto::flow::{Flow, FlowEdge, FlowNode, FlowNodeKind};
use proto::msg::InferParams;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest flow file accepted, in bytes.
pub const MAX_FLOW_BYTES: u64 = 1024 * 1024;
/// Largest `max_tokens` an ai node may ask for.
pub const MAX_TOKENS_LIMIT: u32 = 4096;

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
        "node '{node}': field 'kind': unknown kind '{kind}': use input, template, ai or output"
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Flow(&'static str),
    Node(usize, Option<&'static str>),
    Edge(usize, Option<&'static str>),
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
    check_graph(flow).map_err(|i| *i.problem)
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
    let flow = Flow {
        name: raw.name,
        nodes,
        edges,
    };
    check_graph(&flow)?;
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
        // PLACEHOLDER(service nodes): validated in full by the service-node change.
        FlowNodeKind::Service { .. } => Ok(()),
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
