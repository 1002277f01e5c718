//! The bare mistral.rs engine, driven in-process with no HTTP and no logging: the baseline that
//! `bench/serve_bench.py` compares `flywheel serve` against.
//!
//! cargo bench --bench bare_engine -- <model dir | file.gguf> <concurrency> <requests> <max_tokens>
//! Prints one JSON line: requests/s, output tokens/s, mean and p50 time to first token.

use flywheel_server::engine::loader;
use mistralrs::{Model, RequestBuilder, Response, TextMessageRole};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const PROMPTS: &[&str] = &[
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about a lighthouse.",
    "List three uses of a paperclip.",
    "What is the difference between a list and a tuple in Python?",
    "Describe a sunrise to someone who has never seen one.",
    "Give me a recipe for a simple tomato soup.",
    "Why do cats purr?",
    "Summarize the plot of Romeo and Juliet.",
];

/// Loaded exactly as `flywheel serve` loads it (F32, prefix cache off), so the comparison
/// isolates what Flywheel adds: HTTP, validation, our sampler, the store.
async fn load(path: &str) -> anyhow::Result<Model> {
    let p = Path::new(path);
    if p.extension().is_some_and(|e| e == "gguf") {
        loader::load_gguf(p).await
    } else {
        loader::load_hf(p, None).await
    }
}

/// One streamed request; returns (time to first token, completion tokens).
async fn one(model: &Model, prompt: &str, max_tokens: usize) -> anyhow::Result<(f64, usize)> {
    let request = RequestBuilder::new()
        .add_message(TextMessageRole::User, prompt)
        .set_sampler_max_len(max_tokens)
        .set_sampler_temperature(0.7);
    let started = Instant::now();
    let mut stream = model.stream_chat_request(request).await?;
    let mut first = None;
    let mut tokens = 0;
    while let Some(response) = stream.next().await {
        match response {
            Response::Chunk(chunk) => {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                if let Some(usage) = chunk.usage {
                    tokens = usage.completion_tokens;
                }
                if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                    break;
                }
            }
            Response::InternalError(e) | Response::ValidationError(e) => anyhow::bail!("{e}"),
            Response::ModelError(e, _) => anyhow::bail!("{e}"),
            _ => {}
        }
    }
    Ok((first.unwrap_or(0.0), tokens))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [model, concurrency, requests, max_tokens] = &args[..] else {
        anyhow::bail!("usage: bare_engine <model> <concurrency> <requests> <max_tokens>");
    };
    let (concurrency, requests, max_tokens): (usize, usize, usize) =
        (concurrency.parse()?, requests.parse()?, max_tokens.parse()?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let model = Arc::new(load(model).await?);
        one(&model, "warm up", 4).await?;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (model, next) = (model.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= requests {
                        return anyhow::Ok(out);
                    }
                    out.push(one(&model, PROMPTS[i % PROMPTS.len()], max_tokens).await?);
                }
            }));
        }
        let mut results = Vec::new();
        for w in workers {
            results.extend(w.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let tokens: usize = results.iter().map(|r| r.1).sum();
        let mut ttft: Vec<f64> = results.iter().map(|r| r.0).collect();
        ttft.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "system": "mistral.rs (bare, in-process)",
                "concurrency": concurrency,
                "requests": requests,
                "seconds": elapsed,
                "requests_per_s": requests as f64 / elapsed,
                "output_tokens_per_s": tokens as f64 / elapsed,
                "ttft_mean_s": ttft.iter().sum::<f64>() / ttft.len() as f64,
                "ttft_p50_s": ttft[ttft.len() / 2],
            })
        );
        anyhow::Ok(())
    })
}
