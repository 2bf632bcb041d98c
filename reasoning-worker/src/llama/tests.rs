//! Tests against a deterministic in-process llama-server double: the test
//! writes canned HTTP responses (shaped like the real server's, see
//! `tests/real_llama.rs`) into one end of a `UnixStream` pair.

use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const PROMPT: &str = "secret prompt text 7f3a";

fn completion(prompt: &str) -> InferInput {
    InferInput::Completion {
        prompt: prompt.into(),
    }
}

fn chat(system: Option<&str>, user: &str) -> InferInput {
    InferInput::Chat {
        system: system.map(Into::into),
        user: user.into(),
    }
}

fn params() -> InferParams {
    InferParams {
        max_tokens: 3,
        temperature_milli: 700,
        top_p_milli: 900,
        top_k: 40,
        seed: Some(42),
        stop: vec!["\n\n".into()],
        ignore_eos: false,
        cache_prompt: true,
    }
}

/// A 200 head with chunked encoding, as llama-server sends for streams.
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nAccess-Control-Allow-Origin: \r\n\
X-Accel-Buffering: no\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\
Keep-Alive: timeout=5, max=100\r\n\r\n";

/// One chunk per event, then the last chunk.
fn chunked(events: &[&str]) -> Vec<u8> {
    let mut out = SSE_HEAD.as_bytes().to_vec();
    for e in events {
        let data = format!("data: {e}\n\n");
        out.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn completion_events() -> Vec<&'static str> {
    vec![
        r#"{"index":0,"content":",","tokens":[28],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":4}"#,
        r#"{"index":0,"content":" the","tokens":[260],"stop":false,"id_slot":-1,"tokens_predicted":2,"tokens_evaluated":4}"#,
        r#"{"index":0,"content":" city","tokens":[2240],"stop":false,"id_slot":-1,"tokens_predicted":3,"tokens_evaluated":4}"#,
        r#"{"index":0,"content":"","tokens":[],"id_slot":1,"stop":true,"prompt":"secret prompt text 7f3a","tokens_predicted":3,"tokens_evaluated":4,"has_new_line":false,"truncated":false,"stop_type":"limit","stopping_word":"","tokens_cached":6,"timings":{"cache_n":3,"prompt_n":1,"predicted_n":3,"predicted_per_second":148.1}}"#,
    ]
}

fn chat_events(finish: &str) -> Vec<String> {
    let meta = r#""created":1795643459,"id":"chatcmpl-x","model":"m.gguf","system_fingerprint":"b0-unknown","object":"chat.completion.chunk""#;
    vec![
        format!(
            r#"{{"choices":[{{"finish_reason":null,"index":0,"delta":{{"role":"assistant","content":null}}}}],{meta}}}"#
        ),
        format!(
            r#"{{"choices":[{{"finish_reason":null,"index":0,"delta":{{"content":"Once"}}}}],{meta}}}"#
        ),
        format!(
            r#"{{"choices":[{{"finish_reason":null,"index":0,"delta":{{"content":" upon"}}}}],{meta}}}"#
        ),
        format!(r#"{{"choices":[{{"finish_reason":"{finish}","index":0,"delta":{{}}}}],{meta}}}"#),
        format!(
            r#"{{"choices":[],{meta},"usage":{{"completion_tokens":2,"prompt_tokens":33,"total_tokens":35,"prompt_tokens_details":{{"cached_tokens":1}}}},"timings":{{"cache_n":1,"prompt_n":32,"predicted_n":2}}}}"#
        ),
        "[DONE]".to_string(),
    ]
}

fn chat_response(finish: &str) -> Vec<u8> {
    let events = chat_events(finish);
    let refs: Vec<&str> = events.iter().map(String::as_str).collect();
    chunked(&refs)
}

fn plain(status: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nServer: llama.cpp\r\nContent-Type: application/json; charset=utf-8\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read one whole request (head, then `Content-Length` bytes of body).
async fn read_request(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        req.push(byte[0]);
    }
    let head = String::from_utf8(req.clone()).ok()?;
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap_or(0));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    req.extend_from_slice(&body);
    Some(req)
}

/// Serve `responses` in order, one per request, each written in pieces of
/// `piece` bytes with a yield in between (so the client sees split reads),
/// then keep the connection until the client drops it. Returns the requests
/// received.
fn double(responses: Vec<Vec<u8>>, piece: usize) -> (UnixStream, JoinHandle<Vec<Vec<u8>>>) {
    serve(responses, piece, false)
}

/// Like [`double`], but close right after the last response, as the pinned
/// llama-server does after every streamed response.
fn double_closing(responses: Vec<Vec<u8>>) -> (UnixStream, JoinHandle<Vec<Vec<u8>>>) {
    serve(responses, 4096, true)
}

fn serve(
    responses: Vec<Vec<u8>>,
    piece: usize,
    close: bool,
) -> (UnixStream, JoinHandle<Vec<Vec<u8>>>) {
    let (client, mut server) = UnixStream::pair().unwrap();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for resp in responses {
            let Some(req) = read_request(&mut server).await else {
                break;
            };
            seen.push(req);
            for p in resp.chunks(piece) {
                if server.write_all(p).await.is_err() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        }
        if !close {
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
            if !rest.is_empty() {
                seen.push(rest);
            }
        }
        seen
    });
    (client, task)
}

