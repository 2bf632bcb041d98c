//! Client for the managed llama-server: one HTTP/1.1 request per call, written
//! to and read from a unix stream the broker already connected.
//!
//! **Invariant:** this module never opens or connects a socket; it only reads
//! and writes the stream it is given (the worker's seccomp allowlist has no
//! `socket`/`connect`).
//!
//! **Invariant:** prompt text and generated text never appear in an error or a
//! log line. Errors carry static descriptions, numbers and, at most, the
//! server's short machine-readable error `type` (checked to be `[a-z0-9_]`);
//! never the server's `message`, which can quote the request.
//!
//! The parser is strict and bounded: status line and headers together at most
//! [`MAX_HEAD_BYTES`] in at most [`MAX_HEADERS`] lines, CRLF line endings,
//! either `Transfer-Encoding: chunked` or `Content-Length` (never both), chunks,
//! SSE lines and SSE events at most [`MAX_CHUNK_BYTES`], [`MAX_LINE_BYTES`] and
//! [`MAX_EVENT_BYTES`]. Anything else is [`LlamaError::Protocol`].
//!
//! # Connection reuse
//!
//! A connection may carry another request only when the previous call returned
//! `Ok` with `keep_alive: true` ([`Completed::keep_alive`], [`Health::keep_alive`]).
//! The pinned llama-server keeps connections after `/health` and other plain
//! responses but closes them right after every streamed response, without
//! saying so in a header; `keep_alive` is therefore decided by watching the
//! connection for that close for up to 5 ms after the response ends.
//! After any `Err`, or when the call's future was dropped (cancellation,
//! timeout), the connection is in an unknown state: drop it. Dropping it is
//! also how a generation is cancelled: llama-server stops generating when its
//! client disconnects. llama-server closes idle keep-alive connections after a
//! few seconds (`Keep-Alive: timeout=5`); a request on such a connection fails
//! with [`LlamaError::ClosedBeforeResponse`].
//!
//! Deadlines are the caller's: wrap the call in `tokio::time::timeout`. A dead
//! server is detected without one (EOF or reset gives an error at once).

use proto::msg::{InferInput, InferParams, ServiceError, StopReason};
use serde_json::{json, Map, Value};
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest status line plus header block accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted in one response.
pub const MAX_HEADERS: usize = 64;
/// Largest single chunk of a chunked body.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest SSE line.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Largest SSE event (all its `data:` lines together).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Largest non-streamed body (error bodies, `/health`).
pub const MAX_PLAIN_BODY_BYTES: usize = 64 * 1024;

/// Longest chunk-size line (hex size plus extensions).
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// How much is asked of the kernel per read.
const READ_BYTES: usize = 16 * 1024;
/// Longest server error `type` carried in an error.
const MAX_ERROR_KIND_BYTES: usize = 64;
/// llama.cpp reads this seed as "pick a random seed".
const LLAMA_RANDOM_SEED: u32 = u32::MAX;
/// How long to watch a finished connection for the server's close. The
/// pinned llama-server closes every connection right after a streamed
/// response (without `Connection: close`), within microseconds of the last
/// chunk; a server that keeps the connection costs this much per request.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(5);

/// Where in the exchange an I/O failure or EOF happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    WritingRequest,
    ReadingHead,
    ReadingBody,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::WritingRequest => "writing the request",
            Stage::ReadingHead => "reading the response head",
            Stage::ReadingBody => "reading the response body",
        })
    }
}

