use super::*;
use proto::egress::Method;

const HAIKU_TOML: &str = r#"name = "haiku"
[[nodes]]
id = "topic"
kind = "input"
default = "autumn"
[[nodes]]
id = "prompt"
kind = "template"
text = "Write a haiku about {topic}."
[[nodes]]
id = "answer"
kind = "ai"
model = "smollm2-135m-instruct"
max_tokens = 64
[[nodes]]
id = "out"
kind = "output"
[[edges]]
from = "topic"
to = "prompt"
input = "topic"
[[edges]]
from = "prompt"
to = "answer"
[[edges]]
from = "answer"
to = "out"
"#;

const HAIKU_JSON: &str = r#"{
  "name": "haiku",
  "nodes": [
    {"id": "topic", "kind": "input", "default": "autumn"},
    {"id": "prompt", "kind": "template", "text": "Write a haiku about {topic}."},
    {"id": "answer", "kind": "ai", "model": "smollm2-135m-instruct", "max_tokens": 64},
    {"id": "out", "kind": "output"}
  ],
  "edges": [
    {"from": "topic", "to": "prompt", "input": "topic"},
    {"from": "prompt", "to": "answer"},
    {"from": "answer", "to": "out"}
  ]
}"#;

fn node(id: &str, kind: FlowNodeKind) -> FlowNode {
    FlowNode {
        id: id.to_owned(),
        kind,
    }
}

fn edge(from: &str, to: &str, input: &str) -> FlowEdge {
    FlowEdge {
        from: from.to_owned(),
        to: to.to_owned(),
        input: input.to_owned(),
    }
}

fn haiku_flow() -> Flow {
    Flow {
        name: "haiku".into(),
        nodes: vec![
            node(
                "topic",
                FlowNodeKind::Input {
                    default: Some("autumn".into()),
                },
            ),
            node(
                "prompt",
                FlowNodeKind::Template {
                    text: "Write a haiku about {topic}.".into(),
                },
            ),
            node(
                "answer",
                FlowNodeKind::Ai {
                    model: "smollm2-135m-instruct".into(),
                    system: None,
                    chat: true,
                    params: InferParams {
                        max_tokens: 64,
                        ..InferParams::default()
                    },
                    latency_budget_ms: None,
                },
            ),
            node(
                "out",
                FlowNodeKind::Output {
                    spool: true,
                    stdout: true,
                },
            ),
        ],
        edges: vec![
            edge("topic", "prompt", "topic"),
            edge("prompt", "answer", "prompt"),
            edge("answer", "out", "value"),
        ],
        settings: Vec::new(),
    }
}

/// The problem and line a TOML text gets.
fn toml_problem(text: &str) -> (Problem, Option<usize>) {
    match parse_str(text, Format::Toml) {
        Err(FlowError::Invalid { origin, problem }) => (*problem, origin.line),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// A small valid flow to break: input `a` → template `t` ("{a}") → output
/// `o`. Extra node tables and edges are appended.
fn small(extra_nodes: &str, extra_edges: &str) -> String {
    format!(
        r#"name = "small"
[[nodes]]
id = "a"
kind = "input"
[[nodes]]
id = "t"
kind = "template"
text = "{{a}}"
[[nodes]]
id = "o"
kind = "output"
{extra_nodes}
[[edges]]
from = "a"
to = "t"
input = "a"
[[edges]]
from = "t"
to = "o"
{extra_edges}"#
    )
}

/// `small` plus an ai node `m` with `fields`, fed by `t`.
fn with_ai(fields: &str) -> String {
    small(
        &format!("[[nodes]]\nid = \"m\"\nkind = \"ai\"\n{fields}\n"),
        "[[edges]]\nfrom = \"t\"\nto = \"m\"\n",
    )
}

#[test]
fn haiku_toml_parses_to_the_expected_flow() {
    assert_eq!(parse_str(HAIKU_TOML, Format::Toml).unwrap(), haiku_flow());
}

#[test]
fn haiku_json_equals_haiku_toml() {
    assert_eq!(
        parse_str(HAIKU_JSON, Format::Json).unwrap(),
        parse_str(HAIKU_TOML, Format::Toml).unwrap()
    );
}

#[test]
fn shipped_examples_are_valid_and_json_matches_toml() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let hello = parse_file(&dir.join("hello.toml")).unwrap();
    assert_eq!(hello.name, "hello");
    assert!(hello
        .nodes
        .iter()
        .all(|n| !matches!(n.kind, FlowNodeKind::Ai { .. })));
    let haiku = parse_file(&dir.join("haiku.toml")).unwrap();
    // The shipped example samples (temperature 0.7, seed 7) for livelier text.
    let mut expected = haiku_flow();
    for n in &mut expected.nodes {
        if let FlowNodeKind::Ai { params, .. } = &mut n.kind {
            params.temperature_milli = 700;
            params.seed = Some(7);
        }
    }
    assert_eq!(haiku, expected);
    assert_eq!(parse_file(&dir.join("haiku.json")).unwrap(), haiku);
    let branches = parse_file(&dir.join("branches.toml")).unwrap();
    let ai = branches
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, FlowNodeKind::Ai { .. }))
        .count();
    assert_eq!(ai, 2);
}