fn split_request(req: &[u8]) -> (String, Value) {
    let at = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(req[..at + 4].to_vec()).unwrap();
    let body = serde_json::from_slice(&req[at + 4..]).unwrap();
    (head, body)
}

async fn run(
    conn: &mut UnixStream,
    input: &InferInput,
    params: &InferParams,
) -> (Result<Completed, LlamaError>, Vec<String>) {
    let mut tokens = Vec::new();
    let res = infer(conn, input, params, |t| tokens.push(t.to_owned())).await;
    (res, tokens)
}

#[tokio::test]
async fn completion_streams_tokens_from_reads_split_everywhere() {
    for piece in [1, 3, 7, 64, 100_000] {
        let (mut conn, server) = double(vec![chunked(&completion_events())], piece);
        let (res, tokens) = run(&mut conn, &completion(PROMPT), &params()).await;
        assert_eq!(
            res.unwrap(),
            Completed {
                prompt_tokens: 4,
                generated_tokens: 3,
                stop: StopReason::Length,
                keep_alive: true,
            },
            "piece size {piece}"
        );
        assert_eq!(tokens, [",", " the", " city"]);
        drop(conn);
        let reqs = server.await.unwrap();
        assert_eq!(reqs.len(), 1);
        let (head, body) = split_request(&reqs[0]);
        let body_len = reqs[0].len() - head.len();
        assert_eq!(
            head,
            format!(
                "POST /completion HTTP/1.1\r\nHost: llama\r\nConnection: keep-alive\r\n\
                 Content-Type: application/json\r\nAccept: text/event-stream\r\n\
                 Content-Length: {body_len}\r\n\r\n"
            )
        );
        assert_eq!(
            body,
            json!({
                "prompt": PROMPT, "n_predict": 3, "return_tokens": false,
                "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 42,
                "stop": ["\n\n"], "ignore_eos": false, "cache_prompt": true, "stream": true,
            })
        );
    }
}

#[tokio::test]
async fn chat_request_and_stream() {
    let (mut conn, server) = double(vec![chat_response("length")], 5);
    let mut p = params();
    p.seed = None;
    p.stop.clear();
    p.ignore_eos = true;
    let mut tokens = Vec::new();
    let done = infer_with(
        &mut conn,
        &chat(Some("be brief"), "tell a story"),
        &p,
        &InferOptions {
            cache_prompt: false,
        },
        |t| tokens.push(t.to_owned()),
    )
    .await
    .unwrap();
    assert_eq!(
        done,
        Completed {
            prompt_tokens: 33,
            generated_tokens: 2,
            stop: StopReason::Length,
            keep_alive: true,
        }
    );
    assert_eq!(tokens, ["Once", " upon"]);
    drop(conn);
    let reqs = server.await.unwrap();
    let (head, body) = split_request(&reqs[0]);
    assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"));
    assert_eq!(
        body,
        json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "tell a story"},
            ],
            "max_tokens": 3, "stream_options": {"include_usage": true},
            "temperature": 0.7, "top_p": 0.9, "top_k": 40,
            "stop": [], "ignore_eos": true, "cache_prompt": false, "stream": true,
        })
    );
}

