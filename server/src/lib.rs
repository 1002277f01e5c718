//! Flywheel's server: serve a policy, log every sample, take judgments, hot-swap adapters.
//!
//! # Layout
//! - `cli`: the `flywheel` subcommands, one file each (`serve`, `worker`, `judge`, `migrate`,
//!   `openapi`, `model`, `train`, `keys`, `export`, `import`, `eval-prompts`); `cli::args` holds
//!   the flag groups they share.
//! - `api`: the axum routes (one resource a file), scoped API keys (`auth`), the OpenAI error
//!   shape, the OpenAPI document.
//! - `engine`: admission queue, the active generation of the policy, sampling through mistral.rs;
//!   `engine::swap` is the only code that moves the server to another generation, and
//!   `engine::follow` follows the store's active version; `engine::adapter_fit` decides whether a
//!   PEFT adapter fits the base model (for a swap, and for registering one trained elsewhere). It
//!   knows nothing of HTTP: its refusals are `engine::AdmitError`, mapped to OpenAI errors in
//!   `api::error`.
//! - `arena`: candidates earn promotion: duels against the incumbent on held-out evaluation
//!   prompts, the promotion gate and its recorded decisions, the leaderboard (`GET /v1/arena`).
//! - `model_source`: resolving `--model`, and fetching the default model from PyPI.
//! - `eval_prompts`: parsing held-out evaluation prompts (chat messages checked as the chat API
//!   checks them), shared by `POST /v1/eval-prompts` and `flywheel eval-prompts import`.
//! - `export`: judged groups as JSONL in trainers' formats (dpo, kto, sppo, raw) + a manifest.
//! - `judges`: the automatic judges of `flywheel judge` (LLM, self-reference, program), clients of
//!   the public API like any annotator.
//! - `judging`: the store's judgments in `flywheel_judge`'s terms (comparisons, agreement), mapped
//!   once for every route that estimates from them.
//! - `metrics`: the `flywheel_*` Prometheus metrics.
//! - `startup`: [`startup::Application`], the one place the application is wired (store, auth,
//!   engine, follower, worker, routes); `serve` and the API tests both build it.
//! - `telemetry`: logging setup.
//! - `variants`: variant groups for consistency-GRPO: a canonical prompt and its paraphrases (the
//!   caller's, or the policy's own), each sampled in a fresh context, stored as one group.

pub mod api;
pub mod arena;
pub mod cli;
pub mod engine;
pub mod eval_prompts;
pub mod export;
pub mod import;
pub mod judges;
pub mod judging;
pub mod metrics;
pub mod model_source;
pub mod startup;
pub mod telemetry;
pub mod variants;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` resolves, then lets running requests finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
