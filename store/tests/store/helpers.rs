//! Fresh databases for each test, one per backend, and builders for test groups.
//!
//! Postgres comes from `FLYWHEEL_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test creates its own database there and drops it afterwards. When Postgres cannot be reached
//! the tests fail under `CI`, and elsewhere run on SQLite only, with a warning.

use std::future::Future;
use std::io::Write;
use std::str::FromStr;
use std::sync::Once;

use std::path::Path;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use flywheel_store::{
    Endpoint, Group, GroupKind, GroupWithResponses, NewGroup, NewResponse, Response, Store,
};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

const DEFAULT_TEST_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs `test` on a migrated SQLite store, then on a migrated Postgres store.
pub async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("flywheel.db").display());
    let store = Store::connect(&url).await.expect("connect to sqlite");
    store.migrate().await.expect("migrate sqlite");
    run_isolated(test(store)).await;

    let Some(postgres) = TestPostgres::create().await else {
        return;
    };
    let store = Store::connect(&postgres.url)
        .await
        .expect("connect to postgres");
    store.migrate().await.expect("migrate postgres");
    let outcome = tokio::spawn(test(store.clone())).await;
    store.close().await;
    postgres.drop_database().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn run_isolated(test: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = tokio::spawn(test).await {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A database of its own on the test Postgres server.
struct TestPostgres {
    admin: PgConnection,
    name: String,
    url: String,
}

impl TestPostgres {
    /// `None` (after a warning) when Postgres is unreachable outside CI; panics in CI.
    async fn create() -> Option<TestPostgres> {
        let admin_url = std::env::var("FLYWHEEL_TEST_POSTGRES")
            .unwrap_or_else(|_| DEFAULT_TEST_POSTGRES.to_string());
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(connection) => connection,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("CI is set but Postgres at {admin_url} is unreachable: {e}")
            }
            Err(e) => {
                warn_sqlite_only(&admin_url, &e);
                return None;
            }
        };
        let name = format!("flywheel_test_{}", Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = PgConnectOptions::from_str(&admin_url)
            .expect("FLYWHEEL_TEST_POSTGRES is a valid URL")
            .database(&name)
            .to_url_lossy()
            .to_string();
        Some(TestPostgres { admin, name, url })
    }

    async fn drop_database(mut self) {
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await
        .expect("drop test database");
    }
}

/// Says, once per test run, that Postgres was skipped. It writes to stderr itself, since the test
/// harness hides `eprintln!` output of passing tests.
fn warn_sqlite_only(url: &str, e: &sqlx::Error) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! WARNING: Postgres at {url} is unreachable ({e}).\n\
             !!!!!!!! Store tests are running on SQLite ONLY. Start Postgres or set \
             FLYWHEEL_TEST_POSTGRES to test the Postgres queries (CI=1 makes this an error).\n"
        );
    });
}

/// Now, at the microsecond precision both backends keep.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A `samples` group of `n` responses on adapter 0, created at `created_at`.
pub fn group_at(created_at: DateTime<Utc>, n: usize) -> NewGroup {
    let id = Uuid::now_v7();
    NewGroup {
        id,
        kind: GroupKind::Samples,
        endpoint: Endpoint::Chat,
        model: "smollm2-135m".into(),
        adapter_version: 0,
        prompt: json!([{"role": "user", "content": "Name a prime."}]),
        params: json!({"temperature": 0.8, "n": n}),
        seed: Some(7),
        user: Some("user-1".into()),
        prompt_tokens: 12,
        prompt_token_ids: Some(vec![1, 2, 3, 4_000_000_000]),
        latency_ms: 250,
        created_at,
        responses: (0..n).map(response).collect(),
    }
}

/// A `samples` group of two responses, created now.
pub fn group() -> NewGroup {
    group_at(now(), 2)
}

fn response(index: usize) -> NewResponse {
    NewResponse {
        id: Uuid::now_v7(),
        index: index as i32,
        prompt: None,
        text: format!("{}", [2, 3, 5, 7][index % 4]),
        token_ids: vec![17, 4_000_000_000, index as u32],
        logprobs: vec![-0.123_456_79, -1.0e-7, -17.25],
        finish_reason: "stop".into(),
        completion_tokens: 3,
        latency_ms: 200 + index as i64,
        adapter_version: None,
        variant: None,
        prompt_token_ids: None,
    }
}

