//! Storing judgments: validation, all-or-nothing batches, idempotent replays, concurrency.

use flywheel_store::{
    Error, IdempotencyKey, JudgmentSource, NewGroup, NewJudgment, Outcome, Store,
};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{group, group_at, now, on_each_backend};

/// A human judgment of responses `a` and `b` of `g`, without an idempotency key.
pub fn judgment(g: &NewGroup, a: usize, b: usize) -> NewJudgment {
    NewJudgment {
        group_id: g.id,
        response_a: g.responses[a].id,
        response_b: g.responses[b].id,
        outcome: Outcome::A,
        strength: None,
        annotator: "ann-1".into(),
        source: JudgmentSource::Human,
        rationale: None,
        criteria: None,
        idempotency_key: None,
    }
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(k).unwrap())
}

/// A stored group of three responses.
pub async fn stored_group(store: &Store) -> NewGroup {
    let g = group_at(now(), 3);
    store.insert_group(&g).await.unwrap();
    g
}

/// The message of an [`Error::Invalid`], or a panic naming what came instead.
fn invalid_message<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn an_inserted_judgment_reads_back_with_every_field() {
    on_each_backend(|store| async move {
        // Arrange
        let g = stored_group(&store).await;
        let mut new = judgment(&g, 2, 0);
        new.outcome = Outcome::BothBad;
        new.strength = Some(0.25);
        new.annotator = "alice".into();
        new.source = JudgmentSource::Model;
        new.rationale = Some("both miss the point".into());
        new.criteria = Some(json!(["helpfulness", "accuracy"]));
        new.idempotency_key = key("client-1");

        // Act
        let stored = store.insert_judgments(&[new.clone()]).await.unwrap();
        let (judgment, created) = stored[0].clone();
        let read = store.get_judgment(judgment.id).await.unwrap();
        let for_group = store.judgments_for_group(g.id).await.unwrap();

        // Assert
        assert!(created);
        assert_eq!(read, judgment);
        assert_eq!(for_group, vec![judgment.clone()]);
        assert_eq!(judgment.group_id, g.id);
        assert_eq!(judgment.response_a, g.responses[2].id);
        assert_eq!(judgment.response_b, g.responses[0].id);
        assert_eq!(judgment.outcome, Outcome::BothBad);
        assert_eq!(judgment.strength, Some(0.25));
        assert_eq!(judgment.annotator, "alice");
        assert_eq!(judgment.source, JudgmentSource::Model);
        assert_eq!(judgment.rationale, new.rationale);
        assert_eq!(judgment.criteria, new.criteria);
        assert_eq!(judgment.idempotency_key.as_deref(), Some("client-1"));
        assert!(judgment.created_at <= chrono::Utc::now());
    })
    .await;
}