/// What can go wrong talking to llama-server. After any of these the
/// connection must be dropped.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    /// Rejected before anything was sent.
    #[error("inference parameters rejected: {what}: fix the request")]
    BadParams { what: &'static str },
    /// The connection ended before a single response byte arrived: the server
    /// dropped an idle keep-alive connection, or it is gone.
    #[error(
        "llama-server closed the connection before answering (while {stage}): \
         retry once on a new connection; if that fails too, check that llama-server is running"
    )]
    ClosedBeforeResponse { stage: Stage },
    /// The connection ended in the middle of a response: the server died or
    /// was killed.
    #[error(
        "llama-server closed the connection mid-response (while {stage}): \
         it probably died; check its log and restart it"
    )]
    ServerClosed { stage: Stage },
    /// Reading or writing the connection failed.
    #[error("llama-server connection failed while {stage}: {source}: drop the connection and use a new one")]
    Io {
        stage: Stage,
        #[source]
        source: std::io::Error,
    },
    /// A non-success HTTP status, with the server's error `type` if it sent one.
    #[error("llama-server answered http {code} ({}): see its log for the reason", kind.as_deref().unwrap_or("no error type"))]
    Status { code: u16, kind: Option<String> },
    /// The server reported an error inside an event stream.
    #[error("llama-server reported an error mid-stream ({}): see its log for the reason", kind.as_deref().unwrap_or("no error type"))]
    StreamError { kind: Option<String> },
    /// The response broke HTTP/1.1, chunked encoding, SSE or the event schema,
    /// or went over a size limit.
    #[error("malformed response from llama-server: {what}: check that the llama-server version matches the pinned one")]
    Protocol { what: &'static str },
}

impl LlamaError {
    /// The typed error the reasoning capability reports for this failure.
    pub fn service_error(&self) -> ServiceError {
        match self {
            LlamaError::BadParams { .. } => ServiceError::BadRequest,
            LlamaError::Status { code, kind } => match (code, kind.as_deref()) {
                (_, Some("invalid_request_error" | "exceed_context_size_error")) => {
                    ServiceError::BadRequest
                }
                (400 | 413 | 422, _) => ServiceError::BadRequest,
                (429, _) => ServiceError::Busy,
                (503, _) | (_, Some("unavailable_error")) => ServiceError::Unavailable,
                _ => ServiceError::ModelServerFailed,
            },
            LlamaError::StreamError { kind } => match kind.as_deref() {
                Some("invalid_request_error" | "exceed_context_size_error") => {
                    ServiceError::BadRequest
                }
                Some("unavailable_error") => ServiceError::Unavailable,
                _ => ServiceError::ModelServerFailed,
            },
            LlamaError::ClosedBeforeResponse { .. }
            | LlamaError::ServerClosed { .. }
            | LlamaError::Io { .. }
            | LlamaError::Protocol { .. } => ServiceError::ModelServerFailed,
        }
    }
}

fn protocol(what: &'static str) -> LlamaError {
    LlamaError::Protocol { what }
}

/// Per-call options that are not part of the wire-level [`InferParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferOptions {
    /// Let llama-server reuse the KV cache of a previous prompt in the same
    /// slot (`cache_prompt`). Faster; output can differ in the last bits from
    /// an uncached run, so determinism tests may turn it off.
    pub cache_prompt: bool,
}

impl Default for InferOptions {
    fn default() -> InferOptions {
        InferOptions { cache_prompt: true }
    }
}

/// A finished generation: metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Tokens in the prompt (cached ones included).
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub stop: StopReason,
    /// The response was consumed to its last byte, the server did not ask to
    /// close, and it did not close right after the response: the connection
    /// can carry the next request. (Always false with the pinned llama-server,
    /// which closes after each streamed response.)
    pub keep_alive: bool,
}

/// Answer of `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// 200: the model is loaded. 503: still loading.
    pub ready: bool,
    /// Same meaning as [`Completed::keep_alive`].
    pub keep_alive: bool,
}

/// Run one inference on `conn`, calling `on_token` with each non-empty piece
/// of generated text as soon as it arrives.
///
/// Uses [`InferOptions::default`]. See [`infer_with`].
pub async fn infer(
    conn: &mut UnixStream,
    input: &InferInput,
    params: &InferParams,
    on_token: impl FnMut(&str),
) -> Result<Completed, LlamaError> {
    infer_with(conn, input, params, &InferOptions::default(), on_token).await
}

/// Run one inference on `conn` with explicit options.
///
/// `Completion` goes to `POST /completion`, `Chat` to
/// `POST /v1/chat/completions`, both streamed.
///
/// Cancellation: dropping the returned future at any point is allowed; the
/// connection is then not reusable and must be dropped, which makes
/// llama-server cancel the generation.
///
/// For `Chat`, llama-server reports both an end-of-turn token and a stop
/// string as `finish_reason: "stop"`; this maps it to
/// [`StopReason::StopString`] when stop strings were given and to
/// [`StopReason::Eos`] otherwise.
pub async fn infer_with(
    conn: &mut UnixStream,
    input: &InferInput,
    params: &InferParams,
    options: &InferOptions,
    on_token: impl FnMut(&str),
) -> Result<Completed, LlamaError> {
    infer_on(conn, input, params, options, on_token).await
}

