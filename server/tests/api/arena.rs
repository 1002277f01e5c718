//! The arena (issue #10): a new adapter is a `candidate`, served beside the incumbent, until blind
//! duels on held-out prompts, judged through the annotation queue, show it better (the gate
//! promotes it) or not (the gate retires it); admins and vLLM tooling decide by hand.
//!
//! The gate tests run the arena task with a small gate and a scripted judge that works the queue
//! as a person would: each pair under a new annotator name, the sides found out through
//! `GET /v1/responses/{id}` (the queue itself is blind).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flywheel_judge::{Action, GateConfig};
use flywheel_server::api::annotation::AnnotationConfig;
use flywheel_server::arena::duels::DuelConfig;
use flywheel_server::arena::{self, promotion, ArenaConfig};
use flywheel_server::engine::follow::sync_resident;
use flywheel_server::engine::EngineConfig;
use flywheel_store::{AdapterStatus, DecidedBy, DecisionAction};
use flywheel_trainer::{try_train_once, Outcome};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::helpers::{
    assert_error, greedy, postgres_available, register_adapter, spawn_app_with, AppOptions,
    TestApp, MODEL,
};
use crate::hot_swap::write_adapter;
use crate::training::{judge, sample};
use crate::worker::worker_config;

/// The held-out evaluation prompts every arena test posts.
const EVAL_PROMPTS: [&str; 4] = [
    "Explain DNS in one sentence.",
    "Name a prime number.",
    "What colour is the sky?",
    "Say hello politely.",
];

/// How long any polling loop waits before it fails.
const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// A gate of `min` to `max` judgments, four-token duels, a look every 200 ms.
fn small_arena(min_judgments: usize, max_judgments: usize) -> ArenaConfig {
    ArenaConfig {
        gate: GateConfig {
            min_judgments,
            max_judgments,
            ..Default::default()
        },
        duels: DuelConfig {
            max_tokens: 4,
            per_tick: 8,
            ..Default::default()
        },
        interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// An app (with `options`) whose adapter root is a fresh directory, returned with it.
async fn app_with_root(options: AppOptions) -> (TestApp, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let app = spawn_app_with(AppOptions {
        adapter_root: Some(root.path().to_path_buf()),
        ..options
    })
    .await;
    (app, root)
}

async fn post_eval_prompts(app: &TestApp) {
    let prompts: Vec<Value> = EVAL_PROMPTS
        .iter()
        .map(|q| json!({"messages": [{"role": "user", "content": q}]}))
        .collect();
    let response = app
        .post("/v1/eval-prompts", &json!({ "eval_prompts": prompts }))
        .await;
    assert_eq!(response.status(), 201);
}

/// Writes a random PEFT adapter at `root/dir` and registers it through `POST /v1/adapters`;
/// returns its version, a candidate.
async fn register_candidate(app: &TestApp, root: &Path, dir: &str, seed: u64) -> i64 {
    write_adapter(&root.join(dir), seed);
    let response = app.post("/v1/adapters", &json!({ "path": dir })).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "candidate", "{body}");
    body["version"].as_i64().unwrap()
}

/// `GET /v1/adapters/{version}`: the adapter with its decisions.
async fn adapter(app: &TestApp, version: i64) -> Value {
    app.get_json(&format!("/v1/adapters/{version}")).await
}

/// Polls `GET /v1/adapters/{version}` until it has `status`; returns it then.
async fn wait_for_status(app: &TestApp, version: i64, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let adapter = adapter(app, version).await;
        if adapter["status"] == status {
            return adapter;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "adapter {version} is not {status} after {PATIENCE:?}: {adapter}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A short greedy chat naming `model`; returns the status and the body.
async fn chat_as(app: &TestApp, model: &str) -> (u16, Value) {
    let mut body = greedy("Which adapter answers?", 2);
    body["model"] = json!(model);
    let response = app.post("/v1/chat/completions", &body).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The version that answers a request naming `model` (which must succeed).
async fn answered_by(app: &TestApp, model: &str) -> i64 {
    let (status, body) = chat_as(app, model).await;
    assert_eq!(status, 200, "{model}: {body}");
    body["adapter"].as_i64().unwrap()
}

/// The ids `GET /v1/models` lists.
async fn model_ids(app: &TestApp) -> Vec<String> {
    app.get_json("/v1/models").await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// `POST /v1/adapters/{version}/{act}` (`promote` or `retire`) with `expected_active`.
async fn decide(
    app: &TestApp,
    version: i64,
    act: &str,
    expected_active: i64,
    reason: &str,
) -> reqwest::Response {
    app.post(
        &format!("/v1/adapters/{version}/{act}"),
        &json!({"expected_active": expected_active, "reason": reason}),
    )
    .await
}

/// Which answer a scripted judge prefers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Prefer {
    Candidate,
    Incumbent,
    Tie,
    BothBad,
}

/// A scripted judge of the duels of `candidate` against `incumbent`, working the annotation queue.
struct ScriptedJudge<'a> {
    app: &'a TestApp,
    candidate: i64,
    incumbent: i64,
    /// Annotator names used so far: each pair is judged under a new one, so one duel may be
    /// judged by several annotators.
    annotators: usize,
}

impl<'a> ScriptedJudge<'a> {
    fn new(app: &'a TestApp, candidate: i64, incumbent: i64) -> Self {
        ScriptedJudge {
            app,
            candidate,
            incumbent,
            annotators: 0,
        }
    }

    /// Takes pairs from the queue until one is a duel of the two versions (waiting while there is
    /// none), and judges it as `prefer` says. Returns the judgment.
    async fn judge(&mut self, prefer: Prefer) -> Value {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < PATIENCE,
                "no duel of {} against {} to judge within {PATIENCE:?}",
                self.candidate,
                self.incumbent
            );
            self.annotators += 1;
            let annotator = format!("judge-{}", self.annotators);
            let response = self
                .app
                .get(&format!("/v1/annotation/next?annotator={annotator}"))
                .await;
            if response.status() == 204 {
                tokio::time::sleep(POLL).await;
                continue;
            }
            assert_eq!(response.status(), 200);
            let item: Value = response.json().await.unwrap();
            let left = item["left"]["response_id"].as_str().unwrap().to_string();
            let right = item["right"]["response_id"].as_str().unwrap().to_string();
            let left_version = self.version_of(&left).await;
            let right_version = self.version_of(&right).await;
            let mut versions = [left_version, right_version];
            versions.sort_unstable();
            let mut wanted = [self.candidate, self.incumbent];
            wanted.sort_unstable();
            if versions != wanted {
                continue;
            }
            let outcome = match prefer {
                Prefer::Candidate if left_version == self.candidate => "a",
                Prefer::Incumbent if left_version == self.incumbent => "a",
                Prefer::Candidate | Prefer::Incumbent => "b",
                Prefer::Tie => "tie",
                Prefer::BothBad => "both_bad",
            };
            let judgment = json!({
                "group_id": item["group_id"], "response_a": left, "response_b": right,
                "outcome": outcome, "annotator": annotator, "source": "rule",
                "assignment_id": item["assignment_id"],
            });
            let response = self.app.post("/v1/judgments", &judgment).await;
            assert_eq!(response.status(), 201);
            return response.json().await.unwrap();
        }
    }

    async fn version_of(&self, response: &str) -> i64 {
        self.app
            .get_json(&format!("/v1/responses/{response}"))
            .await["adapter_version"]
            .as_i64()
            .unwrap()
    }
}

/// A request's status and the adapter version that answered it.
type Answer = (u16, Option<i64>);

/// Chat traffic from several clients in a loop (short greedy requests that name no version) until
/// stopped: each request's status and the adapter that answered.
struct Traffic {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Answer>>>,
}

impl Traffic {
    fn start(app: &TestApp, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|i| {
                let (client, url) = (app.client.clone(), app.url("/v1/chat/completions"));
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let body = greedy(&format!("Traffic from client {i}"), 2);
                        let response = client.post(&url).json(&body).send().await.unwrap();
                        let status = response.status().as_u16();
                        let body: Value = response.json().await.unwrap_or_default();
                        seen.push((status, body["adapter"].as_i64()));
                    }
                    seen
                })
            })
            .collect();
        Traffic { stop, clients }
    }

    /// Stops the clients; every request each made, in order.
    async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.unwrap());
        }
        all
    }
}

