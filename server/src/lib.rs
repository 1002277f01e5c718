//! Flywheel's server: serve a policy, log every sample, take judgments, hot-swap adapters.
//!
//! # Layout
//! - `cli`: the `flywheel` subcommands, one file each (`serve`, `migrate`, `openapi`, `model`,
//!   `train`, `keys`, `export`).
//! - `agreement`: inter-annotator agreement (majority, Cohen's kappa), pure functions.
//! - `api`: the axum routes (one resource a file), scoped API keys (`auth`), the OpenAI error
//!   shape, the OpenAPI document.
//! - `engine`: admission queue, the active generation of the policy, sampling through mistral.rs.
//! - `model_source`: resolving `--model`, and fetching the default model from PyPI.
//! - `export`: judged groups as JSONL in trainers' formats (dpo, kto, sppo, raw) + a manifest.
//! - `metrics`: the `flywheel_*` Prometheus metrics.
//! - `telemetry`: logging setup.

pub mod agreement;
pub mod api;
pub mod cli;
pub mod engine;
pub mod export;
pub mod import;
pub mod metrics;
pub mod model_source;
pub mod telemetry;

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