/// `GET /health`: `Ok(true)` when the model is loaded (200), `Ok(false)` while
/// it loads (503). Any other status is [`LlamaError::Status`].
pub async fn health(conn: &mut UnixStream) -> Result<bool, LlamaError> {
    health_on(conn).await.map(|h| h.ready)
}

/// [`health`] that also says whether the connection can be reused.
pub async fn health_status(conn: &mut UnixStream) -> Result<Health, LlamaError> {
    health_on(conn).await
}

// ---------------------------------------------------------------------------
// Requests

/// Which endpoint, and so which event schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completion,
    Chat,
}

fn check_params(input: &InferInput, params: &InferParams) -> Result<(), LlamaError> {
    if params.max_tokens == 0 {
        // llama-server reads n_predict 0 as "no limit" in some versions and
        // generates one token in others.
        return Err(LlamaError::BadParams {
            what: "max_tokens must be at least 1",
        });
    }
    if params.top_p_milli > 1000 {
        return Err(LlamaError::BadParams {
            what: "top_p_milli must be at most 1000",
        });
    }
    if params.seed == Some(LLAMA_RANDOM_SEED) {
        return Err(LlamaError::BadParams {
            what: "seed 4294967295 means 'random' to llama-server; use another seed or none",
        });
    }
    if let InferInput::Completion { prompt } = input {
        if prompt.is_empty() {
            // The server answers an empty prompt with stop_type "none".
            return Err(LlamaError::BadParams {
                what: "the completion prompt is empty",
            });
        }
    }
    Ok(())
}

fn milli(v: u32) -> f64 {
    f64::from(v) / 1000.0
}

fn request_body(
    input: &InferInput,
    params: &InferParams,
    options: &InferOptions,
) -> (Endpoint, Value) {
    let mut body = Map::new();
    let endpoint = match input {
        InferInput::Completion { prompt } => {
            body.insert("prompt".into(), json!(prompt));
            body.insert("n_predict".into(), json!(params.max_tokens));
            body.insert("return_tokens".into(), json!(false));
            Endpoint::Completion
        }
        InferInput::Chat { system, user } => {
            let mut messages = Vec::with_capacity(2);
            if let Some(system) = system {
                messages.push(json!({"role": "system", "content": system}));
            }
            messages.push(json!({"role": "user", "content": user}));
            body.insert("messages".into(), Value::Array(messages));
            body.insert("max_tokens".into(), json!(params.max_tokens));
            // Without this the stream carries no `usage` (token counts).
            body.insert("stream_options".into(), json!({"include_usage": true}));
            Endpoint::Chat
        }
    };
    body.insert("temperature".into(), json!(milli(params.temperature_milli)));
    body.insert("top_p".into(), json!(milli(params.top_p_milli)));
    body.insert("top_k".into(), json!(params.top_k));
    if let Some(seed) = params.seed {
        body.insert("seed".into(), json!(seed));
    }
    body.insert("stop".into(), json!(params.stop));
    body.insert("ignore_eos".into(), json!(params.ignore_eos));
    body.insert("cache_prompt".into(), json!(options.cache_prompt));
    body.insert("stream".into(), json!(true));
    (endpoint, Value::Object(body))
}

fn request_bytes(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: llama\r\nConnection: keep-alive\r\n");
    if let Some(body) = body {
        out.extend_from_slice(b"Content-Type: application/json\r\nAccept: text/event-stream\r\n");
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> Result<(), LlamaError> {
    let res = async {
        io.write_all(bytes).await?;
        io.flush().await
    }
    .await;
    res.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            LlamaError::ClosedBeforeResponse {
                stage: Stage::WritingRequest,
            }
        }
        _ => LlamaError::Io {
            stage: Stage::WritingRequest,
            source: e,
        },
    })
}