// ---- The gate ----

async fn a_judge_preferring_the_candidate_makes_the_gate_promote_it(postgres: bool) {
    // Arrange
    let (app, root) = app_with_root(AppOptions {
        postgres,
        arena: Some(small_arena(8, 40)),
        ..Default::default()
    })
    .await;
    post_eval_prompts(&app).await;
    let candidate = register_candidate(&app, root.path(), "cand", 1).await;
    let mut judge = ScriptedJudge::new(&app, candidate, 0);

    // Act
    for _ in 0..8 {
        judge.judge(Prefer::Candidate).await;
    }
    let promoted = wait_for_status(&app, candidate, "active").await;

    // Assert
    let decisions = promoted["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{promoted}");
    let decision = &decisions[0];
    assert_eq!(decision["action"], "promote");
    assert_eq!(decision["decided_by"], "gate");
    assert_eq!(decision["rule"], "lower_bound_above_half");
    assert_eq!(decision["incumbent_version"], 0);
    let evidence = &decision["evidence"];
    assert_eq!(evidence["judgments"], 8, "{decision}");
    assert_eq!(evidence["wins"], 8.0);
    assert!(evidence["lower"].as_f64().unwrap() > 0.5, "{decision}");
    assert!((evidence["probability"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(evidence["confidence"], 0.95);
    assert_eq!(app.store.active_adapter_version().await.unwrap(), candidate);
    assert_eq!(answered_by(&app, MODEL).await, candidate);
    assert_eq!(
        model_ids(&app).await[..2],
        [MODEL.to_string(), format!("{MODEL}@{candidate}")]
    );
    assert_eq!(adapter(&app, 0).await["status"], "retired");
}

#[tokio::test]
async fn a_judge_preferring_the_candidate_makes_the_gate_promote_it_on_sqlite() {
    a_judge_preferring_the_candidate_makes_the_gate_promote_it(false).await;
}

#[tokio::test]
async fn a_judge_preferring_the_candidate_makes_the_gate_promote_it_on_postgres() {
    if postgres_available().await {
        a_judge_preferring_the_candidate_makes_the_gate_promote_it(true).await;
    }
}

#[tokio::test]
async fn a_judge_preferring_the_incumbent_makes_the_gate_retire_the_candidate_while_the_incumbent_serves(
) {
    // Arrange: an adapter is the incumbent; a candidate duels it under chat traffic.
    let (app, root) = app_with_root(AppOptions {
        arena: Some(small_arena(8, 40)),
        ..Default::default()
    })
    .await;
    let incumbent = register_adapter(
        &app.store,
        Some(&write_adapter(&root.path().join("inc"), 2)),
    )
    .await;
    let activated = app
        .post(&format!("/v1/adapters/{incumbent}/activate"), &json!({}))
        .await;
    assert_eq!(activated.status(), 200);
    post_eval_prompts(&app).await;
    let candidate = register_candidate(&app, root.path(), "cand", 3).await;
    let traffic = Traffic::start(&app, 2);
    let mut judge = ScriptedJudge::new(&app, candidate, incumbent);

    // Act
    for _ in 0..8 {
        judge.judge(Prefer::Incumbent).await;
    }
    let retired = wait_for_status(&app, candidate, "retired").await;
    let answers = traffic.stop().await;

    // Assert
    let decisions = retired["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{retired}");
    assert_eq!(decisions[0]["action"], "retire");
    assert_eq!(decisions[0]["decided_by"], "gate");
    assert_eq!(decisions[0]["rule"], "upper_bound_below_half");
    assert_eq!(decisions[0]["incumbent_version"], incumbent);
    assert_eq!(decisions[0]["evidence"]["judgments"], 8);
    assert_eq!(decisions[0]["evidence"]["wins"], 0.0);
    assert!(decisions[0]["evidence"]["upper"].as_f64().unwrap() < 0.5);
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|a| *a == (200, Some(incumbent))),
        "every request that named no version was answered by the incumbent: {answers:?}"
    );
    assert_eq!(adapter(&app, incumbent).await["status"], "active");
    assert_eq!(app.store.active_adapter_version().await.unwrap(), incumbent);
    assert_eq!(answered_by(&app, MODEL).await, incumbent);
    // The retired candidate is no longer held: pinning it is a 404.
    let pinned = wait_until_unloaded(&app, candidate).await;
    assert_eq!(pinned, 404);
}

/// Polls a request pinned to `version` until it stops being served here; returns that status.
async fn wait_until_unloaded(app: &TestApp, version: i64) -> u16 {
    let start = Instant::now();
    loop {
        let (status, body) = chat_as(app, &format!("{MODEL}@{version}")).await;
        if status != 200 {
            return status;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "version {version} still served: {body}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_split_judge_gets_no_decision_before_the_budget_and_then_the_candidate_is_retired() {
    // Arrange
    let (app, root) = app_with_root(AppOptions {
        arena: Some(small_arena(8, 40)),
        ..Default::default()
    })
    .await;
    post_eval_prompts(&app).await;
    let candidate = register_candidate(&app, root.path(), "cand", 4).await;
    let mut judge = ScriptedJudge::new(&app, candidate, 0);

    // Act: candidate, incumbent, candidate, ...; before each judgment nothing is decided yet.
    for n in 0..40 {
        let still = adapter(&app, candidate).await;
        assert_eq!(
            still["status"], "candidate",
            "decided after {n} judgments: {still}"
        );
        let prefer = if n % 2 == 0 {
            Prefer::Candidate
        } else {
            Prefer::Incumbent
        };
        judge.judge(prefer).await;
    }
    let retired = wait_for_status(&app, candidate, "retired").await;

    // Assert
    let decision = &retired["decisions"][0];
    assert_eq!(decision["decided_by"], "gate");
    assert_eq!(decision["rule"], "budget_spent", "{decision}");
    assert_eq!(decision["evidence"]["judgments"], 40);
    assert_eq!(decision["evidence"]["wins"], 20.0);
    let (lower, upper) = (
        decision["evidence"]["lower"].as_f64().unwrap(),
        decision["evidence"]["upper"].as_f64().unwrap(),
    );
    assert!(lower <= 0.5 && 0.5 <= upper, "{decision}");
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 0);
}

#[tokio::test]
async fn when_the_active_version_moves_the_gate_judges_the_candidate_against_the_new_one() {
    // Arrange: duels the candidate won against the base, then an admin activates another version.
    let (app, root) = app_with_root(AppOptions::default()).await;
    let config = small_arena(8, 40);
    post_eval_prompts(&app).await;
    let candidate = register_candidate(&app, root.path(), "cand", 24).await;
    assert_eq!(
        arena::tick(&app.store, &app.engine, &config)
            .await
            .unwrap()
            .duels,
        4
    );
    let mut judge = ScriptedJudge::new(&app, candidate, 0);
    for _ in 0..8 {
        judge.judge(Prefer::Candidate).await;
    }
    let against_base = promotion::evaluate(&app.store, candidate, 0, &config.gate)
        .await
        .unwrap();
    let other = register_adapter(
        &app.store,
        Some(&write_adapter(&root.path().join("other"), 25)),
    )
    .await;
    let activated = app
        .post(&format!("/v1/adapters/{other}/activate"), &json!({}))
        .await;
    assert_eq!(activated.status(), 200);

    // Act
    let tick = arena::tick(&app.store, &app.engine, &config).await.unwrap();

    // Assert: the win over the base would have promoted it; against the new incumbent it starts
    // over.
    assert_eq!(against_base.action, Action::Promote);
    assert!(tick.decisions.is_empty(), "{tick:?}");
    assert_eq!(tick.duels, 4, "new duels against the new incumbent");
    assert_eq!(adapter(&app, candidate).await["status"], "candidate");
    assert_eq!(app.store.active_adapter_version().await.unwrap(), other);
    assert_eq!(answered_by(&app, MODEL).await, other);
}

// ---- Deciding by hand ----

#[tokio::test]
async fn an_admin_promotes_a_candidate_against_the_expected_active_version() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 5).await;

    // Act
    let stale = decide(&app, candidate, "promote", 7, "looks good").await;
    let unchanged = adapter(&app, candidate).await;
    let promoted = decide(&app, candidate, "promote", 0, "looks good").await;

    // Assert
    assert_error(stale, 409, None).await;
    assert_eq!(unchanged["status"], "candidate");
    assert_eq!(unchanged["decisions"], json!([]));
    assert_eq!(promoted.status(), 200);
    let promoted: Value = promoted.json().await.unwrap();
    assert_eq!(promoted["status"], "active");
    let decisions = promoted["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["action"], "promote");
    assert_eq!(decisions[0]["decided_by"], "admin");
    assert_eq!(decisions[0]["rule"], "manual");
    assert_eq!(decisions[0]["reason"], "looks good");
    assert_eq!(decisions[0]["incumbent_version"], 0);
    assert_eq!(adapter(&app, candidate).await, promoted);
    assert_eq!(answered_by(&app, MODEL).await, candidate);
    assert_eq!(adapter(&app, 0).await["status"], "retired");
    // Promoting the active version again is a conflict too.
    assert_error(
        decide(&app, candidate, "promote", candidate, "again").await,
        409,
        None,
    )
    .await;
}

#[tokio::test]
async fn an_admin_retires_a_candidate_and_only_a_candidate_against_the_expected_active_version() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 6).await;

    // Act
    let stale = decide(&app, candidate, "retire", 3, "too verbose").await;
    let unchanged = adapter(&app, candidate).await;
    let active = decide(&app, 0, "retire", 0, "the active version").await;
    let retired = decide(&app, candidate, "retire", 0, "too verbose").await;
    let again = decide(&app, candidate, "retire", 0, "once more").await;

    // Assert
    assert_error(stale, 409, None).await;
    assert_eq!(unchanged["status"], "candidate");
    assert_eq!(unchanged["decisions"], json!([]));
    assert_error(active, 400, Some("version")).await;
    assert_eq!(retired.status(), 200);
    let retired: Value = retired.json().await.unwrap();
    assert_eq!(retired["status"], "retired");
    let decisions = retired["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["action"], "retire");
    assert_eq!(decisions[0]["decided_by"], "admin");
    assert_eq!(decisions[0]["rule"], "manual");
    assert_eq!(decisions[0]["reason"], "too verbose");
    assert_error(again, 400, Some("version")).await;
    assert_eq!(
        adapter(&app, candidate).await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 0);
    assert_eq!(adapter(&app, 0).await["status"], "active");
    assert_error(decide(&app, 99, "retire", 0, "").await, 404, None).await;
}

