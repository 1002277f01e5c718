//! Several `flywheel serve` processes on one Postgres database, as behind a load balancer: they hear
//! an activation at once (`LISTEN/NOTIFY`), one replica's trouble stays its own, and replicas that
//! all run the arena converge on the one candidate the gate promotes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flywheel_store::{AdapterStatus, NewAdapter, Store};
use serde_json::{json, Value};

use crate::helpers::{postgres_available, postgres_database, register_adapter, tiny_model_dir};
use crate::hot_swap::write_adapter;

const ADMIN_KEY: &str = "fw_replica_test_admin_key_0123456789";

/// A `flywheel serve` process, killed when dropped.
struct Replica {
    child: Child,
    url: String,
    client: reqwest::Client,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts a replica on `database`; `hide` mounts an empty directory over that path for this
/// process alone (a missing volume), through a private mount namespace.
async fn start_replica(database: &str, hide: Option<&Path>) -> Replica {
    start_replica_with(database, hide, &[]).await
}

/// [`start_replica`] with extra `flywheel serve` flags.
async fn start_replica_with(database: &str, hide: Option<&Path>, flags: &[&str]) -> Replica {
    let port = free_port();
    let bin = env!("CARGO_BIN_EXE_flywheel");
    let mut command = match hide {
        None => Command::new(bin),
        Some(dir) => {
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "sh",
                "-c",
                r#"mount -t tmpfs none "$0" && exec "$@""#,
            ])
            .arg(dir)
            .arg(bin);
            c
        }
    };
    let child = command
        .args(["serve", "--no-worker", "--served-model-name", "tiny"])
        .arg("--model")
        .arg(tiny_model_dir())
        .args(["--port", &port.to_string()])
        // Polling so slow that only an announcement explains a fast follow.
        .args(["--follow-interval-secs", "60"])
        .args(flags)
        .env("DATABASE_URL", database)
        .env("FLYWHEEL_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start flywheel serve");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    let mut replica = Replica {
        child,
        url: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = replica.client.get(replica.url("/ready")).send().await {
            if r.status() == 200 {
                return replica;
            }
        }
        if let Ok(Some(status)) = replica.child.try_wait() {
            panic!("the replica exited: {status}");
        }
        assert!(Instant::now() < deadline, "the replica never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn ready(&self) -> Value {
        let r = self.client.get(self.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Answers a chat request without error; returns the adapter version that answered.
    async fn answer(&self) -> i64 {
        let request = json!({
            "model": "tiny", "max_tokens": 2, "temperature": 0,
            "messages": [{"role": "user", "content": "which version are you?"}],
        });
        let r = self
            .client
            .post(self.url("/v1/chat/completions"))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["adapter"]
            .as_i64()
            .unwrap()
    }

    async fn activate(&self, version: i64) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/adapters/{version}/activate")))
            .send()
            .await
            .unwrap()
    }
}

/// Polls `check` on `replica`'s `/ready` until it holds or `limit` passes; returns how long it took.
async fn until(replica: &Replica, limit: Duration, check: impl Fn(&Value) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let ready = replica.ready().await;
        if check(&ready) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Postgres database with a registered adapter (files under `root/adapters`).
async fn database_with_adapter(root: &Path) -> (String, Store, i64) {
    let url = postgres_database().await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let dir = write_adapter(&root.join("adapters").join("1"), 7);
    let version = register_adapter(&store, Some(&dir)).await;
    (url, store, version)
}

#[tokio::test]
async fn a_second_replica_serves_an_activated_version_within_a_second() {
    if !postgres_available().await {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (url, _store, version) = database_with_adapter(root.path()).await;
    let first = start_replica(&url, None).await;
    let second = start_replica(&url, None).await;

    let activated = first.activate(version).await;
    assert_eq!(activated.status(), 200);
    let took = until(&second, Duration::from_secs(10), |r| {
        r["adapter"] == version
    })
    .await;

    assert!(
        took < Duration::from_secs(1),
        "the second replica took {took:?}"
    );
    assert_eq!(second.answer().await, version);
    assert_eq!(first.answer().await, version);
}

#[tokio::test]
async fn a_replica_that_cannot_see_the_adapters_keeps_serving_and_rolls_back_nobody() {
    if !postgres_available().await {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (url, store, version) = database_with_adapter(root.path()).await;
    let sighted = start_replica(&url, None).await;
    let blind = start_replica(&url, Some(&root.path().join("adapters"))).await;

    let activated = sighted.activate(version).await;
    assert_eq!(activated.status(), 200);
    until(&blind, Duration::from_secs(10), |r| {
        r["wanted_adapter"] == version && r["status"] == "stale"
    })
    .await;
    // Give the blind replica time to retry a few times, as it would in production.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(store.active_adapter_version().await.unwrap(), version);
    assert_eq!(
        store.get_adapter(version).await.unwrap().status.as_str(),
        "active"
    );
    assert_eq!(sighted.answer().await, version);
    assert_eq!(blind.answer().await, 0);
    let ready = blind.ready().await;
    assert_eq!(ready["adapter"], 0);
    assert!(ready["adapter_error"].is_string(), "{ready}");
    let metrics = blind
        .client
        .get(blind.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flywheel_adapter_load_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 2.0, "retried with backoff: {failures}");
    assert_eq!(sighted.ready().await["status"], "ready");
}

#[tokio::test]
async fn replicas_running_the_arena_converge_on_the_candidate_the_gate_promotes() {
    if !postgres_available().await {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let url = postgres_database().await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let dir = write_adapter(&root.path().join("adapters").join("1"), 11);
    let candidate = store
        .insert_adapter(&NewAdapter {
            parent_version: 0,
            algorithm: "dpo".into(),
            train_run_id: None,
            path: Some(dir.display().to_string()),
            sha256: None,
            status: AdapterStatus::Candidate,
            note: None,
            name: None,
        })
        .await
        .unwrap()
        .version;
    let arena = [
        "--gate-min-judgments",
        "6",
        "--gate-max-judgments",
        "30",
        "--arena-interval-secs",
        "1",
        "--duel-max-tokens",
        "3",
    ];
    let first = start_replica_with(&url, None, &arena).await;
    let second = start_replica_with(&url, None, &arena).await;
    let prompts: Vec<Value> = (0..4)
        .map(|i| json!({"messages": [{"role": "user", "content": format!("question {i}")}]}))
        .collect();
    let posted = first
        .client
        .post(first.url("/v1/eval-prompts"))
        .json(&json!({ "eval_prompts": prompts }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    // A scripted judge that prefers whichever side the candidate wrote, through either replica.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut judged = 0;
    while store.active_adapter_version().await.unwrap() != candidate {
        assert!(
            Instant::now() < deadline,
            "no promotion after {judged} judgments"
        );
        let replica = if judged % 2 == 0 { &first } else { &second };
        if judge_next_for_candidate(replica, candidate).await {
            judged += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    for replica in [&first, &second] {
        until(replica, Duration::from_secs(5), |r| {
            r["adapter"] == candidate
        })
        .await;
        assert_eq!(replica.answer().await, candidate);
    }
    let decisions = store.adapter_decisions(candidate).await.unwrap();
    assert_eq!(
        decisions.len(),
        1,
        "one decision, whichever replica made it"
    );
    assert_eq!(decisions[0].rule, "lower_bound_above_half");
    assert!(decisions[0].evidence.judgments >= 6);
}

/// Takes the next pair on `replica` and judges the candidate's side better; `false` when the queue
/// had nothing.
async fn judge_next_for_candidate(replica: &Replica, candidate: i64) -> bool {
    let next = replica
        .client
        .get(replica.url("/v1/annotation/next?annotator=script"))
        .send()
        .await
        .unwrap();
    if next.status() == 204 {
        return false;
    }
    assert_eq!(next.status(), 200);
    let item: Value = next.json().await.unwrap();
    let left = item["left"]["response_id"].as_str().unwrap();
    let shown: Value = replica
        .client
        .get(replica.url(&format!("/v1/responses/{left}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let outcome = if shown["adapter_version"] == candidate {
        "a"
    } else {
        "b"
    };
    let posted = replica
        .client
        .post(replica.url("/v1/judgments"))
        .json(&json!({
            "group_id": item["group_id"],
            "response_a": item["left"]["response_id"],
            "response_b": item["right"]["response_id"],
            "outcome": outcome,
            "annotator": "script",
            "source": "rule",
            "assignment_id": item["assignment_id"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    true
}
