//! Importing judged groups: whole or not at all, and each source record at most once.

use flywheel_store::{Error, IdempotencyKey, ImportedGroup, NewGroup, Store};

use crate::helpers::{group_at, now, on_each_backend};
use crate::judgments::judgment;

/// A fresh group of two responses with one keyed judgment of the first over the second.
fn imported(key: &str) -> ImportedGroup {
    let group: NewGroup = group_at(now(), 2);
    let mut j = judgment(&group, 0, 1);
    j.idempotency_key = Some(IdempotencyKey::parse(key).unwrap());
    ImportedGroup {
        group,
        judgments: vec![j],
    }
}

async fn judgment_count(store: &Store, groups: &[&ImportedGroup]) -> usize {
    let mut n = 0;
    for g in groups {
        n += store.judgments_for_group(g.group.id).await.unwrap().len();
    }
    n
}

#[tokio::test]
async fn imported_groups_are_stored_with_their_judgments() {
    on_each_backend(|store| async move {
        // Arrange
        let items = vec![imported("import:one"), imported("import:two")];

        // Act
        let count = store.import_groups(&items).await.unwrap();

        // Assert
        assert_eq!(count, 2);
        for item in &items {
            let stored = store.get_group(item.group.id).await.unwrap();
            assert_eq!(stored.responses.len(), 2);
            let judgments = store.judgments_for_group(item.group.id).await.unwrap();
            assert_eq!(judgments.len(), 1);
            assert_eq!(judgments[0].response_a, item.group.responses[0].id);
        }
    })
    .await;
}

#[tokio::test]
async fn importing_a_record_again_skips_it() {
    on_each_backend(|store| async move {
        // Arrange: the same source records, as a second run of the importer builds them (new ids).
        store
            .import_groups(&[imported("import:same")])
            .await
            .unwrap();
        let again = imported("import:same");
        let new = imported("import:new");

        // Act
        let count = store
            .import_groups(&[again.clone(), new.clone()])
            .await
            .unwrap();

        // Assert
        assert_eq!(count, 1);
        assert!(matches!(
            store.get_group(again.group.id).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(judgment_count(&store, &[&new]).await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_batch_with_one_bad_group_stores_nothing() {
    on_each_backend(|store| async move {
        // Arrange: the second group's judgment names a response of the first.
        let good = imported("import:good");
        let mut bad = imported("import:bad");
        bad.judgments[0].response_b = good.group.responses[1].id;

        // Act
        let outcome = store.import_groups(&[good.clone(), bad]).await;

        // Assert
        assert!(matches!(outcome, Err(Error::Invalid(_))), "{outcome:?}");
        assert!(matches!(
            store.get_group(good.group.id).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(store.import_groups(&[good]).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_group_without_a_keyed_judgment_is_refused() {
    on_each_backend(|store| async move {
        // Arrange
        let mut unkeyed = imported("import:x");
        unkeyed.judgments[0].idempotency_key = None;
        let mut unjudged = imported("import:y");
        unjudged.judgments.clear();

        // Act / Assert
        for item in [unkeyed, unjudged] {
            let outcome = store.import_groups(&[item]).await;
            assert!(matches!(outcome, Err(Error::Invalid(_))), "{outcome:?}");
        }
    })
    .await;
}