#[tokio::test]
async fn a_stale_promotion_leaves_the_engine_as_it_was() {
    // Arrange: a candidate loaded beside the incumbent.
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 23).await;
    sync_resident(&app.store, &app.engine).await.unwrap();
    let incumbent = app.engine.active();

    // Act
    let stale = decide(&app, candidate, "promote", 5, "").await;

    // Assert
    assert_error(stale, 409, None).await;
    assert!(
        Arc::ptr_eq(&app.engine.active(), &incumbent),
        "the incumbent kept serving, not reloaded"
    );
    assert_eq!(app.engine.resident(), [(candidate, None)]);
    assert_eq!(
        answered_by(&app, &format!("{MODEL}@{candidate}")).await,
        candidate
    );
    assert_eq!(adapter(&app, candidate).await["status"], "candidate");
}

// ---- Candidates served beside the incumbent ----

#[tokio::test]
async fn a_loaded_candidate_can_be_pinned_by_version_and_is_listed_beside_the_incumbent() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 7).await;
    let before = chat_as(&app, &format!("{MODEL}@{candidate}")).await;

    // Act
    sync_resident(&app.store, &app.engine).await.unwrap();

    // Assert
    assert_eq!(before.0, 404, "not loaded before the sync: {}", before.1);
    assert_eq!(
        answered_by(&app, &format!("{MODEL}@{candidate}")).await,
        candidate
    );
    assert_eq!(answered_by(&app, &format!("{MODEL}@0")).await, 0);
    assert_eq!(answered_by(&app, MODEL).await, 0, "no canary by default");
    let (status, body) = chat_as(&app, &format!("{MODEL}@99")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        model_ids(&app).await,
        [
            MODEL.to_string(),
            format!("{MODEL}@0"),
            format!("{MODEL}@{candidate}")
        ]
    );
    let card = app
        .get_json(&format!("/v1/models/{MODEL}@{candidate}"))
        .await;
    assert_eq!(card["adapter"], candidate);
}

