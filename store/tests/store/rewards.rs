//! Storing rewards: validation, all-or-nothing batches, idempotent replays, concurrency, listing.

use flywheel_store::{
    Error, IdempotencyKey, NewReward, RewardFilter, RewardSource, MAX_REWARD_BATCH,
};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::on_each_backend;
use crate::judgments::stored_group;

/// A rule's reward of 0.5 for `response_id`, without an idempotency key.
pub fn reward(response_id: Uuid) -> NewReward {
    NewReward {
        response_id,
        value: 0.5,
        source: RewardSource::Rule,
        annotator: "verifier".into(),
        rationale: None,
        details: None,
        idempotency_key: None,
    }
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(k).unwrap())
}

/// The message of an [`Error::Invalid`], or a panic naming what came instead.
fn invalid_message<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn an_inserted_reward_reads_back_with_every_field_and_the_group_of_its_response() {
    on_each_backend(|store| async move {
        // Arrange
        let g = stored_group(&store).await;
        let mut new = reward(g.responses[2].id);
        new.value = -1.0 / 3.0;
        new.source = RewardSource::Model;
        new.annotator = "rm-7b".into();
        new.rationale = Some("hedges".into());
        new.details = Some(json!({"scores": [0.25, -1], "model": "rm"}));
        new.idempotency_key = key("client-1");

        // Act
        let stored = store.insert_rewards(&[new.clone()]).await.unwrap();
        let (reward, created) = stored[0].clone();
        let read = store.get_reward(reward.id).await.unwrap();
        let for_group = store.rewards_for_group(g.id).await.unwrap();

        // Assert
        assert!(created);
        assert_eq!(read, reward);
        assert_eq!(for_group, vec![reward.clone()]);
        assert_eq!(reward.group_id, g.id, "taken from the response");
        assert_eq!(reward.response_id, g.responses[2].id);
        assert_eq!(reward.value, -1.0 / 3.0, "f64 values survive bit for bit");
        assert_eq!(reward.source, RewardSource::Model);
        assert_eq!(reward.annotator, "rm-7b");
        assert_eq!(reward.rationale, new.rationale);
        assert_eq!(reward.details, new.details);
        assert_eq!(reward.idempotency_key.as_deref(), Some("client-1"));
        assert!(reward.created_at <= chrono::Utc::now());
    })
    .await;
}

#[tokio::test]
async fn a_missing_reward_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.get_reward(Uuid::now_v7()).await;

        assert!(
            matches!(outcome, Err(Error::NotFound("reward"))),
            "{outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn replaying_a_key_with_the_same_body_returns_the_stored_reward() {
    on_each_backend(|store| async move {
        // Arrange
        let g = stored_group(&store).await;
        let mut r = reward(g.responses[0].id);
        r.idempotency_key = key("retry-me");
        r.details = Some(json!({"a": 1, "b": 2}));
        let first = store.insert_rewards(&[r.clone()]).await.unwrap();
        let mut same = r.clone();
        same.details = Some(serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap());

        // Act
        let replayed = store.insert_rewards(&[same]).await.unwrap();

        // Assert
        assert!(first[0].1);
        assert!(!replayed[0].1, "a replay is not created again");
        assert_eq!(replayed[0].0, first[0].0);
        assert_eq!(store.rewards_for_group(g.id).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn replaying_a_key_with_a_different_body_is_a_conflict() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let mut r = reward(g.responses[0].id);
        r.idempotency_key = key("once");
        store.insert_rewards(&[r.clone()]).await.unwrap();
        let mut changed = r.clone();
        changed.value = 0.75;

        let outcome = store.insert_rewards(&[changed]).await;

        let Err(Error::Conflict(message)) = outcome else {
            panic!("expected Conflict, got {outcome:?}");
        };
        assert!(message.contains("once"), "{message}");
        let stored = store.rewards_for_group(g.id).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].value, 0.5);
    })
    .await;
}

