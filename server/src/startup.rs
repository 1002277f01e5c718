//! Building the application: store, auth, engine, follower, worker, arena and routes, wired once.
//!
//! `flywheel serve` and the API tests both call [`Application::build`], so the tests run what
//! production runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flywheel_store::{Scope, Store};
use flywheel_trainer::{spawn_worker, WorkerConfig, WorkerGuard};
use tokio::net::TcpListener;

use crate::api::auth::{self, AuthMode};
use crate::api::{self, ApiConfig, AppState};
use crate::arena::{spawn_arena, ArenaConfig, ArenaGuard};
use crate::engine::follow::{spawn_follower, FollowerGuard};
use crate::engine::{swap, Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::model_source::ModelSource;

/// Everything an application is built from, parsed and resolved already.
pub struct AppConfig {
    /// An open, migrated store.
    pub store: Store,
    /// The base model and the name clients address it by.
    pub source: ModelSource,
    /// In-situ quantization of every generation, after the adapter merge (`--quantize`).
    pub quantize: Option<mistralrs::IsqType>,
    pub served_name: String,
    pub engine: EngineConfig,
    pub api: ApiConfig,
    /// A secret to accept as an `admin` key (stored hashed if new); ignored without auth.
    pub admin_key: Option<String>,
    /// How often the store's active version is checked when no activation is announced.
    pub follow_interval: Duration,
    /// The in-process trainer worker, if any.
    pub worker: Option<WorkerConfig>,
    /// How new adapters are judged; the routes read it too.
    pub arena: ArenaConfig,
    /// Whether this process samples duels and runs the gate.
    pub run_arena: bool,
    /// Where `POST /v1/adapters` may register adapter directories from; nothing outside it.
    pub adapter_root: PathBuf,
    /// The unit extractor of `GET /v1/consistency` (`--units`), if any.
    pub units: Option<Arc<flywheel_trainer::UnitExtractor>>,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
}

/// A built application, listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    _follower: FollowerGuard,
    _worker: Option<WorkerGuard>,
    _arena: Option<ArenaGuard>,
}

impl Application {
    /// Prepares auth, loads the generation the store says is active (or the base model when that
    /// does not load here), starts the follower and the worker, and binds the listener.
    ///
    /// # Errors
    /// A store error, a bad admin key, a base model that does not load, or an address in use.
    pub async fn build(config: AppConfig) -> anyhow::Result<Application> {
        let store = config.store;
        let mut api_config = config.api;
        api_config.auth =
            prepare_auth(&store, api_config.auth, config.admin_key.as_deref()).await?;
        let generation =
            swap::startup(&store, &config.source, config.quantize, config.served_name).await?;
        let metrics = Metrics::new();
        let engine = Engine::new(generation, config.engine, metrics.clone());
        let follower = spawn_follower(store.clone(), engine.clone(), config.follow_interval);
        let worker = config.worker.map(|worker| {
            tracing::info!(
                min_new_judgments = worker.min_new_judgments,
                algorithm = %worker.job.algorithm,
                "trainer worker runs in this process (--no-worker to turn it off)"
            );
            spawn_worker(store.clone(), worker)
        });
        let arena = config.run_arena.then(|| {
            tracing::info!(
                promotion = config.arena.promotion.name(),
                min_judgments = config.arena.gate.min_judgments,
                max_judgments = config.arena.gate.max_judgments,
                "arena runs in this process (--no-arena to turn it off)"
            );
            spawn_arena(store.clone(), engine.clone(), config.arena.clone())
        });
        let state = AppState {
            store,
            engine,
            metrics,
            adapter_root: config.adapter_root.into(),
            arena: Arc::new(config.arena),
            units: config.units,
        };
        let router = api::router(state.clone(), &api_config);
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        Ok(Application {
            listener,
            router,
            state,
            _follower: follower,
            _worker: worker,
            _arena: arena,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The handles the routes use (store, engine, metrics), for tests that look inside.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets running requests finish; the follower and the
    /// worker stop with it.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            router,
            _follower,
            _worker,
            _arena,
            ..
        } = self;
        crate::serve(listener, router, shutdown).await
    }
}

/// Stores `admin_key` if given, and says loudly what a caller needs: with auth off, that
/// everything is open; without any key, how to make one.
async fn prepare_auth(
    store: &Store,
    mode: AuthMode,
    admin_key: Option<&str>,
) -> anyhow::Result<AuthMode> {
    if mode == AuthMode::Disabled {
        tracing::warn!(
            "--no-auth: EVERY ROUTE IS OPEN. Anyone who can reach this port can generate, read \
             every logged sample and post judgments. Use it for local experiments only."
        );
        return Ok(AuthMode::Disabled);
    }
    if let Some(secret) = admin_key {
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