#[tokio::test]
async fn the_arena_loads_a_new_candidate_by_itself() {
    // Arrange
    let (app, root) = app_with_root(AppOptions {
        arena: Some(small_arena(8, 40)),
        ..Default::default()
    })
    .await;

    // Act
    let candidate = register_candidate(&app, root.path(), "cand", 8).await;

    // Assert
    let pinned = format!("{MODEL}@{candidate}");
    let start = Instant::now();
    while !model_ids(&app).await.contains(&pinned) {
        assert!(
            start.elapsed() < PATIENCE,
            "the arena never loaded {pinned}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(answered_by(&app, &pinned).await, candidate);
}

#[tokio::test]
async fn a_candidate_without_evaluation_prompts_to_duel_on_is_reported_starved() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 9).await;

    // Act
    let starved = arena::tick(&app.store, &app.engine, &small_arena(8, 40))
        .await
        .unwrap();
    post_eval_prompts(&app).await;
    let fed = arena::tick(&app.store, &app.engine, &small_arena(8, 40))
        .await
        .unwrap();

    // Assert
    assert_eq!((starved.starved, starved.duels), (Some(candidate), 0));
    assert_eq!((fed.starved, fed.duels), (None, 4));
}

#[tokio::test]
async fn a_canary_share_of_one_sends_requests_that_name_no_version_to_the_candidate() {
    // Arrange
    let (app, root) = app_with_root(AppOptions {
        engine: EngineConfig {
            canary_share: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let candidate = register_candidate(&app, root.path(), "cand", 9).await;
    let before = answered_by(&app, MODEL).await;

    // Act
    sync_resident(&app.store, &app.engine).await.unwrap();

    // Assert
    assert_eq!(before, 0, "no candidate loaded, no canary");
    for _ in 0..3 {
        assert_eq!(answered_by(&app, MODEL).await, candidate);
    }
    assert_eq!(answered_by(&app, &format!("{MODEL}@0")).await, 0);
}

#[tokio::test]
async fn max_resident_zero_keeps_no_candidate_loaded() {
    // Arrange
    let (app, root) = app_with_root(AppOptions {
        engine: EngineConfig {
            max_resident: 0,
            canary_share: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let candidate = register_candidate(&app, root.path(), "cand", 10).await;

    // Act
    sync_resident(&app.store, &app.engine).await.unwrap();

    // Assert
    assert!(app.engine.resident().is_empty());
    assert_eq!(chat_as(&app, &format!("{MODEL}@{candidate}")).await.0, 404);
    assert_eq!(answered_by(&app, MODEL).await, 0);
    assert_eq!(adapter(&app, candidate).await["status"], "candidate");
}

// ---- vLLM's names ----

async fn load_lora(app: &TestApp, name: &str, path: &str) -> reqwest::Response {
    app.post(
        "/v1/load_lora_adapter",
        &json!({"lora_name": name, "lora_path": path}),
    )
    .await
}

async fn unload_lora(app: &TestApp, name: &str) -> reqwest::Response {
    app.post("/v1/unload_lora_adapter", &json!({ "lora_name": name }))
        .await
}

#[tokio::test]
async fn load_lora_adapter_registers_a_candidate_requests_may_name() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    write_adapter(&root.path().join("tone"), 11);

    // Act
    let loaded = load_lora(&app, "tone-v1", "tone").await;

    // Assert
    assert_eq!(loaded.status(), 200);
    let loaded: Value = loaded.json().await.unwrap();
    let version = loaded["version"].as_i64().unwrap();
    assert_eq!(loaded["status"], "candidate");
    assert_eq!(loaded["name"], "tone-v1");
    assert_eq!(answered_by(&app, "tone-v1").await, version);
    assert_eq!(answered_by(&app, MODEL).await, 0);
    assert!(model_ids(&app).await.contains(&"tone-v1".to_string()));
}

#[tokio::test]
async fn load_lora_adapter_refuses_a_taken_name_and_a_path_outside_the_adapter_root() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    write_adapter(&root.path().join("a"), 12);
    write_adapter(&root.path().join("b"), 13);
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = write_adapter(&outside.path().join("c"), 14);
    assert_eq!(load_lora(&app, "tone", "a").await.status(), 200);

    // Act
    let taken = load_lora(&app, "tone", "b").await;
    let escaped = load_lora(&app, "other", &elsewhere.display().to_string()).await;
    let climbed = load_lora(&app, "other", "../c").await;

    // Assert
    assert_error(taken, 409, None).await;
    assert_error(escaped, 400, Some("lora_path")).await;
    assert_error(climbed, 400, Some("lora_path")).await;
    assert_eq!(
        app.get("/v1/adapters/2").await.status(),
        404,
        "nothing else stored"
    );
}

#[tokio::test]
async fn unload_lora_adapter_retires_the_candidate_and_its_name_stops_answering() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    write_adapter(&root.path().join("tone"), 15);
    let loaded: Value = load_lora(&app, "tone-v1", "tone")
        .await
        .json()
        .await
        .unwrap();
    let version = loaded["version"].as_i64().unwrap();

    // Act
    let unloaded = unload_lora(&app, "tone-v1").await;

    // Assert
    assert_eq!(unloaded.status(), 200);
    let unloaded: Value = unloaded.json().await.unwrap();
    assert_eq!(unloaded["status"], "retired");
    let decisions = adapter(&app, version).await["decisions"].clone();
    assert_eq!(decisions[0]["action"], "retire");
    assert_eq!(decisions[0]["decided_by"], "admin");
    let (status, body) = chat_as(&app, "tone-v1").await;
    assert_eq!(status, 404, "{body}");
    assert!(!model_ids(&app).await.contains(&"tone-v1".to_string()));
    assert_error(unload_lora(&app, "never-loaded").await, 404, None).await;
}

#[tokio::test]
async fn a_name_unloaded_can_be_loaded_again_as_vllm_tooling_does() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    write_adapter(&root.path().join("tone"), 15);
    write_adapter(&root.path().join("tone-fixed"), 16);
    let first: Value = load_lora(&app, "tone-v1", "tone")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unload_lora(&app, "tone-v1").await.status(), 200);

    // Act
    let again = load_lora(&app, "tone-v1", "tone-fixed").await;

    // Assert
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["version"], first["version"]);
    assert_eq!(
        answered_by(&app, "tone-v1").await,
        again["version"].as_i64().unwrap()
    );
    assert_eq!(
        adapter(&app, first["version"].as_i64().unwrap()).await["name"],
        "tone-v1"
    );
}

