//! `flow-bench-llama --socket PATH [--prompt TEXT] [--max-tokens N]`: the
//! "direct" side of the inference benchmark. It sends llama-server the same
//! request body the reasoning worker sends for bench/one-ai-node.toml (same
//! builder: `reasoning_worker::llama`), over a connection to the managed
//! instance's socket, and prints client-side timings as JSON: from writing the
//! request to the first and the last token.

use proto::msg::{InferInput, InferParams};
use reasoning_worker::llama::{infer_with, InferOptions};
use std::time::Instant;

fn main() {
    let mut socket = None;
    let mut prompt = String::from("Write a long story about a lighthouse keeper.");
    let mut max_tokens = 256u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--socket", Some(v)) => socket = Some(v),
            ("--prompt", Some(v)) => prompt = v,
            ("--max-tokens", Some(v)) => max_tokens = v.parse().unwrap_or(256),
            _ => {
                eprintln!("usage: flow-bench-llama --socket PATH [--prompt TEXT] [--max-tokens N]");
                std::process::exit(64);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("flow-bench-llama: --socket is required");
        std::process::exit(64);
    };
    // Must equal what the flow's AI node sends (see bench/one-ai-node.toml).
    let params = InferParams {
        max_tokens,
        temperature_milli: 0,
        top_p_milli: 1000,
        top_k: 40,
        seed: Some(1),
        stop: Vec::new(),
        ignore_eos: true,
        cache_prompt: false,
    };
    let input = InferInput::Completion { prompt };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow-bench-llama: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(async {
        let mut conn = tokio::net::UnixStream::connect(&socket).await?;
        let t0 = Instant::now();
        let mut first = None;
        let mut last = None;
        let mut events = 0u64;
        let done = infer_with(
            &mut conn,
            &input,
            &params,
            &InferOptions {
                cache_prompt: params.cache_prompt,
            },
            |_t: &str| {
                let at = t0.elapsed().as_secs_f64() * 1e3;
                first.get_or_insert(at);
                last = Some(at);
                events += 1;
            },
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, std::io::Error>((first, last, events, done.generated_tokens))
    });
    match r {
        Ok((first, last, events, tokens)) => println!(
            "{}",
            serde_json::json!({"first_token_ms": first, "last_token_ms": last, "token_events": events, "tokens": tokens})
        ),
        Err(e) => {
            eprintln!("flow-bench-llama: {e}");
            std::process::exit(1);
        }
    }
}
