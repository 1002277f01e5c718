//! Opening a store: URLs, migrations, health.

use flywheel_store::{Backend, Error, PoolConfig, Store};

use crate::helpers::{group, on_each_backend};

#[tokio::test]
async fn migrating_twice_is_harmless() {
    on_each_backend(|store| async move {
        // `on_each_backend` has migrated once already.
        store.migrate().await.unwrap();

        store.ping().await.unwrap();
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn each_backend_names_itself() {
    on_each_backend(|store| async move {
        let name = store.backend().to_string();

        assert!(name == "sqlite" || name == "postgres", "{name}");
    })
    .await;
}

#[tokio::test]
async fn a_sqlite_url_creates_its_file_and_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/flywheel.db");

    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();

    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.is_file());
}

#[tokio::test]
async fn an_in_memory_sqlite_store_keeps_what_it_is_given() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let g = group();

    store.insert_group(&g).await.unwrap();
    let (first, second) = tokio::join!(store.get_group(g.id), store.get_group(g.id));

    assert_eq!(first.unwrap().responses.len(), 2);
    assert_eq!(second.unwrap().responses.len(), 2);
}

#[tokio::test]
async fn an_unknown_url_scheme_is_invalid() {
    let outcome = Store::connect("mysql://localhost/flywheel").await;

    let Err(Error::Invalid(message)) = outcome else {
        panic!("expected Invalid, got {:?}", outcome.err());
    };
    assert!(message.contains("mysql"), "{message}");
    assert!(message.contains("postgres://"), "{message}");
}

#[tokio::test]
async fn a_store_of_one_connection_serves_concurrent_calls_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("one.db").display());
    let config = PoolConfig { max_connections: 1 };

    let store = Store::connect_with(&url, &config).await.unwrap();
    store.migrate().await.unwrap();
    let g = group();
    store.insert_group(&g).await.unwrap();
    let (first, second) = tokio::join!(store.get_group(g.id), store.get_group(g.id));

    assert_eq!(first.unwrap().responses.len(), 2);
    assert_eq!(second.unwrap().responses.len(), 2);
}

#[tokio::test]
async fn a_pool_of_zero_connections_is_invalid() {
    let config = PoolConfig { max_connections: 0 };

    let outcome = Store::connect_with("sqlite::memory:", &config).await;

    assert!(
        matches!(outcome, Err(Error::Invalid(ref m)) if m.starts_with("`max_connections`")),
        "{:?}",
        outcome.err()
    );
}
