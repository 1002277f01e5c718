//! The arena's storage: candidates, promotions and retirements with their recorded decisions,
//! duels and the judgments the gate reads, what duels are kept out of, and migration 0006 on a
//! SQLite database that already holds data.

use std::time::Duration;

use flywheel_store::{
    AdapterStatus, DecidedBy, DecisionAction, DuelProgress, Error, EvalPrompt, Evidence, GroupKind,
    NewAdapter, NewDecision, NewDuel, NewEvalPrompt, NewGroup, NewTrainRun, Outcome, Store,
    StoredMessage, TrainingDataFilter, VersionJudgment,
};
use serde_json::json;
use sqlx::{Connection, SqliteConnection};
use uuid::Uuid;

use crate::helpers::{
    as_stored, group, group_at, insert_group_before_0007, migrate_sqlite_before, now,
    on_each_backend, raw_sqlite_connection,
};
use crate::judgments::judgment;

const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Builders

/// An adapter with files, on top of the base model, in `status`.
fn new_adapter(status: AdapterStatus) -> NewAdapter {
    NewAdapter {
        parent_version: 0,
        algorithm: "dpo".into(),
        train_run_id: None,
        path: Some("adapters/x".into()),
        sha256: Some("ab".repeat(32)),
        status,
        note: None,
        name: None,
    }
}

/// Registers an adapter in `status` and returns its version.
async fn stored_adapter(store: &Store, status: AdapterStatus) -> i64 {
    store
        .insert_adapter(&new_adapter(status))
        .await
        .unwrap()
        .version
}

/// Registers a candidate and returns its version.
async fn candidate(store: &Store) -> i64 {
    stored_adapter(store, AdapterStatus::Candidate).await
}

fn evidence() -> Evidence {
    Evidence {
        judgments: 40,
        wins: 27.5,
        both_bad: 3,
        probability: Some(0.6875),
        lower: Some(0.55),
        upper: Some(0.8125),
        confidence: Some(0.95),
    }
}

/// The gate's decision to take `action`.
fn decision(action: DecisionAction) -> NewDecision {
    let rule = match action {
        DecisionAction::Promote => "lower_bound_above_half",
        DecisionAction::Retire => "upper_bound_below_half",
    };
    NewDecision {
        action,
        decided_by: DecidedBy::Gate,
        rule: rule.into(),
        evidence: evidence(),
        reason: None,
    }
}

fn promote() -> NewDecision {
    decision(DecisionAction::Promote)
}

fn retire() -> NewDecision {
    decision(DecisionAction::Retire)
}

/// The message of an [`Error::Conflict`], or a panic naming what came instead.
fn conflict_message<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::Conflict(message)) => message,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn assert_invalid<T: std::fmt::Debug>(outcome: Result<T, Error>) {
    assert!(matches!(outcome, Err(Error::Invalid(_))), "{outcome:?}");
}

fn assert_adapter_not_found<T: std::fmt::Debug>(outcome: Result<T, Error>) {
    assert!(
        matches!(outcome, Err(Error::NotFound("adapter"))),
        "{outcome:?}"
    );
}

async fn status_of(store: &Store, version: i64) -> AdapterStatus {
    store.get_adapter(version).await.unwrap().status
}

/// Stores `n` distinct evaluation prompts, one at a time so their ids are in that order.
async fn stored_eval_prompts(store: &Store, n: usize) -> Vec<EvalPrompt> {
    let mut prompts = Vec::new();
    for i in 0..n {
        let new = NewEvalPrompt {
            messages: vec![StoredMessage {
                role: "user".into(),
                content: format!("Evaluation question {i}?"),
            }],
            label: None,
            source: Some("api".into()),
        };
        let stored = store.insert_eval_prompts(&[new]).await.unwrap();
        prompts.push(stored[0].0.clone());
    }
    prompts
}

/// A duel of `candidate` against `incumbent` on `eval_prompt_id` in `round`, not yet stored: the
/// candidate's response first, each response naming the version that wrote it.
fn duel(candidate: i64, incumbent: i64, eval_prompt_id: Uuid, round: i32) -> NewDuel {
    let mut group = group_at(now(), 2);
    group.kind = GroupKind::Duel;
    group.adapter_version = candidate;
    group.responses[0].adapter_version = Some(candidate);
    group.responses[1].adapter_version = Some(incumbent);
    NewDuel {
        group,
        candidate_version: candidate,
        incumbent_version: incumbent,
        eval_prompt_id,
        round,
    }
}

/// Stores a duel (which must be new) and returns it.
async fn stored_duel(
    store: &Store,
    candidate: i64,
    incumbent: i64,
    eval_prompt_id: Uuid,
    round: i32,
) -> NewDuel {
    let d = duel(candidate, incumbent, eval_prompt_id, round);
    assert!(store.insert_duel(&d).await.unwrap(), "the duel is new");
    d
}

/// Opens about `n` connections in the store's pool, so that the concurrent calls that follow run
/// side by side on Postgres, instead of the first finishing while the next is still connecting.
async fn warm_pool(store: &Store, n: usize) {
    let pings: Vec<_> = (0..n)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ping().await })
        })
        .collect();
    for ping in pings {
        ping.await.unwrap().unwrap();
    }
}

/// Stores a `samples` group of two responses on `version`.
async fn stored_samples(store: &Store, version: i64) -> NewGroup {
    let mut g = group();
    g.adapter_version = version;
    store.insert_group(&g).await.unwrap();
    g
}

// ---------------------------------------------------------------------------------------------
// Promotion

