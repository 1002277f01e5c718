//! API keys: create, find by hash, list, revoke.

use flywheel_store::{hash_api_key, Error, Scope};
use uuid::Uuid;

use crate::helpers::on_each_backend;

#[tokio::test]
async fn a_created_key_is_found_by_its_hash_with_its_scopes() {
    on_each_backend(|store| async move {
        // Arrange
        let hash = hash_api_key("fw_test_secret");

        // Act
        let created = store
            .create_api_key("labeler", &[Scope::Inference, Scope::Annotate], &hash)
            .await
            .unwrap();
        let found = store.find_api_key_by_hash(&hash).await.unwrap();

        // Assert
        let found = found.expect("the key is found by its hash");
        assert_eq!(found, created);
        assert_eq!(found.name, "labeler");
        assert_eq!(found.scopes, vec![Scope::Annotate, Scope::Inference]);
        assert!(found.has_scope(Scope::Annotate));
        assert!(!found.has_scope(Scope::Admin));
        assert_eq!(found.revoked_at, None);
        assert_eq!(found.last_used_at, None);
    })
    .await;
}

#[tokio::test]
async fn an_unknown_hash_finds_no_key() {
    on_each_backend(|store| async move {
        store
            .create_api_key("admin", &[Scope::Admin], &hash_api_key("one"))
            .await
            .unwrap();

        let found = store
            .find_api_key_by_hash(&hash_api_key("two"))
            .await
            .unwrap();

        assert_eq!(found, None);
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_is_no_longer_found_but_stays_listed() {
    on_each_backend(|store| async move {
        let hash = hash_api_key("soon-revoked");
        let key = store
            .create_api_key("temp", &[Scope::Admin], &hash)
            .await
            .unwrap();

        let revoked = store.revoke_api_key(key.id).await.unwrap();
        let again = store.revoke_api_key(key.id).await.unwrap();

        assert!(revoked.revoked_at.is_some());
        assert_eq!(
            again.revoked_at, revoked.revoked_at,
            "the first revocation time stays"
        );
        assert_eq!(store.find_api_key_by_hash(&hash).await.unwrap(), None);
        let listed = store.list_api_keys().await.unwrap();
        assert_eq!(listed, vec![revoked]);
    })
    .await;
}

#[tokio::test]
async fn revoking_an_unknown_key_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.revoke_api_key(Uuid::now_v7()).await;

        assert!(
            matches!(outcome, Err(Error::NotFound("api key"))),
            "{outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn keys_are_listed_oldest_first() {
    on_each_backend(|store| async move {
        let first = store
            .create_api_key("first", &[Scope::Inference], &hash_api_key("1"))
            .await
            .unwrap();
        let second = store
            .create_api_key("second", &[Scope::Annotate], &hash_api_key("2"))
            .await
            .unwrap();

        let listed = store.list_api_keys().await.unwrap();

        assert_eq!(listed, vec![first, second]);
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_hash_is_a_conflict_and_bad_input_is_invalid() {
    on_each_backend(|store| async move {
        let hash = hash_api_key("dup");
        store
            .create_api_key("one", &[Scope::Admin], &hash)
            .await
            .unwrap();

        let duplicate = store.create_api_key("two", &[Scope::Admin], &hash).await;
        let no_scope = store.create_api_key("three", &[], &hash_api_key("x")).await;
        let no_name = store
            .create_api_key(" ", &[Scope::Admin], &hash_api_key("y"))
            .await;

        assert!(
            matches!(duplicate, Err(Error::Conflict(_))),
            "{duplicate:?}"
        );
        assert!(matches!(no_scope, Err(Error::Invalid(ref m)) if m.starts_with("`scopes`")));
        assert!(matches!(no_name, Err(Error::Invalid(ref m)) if m.starts_with("`name`")));
        assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn touching_a_key_records_its_last_use_at_most_once_a_minute() {
    on_each_backend(|store| async move {
        let hash = hash_api_key("used");
        let key = store
            .create_api_key("used", &[Scope::Inference], &hash)
            .await
            .unwrap();

        store.touch_api_key(key.id).await.unwrap();
        let first = store.get_api_key(key.id).await.unwrap().last_used_at;
        store.touch_api_key(key.id).await.unwrap();
        let second = store.get_api_key(key.id).await.unwrap().last_used_at;

        assert!(first.is_some());
        assert_eq!(second, first, "a second use within a minute writes nothing");
    })
    .await;
}
