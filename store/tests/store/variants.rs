//! Variant groups (a canonical prompt and its paraphrases, each sampled alike): storing, reading
//! and listing them; what each training selection reads, rewards included; and migration 0007 on
//! a SQLite database that already holds data.

use chrono::{DateTime, Duration, Utc};
use flywheel_store::{
    Error, GroupKind, NewGroup, NewVariantGroup, ParaphraseSource, QualityGate, RewardSource,
    Store, TrainingDataFilter, TrainingGroup, TrainingSelect, VariantGroupFilter,
};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

use crate::arena::{columns, dump};
use crate::helpers::{
    as_stored, group, group_at, insert_group_before_0007, migrate_sqlite_before, now,
    on_each_backend, raw_sqlite_connection,
};
use crate::judgments::judgment;
use crate::rewards::reward;

/// A variant group of `variants` variants (the canonical prompt and its paraphrases) with two
/// samples of each, on adapter `version`, created at `created_at`; each response names its variant
/// and the token ids of its own prompt.
fn variant_group_at(created_at: DateTime<Utc>, version: i64, held_out: bool) -> NewVariantGroup {
    let variants = 2;
    let samples_per_variant = 2;
    let mut g = group_at(created_at, (variants * samples_per_variant) as usize);
    g.kind = GroupKind::Variants;
    g.adapter_version = version;
    let canonical = json!([{"role": "user", "content": "Name a prime."}]);
    g.prompt = canonical.clone();
    for r in &mut g.responses {
        let variant = r.index / samples_per_variant;
        r.variant = Some(variant);
        r.prompt =
            Some(json!([{"role": "user", "content": format!("Prime, please ({variant}).")}]));
        r.prompt_token_ids = Some(vec![100 + variant as u32, 4_000_000_000]);
    }
    NewVariantGroup {
        group: g,
        canonical,
        samples_per_variant,
        variants,
        paraphrased_by: ParaphraseSource::Policy,
        held_out,
        family: Some("primes".into()),
    }
}

fn variant_group() -> NewVariantGroup {
    variant_group_at(now(), 0, false)
}

/// Stores a variant group on adapter 0, held out or not.
async fn stored_variant_group(store: &Store, held_out: bool) -> NewVariantGroup {
    let v = variant_group_at(now(), 0, held_out);
    store.insert_variant_group(&v).await.unwrap();
    v
}