#[tokio::test]
async fn promoting_a_candidate_over_the_expected_active_version_retires_it_and_records_the_decision(
) {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let mut gate = promote();
        gate.reason = Some("won 27.5 of 40".into());

        // Act
        let promoted = store.promote_adapter(c, 0, &gate).await.unwrap();

        // Assert
        assert_eq!(promoted.version, c);
        assert_eq!(promoted.status, AdapterStatus::Active);
        assert!(promoted.activated_at.is_some());
        assert_eq!(store.active_adapter_version().await.unwrap(), c);
        assert_eq!(status_of(&store, 0).await, AdapterStatus::Retired);
        let decisions = store.adapter_decisions(c).await.unwrap();
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        let d = &decisions[0];
        assert_eq!(d.version, c);
        assert_eq!(d.incumbent_version, 0);
        assert_eq!(d.action, DecisionAction::Promote);
        assert_eq!(d.decided_by, DecidedBy::Gate);
        assert_eq!(d.rule, "lower_bound_above_half");
        assert_eq!(d.evidence, evidence());
        assert_eq!(d.reason.as_deref(), Some("won 27.5 of 40"));
        assert!(store.adapter_decisions(0).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_promotion_expecting_a_version_that_is_no_longer_active_is_a_conflict_and_writes_nothing()
{
    on_each_backend(|store| async move {
        // Arrange: the gate looked while 0 was active, then another candidate got there first.
        let first = candidate(&store).await;
        let late = candidate(&store).await;
        store.promote_adapter(first, 0, &promote()).await.unwrap();

        // Act
        let outcome = store.promote_adapter(late, 0, &promote()).await;

        // Assert
        let message = conflict_message(outcome);
        assert!(
            message.contains(&format!("the active version is {first}")),
            "{message}"
        );
        assert_eq!(store.active_adapter_version().await.unwrap(), first);
        assert_eq!(status_of(&store, late).await, AdapterStatus::Candidate);
        assert!(store.adapter_decisions(late).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn promoting_the_active_version_is_a_conflict() {
    on_each_backend(|store| async move {
        let outcome = store.promote_adapter(0, 0, &promote()).await;

        let message = conflict_message(outcome);
        assert!(message.contains("active already"), "{message}");
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
        assert!(store.adapter_decisions(0).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_training_or_failed_adapter_cannot_be_promoted() {
    on_each_backend(|store| async move {
        // Arrange
        let training = stored_adapter(&store, AdapterStatus::Training).await;
        let failed = candidate(&store).await;
        store.fail_adapter(failed, "cannot load").await.unwrap();

        // Act
        let promoted_training = store.promote_adapter(training, 0, &promote()).await;
        let promoted_failed = store.promote_adapter(failed, 0, &promote()).await;

        // Assert
        assert_invalid(promoted_training);
        assert_invalid(promoted_failed);
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
        assert_eq!(status_of(&store, training).await, AdapterStatus::Training);
        assert_eq!(status_of(&store, failed).await, AdapterStatus::Failed);
        assert!(store.adapter_decisions(training).await.unwrap().is_empty());
        assert!(store.adapter_decisions(failed).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn promoting_an_unknown_version_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.promote_adapter(42, 0, &promote()).await;

        assert_adapter_not_found(outcome);
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_retired_version_can_be_promoted_back_over_its_successor() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        store.promote_adapter(c, 0, &promote()).await.unwrap();

        // Act
        let back = store.promote_adapter(0, c, &promote()).await.unwrap();

        // Assert
        assert_eq!(back.status, AdapterStatus::Active);
        assert_eq!(status_of(&store, c).await, AdapterStatus::Retired);
        let decisions = store.adapter_decisions(0).await.unwrap();
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].incumbent_version, c);
    })
    .await;
}

#[tokio::test]
async fn of_two_concurrent_promotions_over_one_active_version_exactly_one_wins() {
    on_each_backend(|store| async move {
        // Several rounds, each racing two fresh candidates over the version the last one crowned.
        warm_pool(&store, 4).await;
        let mut active = 0;
        for _ in 0..5 {
            // Arrange
            let one = candidate(&store).await;
            let two = candidate(&store).await;

            // Act
            let gate = promote();
            let (first, second) = tokio::join!(
                store.promote_adapter(one, active, &gate),
                store.promote_adapter(two, active, &gate),
            );

            // Assert
            let (winner, loser, lost) = match (first, second) {
                (Ok(won), Err(lost)) => (won.version, two, lost),
                (Err(lost), Ok(won)) => (won.version, one, lost),
                other => panic!("expected exactly one winner, got {other:?}"),
            };
            assert!(matches!(lost, Error::Conflict(_)), "{lost:?}");
            assert_eq!(store.active_adapter_version().await.unwrap(), winner);
            assert_eq!(status_of(&store, active).await, AdapterStatus::Retired);
            assert_eq!(status_of(&store, loser).await, AdapterStatus::Candidate);
            assert!(store.adapter_decisions(loser).await.unwrap().is_empty());
            let decisions = store.adapter_decisions(winner).await.unwrap();
            assert_eq!(decisions.len(), 1);
            assert_eq!(decisions[0].incumbent_version, active);
            active = winner;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Retirement

#[tokio::test]
async fn retiring_a_candidate_records_the_decision_and_leaves_the_active_version_alone() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;

        // Act
        let retired = store.retire_candidate(c, 0, &retire()).await.unwrap();

        // Assert
        assert_eq!(retired.status, AdapterStatus::Retired);
        assert_eq!(retired.activated_at, None);
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
        assert_eq!(status_of(&store, 0).await, AdapterStatus::Active);
        let decisions = store.adapter_decisions(c).await.unwrap();
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        let d = &decisions[0];
        assert_eq!((d.version, d.incumbent_version), (c, 0));
        assert_eq!(d.action, DecisionAction::Retire);
        assert_eq!(d.decided_by, DecidedBy::Gate);
        assert_eq!(d.rule, "upper_bound_below_half");
        assert_eq!(d.evidence, evidence());
        assert_eq!(d.reason, None);
    })
    .await;
}

#[tokio::test]
async fn only_a_candidate_can_be_retired() {
    on_each_backend(|store| async move {
        // Arrange
        let ready = stored_adapter(&store, AdapterStatus::Ready).await;
        let training = stored_adapter(&store, AdapterStatus::Training).await;
        let retired = candidate(&store).await;
        store.retire_candidate(retired, 0, &retire()).await.unwrap();

        // Act + Assert
        for version in [ready, training, retired, 0] {
            let before = status_of(&store, version).await;
            let outcome = store.retire_candidate(version, 0, &retire()).await;
            assert_invalid(outcome);
            assert_eq!(status_of(&store, version).await, before);
        }
        assert!(store.adapter_decisions(ready).await.unwrap().is_empty());
        assert!(store.adapter_decisions(0).await.unwrap().is_empty());
        assert_eq!(store.adapter_decisions(retired).await.unwrap().len(), 1);
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn retiring_when_the_expected_active_version_moved_is_a_conflict_and_writes_nothing() {
    on_each_backend(|store| async move {
        // Arrange: the gate judged `c` against 0, but `other` was promoted meanwhile.
        let c = candidate(&store).await;
        let other = candidate(&store).await;
        store.promote_adapter(other, 0, &promote()).await.unwrap();

        // Act
        let outcome = store.retire_candidate(c, 0, &retire()).await;

        // Assert
        let message = conflict_message(outcome);
        assert!(
            message.contains(&format!("the active version is {other}")),
            "{message}"
        );
        assert_eq!(status_of(&store, c).await, AdapterStatus::Candidate);
        assert!(store.adapter_decisions(c).await.unwrap().is_empty());
        assert_eq!(store.active_adapter_version().await.unwrap(), other);
    })
    .await;
}

#[tokio::test]
async fn retiring_an_unknown_version_is_not_found() {
    on_each_backend(|store| async move {
        let outcome = store.retire_candidate(42, 0, &retire()).await;

        assert_adapter_not_found(outcome);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Unconditional switches

#[tokio::test]
async fn switching_the_active_version_with_a_decision_records_it() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let admin = NewDecision {
            action: DecisionAction::Promote,
            decided_by: DecidedBy::Admin,
            rule: "manual".into(),
            evidence: Evidence::default(),
            reason: Some("hotfix".into()),
        };

        // Act
        let switched = store.switch_active(c, Some(&admin)).await.unwrap();

        // Assert
        assert_eq!(switched.status, AdapterStatus::Active);
        assert_eq!(status_of(&store, 0).await, AdapterStatus::Retired);
        let decisions = store.adapter_decisions(c).await.unwrap();
        assert_eq!(decisions.len(), 1);
        let d = &decisions[0];
        assert_eq!((d.version, d.incumbent_version), (c, 0));
        assert_eq!(d.decided_by, DecidedBy::Admin);
        assert_eq!(d.rule, "manual");
        assert_eq!(d.evidence, Evidence::default());
        assert_eq!(d.reason.as_deref(), Some("hotfix"));
    })
    .await;
}

#[tokio::test]
async fn switching_without_a_decision_records_none() {
    on_each_backend(|store| async move {
        let c = candidate(&store).await;

        store.switch_active(c, None).await.unwrap();

        assert_eq!(store.active_adapter_version().await.unwrap(), c);
        assert!(store.adapter_decisions(c).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn activating_an_adapter_still_switches_whatever_is_active_and_records_no_decision() {
    on_each_backend(|store| async move {
        // Arrange
        let ready = stored_adapter(&store, AdapterStatus::Ready).await;
        let c = candidate(&store).await;

        // Act
        let first = store.activate_adapter(ready).await.unwrap();
        let again = store.activate_adapter(ready).await.unwrap();
        let second = store.activate_adapter(c).await.unwrap();
        let rollback = store.activate_adapter(0).await.unwrap();

        // Assert
        assert_eq!(first.status, AdapterStatus::Active);
        assert_eq!(
            again.status,
            AdapterStatus::Active,
            "re-activating is no error"
        );
        assert_eq!(second.status, AdapterStatus::Active);
        assert_eq!(rollback.status, AdapterStatus::Active);
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
        assert_eq!(status_of(&store, ready).await, AdapterStatus::Retired);
        assert_eq!(status_of(&store, c).await, AdapterStatus::Retired);
        for version in [0, ready, c] {
            assert!(store.adapter_decisions(version).await.unwrap().is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn activating_a_training_failed_or_unknown_adapter_is_refused() {
    on_each_backend(|store| async move {
        // Arrange
        let training = stored_adapter(&store, AdapterStatus::Training).await;
        let failed = candidate(&store).await;
        store.fail_adapter(failed, "cannot load").await.unwrap();

        // Act
        let activated_training = store.activate_adapter(training).await;
        let activated_failed = store.activate_adapter(failed).await;
        let activated_unknown = store.activate_adapter(42).await;

        // Assert
        assert_invalid(activated_training);
        assert_invalid(activated_failed);
        assert_adapter_not_found(activated_unknown);
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_versions_decisions_read_back_oldest_first() {
    on_each_backend(|store| async move {
        // Arrange: the gate retires `c`, then an admin overrules it.
        let c = candidate(&store).await;
        store.retire_candidate(c, 0, &retire()).await.unwrap();
        let mut admin = promote();
        admin.decided_by = DecidedBy::Admin;
        admin.rule = "manual".into();

        // Act
        store.switch_active(c, Some(&admin)).await.unwrap();

        // Assert
        let decisions = store.adapter_decisions(c).await.unwrap();
        let actions: Vec<_> = decisions.iter().map(|d| d.action).collect();
        assert_eq!(actions, [DecisionAction::Retire, DecisionAction::Promote]);
        assert!(decisions[0].created_at <= decisions[1].created_at);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Candidates and names

#[tokio::test]
async fn candidates_are_the_adapters_awaiting_a_decision_newest_first() {
    on_each_backend(|store| async move {
        // Arrange
        let older = candidate(&store).await;
        stored_adapter(&store, AdapterStatus::Ready).await;
        let retired = candidate(&store).await;
        store.retire_candidate(retired, 0, &retire()).await.unwrap();
        let run = store
            .create_train_run(&NewTrainRun {
                algorithm: "dpo".into(),
                config: json!({}),
                base_model: "tiny".into(),
                parent_version: 0,
                data_since: None,
                data_until: now(),
            })
            .await
            .unwrap();
        let trained = store
            .finish_train_run(run.id, "adapters/t", &"cd".repeat(32))
            .await
            .unwrap()
            .version;
        let newest = candidate(&store).await;

        // Act
        let candidates = store.candidates().await.unwrap();

        // Assert
        let versions: Vec<i64> = candidates.iter().map(|a| a.version).collect();
        assert_eq!(versions, [newest, trained, older]);
        assert!(candidates
            .iter()
            .all(|a| a.status == AdapterStatus::Candidate));
    })
    .await;
}

#[tokio::test]
async fn an_adapter_is_found_by_its_name() {
    on_each_backend(|store| async move {
        // Arrange
        let mut named = new_adapter(AdapterStatus::Candidate);
        named.name = Some("support-v2".into());
        let inserted = store.insert_adapter(&named).await.unwrap();

        // Act
        let found = store.adapter_named("support-v2").await.unwrap();
        let missing = store.adapter_named("support-v3").await.unwrap();

        // Assert
        assert_eq!(inserted.name.as_deref(), Some("support-v2"));
        assert_eq!(found, Some(inserted.clone()));
        assert_eq!(store.get_adapter(inserted.version).await.unwrap(), inserted);
        assert_eq!(missing, None);
    })
    .await;
}

#[tokio::test]
async fn registering_a_taken_name_is_a_conflict_that_says_so() {
    on_each_backend(|store| async move {
        // Arrange
        let mut named = new_adapter(AdapterStatus::Candidate);
        named.name = Some("support-v2".into());
        let first = store.insert_adapter(&named).await.unwrap();

        // Act
        let outcome = store.insert_adapter(&named).await;

        // Assert
        let message = conflict_message(outcome);
        assert!(message.contains("\"support-v2\""), "{message}");
        assert!(message.contains("exists already"), "{message}");
        assert!(!message.contains("concurrent registrations"), "{message}");
        let next = candidate(&store).await;
        assert_eq!(next, first.version + 1, "the refused one took no version");
    })
    .await;
}

#[tokio::test]
async fn a_name_is_free_again_once_its_holder_is_retired_but_the_holder_cannot_take_it_back() {
    on_each_backend(|store| async move {
        // Arrange
        let mut named = new_adapter(AdapterStatus::Candidate);
        named.name = Some("support-v2".into());
        let first = store.insert_adapter(&named).await.unwrap().version;
        store.retire_candidate(first, 0, &retire()).await.unwrap();

        // Act
        let second = store.insert_adapter(&named).await.unwrap().version;

        // Assert
        let holder = store.adapter_named("support-v2").await.unwrap().unwrap();
        assert_eq!(holder.version, second, "the live one answers to the name");
        let message = conflict_message(store.switch_active(first, None).await);
        assert!(message.contains("name"), "{message}");
        assert_eq!(store.active_adapter_version().await.unwrap(), 0);
        assert_eq!(status_of(&store, first).await, AdapterStatus::Retired);
    })
    .await;
}

#[tokio::test]
async fn adapters_without_a_name_never_collide() {
    on_each_backend(|store| async move {
        let first = candidate(&store).await;
        let second = candidate(&store).await;

        assert_eq!(second, first + 1);
        assert_eq!(store.get_adapter(second).await.unwrap().name, None);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Duels

#[tokio::test]
async fn a_duel_stores_its_group_and_each_response_with_the_version_that_wrote_it() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let d = duel(c, 0, prompt.id, 0);

        // Act
        let stored = store.insert_duel(&d).await.unwrap();

        // Assert
        assert!(stored);
        let read = store.get_group(d.group.id).await.unwrap();
        assert_eq!(read.group.kind, GroupKind::Duel);
        assert_eq!(read.group.adapter_version, c);
        assert_eq!(read.responses.len(), 2);
        assert_eq!(read.responses[0].id, d.group.responses[0].id);
        assert_eq!(read.responses[0].adapter_version, c, "the candidate's");
        assert_eq!(read.responses[1].adapter_version, 0, "the incumbent's");
        let progress = store.duel_progress(c, 0).await.unwrap();
        assert_eq!(progress.duels, 1);
    })
    .await;
}

#[tokio::test]
async fn a_second_duel_with_the_same_versions_prompt_and_round_stores_nothing() {
    on_each_backend(|store| async move {
        // Arrange: another replica sampled the same duel first.
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let first = stored_duel(&store, c, 0, prompt.id, 0).await;
        let second = duel(c, 0, prompt.id, 0);

        // Act
        let stored = store.insert_duel(&second).await.unwrap();

        // Assert
        assert!(!stored);
        assert!(matches!(
            store.get_group(second.group.id).await,
            Err(Error::NotFound("group"))
        ));
        for r in &second.group.responses {
            assert!(matches!(
                store.get_response(r.id).await,
                Err(Error::NotFound("response"))
            ));
        }
        assert!(store.get_group(first.group.id).await.is_ok());
        assert_eq!(store.duel_progress(c, 0).await.unwrap().duels, 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_inserts_of_one_duel_store_exactly_one() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let duels: Vec<NewDuel> = (0..6).map(|_| duel(c, 0, prompt.id, 0)).collect();
        warm_pool(&store, 6).await;

        // Act
        let mut tasks = Vec::new();
        for d in duels.clone() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.insert_duel(&d).await }));
        }
        let mut stored = Vec::new();
        for task in tasks {
            stored.push(task.await.unwrap().unwrap());
        }

        // Assert
        assert_eq!(stored.iter().filter(|s| **s).count(), 1, "{stored:?}");
        let mut groups = 0;
        for d in &duels {
            if store.get_group(d.group.id).await.is_ok() {
                groups += 1;
            }
        }
        assert_eq!(groups, 1, "only the winner's group is stored");
        assert_eq!(store.duel_progress(c, 0).await.unwrap().duels, 1);
    })
    .await;
}

#[tokio::test]
async fn a_duel_naming_an_unknown_eval_prompt_or_adapter_is_refused() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let unknown_prompt = duel(c, 0, Uuid::now_v7(), 0);
        let unknown_candidate = duel(42, 0, prompt.id, 0);

        // Act
        let with_unknown_prompt = store.insert_duel(&unknown_prompt).await;
        let with_unknown_candidate = store.insert_duel(&unknown_candidate).await;

        // Assert
        assert!(with_unknown_prompt.is_err(), "{with_unknown_prompt:?}");
        assert!(
            with_unknown_candidate.is_err(),
            "{with_unknown_candidate:?}"
        );
        assert!(store.get_group(unknown_prompt.group.id).await.is_err());
        assert!(store.get_group(unknown_candidate.group.id).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn duel_progress_counts_duels_and_unjudged_ones_and_names_the_last_round() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let other = candidate(&store).await;
        let prompts = stored_eval_prompts(&store, 2).await;
        let before = store.duel_progress(c, 0).await.unwrap();
        let judged = stored_duel(&store, c, 0, prompts[0].id, 0).await;
        stored_duel(&store, c, 0, prompts[1].id, 0).await;
        stored_duel(&store, c, 0, prompts[0].id, 1).await;
        stored_duel(&store, other, 0, prompts[0].id, 3).await;
        // Two judgments of one duel still make one judged duel.
        store
            .insert_judgments(&[judgment(&judged.group, 0, 1), judgment(&judged.group, 1, 0)])
            .await
            .unwrap();

        // Act
        let progress = store.duel_progress(c, 0).await.unwrap();
        let reversed = store.duel_progress(0, c).await.unwrap();

        // Assert
        assert_eq!(before, DuelProgress::default());
        assert_eq!(before.last_round, None);
        assert_eq!(
            progress,
            DuelProgress {
                duels: 3,
                unjudged: 2,
                last_round: Some(1),
            }
        );
        assert_eq!(reversed, DuelProgress::default());
    })
    .await;
}

#[tokio::test]
async fn eval_prompts_without_a_duel_leave_out_only_those_dueled_in_that_round() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let other = candidate(&store).await;
        let prompts = stored_eval_prompts(&store, 3).await;
        let ids = |ps: Vec<EvalPrompt>| ps.into_iter().map(|p| p.id).collect::<Vec<_>>();
        let all = ids(prompts.clone());
        stored_duel(&store, c, 0, prompts[1].id, 0).await;

        // Act
        let round_0 = store.eval_prompts_without_duel(c, 0, 0, 10).await.unwrap();
        let round_1 = store.eval_prompts_without_duel(c, 0, 1, 10).await.unwrap();
        let other_candidate = store
            .eval_prompts_without_duel(other, 0, 0, 10)
            .await
            .unwrap();
        let other_incumbent = store
            .eval_prompts_without_duel(c, other, 0, 10)
            .await
            .unwrap();
        let limited = store.eval_prompts_without_duel(c, 0, 0, 1).await.unwrap();

        // Assert
        assert_eq!(ids(round_0), [prompts[0].id, prompts[2].id]);
        assert_eq!(ids(round_1), all);
        assert_eq!(ids(other_candidate), all);
        assert_eq!(ids(other_incumbent), all);
        assert_eq!(limited, [prompts[0].clone()]);
    })
    .await;
}

#[tokio::test]
async fn duel_judgments_give_the_versions_of_the_judged_responses_in_the_judgments_order() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let other = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let d = stored_duel(&store, c, 0, prompt.id, 0).await;
        let elsewhere = stored_duel(&store, other, 0, prompt.id, 0).await;
        let samples = stored_samples(&store, c).await;
        let mut candidate_first = judgment(&d.group, 0, 1);
        candidate_first.strength = Some(0.75);
        let mut incumbent_first = judgment(&d.group, 1, 0);
        incumbent_first.outcome = Outcome::B;
        store
            .insert_judgments(&[
                candidate_first,
                judgment(&elsewhere.group, 0, 1),
                judgment(&samples, 0, 1),
                incumbent_first,
            ])
            .await
            .unwrap();

        // Act
        let judged = store.duel_judgments(c, 0).await.unwrap();

        // Assert
        assert_eq!(
            judged,
            [
                VersionJudgment {
                    a: c,
                    b: 0,
                    outcome: Outcome::A,
                    strength: Some(0.75),
                },
                VersionJudgment {
                    a: 0,
                    b: c,
                    outcome: Outcome::B,
                    strength: None,
                },
            ]
        );
        assert_eq!(judged[1].judged().a, 0);
        assert!(store.duel_judgments(0, c).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn cross_version_judgments_hold_pairs_by_different_versions_and_leave_out_same_version_pairs()
{
    on_each_backend(|store| async move {
        // Arrange: a duel, a canary group whose second response another version wrote, and a
        // group written by one version, all judged.
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let d = stored_duel(&store, c, 0, prompt.id, 0).await;
        let mut canary = group();
        canary.adapter_version = 0;
        canary.responses[1].adapter_version = Some(c);
        store.insert_group(&canary).await.unwrap();
        let same = stored_samples(&store, c).await;
        store
            .insert_judgments(&[
                judgment(&d.group, 1, 0),
                judgment(&same, 0, 1),
                judgment(&canary, 0, 1),
            ])
            .await
            .unwrap();

        // Act
        let judged = store.cross_version_judgments().await.unwrap();

        // Assert
        let pairs: Vec<(i64, i64)> = judged.iter().map(|j| (j.a, j.b)).collect();
        assert_eq!(pairs, [(0, c), (0, c)], "duel then canary, oldest first");
        let canary_read = store.get_group(canary.id).await.unwrap();
        assert_eq!(canary_read.responses[1].adapter_version, c);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// What duels stay out of

#[tokio::test]
async fn training_data_leaves_out_judged_duels() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let d = stored_duel(&store, c, 0, prompt.id, 0).await;
        let samples = stored_samples(&store, c).await;
        store
            .insert_judgments(&[judgment(&d.group, 0, 1), judgment(&samples, 0, 1)])
            .await
            .unwrap();

        // Act
        let every = store
            .training_groups(&TrainingDataFilter::default())
            .await
            .unwrap();
        let candidates_own = store
            .training_groups(&TrainingDataFilter {
                adapter_version: Some(c),
                ..TrainingDataFilter::default()
            })
            .await
            .unwrap();

        // Assert
        let ids: Vec<Uuid> = every.iter().map(|g| g.id).collect();
        assert_eq!(ids, [samples.id]);
        let ids: Vec<Uuid> = candidates_own.iter().map(|g| g.id).collect();
        assert_eq!(ids, [samples.id]);
    })
    .await;
}

#[tokio::test]
async fn counted_judgments_leave_out_judgments_of_duels() {
    on_each_backend(|store| async move {
        // Arrange
        let c = candidate(&store).await;
        let prompt = stored_eval_prompts(&store, 1).await.remove(0);
        let since = now();
        let d = stored_duel(&store, c, 0, prompt.id, 0).await;
        let samples = stored_samples(&store, 0).await;
        store
            .insert_judgments(&[
                judgment(&d.group, 0, 1),
                judgment(&d.group, 1, 0),
                judgment(&samples, 0, 1),
            ])
            .await
            .unwrap();

        // Act + Assert
        assert_eq!(store.count_judgments(None, None).await.unwrap(), 1);
        assert_eq!(store.count_judgments(None, Some(since)).await.unwrap(), 1);
        assert_eq!(store.count_judgments(Some(0), None).await.unwrap(), 1);
        assert_eq!(store.count_judgments(Some(c), None).await.unwrap(), 0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The annotation queue

/// Stores a live candidate's duel, then a newer ordinary group on version 0.
async fn a_duel_then_an_ordinary_group(store: &Store) -> (i64, NewDuel, NewGroup) {
    let c = candidate(store).await;
    let prompt = stored_eval_prompts(store, 1).await.remove(0);
    let d = stored_duel(store, c, 0, prompt.id, 0).await;
    let ordinary = stored_samples(store, 0).await;
    (c, d, ordinary)
}

#[tokio::test]
async fn the_queue_hands_a_live_candidates_duel_before_ordinary_pairs() {
    on_each_backend(|store| async move {
        // Arrange: the ordinary group is newer and of the preferred version, and still waits.
        let (_, d, ordinary) = a_duel_then_an_ordinary_group(&store).await;

        // Act
        let first = store
            .next_pair_for("alice", Some(0), 0.0, HOUR)
            .await
            .unwrap()
            .expect("a pair is free");
        let second = store
            .next_pair_for("alice", Some(0), 0.0, HOUR)
            .await
            .unwrap()
            .expect("a pair is free");

        // Assert
        assert_eq!(first.group_id, d.group.id);
        assert_eq!(second.group_id, ordinary.id);
    })
    .await;
}

#[tokio::test]
async fn the_queue_stops_preferring_a_duel_once_its_candidate_is_retired() {
    on_each_backend(|store| async move {
        // Arrange
        let (c, d, ordinary) = a_duel_then_an_ordinary_group(&store).await;
        store.retire_candidate(c, 0, &retire()).await.unwrap();

        // Act
        let first = store
            .next_pair_for("alice", None, 0.0, HOUR)
            .await
            .unwrap()
            .expect("a pair is free");
        let second = store
            .next_pair_for("alice", None, 0.0, HOUR)
            .await
            .unwrap()
            .expect("a pair is free");

        // Assert: the newest group first, as for any two ordinary groups.
        assert_eq!(first.group_id, ordinary.id);
        assert_eq!(second.group_id, d.group.id);
    })
    .await;
}

#[tokio::test]
async fn the_queue_stops_preferring_a_duel_once_its_candidate_is_promoted() {
    on_each_backend(|store| async move {
        // Arrange
        let (c, _, ordinary) = a_duel_then_an_ordinary_group(&store).await;
        store.promote_adapter(c, 0, &promote()).await.unwrap();

        // Act
        let first = store
            .next_pair_for("alice", None, 0.0, HOUR)
            .await
            .unwrap()
            .expect("a pair is free");

        // Assert
        assert_eq!(first.group_id, ordinary.id);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Migration 0006 on a populated SQLite database

/// A SQLite database migrated to 0005 (before the arena) and holding data in every table 0006
/// rebuilds or that points at them, and the ids to look for afterwards.
struct Before0006 {
    _dir: tempfile::TempDir,
    url: String,
    /// A group (version 1, three responses, judged twice; one judgment answers an assignment).
    judged: NewGroup,
    /// A group on version 0, judged once.
    other: NewGroup,
}

/// The tables whose rows 0006 must keep: the two it rebuilds and every one that refers to them.
const KEPT_TABLES: [&str; 8] = [
    "groups",
    "responses",
    "adapters",
    "judgments",
    "annotation_assignments",
    "train_runs",
    "eval_prompts",
    "api_keys",
];

impl Before0006 {
    async fn create() -> Before0006 {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("flywheel.db").display());

        // 0001–0005 only, from copies of those files.
        assert_eq!(migrate_sqlite_before(&url, dir.path(), "0006").await, 5);
        let mut conn = raw_connection(&url).await;

        // Adapters: 1 (active, by a train run) and 2 (failed, its child), 3 (ready, with a note).
        let run_id = Uuid::now_v7();
        sqlx::raw_sql(
            "UPDATE adapters SET status = 'retired' WHERE version = 0; \
             INSERT INTO adapters (version, parent_version, algorithm, path, sha256, status, \
               activated_at, note) VALUES (1, 0, 'dpo', 'adapters/1', 'aa', 'active', \
               '2025-01-02T03:04:05.123456Z', 'the first'); \
             INSERT INTO adapters (version, parent_version, algorithm, status, error) \
               VALUES (2, 1, 'dpo', 'failed', 'no usable pairs'); \
             INSERT INTO adapters (version, parent_version, algorithm, path, status, note, \
               created_at) VALUES (3, 1, 'external', 'adapters/3', 'ready', 'job 42', \
               '2025-01-03T00:00:00.000000Z');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO train_runs (id, algorithm, config, base_model, parent_version, \
             data_until, status, error, adapter_version, created_at) VALUES ($1, 'dpo', '{}', \
             'tiny', 1, '2025-01-04T00:00:00.000000Z', 'failed', 'no usable pairs', 2, \
             '2025-01-04T00:00:00.000000Z')",
        )
        .bind(run_id)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("UPDATE adapters SET train_run_id = $1 WHERE version = 2")
            .bind(run_id)
            .execute(&mut conn)
            .await
            .unwrap();

        // Groups and responses as the schema before 0007 takes them; judgments and an eval prompt
        // through the store itself (their queries predate 0006), and an answered assignment.
        let mut judged = group_at(now(), 3);
        judged.adapter_version = 1;
        insert_group_before_0007(&mut conn, &judged).await;
        let other = group();
        insert_group_before_0007(&mut conn, &other).await;
        let store = Store::connect(&url).await.unwrap();
        let stored = store
            .insert_judgments(&[
                judgment(&judged, 0, 1),
                judgment(&judged, 2, 1),
                judgment(&other, 1, 0),
            ])
            .await
            .unwrap();
        stored_eval_prompts(&store, 1).await;
        store.close().await;
        let (lo, hi) = {
            let (a, b) = (judged.responses[0].id, judged.responses[1].id);
            (a.min(b), a.max(b))
        };
        sqlx::query(
            "INSERT INTO annotation_assignments (id, group_id, response_a, response_b, \
             annotator, left_is_a, created_at, expires_at, judgment_id) VALUES ($1, $2, $3, $4, \
             'ann-1', 1, '2025-01-05T00:00:00.000000Z', '2025-01-05T01:00:00.000000Z', $5)",
        )
        .bind(Uuid::now_v7())
        .bind(judged.id)
        .bind(lo)
        .bind(hi)
        .bind(stored[0].0.id)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, scopes) VALUES ($1, 'ci', 'h', 'admin')",
        )
        .bind(Uuid::now_v7())
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        Before0006 {
            _dir: dir,
            url,
            judged,
            other,
        }
    }
}

/// A connection of our own to the database at `url`, enforcing foreign keys.
async fn raw_connection(url: &str) -> SqliteConnection {
    raw_sqlite_connection(url).await
}

/// The names of `table`'s columns, in order.
pub(crate) async fn columns(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
        .bind(table)
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Every row of `table` as SQL literals of `columns`, in primary-key order: equal dumps are equal
/// rows, value by value.
pub(crate) async fn dump(
    conn: &mut SqliteConnection,
    table: &str,
    columns: &[String],
) -> Vec<String> {
    let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
    let order = match table {
        "adapters" => "version",
        "api_keys"
        | "groups"
        | "responses"
        | "judgments"
        | "annotation_assignments"
        | "train_runs"
        | "eval_prompts" => "id",
        other => panic!("no order for {other}"),
    };
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY {order}",
        quoted.join(" || ',' || ")
    );
    sqlx::query_scalar(&sql).fetch_all(conn).await.unwrap()
}

/// Each kept table's columns and rows.
async fn dump_all(conn: &mut SqliteConnection) -> Vec<(Vec<String>, Vec<String>)> {
    let mut dumps = Vec::new();
    for table in KEPT_TABLES {
        let columns = columns(conn, table).await;
        let rows = dump(conn, table, &columns).await;
        dumps.push((columns, rows));
    }
    dumps
}

#[tokio::test]
async fn migration_0006_keeps_every_row_and_relation_of_a_populated_sqlite_database() {
    // Arrange
    let db = Before0006::create().await;
    let mut conn = raw_connection(&db.url).await;
    let before = dump_all(&mut conn).await;
    conn.close().await.unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let judgments_before = store.judgments_for_group(db.judged.id).await.unwrap();

    // Act
    store.migrate().await.unwrap();

    // Assert: every row, value by value (the adapters' new `name` aside).
    let mut conn = raw_connection(&db.url).await;
    for (table, (columns, rows)) in KEPT_TABLES.iter().zip(&before) {
        assert!(!rows.is_empty(), "{table} was populated");
        assert_eq!(&dump(&mut conn, table, columns).await, rows, "{table}");
    }
    let violations: Vec<(String,)> =
        sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND name IN \
         ('groups_adapter_version_id', 'groups_created_at', 'adapters_one_active') ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "adapters_one_active",
            "groups_adapter_version_id",
            "groups_created_at"
        ]
    );
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 6 AND success")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied, 1);
    // The store reads the migrated rows as they were written.
    assert_eq!(
        store.get_group(db.judged.id).await.unwrap(),
        as_stored(&db.judged)
    );
    assert_eq!(
        store.judgments_for_group(db.judged.id).await.unwrap(),
        judgments_before
    );
    let first = store.get_adapter(1).await.unwrap();
    assert_eq!(first.status, AdapterStatus::Active);
    assert_eq!(first.note.as_deref(), Some("the first"));
    assert_eq!(first.name, None);
    assert_eq!(store.active_adapter_version().await.unwrap(), 1);
    assert_eq!(
        store.get_adapter(2).await.unwrap().error.as_deref(),
        Some("no usable pairs")
    );
    store
        .migrate()
        .await
        .expect("migrating again changes nothing");
}

#[tokio::test]
async fn after_migration_0006_a_populated_sqlite_database_takes_duels_and_keeps_its_constraints() {
    // Arrange
    let db = Before0006::create().await;
    let store = Store::connect(&db.url).await.unwrap();

    // Act
    store.migrate().await.unwrap();

    // Assert: the arena's rows go in.
    let mut named = new_adapter(AdapterStatus::Candidate);
    named.parent_version = 1;
    named.name = Some("arena-1".into());
    let c = store.insert_adapter(&named).await.unwrap().version;
    let prompt = stored_eval_prompts(&store, 1).await.remove(0);
    let d = duel(c, 1, prompt.id, 0);
    assert!(store.insert_duel(&d).await.unwrap());
    assert_eq!(
        store.get_group(d.group.id).await.unwrap().group.kind,
        GroupKind::Duel
    );
    store.promote_adapter(c, 1, &promote()).await.unwrap();
    assert_eq!(store.adapter_decisions(c).await.unwrap().len(), 1);

    // The store's connections enforce foreign keys, the one that migrated included: a duel on an
    // unknown prompt is refused however many connections the attempts spread over.
    let attempts = (0..10).map(|round| {
        let store = store.clone();
        tokio::spawn(async move { store.insert_duel(&duel(c, 1, Uuid::now_v7(), round)).await })
    });
    for attempt in attempts.collect::<Vec<_>>() {
        let outcome = attempt.await.unwrap();
        assert!(outcome.is_err(), "foreign keys are off: {outcome:?}");
    }

    // The rebuilt tables keep their checks and unique index, and the references into them hold.
    let mut conn = raw_connection(&db.url).await;
    for refused in [
        "UPDATE adapters SET status = 'bogus' WHERE version = 3",
        "UPDATE groups SET kind = 'bogus'",
        "UPDATE adapters SET status = 'active' WHERE version = 3",
        "UPDATE adapters SET name = 'arena-1' WHERE version = 3",
        "DELETE FROM adapters WHERE version = 1",
    ] {
        let outcome = sqlx::query(refused).execute(&mut conn).await;
        assert!(outcome.is_err(), "{refused} was allowed");
    }
    sqlx::query("DELETE FROM groups WHERE id = $1")
        .bind(db.judged.id)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert!(
        store
            .judgments_for_group(db.judged.id)
            .await
            .unwrap()
            .is_empty(),
        "deleting a group cascades to its judgments"
    );
    for r in &db.judged.responses {
        assert!(store.get_response(r.id).await.is_err(), "and its responses");
    }
    assert_eq!(
        store.judgments_for_group(db.other.id).await.unwrap().len(),
        1
    );
}