#[tokio::test]
async fn the_active_version_cannot_be_unloaded_and_still_answers_to_its_name() {
    // Arrange: a loaded LoRA, promoted by hand.
    let (app, root) = app_with_root(AppOptions::default()).await;
    write_adapter(&root.path().join("tone"), 16);
    let loaded: Value = load_lora(&app, "tone-v1", "tone")
        .await
        .json()
        .await
        .unwrap();
    let version = loaded["version"].as_i64().unwrap();
    assert_eq!(decide(&app, version, "promote", 0, "").await.status(), 200);

    // Act
    let unloaded = unload_lora(&app, "tone-v1").await;

    // Assert
    assert_error(unloaded, 409, None).await;
    assert_eq!(adapter(&app, version).await["status"], "active");
    assert_eq!(answered_by(&app, MODEL).await, version);
    assert_eq!(answered_by(&app, "tone-v1").await, version);
}

// ---- Safety ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_while_candidates_are_loaded_promoted_and_retired() {
    // Arrange
    let (app, root) = app_with_root(AppOptions::default()).await;
    let traffic = Traffic::start(&app, 4);

    // Act: load a candidate, promote it, load another, retire it, roll back to the base.
    let first = register_candidate(&app, root.path(), "first", 17).await;
    sync_resident(&app.store, &app.engine).await.unwrap();
    assert_eq!(decide(&app, first, "promote", 0, "").await.status(), 200);
    let second = register_candidate(&app, root.path(), "second", 18).await;
    sync_resident(&app.store, &app.engine).await.unwrap();
    assert_eq!(
        answered_by(&app, &format!("{MODEL}@{second}")).await,
        second
    );
    assert_eq!(
        decide(&app, second, "retire", first, "").await.status(),
        200
    );
    let rollback = app.post("/v1/adapters/0/activate", &json!({})).await;
    assert_eq!(rollback.status(), 200);
    let answers = traffic.stop().await;

    // Assert
    assert!(answers.len() >= 8, "too little traffic: {answers:?}");
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        answers
            .iter()
            .all(|(_, v)| [Some(0), Some(first)].contains(v)),
        "only the active versions answered unpinned requests: {answers:?}"
    );
    assert!(app.engine.resident().is_empty());
}