/// What [`Store::get_group`] returns for `g` once stored: its responses in choice-index order, each
/// with the group's creation time, and its adapter version unless it names its own.
pub fn as_stored(g: &NewGroup) -> GroupWithResponses {
    let mut responses: Vec<Response> = g
        .responses
        .iter()
        .map(|r| Response {
            id: r.id,
            group_id: g.id,
            index: r.index,
            prompt: r.prompt.clone(),
            text: r.text.clone(),
            token_ids: r.token_ids.clone(),
            logprobs: r.logprobs.clone(),
            finish_reason: r.finish_reason.clone(),
            completion_tokens: r.completion_tokens,
            adapter_version: r.adapter_version.unwrap_or(g.adapter_version),
            latency_ms: r.latency_ms,
            created_at: g.created_at,
            variant: r.variant,
            prompt_token_ids: r.prompt_token_ids.clone(),
        })
        .collect();
    responses.sort_by_key(|r| r.index);
    GroupWithResponses {
        group: Group {
            id: g.id,
            kind: g.kind,
            endpoint: g.endpoint,
            model: g.model.clone(),
            adapter_version: g.adapter_version,
            prompt: g.prompt.clone(),
            params: g.params.clone(),
            seed: g.seed,
            user: g.user.clone(),
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.responses.iter().map(|r| r.completion_tokens).sum(),
            latency_ms: g.latency_ms,
            created_at: g.created_at,
            response_count: g.responses.len() as i64,
        },
        responses,
    }
}

/// Migrates the SQLite database at `url` with only the migrations whose file names sort before
/// `first_left_out` (`"0006"`: 0001 to 0005), copied into `dir`, as a database of an older release
/// is; returns how many ran. A store of this release cannot write to such a schema: see
/// [`insert_group_before_0007`].
pub async fn migrate_sqlite_before(url: &str, dir: &Path, first_left_out: &str) -> usize {
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    let older = dir.join(format!("migrations-before-{first_left_out}"));
    std::fs::create_dir(&older).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".sql") && name.as_str() < first_left_out {
            std::fs::copy(&path, older.join(&name)).unwrap();
            copied += 1;
        }
    }
    let mut conn = raw_sqlite_connection(url).await;
    let migrator = sqlx::migrate::Migrator::new(older.as_path()).await.unwrap();
    migrator.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    copied
}

/// A connection of our own to the SQLite database at `url`, enforcing foreign keys.
pub async fn raw_sqlite_connection(url: &str) -> SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true)
        .foreign_keys(true);
    SqliteConnection::connect_with(&options).await.unwrap()
}

/// Writes group `g` and its responses to a SQLite database migrated through 0003 to 0006, with the
/// columns they had then (`variant` and `prompt_token_ids` of responses came with 0007).
pub async fn insert_group_before_0007(conn: &mut SqliteConnection, g: &NewGroup) {
    let created_at = g.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let completion_tokens: i64 = g.responses.iter().map(|r| r.completion_tokens).sum();
    sqlx::query(
        "INSERT INTO groups (id, kind, endpoint, model, adapter_version, prompt, params, seed, \
         user_id, prompt_tokens, completion_tokens, latency_ms, created_at, prompt_token_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(g.id)
    .bind(g.kind.as_str())
    .bind(g.endpoint.as_str())
    .bind(&g.model)
    .bind(g.adapter_version)
    .bind(g.prompt.to_string())
    .bind(g.params.to_string())
    .bind(g.seed)
    .bind(&g.user)
    .bind(g.prompt_tokens)
    .bind(completion_tokens)
    .bind(g.latency_ms)
    .bind(&created_at)
    .bind(g.prompt_token_ids.as_ref().map(to_json))
    .execute(&mut *conn)
    .await
    .unwrap();
    for r in &g.responses {
        sqlx::query(
            "INSERT INTO responses (id, group_id, idx, prompt, text, token_ids, logprobs, \
             finish_reason, completion_tokens, adapter_version, latency_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(r.id)
        .bind(g.id)
        .bind(r.index)
        .bind(r.prompt.as_ref().map(|p| p.to_string()))
        .bind(&r.text)
        .bind(to_json(&r.token_ids))
        .bind(to_json(&r.logprobs))
        .bind(&r.finish_reason)
        .bind(r.completion_tokens)
        .bind(r.adapter_version.unwrap_or(g.adapter_version))
        .bind(r.latency_ms)
        .bind(&created_at)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

/// `value` as the store writes JSON text (f32 log-probs in their shortest f32 form).
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}
