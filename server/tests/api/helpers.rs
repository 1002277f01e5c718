//! `spawn_app()`: a real Flywheel server on 127.0.0.1:0 over the tiny random model and a fresh
//! store, plus a client with small helpers. Logs show only with `TEST_LOG=1`.
//!
//! `client` sends a key with every scope; `bare` sends none, and `key(&[..])` makes others.

use flywheel_server::api::annotation::AnnotationConfig;
use flywheel_server::api::auth::{generate_secret, AuthMode};
use flywheel_server::api::ApiConfig;
use flywheel_server::arena::ArenaConfig;
use flywheel_server::engine::{swap, Engine, EngineConfig};
use flywheel_server::model_source::ModelSource;
use flywheel_server::startup::{AppConfig, Application};
use flywheel_store::{hash_api_key, AdapterStatus, NewAdapter, Scope, Store};
use flywheel_trainer::WorkerConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const MODEL: &str = "tiny";

pub struct TestApp {
    pub address: String,
    pub store: Store,
    /// Sends a key with every scope.
    pub client: reqwest::Client,
    /// Sends no key.
    pub bare: reqwest::Client,
    pub engine: Engine,
    _dirs: Vec<tempfile::TempDir>,
}

pub struct AppOptions {
    pub engine: EngineConfig,
    /// How often the follower polls the store (an hour by default, so that tests which move the
    /// store's active version decide when the engine follows).
    pub follow_interval: std::time::Duration,
    pub worker: Option<WorkerConfig>,
    pub max_body_bytes: usize,
    pub postgres: bool,
    pub auth: AuthMode,
    pub annotation: AnnotationConfig,
    /// Where `POST /v1/adapters` may register from (default: an empty temporary directory).
    pub adapter_root: Option<PathBuf>,
    /// Run the arena in the app with these settings (default: no arena task; the routes see
    /// `ArenaConfig::default()`).
    pub arena: Option<ArenaConfig>,
    /// The unit extractor of `GET /v1/consistency` (`--units`).
    pub units: Option<std::sync::Arc<flywheel_trainer::UnitExtractor>>,
    /// `--quantize`.
    pub quantize: Option<mistralrs::IsqType>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            engine: EngineConfig::default(),
            follow_interval: std::time::Duration::from_secs(3600),
            worker: None,
            max_body_bytes: ApiConfig::default().max_body_bytes,
            postgres: false,
            auth: AuthMode::Required,
            annotation: AnnotationConfig::default(),
            adapter_root: None,
            arena: None,
            units: None,
            quantize: None,
        }
    }
}

/// The tiny model's directory, written once per test process.
pub fn tiny_model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("flywheel-tiny-{}", std::process::id()));
        flywheel_trainer::write_tiny_llama(&dir, 0).expect("write tiny model");
        dir
    })
    .clone()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Builds the application exactly as `flywheel serve` does (follower included), on a fresh store.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        flywheel_server::telemetry::init();
    }
    let data = tempfile::tempdir().unwrap();
    let store = if options.postgres {
        postgres_store().await
    } else {
        Store::connect(&format!(
            "sqlite://{}",
            data.path().join("test.db").display()
        ))
        .await
        .unwrap()
    };
    store.migrate().await.unwrap();
    let app = Application::build(AppConfig {
        store: store.clone(),
        source: ModelSource::HfDir(tiny_model_dir()),
        quantize: options.quantize,
        served_name: MODEL.into(),
        engine: options.engine,
        api: ApiConfig {
            max_body_bytes: options.max_body_bytes,
            auth: options.auth,
            annotation: options.annotation,
            // Revocation tests expect a revoked key to stop working at once.
            key_cache_ttl: std::time::Duration::ZERO,
        },
        admin_key: None,
        follow_interval: options.follow_interval,
        worker: options.worker,
        run_arena: options.arena.is_some(),
        arena: options.arena.unwrap_or_default(),
        adapter_root: options
            .adapter_root
            .unwrap_or_else(|| data.path().join("adapters")),
        units: options.units,
        host: "127.0.0.1".into(),
        port: 0,
    })
    .await
    .unwrap();
    let address = format!("http://{}", app.address());
    let engine = app.state().engine.clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let secret = create_key(&store, &[Scope::Inference, Scope::Annotate, Scope::Admin]).await;
    TestApp {
        address,
        store,
        client: client_with_key(&secret),
        bare: reqwest::Client::new(),
        engine,
        _dirs: vec![data],
    }
}