#[test]
fn ai_parameters_convert_to_milli_fields() {
    let text = with_ai(
        r#"model = "m1"
system = "be brief"
chat = false
max_tokens = 4096
temperature = 0.7
top_p = 0.95
top_k = 0
seed = 4294967295
stop = ["\n\n", "END"]
latency_budget_ms = 1500"#,
    );
    let flow = parse_str(&text, Format::Toml).unwrap();
    assert_eq!(
        flow.nodes[3].kind,
        FlowNodeKind::Ai {
            model: "m1".into(),
            system: Some("be brief".into()),
            chat: false,
            params: InferParams {
                max_tokens: 4096,
                temperature_milli: 700,
                top_p_milli: 950,
                top_k: 0,
                seed: Some(u32::MAX),
                stop: vec!["\n\n".into(), "END".into()],
                ignore_eos: false,
                cache_prompt: true,
            },
            latency_budget_ms: Some(1500),
        }
    );
    // Integers are accepted for the float fields, and the bounds are in.
    let flow = parse_str(
        &with_ai("model = \"m1\"\ntemperature = 2\ntop_p = 0"),
        Format::Toml,
    )
    .unwrap();
    let FlowNodeKind::Ai { params, .. } = &flow.nodes[3].kind else {
        panic!("not an ai node");
    };
    assert_eq!((params.temperature_milli, params.top_p_milli), (2000, 0));
}

#[test]
fn defaults_of_outputs_and_edges() {
    let text = small(
        "[[nodes]]\nid = \"quiet\"\nkind = \"output\"\nstdout = false\nspool = false\n",
        "[[edges]]\nfrom = \"a\"\nto = \"quiet\"\n",
    );
    let flow = parse_str(&text, Format::Toml).unwrap();
    assert_eq!(
        flow.nodes[2].kind,
        FlowNodeKind::Output {
            spool: true,
            stdout: true
        }
    );
    assert_eq!(
        flow.nodes[3].kind,
        FlowNodeKind::Output {
            spool: false,
            stdout: false
        }
    );
    assert_eq!(flow.nodes[0].kind, FlowNodeKind::Input { default: None });
    assert_eq!(
        flow.edges,
        vec![
            edge("a", "t", "a"),
            edge("t", "o", "value"),
            edge("a", "quiet", "value")
        ]
    );
}

#[test]
fn bad_flow_name() {
    let text = small("", "").replace("name = \"small\"", "name = \"My Flow\"");
    assert_eq!(
        toml_problem(&text),
        (
            Problem::BadFlowName {
                name: "My Flow".into()
            },
            Some(1)
        )
    );
}

#[test]
fn no_nodes() {
    assert_eq!(toml_problem("name = \"empty\"\n"), (Problem::NoNodes, None));
    assert_eq!(
        parse_str(r#"{"name": "empty", "nodes": []}"#, Format::Json)
            .unwrap_err()
            .to_string(),
        "flow: the flow has no nodes: add at least one [[nodes]] table"
    );
}

#[test]
fn bad_ids() {
    for bad in ["Topic", "a b", "a/b", "", &"x".repeat(65)] {
        let text = small("", "").replacen("id = \"a\"", &format!("id = \"{bad}\""), 1);
        assert_eq!(
            toml_problem(&text),
            (
                Problem::BadId {
                    index: 0,
                    id: bad.to_owned()
                },
                Some(3)
            ),
            "id {bad:?}"
        );
    }
}

#[test]
fn duplicate_ids() {
    let text = small("[[nodes]]\nid = \"t\"\nkind = \"input\"\n", "");
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::DuplicateId {
            id: "t".into(),
            first: 1,
            index: 3
        }
    );
    assert_eq!(line, Some(13));
    assert_eq!(
        problem.to_string(),
        "node 't': field 'id': nodes[1] and nodes[3] have the same id: give each node its own id"
    );
}

#[test]
fn unknown_kind() {
    let text = small("[[nodes]]\nid = \"x\"\nkind = \"llm\"\n", "");
    let err = parse_str(&text, Format::Toml).unwrap_err();
    assert_eq!(
        err.to_string(),
        "flow:14: node 'x': field 'kind': unknown kind 'llm': use input, template, ai, output or service"
    );
}

#[test]
fn field_of_another_kind() {
    let text = small("", "").replace("kind = \"input\"", "kind = \"input\"\ntext = \"hi\"");
    assert_eq!(
        toml_problem(&text),
        (
            Problem::FieldNotForKind {
                node: "a".into(),
                kind: "input",
                field: "text"
            },
            Some(5)
        )
    );
    let (problem, _) = toml_problem(&with_ai("model = \"m\"\nspool = false"));
    assert_eq!(
        problem.to_string(),
        "node 'm': field 'spool' does not apply to ai nodes: remove it"
    );
}

#[test]
fn missing_kind_fields() {
    let text = small("", "").replace("text = \"{a}\"\n", "");
    assert_eq!(
        toml_problem(&text),
        (
            Problem::MissingField {
                node: "t".into(),
                kind: "template",
                field: "text"
            },
            Some(6)
        )
    );
    let (problem, _) = toml_problem(&with_ai("max_tokens = 5"));
    assert_eq!(
        problem,
        Problem::MissingField {
            node: "m".into(),
            kind: "ai",
            field: "model"
        }
    );
}

#[test]
fn empty_model() {
    let (problem, line) = toml_problem(&with_ai("model = \" \""));
    assert_eq!(problem, Problem::EmptyModel { node: "m".into() });
    assert_eq!(line, Some(15));
}

