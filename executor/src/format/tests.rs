use super::*;

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
        "flow:14: node 'x': field 'kind': unknown kind 'llm': use input, template, ai or output"
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