/// Registers the PEFT adapter in `dir` as `ready` (no sha256 recorded) and returns its version.
pub async fn register_adapter(store: &Store, dir: Option<&Path>) -> i64 {
    store
        .insert_adapter(&NewAdapter {
            parent_version: 0,
            algorithm: "dpo".into(),
            train_run_id: None,
            path: dir.map(|p| p.display().to_string()),
            sha256: None,
            status: AdapterStatus::Ready,
            note: None,
            name: None,
        })
        .await
        .unwrap()
        .version
}

/// Makes the engine serve `version` through the one swap, as the follower would.
pub async fn serve_version(app: &TestApp, version: i64) {
    swap::serve(&app.engine, &app.store, version).await.unwrap();
}

/// [`register_adapter`], then [`serve_version`].
pub async fn serve_adapter(app: &TestApp, dir: &Path) -> i64 {
    let version = register_adapter(&app.store, Some(dir)).await;
    serve_version(app, version).await;
    version
}

/// Stores a new key with `scopes` and returns its secret.
pub async fn create_key(store: &Store, scopes: &[Scope]) -> String {
    let secret = generate_secret();
    store
        .create_api_key("test", scopes, &hash_api_key(&secret))
        .await
        .unwrap();
    secret
}

/// A client that sends `Authorization: Bearer <secret>` on every request.
pub fn client_with_key(secret: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {secret}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Whether the test Postgres answers. Outside CI a missing Postgres skips the test with a warning;
/// under CI (`CI` set) it is a failure.
pub async fn postgres_available() -> bool {
    match Store::connect(&postgres_base_url()).await {
        Ok(store) => {
            store.close().await;
            true
        }
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but Postgres is unreachable: {e}")
        }
        Err(e) => {
            eprintln!("WARNING: Postgres unreachable ({e}); skipping a Postgres test");
            false
        }
    }
}

fn postgres_base_url() -> String {
    std::env::var("FLYWHEEL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh Postgres database for one test (`FLYWHEEL_TEST_POSTGRES` or the local default).
async fn postgres_store() -> Store {
    let url = postgres_database().await;
    Store::connect(&url).await.unwrap()
}

/// The URL of a fresh, empty Postgres database for one test.
pub async fn postgres_database() -> String {
    let base = postgres_base_url();
    let admin = Store::connect(&base)
        .await
        .expect("Postgres is needed for this test (set FLYWHEEL_TEST_POSTGRES)");
    let name = format!("flywheel_api_test_{}", uuid::Uuid::new_v4().simple());
    admin.create_database(&name).await.unwrap();
    admin.close().await;
    match base.rfind('/') {
        Some(i) => format!("{}/{}", &base[..i], name),
        None => unreachable!("a postgres URL has a path"),
    }
}

impl TestApp {
    /// A client whose key has exactly `scopes`.
    pub async fn client_with_scopes(&self, scopes: &[Scope]) -> reqwest::Client {
        client_with_key(&create_key(&self.store, scopes).await)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{}", self.address, path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// A chat completion that must succeed; returns the body.
    pub async fn chat(&self, body: Value) -> Value {
        let response = self.post("/v1/chat/completions", &body).await;
        let status = response.status();
        let json: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{json}");
        json
    }

    /// A streamed request: every `data:` payload before `[DONE]`, parsed, and whether `[DONE]` came.
    pub async fn stream(&self, path: &str, body: &Value) -> (Vec<Value>, bool) {
        let response = self.post(path, body).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = response.text().await.unwrap();
        let mut chunks = Vec::new();
        let mut done = false;
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                if data == "[DONE]" {
                    done = true;
                } else {
                    assert!(!done, "data after [DONE]");
                    chunks.push(serde_json::from_str(data).unwrap());
                }
            }
        }
        (chunks, done)
    }
}

pub fn greedy(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

/// Asserts an OpenAI-shaped error with this status and `param`.
pub async fn assert_error(response: reqwest::Response, status: u16, param: Option<&str>) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{body}");
    }
    body
}