#[tokio::test]
async fn a_candidate_whose_files_changed_after_registration_is_failed_and_the_incumbent_untouched()
{
    // Arrange: the sha256 is recorded at registration; then the weights are overwritten.
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 19).await;
    std::fs::write(
        root.path().join("cand").join("adapter_model.safetensors"),
        b"not safetensors at all",
    )
    .unwrap();

    // Act
    sync_resident(&app.store, &app.engine).await.unwrap();

    // Assert
    let failed = adapter(&app, candidate).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert!(app.engine.resident().is_empty());
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 0);
    assert_eq!(adapter(&app, 0).await["status"], "active");
    assert_eq!(answered_by(&app, MODEL).await, 0);
    assert_eq!(chat_as(&app, &format!("{MODEL}@{candidate}")).await.0, 404);
    // It is no candidate any more: the next look leaves it alone.
    sync_resident(&app.store, &app.engine).await.unwrap();
    assert_eq!(adapter(&app, candidate).await["status"], "failed");
}

#[tokio::test]
async fn a_candidate_whose_files_are_gone_is_not_loaded_and_a_promotion_fails_it() {
    // Arrange: the weights disappear after registration (or this replica cannot see them).
    let (app, root) = app_with_root(AppOptions::default()).await;
    let candidate = register_candidate(&app, root.path(), "cand", 20).await;
    std::fs::remove_file(root.path().join("cand").join("adapter_model.safetensors")).unwrap();

    // Act
    sync_resident(&app.store, &app.engine).await.unwrap();
    let after_look = adapter(&app, candidate).await;
    let promoted = decide(&app, candidate, "promote", 0, "").await;

    // Assert: a look leaves it to the other replicas, which may see the files; the deliberate
    // act on this server marks it failed.
    assert_eq!(after_look["status"], "candidate", "{after_look}");
    assert!(app.engine.resident().is_empty());
    assert_error(promoted, 409, None).await;
    assert_eq!(adapter(&app, candidate).await["status"], "failed");
    assert_eq!(adapter(&app, 0).await["status"], "active");
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 0);
    assert_eq!(answered_by(&app, MODEL).await, 0);
}