#[tokio::test]
async fn chat_without_system_sends_only_the_user_message() {
    let (mut conn, server) = double(vec![chat_response("stop")], 4096);
    let mut p = params();
    p.stop.clear();
    let (res, _) = run(&mut conn, &chat(None, "hi"), &p).await;
    assert_eq!(res.unwrap().stop, StopReason::Eos);
    drop(conn);
    let (_, body) = split_request(&server.await.unwrap()[0]);
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[tokio::test]
async fn chat_finish_stop_with_stop_strings_is_stop_string() {
    let (mut conn, _server) = double(vec![chat_response("stop")], 4096);
    let (res, _) = run(&mut conn, &chat(None, "hi"), &params()).await;
    assert_eq!(res.unwrap().stop, StopReason::StopString);
}

#[tokio::test]
async fn chat_without_usage_falls_back_to_timings() {
    let meta = r#""object":"chat.completion.chunk""#;
    let events = [
        format!(
            r#"{{"choices":[{{"finish_reason":null,"index":0,"delta":{{"content":"Hi"}}}}],{meta}}}"#
        ),
        format!(
            r#"{{"choices":[{{"finish_reason":"stop","index":0,"delta":{{}}}}],{meta},"timings":{{"cache_n":2,"prompt_n":17,"predicted_n":1}}}}"#
        ),
        "[DONE]".to_string(),
    ];
    let refs: Vec<&str> = events.iter().map(String::as_str).collect();
    let (mut conn, _server) = double(vec![chunked(&refs)], 4096);
    let mut p = params();
    p.stop.clear();
    let (res, _) = run(&mut conn, &chat(None, "hi"), &p).await;
    assert_eq!(
        res.unwrap(),
        Completed {
            prompt_tokens: 19,
            generated_tokens: 1,
            stop: StopReason::Eos,
            keep_alive: true,
        }
    );
}

#[tokio::test]
async fn stop_types_map_to_stop_reasons() {
    let cases = [
        (r#""stop_type":"eos""#, StopReason::Eos),
        (r#""stop_type":"limit""#, StopReason::Length),
        (
            r#""stop_type":"word","stopping_word":"\n\n""#,
            StopReason::StopString,
        ),
        (
            r#""stopped_eos":false,"stopped_word":true"#,
            StopReason::StopString,
        ),
        (r#""stopped_eos":true"#, StopReason::Eos),
        (r#""stopped_limit":true"#, StopReason::Length),
    ];
    for (fields, want) in cases {
        let last = format!(
            r#"{{"content":"","stop":true,"tokens_predicted":1,"tokens_evaluated":2,{fields}}}"#
        );
        let (mut conn, _server) = double(vec![chunked(&[&last])], 4096);
        let (res, tokens) = run(&mut conn, &completion(PROMPT), &params()).await;
        assert_eq!(res.unwrap().stop, want, "{fields}");
        assert!(tokens.is_empty());
    }
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_for_two_requests() {
    let (mut conn, server) = double(
        vec![chunked(&completion_events()), chat_response("length")],
        11,
    );
    let (first, t1) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert!(first.unwrap().keep_alive);
    let (second, t2) = run(&mut conn, &chat(None, "hi"), &params()).await;
    assert!(second.unwrap().keep_alive);
    assert_eq!((t1.len(), t2.len()), (3, 2));
    drop(conn);
    let reqs = server.await.unwrap();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].starts_with(b"POST /v1/chat/completions "));
}

#[tokio::test]
async fn connection_close_or_http10_is_not_kept_alive() {
    let with_close = String::from_utf8(chunked(&completion_events()))
        .unwrap()
        .replacen(
            "Keep-Alive: timeout=5, max=100\r\n",
            "Connection: keep-alive, close\r\n",
            1,
        );
    let http10 = String::from_utf8(chunked(&completion_events()))
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    for resp in [with_close, http10] {
        let (mut conn, _server) = double(vec![resp.into_bytes()], 4096);
        let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
        assert!(!res.unwrap().keep_alive);
    }
}

#[tokio::test]
async fn close_right_after_the_response_forbids_reuse() {
    let (mut conn, server) = double_closing(vec![chunked(&completion_events())]);
    let (res, tokens) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert_eq!(
        res.unwrap(),
        Completed {
            prompt_tokens: 4,
            generated_tokens: 3,
            stop: StopReason::Length,
            keep_alive: false,
        }
    );
    assert_eq!(tokens.len(), 3);
    assert_eq!(server.await.unwrap().len(), 1);
    // The next request on it is refused with the retryable error.
    let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert!(
        matches!(res, Err(LlamaError::ClosedBeforeResponse { .. })),
        "{res:?}"
    );
}

#[tokio::test]
async fn bytes_after_the_response_forbid_reuse() {
    let mut resp = chunked(&completion_events());
    resp.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    let (mut conn, _server) = double(vec![resp], 100_000);
    let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert!(!res.unwrap().keep_alive);
}

#[tokio::test]
async fn content_length_framed_stream_is_accepted() {
    let mut body = String::new();
    for e in completion_events() {
        body.push_str(&format!("data: {e}\r\n\r\n"));
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (mut conn, _server) = double(vec![resp.into_bytes()], 9);
    let (res, tokens) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert_eq!(res.unwrap().generated_tokens, 3);
    assert_eq!(tokens.concat(), ", the city");
}

/// The client hands a token over before the server has sent the next one:
/// streaming, not buffering.
#[tokio::test]
async fn tokens_are_delivered_before_the_response_ends() {
    let (mut conn, mut server) = UnixStream::pair().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let events = completion_events();
    let all = chunked(&events);
    // Everything up to and including the first event's chunk.
    let first = format!("data: {}\n\n\r\n", events[0]);
    let split = all
        .windows(first.len())
        .position(|w| w == first.as_bytes())
        .unwrap()
        + first.len();
    let task = tokio::spawn(async move {
        read_request(&mut server).await.unwrap();
        server.write_all(&all[..split]).await.unwrap();
        // Hold the rest back until the client has seen the first token.
        tokio::time::timeout(Duration::from_secs(5), seen_rx)
            .await
            .expect("the client buffered instead of streaming")
            .unwrap();
        server.write_all(&all[split..]).await.unwrap();
    });
    let mut tx = Some(seen_tx);
    let mut tokens = Vec::new();
    let res = infer(&mut conn, &completion(PROMPT), &params(), |t| {
        tokens.push(t.to_owned());
        if let Some(tx) = tx.take() {
            let _ = tx.send(());
        }
    })
    .await;
    task.await.unwrap();
    assert_eq!(res.unwrap().generated_tokens, 3);
    assert_eq!(tokens.len(), 3);
}

fn is_protocol(res: &Result<Completed, LlamaError>, want: &str) -> bool {
    matches!(res, Err(LlamaError::Protocol { what }) if *what == want)
}

async fn run_raw(resp: Vec<u8>) -> Result<Completed, LlamaError> {
    let (mut conn, _server) = double_closing(vec![resp]);
    run(&mut conn, &completion(PROMPT), &params()).await.0
}

#[tokio::test]
async fn bad_chunk_sizes_are_protocol_errors() {
    let head = SSE_HEAD;
    let cases: [(String, &str); 6] = [
        (format!("{head}zz\r\ndata: x\r\n"), "bad chunk size"),
        (format!("{head}\r\n"), "bad chunk size"),
        (format!("{head}-5\r\nabcde\r\n"), "bad chunk size"),
        (
            format!("{head}5\r\nabcdefgh\r\n0\r\n\r\n"),
            "a chunk is longer than its size",
        ),
        (format!("{head}200000\r\n"), "a chunk is over 1 MiB"),
        (
            format!("{head}{}\r\n", "0".repeat(2000)),
            "a chunk-size line is too long",
        ),
    ];
    for (resp, want) in cases {
        let res = run_raw(resp.into_bytes()).await;
        assert!(is_protocol(&res, want), "{want}: {res:?}");
    }
}

#[tokio::test]
async fn chunk_extensions_and_trailers_are_tolerated() {
    let mut resp = String::from_utf8(chunked(&completion_events())).unwrap();
    resp = resp.replacen("\r\n73\r\n", "\r\n73;name=value\r\n", 1);
    let resp = resp.strip_suffix("0\r\n\r\n").unwrap().to_owned() + "0\r\nX-Trailer: 1\r\n\r\n";
    let (mut conn, _server) = double(vec![resp.into_bytes()], 4096);
    let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert!(res.unwrap().keep_alive);
}

#[tokio::test]
async fn oversized_lines_and_events_are_protocol_errors() {
    // One SSE line of 1.2 MiB spread over two chunks, each within the chunk limit.
    let half = "a".repeat(600 * 1024);
    let mut resp = SSE_HEAD.as_bytes().to_vec();
    for part in [format!("data: {half}"), half.clone()] {
        resp.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    let res = run_raw(resp).await;
    assert!(
        is_protocol(&res, "an event-stream line is over 1 MiB"),
        "{res:?}"
    );

    // Two data lines of 600 KiB each: each line fits, the event does not.
    let mut resp = SSE_HEAD.as_bytes().to_vec();
    for _ in 0..2 {
        let part = format!("data: {half}\n");
        resp.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    let res = run_raw(resp).await;
    assert!(is_protocol(&res, "an event is over 1 MiB"), "{res:?}");
}

#[tokio::test]
async fn bounded_and_strict_heads() {
    let many = (0..65).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let huge = format!("X-Big: {}\r\n", "v".repeat(17 * 1024));
    let cases: [(String, &str); 9] = [
        (
            format!("HTTP/1.1 200 OK\r\n{many}\r\n"),
            "the response has more than 64 headers",
        ),
        (
            format!("HTTP/1.1 200 OK\r\n{huge}\r\n"),
            "the response head is over 16 KiB",
        ),
        ("HTTP/2 200 OK\r\n\r\n".into(), "bad status line"),
        ("HTTP/1.1 2000 OK\r\n\r\n".into(), "bad status line"),
        (
            "HTTP/1.1 100 Continue\r\n\r\n".into(),
            "unexpected status code class",
        ),
        (
            "HTTP/1.1 200 OK\nContent-Length: 0\n\n".into(),
            "a line does not end with CRLF",
        ),
        (
            "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n".into(),
            "bad header name",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            "both transfer-encoding and content-length are present",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".into(),
            "the response has neither content-length nor chunked encoding",
        ),
    ];
    for (resp, want) in cases {
        let res = run_raw(resp.into_bytes()).await;
        assert!(is_protocol(&res, want), "{want}: {res:?}");
    }
    let res =
        run_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec()).await;
    assert!(
        is_protocol(&res, "unsupported transfer-encoding"),
        "{res:?}"
    );
}

#[tokio::test]
async fn malformed_events_are_protocol_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["not json"], "an event is not valid json"),
        (&["[1,2]"], "an event is not a json object"),
        (
            &[r#"{"content":"x"}"#],
            "a completion event has no boolean 'stop'",
        ),
        (
            &[r#"{"content":5,"stop":false}"#],
            "content is not a string",
        ),
        (
            &[
                r#"{"content":"","stop":true,"tokens_predicted":1,"tokens_evaluated":2,"stop_type":"none"}"#,
            ],
            "the final event has an unknown stop_type",
        ),
        (
            &[r#"{"content":"x","stop":false}"#],
            "the event stream ended without a final event",
        ),
    ];
    for (events, want) in cases {
        let res = run_raw(chunked(events)).await;
        assert!(is_protocol(&res, want), "{want}: {res:?}");
    }
    let mut after = completion_events();
    after.push(r#"{"content":"x","stop":false}"#);
    let res = run_raw(chunked(&after)).await;
    assert!(
        is_protocol(&res, "an event arrived after the final one"),
        "{res:?}"
    );
}

#[tokio::test]
async fn non_200_carries_only_the_error_type() {
    let body = format!(
        r#"{{"error":{{"code":400,"message":"request about '{PROMPT}' exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":3001,"n_ctx":1024}}}}"#
    );
    let (mut conn, _server) = double(
        vec![plain("400 Bad Request", "Connection: close\r\n", &body)],
        4096,
    );
    let (res, tokens) = run(&mut conn, &completion(PROMPT), &params()).await;
    let err = res.unwrap_err();
    assert!(tokens.is_empty());
    assert!(
        matches!(&err, LlamaError::Status { code: 400, kind: Some(k) } if k == "exceed_context_size_error"),
        "{err:?}"
    );
    assert_eq!(err.service_error(), ServiceError::BadRequest);
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("secret") && !shown.contains("exceeds"),
        "{shown}"
    );

    // A `type` that is not a short lower-case token is dropped: it could quote text.
    let body = format!(r#"{{"error":{{"code":500,"message":"x","type":"{PROMPT}"}}}}"#);
    let (mut conn, _server) = double(vec![plain("500 Internal Server Error", "", &body)], 4096);
    let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            LlamaError::Status {
                code: 500,
                kind: None
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.service_error(), ServiceError::ModelServerFailed);

    // A body that is not JSON still gives the status.
    let (mut conn, _server) = double(vec![plain("404 Not Found", "", "File Not Found")], 4096);
    let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert!(matches!(
        res,
        Err(LlamaError::Status {
            code: 404,
            kind: None
        })
    ));
}

#[tokio::test]
async fn error_event_mid_stream() {
    let events = [
        completion_events()[0],
        r#"{"error":{"code":500,"message":"secret prompt text","type":"server_error"}}"#,
    ];
    let res = run_raw(chunked(&events)).await;
    assert!(
        matches!(&res, Err(LlamaError::StreamError { kind: Some(k) }) if k == "server_error"),
        "{res:?}"
    );
    // The legacy `error:` field.
    let mut resp = SSE_HEAD.as_bytes().to_vec();
    let part =
        r#"error: {"code":400,"message":"m","type":"invalid_request_error"}"#.to_string() + "\n\n";
    resp.extend_from_slice(format!("{:x}\r\n{part}\r\n0\r\n\r\n", part.len()).as_bytes());
    let err = run_raw(resp).await.unwrap_err();
    assert!(
        matches!(&err, LlamaError::StreamError { kind: Some(k) } if k == "invalid_request_error")
    );
    assert_eq!(err.service_error(), ServiceError::BadRequest);
}

#[tokio::test]
async fn eof_mid_stream_is_server_closed() {
    let full = chunked(&completion_events());
    // Cut inside the head, inside a chunk, and between chunks.
    for cut in [40, SSE_HEAD.len() + 30, SSE_HEAD.len() + 0x73 + 8] {
        let res = run_raw(full[..cut].to_vec()).await;
        let want = if cut < SSE_HEAD.len() {
            Stage::ReadingHead
        } else {
            Stage::ReadingBody
        };
        assert!(
            matches!(res, Err(LlamaError::ServerClosed { stage }) if stage == want),
            "cut {cut}: {res:?}"
        );
    }
}

#[tokio::test]
async fn eof_before_any_byte_is_closed_before_response() {
    let res = run_raw(Vec::new()).await;
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            LlamaError::ClosedBeforeResponse {
                stage: Stage::ReadingHead
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.service_error(), ServiceError::ModelServerFailed);

    // The peer is gone before the request is written.
    let (mut conn, server) = UnixStream::pair().unwrap();
    drop(server);
    let (res, _) = run(&mut conn, &completion(PROMPT), &params()).await;
    assert!(
        matches!(res, Err(LlamaError::ClosedBeforeResponse { .. })),
        "{res:?}"
    );
}

/// Dropping the future mid-stream leaves a connection the caller drops; the
/// server then sees EOF, which is what makes llama-server stop generating.
#[tokio::test]
async fn cancelled_request_lets_the_caller_drop_the_connection() {
    let (mut conn, mut server) = UnixStream::pair().unwrap();
    let task = tokio::spawn(async move {
        read_request(&mut server).await.unwrap();
        let all = chunked(&completion_events());
        server.write_all(&all[..SSE_HEAD.len() + 50]).await.unwrap();
        // Generation "continues" until the client goes away.
        let mut rest = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(5), server.read(&mut rest)).await
    });
    let mut tokens = 0;
    let res = tokio::time::timeout(
        Duration::from_millis(100),
        infer(&mut conn, &completion(PROMPT), &params(), |_| tokens += 1),
    )
    .await;
    assert!(res.is_err(), "the request should still be running");
    drop(conn);
    let seen = task.await.unwrap();
    assert!(matches!(seen, Ok(Ok(0))), "server saw {seen:?}");
}

#[tokio::test]
async fn bad_params_are_refused_before_sending() {
    let cases: [(InferInput, InferParams, &str); 4] = [
        (
            completion(PROMPT),
            InferParams {
                max_tokens: 0,
                ..params()
            },
            "max_tokens must be at least 1",
        ),
        (completion(""), params(), "the completion prompt is empty"),
        (
            completion(PROMPT),
            InferParams {
                top_p_milli: 1001,
                ..params()
            },
            "top_p_milli must be at most 1000",
        ),
        (
            completion(PROMPT),
            InferParams {
                seed: Some(u32::MAX),
                ..params()
            },
            "seed 4294967295 means 'random' to llama-server; use another seed or none",
        ),
    ];
    for (input, p, want) in cases {
        let (mut conn, server) = double(vec![chunked(&completion_events())], 4096);
        let (res, _) = run(&mut conn, &input, &p).await;
        let err = res.unwrap_err();
        assert!(
            matches!(&err, LlamaError::BadParams { what } if *what == want),
            "{err:?}"
        );
        assert_eq!(err.service_error(), ServiceError::BadRequest);
        drop(conn);
        assert!(server.await.unwrap().is_empty(), "nothing must be sent");
    }
}

#[tokio::test]
async fn health_reports_ready_loading_and_failure() {
    let (mut conn, server) = double(
        vec![
            plain(
                "503 Service Unavailable",
                "",
                r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#,
            ),
            plain(
                "200 OK",
                "Keep-Alive: timeout=5, max=100\r\n",
                r#"{"status":"ok"}"#,
            ),
            plain("500 Internal Server Error", "", "{}"),
        ],
        3,
    );
    assert!(!health(&mut conn).await.unwrap());
    assert_eq!(
        health_status(&mut conn).await.unwrap(),
        Health {
            ready: true,
            keep_alive: true
        }
    );
    let err = health(&mut conn).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlamaError::Status {
                code: 500,
                kind: None
            }
        ),
        "{err:?}"
    );
    drop(conn);
    let reqs = server.await.unwrap();
    assert_eq!(
        reqs[0],
        b"GET /health HTTP/1.1\r\nHost: llama\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn service_errors() {
    let status = |code, kind: Option<&str>| LlamaError::Status {
        code,
        kind: kind.map(Into::into),
    };
    let cases = [
        (status(400, None), ServiceError::BadRequest),
        (
            status(500, Some("invalid_request_error")),
            ServiceError::BadRequest,
        ),
        (status(429, None), ServiceError::Busy),
        (
            status(503, Some("unavailable_error")),
            ServiceError::Unavailable,
        ),
        (
            status(404, Some("not_found_error")),
            ServiceError::ModelServerFailed,
        ),
        (status(500, None), ServiceError::ModelServerFailed),
        (
            LlamaError::StreamError { kind: None },
            ServiceError::ModelServerFailed,
        ),
        (
            LlamaError::ServerClosed {
                stage: Stage::ReadingBody,
            },
            ServiceError::ModelServerFailed,
        ),
        (
            LlamaError::Protocol { what: "x" },
            ServiceError::ModelServerFailed,
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.service_error(), want, "{err:?}");
    }
}

#[test]
fn sse_parser_handles_crlf_comments_multiline_and_unknown_fields() {
    let mut p = SseParser::default();
    let mut out = Vec::new();
    let input =
        b": comment\r\nevent: x\r\nid: 1\r\ndata: a\r\ndata:b\r\nretry: 5\r\n\r\n\n\ndata: c\n\n";
    // Byte by byte: every split point.
    for b in input {
        p.feed(std::slice::from_ref(b), |e| {
            out.push(e);
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(
        out,
        [SseEvent::Data("a\nb".into()), SseEvent::Data("c".into())]
    );
    assert!(p.is_idle());
}

#[test]
fn chunk_size_and_header_parsing() {
    assert_eq!(parse_chunk_size(b"6aa").unwrap(), 0x6aa);
    assert_eq!(parse_chunk_size(b"00000000000000A").unwrap(), 10);
    assert_eq!(parse_chunk_size(b"1f ; ext=1").unwrap(), 0x1f);
    assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    assert!(parse_chunk_size(b"0x10").is_err());
    assert!(parse_chunk_size(b" 10").is_err());
    assert_eq!(
        parse_header(b"Content-Length:  15 ").unwrap(),
        (&b"Content-Length"[..], &b"15"[..])
    );
    assert!(parse_header(b"Bad Name: x").is_err());
    assert!(parse_header(b"X: a\x00b").is_err());
    assert_eq!(parse_decimal(b"18446744073709551615"), None);
    assert_eq!(parse_decimal(b"+5"), None);
}