#[test]
fn parameters_out_of_range() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("temperature = 2.5", "temperature", "2.5", "0..=2"),
        ("temperature = -0.1", "temperature", "-0.1", "0..=2"),
        ("temperature = nan", "temperature", "NaN", "0..=2"),
        ("top_p = 1.5", "top_p", "1.5", "0..=1"),
        ("top_p = -1", "top_p", "-1", "0..=1"),
        ("max_tokens = 0", "max_tokens", "0", "1..=4096"),
        ("max_tokens = 4097", "max_tokens", "4097", "1..=4096"),
        ("max_tokens = -3", "max_tokens", "-3", "1..=4096"),
        ("top_k = -1", "top_k", "-1", "0..=4294967295"),
        ("seed = 4294967296", "seed", "4294967296", "0..=4294967295"),
        (
            "latency_budget_ms = 0",
            "latency_budget_ms",
            "0",
            "1..=4294967295",
        ),
    ];
    for (line, field, value, range) in cases {
        let (problem, at) = toml_problem(&with_ai(&format!("model = \"m\"\n{line}")));
        assert_eq!(
            problem,
            Problem::OutOfRange {
                node: "m".into(),
                field,
                value: (*value).to_owned(),
                range,
            },
            "{line}"
        );
        assert_eq!(at, Some(16), "{line}");
    }
    let (problem, _) = toml_problem(&with_ai("model = \"m\"\ntemperature = 3"));
    assert_eq!(
        problem.to_string(),
        "node 'm': field 'temperature' is 3, outside 0..=2: use a value in 0..=2"
    );
}

#[test]
fn empty_stop_string() {
    let (problem, line) = toml_problem(&with_ai("model = \"m\"\nstop = [\"x\", \"\"]"));
    assert_eq!(
        problem,
        Problem::EmptyStop {
            node: "m".into(),
            index: 1
        }
    );
    assert_eq!(line, Some(16));
}

#[test]
fn bad_placeholder_syntax() {
    let text = small("", "").replace("text = \"{a}\"", "text = \"{a} and {Topic}\"");
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::Template {
            node: "t".into(),
            error: TemplateError::BadName {
                name: "Topic".into(),
                at: 8
            }
        }
    );
    assert_eq!(line, Some(8));
    assert_eq!(
        problem.to_string(),
        "node 't': field 'text': placeholder {Topic} at character 8 is not a name: use 1 to 64 of a-z 0-9 _ - (write '{{' for a literal brace)"
    );
}

#[test]
fn dangling_edges() {
    let text = small("", "[[edges]]\nfrom = \"ghost\"\nto = \"o\"\n");
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::DanglingEdge {
            index: 2,
            from: "ghost".into(),
            to: "o".into(),
            field: "from",
            missing: "ghost".into()
        }
    );
    assert_eq!(line, Some(21));
    let text = small("", "[[edges]]\nfrom = \"a\"\nto = \"nowhere\"\n");
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem.to_string(),
        "edge 2 (a -> nowhere): field 'to': there is no node 'nowhere': declare it under [[nodes]] or fix the id"
    );
    assert_eq!(line, Some(22));
}

#[test]
fn edge_into_an_input_node() {
    let text = small("", "[[edges]]\nfrom = \"t\"\nto = \"a\"\n");
    assert_eq!(
        toml_problem(&text),
        (
            Problem::EdgeIntoInput {
                index: 2,
                from: "t".into(),
                to: "a".into()
            },
            Some(22)
        )
    );
}

#[test]
fn edge_out_of_an_output_node() {
    let text = small(
        "[[nodes]]\nid = \"o2\"\nkind = \"output\"\n",
        "[[edges]]\nfrom = \"o\"\nto = \"o2\"\n",
    );
    let (problem, _) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::EdgeFromOutput {
            index: 2,
            from: "o".into(),
            to: "o2".into()
        }
    );
}

#[test]
fn template_edge_needs_an_input_name() {
    let text = small("", "").replace("input = \"a\"\n", "");
    assert_eq!(
        toml_problem(&text),
        (
            Problem::MissingEdgeInput {
                index: 0,
                from: "a".into(),
                to: "t".into()
            },
            Some(14)
        )
    );
}

#[test]
fn unknown_edge_inputs() {
    // A template input that is not a placeholder.
    let text = small("", "[[edges]]\nfrom = \"a\"\nto = \"t\"\ninput = \"b\"\n");
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem.to_string(),
        "edge 2 (a -> t): field 'input': template node 't' has no input 'b': its placeholders are {a}"
    );
    assert_eq!(line, Some(23));
    // Ai nodes take only `prompt`.
    let text = small(
        "[[nodes]]\nid = \"m\"\nkind = \"ai\"\nmodel = \"x\"\n",
        "[[edges]]\nfrom = \"t\"\nto = \"m\"\ninput = \"system\"\n",
    );
    let (problem, _) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::UnknownEdgeInput {
            index: 2,
            from: "t".into(),
            to: "m".into(),
            kind: "ai",
            input: "system".into(),
            expected: "use \"prompt\" or leave input out".into()
        }
    );
    // Outputs take only `value`.
    let text = small("", "").replace(
        "from = \"t\"\nto = \"o\"\n",
        "from = \"t\"\nto = \"o\"\ninput = \"text\"\n",
    );
    let (problem, _) = toml_problem(&text);
    assert_eq!(
        problem.to_string(),
        "edge 1 (t -> o): field 'input': output node 'o' has no input 'text': use \"value\" or leave input out"
    );
}