// ---- Standings ----

#[tokio::test]
async fn get_arena_shows_the_leaderboard_and_the_candidates_head_to_head() {
    // Arrange: one arena tick samples a duel per evaluation prompt; six judgments follow.
    let (app, root) = app_with_root(AppOptions::default()).await;
    post_eval_prompts(&app).await;
    let candidate = register_candidate(&app, root.path(), "cand", 21).await;
    let tick = arena::tick(&app.store, &app.engine, &small_arena(50, 400))
        .await
        .unwrap();
    assert_eq!(tick.duels, 4);
    let mut judge = ScriptedJudge::new(&app, candidate, 0);
    use Prefer::*;
    // The queue hands a judged duel to a second annotator now and then (`annotation_overlap`),
    // so six judgments cover some of the four duels twice.
    let mut judged_duels = std::collections::HashSet::new();
    for prefer in [Candidate, Candidate, Candidate, Incumbent, Tie, BothBad] {
        judged_duels.insert(judge.judge(prefer).await["group_id"].to_string());
    }

    // Act
    let arena = app.get_json("/v1/arena").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();

    // Assert: the candidate's side counts 3 wins, a tie and a both-bad as 4 of 6.
    assert_eq!(arena["incumbent"], 0);
    assert_eq!(arena["promotion"], "gate");
    assert_eq!(
        arena["gate"],
        json!({"min_judgments": 50, "max_judgments": 400, "confidence": 0.95})
    );
    assert_eq!(arena["judgments"], 6);
    let standing = &arena["candidates"][0];
    assert_eq!(arena["candidates"].as_array().unwrap().len(), 1);
    assert_eq!(standing["version"], candidate);
    assert_eq!(standing["judgments"], 6);
    assert_eq!(standing["wins"], 4.0);
    assert_close(&standing["win_rate"], 4.0 / 6.0);
    assert_eq!(standing["both_bad"], 1);
    assert_close(&standing["both_bad_rate"], 1.0 / 6.0);
    // Bradley–Terry of two versions under the Gamma(2, 1) prior: Laplace's (4 + 1) / (6 + 2).
    assert_close(&standing["probability"], 5.0 / 8.0);
    let (lower, upper) = (
        standing["lower"].as_f64().unwrap(),
        standing["upper"].as_f64().unwrap(),
    );
    assert!(lower < 0.625 && 0.625 < upper, "{standing}");
    assert_eq!(standing["duels"], 4);
    assert_eq!(
        standing["unjudged_duels"],
        4 - judged_duels.len(),
        "{standing}"
    );
    assert_eq!(standing["gate_action"], "continue");
    assert_eq!(standing["gate_rule"], "too_few_judgments");

    let board = arena["leaderboard"].as_array().unwrap();
    assert_eq!(board.len(), 2, "{arena}");
    let (top, incumbent) = (&board[0], &board[1]);
    assert_eq!(top["version"], candidate, "strongest first");
    assert_eq!(incumbent["version"], 0);
    assert_eq!(incumbent["strength"], 0.0, "anchored at the incumbent");
    assert_eq!(incumbent["elo"], 0.0);
    let strength = top["strength"].as_f64().unwrap();
    assert!(strength > 0.0, "{top}");
    assert!(top["lower"].as_f64().unwrap() <= strength);
    assert!(strength <= top["upper"].as_f64().unwrap());
    assert_close(&top["elo"], strength * 400.0 / std::f64::consts::LN_10);
    for (entry, wins) in [(top, 4.0), (incumbent, 2.0)] {
        assert_eq!(entry["judgments"], 6, "{entry}");
        assert_eq!(entry["wins"], wins, "{entry}");
        assert_eq!(entry["both_bad"], 1, "{entry}");
        assert_eq!(entry["rank"], 1, "the intervals overlap: {entry}");
    }

    let value = |name: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let label = format!("candidate=\"{candidate}\"");
    let estimate = value(
        "flywheel_arena_candidate_probability",
        &[&label, "bound=\"estimate\""],
    );
    assert!((estimate - 0.625).abs() < 1e-9, "{estimate}");
    let win_rate = value(
        "flywheel_arena_candidate_probability",
        &[&label, "bound=\"win_rate\""],
    );
    assert!((win_rate - 4.0 / 6.0).abs() < 1e-9);
    assert_eq!(
        value(
            "flywheel_arena_strength",
            &["version=\"0\"", "bound=\"estimate\""]
        ),
        0.0
    );
    let version = format!("version=\"{candidate}\"");
    let exported = value("flywheel_arena_strength", &[&version, "bound=\"estimate\""]);
    assert!((exported - strength).abs() < 1e-9);
    assert_eq!(value("flywheel_arena_candidate_judgments", &[&label]), 6.0);
}

