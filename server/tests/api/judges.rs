//! `flywheel judge`: automatic judges working the annotation queue of a real server (tiny model).
//!
//! The tiny random model writes gibberish, so the LLM judges' verdicts come from a small scripted
//! OpenAI-compatible endpoint started here; one test points the LLM judge at the server itself to
//! show the whole path runs and posts nothing it cannot read. Program judges are `sh` scripts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use flywheel_server::judges::chat::{ChatClient, ChatConfig};
use flywheel_server::judges::llm::LlmJudge;
use flywheel_server::judges::program::ProgramJudge;
use flywheel_server::judges::self_reference::SelfReferenceJudge;
use flywheel_server::judges::{self, Counts, Judge, WorkerConfig};
use flywheel_store::Scope;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    create_key, postgres_available, spawn_app, spawn_app_with, AppOptions, TestApp,
};
use crate::judgments::sampled_group;

const FAKE_MODEL: &str = "fake-judge";
const FAKE_KEY: &str = "judge-secret";

/// `groups` logged groups of `n` samples each.
async fn make_groups(app: &TestApp, groups: usize, n: usize) {
    for _ in 0..groups {
        sampled_group(app, n).await;
    }
}

/// A key for the judge: it takes pairs and posts judgments, and may ask the server's model.
async fn judge_key(app: &TestApp) -> String {
    create_key(&app.store, &[Scope::Annotate, Scope::Inference]).await
}

fn worker_config(app: &TestApp, key: String, name: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        server_url: app.address.clone(),
        api_key: Some(key),
        annotator: name.into(),
        concurrency,
        poll_interval: Duration::from_millis(50),
        until_empty: true,
        ..Default::default()
    }
}

/// Runs the judge until the queue is empty for it; fails the test if that takes over 2 minutes.
async fn run_until_empty(config: WorkerConfig, judge: Judge) -> Counts {
    tokio::time::timeout(
        Duration::from_secs(120),
        judges::run(config, judge, std::future::pending()),
    )
    .await
    .expect("the judge finishes")
    .expect("the judge runs")
}

/// Every judgment `annotator` posted.
async fn judgments_by(app: &TestApp, annotator: &str) -> Vec<Value> {
    let listed = app
        .get_json(&format!("/v1/judgments?annotator={annotator}&limit=100"))
        .await;
    listed["data"].as_array().unwrap().clone()
}

/// The stored text of response `id` of group `group`.
async fn text_of(app: &TestApp, group: &Value, id: &Value) -> String {
    let group: Uuid = group.as_str().unwrap().parse().unwrap();
    let id: Uuid = id.as_str().unwrap().parse().unwrap();
    let stored = app.store.get_group(group).await.unwrap();
    stored
        .responses
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
        .text
}

// ---- A scripted OpenAI-compatible judge endpoint ----

/// The endpoint's answer to the last user message.
type Script = fn(&str) -> String;

