use super::*;
use crate::format::{parse_str, Format};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

/// A deterministic environment: an ai node sleeps for its configured delay
/// (paused tokio time, so exactly), then answers with its prompt reversed,
/// streamed as two tokens. Everything is recorded.
#[derive(Default)]
struct Fake {
    delays: BTreeMap<String, u64>,
    fail: BTreeSet<String>,
    spool_fails: bool,
    /// Service node id → its answer (default: `<METHOD> <path> <body>`).
    answers: BTreeMap<String, Result<String, NodeError>>,
    /// `start X` / `end X` in the order the ai calls happen; `service X
    /// PATH BODY` for each service call.
    log: RefCell<Vec<String>>,
    events: RefCell<Vec<RunEvent>>,
    written: RefCell<Vec<(String, String)>>,
}

impl NodeEnv for Fake {
    async fn run_ai(
        &self,
        node: &FlowNode,
        prompt: String,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<AiDone, NodeError> {
        self.log.borrow_mut().push(format!("start {}", node.id));
        let delay = self.delays.get(&node.id).copied().unwrap_or(10);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.log.borrow_mut().push(format!("end {}", node.id));
        if self.fail.contains(&node.id) {
            return Err(NodeError::ModelServerFailed);
        }
        let text: String = prompt.chars().rev().collect();
        let half = text
            .char_indices()
            .nth(text.chars().count() / 2)
            .map_or(0, |(i, _)| i);
        on_token(&text[..half]);
        on_token(&text[half..]);
        Ok(AiDone {
            prompt_tokens: prompt.chars().count() as u32,
            generated_tokens: 2,
            first_token_ms: Some(delay),
            text,
        })
    }

    fn emit(&self, event: RunEvent) {
        self.events.borrow_mut().push(event);
    }

    fn write_output(&self, node: &str, value: &str) -> Result<(), NodeError> {
        if self.spool_fails {
            return Err(NodeError::Spool);
        }
        self.written
            .borrow_mut()
            .push((node.to_owned(), value.to_owned()));
        Ok(())
    }

    async fn run_service(
        &self,
        node: &FlowNode,
        path: String,
        body: Option<String>,
    ) -> Result<String, NodeError> {
        let FlowNodeKind::Service { method, .. } = &node.kind else {
            panic!("run_service on a {:?} node", node.kind);
        };
        let body = body.unwrap_or_else(|| "-".into());
        self.log
            .borrow_mut()
            .push(format!("service {} {path} {body}", node.id));
        let delay = self.delays.get(&node.id).copied().unwrap_or(10);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.log.borrow_mut().push(format!("end {}", node.id));
        match self.answers.get(&node.id) {
            Some(answer) => answer.clone(),
            None => Ok(format!("{} {path} {body}", method.as_str())),
        }
    }
}

fn flow(toml: &str) -> Flow {
    parse_str(toml, Format::Toml).unwrap()
}

fn sum(node: &str, status: NodeStatus, duration_ms: u64) -> NodeSummary {
    NodeSummary {
        node: node.into(),
        status,
        duration_ms,
        prompt_tokens: 0,
        generated_tokens: 0,
        first_token_ms: None,
    }
}

fn ai_sum(node: &str, duration_ms: u64, prompt_tokens: u32) -> NodeSummary {
    NodeSummary {
        prompt_tokens,
        generated_tokens: 2,
        first_token_ms: Some(duration_ms),
        ..sum(node, NodeStatus::Ok, duration_ms)
    }
}

fn started(node: &str) -> RunEvent {
    RunEvent::NodeStarted { node: node.into() }
}

fn finished(s: &NodeSummary) -> RunEvent {
    RunEvent::NodeFinished(s.clone())
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

const HELLO: &str = include_str!("../../../examples/hello.toml");
const BRANCHES: &str = include_str!("../../../examples/branches.toml");

#[tokio::test(start_paused = true)]
async fn hello_runs_in_order_with_exact_events() {
    let f = flow(HELLO);
    let env = Fake::default();
    let got = run_flow(&f, &pairs(&[("name", "Ada")]), &[], &env).await;
    let want = vec![
        sum("name", NodeStatus::Ok, 0),
        sum("greeting", NodeStatus::Ok, 0),
        sum("out", NodeStatus::Ok, 0),
    ];
    assert_eq!(got, want);
    let text = "Hello, Ada! (Braces are written {like this}.)";
    assert_eq!(
        *env.events.borrow(),
        vec![
            started("name"),
            finished(&want[0]),
            started("greeting"),
            finished(&want[1]),
            started("out"),
            RunEvent::Output {
                node: "out".into(),
                text: text.into()
            },
            finished(&want[2]),
        ]
    );
    assert_eq!(*env.written.borrow(), pairs(&[("out", text)]));
}

#[tokio::test(start_paused = true)]
async fn input_default_is_used_without_a_value() {
    let f = flow(HELLO);
    let env = Fake::default();
    run_flow(&f, &[], &[], &env).await;
    assert_eq!(
        *env.written.borrow(),
        pairs(&[("out", "Hello, world! (Braces are written {like this}.)")])
    );
}

fn branches_env() -> Fake {
    Fake {
        delays: [("poem".to_owned(), 200), ("facts".to_owned(), 100)].into(),
        ..Fake::default()
    }
}

#[tokio::test(start_paused = true)]
async fn independent_ai_branches_overlap() {
    let f = flow(BRANCHES);
    let env = branches_env();
    let got = run_flow(&f, &pairs(&[("topic", "ab")]), &[], &env).await;
    // `facts` starts before `poem` ends, and ends first (shorter delay):
    // the two ran at the same time.
    assert_eq!(
        *env.log.borrow(),
        vec!["start poem", "start facts", "end facts", "end poem"]
    );
    let poem_prompt = "Write a four-line poem about ab.";
    let facts_prompt = "List three short facts about ab.";
    let rev = |s: &str| s.chars().rev().collect::<String>();
    let report = format!(
        "Poem:\n{}\n\nFacts:\n{}\n",
        rev(poem_prompt),
        rev(facts_prompt)
    );
    assert_eq!(
        got,
        vec![
            sum("topic", NodeStatus::Ok, 0),
            sum("poem-prompt", NodeStatus::Ok, 0),
            sum("facts-prompt", NodeStatus::Ok, 0),
            ai_sum("poem", 200, 32),
            ai_sum("facts", 100, 32),
            sum("report", NodeStatus::Ok, 0),
            sum("facts-out", NodeStatus::Ok, 0),
            sum("out", NodeStatus::Ok, 0),
        ]
    );
    assert_eq!(
        *env.written.borrow(),
        vec![
            ("facts-out".to_owned(), rev(facts_prompt)),
            ("out".to_owned(), report.clone()),
        ]
    );
    // Tokens stream per node, between its start and finish; `facts-out`
    // has stdout = false, so only `out` is printed.
    let events = env.events.borrow();
    let tokens: Vec<&RunEvent> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Token { .. }))
        .collect();
    let facts_rev = rev(facts_prompt);
    assert_eq!(
        tokens,
        vec![
            &RunEvent::Token {
                node: "facts".into(),
                text: facts_rev[..16].into()
            },
            &RunEvent::Token {
                node: "facts".into(),
                text: facts_rev[16..].into()
            },
            &RunEvent::Token {
                node: "poem".into(),
                text: rev(poem_prompt)[..16].into()
            },
            &RunEvent::Token {
                node: "poem".into(),
                text: rev(poem_prompt)[16..].into()
            },
        ]
    );
    let outputs: Vec<&RunEvent> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Output { .. }))
        .collect();
    assert_eq!(
        outputs,
        vec![&RunEvent::Output {
            node: "out".into(),
            text: report
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn planned_skip_skips_downstream_and_the_other_branch_runs() {
    let f = flow(BRANCHES);
    let env = branches_env();
    let plan = vec![
        ("poem".to_owned(), NodePlan::Skip(SkipReason::ModelMissing)),
        ("facts".to_owned(), NodePlan::Run),
    ];
    let got = run_flow(&f, &[], &plan, &env).await;
    let skipped = |n, r| sum(n, NodeStatus::Skipped(r), 0);
    assert_eq!(
        got,
        vec![
            sum("topic", NodeStatus::Ok, 0),
            sum("poem-prompt", NodeStatus::Ok, 0),
            sum("facts-prompt", NodeStatus::Ok, 0),
            skipped("poem", SkipReason::ModelMissing),
            ai_sum("facts", 100, 37),
            skipped("report", SkipReason::UpstreamNotDone),
            sum("facts-out", NodeStatus::Ok, 0),
            skipped("out", SkipReason::UpstreamNotDone),
        ]
    );
    assert_eq!(*env.log.borrow(), vec!["start facts", "end facts"]);
    // A skipped node is finished without being started.
    let events = env.events.borrow();
    assert!(!events.contains(&started("poem")));
    assert!(!events.contains(&started("report")));
    assert!(events.contains(&finished(&skipped("poem", SkipReason::ModelMissing))));
}

#[tokio::test(start_paused = true)]
async fn failed_ai_node_skips_its_dependents() {
    let f = flow(BRANCHES);
    let env = Fake {
        fail: ["facts".to_owned()].into(),
        ..branches_env()
    };
    let got = run_flow(&f, &[], &[], &env).await;
    let status: Vec<(&str, &NodeStatus)> =
        got.iter().map(|s| (s.node.as_str(), &s.status)).collect();
    let upstream = NodeStatus::Skipped(SkipReason::UpstreamNotDone);
    assert_eq!(
        status,
        vec![
            ("topic", &NodeStatus::Ok),
            ("poem-prompt", &NodeStatus::Ok),
            ("facts-prompt", &NodeStatus::Ok),
            ("poem", &NodeStatus::Ok),
            ("facts", &NodeStatus::Failed(NodeError::ModelServerFailed)),
            ("report", &upstream),
            ("facts-out", &upstream),
            ("out", &upstream),
        ]
    );
    assert_eq!(
        got[4],
        sum(
            "facts",
            NodeStatus::Failed(NodeError::ModelServerFailed),
            100
        )
    );
    assert!(env.written.borrow().is_empty());
}

#[tokio::test(start_paused = true)]
async fn spool_failure_fails_the_output_but_still_prints() {
    let f = flow(HELLO);
    let env = Fake {
        spool_fails: true,
        ..Fake::default()
    };
    let got = run_flow(&f, &[], &[], &env).await;
    assert_eq!(got[2], sum("out", NodeStatus::Failed(NodeError::Spool), 0));
    assert!(env
        .events
        .borrow()
        .iter()
        .any(|e| matches!(e, RunEvent::Output { node, .. } if node == "out")));
}

#[tokio::test(start_paused = true)]
async fn output_flags_are_honoured() {
    let f = flow(
        r#"name = "quiet"
[[nodes]]
id = "a"
kind = "input"
default = "x"
[[nodes]]
id = "nowhere"
kind = "output"
spool = false
stdout = false
[[edges]]
from = "a"
to = "nowhere"
"#,
    );
    let env = Fake::default();
    let got = run_flow(&f, &[], &[], &env).await;
    assert_eq!(got[1], sum("nowhere", NodeStatus::Ok, 0));
    assert!(env.written.borrow().is_empty());
    assert_eq!(
        *env.events.borrow(),
        vec![
            started("a"),
            finished(&got[0]),
            started("nowhere"),
            finished(&got[1])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn unchecked_flows_still_end() {
    // A cycle and an input without a value, as an unvalidated flow from IPC
    // could have: the runner ends and reports the nodes as not done.
    let f = Flow {
        name: "bad".into(),
        nodes: vec![
            FlowNode {
                id: "a".into(),
                kind: FlowNodeKind::Input { default: None },
            },
            FlowNode {
                id: "x".into(),
                kind: FlowNodeKind::Template { text: "{y}".into() },
            },
            FlowNode {
                id: "y".into(),
                kind: FlowNodeKind::Template { text: "{x}".into() },
            },
        ],
        edges: vec![
            proto::flow::FlowEdge {
                from: "x".into(),
                to: "y".into(),
                input: "x".into(),
            },
            proto::flow::FlowEdge {
                from: "y".into(),
                to: "x".into(),
                input: "y".into(),
            },
        ],
        settings: Vec::new(),
    };
    let env = Fake::default();
    let got = run_flow(&f, &[], &[], &env).await;
    let not_done = |n| sum(n, NodeStatus::Skipped(SkipReason::UpstreamNotDone), 0);
    assert_eq!(got, vec![not_done("a"), not_done("x"), not_done("y")]);
    assert_eq!(env.events.borrow().len(), 3);
}

#[test]
fn check_inputs_resolves_values_and_defaults() {
    let f = flow(BRANCHES);
    assert_eq!(
        check_inputs(&f, &[]),
        Ok([("topic".to_owned(), "the sea".to_owned())].into())
    );
    assert_eq!(
        check_inputs(&f, &pairs(&[("topic", "rain")])),
        Ok([("topic".to_owned(), "rain".to_owned())].into())
    );
}

#[test]
fn check_inputs_errors() {
    let f = flow(BRANCHES);
    let err = check_inputs(&f, &pairs(&[("topc", "x")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--input topc: the flow has no input node 'topc': its inputs are topic"
    );
    // Not an input node either.
    assert!(matches!(
        check_inputs(&f, &pairs(&[("poem", "x")])),
        Err(InputError::Unknown { .. })
    ));
    let err = check_inputs(&f, &pairs(&[("topic", "x"), ("topic", "y")])).unwrap_err();
    assert_eq!(
        err,
        InputError::Duplicate {
            name: "topic".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "--input topic is given twice: give it once"
    );

    let no_default = flow(&HELLO.replace("default = \"world\"\n", ""));
    let err = check_inputs(&no_default, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input node 'name' has no value and no default: pass --input name=VALUE"
    );
    let no_inputs = flow(
        r#"name = "fixed"
[[nodes]]
id = "t"
kind = "template"
text = "x"
[[nodes]]
id = "o"
kind = "output"
[[edges]]
from = "t"
to = "o"
"#,
    );
    assert_eq!(
        check_inputs(&no_inputs, &pairs(&[("a", "b")]))
            .unwrap_err()
            .to_string(),
        "--input a: the flow has no input node 'a': it takes no inputs: leave --input out"
    );
}

// ---------------------------------------------------------------------------
// Service nodes.

const SERVICE: &str = include_str!("../../../examples/service.toml");

#[tokio::test(start_paused = true)]
async fn service_example_runs_with_exact_events() {
    let f = flow(SERVICE);
    let env = Fake::default();
    let got = run_flow(&f, &pairs(&[("item", "a b?c#d")]), &[], &env).await;
    let want = vec![
        sum("item", NodeStatus::Ok, 0),
        sum("fetch", NodeStatus::Ok, 10),
        sum("note", NodeStatus::Ok, 0),
        sum("save", NodeStatus::Ok, 10),
        sum("out", NodeStatus::Ok, 0),
        sum("saved", NodeStatus::Ok, 0),
    ];
    assert_eq!(got, want);
    // The placeholder value is one percent-encoded segment; the two requests
    // run at the same time.
    assert_eq!(
        *env.log.borrow(),
        vec![
            "service fetch /items/a%20b%3Fc%23d -",
            "service save /notes Looked up item a b?c#d.",
            "end fetch",
            "end save",
        ]
    );
    let fetched = "GET /items/a%20b%3Fc%23d -";
    let saved = "POST /notes Looked up item a b?c#d.";
    assert_eq!(
        *env.events.borrow(),
        vec![
            started("item"),
            finished(&want[0]),
            started("fetch"),
            started("note"),
            finished(&want[2]),
            started("save"),
            finished(&want[1]),
            started("out"),
            RunEvent::Output {
                node: "out".into(),
                text: fetched.into()
            },
            finished(&want[4]),
            finished(&want[3]),
            started("saved"),
            finished(&want[5]),
        ]
    );
    // Each response is kept in the spool, and the outputs too.
    assert_eq!(
        *env.written.borrow(),
        pairs(&[
            ("fetch", fetched),
            ("out", fetched),
            ("save", saved),
            ("saved", saved)
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn failed_service_node_skips_its_dependents_only() {
    let f = flow(SERVICE);
    let env = Fake {
        answers: [("fetch".to_owned(), Err(NodeError::HttpStatus(404)))].into(),
        ..Fake::default()
    };
    let got = run_flow(&f, &[], &[], &env).await;
    let status: Vec<(&str, NodeStatus)> = got
        .iter()
        .map(|s| (s.node.as_str(), s.status.clone()))
        .collect();
    assert_eq!(
        status,
        vec![
            ("item", NodeStatus::Ok),
            ("fetch", NodeStatus::Failed(NodeError::HttpStatus(404))),
            ("note", NodeStatus::Ok),
            ("save", NodeStatus::Ok),
            ("out", NodeStatus::Skipped(SkipReason::UpstreamNotDone)),
            ("saved", NodeStatus::Ok),
        ]
    );
    assert!(env.events.borrow().contains(&started("fetch")));
    assert!(env.written.borrow().iter().all(|(n, _)| n != "fetch"));
}

#[tokio::test(start_paused = true)]
async fn a_value_that_is_not_one_segment_fails_without_a_request() {
    let f = flow(SERVICE);
    for bad in ["..", ".", "", "a/b", "a\\b", "a\nb"] {
        let env = Fake::default();
        let got = run_flow(&f, &pairs(&[("item", bad)]), &[], &env).await;
        assert_eq!(
            got[1],
            sum(
                "fetch",
                NodeStatus::Failed(NodeError::Egress(EgressError::BadRequest)),
                0
            ),
            "{bad:?}"
        );
        assert!(
            env.log.borrow().iter().all(|l| !l.contains("fetch")),
            "{bad:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn service_response_that_cannot_be_spooled_fails_the_node() {
    let f = flow(SERVICE);
    let env = Fake {
        spool_fails: true,
        ..Fake::default()
    };
    let got = run_flow(&f, &[], &[], &env).await;
    assert_eq!(
        got[1],
        sum("fetch", NodeStatus::Failed(NodeError::Spool), 10)
    );
    assert_eq!(
        got[4],
        sum("out", NodeStatus::Skipped(SkipReason::UpstreamNotDone), 0)
    );
}

#[test]
fn path_rendering_encodes_one_segment() {
    let values: BTreeMap<&str, &str> = [
        ("id", "a?b#c%d e+f"),
        ("q", "x&y=z/w"),
        ("u", "caf\u{e9}~-._"),
    ]
    .into();
    let get = |n: &str| values.get(n).copied();
    assert_eq!(
        render_service_path("/items/{id}/raw?q={q}", get),
        Ok("/items/a%3Fb%23c%25d%20e%2Bf/raw?q=x%26y%3Dz%2Fw".to_owned())
    );
    assert_eq!(
        render_service_path("/{u}", get),
        Ok("/caf%C3%A9~-._".to_owned())
    );
    assert_eq!(
        render_service_path("/{missing}", get),
        Err(PathRenderError::Unbound)
    );
    // Separators before the query (the gateway refuses them encoded),
    // controls anywhere, dot segments, and too long a result.
    let long = "x".repeat(crate::format::MAX_SERVICE_PATH);
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a\\b",
        "a\u{0}b",
        "a\u{7f}",
        long.as_str(),
    ] {
        assert_eq!(
            render_service_path("/{v}", |_| Some(bad)),
            Err(PathRenderError::BadValue),
            "{bad:?}"
        );
    }
    assert_eq!(
        render_service_path("/a?q={v}", |_| Some("a\tb")),
        Err(PathRenderError::BadValue)
    );
    // "..." is an ordinary name.
    assert_eq!(
        render_service_path("/{v}", |_| Some("...")),
        Ok("/...".to_owned())
    );
}

// ---------------------------------------------------------------------------
// `call_service` against a scripted gateway on a real channel.

use proto::channel::Channel;
use proto::egress::{EgressResponse, EGRESS_MAX_FRAME};
use proto::msg::ServiceKind;
use tokio::net::UnixStream;

/// What the scripted gateway does with the one request it receives.
enum Script {
    Answer(Vec<EgressResponse>),
    /// Close the channel without answering.
    Hang,
}

/// Runs `call_service_capped` for `node` against a gateway that answers
/// with `script`; returns the result and the request the gateway saw.
async fn call_with(
    node: &FlowNode,
    path: &str,
    body: Option<&str>,
    cap: u64,
    script: Script,
) -> (Result<String, NodeError>, EgressRequest) {
    let (a, b) = UnixStream::pair().unwrap();
    let holder = async {
        let mut chan = Channel::handshake_with_max_frame(a, ServiceKind::Egress, EGRESS_MAX_FRAME)
            .await
            .unwrap();
        call_service_capped(
            &mut chan,
            7,
            node,
            path.to_owned(),
            body.map(str::to_owned),
            cap,
        )
        .await
    };
    let gateway = async {
        let mut chan = Channel::handshake_with_max_frame(b, ServiceKind::Egress, EGRESS_MAX_FRAME)
            .await
            .unwrap();
        let req: EgressRequest = chan.recv().await.unwrap();
        if let Script::Answer(frames) = script {
            for f in frames {
                chan.send(&f).await.unwrap();
            }
        }
        // Dropping the channel closes it.
        req
    };
    tokio::join!(holder, gateway)
}

fn svc_node(method: Method, content_type: Option<&str>) -> FlowNode {
    FlowNode {
        id: "s".into(),
        kind: FlowNodeKind::Service {
            service: "api".into(),
            method,
            path: "/items/{id}".into(),
            content_type: content_type.map(str::to_owned),
        },
    }
}

fn answer(status: u16, chunks: &[&[u8]]) -> Script {
    let mut frames = vec![EgressResponse::Head {
        id: 7,
        status,
        headers: vec![("content-type".into(), "text/plain".into())],
    }];
    for c in chunks {
        frames.push(EgressResponse::Body {
            id: 7,
            chunk: c.to_vec(),
        });
    }
    frames.push(EgressResponse::End { id: 7 });
    Script::Answer(frames)
}

#[tokio::test]
async fn call_service_sends_the_request_and_joins_the_body() {
    let node = svc_node(Method::Post, Some("application/json"));
    let (got, req) = call_with(
        &node,
        "/items/x%2Fy",
        Some("{\"a\": 1}"),
        1024,
        answer(201, &[b"caf", "\u{e9} ".as_bytes(), b"ok"]),
    )
    .await;
    assert_eq!(got, Ok("caf\u{e9} ok".to_owned()));
    assert_eq!(
        req,
        EgressRequest::Http {
            id: 7,
            connection: "api".into(),
            method: Method::Post,
            path: "/items/x%2Fy".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"a\": 1}".to_vec(),
        }
    );
}

#[tokio::test]
async fn call_service_sends_no_body_with_get() {
    let node = svc_node(Method::Get, None);
    let (got, req) = call_with(&node, "/items/1", Some("x"), 1024, answer(200, &[])).await;
    assert_eq!(got, Ok(String::new()));
    let EgressRequest::Http { body, headers, .. } = req;
    assert_eq!((body, headers), (Vec::new(), Vec::new()));
}

#[tokio::test]
async fn call_service_failures() {
    let node = svc_node(Method::Get, None);
    let cases: Vec<(Script, NodeError)> = vec![
        (answer(404, &[b"not found"]), NodeError::HttpStatus(404)),
        (answer(500, &[]), NodeError::HttpStatus(500)),
        // A redirect the gateway did not follow is not the resource.
        (answer(302, &[]), NodeError::HttpStatus(302)),
        (
            Script::Answer(vec![EgressResponse::Error {
                id: 7,
                error: EgressError::AddressDenied,
            }]),
            NodeError::Egress(EgressError::AddressDenied),
        ),
        (
            answer(200, &[b"ok", &[0xff, 0xfe]]),
            NodeError::Egress(EgressError::BadUpstreamResponse),
        ),
        // Over the cap (10 bytes): cut, and a failure.
        (
            answer(200, &[b"123456", b"789012"]),
            NodeError::Egress(EgressError::ResponseTooLarge),
        ),
        (Script::Hang, NodeError::GatewayUnavailable),
        // Frames of another request: the channel is out of step.
        (
            Script::Answer(vec![EgressResponse::End { id: 8 }]),
            NodeError::GatewayUnavailable,
        ),
    ];
    for (script, want) in cases {
        let (got, _) = call_with(&node, "/items/1", None, 10, script).await;
        assert_eq!(got, Err(want), "{want:?}");
    }
    // Exactly at the cap is fine.
    let (got, _) = call_with(&node, "/items/1", None, 10, answer(200, &[b"1234567890"])).await;
    assert_eq!(got, Ok("1234567890".to_owned()));
}