async fn infer_on<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    input: &InferInput,
    params: &InferParams,
    options: &InferOptions,
    mut on_token: impl FnMut(&str),
) -> Result<Completed, LlamaError> {
    check_params(input, params)?;
    let (endpoint, body) = request_body(input, params, options);
    let path = match endpoint {
        Endpoint::Completion => "/completion",
        Endpoint::Chat => "/v1/chat/completions",
    };
    let body = body.to_string().into_bytes();
    send(io, &request_bytes("POST", path, Some(&body))).await?;

    let mut wire = Wire::new(io);
    let head = read_head(&mut wire).await?;
    if head.code != 200 {
        return Err(status_error(&mut wire, &head).await);
    }
    let mut body = BodyReader::new(head.framing);
    let mut sse = SseParser::default();
    let mut state = StreamState::new(endpoint, !params.stop.is_empty());
    while let Some(piece) = body.next_piece(&mut wire).await? {
        sse.feed(&piece, |event| state.on_event(event, &mut on_token))?;
    }
    if !sse.is_idle() {
        return Err(protocol("the event stream ended in the middle of an event"));
    }
    let (prompt_tokens, generated_tokens, stop) = state.finish()?;
    let keep_alive = !head.close && wire.stays_open().await;
    Ok(Completed {
        prompt_tokens,
        generated_tokens,
        stop,
        keep_alive,
    })
}

async fn health_on<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<Health, LlamaError> {
    send(io, &request_bytes("GET", "/health", None)).await?;
    let mut wire = Wire::new(io);
    let head = read_head(&mut wire).await?;
    let ready = match head.code {
        200 => true,
        503 => false,
        _ => return Err(status_error(&mut wire, &head).await),
    };
    read_plain_body(&mut wire, head.framing).await?;
    let keep_alive = !head.close && wire.stays_open().await;
    Ok(Health { ready, keep_alive })
}

/// Turn a non-success response into [`LlamaError::Status`], keeping only the
/// error `type` of llama-server's `{"error": {"type": ...}}` body.
async fn status_error<S: AsyncRead + Unpin>(wire: &mut Wire<'_, S>, head: &Head) -> LlamaError {
    // The status is the error that matters; a broken error body does not
    // replace it.
    let kind = read_plain_body(wire, head.framing)
        .await
        .ok()
        .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
        .and_then(|v| error_kind(&v));
    LlamaError::Status {
        code: head.code,
        kind,
    }
}

/// The `error.type` of an error object, if it is a short machine-readable
/// token. Anything else is dropped: it could quote the request.
fn error_kind(v: &Value) -> Option<String> {
    let kind = v.get("error")?.get("type")?.as_str()?;
    let ok = !kind.is_empty()
        && kind.len() <= MAX_ERROR_KIND_BYTES
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| kind.to_owned())
}