#[test]
fn input_bound_twice() {
    let text = small(
        "[[nodes]]\nid = \"b\"\nkind = \"input\"\n",
        "[[edges]]\nfrom = \"b\"\nto = \"t\"\ninput = \"a\"\n",
    );
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::BoundTwice {
            node: "t".into(),
            input: "a".into(),
            first: 0,
            second: 2
        }
    );
    assert_eq!(line, Some(26));
    assert_eq!(
        problem.to_string(),
        "node 't': input 'a' is bound twice, by edges 0 and 2: remove one of them"
    );
}

#[test]
fn unbound_placeholder() {
    let text = small("", "").replace("text = \"{a}\"", "text = \"{a} {b}\"");
    let (problem, line) = toml_problem(&text);
    assert_eq!(
        problem,
        Problem::UnboundPlaceholder {
            node: "t".into(),
            input: "b".into()
        }
    );
    assert_eq!(line, Some(8));
    assert_eq!(
        problem.to_string(),
        "node 't': placeholder {b} has no edge: add an edge with to = \"t\" and input = \"b\""
    );
}

#[test]
fn ai_without_prompt() {
    let text = small("[[nodes]]\nid = \"m\"\nkind = \"ai\"\nmodel = \"x\"\n", "");
    assert_eq!(
        toml_problem(&text),
        (Problem::NoPrompt { node: "m".into() }, Some(13))
    );
}

#[test]
fn output_without_value() {
    let text = small("", "").replace("[[edges]]\nfrom = \"t\"\nto = \"o\"\n", "");
    let (problem, line) = toml_problem(&text);
    assert_eq!(problem, Problem::NoValue { node: "o".into() });
    assert_eq!(line, Some(10));
    assert_eq!(
        problem.to_string(),
        "node 'o': output node has no value: add an edge with to = \"o\" (its input defaults to \"value\")"
    );
}

#[test]
fn cycles_name_their_nodes() {
    let text = r#"name = "loop"
[[nodes]]
id = "x"
kind = "template"
text = "{z}"
[[nodes]]
id = "y"
kind = "template"
text = "{x}"
[[nodes]]
id = "z"
kind = "template"
text = "{y}"
[[edges]]
from = "x"
to = "y"
input = "x"
[[edges]]
from = "y"
to = "z"
input = "y"
[[edges]]
from = "z"
to = "x"
input = "z"
"#;
    let (problem, line) = toml_problem(text);
    assert_eq!(
        problem,
        Problem::Cycle {
            nodes: vec!["x".into(), "y".into(), "z".into()]
        }
    );
    assert_eq!(line, Some(23));
    assert_eq!(
        problem.to_string(),
        "nodes form a cycle: x -> y -> z -> x: remove one of these edges"
    );
    let selfloop = r#"{"name": "me", "nodes": [{"id": "s", "kind": "template", "text": "{s}"}],
        "edges": [{"from": "s", "to": "s", "input": "s"}]}"#;
    assert_eq!(
        parse_str(selfloop, Format::Json).unwrap_err().to_string(),
        "flow: nodes form a cycle: s -> s: remove one of these edges"
    );
}