#[tokio::test]
async fn a_missing_judgment_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.get_judgment(Uuid::now_v7()).await;

        assert!(
            matches!(outcome, Err(Error::NotFound("judgment"))),
            "{outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_stored_whole_in_order() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let batch = vec![judgment(&g, 0, 1), judgment(&g, 1, 2), judgment(&g, 0, 2)];

        let stored = store.insert_judgments(&batch).await.unwrap();

        assert_eq!(stored.len(), 3);
        assert!(stored.iter().all(|(_, created)| *created));
        let pairs: Vec<(Uuid, Uuid)> = stored
            .iter()
            .map(|(j, _)| (j.response_a, j.response_b))
            .collect();
        let sent: Vec<(Uuid, Uuid)> = batch.iter().map(|j| (j.response_a, j.response_b)).collect();
        assert_eq!(pairs, sent);
        assert_eq!(store.judgments_for_group(g.id).await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_batch_with_one_bad_item_stores_nothing() {
    on_each_backend(|store| async move {
        // Arrange: the second item's response_b belongs to another group.
        let g = stored_group(&store).await;
        let other = stored_group(&store).await;
        let mut bad = judgment(&g, 1, 2);
        bad.response_b = other.responses[0].id;
        let mut first = judgment(&g, 0, 1);
        first.idempotency_key = key("first-of-a-failed-batch");
        let batch = vec![first.clone(), bad, judgment(&g, 0, 2)];

        // Act
        let message = invalid_message(store.insert_judgments(&batch).await);

        // Assert
        assert!(message.starts_with("`response_b`"), "{message}");
        assert!(message.contains("does not belong to group"), "{message}");
        assert!(
            message.ends_with("(judgment 2 of 3 in the batch)"),
            "{message}"
        );
        assert!(store.judgments_for_group(g.id).await.unwrap().is_empty());
        // The key of the rolled-back first item is free again.
        let retried = store.insert_judgments(&[first]).await.unwrap();
        assert!(retried[0].1);
    })
    .await;
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let other = stored_group(&store).await;
        type Spoil = Box<dyn Fn(&mut NewJudgment) + Send + Sync>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("group_id", Box::new(|j| j.group_id = Uuid::now_v7())),
            ("response_a", Box::new(|j| j.response_a = Uuid::now_v7())),
            ("response_a", {
                let foreign = other.responses[1].id;
                Box::new(move |j| j.response_a = foreign)
            }),
            ("response_b", Box::new(|j| j.response_b = Uuid::now_v7())),
            ("response_b", Box::new(|j| j.response_b = j.response_a)),
            ("strength", Box::new(|j| j.strength = Some(1.5))),
            ("annotator", Box::new(|j| j.annotator = " ".into())),
        ];

        for (field, spoil) in cases {
            let mut j = judgment(&g, 0, 1);
            spoil(&mut j);

            let message = invalid_message(store.insert_judgments(&[j]).await);

            assert!(
                message.starts_with(&format!("`{field}`")),
                "{field}: {message}"
            );
        }
        assert!(store.judgments_for_group(g.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_empty_batch_and_a_batch_over_the_limit_are_invalid() {
    on_each_backend(|store| async move {
        let g = group();
        store.insert_group(&g).await.unwrap();
        let too_many = vec![judgment(&g, 0, 1); flywheel_store::MAX_JUDGMENT_BATCH + 1];

        invalid_message(store.insert_judgments(&[]).await);
        invalid_message(store.insert_judgments(&too_many).await);

        assert!(store.judgments_for_group(g.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn replaying_a_key_with_the_same_body_returns_the_stored_judgment() {
    on_each_backend(|store| async move {
        // Arrange
        let g = stored_group(&store).await;
        let mut j = judgment(&g, 0, 1);
        j.idempotency_key = key("retry-me");
        j.criteria = Some(json!({"a": 1, "b": 2}));
        let first = store.insert_judgments(&[j.clone()]).await.unwrap();
        let mut same = j.clone();
        same.criteria = Some(serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap());

        // Act
        let replayed = store.insert_judgments(&[same]).await.unwrap();

        // Assert
        assert!(first[0].1);
        assert!(!replayed[0].1, "a replay is not created again");
        assert_eq!(replayed[0].0, first[0].0);
        assert_eq!(store.judgments_for_group(g.id).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn replaying_a_key_with_a_different_body_is_a_conflict() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let mut j = judgment(&g, 0, 1);
        j.idempotency_key = key("once");
        store.insert_judgments(&[j.clone()]).await.unwrap();
        let mut changed = j.clone();
        changed.outcome = Outcome::B;

        let outcome = store.insert_judgments(&[changed]).await;

        assert!(matches!(outcome, Err(Error::Conflict(_))), "{outcome:?}");
        let stored = store.judgments_for_group(g.id).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].outcome, Outcome::A);
    })
    .await;
}

#[tokio::test]
async fn a_conflicting_key_in_a_batch_stores_nothing_of_the_batch() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let mut j = judgment(&g, 0, 1);
        j.idempotency_key = key("taken");
        store.insert_judgments(&[j.clone()]).await.unwrap();
        let mut changed = j.clone();
        changed.outcome = Outcome::Tie;

        let outcome = store.insert_judgments(&[judgment(&g, 1, 2), changed]).await;

        let Err(Error::Conflict(message)) = outcome else {
            panic!("expected Conflict, got {outcome:?}");
        };
        assert!(message.contains("taken"), "{message}");
        assert_eq!(store.judgments_for_group(g.id).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn one_key_twice_in_one_batch_stores_one_judgment() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let mut j = judgment(&g, 0, 1);
        j.idempotency_key = key("twice");

        let stored = store.insert_judgments(&[j.clone(), j]).await.unwrap();

        assert!(stored[0].1);
        assert!(!stored[1].1);
        assert_eq!(stored[0].0.id, stored[1].0.id);
        assert_eq!(store.judgments_for_group(g.id).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn judgments_without_a_key_are_never_deduplicated() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let j = judgment(&g, 0, 1);

        store
            .insert_judgments(std::slice::from_ref(&j))
            .await
            .unwrap();
        store.insert_judgments(&[j]).await.unwrap();

        assert_eq!(store.judgments_for_group(g.id).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn concurrent_inserts_with_one_key_store_exactly_one_row() {
    on_each_backend(|store| async move {
        // Arrange: half the writers send the judgment alone, half inside a two-item batch.
        let g = stored_group(&store).await;
        let mut shared = judgment(&g, 0, 1);
        shared.idempotency_key = key("raced");

        // Act
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let batch = if i % 2 == 0 {
                vec![shared.clone()]
            } else {
                vec![shared.clone(), judgment(&g, 1, 2)]
            };
            tasks.push(tokio::spawn(async move {
                store.insert_judgments(&batch).await.unwrap()[0].clone()
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }

        // Assert
        let created = results.iter().filter(|(_, created)| *created).count();
        assert_eq!(created, 1, "exactly one writer creates the judgment");
        assert!(results.iter().all(|(j, _)| j.id == results[0].0.id));
        let keyed = store
            .judgments_for_group(g.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.idempotency_key.as_deref() == Some("raced"))
            .count();
        assert_eq!(keyed, 1);
    })
    .await;
}