#[tokio::test]
async fn a_reward_of_an_unknown_response_is_invalid() {
    on_each_backend(|store| async move {
        let missing = Uuid::now_v7();

        let message = invalid_message(store.insert_rewards(&[reward(missing)]).await);

        assert!(message.starts_with("`response_id`"), "{message}");
        assert!(message.contains(&missing.to_string()), "{message}");
        assert!(message.contains("does not exist"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_value_that_is_not_finite_or_too_large_is_invalid_and_stores_nothing() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e7, -1e7] {
            let mut r = reward(g.responses[0].id);
            r.value = bad;

            let message = invalid_message(store.insert_rewards(&[r]).await);

            assert!(message.starts_with("`value`"), "{bad}: {message}");
        }
        assert!(store.rewards_for_group(g.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        type Spoil = fn(&mut NewReward);
        let cases: [(&str, Spoil); 4] = [
            ("annotator", |r| r.annotator = " ".into()),
            ("annotator", |r| r.annotator = "a\u{0}b".into()),
            ("rationale", |r| r.rationale = Some("\u{0}".into())),
            ("details", |r| r.details = Some(json!(["\u{0}"]))),
        ];
        for (field, spoil) in cases {
            let mut r = reward(g.responses[0].id);
            spoil(&mut r);

            let message = invalid_message(store.insert_rewards(&[r]).await);

            assert!(
                message.starts_with(&format!("`{field}`")),
                "{field}: {message}"
            );
        }
        assert!(store.rewards_for_group(g.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_batch_with_one_bad_item_stores_nothing() {
    on_each_backend(|store| async move {
        // Arrange: the second item names a response that does not exist.
        let g = stored_group(&store).await;
        let mut first = reward(g.responses[0].id);
        first.idempotency_key = key("first-of-a-failed-batch");
        let batch = vec![
            first.clone(),
            reward(Uuid::now_v7()),
            reward(g.responses[1].id),
        ];

        // Act
        let message = invalid_message(store.insert_rewards(&batch).await);

        // Assert
        assert!(message.starts_with("`response_id`"), "{message}");
        assert!(
            message.ends_with("(reward 2 of 3 in the batch)"),
            "{message}"
        );
        assert!(store.rewards_for_group(g.id).await.unwrap().is_empty());
        // The key of the rolled-back first item is free again.
        let retried = store.insert_rewards(&[first]).await.unwrap();
        assert!(retried[0].1);
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_stored_whole_in_order() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let batch: Vec<NewReward> = g.responses.iter().map(|r| reward(r.id)).collect();

        let stored = store.insert_rewards(&batch).await.unwrap();

        assert!(stored.iter().all(|(_, created)| *created));
        let responses: Vec<Uuid> = stored.iter().map(|(r, _)| r.response_id).collect();
        let sent: Vec<Uuid> = batch.iter().map(|r| r.response_id).collect();
        assert_eq!(responses, sent);
        assert_eq!(store.rewards_for_group(g.id).await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn an_empty_batch_and_a_batch_over_the_limit_are_invalid() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let too_many = vec![reward(g.responses[0].id); MAX_REWARD_BATCH + 1];

        invalid_message(store.insert_rewards(&[]).await);
        invalid_message(store.insert_rewards(&too_many).await);

        assert!(store.rewards_for_group(g.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn one_key_twice_in_one_batch_stores_one_reward_and_keyless_rewards_are_never_deduplicated() {
    on_each_backend(|store| async move {
        let g = stored_group(&store).await;
        let mut keyed = reward(g.responses[0].id);
        keyed.idempotency_key = key("twice");
        let keyless = reward(g.responses[1].id);

        let stored = store
            .insert_rewards(&[keyed.clone(), keyed, keyless.clone(), keyless])
            .await
            .unwrap();

        let created: Vec<bool> = stored.iter().map(|(_, created)| *created).collect();
        assert_eq!(created, [true, false, true, true]);
        assert_eq!(stored[0].0.id, stored[1].0.id);
        assert_eq!(store.rewards_for_group(g.id).await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn concurrent_inserts_with_one_key_store_exactly_one_row() {
    on_each_backend(|store| async move {
        // Arrange: half the writers send the reward alone, half inside a two-item batch.
        let g = stored_group(&store).await;
        let mut shared = reward(g.responses[0].id);
        shared.idempotency_key = key("raced");

        // Act
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let batch = if i % 2 == 0 {
                vec![shared.clone()]
            } else {
                vec![shared.clone(), reward(g.responses[1].id)]
            };
            tasks.push(tokio::spawn(async move {
                store.insert_rewards(&batch).await.unwrap()[0].clone()
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }

        // Assert
        let created = results.iter().filter(|(_, created)| *created).count();
        assert_eq!(created, 1, "exactly one writer creates the reward");
        assert!(results.iter().all(|(r, _)| r.id == results[0].0.id));
        let keyed = store
            .rewards_for_group(g.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.idempotency_key.as_deref() == Some("raced"))
            .count();
        assert_eq!(keyed, 1);
    })
    .await;
}

#[tokio::test]
async fn rewards_are_listed_newest_first_by_group_response_and_source_one_page_at_a_time() {
    on_each_backend(|store| async move {
        // Arrange: five rewards, one at a time so their ids are in this order.
        let g = stored_group(&store).await;
        let other = stored_group(&store).await;
        let sent = [
            (g.responses[0].id, RewardSource::Rule),
            (g.responses[1].id, RewardSource::Human),
            (other.responses[0].id, RewardSource::Rule),
            (g.responses[0].id, RewardSource::Consistency),
            (other.responses[2].id, RewardSource::WinRate),
        ];
        let mut ids = Vec::new();
        for (response_id, source) in sent {
            let mut r = reward(response_id);
            r.source = source;
            ids.push(store.insert_rewards(&[r]).await.unwrap()[0].0.id);
        }
        let list = |f: RewardFilter| {
            let store = store.clone();
            async move {
                let page = store.list_rewards(&f).await.unwrap();
                page.into_iter().map(|r| r.id).collect::<Vec<Uuid>>()
            }
        };

        // Act + Assert
        assert_eq!(
            list(RewardFilter::default()).await,
            [ids[4], ids[3], ids[2], ids[1], ids[0]]
        );
        let of_group = RewardFilter {
            group_id: Some(g.id),
            ..RewardFilter::default()
        };
        assert_eq!(list(of_group.clone()).await, [ids[3], ids[1], ids[0]]);
        let of_response = RewardFilter {
            response_id: Some(g.responses[0].id),
            ..RewardFilter::default()
        };
        assert_eq!(list(of_response).await, [ids[3], ids[0]]);
        let rules = RewardFilter {
            source: Some(RewardSource::Rule),
            ..RewardFilter::default()
        };
        assert_eq!(list(rules).await, [ids[2], ids[0]]);
        let first_page = list(RewardFilter {
            limit: 2,
            ..of_group.clone()
        })
        .await;
        assert_eq!(first_page, [ids[3], ids[1]]);
        let second_page = list(RewardFilter {
            limit: 2,
            before: first_page.last().copied(),
            ..of_group
        })
        .await;
        assert_eq!(second_page, [ids[0]]);
        let zero_is_one = list(RewardFilter {
            limit: 0,
            ..RewardFilter::default()
        })
        .await;
        assert_eq!(zero_is_one, [ids[4]], "the limit is clamped to at least 1");
    })
    .await;
}