async fn assert_nothing_stored(store: &Store, v: &NewVariantGroup) {
    let group = store.get_group(v.group.id).await;
    assert!(matches!(group, Err(Error::NotFound("group"))), "{group:?}");
    let variant = store.get_variant_group(v.group.id).await;
    assert!(
        matches!(variant, Err(Error::NotFound("variant group"))),
        "{variant:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Storing and reading

#[tokio::test]
async fn a_variant_group_reads_back_with_each_responses_variant_and_prompt_token_ids() {
    on_each_backend(|store| async move {
        // Arrange
        let mut new = variant_group();
        new.paraphrased_by = ParaphraseSource::Caller;
        new.family = None;

        // Act
        store.insert_variant_group(&new).await.unwrap();
        let group = store.get_group(new.group.id).await.unwrap();
        let variant = store.get_variant_group(new.group.id).await.unwrap();
        let response = store.get_response(new.group.responses[3].id).await.unwrap();

        // Assert
        assert_eq!(group, as_stored(&new.group));
        let variants: Vec<Option<i32>> = group.responses.iter().map(|r| r.variant).collect();
        assert_eq!(variants, [Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(
            group.responses[2].prompt_token_ids,
            Some(vec![101, 4_000_000_000])
        );
        assert_eq!(variant.group_id, new.group.id);
        assert_eq!(variant.canonical, new.canonical);
        assert_eq!(variant.variants, 2);
        assert_eq!(variant.samples_per_variant, 2);
        assert_eq!(variant.paraphrased_by, ParaphraseSource::Caller);
        assert!(!variant.held_out);
        assert_eq!(variant.family, None);
        assert_eq!(response.variant, Some(1));
        assert_eq!(response.prompt_token_ids, Some(vec![101, 4_000_000_000]));
    })
    .await;
}

#[tokio::test]
async fn a_held_out_variant_group_keeps_its_flag_and_family() {
    on_each_backend(|store| async move {
        let new = stored_variant_group(&store, true).await;

        let variant = store.get_variant_group(new.group.id).await.unwrap();

        assert!(variant.held_out);
        assert_eq!(variant.family.as_deref(), Some("primes"));
        assert_eq!(variant.paraphrased_by, ParaphraseSource::Policy);
    })
    .await;
}

#[tokio::test]
async fn a_group_that_is_not_a_variant_group_is_not_found_as_one() {
    on_each_backend(|store| async move {
        let samples = group();
        store.insert_group(&samples).await.unwrap();

        for id in [samples.id, Uuid::now_v7()] {
            let outcome = store.get_variant_group(id).await;

            assert!(
                matches!(outcome, Err(Error::NotFound("variant group"))),
                "{outcome:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_sample_response_reads_back_without_a_variant_or_prompt_token_ids() {
    on_each_backend(|store| async move {
        let samples = group();
        store.insert_group(&samples).await.unwrap();

        let stored = store.get_group(samples.id).await.unwrap();

        assert!(stored
            .responses
            .iter()
            .all(|r| r.variant.is_none() && r.prompt_token_ids.is_none()));
        let json = serde_json::to_value(&stored.responses[0]).unwrap();
        assert_eq!(json["variant"], serde_json::Value::Null);
        assert!(
            json.get("prompt_token_ids").is_none(),
            "left out when absent: {json}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_variant_group_that_breaks_a_rule_is_invalid_and_stores_nothing() {
    on_each_backend(|store| async move {
        type Spoil = fn(&mut NewVariantGroup);
        let cases: [(&str, Spoil); 8] = [
            ("kind", |v| v.group.kind = GroupKind::Samples),
            ("variants", |v| v.variants = 0),
            ("samples_per_variant", |v| v.samples_per_variant = 0),
            ("variant", |v| v.group.responses[3].variant = Some(2)),
            ("variant", |v| v.group.responses[0].variant = None),
            ("prompt_token_ids", |v| {
                v.group.responses[1].prompt_token_ids = None
            }),
            ("prompt_token_ids", |v| {
                v.group.responses[1].prompt_token_ids = Some(Vec::new())
            }),
            ("family", |v| v.family = Some(String::new())),
        ];
        for (field, spoil) in cases {
            let mut v = variant_group();
            spoil(&mut v);

            let outcome = store.insert_variant_group(&v).await;

            let Err(Error::Invalid(message)) = outcome else {
                panic!("{field}: expected Invalid, got {outcome:?}");
            };
            assert!(message.starts_with(&format!("`{field}`")), "{message}");
            assert_nothing_stored(&store, &v).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_variant_group_whose_group_fails_stores_no_variant_row() {
    on_each_backend(|store| async move {
        // Arrange: the last response repeats the first one's choice index.
        let mut v = variant_group();
        v.group.responses[3].index = 0;

        // Act
        let outcome = store.insert_variant_group(&v).await;

        // Assert
        assert!(matches!(outcome, Err(Error::Conflict(_))), "{outcome:?}");
        assert_nothing_stored(&store, &v).await;
    })
    .await;
}

#[tokio::test]
async fn variant_groups_are_listed_oldest_first_filtered_by_held_out_version_and_time() {
    on_each_backend(|store| async move {
        // Arrange: a samples group in between, which no variant list returns.
        let t = now();
        let a = variant_group_at(t - Duration::minutes(3), 0, false);
        let b = variant_group_at(t - Duration::minutes(2), 0, true);
        let samples = group_at(t - Duration::minutes(2), 2);
        let c = variant_group_at(t - Duration::minutes(1), 1, false);
        store.insert_variant_group(&a).await.unwrap();
        store.insert_variant_group(&b).await.unwrap();
        store.insert_group(&samples).await.unwrap();
        store.insert_variant_group(&c).await.unwrap();
        let list = |f: VariantGroupFilter| {
            let store = store.clone();
            async move {
                let listed = store.variant_groups(&f).await.unwrap();
                for (variant, group) in &listed {
                    assert_eq!(variant.group_id, group.group.id);
                }
                listed
                    .into_iter()
                    .map(|(_, g)| g.group.id)
                    .collect::<Vec<Uuid>>()
            }
        };
        let ids = |groups: &[&NewVariantGroup]| -> Vec<Uuid> {
            groups.iter().map(|v| v.group.id).collect()
        };

        // Act
        let every = store
            .variant_groups(&VariantGroupFilter::default())
            .await
            .unwrap();

        // Assert
        assert_eq!(every.len(), 3);
        for ((variant, group), sent) in every.iter().zip([&a, &b, &c]) {
            assert_eq!(group, &as_stored(&sent.group), "responses in index order");
            assert_eq!(variant.held_out, sent.held_out);
            assert_eq!(variant.canonical, sent.canonical);
        }
        let held_out = VariantGroupFilter {
            held_out: Some(true),
            ..VariantGroupFilter::default()
        };
        assert_eq!(list(held_out).await, ids(&[&b]));
        let trainable = VariantGroupFilter {
            held_out: Some(false),
            ..VariantGroupFilter::default()
        };
        assert_eq!(list(trainable).await, ids(&[&a, &c]));
        let of_version = VariantGroupFilter {
            adapter_version: Some(1),
            ..VariantGroupFilter::default()
        };
        assert_eq!(list(of_version).await, ids(&[&c]));
        let window = VariantGroupFilter {
            since: Some(t - Duration::minutes(2)),
            until: Some(t - Duration::minutes(1)),
            ..VariantGroupFilter::default()
        };
        assert_eq!(list(window).await, ids(&[&b]));
        let oldest_two = VariantGroupFilter {
            limit: 2,
            ..VariantGroupFilter::default()
        };
        assert_eq!(list(oldest_two).await, ids(&[&a, &b]));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// What training reads

/// The groups of every kind a selection must tell apart, each stored in this order.
struct Window {
    /// Samples, judged and rewarded.
    judged: NewGroup,
    /// Samples, rewarded only.
    rewarded: NewGroup,
    /// A variant group with a reward, not judged.
    variants: NewVariantGroup,
    /// A variant group with neither.
    bare_variants: NewVariantGroup,
    /// A held-out variant group, judged and rewarded: never trained on.
    held_out: NewVariantGroup,
    /// A duel, judged and rewarded: never trained on.
    duel: NewGroup,
}

impl Window {
    async fn store(store: &Store) -> Window {
        let judged = group_at(now(), 3);
        store.insert_group(&judged).await.unwrap();
        let rewarded = group_at(now(), 2);
        store.insert_group(&rewarded).await.unwrap();
        let variants = stored_variant_group(store, false).await;
        let bare_variants = stored_variant_group(store, false).await;
        let held_out = stored_variant_group(store, true).await;
        let mut duel = group();
        duel.kind = GroupKind::Duel;
        store.insert_group(&duel).await.unwrap();
        store
            .insert_judgments(&[
                judgment(&judged, 0, 1),
                judgment(&held_out.group, 0, 2),
                judgment(&duel, 0, 1),
            ])
            .await
            .unwrap();
        store
            .insert_rewards(&[
                reward(judged.responses[2].id),
                reward(rewarded.responses[1].id),
                reward(rewarded.responses[0].id),
                reward(variants.group.responses[3].id),
                reward(held_out.group.responses[0].id),
                reward(duel.responses[0].id),
            ])
            .await
            .unwrap();
        Window {
            judged,
            rewarded,
            variants,
            bare_variants,
            held_out,
            duel,
        }
    }
}

/// The groups `select` reads, after checking that `count_training_groups` agrees.
async fn selected(store: &Store, select: TrainingSelect) -> Vec<TrainingGroup> {
    let filter = TrainingDataFilter {
        select,
        ..TrainingDataFilter::default()
    };
    let groups = store.training_groups(&filter).await.unwrap();
    let counted = store.count_training_groups(&filter).await.unwrap();
    assert_eq!(counted, groups.len() as i64, "{select:?}");
    groups
}

fn ids_of(groups: &[TrainingGroup]) -> Vec<Uuid> {
    groups.iter().map(|g| g.id).collect()
}

#[tokio::test]
async fn the_judged_selection_reads_judged_groups_with_their_rewards_but_no_held_out_group_or_duel()
{
    on_each_backend(|store| async move {
        // Arrange
        let w = Window::store(&store).await;

        // Act
        let groups = selected(&store, TrainingSelect::Judged).await;

        // Assert
        assert_eq!(ids_of(&groups), [w.judged.id]);
        let g = &groups[0];
        assert_eq!(g.kind, GroupKind::Samples);
        assert_eq!(g.judgments.len(), 1);
        assert_eq!(
            g.rewards,
            store.rewards_for_group(w.judged.id).await.unwrap()
        );
        assert_eq!(g.rewards[0].response_id, w.judged.responses[2].id);
        assert_eq!(
            groups,
            store
                .training_groups(&TrainingDataFilter::default())
                .await
                .unwrap(),
            "judged is the default"
        );
    })
    .await;
}

#[tokio::test]
async fn the_rewarded_selection_reads_rewarded_groups_with_their_rewards_oldest_first() {
    on_each_backend(|store| async move {
        // Arrange
        let w = Window::store(&store).await;

        // Act
        let groups = selected(&store, TrainingSelect::Rewarded).await;

        // Assert
        assert_eq!(
            ids_of(&groups),
            [w.judged.id, w.rewarded.id, w.variants.group.id]
        );
        let rewarded = &groups[1];
        let responses: Vec<Uuid> = rewarded.rewards.iter().map(|r| r.response_id).collect();
        assert_eq!(
            responses,
            [w.rewarded.responses[1].id, w.rewarded.responses[0].id],
            "oldest first"
        );
        assert!(rewarded.judgments.is_empty());
        let variants = &groups[2];
        assert_eq!(variants.kind, GroupKind::Variants);
        assert_eq!(variants.rewards.len(), 1);
        assert_eq!(variants.responses.len(), 4);
        assert_eq!(variants.responses[3].variant, Some(1));
        assert_eq!(
            variants.responses[3].prompt_token_ids,
            Some(vec![101, 4_000_000_000])
        );
        assert!(!ids_of(&groups).contains(&w.held_out.group.id));
        assert!(!ids_of(&groups).contains(&w.duel.id));
    })
    .await;
}

#[tokio::test]
async fn the_variants_selection_reads_every_variant_group_that_is_not_held_out() {
    on_each_backend(|store| async move {
        // Arrange
        let w = Window::store(&store).await;

        // Act
        let groups = selected(&store, TrainingSelect::Variants).await;

        // Assert
        assert_eq!(
            ids_of(&groups),
            [w.variants.group.id, w.bare_variants.group.id]
        );
        assert!(groups.iter().all(|g| g.kind == GroupKind::Variants));
        assert_eq!(groups[0].rewards.len(), 1);
        assert!(groups[1].rewards.is_empty());
        assert_eq!(groups[1].responses.len(), 4);
    })
    .await;
}

/// A gated consistency run counts a variant group once every answer has a verdict of the gate's
/// kind: a reward from outside (the trainer's own `consistency` rewards are not verdicts), or a
/// judgment naming it.
#[tokio::test]
async fn the_gated_selections_read_variant_groups_whose_every_answer_has_a_verdict() {
    on_each_backend(|store| async move {
        // Arrange: the window (two variant groups, one with one reward) and five more of 4 answers,
        // the last held out and both rewarded and judged throughout.
        Window::store(&store).await;
        let [rewarded, half_rewarded, judged, half_judged] = [(); 4].map(|()| variant_group());
        let held_out = variant_group_at(now(), 0, true);
        for v in [&rewarded, &half_rewarded, &judged, &half_judged, &held_out] {
            store.insert_variant_group(v).await.unwrap();
        }
        let mut rewards: Vec<_> = [&rewarded, &held_out]
            .iter()
            .flat_map(|v| v.group.responses.iter().map(|r| reward(r.id)))
            .collect();
        rewards.extend(
            half_rewarded.group.responses[..3]
                .iter()
                .map(|r| reward(r.id)),
        );
        let mut own = reward(half_rewarded.group.responses[3].id);
        own.source = RewardSource::Consistency;
        rewards.push(own);
        store.insert_rewards(&rewards).await.unwrap();
        store
            .insert_judgments(&[
                judgment(&judged.group, 0, 1),
                judgment(&judged.group, 3, 2),
                judgment(&half_judged.group, 0, 1),
                judgment(&half_judged.group, 1, 2),
                judgment(&held_out.group, 0, 1),
                judgment(&held_out.group, 2, 3),
            ])
            .await
            .unwrap();

        // Act
        let posted = selected(&store, TrainingSelect::GatedVariants(QualityGate::Posted)).await;
        let by_judgments = selected(
            &store,
            TrainingSelect::GatedVariants(QualityGate::Judgments),
        )
        .await;

        // Assert
        assert_eq!(ids_of(&posted), [rewarded.group.id]);
        assert_eq!(posted[0].rewards.len(), 4);
        assert_eq!(ids_of(&by_judgments), [judged.group.id]);
        assert_eq!(by_judgments[0].judgments.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn every_selection_keeps_to_its_version_and_window() {
    on_each_backend(|store| async move {
        let t = now();
        Window::store(&store).await;
        for select in [
            TrainingSelect::Judged,
            TrainingSelect::Rewarded,
            TrainingSelect::Variants,
            TrainingSelect::GatedVariants(QualityGate::Posted),
            TrainingSelect::GatedVariants(QualityGate::Judgments),
        ] {
            let other_version = TrainingDataFilter {
                adapter_version: Some(7),
                select,
                ..TrainingDataFilter::default()
            };
            let before = TrainingDataFilter {
                until: Some(t),
                select,
                ..TrainingDataFilter::default()
            };

            for f in [other_version, before] {
                assert!(store.training_groups(&f).await.unwrap().is_empty());
                assert_eq!(store.count_training_groups(&f).await.unwrap(), 0);
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Migration 0007 on a populated SQLite database

/// The tables whose rows 0007 must keep: the one it adds columns to and those that refer to it.
const KEPT_TABLES: [&str; 3] = ["groups", "responses", "judgments"];

#[tokio::test]
async fn migration_0007_keeps_every_row_of_a_populated_sqlite_database_and_takes_variant_groups() {
    // Arrange: a database at 0006 holding a judged samples group and a `variants` group as
    // releases before 0007 stored them (no variant row, no per-response prompt ids).
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("flywheel.db").display());
    assert_eq!(migrate_sqlite_before(&url, dir.path(), "0007").await, 6);
    let mut conn = raw_sqlite_connection(&url).await;
    let samples = group_at(now(), 3);
    insert_group_before_0007(&mut conn, &samples).await;
    let mut legacy = group();
    legacy.kind = GroupKind::Variants;
    legacy.responses[1].prompt = Some(json!([{"role": "user", "content": "A prime?"}]));
    insert_group_before_0007(&mut conn, &legacy).await;
    let old = Store::connect(&url).await.unwrap();
    old.insert_judgments(&[judgment(&samples, 0, 1)])
        .await
        .unwrap();
    old.close().await;
    let mut before = Vec::new();
    for table in KEPT_TABLES {
        let columns = columns(&mut conn, table).await;
        let rows = dump(&mut conn, table, &columns).await;
        assert!(!rows.is_empty(), "{table} was populated");
        before.push((columns, rows));
    }
    conn.close().await.unwrap();

    // Act
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();

    // Assert: every row, value by value, and the relations between them.
    let mut conn = raw_sqlite_connection(&url).await;
    for (table, (columns, rows)) in KEPT_TABLES.iter().zip(&before) {
        assert_eq!(&dump(&mut conn, table, columns).await, rows, "{table}");
    }
    let violations: Vec<(String,)> =
        sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 7 AND success")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied, 1);
    // The old responses read back as written, without a variant or prompt ids of their own.
    assert_eq!(
        store.get_group(samples.id).await.unwrap(),
        as_stored(&samples)
    );
    assert_eq!(
        store.get_group(legacy.id).await.unwrap(),
        as_stored(&legacy)
    );
    assert!(matches!(
        store.get_variant_group(legacy.id).await,
        Err(Error::NotFound("variant group"))
    ));
    let judged = store
        .training_groups(&TrainingDataFilter::default())
        .await
        .unwrap();
    assert_eq!(ids_of(&judged), [samples.id]);
    // Variant groups and rewards go in; an old `variants` group is a variant group to train on.
    let v = variant_group();
    store.insert_variant_group(&v).await.unwrap();
    store
        .insert_rewards(&[
            reward(samples.responses[0].id),
            reward(v.group.responses[0].id),
        ])
        .await
        .unwrap();
    let variants = selected(&store, TrainingSelect::Variants).await;
    assert_eq!(ids_of(&variants), [legacy.id, v.group.id]);
    // Deleting a group deletes its variant row and its rewards.
    for id in [samples.id, v.group.id] {
        sqlx::query("DELETE FROM groups WHERE id = $1")
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(store.rewards_for_group(id).await.unwrap().is_empty());
    }
    assert!(matches!(
        store.get_variant_group(v.group.id).await,
        Err(Error::NotFound("variant group"))
    ));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rewards")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    conn.close().await.unwrap();
    store
        .migrate()
        .await
        .expect("migrating again changes nothing");
}
