//! Listing judgments: newest first, keyset pages, filters.

use chrono::Duration;
use flywheel_store::{JudgmentFilter, JudgmentSource, Store};
use uuid::Uuid;

use crate::helpers::{group_at, now, on_each_backend};
use crate::judgments::judgment;

/// Stores one group on `adapter_version` and `count` judgments of it, one at a time (so ids rise),
/// by annotators `ann-0`, `ann-1`, … in turn; returns the judgment ids in insert order.
async fn insert_judgments(store: &Store, adapter_version: i64, count: usize) -> (Uuid, Vec<Uuid>) {
    let mut g = group_at(now(), 2);
    g.adapter_version = adapter_version;
    store.insert_group(&g).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let mut j = judgment(&g, i % 2, (i + 1) % 2);
        j.annotator = format!("ann-{}", i % 2);
        let stored = store.insert_judgments(&[j]).await.unwrap();
        ids.push(stored[0].0.id);
    }
    (g.id, ids)
}

fn ids(listed: &[flywheel_store::Judgment]) -> Vec<Uuid> {
    listed.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn paging_with_before_walks_every_judgment_once_newest_first() {
    on_each_backend(|store| async move {
        // Arrange
        let (_, mut expected) = insert_judgments(&store, 0, 7).await;
        expected.reverse();

        // Act
        let mut seen = Vec::new();
        let mut filter = JudgmentFilter {
            limit: 3,
            ..JudgmentFilter::default()
        };
        loop {
            let page = store.list_judgments(&filter).await.unwrap();
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            filter.before = Some(last.id);
            seen.extend(ids(&page));
        }

        // Assert
        assert_eq!(seen, expected);
    })
    .await;
}

#[tokio::test]
async fn the_group_and_annotator_filters_keep_only_their_judgments() {
    on_each_backend(|store| async move {
        let (first_group, first) = insert_judgments(&store, 0, 4).await;
        let (_, second) = insert_judgments(&store, 0, 2).await;

        let of_group = store
            .list_judgments(&JudgmentFilter {
                group_id: Some(first_group),
                ..JudgmentFilter::default()
            })
            .await
            .unwrap();
        let of_annotator = store
            .list_judgments(&JudgmentFilter {
                annotator: Some("ann-1".into()),
                ..JudgmentFilter::default()
            })
            .await
            .unwrap();

        assert_eq!(ids(&of_group), vec![first[3], first[2], first[1], first[0]]);
        assert_eq!(ids(&of_annotator), vec![second[1], first[3], first[1]]);
    })
    .await;
}

#[tokio::test]
async fn the_source_filter_keeps_only_that_source() {
    on_each_backend(|store| async move {
        let mut g = group_at(now(), 2);
        g.adapter_version = 0;
        store.insert_group(&g).await.unwrap();
        let human = judgment(&g, 0, 1);
        let mut rule = judgment(&g, 0, 1);
        rule.source = JudgmentSource::Rule;
        let stored = store.insert_judgments(&[human, rule]).await.unwrap();

        let listed = store
            .list_judgments(&JudgmentFilter {
                source: Some(JudgmentSource::Rule),
                ..JudgmentFilter::default()
            })
            .await
            .unwrap();

        assert_eq!(ids(&listed), vec![stored[1].0.id]);
    })
    .await;
}

#[tokio::test]
async fn the_adapter_version_filter_keeps_judgments_of_that_versions_groups() {
    on_each_backend(|store| async move {
        insert_judgments(&store, 0, 2).await;
        let (_, on_five) = insert_judgments(&store, 5, 2).await;

        let listed = store
            .list_judgments(&JudgmentFilter {
                adapter_version: Some(5),
                ..JudgmentFilter::default()
            })
            .await
            .unwrap();

        assert_eq!(ids(&listed), vec![on_five[1], on_five[0]]);
    })
    .await;
}

#[tokio::test]
async fn the_time_filters_are_inclusive_since_and_exclusive_until() {
    on_each_backend(|store| async move {
        // Arrange: judgments are stamped by the store, so read the times back.
        let (_, inserted) = insert_judgments(&store, 0, 3).await;
        let mut times = Vec::new();
        for id in &inserted {
            times.push(store.get_judgment(*id).await.unwrap().created_at);
        }
        assert!(times[0] <= times[1] && times[1] <= times[2]);

        // Act
        let listed = store
            .list_judgments(&JudgmentFilter {
                since: Some(times[1]),
                until: Some(times[2] + Duration::microseconds(1)),
                ..JudgmentFilter::default()
            })
            .await
            .unwrap();
        let before_all = store
            .list_judgments(&JudgmentFilter {
                until: Some(times[0]),
                ..JudgmentFilter::default()
            })
            .await
            .unwrap();

        // Assert
        let got = ids(&listed);
        assert!(
            got.contains(&inserted[1]) && got.contains(&inserted[2]),
            "{got:?}"
        );
        assert!(
            !got.contains(&inserted[0]) || times[0] == times[1],
            "only a judgment stamped at the same microsecond may join"
        );
        assert!(before_all.is_empty());
    })
    .await;
}

#[tokio::test]
async fn filters_combine_with_paging_and_the_limit_is_clamped() {
    on_each_backend(|store| async move {
        let (g, inserted) = insert_judgments(&store, 3, 6).await;

        let filter = JudgmentFilter {
            group_id: Some(g),
            annotator: Some("ann-0".into()),
            adapter_version: Some(3),
            before: Some(inserted[4]),
            limit: 0,
            ..JudgmentFilter::default()
        };
        let listed = store.list_judgments(&filter).await.unwrap();

        assert_eq!(ids(&listed), vec![inserted[2]]);
    })
    .await;
}

#[tokio::test]
async fn judgments_are_counted_by_the_version_they_judge_and_their_time() {
    on_each_backend(|store| async move {
        // Arrange
        insert_judgments(&store, 0, 3).await;
        let between = chrono::Utc::now();
        insert_judgments(&store, 1, 2).await;
        insert_judgments(&store, 0, 1).await;

        // Act / Assert
        assert_eq!(store.count_judgments(None, None).await.unwrap(), 6);
        assert_eq!(store.count_judgments(Some(0), None).await.unwrap(), 4);
        assert_eq!(store.count_judgments(None, Some(between)).await.unwrap(), 3);
        assert_eq!(
            store.count_judgments(Some(0), Some(between)).await.unwrap(),
            1
        );
        let later = chrono::Utc::now() + Duration::seconds(1);
        assert_eq!(store.count_judgments(None, Some(later)).await.unwrap(), 0);
    })
    .await;
}
