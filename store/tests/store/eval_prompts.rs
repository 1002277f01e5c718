//! Evaluation prompts: stored all-or-nothing, each prompt once whatever its label, listed newest
//! first, and refused with the field named when they can never be stored.

use flywheel_store::{Error, NewEvalPrompt, StoredMessage, MAX_EVAL_PROMPT_BATCH};
use uuid::Uuid;

use crate::helpers::on_each_backend;

fn message(role: &str, content: &str) -> StoredMessage {
    StoredMessage {
        role: role.into(),
        content: content.into(),
    }
}

/// A system message and one user question.
fn eval_prompt(question: &str) -> NewEvalPrompt {
    NewEvalPrompt {
        messages: vec![message("system", "Be brief."), message("user", question)],
        label: Some("math".into()),
        source: Some("api".into()),
    }
}

/// The message of an [`Error::Invalid`], or a panic naming what came instead.
fn invalid_message<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn stored_eval_prompts_read_back_with_every_field() {
    on_each_backend(|store| async move {
        // Arrange
        let new = eval_prompt("Name a prime.");

        // Act
        let stored = store
            .insert_eval_prompts(std::slice::from_ref(&new))
            .await
            .unwrap();
        let (prompt, created) = stored[0].clone();
        let read = store.get_eval_prompt(prompt.id).await.unwrap();

        // Assert
        assert!(created);
        assert_eq!(read, prompt);
        assert_eq!(prompt.messages, new.messages);
        assert_eq!(prompt.label.as_deref(), Some("math"));
        assert_eq!(prompt.source.as_deref(), Some("api"));
        assert_eq!(prompt.content_hash, new.content_hash());
        assert_eq!(store.count_eval_prompts().await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_same_messages_are_stored_once_whatever_their_label() {
    on_each_backend(|store| async move {
        // Arrange
        let (first, _) = store
            .insert_eval_prompts(&[eval_prompt("Name a prime.")])
            .await
            .unwrap()
            .remove(0);
        let mut relabelled = eval_prompt("Name a prime.");
        relabelled.label = Some("other".into());
        relabelled.source = Some("prompts.jsonl".into());

        // Act: again in a later call, and twice within one batch.
        let again = store
            .insert_eval_prompts(&[relabelled, eval_prompt("Name a colour.")])
            .await
            .unwrap();
        let twice = store
            .insert_eval_prompts(&[eval_prompt("Name a tree."), eval_prompt("Name a tree.")])
            .await
            .unwrap();

        // Assert: the stored prompt keeps its own id, label and source.
        assert_eq!(again[0], (first.clone(), false));
        assert!(again[1].1);
        assert!(twice[0].1 && !twice[1].1);
        assert_eq!(twice[0].0, twice[1].0);
        assert_eq!(store.count_eval_prompts().await.unwrap(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_batch_with_one_bad_prompt_stores_nothing_and_names_the_field_and_position() {
    on_each_backend(|store| async move {
        // Arrange
        let mut assistant_last = eval_prompt("Name a prime.");
        assistant_last.messages.push(message("assistant", "7"));
        let mut nul = eval_prompt("Name a prime.");
        nul.messages[1].content = "a\u{0}b".into();
        let mut nul_label = eval_prompt("Name a prime.");
        nul_label.label = Some("m\u{0}".into());
        let mut blank_label = eval_prompt("Name a prime.");
        blank_label.label = Some("  ".into());
        let empty = NewEvalPrompt {
            messages: vec![],
            label: None,
            source: None,
        };
        let cases = [
            (assistant_last, "`messages`"),
            (nul, "`messages`"),
            (nul_label, "`label`"),
            (blank_label, "`label`"),
            (empty, "`messages`"),
        ];

        for (bad, field) in cases {
            // Act
            let batch = [eval_prompt("Fine."), bad];
            let message = invalid_message(store.insert_eval_prompts(&batch).await);

            // Assert
            assert!(message.starts_with(field), "{message}");
            assert!(
                message.ends_with("(eval prompt 2 of 2 in the batch)"),
                "{message}"
            );
        }
        assert_eq!(store.count_eval_prompts().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_empty_or_too_large_batch_is_invalid() {
    on_each_backend(|store| async move {
        let too_many: Vec<NewEvalPrompt> = (0..=MAX_EVAL_PROMPT_BATCH)
            .map(|i| eval_prompt(&format!("question {i}")))
            .collect();
        for batch in [&[][..], &too_many[..]] {
            let message = invalid_message(store.insert_eval_prompts(batch).await);
            assert!(message.contains("at most 1000"), "{message}");
        }
        assert_eq!(store.count_eval_prompts().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn eval_prompts_are_listed_newest_first_in_keyset_pages() {
    on_each_backend(|store| async move {
        // Arrange: five prompts, stored in order.
        let mut ids = Vec::new();
        for i in 0..5 {
            let stored = store
                .insert_eval_prompts(&[eval_prompt(&format!("question {i}"))])
                .await
                .unwrap();
            ids.push(stored[0].0.id);
        }
        ids.reverse();

        // Act
        let first = store.list_eval_prompts(2, None).await.unwrap();
        let second = store.list_eval_prompts(2, Some(first[1].id)).await.unwrap();
        let last = store
            .list_eval_prompts(2, Some(second[1].id))
            .await
            .unwrap();
        let clamped = store.list_eval_prompts(0, None).await.unwrap();

        // Assert
        let page_ids = |page: &[flywheel_store::EvalPrompt]| -> Vec<Uuid> {
            page.iter().map(|p| p.id).collect()
        };
        assert_eq!(page_ids(&first), ids[0..2]);
        assert_eq!(page_ids(&second), ids[2..4]);
        assert_eq!(page_ids(&last), ids[4..5]);
        assert_eq!(page_ids(&clamped), ids[0..1]);
        assert_eq!(store.count_eval_prompts().await.unwrap(), 5);
    })
    .await;
}

#[tokio::test]
async fn an_unknown_eval_prompt_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.get_eval_prompt(Uuid::now_v7()).await;
        assert!(
            matches!(outcome, Err(Error::NotFound("eval prompt"))),
            "{outcome:?}"
        );
    })
    .await;
}