#[test]
fn syntax_errors_carry_lines() {
    let text = small("", "").replace("kind = \"output\"", "kind = \"output\"\nstdot = false");
    match parse_str(&text, Format::Toml) {
        Err(FlowError::Syntax {
            origin, message, ..
        }) => {
            assert_eq!(origin.line, Some(12));
            assert!(message.starts_with("unknown field `stdot`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let text = with_ai("model = \"m\"\nmax_tokens = \"64\"");
    assert_eq!(
        parse_str(&text, Format::Toml).unwrap_err().to_string(),
        "flow:16: invalid toml: invalid type: string \"64\", expected an integer"
    );
    let json =
        "{\"name\": \"j\",\n \"nodes\": [{\"id\": \"a\", \"kind\": \"input\", \"chat\": 1}]}";
    assert_eq!(
        parse_str(json, Format::Json).unwrap_err().to_string(),
        "flow:2: invalid json: invalid type: integer `1`, expected true or false"
    );
    assert_eq!(
        parse_str("{\"name\": ", Format::Json)
            .unwrap_err()
            .to_string(),
        "flow:1: invalid json: EOF while parsing a value"
    );
    let text = "name = \"x\"\n[[nodes]\n";
    match parse_str(text, Format::Toml) {
        Err(FlowError::Syntax { origin, .. }) => assert_eq!(origin.line, Some(2)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_str("name = \"x\"\nversion = 2\n", Format::Toml),
        Err(FlowError::Syntax { .. })
    ));
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("flow-format-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn parse_file_by_extension_with_file_and_line() {
    let dir = TempDir::new("ext");
    let toml_path = dir.0.join("haiku.toml");
    std::fs::write(&toml_path, HAIKU_TOML).unwrap();
    let json_path = dir.0.join("haiku.JSON");
    std::fs::write(&json_path, HAIKU_JSON).unwrap();
    assert_eq!(parse_file(&toml_path).unwrap(), haiku_flow());
    assert_eq!(parse_file(&json_path).unwrap(), haiku_flow());

    let bad = dir.0.join("bad.toml");
    std::fs::write(
        &bad,
        HAIKU_TOML.replace("max_tokens = 64", "max_tokens = 0"),
    )
    .unwrap();
    assert_eq!(
        parse_file(&bad).unwrap_err().to_string(),
        format!(
            "{}:14: node 'answer': field 'max_tokens' is 0, outside 1..=4096: use a value in 1..=4096",
            bad.display()
        )
    );

    let yaml = dir.0.join("haiku.yaml");
    std::fs::write(&yaml, "").unwrap();
    assert!(matches!(
        parse_file(&yaml),
        Err(FlowError::Extension { path }) if path == yaml
    ));
    assert!(matches!(
        parse_file(&dir.0.join("missing.toml")),
        Err(FlowError::Read { .. })
    ));

    let big = dir.0.join("big.toml");
    let mut text = String::from("name = \"big\"\n# ");
    text.push_str(&"x".repeat(MAX_FLOW_BYTES as usize));
    std::fs::write(&big, text).unwrap();
    assert!(matches!(parse_file(&big), Err(FlowError::TooLarge { .. })));
}

#[test]
fn validate_checks_flows_from_ipc() {
    let mut flow = haiku_flow();
    assert_eq!(validate(&flow), Ok(()));
    if let FlowNodeKind::Ai { params, .. } = &mut flow.nodes[2].kind {
        params.temperature_milli = 2500;
    }
    assert_eq!(
        validate(&flow),
        Err(Problem::OutOfRange {
            node: "answer".into(),
            field: "temperature",
            value: "2.500".into(),
            range: "0..=2"
        })
    );
    let mut flow = haiku_flow();
    flow.edges.push(edge("out", "prompt", "topic"));
    assert!(matches!(
        validate(&flow),
        Err(Problem::EdgeFromOutput { .. })
    ));
    let mut flow = haiku_flow();
    flow.edges[1].input = String::new();
    assert!(matches!(
        validate(&flow),
        Err(Problem::UnknownEdgeInput { .. })
    ));
    let mut flow = haiku_flow();
    flow.nodes[3].id = "../x".into();
    assert_eq!(
        validate(&flow),
        Err(Problem::BadId {
            index: 3,
            id: "../x".into()
        })
    );
}

// ---------------------------------------------------------------------------
// Service nodes and settings.

/// `small` plus a service node `s` with `fields`; `edges` are appended.
fn with_service(fields: &str, edges: &str) -> String {
    small(
        &format!("[[nodes]]\nid = \"s\"\nkind = \"service\"\n{fields}\n"),
        edges,
    )
}

const GET_ITEM: &str = "service = \"api\"\nmethod = \"GET\"\npath = \"/items/{id}\"";

fn service(service: &str, method: Method, path: &str, content_type: Option<&str>) -> FlowNodeKind {
    FlowNodeKind::Service {
        service: service.into(),
        method,
        path: path.into(),
        content_type: content_type.map(str::to_owned),
    }
}

const SERVICE_TOML: &str = r#"name = "svc"
[settings]
"services.allow_ai_output" = "true"
"a.b" = "x"
[[nodes]]
id = "id"
kind = "input"
[[nodes]]
id = "get"
kind = "service"
service = "example-api"
method = "GET"
path = "/items/{id}/raw?full=1"
[[nodes]]
id = "post"
kind = "service"
service = "example-api"
method = "POST"
path = "/notes"
content_type = "application/json"
[[edges]]
from = "id"
to = "get"
input = "id"
[[edges]]
from = "get"
to = "post"
"#;

const SERVICE_JSON: &str = r#"{
  "name": "svc",
  "settings": {"services.allow_ai_output": "true", "a.b": "x"},
  "nodes": [
    {"id": "id", "kind": "input"},
    {"id": "get", "kind": "service", "service": "example-api", "method": "GET",
     "path": "/items/{id}/raw?full=1"},
    {"id": "post", "kind": "service", "service": "example-api", "method": "POST",
     "path": "/notes", "content_type": "application/json"}
  ],
  "edges": [
    {"from": "id", "to": "get", "input": "id"},
    {"from": "get", "to": "post"}
  ]
}"#;

#[test]
fn service_nodes_and_settings_parse_the_same_in_toml_and_json() {
    let flow = parse_str(SERVICE_TOML, Format::Toml).unwrap();
    assert_eq!(
        flow,
        Flow {
            name: "svc".into(),
            nodes: vec![
                node("id", FlowNodeKind::Input { default: None }),
                node(
                    "get",
                    service("example-api", Method::Get, "/items/{id}/raw?full=1", None)
                ),
                node(
                    "post",
                    service(
                        "example-api",
                        Method::Post,
                        "/notes",
                        Some("application/json")
                    )
                ),
            ],
            // The default input of an edge into a service node is its body.
            edges: vec![edge("id", "get", "id"), edge("get", "post", "body")],
            // Sorted by key.
            settings: vec![
                ("a.b".into(), "x".into()),
                ("services.allow_ai_output".into(), "true".into()),
            ],
        }
    );
    assert_eq!(parse_str(SERVICE_JSON, Format::Json).unwrap(), flow);
    assert_eq!(validate(&flow), Ok(()));
}

#[test]
fn shipped_service_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let flow = parse_file(&dir.join("service.toml")).unwrap();
    let kinds: Vec<&FlowNodeKind> = flow
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, FlowNodeKind::Service { .. }))
        .map(|n| &n.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            &service("example-api", Method::Get, "/items/{id}", None),
            &service(
                "example-api",
                Method::Post,
                "/notes",
                Some("text/plain; charset=utf-8")
            ),
        ]
    );
    assert!(!body_from_ai(&flow, "fetch"));
    assert!(!body_from_ai(&flow, "save"));
}

