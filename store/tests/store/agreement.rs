//! The data behind annotator quality: per-annotator counts and speed, verdicts on shared pairs.

use std::time::Duration;

use flywheel_store::{NewGroup, Outcome, Store};

use crate::helpers::{group_at, now, on_each_backend};
use crate::judgments::judgment;

/// Stores `annotator`'s verdict `outcome` on responses `a` and `b` of `g`.
async fn judge(store: &Store, g: &NewGroup, annotator: &str, a: usize, b: usize, outcome: Outcome) {
    let mut j = judgment(g, a, b);
    j.annotator = annotator.into();
    j.outcome = outcome;
    store.insert_judgments(&[j]).await.unwrap();
}

async fn stored_group(store: &Store, n: usize) -> NewGroup {
    let g = group_at(now(), n);
    store.insert_group(&g).await.unwrap();
    g
}

#[tokio::test]
async fn annotator_stats_count_judgments_ties_and_both_bad() {
    on_each_backend(|store| async move {
        // Arrange
        let g = stored_group(&store, 3).await;
        judge(&store, &g, "alice", 0, 1, Outcome::A).await;
        judge(&store, &g, "alice", 0, 2, Outcome::Tie).await;
        judge(&store, &g, "alice", 1, 2, Outcome::BothBad).await;
        judge(&store, &g, "bob", 0, 1, Outcome::Tie).await;

        // Act
        let stats = store.annotator_stats().await.unwrap();

        // Assert
        assert_eq!(stats.len(), 2);
        let (alice, bob) = (&stats[0], &stats[1]);
        assert_eq!(alice.annotator, "alice");
        assert_eq!((alice.judgments, alice.ties, alice.both_bad), (3, 1, 1));
        assert!(alice.first_judgment_at <= alice.last_judgment_at);
        assert_eq!(
            alice.median_seconds_to_judge, None,
            "no assignment was completed"
        );
        assert_eq!(bob.annotator, "bob");
        assert_eq!((bob.judgments, bob.ties, bob.both_bad), (1, 1, 0));
        assert_eq!(bob.first_judgment_at, bob.last_judgment_at);
    })
    .await;
}

#[tokio::test]
async fn annotator_stats_time_answers_from_assignment_to_judgment() {
    on_each_backend(|store| async move {
        let g = stored_group(&store, 2).await;
        let hour = Duration::from_secs(3600);
        let a = store
            .next_pair_for("alice", None, 0.0, hour)
            .await
            .unwrap()
            .unwrap();
        let mut j = judgment(&g, 0, 1);
        j.annotator = "alice".into();
        let stored = store.insert_judgments(&[j]).await.unwrap();
        store
            .complete_assignment(a.id, stored[0].0.id)
            .await
            .unwrap();

        let stats = store.annotator_stats().await.unwrap();

        let seconds = stats[0]
            .median_seconds_to_judge
            .expect("one completed assignment");
        let expected = (stored[0].0.created_at - a.created_at)
            .num_microseconds()
            .unwrap() as f64
            / 1e6;
        assert!((seconds - expected).abs() < 1e-9, "{seconds} vs {expected}");
        assert!(seconds >= 0.0);
    })
    .await;
}

#[tokio::test]
async fn shared_pairs_list_each_annotators_verdict_in_the_pairs_own_order() {
    on_each_backend(|store| async move {
        // Arrange: alice and bob judge pair (0, 1) in opposite orders and agree; carol alone
        // judges (0, 2); alice judges (1, 2) twice, bob once.
        let g = stored_group(&store, 3).await;
        judge(&store, &g, "alice", 0, 1, Outcome::A).await;
        judge(&store, &g, "bob", 1, 0, Outcome::B).await;
        judge(&store, &g, "carol", 0, 2, Outcome::Tie).await;
        judge(&store, &g, "alice", 1, 2, Outcome::A).await;
        judge(&store, &g, "alice", 1, 2, Outcome::BothBad).await;
        judge(&store, &g, "bob", 2, 1, Outcome::Tie).await;

        // Act
        let shared = store.judgments_on_shared_pairs().await.unwrap();

        // Assert
        let r = |i: usize| g.responses[i].id;
        let pair_01 = (r(0).min(r(1)), r(0).max(r(1)));
        let pair_12 = (r(1).min(r(2)), r(1).max(r(2)));
        assert_eq!(shared.len(), 4, "{shared:#?}");
        assert!(shared.iter().all(|s| s.response_lo < s.response_hi));
        assert!(shared.iter().all(|s| s.annotator != "carol"));
        let on_01: Vec<_> = shared
            .iter()
            .filter(|s| (s.response_lo, s.response_hi) == pair_01)
            .collect();
        assert_eq!(on_01.len(), 2);
        assert_eq!(on_01[0].outcome, on_01[1].outcome, "alice and bob agree");
        let a_is_lo = r(0) < r(1);
        assert_eq!(
            on_01[0].outcome,
            if a_is_lo { Outcome::A } else { Outcome::B }
        );
        let alice_on_12 = shared
            .iter()
            .find(|s| (s.response_lo, s.response_hi) == pair_12 && s.annotator == "alice")
            .unwrap();
        assert_eq!(
            alice_on_12.outcome,
            Outcome::BothBad,
            "her latest verdict counts"
        );
        let annotators: Vec<&str> = shared.iter().map(|s| s.annotator.as_str()).collect();
        let mut sorted_by_pair = shared.clone();
        sorted_by_pair.sort_by_key(|s| (s.response_lo, s.response_hi, s.annotator.clone()));
        assert_eq!(
            shared, sorted_by_pair,
            "ordered by pair, then annotator: {annotators:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn with_no_judgments_there_are_no_stats_and_no_shared_pairs() {
    on_each_backend(|store| async move {
        assert!(store.annotator_stats().await.unwrap().is_empty());
        assert!(store.judgments_on_shared_pairs().await.unwrap().is_empty());
    })
    .await;
}