async fn read_plain_body<S: AsyncRead + Unpin>(
    wire: &mut Wire<'_, S>,
    framing: Framing,
) -> Result<Vec<u8>, LlamaError> {
    let mut body = BodyReader::new(framing);
    let mut out = Vec::new();
    while let Some(piece) = body.next_piece(wire).await? {
        if out.len() + piece.len() > MAX_PLAIN_BODY_BYTES {
            return Err(protocol("a plain response body is over 64 KiB"));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reading bytes

/// Buffered reads from the connection, for one response. Bytes left in the
/// buffer at the end mean the server sent more than one response: the
/// connection is then not reused.
struct Wire<'a, S> {
    io: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
    received_any: bool,
}

impl<'a, S: AsyncRead + Unpin> Wire<'a, S> {
    fn new(io: &'a mut S) -> Wire<'a, S> {
        Wire {
            io,
            buf: Vec::with_capacity(READ_BYTES),
            pos: 0,
            received_any: false,
        }
    }

    fn buffered(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn is_drained(&self) -> bool {
        self.buffered().is_empty()
    }

    /// After a complete response: nothing extra was received and the server
    /// does not close the connection within [`CLOSE_GRACE`].
    async fn stays_open(&mut self) -> bool {
        if !self.is_drained() {
            return false;
        }
        let mut probe = [0u8; 1];
        // Any byte, EOF or error means the connection cannot carry a request.
        tokio::time::timeout(CLOSE_GRACE, self.io.read(&mut probe))
            .await
            .is_err()
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Read more bytes; EOF is an error because every caller still expects
    /// data.
    async fn fill(&mut self, stage: Stage) -> Result<(), LlamaError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_BYTES, 0);
        let res = self.io.read(&mut self.buf[old..]).await;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(match e.kind() {
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                        self.closed(stage)
                    }
                    _ => LlamaError::Io { stage, source: e },
                });
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            return Err(self.closed(stage));
        }
        self.received_any = true;
        Ok(())
    }

    fn closed(&self, stage: Stage) -> LlamaError {
        if self.received_any {
            LlamaError::ServerClosed { stage }
        } else {
            LlamaError::ClosedBeforeResponse { stage }
        }
    }

    /// One CRLF-terminated line, without the CRLF; `max` counts the CRLF.
    async fn line(
        &mut self,
        max: usize,
        stage: Stage,
        too_long: &'static str,
    ) -> Result<Vec<u8>, LlamaError> {
        let mut scanned = 0;
        loop {
            let avail = self.buffered();
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if end + 1 > max {
                    return Err(protocol(too_long));
                }
                if end == 0 || avail[end - 1] != b'\r' {
                    return Err(protocol("a line does not end with CRLF"));
                }
                let line = avail[..end - 1].to_vec();
                self.consume(end + 1);
                return Ok(line);
            }
            scanned = avail.len();
            if scanned >= max {
                return Err(protocol(too_long));
            }
            self.fill(stage).await?;
        }
    }

    /// Up to `max` bytes (at least one).
    async fn some(&mut self, max: usize, stage: Stage) -> Result<Vec<u8>, LlamaError> {
        if self.is_drained() {
            self.fill(stage).await?;
        }
        let avail = self.buffered();
        let n = avail.len().min(max);
        let out = avail[..n].to_vec();
        self.consume(n);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Response head

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    Empty,
}

#[derive(Debug)]
struct Head {
    code: u16,
    framing: Framing,
    /// The server will close after this response.
    close: bool,
}

async fn read_head<S: AsyncRead + Unpin>(wire: &mut Wire<'_, S>) -> Result<Head, LlamaError> {
    const TOO_LONG: &str = "the response head is over 16 KiB";
    let stage = Stage::ReadingHead;
    let mut budget = MAX_HEAD_BYTES;
    let status = wire.line(budget, stage, TOO_LONG).await?;
    budget -= status.len() + 2;
    let (http10, code) = parse_status_line(&status)?;

    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut close = http10;
    let mut count = 0;
    loop {
        let line = wire.line(budget, stage, TOO_LONG).await?;
        budget -= line.len() + 2;
        if line.is_empty() {
            break;
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(protocol("the response has more than 64 headers"));
        }
        let (name, value) = parse_header(&line)?;
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(protocol("unsupported transfer-encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(protocol("more than one content-length header"));
            }
            length = Some(parse_decimal(value).ok_or(protocol("bad content-length"))?);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                if trim(token).eq_ignore_ascii_case(b"close") {
                    close = true;
                }
            }
        }
    }

    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(protocol(
                "both transfer-encoding and content-length are present",
            ))
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) if code == 204 || code == 304 => Framing::Empty,
        (false, None) => {
            return Err(protocol(
                "the response has neither content-length nor chunked encoding",
            ))
        }
    };
    Ok(Head {
        code,
        framing,
        close,
    })
}

/// `HTTP/1.1 200 OK` → (is HTTP/1.0, 200).
fn parse_status_line(line: &[u8]) -> Result<(bool, u16), LlamaError> {
    let bad = || protocol("bad status line");
    let http10 = if let Some(rest) = line.strip_prefix(b"HTTP/1.1 ") {
        (false, rest)
    } else if let Some(rest) = line.strip_prefix(b"HTTP/1.0 ") {
        (true, rest)
    } else {
        return Err(bad());
    };
    let (http10, rest) = http10;
    let (digits, reason) = rest.split_at(rest.len().min(3));
    if digits.len() != 3 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if !(reason.is_empty() || reason.starts_with(b" ")) {
        return Err(bad());
    }
    if reason.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(bad());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(200..=599).contains(&code) {
        // llama-server sends no interim (1xx) responses: we never send
        // `Expect` or `Upgrade`.
        return Err(protocol("unexpected status code class"));
    }
    Ok((http10, code))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(a), Some(b)) => &s[a..=b],
        _ => &[],
    }
}