struct FakeEndpoint {
    base_url: String,
    /// Every chat request body it answered, in order.
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeEndpoint {
    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    async fn chat(&self) -> ChatClient {
        ChatClient::connect(ChatConfig {
            base_url: self.base_url.clone(),
            api_key: Some(FAKE_KEY.into()),
            model: None,
            max_tokens: 64,
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap()
    }
}

async fn fake_endpoint(script: Script) -> FakeEndpoint {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let completions = move |headers: HeaderMap, Json(body): Json<Value>| {
        let seen = seen.clone();
        async move {
            let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
            let expected = format!("Bearer {FAKE_KEY}");
            if authorization != Some(expected.as_str()) {
                let error = json!({"error": {"message": "bad key", "type": "auth"}});
                return (StatusCode::UNAUTHORIZED, Json(error));
            }
            let user = body["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_string();
            seen.lock().unwrap().push(body);
            let reply = json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "model": FAKE_MODEL,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": script(&user)}}],
            });
            (StatusCode::OK, Json(reply))
        }
    };
    let models = || async { Json(json!({"object": "list", "data": [{"id": FAKE_MODEL}]})) };
    let router = axum::Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(completions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    FakeEndpoint {
        base_url: format!("http://{address}/v1"),
        requests,
    }
}

/// The text between `<tag>` and `</tag>` lines of a comparison request.
fn section<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let (open, close) = (format!("<{tag}>\n"), format!("\n</{tag}>"));
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(&text[start..end])
}

/// A consistent judge: prefers the response whose text sorts first, in whichever order it is
/// shown. Asked for its own answer (no responses shown), it answers about Paris.
fn prefers_the_text_sorting_first(user: &str) -> String {
    let (Some(a), Some(b)) = (section(user, "response_a"), section(user, "response_b")) else {
        return "Paris is the capital of France.".into();
    };
    let verdict = match a.cmp(b) {
        std::cmp::Ordering::Less => "A",
        std::cmp::Ordering::Greater => "B",
        std::cmp::Ordering::Equal => "tie",
    };
    format!("Response {verdict} sorts first.\nVerdict: {verdict}")
}

/// A judge with position bias: whatever is shown first wins.
fn always_prefers_a(_: &str) -> String {
    "Response A is more thorough.\nVerdict: A".into()
}

/// A judge that never gives a verdict line.
fn never_decides(_: &str) -> String {
    "Both responses have their merits; it is hard to choose.".into()
}

/// Asserts that each judgment's outcome is the one [`prefers_the_text_sorting_first`] gives.
async fn assert_the_text_sorting_first_won(app: &TestApp, judgments: &[Value]) {
    for judgment in judgments {
        let group = &judgment["group_id"];
        let a = text_of(app, group, &judgment["response_a"]).await;
        let b = text_of(app, group, &judgment["response_b"]).await;
        let expected = match a.cmp(&b) {
            std::cmp::Ordering::Less => "a",
            std::cmp::Ordering::Greater => "b",
            std::cmp::Ordering::Equal => "tie",
        };
        assert_eq!(judgment["outcome"], expected, "{judgment}");
    }
}

// ---- LLM judge ----

async fn an_llm_judge_whose_orders_agree_posts_its_verdicts(options: AppOptions) {
    // Arrange: three pairs, a judge endpoint that prefers one response whatever the order.
    let app = spawn_app_with(options).await;
    make_groups(&app, 3, 2).await;
    let endpoint = fake_endpoint(prefers_the_text_sorting_first).await;
    let judge = Judge::Llm(LlmJudge::new(endpoint.chat().await, None));
    let config = worker_config(&app, judge_key(&app).await, "llm-judge", 2);

    // Act
    let counts = run_until_empty(config, judge).await;

    // Assert
    assert_eq!(counts.posted, 3, "{counts}");
    assert_eq!(counts.abstentions.total(), 0, "{counts}");
    let judgments = judgments_by(&app, "llm-judge").await;
    assert_eq!(judgments.len(), 3);
    for judgment in &judgments {
        assert_eq!(judgment["source"], "model");
        let rationale = judgment["rationale"].as_str().unwrap();
        assert!(rationale.contains("sorts first"), "{rationale}");
        assert!(rationale.contains("[sides swapped]"), "{rationale}");
    }
    assert_the_text_sorting_first_won(&app, &judgments).await;
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 6, "both orders of each pair are asked");
    for request in &requests {
        assert_eq!(request["model"], FAKE_MODEL);
        assert_eq!(request["temperature"], 0.0);
        assert_eq!(request["messages"][0]["role"], "system");
        let rubric = request["messages"][0]["content"].as_str().unwrap();
        assert_eq!(rubric, flywheel_server::judges::llm::DEFAULT_RUBRIC);
    }
    let next = app.get("/v1/annotation/next?annotator=llm-judge").await;
    assert_eq!(next.status(), 204, "every pair was answered");
}

#[tokio::test]
async fn an_llm_judge_whose_orders_agree_posts_its_verdicts_with_rationales() {
    an_llm_judge_whose_orders_agree_posts_its_verdicts(AppOptions::default()).await;
}

#[tokio::test]
async fn an_llm_judge_whose_orders_agree_posts_its_verdicts_on_postgres() {
    if !postgres_available().await {
        return;
    }
    an_llm_judge_whose_orders_agree_posts_its_verdicts(AppOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn an_llm_judge_whose_two_orders_disagree_posts_nothing() {
    // No overlap picks: a pair held by the judge would never go to a second annotator.
    let app = spawn_app_with(AppOptions {
        annotation: flywheel_server::api::annotation::AnnotationConfig {
            overlap_share: 0.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    make_groups(&app, 2, 2).await;
    let endpoint = fake_endpoint(always_prefers_a).await;
    let judge = Judge::Llm(LlmJudge::new(endpoint.chat().await, None));
    let config = worker_config(&app, judge_key(&app).await, "biased-judge", 1);

    let counts = run_until_empty(config, judge).await;

    assert_eq!(counts.posted, 0, "{counts}");
    assert_eq!(counts.abstentions.disagreement, 2, "{counts}");
    assert_eq!(endpoint.requests().len(), 4, "both orders were asked");
    assert!(judgments_by(&app, "biased-judge").await.is_empty());
    let human = app.get("/v1/annotation/next?annotator=alice").await;
    assert_eq!(
        human.status(),
        200,
        "an abstained pair is released for others at once, not held until it expires"
    );
}

#[tokio::test]
async fn an_llm_reply_without_a_verdict_is_a_parse_failure_not_a_guess() {
    let app = spawn_app().await;
    make_groups(&app, 2, 2).await;
    let endpoint = fake_endpoint(never_decides).await;
    let judge = Judge::Llm(LlmJudge::new(endpoint.chat().await, None));
    let config = worker_config(&app, judge_key(&app).await, "vague-judge", 1);

    let counts = run_until_empty(config, judge).await;

    assert_eq!(counts.posted, 0, "{counts}");
    assert_eq!(counts.abstentions.parse_failure, 2, "{counts}");
    assert_eq!(
        endpoint.requests().len(),
        2,
        "the second order is not asked after a parse failure"
    );
    assert!(judgments_by(&app, "vague-judge").await.is_empty());
}

#[tokio::test]
async fn an_llm_judge_pointed_at_the_server_itself_finishes_without_posting_garbage() {
    // Arrange: the tiny model judges its own samples; a short rubric keeps each comparison within
    // its 512-token context, so every request reaches the model.
    let app = spawn_app().await;
    make_groups(&app, 2, 2).await;
    let key = judge_key(&app).await;
    let chat = ChatClient::connect(ChatConfig {
        base_url: format!("{}/v1", app.address),
        api_key: Some(key.clone()),
        model: None,
        max_tokens: 8,
        timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    assert_eq!(chat.model(), crate::helpers::MODEL);
    let judge = Judge::Llm(LlmJudge::new(chat, Some("Pick the better answer.".into())));
    let config = worker_config(&app, key, "self-judge", 1);

    // Act
    let counts = run_until_empty(config, judge).await;

    // Assert: each pair was judged or abstained on for what the model said, never for a failed
    // request; whatever was posted is a well-formed model judgment.
    assert_eq!(counts.pairs(), 2, "{counts}");
    let a = &counts.abstentions;
    assert_eq!(
        (a.http_error, a.timeout, a.bad_output),
        (0, 0, 0),
        "{counts}"
    );
    let judgments = judgments_by(&app, "self-judge").await;
    assert_eq!(judgments.len() as u64, counts.posted);
    let groups = app.get_json("/v1/groups?limit=100").await;
    assert_eq!(
        groups["data"].as_array().unwrap().len(),
        2,
        "the judge's own questions are not logged as groups"
    );
    for judgment in &judgments {
        assert_eq!(judgment["source"], "model");
        assert!(judgment["rationale"]
            .as_str()
            .is_some_and(|r| !r.is_empty()));
    }
}

// ---- Self-reference judge ----

#[tokio::test]
async fn a_self_reference_judge_compares_each_response_with_its_own_answer() {
    // Arrange: one group of three samples (three pairs).
    let app = spawn_app().await;
    make_groups(&app, 1, 3).await;
    let endpoint = fake_endpoint(prefers_the_text_sorting_first).await;
    let judge = Judge::SelfReference(SelfReferenceJudge::new(endpoint.chat().await, None));
    let config = worker_config(&app, judge_key(&app).await, "reference-judge", 1);

    // Act
    let counts = run_until_empty(config, judge).await;

    // Assert
    assert_eq!(counts.posted, 3, "{counts}");
    let judgments = judgments_by(&app, "reference-judge").await;
    assert_eq!(judgments.len(), 3);
    for judgment in &judgments {
        assert_eq!(judgment["source"], "model");
        let rationale = judgment["rationale"].as_str().unwrap();
        assert!(
            rationale.starts_with("Reference answer: Paris is the capital of France."),
            "{rationale}"
        );
    }
    assert_the_text_sorting_first_won(&app, &judgments).await;
    let requests = endpoint.requests();
    assert!(
        requests.iter().all(|r| r["store"] == false),
        "judges ask unlogged"
    );
    let user = |r: &Value| r["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    let (comparisons, answers): (Vec<_>, Vec<_>) = requests
        .iter()
        .partition(|r| user(r).as_str().unwrap().contains("<response_a>"));
    assert_eq!(answers.len(), 1, "one own answer for the group, reused");
    assert_eq!(
        user(answers[0]),
        "judge us",
        "the judge answers the prompt itself"
    );
    assert_eq!(comparisons.len(), 6);
    for request in comparisons {
        let text = user(request);
        let reference = section(text.as_str().unwrap(), "reference_answer");
        assert_eq!(reference, Some("Paris is the capital of France."));
    }
}

// ---- Program judge ----

/// Writes an executable `sh` script into `dir` and returns the command that runs it.
fn script(dir: &Path, body: &str) -> String {
    let path = dir.join("judge.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    format!("sh {}", path.display())
}

async fn a_program_judge_posts_its_rule_verdicts(options: AppOptions) {
    // Arrange: three pairs; a rule that keeps its input and prefers the left response.
    let app = spawn_app_with(options).await;
    make_groups(&app, 3, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let command = script(
        dir.path(),
        &format!(
            "cat > \"{}/$$.json\"\n\
             echo '{{\"outcome\": \"a\", \"strength\": 0.75, \"rationale\": \"left wins by rule\", \
             \"criteria\": {{\"rule\": \"left\"}}}}'",
            inputs.display()
        ),
    );
    let judge = Judge::Program(ProgramJudge::new(command, Duration::from_secs(30)));
    let config = worker_config(&app, judge_key(&app).await, "rule-judge", 3);

    // Act
    let counts = run_until_empty(config, judge).await;

    // Assert
    assert_eq!(counts.posted, 3, "{counts}");
    let judgments = judgments_by(&app, "rule-judge").await;
    assert_eq!(judgments.len(), 3);
    let inputs: Vec<Value> = std::fs::read_dir(&inputs)
        .unwrap()
        .map(|f| serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(inputs.len(), 3, "the program ran once a pair");
    for judgment in &judgments {
        assert_eq!(judgment["source"], "rule");
        assert_eq!(judgment["outcome"], "a");
        assert_eq!(judgment["strength"], 0.75);
        assert_eq!(judgment["rationale"], "left wins by rule");
        assert_eq!(judgment["criteria"], json!({"rule": "left"}));
        let input = inputs
            .iter()
            .find(|i| i["response_a"]["id"] == judgment["response_a"])
            .expect("the program saw the pair, the judged response as `response_a`");
        assert_eq!(input["group_id"], judgment["group_id"]);
        assert_eq!(input["response_b"]["id"], judgment["response_b"]);
        assert_eq!(input["annotator"], "rule-judge");
        assert_eq!(input["prompt"][0]["content"], "judge us");
        let text = text_of(&app, &judgment["group_id"], &judgment["response_a"]).await;
        assert_eq!(input["response_a"]["text"], text.as_str());
        assert!(input["assignment_id"].is_string());
    }
}

#[tokio::test]
async fn a_program_judge_posts_its_rule_verdicts_with_source_rule() {
    a_program_judge_posts_its_rule_verdicts(AppOptions::default()).await;
}

#[tokio::test]
async fn a_program_judge_posts_its_rule_verdicts_on_postgres() {
    if !postgres_available().await {
        return;
    }
    a_program_judge_posts_its_rule_verdicts(AppOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn a_program_that_crashes_hangs_or_prints_garbage_posts_nothing_and_the_judge_keeps_going() {
    // Arrange: six pairs, one at a time; the program cycles through a good answer, a crash, a
    // hang past the timeout (in a child process, which leaves a mark if it outlives the kill) and
    // garbage.
    let app = spawn_app().await;
    make_groups(&app, 2, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let command = script(
        dir.path(),
        &format!(
            "n=$(cat \"{d}/count\" 2>/dev/null || echo 0)\n\
             echo $((n + 1)) > \"{d}/count\"\n\
             cat > /dev/null\n\
             case $((n % 4)) in\n\
             0) echo '{{\"outcome\": \"b\", \"rationale\": \"right wins by rule\"}}' ;;\n\
             1) echo 'something broke' >&2; exit 3 ;;\n\
             2) ( sleep 3; touch \"{d}/outlived\" ); echo late ;;\n\
             3) echo 'this is not JSON' ;;\n\
             esac"
        ),
    );
    let judge = Judge::Program(ProgramJudge::new(command, Duration::from_secs(1)));
    let config = worker_config(&app, judge_key(&app).await, "flaky-judge", 1);

    // Act
    let counts = run_until_empty(config, judge).await;

    // Assert: runs 1 and 5 posted; 2 and 6 crashed, 3 timed out, 4 printed garbage.
    assert_eq!(counts.posted, 2, "{counts}");
    let a = &counts.abstentions;
    assert_eq!((a.crash, a.timeout, a.bad_output), (2, 1, 1), "{counts}");
    let judgments = judgments_by(&app, "flaky-judge").await;
    assert_eq!(judgments.len(), 2);
    for judgment in &judgments {
        assert_eq!(judgment["source"], "rule");
        assert_eq!(judgment["outcome"], "b");
        assert_eq!(judgment["rationale"], "right wins by rule");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !dir.path().join("outlived").exists(),
        "the timed-out program was killed with its children"
    );
}

// ---- The worker ----

#[tokio::test]
async fn a_judge_stops_cleanly_when_told_to_and_reports_what_it_did() {
    // Arrange: a judge that waits for new pairs, stopped once it has judged both.
    let app = spawn_app().await;
    make_groups(&app, 2, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let command = script(
        dir.path(),
        "cat > /dev/null; echo '{\"outcome\": \"tie\", \"rationale\": \"same\"}'",
    );
    let judge = Judge::Program(ProgramJudge::new(command, Duration::from_secs(30)));
    let config = WorkerConfig {
        until_empty: false,
        ..worker_config(&app, judge_key(&app).await, "patient-judge", 2)
    };
    let store = app.store.clone();
    let both_judged = async move {
        loop {
            let filter = flywheel_store::JudgmentFilter {
                annotator: Some("patient-judge".into()),
                ..Default::default()
            };
            if store.list_judgments(&filter).await.unwrap().len() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // Act
    let counts = tokio::time::timeout(
        Duration::from_secs(60),
        judges::run(config, judge, both_judged),
    )
    .await
    .expect("the judge stops")
    .unwrap();

    // Assert
    assert_eq!(counts.posted, 2, "{counts}");
    assert_eq!(counts.abstentions.total(), 0, "{counts}");
}

#[tokio::test]
async fn a_judge_whose_key_lacks_the_annotate_scope_stops_with_an_error() {
    let app = spawn_app().await;
    make_groups(&app, 1, 2).await;
    let key = create_key(&app.store, &[Scope::Inference]).await;
    let dir = tempfile::tempdir().unwrap();
    let command = script(dir.path(), "echo '{\"outcome\": \"a\"}'");
    let judge = Judge::Program(ProgramJudge::new(command, Duration::from_secs(30)));
    let config = worker_config(&app, key, "unscoped-judge", 2);

    let result = tokio::time::timeout(
        Duration::from_secs(60),
        judges::run(config, judge, std::future::pending()),
    )
    .await
    .expect("the judge stops");

    let error = result
        .expect_err("a judge without `annotate` cannot work")
        .to_string();
    assert!(error.contains("403"), "{error}");
}

// ---- The command ----

#[tokio::test]
async fn flywheel_judge_serves_its_judgments_and_abstentions_as_prometheus_counters() {
    // Arrange: a program that crashes on every pair, run as the real `flywheel judge`.
    let app = spawn_app().await;
    make_groups(&app, 2, 2).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut judge = std::process::Command::new(env!("CARGO_BIN_EXE_flywheel"))
        .args(["judge", "--name", "crashy", "--kind", "program"])
        .args(["--judge-command", "cat > /dev/null; exit 3"])
        .args(["--server-url", &app.address, "--poll-secs", "1"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("FLYWHEEL_API_KEY", judge_key(&app).await)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Act: scrape until both pairs were taken.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let crashes = "flywheel_judge_abstentions_total{judge=\"crashy\",reason=\"crash\"} 2";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Ok(response) = reqwest::get(&url).await {
            let text = response.text().await.unwrap();
            if text.contains(crashes) {
                break text;
            }
        }
        assert!(std::time::Instant::now() < deadline, "never saw {crashes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = judge.kill();
    let _ = judge.wait();

    // Assert
    assert!(
        text.contains("flywheel_judge_judgments_total{judge=\"crashy\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE flywheel_judge_abstentions_total counter"),
        "{text}"
    );
    assert!(judgments_by(&app, "crashy").await.is_empty());
}
