//! The annotation queue: which pair comes next, for whom, and what frees a pair.

use std::collections::HashSet;
use std::time::Duration;

use flywheel_store::{Assignment, Error, NewGroup, Store};
use uuid::Uuid;

use crate::helpers::{group_at, now, on_each_backend};
use crate::judgments::judgment;

const HOUR: Duration = Duration::from_secs(3600);

/// A stored group of `n` responses on `adapter_version`.
async fn stored_group(store: &Store, adapter_version: i64, n: usize) -> NewGroup {
    let mut g = group_at(now(), n);
    g.adapter_version = adapter_version;
    store.insert_group(&g).await.unwrap();
    g
}

/// The next pair for `annotator` without overlap, preferring nothing.
async fn next(store: &Store, annotator: &str) -> Option<Assignment> {
    store
        .next_pair_for(annotator, None, 0.0, HOUR)
        .await
        .unwrap()
}

fn pair(a: &Assignment) -> (Uuid, Uuid) {
    (a.response_a, a.response_b)
}

#[tokio::test]
async fn an_assignment_is_a_pair_of_one_group_in_canonical_order() {
    on_each_backend(|store| async move {
        let g = stored_group(&store, 0, 2).await;

        let a = next(&store, "alice").await.expect("a pair is free");

        assert_eq!(a.group_id, g.id);
        assert!(a.response_a < a.response_b);
        let ids: HashSet<Uuid> = g.responses.iter().map(|r| r.id).collect();
        assert!(ids.contains(&a.response_a) && ids.contains(&a.response_b));
        assert_eq!(a.annotator, "alice");
        assert_eq!(a.judgment_id, None);
        assert!(a.expires_at > a.created_at);
        assert_eq!(store.get_assignment(a.id).await.unwrap(), a);
        let shown: HashSet<Uuid> = [a.left(), a.right()].into();
        assert_eq!(shown, [a.response_a, a.response_b].into());
    })
    .await;
}

#[tokio::test]
async fn the_queue_never_gives_the_same_pair_twice_to_one_annotator() {
    on_each_backend(|store| async move {
        // Arrange: three responses make three pairs.
        stored_group(&store, 0, 3).await;

        // Act
        let mut pairs = HashSet::new();
        while let Some(a) = store.next_pair_for("alice", None, 1.0, HOUR).await.unwrap() {
            assert!(pairs.insert(pair(&a)), "pair {:?} came twice", pair(&a));
        }

        // Assert
        assert_eq!(pairs.len(), 3);
        assert!(
            next(&store, "bob").await.is_none(),
            "all three are pending with alice"
        );
    })
    .await;
}

#[tokio::test]
async fn a_pair_the_annotator_judged_without_an_assignment_is_not_offered() {
    on_each_backend(|store| async move {
        let g = stored_group(&store, 0, 2).await;
        let mut j = judgment(&g, 1, 0);
        j.annotator = "alice".into();
        store.insert_judgments(&[j]).await.unwrap();

        let offered = next(&store, "alice").await;

        assert_eq!(offered, None);
        assert!(next(&store, "bob").await.is_some());
    })
    .await;
}

#[tokio::test]
async fn the_queue_prefers_groups_of_the_requested_adapter_version() {
    on_each_backend(|store| async move {
        // Arrange: the preferred version's group is the older one.
        let on_policy = stored_group(&store, 4, 2).await;
        stored_group(&store, 3, 2).await;

        // Act
        let unpreferred = store.next_pair_for("bob", None, 0.0, HOUR).await.unwrap();
        let preferred = store
            .next_pair_for("alice", Some(4), 0.0, HOUR)
            .await
            .unwrap();

        // Assert
        assert_eq!(preferred.unwrap().group_id, on_policy.id);
        assert_ne!(
            unpreferred.unwrap().group_id,
            on_policy.id,
            "without a preference the newest free group comes first"
        );
    })
    .await;
}