#[test]
fn service_fields_are_required_and_checked() {
    for (missing, field) in [
        ("service = \"api\"\n", "service"),
        ("method = \"GET\"\n", "method"),
        ("path = \"/items/{id}\"", "path"),
    ] {
        let fields = GET_ITEM.replace(missing.trim_end(), "");
        let (problem, line) = toml_problem(&with_service(&fields, ""));
        assert_eq!(
            (problem, line),
            (
                Problem::MissingField {
                    node: "s".into(),
                    kind: "service",
                    field
                },
                Some(13)
            ),
            "{field}"
        );
    }
    let (problem, line) = toml_problem(&with_service(&GET_ITEM.replace("GET", "get"), ""));
    assert_eq!(
        problem.to_string(),
        "node 's': field 'method': 'get' is not a method: use GET, HEAD, POST, PUT, PATCH or DELETE"
    );
    assert_eq!(line, Some(16));
    let (problem, line) = toml_problem(&with_service(&GET_ITEM.replace("\"api\"", "\"-api\""), ""));
    assert_eq!(
        problem.to_string(),
        "node 's': field 'service': '-api' is not a service id: use the id of a service catalog entry (1 to 64 of a-z 0-9 . _ -, starting with a letter or digit)"
    );
    assert_eq!(line, Some(15));
    let (problem, line) = toml_problem(&with_service(
        &format!("{GET_ITEM}\ncontent_type = \"text/plain\\r\\nX-Evil: 1\""),
        "",
    ));
    assert_eq!(
        problem,
        Problem::BadContentType {
            node: "s".into(),
            value: "text/plain\r\nX-Evil: 1".into()
        }
    );
    assert_eq!(line, Some(18));
    let (problem, _) = toml_problem(&with_service(&format!("{GET_ITEM}\nmodel = \"m\""), ""));
    assert_eq!(
        problem.to_string(),
        "node 's': field 'model' does not apply to service nodes: remove it"
    );
    let (problem, _) = toml_problem(
        &small("", "").replace("kind = \"output\"", "kind = \"output\"\nservice = \"api\""),
    );
    assert_eq!(
        problem.to_string(),
        "node 'o': field 'service' does not apply to output nodes: remove it"
    );
}

#[test]
fn service_path_rules() {
    let cases: &[(&str, &str)] = &[
        ("items", "'items' must start with '/': write the path below the service's base URL, e.g. \"/items/{id}\""),
        ("/items/{id", "placeholder opened at character 7 is never closed: close it with '}' or write '{{' for a literal brace"),
        ("/items/{Id}", "placeholder {Id} at character 7 is not a name: use 1 to 64 of a-z 0-9 _ - (write '{{' for a literal brace)"),
        ("/a b", "'/a b' has a space at character 2: write the URL path only, with %XX for other bytes"),
        ("/a#frag", "'/a#frag' has a fragment ('#') at character 2: write the URL path only, with %XX for other bytes"),
        ("/caf\u{e9}", "'/caf\u{e9}' has a non-ASCII character at character 4: write the URL path only, with %XX for other bytes"),
        ("/a%2", "'/a%2' has a '%' that starts no %XX escape at character 2: write the URL path only, with %XX for other bytes"),
        ("/a\\b", "'/a\\b' has a character not allowed in a URL at character 2: write the URL path only, with %XX for other bytes"),
        ("/a/{{x}}", "'/a/{{x}}' has a literal brace at character 3: write the URL path only, with %XX for other bytes"),
        ("/a//b", "'/a//b' has an empty segment ('//'): remove it"),
        ("/a/../b", "'/a/../b' has a '.' or '..' segment: write the path it stands for"),
        ("/a/%2E%2e", "'/a/%2E%2e' has a '.' or '..' segment: write the path it stands for"),
        ("/a/./b", "'/a/./b' has a '.' or '..' segment: write the path it stands for"),
        ("/{body}", "placeholder {body} is reserved: input 'body' is the request body; rename the placeholder"),
    ];
    for (path, reason) in cases {
        let fields = format!(
            "service = \"api\"\nmethod = \"POST\"\npath = {}",
            toml::Value::String((*path).to_owned())
        );
        let (problem, line) = toml_problem(&with_service(&fields, ""));
        assert_eq!(
            problem.to_string(),
            format!("node 's': field 'path': {reason}"),
            "{path}"
        );
        assert_eq!(line, Some(17), "{path}");
    }
    let long = format!("/{}", "a".repeat(MAX_SERVICE_PATH));
    assert_eq!(check_service_path(&long), Err(PathProblem::TooLong));
    // Good paths: the root, a trailing slash, a query, escapes, sub-delims.
    for path in [
        "/",
        "/a/",
        "/a?b=c&d={x}",
        "/a%20b/c:d@e/f;g=h,i+j~k",
        "/{x}.json",
    ] {
        assert_eq!(check_service_path(path), Ok(()), "{path}");
    }
    assert_eq!(
        service_path_segments("/items/{id}/raw?q={q}"),
        vec![Some("items"), None, Some("raw")]
    );
    assert_eq!(service_path_segments("/"), vec![Some("")]);
    assert_eq!(service_path_segments("/{x}.json"), vec![None]);
    assert_eq!(service_placeholders("/a/{x}?q={y}&r={x}"), vec!["x", "y"]);
}