fn parse_header(line: &[u8]) -> Result<(&[u8], &[u8]), LlamaError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(protocol("a header line has no colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // An empty name or leading whitespace (obsolete line folding) is refused.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(protocol("bad header name"));
    }
    if value
        .iter()
        .any(|&b| (b.is_ascii_control() && b != b'\t') || b == 0x7f)
    {
        return Err(protocol("bad header value"));
    }
    Ok((name, trim(value)))
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Hex chunk size, optionally followed by `;extensions` (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<usize, LlamaError> {
    let bad = || protocol("bad chunk size");
    let digits = match line.iter().position(|&b| b == b';') {
        Some(i) => trim(&line[..i]),
        None => line,
    };
    if digits.is_empty() || digits.len() > 16 {
        return Err(bad());
    }
    let mut size: u64 = 0;
    for &d in digits {
        let v = char::from(d).to_digit(16).ok_or_else(bad)?;
        size = size * 16 + u64::from(v);
    }
    if size > MAX_CHUNK_BYTES as u64 {
        return Err(protocol("a chunk is over 1 MiB"));
    }
    usize::try_from(size).map_err(|_| bad())
}

// ---------------------------------------------------------------------------
// Body framing

#[derive(Debug)]
enum BodyReader {
    /// `left` bytes of the current chunk remain (0: a size line is next).
    Chunked {
        left: usize,
    },
    Length {
        left: u64,
    },
    Done,
}

impl BodyReader {
    fn new(framing: Framing) -> BodyReader {
        match framing {
            Framing::Chunked => BodyReader::Chunked { left: 0 },
            Framing::Length(0) | Framing::Empty => BodyReader::Done,
            Framing::Length(n) => BodyReader::Length { left: n },
        }
    }

    /// The next piece of body bytes as they arrive; `None` once the body's
    /// framing says it is complete.
    async fn next_piece<S: AsyncRead + Unpin>(
        &mut self,
        wire: &mut Wire<'_, S>,
    ) -> Result<Option<Vec<u8>>, LlamaError> {
        let stage = Stage::ReadingBody;
        match self {
            BodyReader::Done => Ok(None),
            BodyReader::Length { left } => {
                let max = usize::try_from(*left).unwrap_or(usize::MAX).min(READ_BYTES);
                let piece = wire.some(max, stage).await?;
                *left -= piece.len() as u64;
                if *left == 0 {
                    *self = BodyReader::Done;
                }
                Ok(Some(piece))
            }
            BodyReader::Chunked { left } => {
                if *left == 0 {
                    let line = wire
                        .line(MAX_CHUNK_LINE_BYTES, stage, "a chunk-size line is too long")
                        .await?;
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        read_trailers(wire).await?;
                        *self = BodyReader::Done;
                        return Ok(None);
                    }
                    *left = size;
                }
                let piece = wire.some(*left, stage).await?;
                *left -= piece.len();
                if *left == 0 {
                    let end = wire
                        .line(2, stage, "a chunk is longer than its size")
                        .await?;
                    if !end.is_empty() {
                        return Err(protocol("a chunk is longer than its size"));
                    }
                }
                Ok(Some(piece))
            }
        }
    }
}

async fn read_trailers<S: AsyncRead + Unpin>(wire: &mut Wire<'_, S>) -> Result<(), LlamaError> {
    const TOO_LONG: &str = "the chunked trailer is over 16 KiB";
    let mut budget = MAX_HEAD_BYTES;
    for _ in 0..=MAX_HEADERS {
        let line = wire.line(budget, Stage::ReadingBody, TOO_LONG).await?;
        if line.is_empty() {
            return Ok(());
        }
        budget -= line.len() + 2;
        parse_header(&line)?;
    }
    Err(protocol("the chunked trailer has more than 64 fields"))
}

// ---------------------------------------------------------------------------
// Server-sent events

/// One SSE event: the joined `data:` lines, or llama-server's legacy
/// `error:` field.
#[derive(Debug, PartialEq, Eq)]
enum SseEvent {
    Data(String),
    Error(String),
}

/// Incremental SSE parser (lines end with LF or CRLF; an empty line ends an
/// event; `:` lines are comments; unknown fields are ignored, as the SSE
/// specification asks).
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    is_error: bool,
}