#[tokio::test]
async fn pairs_with_the_fewest_judgments_come_first() {
    on_each_backend(|store| async move {
        // Arrange: the newest group's only pair is judged once already.
        let older = stored_group(&store, 0, 2).await;
        let judged = stored_group(&store, 0, 2).await;
        store
            .insert_judgments(&[judgment(&judged, 0, 1)])
            .await
            .unwrap();

        // Act
        let first = next(&store, "alice").await.unwrap();
        let second = next(&store, "alice").await.unwrap();

        // Assert
        assert_eq!(first.group_id, older.id);
        assert_eq!(second.group_id, judged.id);
    })
    .await;
}

#[tokio::test]
async fn a_live_assignment_holds_its_pair_unless_overlap_is_wanted() {
    on_each_backend(|store| async move {
        stored_group(&store, 0, 2).await;
        let alices = next(&store, "alice").await.unwrap();

        let without_overlap = next(&store, "bob").await;
        let with_overlap = store.next_pair_for("bob", None, 1.0, HOUR).await.unwrap();

        assert_eq!(without_overlap, None);
        assert_eq!(pair(&with_overlap.unwrap()), pair(&alices));
    })
    .await;
}

#[tokio::test]
async fn an_overlap_pick_prefers_a_pair_one_other_annotator_covers() {
    on_each_backend(|store| async move {
        // Arrange: alice judged the older group's pair; the newer group is untouched.
        let older = stored_group(&store, 0, 2).await;
        stored_group(&store, 0, 2).await;
        let mut j = judgment(&older, 0, 1);
        j.annotator = "alice".into();
        store.insert_judgments(&[j]).await.unwrap();

        // Act
        let overlap = store.next_pair_for("bob", None, 1.0, HOUR).await.unwrap();
        let fresh = store.next_pair_for("carol", None, 0.0, HOUR).await.unwrap();

        // Assert
        assert_eq!(overlap.unwrap().group_id, older.id);
        assert_ne!(fresh.unwrap().group_id, older.id);
    })
    .await;
}

#[tokio::test]
async fn an_expired_assignment_frees_the_pair_for_others_but_not_for_its_annotator() {
    on_each_backend(|store| async move {
        stored_group(&store, 0, 2).await;
        let expired = store
            .next_pair_for("alice", None, 0.0, Duration::ZERO)
            .await
            .unwrap()
            .unwrap();

        let bobs = next(&store, "bob").await;
        let alices_again = next(&store, "alice").await;

        assert_eq!(bobs.map(|a| pair(&a)), Some(pair(&expired)));
        assert_eq!(alices_again, None);
    })
    .await;
}

#[tokio::test]
async fn a_released_assignment_frees_its_pair_at_once_but_not_for_its_annotator() {
    on_each_backend(|store| async move {
        // Arrange: alice holds the only pair for an hour.
        stored_group(&store, 0, 2).await;
        let held = next(&store, "alice").await.unwrap();
        assert_eq!(next(&store, "bob").await, None, "held by alice");

        // Act
        let released = store.release_assignment(held.id).await.unwrap();
        let again = store.release_assignment(held.id).await.unwrap();

        // Assert
        assert!(released.expires_at <= chrono::Utc::now());
        assert!(released.expires_at < held.expires_at);
        assert_eq!(
            again.expires_at, released.expires_at,
            "a second release is a no-op"
        );
        assert_eq!(next(&store, "alice").await, None);
        assert_eq!(
            next(&store, "bob").await.map(|a| pair(&a)),
            Some(pair(&held))
        );
    })
    .await;
}

#[tokio::test]
async fn an_answered_or_unknown_assignment_cannot_be_released() {
    on_each_backend(|store| async move {
        let g = stored_group(&store, 0, 2).await;
        let a = next(&store, "alice").await.unwrap();
        let mut j = judgment(&g, 0, 1);
        j.annotator = "alice".into();
        let stored = store.insert_judgments(&[j]).await.unwrap();
        store
            .complete_assignment(a.id, stored[0].0.id)
            .await
            .unwrap();

        let answered = store.release_assignment(a.id).await;
        let unknown = store.release_assignment(Uuid::now_v7()).await;

        assert!(matches!(answered, Err(Error::Conflict(_))), "{answered:?}");
        assert!(
            matches!(unknown, Err(Error::NotFound("assignment"))),
            "{unknown:?}"
        );
        let kept = store.get_assignment(a.id).await.unwrap();
        assert_eq!(
            kept.expires_at, a.expires_at,
            "an answered assignment is untouched"
        );
    })
    .await;
}