#[test]
fn service_edges_and_bindings() {
    // The default input is the body, which a GET request does not have.
    let (problem, line) = toml_problem(&with_service(
        GET_ITEM,
        "[[edges]]\nfrom = \"a\"\nto = \"s\"\ninput = \"id\"\n[[edges]]\nfrom = \"t\"\nto = \"s\"\n",
    ));
    assert_eq!(
        problem.to_string(),
        "edge 3 (t -> s): field 'input': a GET request has no body: bind 's's body only with POST, PUT, PATCH or DELETE, or name a placeholder of its path"
    );
    assert_eq!(line, Some(31));
    let (problem, _) = toml_problem(&with_service(
        GET_ITEM,
        "[[edges]]\nfrom = \"a\"\nto = \"s\"\ninput = \"name\"\n",
    ));
    assert_eq!(
        problem.to_string(),
        "edge 2 (a -> s): field 'input': service node 's' has no input 'name': use \"body\" (the request body) or leave input out, or one of its path placeholders {id}"
    );
    let (problem, _) = toml_problem(&with_service(
        "service = \"api\"\nmethod = \"POST\"\npath = \"/n\"",
        "[[edges]]\nfrom = \"a\"\nto = \"s\"\ninput = \"id\"\n",
    ));
    assert_eq!(
        problem.to_string(),
        "edge 2 (a -> s): field 'input': service node 's' has no input 'id': use \"body\" (the request body) or leave input out; its path has no placeholders"
    );
    let (problem, line) = toml_problem(&with_service(GET_ITEM, ""));
    assert_eq!(
        problem,
        Problem::UnboundPlaceholder {
            node: "s".into(),
            input: "id".into()
        }
    );
    assert_eq!(line, Some(17));
    // The body is optional; edges out of a service node are fine.
    let flow = parse_str(
        &with_service(
            "service = \"api\"\nmethod = \"DELETE\"\npath = \"/n\"",
            "[[nodes]]\nid = \"o2\"\nkind = \"output\"\n[[edges]]\nfrom = \"s\"\nto = \"o2\"\n",
        ),
        Format::Toml,
    )
    .unwrap();
    assert_eq!(flow.edges[2], edge("s", "o2", "value"));
}

#[test]
fn settings_rules_with_lines() {
    let with_settings = |table: &str| format!("{}\n[settings]\n{table}\n", small("", ""));
    let (problem, line) = toml_problem(&with_settings("ok = \"1\"\n\"Bad-Key\" = \"x\""));
    assert_eq!(
        problem.to_string(),
        "field 'settings': key 'Bad-Key' is not a setting key: use 1 to 64 of a-z 0-9 _ . (e.g. \"services.allow_ai_output\")"
    );
    assert_eq!(line, Some(23));
    let (problem, line) = toml_problem(&with_settings("\"a.b\" = \"x\\ny\""));
    assert_eq!(problem, Problem::BadSettingValue { key: "a.b".into() });
    assert_eq!(line, Some(22));
    // Not a string: the parser says so, with the line.
    let err = parse_str(&with_settings("\"a.b\" = true"), Format::Toml).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("flow:22: invalid toml: invalid type: boolean `true`, expected a string"),
        "{err}"
    );
    // A dotted key without quotes is a nested table, not a string.
    assert!(matches!(
        parse_str(
            &with_settings("services.allow_ai_output = \"true\""),
            Format::Toml
        ),
        Err(FlowError::Syntax { .. })
    ));
    let json = r#"{"name": "j", "settings": {"a": "1", "a": "2"},
        "nodes": [{"id": "x", "kind": "input"}]}"#;
    assert_eq!(
        parse_str(json, Format::Json).unwrap_err().to_string(),
        "flow: field 'settings': 'a' is set twice: set it once"
    );
    let many: String = (0..=MAX_SETTINGS)
        .map(|i| format!("k{i} = \"v\"\n"))
        .collect();
    let (problem, line) = toml_problem(&with_settings(&many));
    assert_eq!(problem, Problem::TooManySettings);
    assert_eq!(line, Some(21));
    // From IPC: the same rules.
    let mut flow = haiku_flow();
    flow.settings = vec![("x".into(), "1".into()), ("x".into(), "2".into())];
    assert_eq!(
        validate(&flow),
        Err(Problem::DuplicateSetting { key: "x".into() })
    );
    flow.settings = vec![("X".into(), "1".into())];
    assert_eq!(
        validate(&flow),
        Err(Problem::BadSettingKey { key: "X".into() })
    );
}

#[test]
fn validate_checks_service_nodes_from_ipc() {
    let mut flow = parse_str(SERVICE_TOML, Format::Toml).unwrap();
    flow.nodes[1].kind = service("api", Method::Get, "/items/../{id}", None);
    assert_eq!(
        validate(&flow),
        Err(Problem::BadServicePath {
            node: "get".into(),
            reason: PathProblem::DotSegment {
                path: "/items/../{id}".into()
            }
        })
    );
    let mut flow = parse_str(SERVICE_TOML, Format::Toml).unwrap();
    flow.nodes[1].kind = service("API", Method::Get, "/items/{id}", None);
    assert!(matches!(validate(&flow), Err(Problem::BadServiceId { .. })));
    let mut flow = parse_str(SERVICE_TOML, Format::Toml).unwrap();
    flow.nodes[2].kind = service("api", Method::Head, "/n", None);
    assert!(matches!(
        validate(&flow),
        Err(Problem::BodyWithoutMethod { method: "HEAD", .. })
    ));
}