fn assert_close(value: &Value, expected: f64) {
    let actual = value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"));
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

// ---- Duels on the annotation queue ----

#[tokio::test]
async fn duels_are_handed_out_blind_and_before_ordinary_pairs() {
    // Arrange: an ordinary pair of the active policy, then four duels.
    let (app, root) = app_with_root(AppOptions {
        annotation: AnnotationConfig {
            overlap_share: 0.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let ordinary = sample(&app, "An ordinary request", 2, 1).await;
    post_eval_prompts(&app).await;
    let candidate = register_candidate(&app, root.path(), "cand", 22).await;
    let tick = arena::tick(&app.store, &app.engine, &small_arena(50, 400))
        .await
        .unwrap();
    assert_eq!(tick.duels, 4);

    // Act
    let mut items = Vec::new();
    for n in 0..5 {
        let item = app
            .get_json(&format!("/v1/annotation/next?annotator=person-{n}"))
            .await;
        items.push(item);
    }

    // Assert
    for item in &items[..4] {
        let group = app
            .get_json(&format!(
                "/v1/groups/{}",
                item["group_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(group["kind"], "duel", "{group}");
        assert_eq!(group["adapter_version"], candidate, "{group}");
    }
    assert_eq!(
        items[4]["group_id"],
        ordinary.to_string(),
        "then the ordinary pair"
    );
    for item in &items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "annotator",
                "assignment_id",
                "expires_at",
                "group_id",
                "left",
                "prompt",
                "right"
            ]
        );
        for side in ["left", "right"] {
            let mut keys: Vec<&str> = item[side]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            assert_eq!(keys, ["prompt", "response_id", "text"]);
        }
    }
}

// ---- The worker ----

/// Three samples of each prompt by the active version, every pair judged.
async fn judge_samples(app: &TestApp, prompts: &[&str]) {
    for (i, prompt) in prompts.iter().enumerate() {
        judge(app, sample(app, prompt, 3, i as i64).await).await;
    }
}

#[tokio::test]
async fn under_the_gate_the_worker_leaves_its_adapter_a_candidate_and_trains_no_other_meanwhile() {
    // Arrange
    let (app, _root) = app_with_root(AppOptions::default()).await;
    let out = tempfile::tempdir().unwrap();
    let mut config = worker_config(out.path(), 6);
    config.activate = false;
    let cancel = Arc::new(AtomicBool::new(false));
    judge_samples(&app, &["Name a colour", "Name an animal"]).await;

    // Act
    let trained = try_train_once(&app.store, &config, &cancel).await.unwrap();
    judge_samples(&app, &["Name a fruit", "Name a tree"]).await;
    let waiting = try_train_once(&app.store, &config, &cancel).await.unwrap();

    // Assert
    assert_eq!(trained, Outcome::Trained(1));
    assert_eq!(waiting, Outcome::CandidatePending(1));
    let candidate = app.store.get_adapter(1).await.unwrap();
    assert_eq!(candidate.status, AdapterStatus::Candidate);
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 0);
    assert!(app.store.adapter_decisions(1).await.unwrap().is_empty());
    assert!(matches!(
        app.store.get_adapter(2).await,
        Err(flywheel_store::Error::NotFound(_))
    ));
    let run = app.store.latest_train_run().await.unwrap().unwrap();
    assert_eq!(run.adapter_version, Some(1), "no second run was recorded");
}

#[tokio::test]
async fn under_promotion_always_the_worker_promotes_its_adapter_with_a_recorded_decision() {
    // Arrange
    let (app, _root) = app_with_root(AppOptions::default()).await;
    let out = tempfile::tempdir().unwrap();
    let config = worker_config(out.path(), 6);
    assert!(config.activate);
    let cancel = Arc::new(AtomicBool::new(false));
    judge_samples(&app, &["Name a colour", "Name an animal"]).await;

    // Act
    let trained = try_train_once(&app.store, &config, &cancel).await.unwrap();

    // Assert
    assert_eq!(trained, Outcome::Trained(1));
    assert_eq!(app.store.active_adapter_version().await.unwrap(), 1);
    let decisions = app.store.adapter_decisions(1).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].action, DecisionAction::Promote);
    assert_eq!(decisions[0].decided_by, DecidedBy::Always);
    assert_eq!(decisions[0].rule, "always");
    assert_eq!(decisions[0].incumbent_version, 0);
    let shown = adapter(&app, 1).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["decisions"][0]["decided_by"], "always");
}
