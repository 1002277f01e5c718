//! Listing groups: newest first, keyset pages, filters.

use chrono::Duration;
use flywheel_store::{GroupFilter, Store};
use uuid::Uuid;

use crate::helpers::{group_at, now, on_each_backend};

/// Inserts `count` groups one second apart, oldest first, and returns their ids in that order.
async fn insert_groups(store: &Store, count: usize) -> Vec<Uuid> {
    let start = now() - Duration::seconds(count as i64);
    let mut ids = Vec::new();
    for i in 0..count {
        let g = group_at(start + Duration::seconds(i as i64), 1);
        store.insert_group(&g).await.unwrap();
        ids.push(g.id);
    }
    ids
}

#[tokio::test]
async fn paging_with_before_walks_every_group_once_newest_first() {
    on_each_backend(|store| async move {
        // Arrange
        let mut expected = insert_groups(&store, 7).await;
        expected.reverse();

        // Act
        let mut seen = Vec::new();
        let mut filter = GroupFilter {
            limit: 3,
            ..GroupFilter::default()
        };
        loop {
            let page = store.list_groups(&filter).await.unwrap();
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            filter.before = Some(last.id);
            seen.extend(page.iter().map(|g| g.id));
        }

        // Assert
        assert_eq!(seen, expected);
    })
    .await;
}

#[tokio::test]
async fn listed_groups_carry_their_response_count() {
    on_each_backend(|store| async move {
        let g = group_at(now(), 3);
        store.insert_group(&g).await.unwrap();

        let listed = store.list_groups(&GroupFilter::default()).await.unwrap();

        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].response_count, 3);
        assert_eq!(listed[0].completion_tokens, 9);
    })
    .await;
}

#[tokio::test]
async fn the_limit_is_clamped_to_at_least_one() {
    on_each_backend(|store| async move {
        insert_groups(&store, 2).await;
        let filter = GroupFilter {
            limit: 0,
            ..GroupFilter::default()
        };

        let listed = store.list_groups(&filter).await.unwrap();

        assert_eq!(listed.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_adapter_version_filter_keeps_only_that_version() {
    on_each_backend(|store| async move {
        let mut on_base = group_at(now(), 1);
        on_base.adapter_version = 0;
        let mut on_three = group_at(now(), 1);
        on_three.adapter_version = 3;
        store.insert_group(&on_base).await.unwrap();
        store.insert_group(&on_three).await.unwrap();
        let filter = GroupFilter {
            adapter_version: Some(3),
            ..GroupFilter::default()
        };

        let listed = store.list_groups(&filter).await.unwrap();

        let ids: Vec<Uuid> = listed.iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![on_three.id]);
        let response = store.get_response(on_three.responses[0].id).await.unwrap();
        assert_eq!(response.adapter_version, 3);
    })
    .await;
}

#[tokio::test]
async fn since_is_inclusive_and_until_is_exclusive() {
    on_each_backend(|store| async move {
        // Arrange: groups at t0, t0+1s, ..., t0+4s; one at t0+2s exactly 1 µs later too.
        let ids = insert_groups(&store, 5).await;
        let times: Vec<_> = created_times(&store, &ids).await;
        let just_after = group_at(times[2] + Duration::microseconds(1), 1);
        store.insert_group(&just_after).await.unwrap();
        let filter = GroupFilter {
            since: Some(times[1]),
            until: Some(times[3]),
            ..GroupFilter::default()
        };

        // Act
        let listed = store.list_groups(&filter).await.unwrap();

        // Assert
        let got: Vec<Uuid> = listed.iter().map(|g| g.id).collect();
        assert_eq!(got, vec![just_after.id, ids[2], ids[1]]);
    })
    .await;
}

#[tokio::test]
async fn filters_combine_with_paging() {
    on_each_backend(|store| async move {
        let ids = insert_groups(&store, 5).await;
        let times = created_times(&store, &ids).await;
        let filter = GroupFilter {
            adapter_version: Some(0),
            since: Some(times[1]),
            before: Some(ids[3]),
            limit: 500,
            ..GroupFilter::default()
        };

        let listed = store.list_groups(&filter).await.unwrap();

        let got: Vec<Uuid> = listed.iter().map(|g| g.id).collect();
        assert_eq!(got, vec![ids[2], ids[1]]);
    })
    .await;
}

/// The stored creation times of `ids`, in the same order.
async fn created_times(store: &Store, ids: &[Uuid]) -> Vec<chrono::DateTime<chrono::Utc>> {
    let mut times = Vec::new();
    for id in ids {
        times.push(store.get_group(*id).await.unwrap().group.created_at);
    }
    times
}