// ---------------------------------------------------------------------------
// Taint: paths from ai output into service nodes.

fn taint_flow(nodes: &[(&str, &str)], edges: &[(&str, &str, &str)]) -> Flow {
    let kind = |k: &str| match k {
        "input" => FlowNodeKind::Input { default: None },
        "ai" => FlowNodeKind::Ai {
            model: "m".into(),
            system: None,
            chat: true,
            params: InferParams::default(),
            latency_budget_ms: None,
        },
        "get" => service("api", Method::Get, "/items/{id}", None),
        "post" => service("api", Method::Post, "/items/{id}", None),
        "output" => FlowNodeKind::Output {
            spool: true,
            stdout: true,
        },
        text => FlowNodeKind::Template { text: text.into() },
    };
    let flow = Flow {
        name: "taint".into(),
        nodes: nodes.iter().map(|(id, k)| node(id, kind(k))).collect(),
        edges: edges.iter().map(|(f, t, i)| edge(f, t, i)).collect(),
        settings: Vec::new(),
    };
    assert_eq!(validate(&flow), Ok(()));
    flow
}

#[test]
fn ai_output_into_the_body_is_found() {
    let f = taint_flow(
        &[("q", "input"), ("m", "ai"), ("s", "post")],
        &[("q", "m", "prompt"), ("m", "s", "body"), ("q", "s", "id")],
    );
    assert!(body_from_ai(&f, "s"));
    assert_eq!(ai_source(&f, "s"), Some("m"));
    assert!(!body_from_ai(&f, "m"));
    assert!(!body_from_ai(&f, "q"));
}

#[test]
fn ai_output_through_templates_into_a_placeholder_is_found() {
    // input → ai → template → template → GET placeholder.
    let f = taint_flow(
        &[
            ("q", "input"),
            ("m", "ai"),
            ("t1", "about {x}"),
            ("t2", "[{y}]"),
            ("s", "get"),
        ],
        &[
            ("q", "m", "prompt"),
            ("m", "t1", "x"),
            ("t1", "t2", "y"),
            ("t2", "s", "id"),
        ],
    );
    assert!(body_from_ai(&f, "s"));
    assert_eq!(ai_source(&f, "s"), Some("m"));
    // The templates are tainted too.
    assert!(body_from_ai(&f, "t2"));
}

#[test]
fn diamond_with_one_ai_branch_is_tainted() {
    //        ┌─ t1 ───────┐
    //   q ───┤            ├─ join ─ s
    //        └─ m (ai) ─ t2┘
    let f = taint_flow(
        &[
            ("q", "input"),
            ("t1", "{a}"),
            ("m", "ai"),
            ("t2", "{b}"),
            ("join", "{c} {d}"),
            ("s", "post"),
        ],
        &[
            ("q", "t1", "a"),
            ("q", "m", "prompt"),
            ("m", "t2", "b"),
            ("t1", "join", "c"),
            ("t2", "join", "d"),
            ("join", "s", "body"),
            ("q", "s", "id"),
        ],
    );
    assert!(body_from_ai(&f, "s"));
    assert_eq!(ai_source(&f, "s"), Some("m"));
    // The same diamond without the ai node is clean.
    let f = taint_flow(
        &[
            ("q", "input"),
            ("t1", "{a}"),
            ("t2", "{b}"),
            ("join", "{c} {d}"),
            ("s", "post"),
        ],
        &[
            ("q", "t1", "a"),
            ("q", "t2", "b"),
            ("t1", "join", "c"),
            ("t2", "join", "d"),
            ("join", "s", "body"),
            ("q", "s", "id"),
        ],
    );
    assert!(!body_from_ai(&f, "s"));
}

#[test]
fn taint_passes_through_service_nodes_but_not_upstream() {
    // ai → s1 (body) → s2 (placeholder): s2's request carries whatever s1's
    // upstream echoed back. An ai node *downstream* of a service taints
    // nothing upstream of it.
    let f = taint_flow(
        &[
            ("q", "input"),
            ("m", "ai"),
            ("s1", "post"),
            ("s2", "get"),
            ("clean", "get"),
            ("after", "ai"),
            ("o", "output"),
        ],
        &[
            ("q", "m", "prompt"),
            ("m", "s1", "body"),
            ("q", "s1", "id"),
            ("s1", "s2", "id"),
            ("q", "clean", "id"),
            ("clean", "after", "prompt"),
            ("after", "o", "value"),
        ],
    );
    assert!(body_from_ai(&f, "s1"));
    assert!(body_from_ai(&f, "s2"));
    assert_eq!(ai_source(&f, "s2"), Some("m"));
    assert!(!body_from_ai(&f, "clean"));
    assert!(!body_from_ai(&f, "nowhere"));
}

#[test]
fn taint_search_ends_on_cycles() {
    // Unvalidated flows may have cycles; the search still ends.
    let f = Flow {
        name: "loop".into(),
        nodes: vec![
            node("x", FlowNodeKind::Template { text: "{y}".into() }),
            node("y", FlowNodeKind::Template { text: "{x}".into() }),
            node("s", service("api", Method::Get, "/{id}", None)),
        ],
        edges: vec![
            edge("x", "y", "x"),
            edge("y", "x", "y"),
            edge("y", "s", "id"),
        ],
        settings: Vec::new(),
    };
    assert!(!body_from_ai(&f, "s"));
}
