//! Inserting and reading groups and responses.

use flywheel_store::{Error, GroupKind, Store};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{group, on_each_backend};

#[tokio::test]
async fn an_inserted_group_reads_back_with_every_field() {
    on_each_backend(|store| async move {
        // Arrange
        let mut new = group();
        new.kind = GroupKind::Variants;
        new.seed = None;
        new.responses[1].prompt = Some(json!([{"role": "user", "content": "Say a prime number."}]));

        // Act
        store.insert_group(&new).await.unwrap();
        let stored = store.get_group(new.id).await.unwrap();

        // Assert
        let g = &stored.group;
        assert_eq!(g.id, new.id);
        assert_eq!(g.kind, GroupKind::Variants);
        assert_eq!(g.endpoint, new.endpoint);
        assert_eq!(g.model, new.model);
        assert_eq!(g.adapter_version, new.adapter_version);
        assert_eq!(g.prompt, new.prompt);
        assert_eq!(g.params, new.params);
        assert_eq!(g.seed, None);
        assert_eq!(g.user, new.user);
        assert_eq!(g.prompt_tokens, new.prompt_tokens);
        assert_eq!(
            g.completion_tokens, 6,
            "the sum of the responses' completion tokens"
        );
        assert_eq!(g.latency_ms, new.latency_ms);
        assert_eq!(g.created_at, new.created_at);
        assert_eq!(g.response_count, 2);
        assert_eq!(stored.responses.len(), 2);
        for (got, sent) in stored.responses.iter().zip(&new.responses) {
            assert_eq!(got.id, sent.id);
            assert_eq!(got.group_id, new.id);
            assert_eq!(got.index, sent.index);
            assert_eq!(got.prompt, sent.prompt);
            assert_eq!(got.text, sent.text);
            assert_eq!(got.token_ids, sent.token_ids);
            assert_eq!(
                got.logprobs, sent.logprobs,
                "f32 values survive bit for bit"
            );
            assert_eq!(got.finish_reason, sent.finish_reason);
            assert_eq!(got.completion_tokens, sent.completion_tokens);
            assert_eq!(got.adapter_version, new.adapter_version);
            assert_eq!(got.latency_ms, sent.latency_ms);
            assert_eq!(got.created_at, new.created_at);
        }
    })
    .await;
}

#[tokio::test]
async fn responses_come_back_in_choice_index_order_whatever_the_insert_order() {
    on_each_backend(|store| async move {
        let mut new = crate::helpers::group_at(crate::helpers::now(), 3);
        new.responses.reverse();
        store.insert_group(&new).await.unwrap();

        let stored = store.get_group(new.id).await.unwrap();

        let indexes: Vec<i32> = stored.responses.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![0, 1, 2]);
    })
    .await;
}

#[tokio::test]
async fn a_response_can_be_read_on_its_own() {
    on_each_backend(|store| async move {
        let new = group();
        store.insert_group(&new).await.unwrap();
        let sent = &new.responses[1];

        let got = store.get_response(sent.id).await.unwrap();

        assert_eq!(got.id, sent.id);
        assert_eq!(got.group_id, new.id);
        assert_eq!(got.index, 1);
        assert_eq!(got.text, sent.text);
        assert_eq!(got.token_ids, sent.token_ids);
        assert_eq!(got.logprobs, sent.logprobs);
    })
    .await;
}

#[tokio::test]
async fn missing_ids_are_not_found() {
    on_each_backend(|store| async move {
        let group = store.get_group(Uuid::now_v7()).await;
        let response = store.get_response(Uuid::now_v7()).await;

        assert!(matches!(group, Err(Error::NotFound("group"))), "{group:?}");
        assert!(
            matches!(response, Err(Error::NotFound("response"))),
            "{response:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_group_id_is_a_conflict_and_leaves_the_original_intact() {
    on_each_backend(|store| async move {
        // Arrange
        let original = group();
        store.insert_group(&original).await.unwrap();
        let mut duplicate = group();
        duplicate.id = original.id;
        duplicate.model = "another-model".into();

        // Act
        let outcome = store.insert_group(&duplicate).await;

        // Assert
        assert!(matches!(outcome, Err(Error::Conflict(_))), "{outcome:?}");
        let stored = store.get_group(original.id).await.unwrap();
        assert_eq!(stored.group.model, original.model);
        let ids: Vec<Uuid> = stored.responses.iter().map(|r| r.id).collect();
        let original_ids: Vec<Uuid> = original.responses.iter().map(|r| r.id).collect();
        assert_eq!(ids, original_ids);
        let stray = store.get_response(duplicate.responses[0].id).await;
        assert!(
            matches!(stray, Err(Error::NotFound("response"))),
            "{stray:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_group_whose_second_response_fails_leaves_nothing_stored() {
    on_each_backend(|store| async move {
        // Arrange: the second response repeats the first one's choice index.
        let mut new = group();
        new.responses[1].index = new.responses[0].index;

        // Act
        let outcome = store.insert_group(&new).await;

        // Assert
        assert!(matches!(outcome, Err(Error::Conflict(_))), "{outcome:?}");
        assert_nothing_stored(&store, &new).await;
    })
    .await;
}

#[tokio::test]
async fn a_response_id_taken_by_another_group_leaves_the_new_group_unstored() {
    on_each_backend(|store| async move {
        let first = group();
        store.insert_group(&first).await.unwrap();
        let mut second = group();
        second.responses[1].id = first.responses[0].id;

        let outcome = store.insert_group(&second).await;

        assert!(matches!(outcome, Err(Error::Conflict(_))), "{outcome:?}");
        assert_nothing_stored(&store, &second).await;
        assert_eq!(store.get_group(first.id).await.unwrap().responses.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_non_finite_logprob_is_refused_before_anything_is_written() {
    on_each_backend(|store| async move {
        let mut new = group();
        new.responses[1].logprobs[0] = f32::NEG_INFINITY;

        let outcome = store.insert_group(&new).await;

        assert!(matches!(outcome, Err(Error::Invalid(_))), "{outcome:?}");
        assert_nothing_stored(&store, &new).await;
    })
    .await;
}

async fn assert_nothing_stored(store: &Store, new: &flywheel_store::NewGroup) {
    let group = store.get_group(new.id).await;
    assert!(matches!(group, Err(Error::NotFound("group"))), "{group:?}");
    let response = store.get_response(new.responses[0].id).await;
    assert!(
        matches!(response, Err(Error::NotFound("response"))),
        "{response:?}"
    );
}
