//! Fresh databases for each test, one per backend, and builders for test groups.
//!
//! Postgres comes from `FLYWHEEL_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test creates its own database there and drops it afterwards. When Postgres cannot be reached
//! the tests fail under `CI`, and elsewhere run on SQLite only, with a warning.

use std::future::Future;
use std::io::Write;
use std::str::FromStr;
use std::sync::Once;

use chrono::{DateTime, SubsecRound, Utc};
use flywheel_store::{Endpoint, GroupKind, NewGroup, NewResponse, Store};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
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
    }
}