impl SseParser {
    fn is_idle(&self) -> bool {
        self.line.is_empty() && !self.has_data
    }

    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut emit: impl FnMut(SseEvent) -> Result<(), LlamaError>,
    ) -> Result<(), LlamaError> {
        while !bytes.is_empty() {
            let (part, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            if self.line.len() + part.len() > MAX_LINE_BYTES {
                return Err(protocol("an event-stream line is over 1 MiB"));
            }
            self.line.extend_from_slice(part);
            bytes = rest;
            if complete {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.on_line(&line, &mut emit)?;
                // Keep the allocation for the next line.
                line.clear();
                self.line = line;
            }
        }
        Ok(())
    }

    fn on_line(
        &mut self,
        line: &[u8],
        emit: &mut impl FnMut(SseEvent) -> Result<(), LlamaError>,
    ) -> Result<(), LlamaError> {
        if line.is_empty() {
            if !self.has_data {
                return Ok(());
            }
            let data = String::from_utf8(std::mem::take(&mut self.data))
                .map_err(|_| protocol("an event is not utf-8"))?;
            self.has_data = false;
            let is_error = std::mem::take(&mut self.is_error);
            return emit(if is_error {
                SseEvent::Error(data)
            } else {
                SseEvent::Data(data)
            });
        }
        if line.starts_with(b":") {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        let is_error = match field {
            b"data" => false,
            b"error" => true,
            _ => return Ok(()),
        };
        let sep = usize::from(self.has_data);
        if self.data.len() + sep + value.len() > MAX_EVENT_BYTES {
            return Err(protocol("an event is over 1 MiB"));
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
        self.is_error |= is_error;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Event schema

#[derive(Debug)]
struct StreamState {
    endpoint: Endpoint,
    stop_strings_given: bool,
    /// `/completion`: the `stop: true` event arrived. Chat: `[DONE]` arrived.
    done: bool,
    prompt_tokens: Option<u32>,
    generated_tokens: Option<u32>,
    stop: Option<StopReason>,
    /// Chat only: token counts from `timings`, used when `usage` is absent.
    timings: Option<(u32, u32)>,
}

fn u32_field(obj: &Value, key: &str) -> Result<Option<u32>, LlamaError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(protocol("a token count is not a 32-bit unsigned number")),
    }
}

fn content_of(obj: &Value) -> Result<&str, LlamaError> {
    match obj.get("content") {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(protocol("content is not a string")),
    }
}

impl StreamState {
    fn new(endpoint: Endpoint, stop_strings_given: bool) -> StreamState {
        StreamState {
            endpoint,
            stop_strings_given,
            done: false,
            prompt_tokens: None,
            generated_tokens: None,
            stop: None,
            timings: None,
        }
    }

    fn on_event(
        &mut self,
        event: SseEvent,
        on_token: &mut impl FnMut(&str),
    ) -> Result<(), LlamaError> {
        let data = match event {
            SseEvent::Error(data) => {
                let v = serde_json::from_str::<Value>(&data).ok();
                let kind =
                    v.and_then(|v| error_kind(&v).or_else(|| error_kind(&json!({ "error": v }))));
                return Err(LlamaError::StreamError { kind });
            }
            SseEvent::Data(data) => data,
        };
        if self.done {
            return Err(protocol("an event arrived after the final one"));
        }
        if self.endpoint == Endpoint::Chat && data == "[DONE]" {
            if self.stop.is_none() {
                return Err(protocol("the chat stream ended without a finish_reason"));
            }
            self.done = true;
            return Ok(());
        }
        let v: Value =
            serde_json::from_str(&data).map_err(|_| protocol("an event is not valid json"))?;
        if !v.is_object() {
            return Err(protocol("an event is not a json object"));
        }
        if v.get("error").is_some() {
            return Err(LlamaError::StreamError {
                kind: error_kind(&v),
            });
        }
        match self.endpoint {
            Endpoint::Completion => self.on_completion_event(&v, on_token),
            Endpoint::Chat => self.on_chat_event(&v, on_token),
        }
    }

    fn on_completion_event(
        &mut self,
        v: &Value,
        on_token: &mut impl FnMut(&str),
    ) -> Result<(), LlamaError> {
        let content = content_of(v)?;
        if !content.is_empty() {
            on_token(content);
        }
        let stop = v
            .get("stop")
            .and_then(Value::as_bool)
            .ok_or(protocol("a completion event has no boolean 'stop'"))?;
        if !stop {
            return Ok(());
        }
        self.prompt_tokens = Some(
            u32_field(v, "tokens_evaluated")?
                .ok_or(protocol("the final event has no tokens_evaluated"))?,
        );
        self.generated_tokens = Some(
            u32_field(v, "tokens_predicted")?
                .ok_or(protocol("the final event has no tokens_predicted"))?,
        );
        let flag = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
        self.stop = Some(match v.get("stop_type").and_then(Value::as_str) {
            Some("eos") => StopReason::Eos,
            Some("limit") => StopReason::Length,
            Some("word") => StopReason::StopString,
            Some(_) => return Err(protocol("the final event has an unknown stop_type")),
            // Older servers: one boolean per reason.
            None if flag("stopped_eos") => StopReason::Eos,
            None if flag("stopped_limit") => StopReason::Length,
            None if flag("stopped_word") => StopReason::StopString,
            None => return Err(protocol("the final event has no stop_type")),
        });
        self.done = true;
        Ok(())
    }

    fn on_chat_event(
        &mut self,
        v: &Value,
        on_token: &mut impl FnMut(&str),
    ) -> Result<(), LlamaError> {
        let choices = v
            .get("choices")
            .and_then(Value::as_array)
            .ok_or(protocol("a chat event has no 'choices' array"))?;
        if let Some(choice) = choices.first() {
            if let Some(delta) = choice.get("delta") {
                let content = content_of(delta)?;
                if !content.is_empty() {
                    if self.stop.is_some() {
                        return Err(protocol("content arrived after finish_reason"));
                    }
                    on_token(content);
                }
            }
            match choice.get("finish_reason") {
                None | Some(Value::Null) => {}
                Some(Value::String(reason)) => {
                    if self.stop.is_some() {
                        return Err(protocol("finish_reason arrived twice"));
                    }
                    self.stop = Some(match reason.as_str() {
                        "length" => StopReason::Length,
                        "stop" if self.stop_strings_given => StopReason::StopString,
                        "stop" => StopReason::Eos,
                        _ => return Err(protocol("unknown finish_reason")),
                    });
                }
                Some(_) => return Err(protocol("finish_reason is not a string")),
            }
        }
        if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
            self.prompt_tokens = u32_field(usage, "prompt_tokens")?;
            self.generated_tokens = u32_field(usage, "completion_tokens")?;
        }
        if let Some(t) = v.get("timings").filter(|t| !t.is_null()) {
            // prompt_n counts only the uncached part; cache_n the rest.
            let prompt = u32_field(t, "prompt_n")?
                .unwrap_or(0)
                .saturating_add(u32_field(t, "cache_n")?.unwrap_or(0));
            if let Some(predicted) = u32_field(t, "predicted_n")? {
                self.timings = Some((prompt, predicted));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(u32, u32, StopReason), LlamaError> {
        if !self.done {
            return Err(protocol("the event stream ended without a final event"));
        }
        let stop = self
            .stop
            .ok_or(protocol("the event stream ended without a stop reason"))?;
        let (prompt, generated) = match (self.prompt_tokens, self.generated_tokens, self.timings) {
            (Some(p), Some(g), _) => (p, g),
            (_, _, Some((p, g))) => (p, g),
            _ => return Err(protocol("the event stream carried no token counts")),
        };
        Ok((prompt, generated, stop))
    }
}

#[cfg(test)]
mod tests;