#[tokio::test]
async fn left_and_right_are_drawn_at_random() {
    on_each_backend(|store| async move {
        stored_group(&store, 0, 8).await;

        let mut sides = HashSet::new();
        for _ in 0..24 {
            sides.insert(next(&store, "alice").await.unwrap().left_is_a);
        }

        assert_eq!(sides.len(), 2, "24 draws all landed on one side");
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_of_one_annotator_get_different_pairs() {
    on_each_backend(|store| async move {
        stored_group(&store, 0, 4).await;

        let mut tasks = Vec::new();
        for _ in 0..6 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { next(&store, "alice").await }));
        }
        let mut pairs = HashSet::new();
        for task in tasks {
            let a = task.await.unwrap().expect("six pairs for six requests");
            pairs.insert(pair(&a));
        }

        assert_eq!(pairs.len(), 6);
    })
    .await;
}

#[tokio::test]
async fn bad_queue_arguments_are_invalid_and_name_the_field() {
    on_each_backend(|store| async move {
        let empty = store.next_pair_for("", None, 0.0, HOUR).await;
        let share = store.next_pair_for("alice", None, 1.5, HOUR).await;

        assert!(matches!(empty, Err(Error::Invalid(ref m)) if m.starts_with("`annotator`")));
        assert!(matches!(share, Err(Error::Invalid(ref m)) if m.starts_with("`overlap_share`")));
    })
    .await;
}

#[tokio::test]
async fn completing_an_assignment_links_its_judgment_once() {
    on_each_backend(|store| async move {
        // Arrange
        let g = stored_group(&store, 0, 2).await;
        let a = next(&store, "alice").await.unwrap();
        let mut j = judgment(&g, 1, 0);
        j.annotator = "alice".into();
        let stored = store.insert_judgments(&[j.clone(), j]).await.unwrap();
        let (answer, other) = (stored[0].0.id, stored[1].0.id);

        // Act
        let completed = store.complete_assignment(a.id, answer).await.unwrap();
        let again = store.complete_assignment(a.id, answer).await;
        let conflicting = store.complete_assignment(a.id, other).await;

        // Assert
        assert_eq!(completed.judgment_id, Some(answer));
        assert_eq!(again.unwrap().judgment_id, Some(answer));
        assert!(
            matches!(conflicting, Err(Error::Conflict(_))),
            "{conflicting:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn completing_with_a_judgment_of_another_pair_or_annotator_is_invalid() {
    on_each_backend(|store| async move {
        let g = stored_group(&store, 0, 3).await;
        let a = next(&store, "alice").await.unwrap();
        let mut bobs = judgment(&g, 0, 1);
        bobs.response_a = a.response_a;
        bobs.response_b = a.response_b;
        bobs.annotator = "bob".into();
        let bobs = store.insert_judgments(&[bobs]).await.unwrap()[0].0.id;

        let by_bob = store.complete_assignment(a.id, bobs).await;
        let missing = store.complete_assignment(a.id, Uuid::now_v7()).await;
        let unknown = store.complete_assignment(Uuid::now_v7(), bobs).await;

        assert!(matches!(by_bob, Err(Error::Invalid(ref m)) if m.starts_with("`judgment_id`")));
        assert!(matches!(missing, Err(Error::Invalid(_))), "{missing:?}");
        assert!(
            matches!(unknown, Err(Error::NotFound("assignment"))),
            "{unknown:?}"
        );
        assert_eq!(store.get_assignment(a.id).await.unwrap().judgment_id, None);
    })
    .await;
}
