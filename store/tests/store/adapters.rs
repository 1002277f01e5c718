//! The adapters table as the migration leaves it.

use flywheel_store::{AdapterStatus, Error, NewAdapter};

use crate::helpers::on_each_backend;

#[tokio::test]
async fn the_base_model_is_adapter_version_zero_and_active() {
    on_each_backend(|store| async move {
        let base = store.get_adapter(0).await.unwrap();

        assert_eq!(base.version, 0);
        assert_eq!(base.algorithm, "base");
        assert_eq!(base.status, AdapterStatus::Active);
        assert_eq!(base.parent_version, None);
        assert!(base.activated_at.is_some());
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_unknown_adapter_version_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.get_adapter(42).await;

        assert!(
            matches!(outcome, Err(Error::NotFound("adapter"))),
            "{outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_registered_adapter_keeps_its_note_and_provenance() {
    on_each_backend(|store| async move {
        // Arrange
        let new = NewAdapter {
            parent_version: 0,
            algorithm: "external".into(),
            train_run_id: None,
            path: Some("/adapters/trl-42".into()),
            sha256: Some("cd".repeat(32)),
            status: AdapterStatus::Ready,
            note: Some("TRL DPO on the cluster, job 42".into()),
            name: None,
        };

        // Act
        let inserted = store.insert_adapter(&new).await.unwrap();

        // Assert
        let read = store.get_adapter(inserted.version).await.unwrap();
        assert_eq!(read, inserted);
        assert_eq!(read.note.as_deref(), Some("TRL DPO on the cluster, job 42"));
        assert_eq!(read.algorithm, "external");
        assert_eq!(read.parent_version, Some(0));
    })
    .await;
}
